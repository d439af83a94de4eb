//! The thin driver around [`crate::proxy::Core`]: sockets in, sockets
//! out, and one timer task for all shards. UDP is received on plain
//! threads, in batches (each datagram read, handled and answered on the
//! thread that read it; [`datagram`]); TCP, TLS, timers and decisions that
//! wait run on tokio.
//!
//! Proxy state is split into shards by Call-ID, so every message of a call
//! (requests, responses, CANCEL, ACK) lands in the same shard while worker
//! threads process different calls in parallel. A shard is locked only
//! while the core handles one message; sending happens after unlocking.
//! Decisions the core parks (a shared state store to ask) run as tasks
//! whose verdict goes back into the same shard.
//!
//! Strangers (sources of no tenant and no carrier) are held to a budget
//! before anything is parsed or copied ([`crate::admission`]), and to a
//! number of connections per source and in all.

pub mod datagram;
pub mod stream;
pub mod tls;

use bytes::{Bytes, BytesMut};
use dashmap::DashMap;
use parking_lot::Mutex;
use smallvec::SmallVec;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Notify};

use crate::admission::{Admit, Budget, SourceCount, Strangers};
use crate::metrics::StrangerMetrics;
use crate::proxy::{Core, DecisionId, Gatekeeper, Peer, Pending, Settings, Transmit, Transport};
use rustc_hash::FxHashMap;
use stream::{next_frame, Frame};
use tls::{PeerNames, Tls};

/// Messages queued per TCP connection before new ones are dropped; a peer
/// that stops reading must not grow our memory without bound.
const TCP_QUEUE: usize = 4096;
const TCP_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A TLS handshake that takes longer is abandoned (a peer that opens
/// connections and never completes them holds nothing for long).
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Timers fire on a grid of this step: every deadline is rounded up to
/// it, so that the deadlines of thousands of transactions a second share
/// a few hundred wakeups instead of one each. SIP's timers are hundreds of
/// milliseconds (T1 = 500 ms); 5 ms late is within what RFC 3261 allows
/// for a timer firing.
const TIMER_TICK_NS: u64 = 5_000_000;

struct Shard {
    core: Mutex<Core>,
    /// The core's next deadline on the timer grid (ns since
    /// `Dispatcher::base`, `u64::MAX` for none), kept under the core's lock.
    due: AtomicU64,
}

/// Who is no stranger: a tenant's dialer (by network, or by the
/// certificate of its TLS connection) or a carrier's address.
pub struct Known {
    gate: Arc<dyn Gatekeeper>,
    carriers: Vec<IpAddr>,
}

impl Known {
    pub fn new(gate: Arc<dyn Gatekeeper>, settings: &Settings) -> Known {
        let carriers = settings
            .carriers
            .iter()
            .map(|c| crate::proxy::routing::canonical(c.peer.addr.ip()))
            .collect();
        Known { gate, carriers }
    }

    fn contains(&self, peer: &Peer) -> bool {
        self.carriers
            .contains(&crate::proxy::routing::canonical(peer.addr.ip()))
            || self.gate.knows(peer)
    }
}

/// How much strangers may cost (`[sip] stranger_*`).
#[derive(Debug, Clone, Copy)]
pub struct StrangerLimits {
    pub budget: Budget,
    pub connections_per_source: usize,
    pub connections: usize,
    pub idle: Duration,
}

/// Connections open from strangers, by address and in all.
#[derive(Default)]
struct StrangerConnections {
    by_source: FxHashMap<IpAddr, usize>,
    total: usize,
}

/// A stranger's connection, counted while it lives.
struct StrangerConnection {
    dispatcher: Weak<Dispatcher>,
    ip: IpAddr,
}

impl Drop for StrangerConnection {
    fn drop(&mut self) {
        let Some(d) = self.dispatcher.upgrade() else {
            return;
        };
        let mut c = d.stranger_connections.lock();
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.by_source.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                c.by_source.remove(&self.ip);
            }
        }
        d.stranger_metrics.connections.set(c.total as i64);
    }
}

