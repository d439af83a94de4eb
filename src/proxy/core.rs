//! The proxy's transaction layer and routing logic.
//!
//! A *server transaction* faces the sender of a request (a dialer, or the
//! carrier for in-dialog requests from the callee side); a *client
//! transaction* faces the next hop. An initial INVITE owns one server
//! transaction and, over its life, one client transaction per carrier tried
//! (serial failover). They refer to each other by slab index plus a
//! generation, so a stale reference is detected instead of misrouted.

use bytes::Bytes;
use smallvec::SmallVec;
use std::collections::{HashMap, VecDeque};
use std::hash::Hasher;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::build::{self, Forward};
use super::timer::{Kind, Timers};
use super::{
    Carrier, DecisionId, Gatekeeper, Observer, Peer, Pending, Rejection, Settings, Transmit,
    Transport, Verdict,
};
use crate::sip::message::{name_addr_uri, HeaderName};
use crate::sip::{Message, Uri, Via, BRANCH_COOKIE};

/// Marks branches this proxy generated; responses whose top Via lacks it
/// were not sent by us and are dropped.
const OUR_BRANCH: &[u8] = b"z9hG4bKcg";
/// Allow header for 405 and OPTIONS: what we accept out of dialog plus
/// what we relay in dialog.
const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, INFO, PRACK, REFER, NOTIFY";
/// Retry-After on INVITEs refused while shutting down: a restart, or the
/// dialer's other trunk, is expected within seconds.
const DRAIN_RETRY_AFTER_S: u64 = 5;
/// Record-Route parameter carrying the anti-relay token.
const TOKEN_PARAM: &[u8] = b"cgr";