pub struct Dispatcher {
    shards: Box<[Shard]>,
    /// Wakes the timer task when a shard's deadline moves before `armed`.
    timer: Notify,
    /// The tick the timer task sleeps until (`u64::MAX`: none).
    armed: AtomicU64,
    known: arc_swap::ArcSwap<Known>,
    strangers: Mutex<Strangers>,
    stranger_connections: Mutex<StrangerConnections>,
    stranger_limits: StrangerLimits,
    stranger_metrics: StrangerMetrics,
    udp_v4: Option<Arc<UdpSocket>>,
    udp_v6: Option<Arc<UdpSocket>>,
    /// Open TCP and TLS connections by transport and remote address: their
    /// writer's queue.
    streams: DashMap<(Transport, SocketAddr), mpsc::Sender<Bytes>>,
    tls: Option<Arc<Tls>>,
    /// Client-certificate names of the TLS connections open now.
    peer_names: Arc<PeerNames>,
    max_message: usize,
    tcp_idle: Duration,
    base: Instant,
    me: Weak<Dispatcher>,
    /// The runtime tasks are started on: UDP is received on threads of
    /// its own, outside it.
    rt: tokio::runtime::Handle,
}

type Batch = SmallVec<[Transmit; 4]>;

/// The sockets and settings a [`Dispatcher`] drives its cores with.
pub struct Io {
    pub udp_v4: Option<Arc<UdpSocket>>,
    pub udp_v6: Option<Arc<UdpSocket>>,
    pub tls: Option<Arc<Tls>>,
    pub peer_names: Arc<PeerNames>,
    pub max_message: usize,
    pub tcp_idle: Duration,
    pub strangers: StrangerLimits,
    pub stranger_metrics: StrangerMetrics,
}

impl Dispatcher {
    pub fn new(cores: Vec<Core>, known: Known, io: Io) -> Arc<Dispatcher> {
        let Io {
            udp_v4,
            udp_v6,
            tls,
            peer_names,
            max_message,
            tcp_idle,
            strangers,
            stranger_metrics,
        } = io;
        Arc::new_cyclic(|me| Dispatcher {
            known: arc_swap::ArcSwap::from_pointee(known),
            strangers: Mutex::new(Strangers::new(strangers.budget, Instant::now())),
            stranger_connections: Mutex::default(),
            stranger_limits: strangers,
            stranger_metrics,
            shards: cores
                .into_iter()
                .map(|c| Shard {
                    core: Mutex::new(c),
                    due: AtomicU64::new(u64::MAX),
                })
                .collect(),
            timer: Notify::new(),
            armed: AtomicU64::new(u64::MAX),
            udp_v4,
            udp_v6,
            streams: DashMap::new(),
            tls,
            peer_names,
            max_message,
            tcp_idle,
            base: Instant::now(),
            me: me.clone(),
            rt: tokio::runtime::Handle::current(),
        })
    }

    /// Runs `f` on every shard's core (reconfiguration, statistics).
    pub fn for_each_core(&self, mut f: impl FnMut(&mut Core)) {
        for s in self.shards.iter() {
            f(&mut s.core.lock());
        }
    }

    /// New settings and gatekeeper (reload, carriers resolved again): for
    /// every core, and for telling strangers apart.
    pub fn reconfigure(&self, settings: Arc<Settings>, gate: Arc<dyn Gatekeeper>) {
        self.known
            .store(Arc::new(Known::new(gate.clone(), &settings)));
        self.for_each_core(|c| c.reconfigure(settings.clone(), gate.clone()));
    }

    /// A new per-source budget for strangers (reload).
    pub fn set_stranger_budget(&self, budget: Budget) {
        self.strangers.lock().set_budget(budget);
    }

    /// What strangers sent since the last call, per source; the table of
    /// sources is trimmed.
    pub fn take_stranger_account(&self) -> Vec<SourceCount> {
        let mut s = self.strangers.lock();
        let account = s.take_account(Instant::now());
        self.stranger_metrics.sources.set(s.tracked() as i64);
        account
    }

    /// Whether a message from `from` is to be handled: always for a tenant
    /// or a carrier, within its budget for a stranger. Asked before the
    /// message is copied or parsed.
    fn admits(&self, from: &Peer) -> bool {
        if self.known.load().contains(from) {
            return true;
        }
        let admit = self.strangers.lock().admit(from.addr.ip(), Instant::now());
        match admit {
            Admit::Answer => {
                self.stranger_metrics.answered.inc();
                true
            }
            Admit::Drop => {
                self.stranger_metrics.dropped.inc();
                false
            }
        }
    }