type Key = Box<[u8]>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SState {
    Proceeding,
    Completed,
    Confirmed,
    Accepted,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CState {
    /// Calling (INVITE) or Trying (non-INVITE): nothing received yet.
    Calling,
    Proceeding,
    Completed,
    Accepted,
}

struct ServerTxn {
    gen: u64,
    key: Key,
    invite: bool,
    reply_to: Peer,
    source: Peer,
    /// The received request, kept until a final response is sent: needed to
    /// build local responses and to forward it again on failover.
    request: Option<Box<Message>>,
    top_via: Option<Vec<u8>>,
    state: SState,
    last: Option<Bytes>,
    retransmit: Duration,
    client: Option<(usize, u64)>,
    /// Remaining carriers to try, in order (initial INVITEs only).
    targets: VecDeque<Carrier>,
    cancelled: bool,
    extra: Vec<(String, String)>,
    /// Waiting for a pending decision since this instant.
    deciding: Option<Instant>,
}

struct ClientTxn {
    gen: u64,
    key: Key,
    invite: bool,
    dest: Peer,
    /// The request as sent, for retransmission and to derive ACK/CANCEL.
    sent: Option<Box<Message>>,
    state: CState,
    retransmit: Duration,
    server: Option<(usize, u64)>,
    carrier: Option<Arc<str>>,
    /// An OPTIONS health check: its outcome goes to the carrier status,
    /// not to a server transaction.
    ping: bool,
    got_provisional: bool,
    cancel_pending: bool,
    cancel_sent: bool,
    timer_c_at: Option<Instant>,
    ack: Option<Bytes>,
}

impl ServerTxn {
    fn upstream(&self) -> Option<(&Message, Option<&[u8]>)> {
        self.request
            .as_deref()
            .map(|r| (r, self.top_via.as_deref()))
    }
}

enum RouteOutcome {
    Next { dest: Peer, pops: usize },
    NotOurs,
    BadToken,
    Unresolvable,
}

/// One shard of proxy state. See the module docs of [`crate::proxy`].
pub struct Core {
    settings: Arc<Settings>,
    gatekeeper: Arc<dyn Gatekeeper>,
    observer: Arc<dyn Observer>,
    shard: u16,
    servers: slab::Slab<ServerTxn>,
    clients: slab::Slab<ClientTxn>,
    server_index: HashMap<Key, usize>,
    client_index: HashMap<Key, usize>,
    timers: Timers,
    out: VecDeque<Transmit>,
    gen: u64,
    branch_seq: u64,
    /// Shutting down: new calls are refused so that the dialer places them
    /// through another instance, while calls in progress finish here.
    draining: bool,
    /// Pending decisions not yet handed to the driver.
    decisions: VecDeque<(DecisionId, Pending)>,
    /// Weighted carrier choice. Seeded per shard: runs in simulated time
    /// repeat exactly.
    rng: rand::rngs::StdRng,
}

impl Core {
    pub fn new(
        settings: Arc<Settings>,
        gatekeeper: Arc<dyn Gatekeeper>,
        observer: Arc<dyn Observer>,
        shard: u16,
    ) -> Core {
        Core {
            settings,
            gatekeeper,
            observer,
            shard,
            servers: slab::Slab::new(),
            clients: slab::Slab::new(),
            server_index: HashMap::new(),
            client_index: HashMap::new(),
            timers: Timers::default(),
            out: VecDeque::new(),
            gen: 0,
            branch_seq: 0,
            draining: false,
            decisions: VecDeque::new(),
            rng: rand::SeedableRng::seed_from_u64(u64::from(shard)),
        }
    }

    /// The next decision the driver must run (see [`Verdict::Pending`]).
    pub fn poll_decision(&mut self) -> Option<(DecisionId, Pending)> {
        self.decisions.pop_front()
    }

    /// The outcome of a pending decision. Ignored when the transaction has
    /// ended meanwhile; a CANCEL that came first has already answered 487.
    pub fn handle_verdict(&mut self, now: Instant, id: DecisionId, verdict: Verdict) {
        let Some(s) = self.servers.get_mut(id.slot).filter(|s| s.gen == id.gen) else {
            return;
        };
        let Some(started) = s.deciding.take() else {
            return;
        };
        if s.state != SState::Proceeding {
            return;
        }
        let took = now.saturating_duration_since(started).as_secs_f64();
        match verdict {
            Verdict::Reject(r) => {
                self.observer
                    .decision(r.tenant.as_deref(), "reject", r.code, took);
                let s = &self.servers[id.slot];
                let call_id = s.request.as_ref().and_then(|m| m.call_id());
                log_rejected(call_id.unwrap_or_default(), s.source, &r);
                self.reject_server(now, id.slot, &r);
            }
            Verdict::Forward {
                tenant,
                headers,
                warn,
            } => {
                self.observe_forward(&tenant, warn, took);
                let targets = self.targets();
                if targets.is_empty() {
                    return self.reject_server(now, id.slot, &no_carrier());
                }
                let s = &mut self.servers[id.slot];
                s.targets = targets;
                s.extra = headers;
                self.try_next_carrier(now, id.slot);
            }
            Verdict::Pending(_) => {
                tracing::error!("a pending decision resolved to another pending decision");
                self.local_final(now, id.slot, 500, "Server Internal Error");
            }
        }
    }

    fn observe_forward(&self, tenant: &str, warn: Option<&'static str>, took: f64) {
        match warn {
            Some(code) => self.observer.decision(Some(tenant), "warn", code, took),
            None => self.observer.decision(Some(tenant), "allow", "", took),
        }
    }

    /// Keeps an initial INVITE in a Proceeding server transaction and
    /// answers `100 Trying`, which stops the dialer's retransmissions.
    #[allow(clippy::too_many_arguments)]
    fn park(
        &mut self,
        from: Peer,
        msg: Message,
        key: Key,
        top_via: Option<Vec<u8>>,
        reply_to: Peer,
        targets: VecDeque<Carrier>,
        extra: Vec<(String, String)>,
        deciding: Option<Instant>,
    ) -> usize {
        let trying = build::response(&msg, top_via.as_deref(), 100, "Trying", None, &[]);
        let idx = self.insert_server(ServerTxn {
            gen: 0,
            key,
            invite: true,
            reply_to,
            source: from,
            request: Some(Box::new(msg)),
            top_via,
            state: SState::Proceeding,
            last: Some(trying.clone()),
            retransmit: self.settings.t1,
            client: None,
            targets,
            cancelled: false,
            extra,
            deciding,
        });
        self.send(reply_to, trying);
        idx
    }

    /// Answers a parked INVITE with an explained rejection.
    fn reject_server(&mut self, now: Instant, sidx: usize, r: &Rejection) {
        let s = &mut self.servers[sidx];
        let Some(req) = s.request.take() else { return };
        let top_via = s.top_via.take();
        let tag = local_tag(&s.key);
        let bytes = self.explained_response(&req, top_via.as_deref(), &tag, r);
        let s = &mut self.servers[sidx];
        s.state = SState::Completed;
        s.last = Some(bytes.clone());
        let to = s.reply_to;
        self.send(to, bytes);
        self.arm_completed(now, sidx);
    }

    /// Starts a graceful shutdown: from now on initial INVITEs get `503`
    /// with `Retry-After` and OPTIONS pings get `503`, so dialers and load
    /// balancers move new calls elsewhere; everything else (responses,
    /// CANCEL, ACK, in-dialog requests) is still handled.
    pub fn drain(&mut self) {
        self.draining = true;
    }

    /// Transactions that still wait for a final response: the shutdown
    /// should not cut them short. Those that only absorb retransmissions
    /// (Timers H, I, J, K, L) do not count; otherwise the INVITEs refused
    /// during the drain would keep it from ever ending.
    pub fn unfinished_transactions(&self) -> usize {
        let servers = self
            .servers
            .iter()
            .filter(|(_, s)| s.state == SState::Proceeding)
            .count();
        let clients = self
            .clients
            .iter()
            .filter(|(_, c)| matches!(c.state, CState::Calling | CState::Proceeding))
            .count();
        servers + clients
    }

    /// Replaces settings and gatekeeper for new transactions (reload);
    /// transactions in flight keep the carriers they were given.
    pub fn reconfigure(&mut self, settings: Arc<Settings>, gatekeeper: Arc<dyn Gatekeeper>) {
        self.settings = settings;
        self.gatekeeper = gatekeeper;
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next_deadline()
    }

    pub fn active_transactions(&self) -> usize {
        self.servers.len() + self.clients.len()
    }

    /// Entries in the timer queue, including lazily cancelled ones.
    pub fn pending_timers(&self) -> usize {
        self.timers.len()
    }

    // ------------------------------------------------------------------ input

    pub fn handle_message(&mut self, now: Instant, from: Peer, data: Bytes) {
        let msg = match Message::parse(data) {
            Ok(m) => m,
            Err(e) => {
                self.observer.malformed();
                tracing::debug!(%from, error = %e, "dropping unparsable message");
                return;
            }
        };
        if msg.is_request() {
            self.on_request(now, from, msg);
        } else {
            self.on_response(now, from, msg);
        }
    }

    /// A connection to `peer` failed: client transactions waiting on it
    /// fail over at once instead of waiting for their timeout.
    pub fn handle_unreachable(&mut self, now: Instant, peer: Peer) {
        let dead: Vec<usize> = self
            .clients
            .iter()
            .filter(|(_, c)| c.dest == peer && c.state == CState::Calling)
            .map(|(i, _)| i)
            .collect();
        for idx in dead {
            self.client_failed(now, idx, Failure::Unreachable);
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(f) = self.timers.pop_due(now) {
            match f.kind {
                Kind::G | Kind::H | Kind::I | Kind::J | Kind::L => {
                    if self.servers.get(f.slot).is_some_and(|s| s.gen == f.gen) {
                        self.server_timer(now, f.slot, f.kind);
                    }
                }
                _ => {
                    if self.clients.get(f.slot).is_some_and(|c| c.gen == f.gen) {
                        self.client_timer(now, f.slot, f.kind);
                    }
                }
            }
        }
    }

    // --------------------------------------------------------------- requests

    fn on_request(&mut self, now: Instant, from: Peer, msg: Message) {
        let method = msg.method().unwrap_or_default().to_vec();
        self.observer.message_in(&method);
        let Some(via) = msg.top_via() else {
            // No Via: a response cannot be routed (§8.2.6.2), so drop.
            self.observer.malformed();
            return;
        };
        let top_via = build::fixed_top_via(&via, from.addr);
        let reply_to = response_destination(&via, from);
        let key = server_key(&msg, &via, &method);

        if let Some(problem) = validate_request(&msg, &method) {
            self.observer.malformed();
            self.reply_stateless(&msg, top_via.as_deref(), reply_to, 400, problem, &[]);
            return;
        }
        match &method[..] {
            b"ACK" => return self.on_ack(now, from, msg, key, top_via),
            b"CANCEL" => return self.on_cancel(now, msg, &key, top_via, reply_to),
            _ => {}
        }
        if let Some(&idx) = self.server_index.get(&key) {
            // Retransmission: repeat the last response, if any (§17.2.1/2).
            let s = &self.servers[idx];
            if let Some(last) = s.last.clone() {
                self.send(s.reply_to, last);
            }
            return;
        }
        if msg.to_tag().is_some() {
            return self.in_dialog(now, from, msg, key, top_via, reply_to, &method);
        }
        match &method[..] {
            b"INVITE" if self.draining => {
                let r = Rejection {
                    retry_after: Some(DRAIN_RETRY_AFTER_S),
                    ..local_rejection(
                        503,
                        "Shutting Down",
                        "shutting_down",
                        "this callguard instance is shutting down; place the call through another one",
                    )
                };
                self.observer.decision(None, "reject", r.code, 0.0);
                self.reject_invite(now, from, msg, key, top_via, reply_to, r, true);
            }
            b"INVITE" => self.initial_invite(now, from, msg, key, top_via, reply_to),
            b"OPTIONS" if self.draining => {
                let extra = [("Retry-After", "5")];
                self.reply_stateless(
                    &msg,
                    top_via.as_deref(),
                    reply_to,
                    503,
                    "Shutting Down",
                    &extra,
                );
            }
            b"OPTIONS" => {
                let extra = [("Allow", ALLOW), ("Accept", "application/sdp")];
                self.reply_stateless(&msg, top_via.as_deref(), reply_to, 200, "OK", &extra);
            }
            _ => {
                let extra = [("Allow", ALLOW)];
                self.reply_stateless(
                    &msg,
                    top_via.as_deref(),
                    reply_to,
                    405,
                    "Method Not Allowed",
                    &extra,
                );
            }
        }
    }

    fn initial_invite(
        &mut self,
        now: Instant,
        from: Peer,
        msg: Message,
        key: Key,
        top_via: Option<Vec<u8>>,
        reply_to: Peer,
    ) {
        if self
            .max_forwards(&msg, top_via.as_deref(), reply_to)
            .is_none()
        {
            return;
        }
        // §16.3 step 5: we support no extensions that a proxy must understand.
        if let Some(pr) = msg.header(HeaderName::ProxyRequire) {
            let unsupported = String::from_utf8_lossy(pr).into_owned();
            let extra = [("Unsupported", unsupported.as_str())];
            return self.reply_stateless(
                &msg,
                top_via.as_deref(),
                reply_to,
                420,
                "Bad Extension",
                &extra,
            );
        }
        let started = Instant::now();
        let verdict = self.gatekeeper.check(&msg, &from);
        let took = started.elapsed().as_secs_f64();
        match verdict {
            Verdict::Reject(r) => {
                self.observer
                    .decision(r.tenant.as_deref(), "reject", r.code, took);
                log_rejected(msg.call_id().unwrap_or_default(), from, &r);
                self.reject_invite(now, from, msg, key, top_via, reply_to, r, true);
            }
            Verdict::Forward {
                tenant,
                headers,
                warn,
            } => {
                self.observe_forward(&tenant, warn, took);
                let targets = self.targets();
                if targets.is_empty() {
                    let r = no_carrier();
                    return self.reject_invite(now, from, msg, key, top_via, reply_to, r, false);
                }
                let idx = self.park(from, msg, key, top_via, reply_to, targets, headers, None);
                self.try_next_carrier(now, idx);
            }
            Verdict::Pending(job) => {
                // Parked while the decision waits on the state store.
                let none = VecDeque::new();
                let idx = self.park(
                    from,
                    msg,
                    key,
                    top_via,
                    reply_to,
                    none,
                    Vec::new(),
                    Some(started),
                );
                let id = DecisionId {
                    slot: idx,
                    gen: self.servers[idx].gen,
                };
                self.decisions.push_back((id, job));
            }
        }
    }

    /// Forwards the INVITE of server transaction `sidx` to its next carrier.
    fn try_next_carrier(&mut self, now: Instant, sidx: usize) {
        let Some(carrier) = self.servers[sidx].targets.pop_front() else {
            return;
        };
        let dest = carrier.peer;
        let s = &self.servers[sidx];
        let Some(req) = s.request.as_ref() else {
            return;
        };
        let uri = rewrite_uri_host(req.request_uri().unwrap_or_default(), &dest);
        let rr = self.record_route(s.source, dest, req.call_id().unwrap_or_default());
        let branch = self.new_branch();
        let s = &self.servers[sidx];
        let Some(req) = s.request.as_ref() else {
            return;
        };
        let via = self.via_value(dest, &branch);
        let mf = req
            .max_forwards()
            .and_then(|r| r.ok())
            .unwrap_or(70)
            .saturating_sub(1)
            .min(69);
        let bytes = build::forward_request(
            req,
            &Forward {
                uri: Some(uri.as_bytes()),
                via: via.as_bytes(),
                top_via: s.top_via.as_deref(),
                record_route: &rr,
                pop_routes: 0,
                max_forwards: mf,
                extra: &s.extra,
            },
        );
        let link = (sidx, s.gen);
        self.start_client(
            now,
            branch,
            true,
            dest,
            bytes,
            Some(link),
            Some(carrier.name),
        );
    }

    /// Sends an OPTIONS health check to `carrier`. Any final answer but
    /// 503 and 408 counts as alive; no answer within `carrier_timeout`
    /// counts as a miss (see [`super::CarrierStatus`]).
    /// The driver picks `call_id`, so that the shard it hashes to is the
    /// one that sends the ping and gets its answer.
    pub fn ping(&mut self, now: Instant, carrier: &Carrier, call_id: &str) {
        let dest = carrier.peer;
        let branch = self.new_branch();
        let via = self.via_value(dest, &branch);
        let (host, port) = self.endpoint_for(dest);
        let target = match dest.addr {
            std::net::SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
            a => a.to_string(),
        };
        let text = format!(
            "OPTIONS sip:{target} SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\n\
             From: <sip:callguard@{host}:{port}>;tag={branch}\r\nTo: <sip:{target}>\r\n\
             Call-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        );
        let idx = self.start_client(
            now,
            branch,
            false,
            dest,
            Bytes::from(text),
            None,
            Some(carrier.name.clone()),
        );
        self.clients[idx].ping = true;
    }

    fn ping_result(&self, carrier: &Arc<str>, answered: bool) {
        if let Some(up) = self.settings.status.report(carrier, answered) {
            self.observer.carrier_up(carrier, up);
            if up {
                tracing::warn!(carrier = %carrier, "carrier answers OPTIONS again: back in rotation");
            } else {
                tracing::error!(carrier = %carrier, "carrier does not answer OPTIONS: out of rotation");
            }
        }
    }

    /// Carriers to try for a new call, in order: those up, then those out
    /// of rotation (a last resort, rather than refusing the call); within
    /// each, by priority, and within a priority in a weighted random order
    /// (as RFC 2782 orders SRV records: each pick has a chance proportional
    /// to its weight among those left; weight 0 comes after the others).
    fn targets(&mut self) -> VecDeque<Carrier> {
        // Disjoint fields: the RNG is borrowed mutably beside the settings.
        let (s, rng) = (&self.settings, &mut self.rng);
        let mut out = VecDeque::with_capacity(s.carriers.len());
        // The common case, no carrier out of rotation, needs one pass and
        // no status lookup per carrier.
        let any_down = s.status.any_down();
        for in_rotation in [true, false] {
            if !in_rotation && !any_down {
                break;
            }
            // `Settings::carriers` is sorted by priority.
            for same in s.carriers.chunk_by(|a, b| a.priority == b.priority) {
                let mut left: SmallVec<[&Carrier; 4]> = same
                    .iter()
                    .filter(|c| !any_down || s.status.is_up(&c.name) == in_rotation)
                    .collect();
                while left.len() > 1 {
                    // Weight 0 only once every weighted carrier is taken.
                    let weighted = left.iter().any(|c| c.weight > 0);
                    let weight = |c: &Carrier| if weighted { u64::from(c.weight) } else { 1 };
                    let total: u64 = left.iter().map(|c| weight(c)).sum();
                    let mut pick = rand::Rng::gen_range(&mut *rng, 0..total);
                    let i = left
                        .iter()
                        .position(|c| {
                            let w = weight(c);
                            let hit = pick < w;
                            pick = pick.saturating_sub(w);
                            hit
                        })
                        .unwrap_or(0);
                    out.push_back(left.remove(i).clone());
                }
                out.extend(left.into_iter().cloned());
            }
        }
        out
    }

    #[allow(clippy::too_many_arguments)]
    fn start_client(
        &mut self,
        now: Instant,
        branch: String,
        invite: bool,
        dest: Peer,
        bytes: Bytes,
        server: Option<(usize, u64)>,
        carrier: Option<Arc<str>>,
    ) -> usize {
        let to_carrier = carrier.is_some();
        let sent = Message::parse(bytes.clone()).ok().map(Box::new);
        let class = if invite { b'I' } else { b'N' };
        let mut key = Vec::with_capacity(branch.len() + 1);
        key.push(class);
        key.extend_from_slice(branch.as_bytes());
        let t1 = self.settings.t1;
        let idx = self.insert_client(ClientTxn {
            gen: 0,
            key: key.into(),
            invite,
            dest,
            sent,
            state: CState::Calling,
            retransmit: t1,
            server,
            carrier,
            ping: false,
            got_provisional: false,
            cancel_pending: false,
            cancel_sent: false,
            timer_c_at: None,
            ack: None,
        });
        if let Some((sidx, _)) = server {
            let gen = self.clients[idx].gen;
            self.servers[sidx].client = Some((idx, gen));
        }
        self.send(dest, bytes);
        let gen = self.clients[idx].gen;
        if !dest.transport.is_reliable() {
            self.timers
                .arm(now + t1, idx, gen, if invite { Kind::A } else { Kind::E });
        }
        // Carrier INVITEs and health checks use the short bound: a dialer,
        // or a rotation, cannot wait RFC 3261's 32 s.
        let timeout = if to_carrier {
            self.settings
                .carrier_timeout
                .min(self.settings.timer_64t1())
        } else {
            self.settings.timer_64t1()
        };
        self.timers.arm(
            now + timeout,
            idx,
            gen,
            if invite { Kind::B } else { Kind::F },
        );
        idx
    }

    #[allow(clippy::too_many_arguments)]
    fn reject_invite(
        &mut self,
        now: Instant,
        from: Peer,
        msg: Message,
        key: Key,
        top_via: Option<Vec<u8>>,
        reply_to: Peer,
        r: Rejection,
        explain: bool,
    ) {
        let tag = local_tag(&key);
        let bytes = if explain {
            self.explained_response(&msg, top_via.as_deref(), &tag, &r)
        } else {
            build::response(
                &msg,
                top_via.as_deref(),
                r.status,
                &r.phrase,
                Some(&tag),
                &[],
            )
        };
        let idx = self.insert_server(ServerTxn {
            gen: 0,
            key,
            invite: true,
            reply_to,
            source: from,
            request: None,
            top_via: None,
            state: SState::Completed,
            last: Some(bytes.clone()),
            retransmit: self.settings.t1,
            client: None,
            targets: VecDeque::new(),
            cancelled: false,
            extra: Vec::new(),
            deciding: None,
        });
        self.send(reply_to, bytes);
        self.arm_completed(now, idx);
    }

    /// A rejection response carrying the contract's explanation headers.
    fn explained_response(
        &self,
        msg: &Message,
        top_via: Option<&[u8]>,
        tag: &str,
        r: &Rejection,
    ) -> Bytes {
        let text = build::escape_quoted(&r.explanation);
        let reason = format!("SIP ;cause={} ;text=\"{}\"", r.status, text);
        let host = self
            .settings
            .local
            .first()
            .map(|l| l.host.as_str())
            .unwrap_or("callguard");
        let warning = format!("399 {host} \"{text}\"");
        let retry = r.retry_after.map(|s| s.to_string());
        let mut extra: SmallVec<[(&str, &str); 4]> = SmallVec::new();
        extra.push(("Reason", &reason));
        extra.push(("Warning", &warning));
        extra.push(("X-Callguard-Reason", r.code));
        if let Some(retry) = retry.as_deref() {
            extra.push(("Retry-After", retry));
        }
        build::response(msg, top_via, r.status, &r.phrase, Some(tag), &extra)
    }

    fn on_ack(
        &mut self,
        now: Instant,
        from: Peer,
        msg: Message,
        key: Key,
        top_via: Option<Vec<u8>>,
    ) {
        if let Some(&idx) = self.server_index.get(&key) {
            let s = &mut self.servers[idx];
            match s.state {
                SState::Completed => {
                    // ACK for a non-2xx final: hop by hop, absorbed (§17.2.1).
                    s.state = SState::Confirmed;
                    let gen = s.gen;
                    let wait = if s.reply_to.transport.is_reliable() {
                        Duration::ZERO
                    } else {
                        self.settings.t4
                    };
                    self.timers.arm(now + wait, idx, gen, Kind::I);
                    return;
                }
                SState::Confirmed | SState::Proceeding => return,
                SState::Accepted => {} // an ACK for 2xx that reused the INVITE branch: route it
            }
        }
        if msg.to_tag().is_none() {
            return;
        }
        // ACK for a 2xx: its own transaction, relayed statelessly by Route.
        match self.route_in_dialog(&msg) {
            RouteOutcome::Next { dest, pops } => {
                let branch = stateless_branch(&msg);
                let via = self.via_value(dest, &branch);
                let mf = msg.max_forwards().and_then(|r| r.ok()).unwrap_or(70);
                if mf == 0 {
                    return;
                }
                let bytes = build::forward_request(
                    &msg,
                    &Forward {
                        uri: None,
                        via: via.as_bytes(),
                        top_via: top_via.as_deref(),
                        record_route: &[],
                        pop_routes: pops,
                        max_forwards: mf - 1,
                        extra: &[],
                    },
                );
                self.send(dest, bytes);
            }
            _ => tracing::debug!(%from, "dropping ACK that is not routed through us"),
        }
    }

    fn on_cancel(
        &mut self,
        now: Instant,
        msg: Message,
        key: &[u8],
        top_via: Option<Vec<u8>>,
        reply_to: Peer,
    ) {
        // A CANCEL carries the branch of the INVITE it cancels (§9.1).
        let mut invite_key = key.to_vec();
        invite_key[0] = b'I';
        let Some(&sidx) = self.server_index.get(&invite_key[..]) else {
            return self.reply_stateless(
                &msg,
                top_via.as_deref(),
                reply_to,
                481,
                "Call/Transaction Does Not Exist",
                &[],
            );
        };
        self.reply_stateless(&msg, top_via.as_deref(), reply_to, 200, "OK", &[]);
        let s = &mut self.servers[sidx];
        if s.state != SState::Proceeding || s.cancelled {
            return;
        }
        s.cancelled = true;
        s.targets.clear();
        if s.deciding.is_some() {
            // Nothing was forwarded yet: the CANCEL ends the call here. The
            // verdict, when it comes, finds the transaction completed.
            return self.local_final(now, sidx, 487, "Request Terminated");
        }
        if let Some((cidx, cgen)) = s.client {
            if let Some(c) = self.clients.get_mut(cidx).filter(|c| c.gen == cgen) {
                if c.got_provisional {
                    self.send_cancel(now, cidx);
                } else {
                    // §9.1: a CANCEL may not be sent before a provisional.
                    c.cancel_pending = true;
                }
            }
        }
    }

    fn send_cancel(&mut self, now: Instant, cidx: usize) {
        let c = &mut self.clients[cidx];
        if c.cancel_sent || !matches!(c.state, CState::Calling | CState::Proceeding) {
            return;
        }
        c.cancel_sent = true;
        c.cancel_pending = false;
        let Some(sent) = c.sent.as_ref() else { return };
        let bytes = build::ack_or_cancel(sent, "CANCEL", None);
        let dest = c.dest;
        let branch = sent
            .top_via()
            .and_then(|v| v.branch)
            .unwrap_or_default()
            .to_vec();
        let branch = String::from_utf8_lossy(&branch).into_owned();
        // CANCEL is its own non-INVITE client transaction with the INVITE's branch.
        let mut key = vec![b'C'];
        key.extend_from_slice(branch.as_bytes());
        let t1 = self.settings.t1;
        let idx = self.insert_client(ClientTxn {
            gen: 0,
            key: key.into(),
            invite: false,
            dest,
            sent: Message::parse(bytes.clone()).ok().map(Box::new),
            state: CState::Calling,
            retransmit: t1,
            server: None,
            carrier: None,
            ping: false,
            got_provisional: false,
            cancel_pending: false,
            cancel_sent: false,
            timer_c_at: None,
            ack: None,
        });
        let gen = self.clients[idx].gen;
        self.send(dest, bytes);
        if !dest.transport.is_reliable() {
            self.timers.arm(now + t1, idx, gen, Kind::E);
        }
        self.timers
            .arm(now + self.settings.timer_64t1(), idx, gen, Kind::F);
    }

    #[allow(clippy::too_many_arguments)]
    fn in_dialog(
        &mut self,
        now: Instant,
        from: Peer,
        msg: Message,
        key: Key,
        top_via: Option<Vec<u8>>,
        reply_to: Peer,
        method: &[u8],
    ) {
        let Some(mf) = self.max_forwards(&msg, top_via.as_deref(), reply_to) else {
            return;
        };
        let (dest, pops) = match self.route_in_dialog(&msg) {
            RouteOutcome::Next { dest, pops } => (dest, pops),
            RouteOutcome::NotOurs => {
                // No Route naming us: not a dialog we record-routed. Relaying
                // it would make us an open relay.
                return self.reply_stateless(
                    &msg,
                    top_via.as_deref(),
                    reply_to,
                    404,
                    "Not Here",
                    &[],
                );
            }
            RouteOutcome::BadToken => {
                return self.reply_stateless(
                    &msg,
                    top_via.as_deref(),
                    reply_to,
                    403,
                    "Forbidden Route",
                    &[],
                );
            }
            RouteOutcome::Unresolvable => {
                return self.reply_stateless(
                    &msg,
                    top_via.as_deref(),
                    reply_to,
                    478,
                    "Unresolvable Destination",
                    &[],
                );
            }
        };
        // Only for dialogs we record-routed (the token checked out).
        self.gatekeeper.in_dialog(&msg, &from);
        let invite = method == b"INVITE";
        let branch = self.new_branch();
        let via = self.via_value(dest, &branch);
        let bytes = build::forward_request(
            &msg,
            &Forward {
                uri: None,
                via: via.as_bytes(),
                top_via: top_via.as_deref(),
                record_route: &[],
                pop_routes: pops,
                max_forwards: mf,
                extra: &[],
            },
        );
        let trying =
            invite.then(|| build::response(&msg, top_via.as_deref(), 100, "Trying", None, &[]));
        let idx = self.insert_server(ServerTxn {
            gen: 0,
            key,
            invite,
            reply_to,
            source: from,
            request: Some(Box::new(msg)),
            top_via,
            state: SState::Proceeding,
            last: trying.clone(),
            retransmit: self.settings.t1,
            client: None,
            targets: VecDeque::new(),
            cancelled: false,
            extra: Vec::new(),
            deciding: None,
        });
        if let Some(t) = trying {
            self.send(reply_to, t);
        }
        let link = (idx, self.servers[idx].gen);
        self.start_client(now, branch, invite, dest, bytes, Some(link), None);
    }

    /// Loose routing (§16.4, §16.12): our own Route entries are removed and
    /// the request goes to the next Route, or to the Request-URI.
    fn route_in_dialog(&self, msg: &Message) -> RouteOutcome {
        let call_id = msg.call_id().unwrap_or_default();
        let mut pops = 0;
        let mut next: Option<&[u8]> = None;
        for value in msg.values(HeaderName::Route) {
            let uri_text = name_addr_uri(value);
            let Some(uri) = Uri::parse(uri_text) else {
                if pops == 0 {
                    return RouteOutcome::NotOurs;
                }
                next = Some(uri_text);
                break;
            };
            if self.is_ours(&uri) {
                if uri.param(TOKEN_PARAM).flatten() != Some(self.route_token(call_id).as_bytes()) {
                    return RouteOutcome::BadToken;
                }
                pops += 1;
                continue;
            }
            next = Some(uri_text);
            break;
        }
        if pops == 0 {
            return RouteOutcome::NotOurs;
        }
        let target = next.unwrap_or_else(|| msg.request_uri().unwrap_or_default());
        match Uri::parse(target).and_then(|u| uri_destination(&u)) {
            Some(dest) => RouteOutcome::Next { dest, pops },
            None => RouteOutcome::Unresolvable,
        }
    }

    // -------------------------------------------------------------- responses

    fn on_response(&mut self, now: Instant, from: Peer, msg: Message) {
        let code = msg.status().unwrap_or(0);
        self.observer.response_in(code);
        let Some(via) = msg.top_via() else {
            self.observer.malformed();
            return;
        };
        let Some(branch) = via.branch.filter(|b| b.starts_with(OUR_BRANCH)) else {
            tracing::debug!(%from, "dropping response whose top Via is not ours");
            return;
        };
        let Some((_, cseq_method)) = msg.cseq() else {
            self.observer.malformed();
            return;
        };
        let class = match cseq_method {
            b"INVITE" => b'I',
            b"CANCEL" => b'C',
            _ => b'N',
        };
        let mut key = Vec::with_capacity(branch.len() + 1);
        key.push(class);
        key.extend_from_slice(branch);
        match self.client_index.get(&key[..]).copied() {
            Some(cidx) => {
                let c = &self.clients[cidx];
                if let (Some(name), true) = (&c.carrier, c.ping) {
                    if code >= 200 {
                        let name = name.clone();
                        self.ping_result(&name, !matches!(code, 503 | 408));
                    }
                } else if let Some(name) = &c.carrier {
                    self.observer.carrier_response(name, code);
                }
                if self.clients[cidx].invite {
                    self.invite_client_response(now, cidx, msg, code)
                } else {
                    self.non_invite_client_response(now, cidx, msg, code)
                }
            }
            // §16.7: no transaction matches; relay statelessly by Via.
            None => self.forward_stateless_response(&msg),
        }
    }

    fn invite_client_response(&mut self, now: Instant, cidx: usize, msg: Message, code: u16) {
        let settings = self.settings.clone();
        let c = &mut self.clients[cidx];
        let server = c.server;
        match (c.state, code) {
            (CState::Calling | CState::Proceeding, 100) => {
                c.state = CState::Proceeding;
            }
            (CState::Calling | CState::Proceeding, 101..=199) => {
                c.state = CState::Proceeding;
                c.got_provisional = true;
                let first_timer_c = c.timer_c_at.is_none();
                c.timer_c_at = Some(now + settings.timer_c);
                let gen = c.gen;
                if first_timer_c {
                    self.timers.arm(now + settings.timer_c, cidx, gen, Kind::C);
                }
                if c.cancel_pending {
                    self.send_cancel(now, cidx);
                }
                if let Some(sidx) = self.live_server(server) {
                    let s = &self.servers[sidx];
                    let bytes = build::forward_response(&msg, None, s.upstream());
                    let s = &mut self.servers[sidx];
                    if s.state == SState::Proceeding {
                        s.last = Some(bytes.clone());
                        let to = s.reply_to;
                        self.send(to, bytes);
                    }
                }
            }
            (CState::Calling | CState::Proceeding, 200..=299) => {
                c.state = CState::Accepted;
                c.sent = None;
                let gen = c.gen;
                self.timers
                    .arm(now + settings.timer_64t1(), cidx, gen, Kind::M);
                self.forward_final(now, server, &msg, code, true);
            }
            (CState::Accepted, 200..=299) => {
                // 2xx retransmissions are relayed: the UAS repeats them until
                // the caller's ACK arrives (§13.3.1.4).
                self.forward_final(now, server, &msg, code, true);
            }
            (CState::Calling | CState::Proceeding, _) if code >= 300 => {
                let ack = c
                    .sent
                    .as_ref()
                    .map(|sent| build::ack_or_cancel(sent, "ACK", msg.header(HeaderName::To)));
                c.state = CState::Completed;
                c.sent = None;
                c.ack = ack.clone();
                let (dest, gen, carrier) = (c.dest, c.gen, c.carrier.clone());
                if let Some(ack) = ack {
                    self.send(dest, ack);
                }
                let wait = if dest.transport.is_reliable() {
                    Duration::ZERO
                } else {
                    settings.timer_64t1().max(Duration::from_secs(32))
                };
                self.timers.arm(now + wait, cidx, gen, Kind::D);
                if let Some(sidx) = self.live_server(server) {
                    let s = &self.servers[sidx];
                    let retryable = matches!(code, 503 | 408);
                    if s.state == SState::Proceeding
                        && retryable
                        && !s.cancelled
                        && !s.targets.is_empty()
                    {
                        if let Some(name) = carrier {
                            self.observer.failover(&name);
                            tracing::info!(carrier = %name, code, "carrier refused the call, trying the next one");
                        }
                        self.try_next_carrier(now, sidx);
                        return;
                    }
                }
                self.forward_final(now, server, &msg, code, false);
            }
            (CState::Completed, _) if code >= 300 => {
                // Retransmitted final: repeat our ACK (§17.1.1.2).
                if let Some(ack) = c.ack.clone() {
                    let dest = c.dest;
                    self.send(dest, ack);
                }
            }
            _ => {}
        }
    }

    fn non_invite_client_response(&mut self, now: Instant, cidx: usize, msg: Message, code: u16) {
        let settings = self.settings.clone();
        let c = &mut self.clients[cidx];
        let server = c.server;
        match (c.state, code) {
            (CState::Calling | CState::Proceeding, 100..=199) => {
                c.state = CState::Proceeding;
                if code > 100 {
                    if let Some(sidx) = self.live_server(server) {
                        let s = &self.servers[sidx];
                        let bytes = build::forward_response(&msg, None, s.upstream());
                        let to = s.reply_to;
                        self.send(to, bytes);
                    }
                }
            }
            (CState::Calling | CState::Proceeding, _) => {
                c.state = CState::Completed;
                c.sent = None;
                let (gen, reliable) = (c.gen, c.dest.transport.is_reliable());
                let wait = if reliable {
                    Duration::ZERO
                } else {
                    settings.t4
                };
                self.timers.arm(now + wait, cidx, gen, Kind::K);
                self.forward_final(now, server, &msg, code, false);
            }
            _ => {}
        }
    }

    /// Relays a final response to the server transaction it answers.
    fn forward_final(
        &mut self,
        now: Instant,
        server: Option<(usize, u64)>,
        msg: &Message,
        code: u16,
        success: bool,
    ) {
        let Some(sidx) = self.live_server(server) else {
            if success {
                self.forward_stateless_response(msg);
            }
            return;
        };
        let s = &self.servers[sidx];
        let accepted_again = success && s.state == SState::Accepted;
        if s.state != SState::Proceeding && !accepted_again {
            return;
        }
        // §16.7 step 6: a 503 from downstream must not make upstream think
        // *this* proxy is overloaded.
        let status = (code == 503).then_some((500, "Server Internal Error"));
        let bytes = build::forward_response(msg, status, s.upstream());
        let to = s.reply_to;
        self.send(to, bytes.clone());
        if accepted_again {
            return;
        }
        let s = &mut self.servers[sidx];
        s.request = None;
        s.top_via = None;
        s.extra = Vec::new();
        let gen = s.gen;
        if s.invite && success {
            // RFC 6026 Accepted: absorb INVITE retransmissions, relay 2xx.
            s.state = SState::Accepted;
            s.last = None;
            self.timers
                .arm(now + self.settings.timer_64t1(), sidx, gen, Kind::L);
        } else if s.invite {
            s.last = Some(bytes);
            s.state = SState::Completed;
            self.arm_completed(now, sidx);
        } else {
            // Non-INVITE Completed: answer retransmissions for Timer J.
            s.last = Some(bytes);
            s.state = SState::Completed;
            let wait = if s.reply_to.transport.is_reliable() {
                Duration::ZERO
            } else {
                self.settings.timer_64t1()
            };
            self.timers.arm(now + wait, sidx, gen, Kind::J);
        }
    }

    fn forward_stateless_response(&mut self, msg: &Message) {
        let Some(next) = msg.values(HeaderName::Via).nth(1).and_then(Via::parse) else {
            return;
        };
        let Some(transport) = Transport::from_bytes(next.transport) else {
            return;
        };
        let ip = next
            .received
            .and_then(crate::sip::uri::parse_ip_host)
            .or_else(|| crate::sip::uri::parse_ip_host(next.host));
        let Some(ip) = ip else { return };
        let port = match next.rport {
            Some(Some(p)) => std::str::from_utf8(p).ok().and_then(|p| p.parse().ok()),
            _ => None,
        }
        .or(next.port)
        .unwrap_or(5060);
        let bytes = build::forward_response(msg, None, None);
        self.send(
            Peer {
                transport,
                addr: (ip, port).into(),
            },
            bytes,
        );
    }

    // ----------------------------------------------------------------- timers

    fn server_timer(&mut self, now: Instant, idx: usize, kind: Kind) {
        let s = &mut self.servers[idx];
        match (kind, s.state) {
            (Kind::G, SState::Completed) => {
                if let Some(last) = s.last.clone() {
                    s.retransmit = (s.retransmit * 2).min(self.settings.t2);
                    let (to, gen, next) = (s.reply_to, s.gen, s.retransmit);
                    self.send(to, last);
                    self.timers.arm(now + next, idx, gen, Kind::G);
                }
            }
            (Kind::H, SState::Completed)
            | (Kind::I, SState::Confirmed)
            | (Kind::L, SState::Accepted) => self.remove_server(idx),
            (Kind::J, SState::Completed) => self.remove_server(idx),
            _ => {}
        }
    }

    fn client_timer(&mut self, now: Instant, idx: usize, kind: Kind) {
        let settings = self.settings.clone();
        let c = &mut self.clients[idx];
        match (kind, c.state) {
            (Kind::A, CState::Calling) => {
                let bytes = c.sent.as_ref().map(|m| m.buf().clone());
                c.retransmit *= 2;
                let (dest, gen, next) = (c.dest, c.gen, c.retransmit);
                if let Some(b) = bytes {
                    self.send(dest, b);
                }
                self.timers.arm(now + next, idx, gen, Kind::A);
            }
            (Kind::E, CState::Calling | CState::Proceeding) => {
                let bytes = c.sent.as_ref().map(|m| m.buf().clone());
                c.retransmit = if c.state == CState::Proceeding {
                    settings.t2
                } else {
                    (c.retransmit * 2).min(settings.t2)
                };
                let (dest, gen, next) = (c.dest, c.gen, c.retransmit);
                if let Some(b) = bytes {
                    self.send(dest, b);
                }
                self.timers.arm(now + next, idx, gen, Kind::E);
            }
            (Kind::B, CState::Calling) | (Kind::F, CState::Calling | CState::Proceeding) => {
                self.client_failed(now, idx, Failure::Timeout);
            }
            (Kind::B, CState::Proceeding) if c.cancel_sent => {
                // Cancelled and the callee side never sent a final: give up.
                self.remove_client(idx);
            }
            (Kind::C, CState::Proceeding) => {
                let due = c.timer_c_at.unwrap_or(now);
                let gen = c.gen;
                if due > now {
                    self.timers.arm(due, idx, gen, Kind::C);
                    return;
                }
                // §16.8: Timer C fired with a provisional: CANCEL and 408.
                let server = c.server;
                self.send_cancel(now, idx);
                self.timers
                    .arm(now + settings.timer_64t1(), idx, gen, Kind::B);
                if let Some(sidx) = self.live_server(server) {
                    self.local_final(now, sidx, 408, "Request Timeout");
                }
            }
            (Kind::D | Kind::K | Kind::M, _) => self.remove_client(idx),
            _ => {}
        }
    }

    fn client_failed(&mut self, now: Instant, cidx: usize, why: Failure) {
        let c = &self.clients[cidx];
        if c.ping {
            if let Some(name) = c.carrier.clone() {
                self.ping_result(&name, false);
            }
            return self.remove_client(cidx);
        }
        let server = c.server;
        let carrier = c.carrier.clone();
        if let Some(name) = &carrier {
            tracing::warn!(carrier = %name, reason = ?why, "carrier did not answer");
            self.observer.carrier_failed(
                name,
                match why {
                    Failure::Timeout => "timeout",
                    Failure::Unreachable => "unreachable",
                },
            );
        }
        self.remove_client(cidx);
        let Some(sidx) = self.live_server(server) else {
            return;
        };
        let s = &self.servers[sidx];
        if s.state != SState::Proceeding {
            return;
        }
        if !s.cancelled && !s.targets.is_empty() {
            if let Some(name) = &carrier {
                self.observer.failover(name);
            }
            return self.try_next_carrier(now, sidx);
        }
        match (s.cancelled, why) {
            (true, _) => self.local_final(now, sidx, 487, "Request Terminated"),
            (false, Failure::Timeout) => self.local_final(now, sidx, 408, "Request Timeout"),
            (false, Failure::Unreachable) => {
                self.local_final(now, sidx, 503, "Service Unavailable")
            }
        }
    }

    /// A final response generated here for a proxied request.
    fn local_final(&mut self, now: Instant, sidx: usize, code: u16, phrase: &str) {
        let s = &mut self.servers[sidx];
        if s.state != SState::Proceeding {
            return;
        }
        let Some(req) = s.request.take() else { return };
        let tag = local_tag(&s.key);
        let bytes = build::response(&req, s.top_via.as_deref(), code, phrase, Some(&tag), &[]);
        s.top_via = None;
        s.state = SState::Completed;
        s.last = Some(bytes.clone());
        let to = s.reply_to;
        self.send(to, bytes);
        if self.servers[sidx].invite {
            self.arm_completed(now, sidx);
        } else {
            let s = &self.servers[sidx];
            let wait = if s.reply_to.transport.is_reliable() {
                Duration::ZERO
            } else {
                self.settings.timer_64t1()
            };
            let gen = s.gen;
            self.timers.arm(now + wait, sidx, gen, Kind::J);
        }
    }

    /// Server INVITE transaction entering Completed: Timer G (UDP) and H.
    fn arm_completed(&mut self, now: Instant, sidx: usize) {
        let s = &mut self.servers[sidx];
        let gen = s.gen;
        s.retransmit = self.settings.t1;
        if !s.reply_to.transport.is_reliable() {
            self.timers.arm(now + self.settings.t1, sidx, gen, Kind::G);
        }
        self.timers
            .arm(now + self.settings.timer_64t1(), sidx, gen, Kind::H);
    }

    // ---------------------------------------------------------------- helpers

    /// §16.3 step 3 / §16.6 step 3: the Max-Forwards to send on, or `None`
    /// after answering 483 (zero) or 400 (unreadable).
    fn max_forwards(
        &mut self,
        msg: &Message,
        top_via: Option<&[u8]>,
        reply_to: Peer,
    ) -> Option<u32> {
        match msg.max_forwards() {
            Some(Ok(0)) => {
                self.reply_stateless(msg, top_via, reply_to, 483, "Too Many Hops", &[]);
                None
            }
            Some(Err(())) => {
                self.reply_stateless(msg, top_via, reply_to, 400, "Bad Max-Forwards", &[]);
                None
            }
            Some(Ok(n)) => Some(n.min(70) - 1),
            None => Some(69),
        }
    }

    fn live_server(&self, link: Option<(usize, u64)>) -> Option<usize> {
        let (idx, gen) = link?;
        self.servers.get(idx).filter(|s| s.gen == gen).map(|_| idx)
    }

    fn insert_server(&mut self, mut s: ServerTxn) -> usize {
        self.gen += 1;
        s.gen = self.gen;
        let key = s.key.clone();
        let idx = self.servers.insert(s);
        self.server_index.insert(key, idx);
        self.observer.transactions(1);
        idx
    }

    fn insert_client(&mut self, mut c: ClientTxn) -> usize {
        self.gen += 1;
        c.gen = self.gen;
        let key = c.key.clone();
        let idx = self.clients.insert(c);
        self.client_index.insert(key, idx);
        self.observer.transactions(1);
        idx
    }

    fn remove_server(&mut self, idx: usize) {
        let s = self.servers.remove(idx);
        self.server_index.remove(&s.key);
        self.observer.transactions(-1);
    }

    fn remove_client(&mut self, idx: usize) {
        let c = self.clients.remove(idx);
        if self.client_index.get(&c.key) == Some(&idx) {
            self.client_index.remove(&c.key);
        }
        self.observer.transactions(-1);
    }

    fn send(&mut self, to: Peer, payload: Bytes) {
        if payload.starts_with(b"SIP/2.0 ") {
            let code = std::str::from_utf8(&payload[8..11])
                .ok()
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            self.observer.response_out(code);
        } else {
            let sp = memchr::memchr(b' ', &payload).unwrap_or(0);
            self.observer.message_out(&payload[..sp]);
        }
        self.out.push_back(Transmit { to, payload });
    }

    fn reply_stateless(
        &mut self,
        req: &Message,
        top_via: Option<&[u8]>,
        to: Peer,
        code: u16,
        phrase: &str,
        extra: &[(&str, &str)],
    ) {
        let tag = req.call_id().map(|c| {
            let mut h = siphasher::sip::SipHasher13::new_with_key(&self.settings.route_key);
            h.write(c);
            h.write(req.from_tag().unwrap_or_default());
            format!("cg{:x}", h.finish())
        });
        let tag = if code > 100 { tag } else { None };
        let bytes = build::response(req, top_via, code, phrase, tag.as_deref(), extra);
        self.send(to, bytes);
    }

    fn new_branch(&mut self) -> String {
        self.branch_seq += 1;
        format!(
            "{}{:08x}.{:x}.{:x}",
            std::str::from_utf8(OUR_BRANCH).unwrap_or("z9hG4bKcg"),
            self.settings.instance,
            self.shard,
            self.branch_seq
        )
    }

    fn endpoint_for(&self, dest: Peer) -> (&str, u16) {
        let v6 = dest.addr.is_ipv6();
        let l = &self.settings.local;
        let e = l
            .iter()
            .find(|e| e.transport == dest.transport && e.ipv6 == v6)
            .or_else(|| l.iter().find(|e| e.transport == dest.transport))
            .or_else(|| l.first());
        match e {
            Some(e) => (e.host.as_str(), e.port),
            None => ("callguard.invalid", 5060),
        }
    }

    fn via_value(&self, dest: Peer, branch: &str) -> String {
        let (host, port) = self.endpoint_for(dest);
        format!(
            "SIP/2.0/{} {}:{};branch={};rport",
            dest.transport.as_via(),
            host,
            port,
            branch
        )
    }

    /// Record-Route values, topmost first. Two entries when the two sides
    /// differ in transport or address family, so each side reaches us the
    /// way it first did (the "double record-route" of RFC 3261 §16.6 step 4
    /// / RFC 5658).
    fn record_route(&self, inbound: Peer, outbound: Peer, call_id: &[u8]) -> Vec<String> {
        let token = self.route_token(call_id);
        let entry = |p: Peer| {
            let (host, port) = self.endpoint_for(p);
            let t = if p.transport == Transport::Tcp {
                ";transport=tcp"
            } else {
                ""
            };
            format!("<sip:{host}:{port}{t};lr;cgr={token}>")
        };
        let out = entry(outbound);
        let inn = entry(inbound);
        if out == inn {
            vec![out]
        } else {
            vec![out, inn]
        }
    }

    fn route_token(&self, call_id: &[u8]) -> String {
        let mut h = siphasher::sip::SipHasher13::new_with_key(&self.settings.route_key);
        h.write(call_id);
        format!("{:016x}", h.finish())
    }

    fn is_ours(&self, uri: &Uri<'_>) -> bool {
        let port = uri.port.unwrap_or(if uri.is_sips() { 5061 } else { 5060 });
        self.settings
            .local
            .iter()
            .any(|e| e.port == port && e.host.as_bytes().eq_ignore_ascii_case(uri.host))
            || self
                .settings
                .aliases
                .iter()
                .any(|a| a.as_bytes().eq_ignore_ascii_case(uri.host))
    }
}

#[derive(Debug, Clone, Copy)]
enum Failure {
    Timeout,
    Unreachable,
}

fn no_carrier() -> Rejection {
    local_rejection(
        503,
        "Service Unavailable",
        "no_carrier",
        "no carrier is configured",
    )
}

/// One info line per rejected call, with its rule code (ops grep these).
fn log_rejected(call_id: &[u8], from: Peer, r: &Rejection) {
    tracing::info!(
        call_id = %String::from_utf8_lossy(call_id),
        %from, status = r.status, reason = r.code, "call rejected: {}", r.explanation
    );
}

fn local_rejection(status: u16, phrase: &str, code: &'static str, why: &str) -> Rejection {
    Rejection {
        tenant: None,
        status,
        phrase: phrase.into(),
        code,
        explanation: why.into(),
        retry_after: None,
    }
}

/// §17.2.3 matching key: branch, sent-by and method (ACK and CANCEL map to
/// the INVITE they belong to / their own class). Pre-RFC 3261 branches fall
/// back to the dialog identifiers.
fn server_key(msg: &Message, via: &Via<'_>, method: &[u8]) -> Key {
    let class: &[u8] = match method {
        b"INVITE" | b"ACK" => b"I",
        b"CANCEL" => b"C",
        m => m,
    };
    let mut k = Vec::with_capacity(64);
    k.extend_from_slice(class);
    k.push(b'|');
    match via.branch.filter(|b| b.starts_with(BRANCH_COOKIE)) {
        Some(b) => k.extend_from_slice(b),
        None => {
            k.extend_from_slice(msg.call_id().unwrap_or_default());
            k.push(b'|');
            k.extend_from_slice(msg.from_tag().unwrap_or_default());
            k.push(b'|');
            k.extend_from_slice(msg.cseq().map(|c| c.0).unwrap_or(0).to_string().as_bytes());
        }
    }
    k.push(b'|');
    k.extend_from_slice(via.sent_by);
    k.into()
}

/// Where responses to a request go (§18.2.2, RFC 3581).
fn response_destination(via: &Via<'_>, from: Peer) -> Peer {
    if from.transport.is_reliable() || via.rport.is_some() {
        return from;
    }
    Peer {
        transport: from.transport,
        addr: (from.addr.ip(), via.port.unwrap_or(5060)).into(),
    }
}

fn validate_request(msg: &Message, method: &[u8]) -> Option<&'static str> {
    // RFC 3261 §7.3.1 allows a header field several times only when its
    // value is a comma-separated list. Two From, To, Call-ID, CSeq,
    // Max-Forwards or Content-Length headers make the request ambiguous
    // (RFC 4475 §3.1.2.19 `multi01`, §3.1.2.11 `mcl01`): the identity this
    // proxy checks might not be the one the next hop reads.
    let mut seen = [0u8; 6];
    for h in &msg.headers {
        let i = match h.name {
            HeaderName::From => 0,
            HeaderName::To => 1,
            HeaderName::CallId => 2,
            HeaderName::CSeq => 3,
            HeaderName::MaxForwards => 4,
            HeaderName::ContentLength => 5,
            _ => continue,
        };
        seen[i] += 1;
        if seen[i] > 1 {
            return Some(
                [
                    "Duplicate From",
                    "Duplicate To",
                    "Duplicate Call-ID",
                    "Duplicate CSeq",
                    "Duplicate Max-Forwards",
                    "Duplicate Content-Length",
                ][i],
            );
        }
    }
    if msg.call_id().is_none() {
        return Some("Missing Call-ID");
    }
    if msg.header(HeaderName::From).is_none() {
        return Some("Missing From");
    }
    if msg.header(HeaderName::To).is_none() {
        return Some("Missing To");
    }
    match msg.cseq() {
        None => return Some("Bad CSeq"),
        Some((_, m)) if m != method => return Some("CSeq Method Mismatch"),
        _ => {}
    }
    if msg.body().is_err() {
        return Some("Bad Content-Length");
    }
    if msg.request_uri().and_then(Uri::parse).is_none() {
        return Some("Bad Request-URI");
    }
    None
}

/// A deterministic To tag for responses we generate, so retransmitted
/// requests get byte-identical answers.
fn local_tag(key: &[u8]) -> String {
    let mut h = siphasher::sip::SipHasher13::new();
    h.write(key);
    format!("cg{:x}", h.finish())
}

/// Stateless relays must produce the same branch for a retransmitted
/// request (§16.11), so it is derived from the received one.
fn stateless_branch(msg: &Message) -> String {
    let mut h = siphasher::sip::SipHasher13::new();
    if let Some(v) = msg.top_via() {
        h.write(v.branch.unwrap_or_default());
        h.write(v.sent_by);
    }
    h.write(msg.call_id().unwrap_or_default());
    format!("z9hG4bKcgsl{:x}", h.finish())
}

/// The Request-URI sent to a carrier: the dialed user at the carrier's
/// address (`tel:` URIs become `sip:`).
fn rewrite_uri_host(uri: &[u8], dest: &Peer) -> String {
    let host = match dest.addr {
        std::net::SocketAddr::V4(a) => format!("{}:{}", a.ip(), a.port()),
        std::net::SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
    };
    let transport = if dest.transport == Transport::Tcp {
        ";transport=tcp"
    } else {
        ""
    };
    match Uri::parse(uri) {
        Some(u) => {
            let scheme = if u.is_sips() { "sips" } else { "sip" };
            let user = u
                .user
                .map(|u| format!("{}@", String::from_utf8_lossy(u)))
                .unwrap_or_default();
            let params: String = crate::sip::message::params(u.params)
                .filter(|(n, _)| {
                    !n.eq_ignore_ascii_case(b"transport")
                        && !n.eq_ignore_ascii_case(b"phone-context")
                })
                .map(|(n, v)| match v {
                    Some(v) => format!(
                        ";{}={}",
                        String::from_utf8_lossy(n),
                        String::from_utf8_lossy(v)
                    ),
                    None => format!(";{}", String::from_utf8_lossy(n)),
                })
                .collect();
            format!("{scheme}:{user}{host}{params}{transport}")
        }
        None => format!("sip:{host}{transport}"),
    }
}

/// The next hop named by a URI: needs an IP literal (DNS-named in-dialog
/// targets are answered 478 rather than resolved on the call path).
fn uri_destination(u: &Uri<'_>) -> Option<Peer> {
    let ip = u.ip()?;
    let transport = match u.param(b"transport").flatten() {
        Some(t) => Transport::from_bytes(t)?,
        None => Transport::Udp,
    };
    let port = u.port.unwrap_or(5060);
    Some(Peer {
        transport,
        addr: (ip, port).into(),
    })
}

#[cfg(test)]
mod tests;