    /// Counts a new connection from a stranger, or `None` when its source
    /// or strangers in all hold as many as they may.
    fn stranger_connection(&self, ip: IpAddr) -> Option<StrangerConnection> {
        let limits = &self.stranger_limits;
        let mut c = self.stranger_connections.lock();
        let from_source = c.by_source.get(&ip).copied().unwrap_or(0);
        if from_source >= limits.connections_per_source || c.total >= limits.connections {
            return None;
        }
        *c.by_source.entry(ip).or_insert(0) += 1;
        c.total += 1;
        self.stranger_metrics.connections.set(c.total as i64);
        Some(StrangerConnection {
            dispatcher: self.me.clone(),
            ip,
        })
    }

    fn nanos(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.base).as_nanos() as u64
    }

    /// `t` rounded up to the timer grid.
    fn tick(&self, t: Instant) -> u64 {
        self.nanos(t)
            .div_ceil(TIMER_TICK_NS)
            .saturating_mul(TIMER_TICK_NS)
    }

    /// One received message (a datagram, or a framed TCP message).
    pub fn deliver(&self, from: Peer, data: Bytes) {
        if self.admits(&from) {
            self.route(from, data);
        }
    }

    /// An admitted message, to the shard of its Call-ID.
    fn route(&self, from: Peer, data: Bytes) {
        let i = (call_id_hash(&data) % self.shards.len() as u64) as usize;
        self.with_core(i, |core| core.handle_message(Instant::now(), from, data));
    }

    /// Sends an OPTIONS health check to `carrier`, from the shard its
    /// Call-ID hashes to: the answer is routed by Call-ID like any message.
    pub fn ping(&self, carrier: &crate::proxy::Carrier) {
        let call_id = format!("cg-ping-{:016x}", rand::random::<u64>());
        let i = (fnv1a(call_id.as_bytes()) % self.shards.len() as u64) as usize;
        self.with_core(i, |core| core.ping(Instant::now(), carrier, &call_id));
    }

    /// Runs one event through shard `i`'s core, then does what it asked:
    /// sends its messages, re-arms its timer task when the next deadline
    /// moved earlier, and starts the decisions it parked.
    fn with_core(&self, i: usize, event: impl FnOnce(&mut Core)) {
        let shard = &self.shards[i];
        let mut batch = Batch::new();
        let mut jobs: SmallVec<[(DecisionId, Pending); 1]> = SmallVec::new();
        let wake = {
            let mut core = shard.core.lock();
            event(&mut core);
            while let Some(t) = core.poll_transmit() {
                batch.push(t);
            }
            while let Some(j) = core.poll_decision() {
                jobs.push(j);
            }
            let due = core.poll_timeout().map_or(u64::MAX, |d| self.tick(d));
            shard.due.store(due, Ordering::Release);
            due < self.armed.load(Ordering::Acquire)
        };
        self.after(i, batch, jobs, wake);
    }

    // Not generic, so that a verdict task calling `with_core` again does
    // not instantiate it recursively.
    fn after(
        &self,
        i: usize,
        batch: Batch,
        jobs: SmallVec<[(DecisionId, Pending); 1]>,
        wake: bool,
    ) {
        if wake {
            self.timer.notify_one();
        }
        // A decision is answered on another thread (when the state backend
        // replies), which sends at once. A 100 Trying held for the end of
        // this thread's batch could then leave after the final response it
        // precedes, and a UAC in Completed takes a 1xx as an error (SIPp
        // aborts the call). The core marks such messages urgent; they and
        // the rest of their event are sent now, before any decision starts.
        let hold = !batch.iter().any(|t| t.urgent);
        for t in batch {
            self.transmit(t, hold);
        }
        for (id, Pending(job)) in jobs {
            let Some(me) = self.me.upgrade() else { return };
            self.rt.spawn(async move {
                let verdict = job.await;
                me.with_core(i, |core| core.handle_verdict(Instant::now(), id, verdict));
            });
        }
    }

    fn unreachable(&self, peer: Peer) {
        for i in 0..self.shards.len() {
            self.with_core(i, |core| core.handle_unreachable(Instant::now(), peer));
        }
    }

    /// Spawns the timer task: one for all shards, so that shards whose
    /// deadlines fall on the same tick share one wakeup.
    pub fn spawn_timers(self: &Arc<Self>) {
        let d = self.clone();
        self.rt.spawn(async move { d.timer_loop().await });
    }

    async fn timer_loop(&self) {
        loop {
            let now = self.nanos(Instant::now());
            let mut next = u64::MAX;
            for (i, shard) in self.shards.iter().enumerate() {
                if shard.due.load(Ordering::Acquire) <= now {
                    self.with_core(i, |core| core.handle_timeout(Instant::now()));
                }
                next = next.min(shard.due.load(Ordering::Acquire));
            }
            // A shard that moves its deadline earlier than `armed` after
            // this store notifies; one that did so before it was read
            // above. `Notify` keeps the permit, so no wakeup is lost.
            self.armed.store(next, Ordering::Release);
            if next == u64::MAX {
                self.timer.notified().await;
            } else if next > now {
                let at = self.base + Duration::from_nanos(next);
                tokio::select! {
                    _ = tokio::time::sleep_until(at.into()) => {}
                    _ = self.timer.notified() => {}
                }
            }
        }
    }

    /// Sends `t`; on a UDP receive thread, a datagram is held for the end
    /// of the batch if `hold`.
    fn transmit(&self, t: Transmit, hold: bool) {
        match t.to.transport {
            Transport::Udp => self.send_udp(t.to.addr, t.payload, hold),
            Transport::Tcp | Transport::Tls => self.send_stream(t.to, t.payload),
        }
    }

    fn send_udp(&self, to: SocketAddr, payload: Bytes, hold: bool) {
        let sock = if to.is_ipv6() {
            self.udp_v6.as_ref()
        } else {
            self.udp_v4.as_ref()
        };
        let Some(sock) = sock else {
            tracing::warn!(%to, "no UDP listener of this address family to send from");
            return;
        };
        // On a UDP receive thread the datagram waits for the end of its
        // batch, to go out with the others in one call.
        let payload = if hold {
            match datagram::hold(to, payload) {
                Some(p) => p,
                None => return,
            }
        } else {
            payload
        };
        // A blocking send: when the socket buffer is full it waits for
        // room, which holds back the thread that produced the message
        // rather than queueing without bound.
        if let Err(e) = sock.send_to(&payload, to) {
            tracing::debug!(%to, error = %e, "UDP send failed");
        }
    }

    /// Sends on the connection to `to`, opening one if there is none. For
    /// TLS, a connection from the same host is reused first: a dialer's
    /// Contact is on the host its connection comes from, and a dialer
    /// rarely holds a certificate for its own address.
    fn send_stream(&self, to: Peer, payload: Bytes) {
        let key = (to.transport, to.addr);
        let mut tx = self.streams.get(&key).map(|t| t.clone());
        let carrier = self.tls.as_ref().is_some_and(|t| t.is_carrier(to.addr));
        if tx.is_none() && to.transport == Transport::Tls && !carrier {
            tx = self
                .streams
                .iter()
                .find(|e| e.key().0 == Transport::Tls && e.key().1.ip() == to.addr.ip())
                .map(|e| e.value().clone());
        }
        if let Some(tx) = tx {
            match tx.try_send(payload) {
                Ok(()) => return,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    tracing::warn!(to = %to, "stream peer is not reading; message dropped");
                    return;
                }
                Err(mpsc::error::TrySendError::Closed(p)) => {
                    self.streams.remove_if(&key, |_, v| v.same_channel(&tx));
                    return self.connect(to, p);
                }
            }
        }
        self.connect(to, payload);
    }

    /// Opens a connection to `to` (TCP, then TLS on it for a TLS peer);
    /// messages queue in its channel meanwhile.
    fn connect(&self, to: Peer, first: Bytes) {
        let (tx, rx) = mpsc::channel(TCP_QUEUE);
        let _ = tx.try_send(first);
        let key = (to.transport, to.addr);
        self.streams.insert(key, tx.clone());
        let Some(me) = self.me.upgrade() else { return };
        self.rt.spawn(async move {
            let failed = |why: String| {
                tracing::warn!(to = %to, "connection failed: {why}");
                me.streams.remove_if(&key, |_, v| v.same_channel(&tx));
                me.unreachable(to);
            };
            let stream = match tokio::time::timeout(
                TCP_CONNECT_TIMEOUT,
                TcpStream::connect(to.addr),
            )
            .await
            {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return failed(e.to_string()),
                Err(_) => return failed("connect timed out".into()),
            };
            let _ = stream.set_nodelay(true);
            if to.transport != Transport::Tls {
                return me.run_connection(stream, to, tx.clone(), rx, None).await;
            }
            let (Some(tls), Some(name)) = (
                me.tls.as_ref(),
                me.tls.as_ref().and_then(|t| t.server_name(to.addr)),
            ) else {
                return failed("no TLS configuration".into());
            };
            match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, tls.connector().connect(name, stream))
                .await
            {
                Ok(Ok(s)) => me.run_connection(s, to, tx.clone(), rx, None).await,
                Ok(Err(e)) => failed(format!("TLS handshake: {e}")),
                Err(_) => failed("TLS handshake timed out".into()),
            }
        });
    }

    pub async fn accept_loop(self: Arc<Self>, listener: TcpListener, transport: Transport) {
        loop {
            match listener.accept().await {
                Ok((stream, remote)) => {
                    let peer = Peer {
                        transport,
                        addr: remote,
                    };
                    // A TLS dialer known by its certificate only is a
                    // stranger until its handshake is done.
                    let stranger = if self.known.load().contains(&peer) {
                        None
                    } else {
                        match self.stranger_connection(remote.ip()) {
                            Some(c) => Some(c),
                            None => {
                                self.stranger_metrics.connections_refused.inc();
                                tracing::debug!(%remote, "stranger over its connection cap: closed");
                                continue;
                            }
                        }
                    };
                    let _ = stream.set_nodelay(true);
                    let me = self.clone();
                    self.rt
                        .spawn(async move { me.serve_accepted(stream, peer, stranger).await });
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "TCP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    async fn serve_accepted(
        &self,
        stream: TcpStream,
        peer: Peer,
        mut stranger: Option<StrangerConnection>,
    ) {
        let (transport, remote) = (peer.transport, peer.addr);
        let (tx, rx) = mpsc::channel(TCP_QUEUE);
        if transport != Transport::Tls {
            self.streams.insert((transport, remote), tx.clone());
            return self.run_connection(stream, peer, tx, rx, stranger).await;
        }
        let Some(acceptor) = self.tls.as_ref().and_then(|t| t.acceptor()) else {
            return;
        };
        let tls = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return tracing::debug!(%remote, error = %e, "TLS handshake failed"),
            Err(_) => return tracing::debug!(%remote, "TLS handshake timed out"),
        };
        let names = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(tls::certificate_names)
            .unwrap_or_default();
        if !names.is_empty() {
            tracing::debug!(%remote, names = ?names, "TLS client certificate");
        }
        self.peer_names.insert(remote, names);
        if self.known.load().contains(&peer) {
            stranger = None;
        }
        self.streams.insert((transport, remote), tx.clone());
        self.run_connection(tls, peer, tx, rx, stranger).await;
        self.peer_names.remove(&remote);
    }

    /// Reads and writes one connection until it closes or idles out (a
    /// stranger's sooner than a tenant's). `stranger` is held, and so
    /// counted, as long as the connection lives.
    async fn run_connection<S>(
        &self,
        stream: S,
        peer: Peer,
        tx: mpsc::Sender<Bytes>,
        mut rx: mpsc::Receiver<Bytes>,
        stranger: Option<StrangerConnection>,
    ) where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let remote = peer.addr;
        let (mut r, mut w) = tokio::io::split(stream);
        let writer = self.rt.spawn(async move {
            while let Some(b) = rx.recv().await {
                if w.write_all(&b).await.is_err() {
                    break;
                }
            }
            let _ = w.shutdown().await;
        });
        let mut buf = BytesMut::with_capacity(8192);
        let idle = if stranger.is_some() {
            self.stranger_limits.idle
        } else {
            self.tcp_idle
        };
        'read: loop {
            match tokio::time::timeout(idle, r.read_buf(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Err(_) => {
                    tracing::debug!(%remote, "closing idle connection");
                    break;
                }
                Ok(Ok(_)) => {}
            }
            loop {
                match next_frame(&mut buf, self.max_message) {
                    Ok(Some(Frame::Message(m))) => self.deliver(peer, m),
                    Ok(Some(Frame::Ping)) => {
                        let _ = tx.try_send(Bytes::from_static(b"\r\n"));
                    }
                    Ok(None) => break,
                    Err(e) => {
                        // Framing is lost: nothing after this point can be
                        // trusted, so the connection is closed.
                        tracing::warn!(%remote, error = %e, "closing connection");
                        let _ = tx.try_send(Bytes::from_static(
                            b"SIP/2.0 513 Message Too Large\r\nContent-Length: 0\r\n\r\n",
                        ));
                        break 'read;
                    }
                }
            }
        }
        self.streams
            .remove_if(&(peer.transport, remote), |_, v| v.same_channel(&tx));
        drop(tx);
        let _ = tokio::time::timeout(Duration::from_secs(1), writer).await;
        drop(stranger);
    }

    /// Receives UDP on `sock` (in blocking mode) on this thread, with
    /// `helpers` (threads running [`Dispatcher::udp_helper`] on the same
    /// socket) called in when datagrams queue up. Each datagram is read,
    /// decided and answered on the thread that read it, never handed to
    /// another. The thread ends within `UDP_IDLE_CHECK` of the dispatcher
    /// going away.
    ///
    /// Why one receiver and helpers rather than all threads waiting on the
    /// socket: with several threads waiting, each datagram wakes one of
    /// them, a thread switch per datagram. One thread alone finds the
    /// datagrams that arrived while it worked and takes them in one call;
    /// the helpers wake only when full batches in a row say it is falling
    /// behind ([`Backlog`]).
    pub fn udp_thread(me: Weak<Self>, sock: Arc<UdpSocket>, helpers: Vec<std::thread::Thread>) {
        if let Err(e) = sock.set_read_timeout(Some(UDP_IDLE_CHECK)) {
            tracing::error!(error = %e, "UDP receive thread cannot start");
            return;
        }
        let Some(mut io) = UdpIo::new(&me) else {
            return;
        };
        let mut next = 0;
        let mut backlog = Backlog::default();
        loop {
            let received = io.rx.recv(&sock, true);
            let Some(d) = me.upgrade() else { return };
            if backlog.needs_help(received == Ok(datagram::BATCH)) && !helpers.is_empty() {
                helpers[next % helpers.len()].unpark();
                next += 1;
            }
            d.handle_datagrams(received, &mut io);
        }
    }

    /// A helper of [`Dispatcher::udp_thread`]: when woken, takes datagrams
    /// until none is waiting, then sleeps again.
    pub fn udp_helper(me: Weak<Self>, sock: Arc<UdpSocket>) {
        let Some(mut io) = UdpIo::new(&me) else {
            return;
        };
        loop {
            std::thread::park_timeout(UDP_IDLE_CHECK);
            loop {
                let received = io.rx.recv(&sock, false);
                let Some(d) = me.upgrade() else { return };
                let more = received == Ok(datagram::BATCH);
                d.handle_datagrams(received, &mut io);
                if !more {
                    break;
                }
            }
        }
    }

    fn handle_datagrams(&self, received: Result<usize, nix::errno::Errno>, io: &mut UdpIo) {
        match received {
            Ok(n) => {
                for i in 0..n {
                    let (from, data) = io.rx.get(i);
                    if data.len() > self.max_message {
                        tracing::debug!(%from, n = data.len(), "dropping oversized datagram");
                        continue;
                    }
                    let peer = Peer {
                        transport: Transport::Udp,
                        addr: from,
                    };
                    if self.admits(&peer) {
                        self.route(peer, Bytes::copy_from_slice(data));
                    }
                }
                io.tx.flush(self.udp_v4.as_deref(), self.udp_v6.as_deref());
            }
            Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => {}
            // ICMP errors surface here on some systems; they are not fatal.
            Err(e) => tracing::debug!(error = %e, "UDP receive error"),
        }
    }
}

/// Whether the UDP receive thread is falling behind, from the batches it
/// takes: it is once `HELP_AFTER` full batches came in a row, and stays so
/// until one comes short.
///
/// Why not at the first full batch: a thread that was off the CPU for a
/// moment (on a small box, while the dialer or the carrier ran) finds a
/// full batch waiting and has caught up by the next call. A helper woken
/// then mostly finds the socket empty, and its wakeup (a thread switch, on
/// a VM an exit to the host) cost more than the work it took: 260 wakeups
/// a second, 10 % of the proxy's CPU, at 4,000 rejects/s on two cores. A
/// thread that keeps finding full batches is truly behind. Two in a row
/// still woke each helper 35 times a second there, for nothing; after
/// four, a helper wakes about once a second besides its idle check. Four
/// batches are 64 datagrams, well under a millisecond of work, so a
/// thread truly behind is still helped at once.
#[derive(Debug, Default)]
struct Backlog {
    full_in_a_row: u32,
}

/// Full batches in a row that call a helper in.
const HELP_AFTER: u32 = 4;

impl Backlog {
    /// Records one receive call's batch (`full`: as many datagrams as a
    /// call takes); says whether a helper should be woken now.
    fn needs_help(&mut self, full: bool) -> bool {
        // Saturating: a flood can keep every batch full for days.
        self.full_in_a_row = if full {
            self.full_in_a_row.saturating_add(1)
        } else {
            0
        };
        self.full_in_a_row >= HELP_AFTER
    }
}

/// How often a UDP thread with nothing to do checks that the proxy is
/// still running.
const UDP_IDLE_CHECK: Duration = Duration::from_millis(500);

/// A UDP thread's batch buffers.
struct UdpIo {
    rx: datagram::Receiver,
    tx: datagram::Sender,
}

impl UdpIo {
    fn new(me: &Weak<Dispatcher>) -> Option<UdpIo> {
        let largest = me.upgrade()?.max_message;
        Some(UdpIo {
            rx: datagram::Receiver::new(largest),
            tx: datagram::Sender::start(),
        })
    }
}

/// FNV-1a of the Call-ID value, found by a line scan that is far cheaper
/// than a full parse (the core parses the message once, under the lock).
/// FNV-1a: a few multiplications, enough to spread Call-IDs over shards.
fn fnv1a(value: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for &b in value {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

fn call_id_hash(data: &[u8]) -> u64 {
    let mut pos = 0;
    while let Some(nl) = memchr::memchr(b'\n', &data[pos..]) {
        let line = &data[pos + nl + 1..];
        pos += nl + 1;
        if line.first().is_some_and(|&c| c == b'\r' || c == b'\n') {
            break;
        }
        let end = memchr::memchr(b'\n', line).unwrap_or(line.len());
        let line = &line[..end];
        let Some(colon) = memchr::memchr(b':', line) else {
            continue;
        };
        let name = line[..colon].trim_ascii();
        if name.eq_ignore_ascii_case(b"call-id") || name.eq_ignore_ascii_case(b"i") {
            return fnv1a(line[colon + 1..].trim_ascii());
        }
    }
    0
}

#[cfg(test)]
mod tests {
    #[test]
    fn call_id_hash_reads_long_and_compact_forms() {
        let a = super::call_id_hash(b"INVITE sip:a@b SIP/2.0\r\nVia: x\r\nCall-ID:  abc \r\n\r\n");
        let b = super::call_id_hash(b"SIP/2.0 200 OK\r\ni: abc\r\n\r\n");
        let c = super::call_id_hash(b"SIP/2.0 200 OK\r\ni: abd\r\n\r\n");
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    /// One full batch (a thread back from a moment off the CPU) calls no
    /// helper; full batches in a row do, each of them, until one is short.
    #[test]
    fn helpers_are_called_in_by_a_backlog_that_persists() {
        let mut b = super::Backlog::default();
        let n = super::HELP_AFTER as usize;
        assert!(n > 1, "one full batch alone must not call a helper in");
        // A run one short of the threshold, a short batch, a run one past
        // it, a short batch, one full batch.
        let mut full = vec![true; n - 1];
        full.push(false);
        full.extend(vec![true; n + 1]);
        full.extend([false, true]);
        let helped: Vec<bool> = full.iter().map(|&f| b.needs_help(f)).collect();
        let mut expected = vec![false; full.len()];
        // The last two batches of the long run.
        expected[n + n - 1] = true;
        expected[n + n] = true;
        assert_eq!(helped, expected);
    }
}
