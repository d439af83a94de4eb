//! The proxy core: what RFC 3261 §16 says a stateful proxy does, on top of
//! the §17 transaction machines of [`super::txn`].
//!
//! An initial INVITE owns one server transaction and, over its life, one
//! INVITE client transaction per carrier tried (serial failover). The
//! request being proxied and what the proxy does with it (targets left,
//! CANCEL, a pending decision) live beside the server transaction in a
//! [`Forwarding`]; per-branch proxy state (Timer C, the CANCEL of the
//! branch) lives beside the client transaction. Transactions refer to each
//! other by slab index plus a generation, so a stale reference is detected
//! instead of misrouted.
//!
//! Methods: `handle_*` take input (messages, timeouts, verdicts), `poll_*`
//! hand out what to do (datagrams, deadlines, decisions to run); the rest
//! read state. The core never reads the clock: every instant comes in as an
//! argument.

use bytes::Bytes;
use smallvec::SmallVec;
use std::collections::{HashMap, VecDeque};
use std::hash::Hasher;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::build::{self, Forward};
use super::carriers::{self, Carrier};
use super::routing::{self, Refusal};
use super::txn::{
    AckFor, ClientInvite, ClientNonInvite, Ctx, Fate, Fired, InviteEvent, KeyMethod,
    NonInviteEvent, Outbox, ServerInvite, ServerNonInvite, Timer, Timers, TxnKey,
};
use super::{
    DecisionId, Gatekeeper, Observer, Peer, Pending, Rejection, Settings, Transmit, Transport,
    Verdict,
};
use crate::codes::{Code, Outcome};
use crate::sip::check::check_request;
use crate::sip::message::HeaderName;
use crate::sip::{Message, ParseError, Via};

/// Marks branches this proxy generated; responses whose top Via lacks it
/// were not sent by us and are dropped.
const OUR_BRANCH: &[u8] = b"z9hG4bKcg";
/// Allow header for 405 and OPTIONS: what we accept out of dialog plus
/// what we relay in dialog.
const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, INFO, PRACK, REFER, NOTIFY";
/// Retry-After on INVITEs refused while shutting down: a restart, or the
/// dialer's other trunk, is expected within seconds.
const DRAIN_RETRY_AFTER_S: u64 = 5;

/// A transaction in a slab: index and generation.
type Link = (usize, u64);

enum ServerMachine {
    Invite(ServerInvite),
    NonInvite(ServerNonInvite),
}

impl ServerMachine {
    fn proceeding(&self) -> bool {
        match self {
            ServerMachine::Invite(m) => m.proceeding(),
            ServerMachine::NonInvite(m) => m.proceeding(),
        }
    }
    fn provisional(&mut self, response: Bytes, ctx: &mut Ctx<'_>) {
        match self {
            ServerMachine::Invite(m) => m.provisional(response, ctx),
            ServerMachine::NonInvite(m) => m.provisional(response, ctx),
        }
    }
    fn final_response(&mut self, code: u16, response: Bytes, ctx: &mut Ctx<'_>) {
        match self {
            ServerMachine::Invite(m) => m.final_response(code, response, ctx),
            ServerMachine::NonInvite(m) => m.final_response(response, ctx),
        }
    }
}

struct ServerEntry {
    gen: u64,
    key: TxnKey,
    source: Peer,
    machine: ServerMachine,
    /// The request being proxied; dropped once it has its final response.
    fwd: Option<Box<Forwarding>>,
}

/// §16: a request being proxied and what the proxy does with it.
struct Forwarding {
    request: Message,
    /// The received top Via with `received`/`rport` filled in.
    top_via: Option<Vec<u8>>,
    /// The client transaction trying the current target.
    branch: Option<Link>,
    /// Carriers still to try, in order (initial INVITEs).
    targets: VecDeque<Carrier>,
    /// The tenant that placed the call (initial INVITEs): bound into the
    /// Record-Route token.
    tenant: Option<Arc<str>>,
    cancelled: bool,
    /// Headers added to the forwarded request (a `warn` tag).
    extra: Vec<(String, String)>,
    /// Waiting for a pending decision since this instant.
    deciding: Option<Instant>,
}

impl Forwarding {
    fn new(request: Message, top_via: Option<Vec<u8>>) -> Box<Forwarding> {
        Box::new(Forwarding {
            request,
            top_via,
            branch: None,
            targets: VecDeque::new(),
            tenant: None,
            cancelled: false,
            extra: Vec::new(),
            deciding: None,
        })
    }

    fn upstream(&self) -> (&Message, Option<&[u8]>) {
        (&self.request, self.top_via.as_deref())
    }
}

enum ClientMachine {
    Invite(ClientInvite),
    NonInvite(ClientNonInvite),
}

impl ClientMachine {
    fn dest(&self) -> Peer {
        match self {
            ClientMachine::Invite(m) => m.dest(),
            ClientMachine::NonInvite(m) => m.dest(),
        }
    }
    fn waiting(&self) -> bool {
        match self {
            ClientMachine::Invite(m) => m.waiting(),
            ClientMachine::NonInvite(m) => m.waiting(),
        }
    }
    fn on_timer(&mut self, timer: Timer, ctx: &mut Ctx<'_>) -> Fate {
        match self {
            ClientMachine::Invite(m) => m.on_timer(timer, ctx),
            ClientMachine::NonInvite(m) => m.on_timer(timer, ctx),
        }
    }
}

/// Why a client transaction exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// A request proxied for a server transaction.
    Branch,
    /// An OPTIONS health check of a carrier.
    Ping,
    /// A CANCEL this proxy sent for an INVITE branch.
    Cancel,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CancelState {
    None,
    /// Asked for before any provisional: sent when one comes (§9.1).
    Held,
    Sent,
}

struct ClientEntry {
    gen: u64,
    key: TxnKey,
    machine: ClientMachine,
    role: Role,
    server: Option<Link>,
    carrier: Option<Arc<str>>,
    /// Any 1xx received (100 included: a CANCEL may then be sent, §9.1).
    provisional: bool,
    cancel: CancelState,
    /// When Timer C is due (§16.6 step 11, reset by 101–199, §16.7 step 2).
    timer_c_due: Option<Instant>,
    /// Timer C is never reset past this: a next hop that sends a
    /// provisional every few minutes must not hold the call forever.
    ring_limit: Option<Instant>,
}

/// How far provisionals can push Timer C back, in Timer C periods from the
/// moment the INVITE was forwarded (12 minutes with the default 180 s).
const RING_LIMIT_PERIODS: u32 = 4;

#[derive(Debug, Clone, Copy)]
enum Failure {
    Timeout,
    Unreachable,
}

/// A `Ctx` for the machine in slot `$slot`, generation `$gen`: built from
/// disjoint fields, so a machine in a slab can act while the outbox and
/// the timers are borrowed.
macro_rules! ctx {
    ($self:ident, $now:expr, $slot:expr, $gen:expr) => {
        Ctx {
            now: $now,
            out: &mut $self.out,
            timers: &mut $self.timers,
            t: $self.settings.intervals(),
            slot: $slot,
            gen: $gen,
        }
    };
}

/// One shard of proxy state. See the module docs of [`crate::proxy`].
pub struct Core {
    settings: Arc<Settings>,
    gatekeeper: Arc<dyn Gatekeeper>,
    observer: Arc<dyn Observer>,
    shard: u16,
    servers: slab::Slab<ServerEntry>,
    clients: slab::Slab<ClientEntry>,
    server_index: HashMap<TxnKey, usize>,
    client_index: HashMap<TxnKey, usize>,
    timers: Timers,
    out: Outbox,
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
            out: Outbox::new(observer.clone()),
            observer,
            shard,
            servers: slab::Slab::new(),
            clients: slab::Slab::new(),
            server_index: HashMap::new(),
            client_index: HashMap::new(),
            timers: Timers::default(),
            gen: 0,
            branch_seq: 0,
            draining: false,
            decisions: VecDeque::new(),
            rng: rand::SeedableRng::seed_from_u64(u64::from(shard)),
        }
    }

    // ---------------------------------------------------------------- getters

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next_deadline()
    }

    /// The next decision the driver must run (see [`Verdict::Pending`]).
    pub fn poll_decision(&mut self) -> Option<(DecisionId, Pending)> {
        self.decisions.pop_front()
    }

    pub fn active_transactions(&self) -> usize {
        self.servers.len() + self.clients.len()
    }

    /// Entries in the timer queue, including lazily cancelled ones.
    pub fn pending_timers(&self) -> usize {
        self.timers.len()
    }

    /// Transactions that still wait for a final response: the shutdown
    /// should not cut them short. Those that only absorb retransmissions
    /// (Timers D, H, I, J, K, L, M) do not count; otherwise the INVITEs
    /// refused during the drain would keep it from ever ending.
    pub fn unfinished_transactions(&self) -> usize {
        let servers = self
            .servers
            .iter()
            .filter(|(_, s)| s.machine.proceeding())
            .count();
        let clients = self
            .clients
            .iter()
            .filter(|(_, c)| c.machine.waiting())
            .count();
        servers + clients
    }

    // --------------------------------------------------------------- mutators

    /// Starts a graceful shutdown: from now on initial INVITEs get `503`
    /// with `Retry-After` and OPTIONS pings get `503`, so dialers and load
    /// balancers move new calls elsewhere; everything else (responses,
    /// CANCEL, ACK, in-dialog requests) is still handled.
    pub fn drain(&mut self) {
        self.draining = true;
    }

    /// Replaces settings and gatekeeper for new transactions (reload);
    /// transactions in flight keep the carriers they were given.
    pub fn reconfigure(&mut self, settings: Arc<Settings>, gatekeeper: Arc<dyn Gatekeeper>) {
        self.settings = settings;
        self.gatekeeper = gatekeeper;
    }

    /// Sends an OPTIONS health check to `carrier`. Any final answer but
    /// 503 and 408 counts as alive; no answer within `carrier_timeout`
    /// counts as a miss (see [`super::CarrierStatus`]). The driver picks
    /// `call_id`, so that the shard it hashes to is the one that sends the
    /// ping and gets its answer.
    pub fn ping(&mut self, now: Instant, carrier: &Carrier, call_id: &str) {
        let dest = carrier.peer;
        let branch = self.new_branch();
        let via = routing::via_value(&self.settings, dest, &branch);
        let (host, port) = routing::endpoint_for(&self.settings, dest);
        let text = carriers::ping(dest, &via, host, port, &branch, call_id);
        let timeout = self.carrier_timeout();
        let key = TxnKey::client(branch.as_bytes(), b"OPTIONS");
        self.new_client(
            now,
            key,
            Role::Ping,
            None,
            Some(carrier.name.clone()),
            |ctx| {
                ClientMachine::NonInvite(ClientNonInvite::start(
                    dest,
                    Bytes::from(text),
                    timeout,
                    ctx,
                ))
            },
        );
    }

    // ------------------------------------------------------------------ input

    pub fn handle_message(&mut self, now: Instant, from: Peer, data: Bytes) {
        let msg = match Message::parse(data.clone()) {
            Ok(m) => m,
            Err(e) => {
                self.observer.malformed();
                tracing::debug!(%from, error = %e, "unparsable message");
                if let Some((m, problem)) = Message::salvage(data) {
                    self.answer_broken_request(from, &m, problem);
                }
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
        let dead: SmallVec<[usize; 4]> = self
            .clients
            .iter()
            .filter(|(_, c)| {
                c.machine.dest() == peer
                    && match &c.machine {
                        ClientMachine::Invite(m) => {
                            m.state() == super::txn::ClientInviteState::Calling
                        }
                        ClientMachine::NonInvite(m) => m.waiting(),
                    }
            })
            .map(|(i, _)| i)
            .collect();
        for idx in dead {
            self.client_failed(now, idx, Failure::Unreachable);
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(f) = self.timers.pop_due(now) {
            if f.timer.on_server() {
                if self.servers.get(f.slot).is_some_and(|s| s.gen == f.gen) {
                    self.server_timer(now, f);
                }
            } else if self.clients.get(f.slot).is_some_and(|c| c.gen == f.gen) {
                self.client_timer(now, f);
            }
        }
    }

    /// The outcome of a pending decision. Ignored when the transaction has
    /// ended meanwhile; a CANCEL that came first has already answered 487.
    pub fn handle_verdict(&mut self, now: Instant, id: DecisionId, verdict: Verdict) {
        let Some(s) = self.servers.get_mut(id.slot).filter(|s| s.gen == id.gen) else {
            return;
        };
        if !s.machine.proceeding() {
            return;
        }
        let Some(fwd) = s.fwd.as_mut() else { return };
        if fwd.deciding.take().is_none() {
            return;
        }
        match verdict {
            Verdict::Reject(r) => {
                self.observer
                    .decision(r.tenant.as_deref(), Outcome::Reject, Some(r.code));
                let call_id = fwd.request.call_id().unwrap_or_default();
                log_rejected(call_id, s.source, &r);
                self.reject_server(now, id.slot, &r);
            }
            Verdict::Forward {
                tenant,
                headers,
                warn,
            } => {
                self.observe_forward(&tenant, warn);
                let targets = self.targets();
                if targets.is_empty() {
                    return self.reject_server(now, id.slot, &no_carrier());
                }
                if let Some(fwd) = self.servers[id.slot].fwd.as_mut() {
                    fwd.targets = targets;
                    fwd.extra = headers;
                    fwd.tenant = Some(tenant);
                }
                self.try_next_carrier(now, id.slot);
            }
            Verdict::Pending(_) => {
                tracing::error!("a pending decision resolved to another pending decision");
                self.local_final(now, id.slot, 500, "Server Internal Error");
            }
        }
    }

    // --------------------------------------------------------------- requests

    /// A request whose Request-Line could not be parsed: `505` for an
    /// unknown SIP version, `400` otherwise, when a response can be routed.
    fn answer_broken_request(&mut self, from: Peer, msg: &Message, problem: ParseError) {
        if msg.method() == Some(b"ACK") {
            return;
        }
        let Some(via) = msg.top_via() else { return };
        let top_via = build::fixed_top_via(&via, from.addr);
        let reply_to = routing::response_destination(&via, from);
        let (code, phrase) = match problem {
            ParseError::BadVersion => (505, "Version Not Supported"),
            _ => (400, "Bad Request-Line"),
        };
        self.reply_stateless(msg, top_via.as_deref(), reply_to, code, phrase, &[]);
    }

    fn on_request(&mut self, now: Instant, from: Peer, msg: Message) {
        let method = msg.method().unwrap_or_default().to_vec();
        self.observer.message_in(&method);
        let Some(via) = msg.top_via() else {
            // No Via: a response cannot be routed (§8.2.6.2), so drop.
            self.observer.malformed();
            return;
        };
        let top_via = build::fixed_top_via(&via, from.addr);
        let reply_to = routing::response_destination(&via, from);
        let key = TxnKey::server(&msg, &via, &method);

        if let Err(m) = check_request(&msg, &method) {
            self.observer.malformed();
            if method != b"ACK" {
                self.reply_stateless(&msg, top_via.as_deref(), reply_to, m.status, m.phrase, &[]);
            }
            return;
        }
        match &method[..] {
            b"ACK" => return self.on_ack(now, from, msg, key, top_via),
            b"CANCEL" => return self.on_cancel(now, from, msg, &key, top_via, reply_to),
            _ => {}
        }
        if let Some(&idx) = self.server_index.get(&key) {
            // A retransmission: the machine repeats its last response.
            let s = &self.servers[idx];
            let gen = s.gen;
            let mut ctx = ctx!(self, now, idx, gen);
            match &s.machine {
                ServerMachine::Invite(m) => m.on_retransmission(&mut ctx),
                ServerMachine::NonInvite(m) => m.on_retransmission(&mut ctx),
            }
            return;
        }
        // §16.3 step 5: this proxy supports no extension a proxy must
        // understand.
        let proxy_require = header_values(&msg, "Proxy-Require");
        if !proxy_require.is_empty() {
            let extra = [("Unsupported", proxy_require.as_str())];
            return self.reply_stateless(
                &msg,
                top_via.as_deref(),
                reply_to,
                420,
                "Bad Extension",
                &extra,
            );
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
                        Code::ShuttingDown,
                        "this callguard instance is shutting down; place the call through another one",
                    )
                };
                self.observer.decision(None, Outcome::Reject, Some(r.code));
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
                // Answered here as a UAS (§11): an extension it requires is
                // one we do not have (§8.2.2.3).
                let require = header_values(&msg, "Require");
                if !require.is_empty() {
                    let extra = [("Unsupported", require.as_str())];
                    return self.reply_stateless(
                        &msg,
                        top_via.as_deref(),
                        reply_to,
                        420,
                        "Bad Extension",
                        &extra,
                    );
                }
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
        key: TxnKey,
        top_via: Option<Vec<u8>>,
        reply_to: Peer,
    ) {
        if let Err((code, phrase)) = routing::max_forwards(&msg) {
            return self.reply_stateless(&msg, top_via.as_deref(), reply_to, code, phrase, &[]);
        }
        match self.gatekeeper.check(&msg, &from) {
            Verdict::Reject(r) => {
                self.observer
                    .decision(r.tenant.as_deref(), Outcome::Reject, Some(r.code));
                log_rejected(msg.call_id().unwrap_or_default(), from, &r);
                self.reject_invite(now, from, msg, key, top_via, reply_to, r, true);
            }
            Verdict::Forward {
                tenant,
                headers,
                warn,
            } => {
                self.observe_forward(&tenant, warn);
                let targets = self.targets();
                if targets.is_empty() {
                    let r = no_carrier();
                    return self.reject_invite(now, from, msg, key, top_via, reply_to, r, false);
                }
                let mut fwd = Forwarding::new(msg, top_via);
                fwd.targets = targets;
                fwd.extra = headers;
                fwd.tenant = Some(tenant);
                let idx = self.park(now, from, key, reply_to, fwd);
                self.try_next_carrier(now, idx);
            }
            Verdict::Pending(job) => {
                // Parked while the decision waits on the state store.
                let mut fwd = Forwarding::new(msg, top_via);
                fwd.deciding = Some(now);
                let idx = self.park(now, from, key, reply_to, fwd);
                let id = DecisionId {
                    slot: idx,
                    gen: self.servers[idx].gen,
                };
                self.decisions.push_back((id, job));
            }
        }
    }

    /// Keeps an initial INVITE in a Proceeding server transaction and
    /// answers `100 Trying`, which stops the dialer's retransmissions.
    fn park(
        &mut self,
        now: Instant,
        from: Peer,
        key: TxnKey,
        reply_to: Peer,
        fwd: Box<Forwarding>,
    ) -> usize {
        let trying = build::response(
            &fwd.request,
            fwd.top_via.as_deref(),
            100,
            "Trying",
            None,
            &[],
        );
        self.new_server(now, key, from, Some(fwd), |ctx| {
            ServerMachine::Invite(ServerInvite::new(reply_to, Some(trying), ctx))
        })
    }

    /// Answers an initial INVITE with a final response at once (a
    /// rejection): a Completed server transaction absorbs its ACK.
    #[allow(clippy::too_many_arguments)]
    fn reject_invite(
        &mut self,
        now: Instant,
        from: Peer,
        msg: Message,
        key: TxnKey,
        top_via: Option<Vec<u8>>,
        reply_to: Peer,
        r: Rejection,
        explain: bool,
    ) {
        let tag = key.local_tag();
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
        let status = r.status;
        self.new_server(now, key, from, None, |ctx| {
            let mut m = ServerInvite::new(reply_to, None, ctx);
            m.final_response(status, bytes, ctx);
            ServerMachine::Invite(m)
        });
    }

    /// Forwards the INVITE of server transaction `sidx` to its next carrier.
    fn try_next_carrier(&mut self, now: Instant, sidx: usize) {
        let settings = self.settings.clone();
        let s = &mut self.servers[sidx];
        let (source, sgen) = (s.source, s.gen);
        let Some(fwd) = s.fwd.as_mut() else { return };
        let Some(carrier) = fwd.targets.pop_front() else {
            return;
        };
        let dest = carrier.peer;
        let req = &fwd.request;
        let uri = routing::rewrite_uri_host(req.request_uri().unwrap_or_default(), &dest);
        let token = routing::token(
            &settings.route_key,
            req.call_id().unwrap_or_default(),
            req.from_tag().unwrap_or_default(),
            fwd.tenant.as_deref().unwrap_or(""),
            &carrier.group,
        );
        let rr = routing::record_route(&settings, source, dest, &token, &carrier.group);
        self.branch_seq += 1;
        let branch = branch_id(settings.instance, self.shard, self.branch_seq);
        let via = routing::via_value(&settings, dest, &branch);
        let mf = routing::max_forwards(req).unwrap_or(69);
        let bytes = build::forward_request(
            req,
            &Forward {
                uri: Some(uri.as_bytes()),
                via: via.as_bytes(),
                top_via: fwd.top_via.as_deref(),
                record_route: &rr,
                // §16.4: the Route naming us (a dialer's outbound proxy
                // setting) goes; see `initial_route_values` for the rest.
                pop_routes: routing::initial_route_values(req),
                max_forwards: mf,
                extra: &fwd.extra,
            },
        );
        let timeout = self.carrier_timeout();
        let key = TxnKey::client(branch.as_bytes(), b"INVITE");
        let cidx = self.new_client(
            now,
            key,
            Role::Branch,
            Some((sidx, sgen)),
            Some(carrier.name),
            |ctx| ClientMachine::Invite(ClientInvite::start(dest, bytes, timeout, ctx)),
        );
        self.start_timer_c(now, cidx);
        let cgen = self.clients[cidx].gen;
        if let Some(fwd) = self.servers[sidx].fwd.as_mut() {
            fwd.branch = Some((cidx, cgen));
        }
    }

    /// §16.6 step 11: Timer C runs from the moment an INVITE is forwarded,
    /// whatever the next hop answers; only a final response ends it.
    fn start_timer_c(&mut self, now: Instant, cidx: usize) {
        let due = now + self.settings.timer_c;
        let c = &mut self.clients[cidx];
        c.timer_c_due = Some(due);
        c.ring_limit = Some(now + self.settings.timer_c * RING_LIMIT_PERIODS);
        self.timers.arm(due, cidx, c.gen, Timer::C);
    }

    fn on_ack(
        &mut self,
        now: Instant,
        from: Peer,
        msg: Message,
        key: TxnKey,
        top_via: Option<Vec<u8>>,
    ) {
        if let Some(&idx) = self.server_index.get(&key) {
            let s = &mut self.servers[idx];
            let gen = s.gen;
            if let ServerMachine::Invite(m) = &mut s.machine {
                let mut ctx = ctx!(self, now, idx, gen);
                match m.on_ack(&mut ctx) {
                    // ACK for a non-2xx final: hop by hop, absorbed (§17.2.1).
                    AckFor::NonSuccess | AckFor::Nothing => return,
                    // An ACK for 2xx that reused the INVITE branch: route it.
                    AckFor::Success => {}
                }
            }
        }
        if msg.to_tag().is_none() {
            return;
        }
        // ACK for a 2xx: its own transaction, relayed statelessly by Route.
        match routing::in_dialog(&self.settings, &*self.gatekeeper, &msg, from) {
            Ok((dest, pops)) => {
                let Ok(mf) = routing::max_forwards(&msg) else {
                    return;
                };
                let branch = routing::stateless_branch(&msg);
                let via = routing::via_value(&self.settings, dest, &branch);
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
                self.out.send(dest, bytes);
            }
            Err(why) => {
                tracing::debug!(%from, ?why, "dropping an ACK that is not routed through us")
            }
        }
    }

    /// §16.10: a CANCEL is answered here, and the branch being tried is
    /// cancelled once it may be (§9.1: after a provisional response).
    fn on_cancel(
        &mut self,
        now: Instant,
        from: Peer,
        msg: Message,
        key: &TxnKey,
        top_via: Option<Vec<u8>>,
        reply_to: Peer,
    ) {
        // The CANCEL must come from where the INVITE came from: the branch
        // and sent-by it is matched on are written by the sender, and anyone
        // who saw them could otherwise cancel a tenant's call.
        let same_source = |s: &ServerEntry| {
            routing::canonical(s.source.addr.ip()) == routing::canonical(from.addr.ip())
        };
        let invite = self
            .server_index
            .get(&key.with_method(KeyMethod::Invite))
            .copied()
            .filter(|&i| same_source(&self.servers[i]));
        let Some(sidx) = invite else {
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
        if !s.machine.proceeding() {
            return;
        }
        let Some(fwd) = s.fwd.as_mut() else { return };
        if fwd.cancelled {
            return;
        }
        fwd.cancelled = true;
        fwd.targets.clear();
        if fwd.deciding.is_some() {
            // Nothing was forwarded yet: the CANCEL ends the call here. The
            // verdict, when it comes, finds the transaction completed.
            return self.local_final(now, sidx, 487, "Request Terminated");
        }
        let branch = fwd.branch;
        let Some(cidx) = self.live_client(branch) else {
            return;
        };
        let c = &mut self.clients[cidx];
        if c.provisional {
            self.send_cancel(now, cidx);
        } else if c.machine.waiting() {
            c.cancel = CancelState::Held;
        }
    }

    /// Sends the CANCEL of INVITE branch `cidx` (its own non-INVITE client
    /// transaction, with the INVITE's branch) and bounds the wait for the
    /// INVITE's final response (§9.1).
    fn send_cancel(&mut self, now: Instant, cidx: usize) {
        let t = self.settings.intervals();
        let c = &mut self.clients[cidx];
        if c.cancel == CancelState::Sent {
            return;
        }
        let ClientMachine::Invite(m) = &c.machine else {
            return;
        };
        let (Some(bytes), Some(branch)) = (m.cancel(), m.branch()) else {
            return;
        };
        let dest = m.dest();
        c.cancel = CancelState::Sent;
        self.timers
            .arm(now + t.t1_64(), cidx, c.gen, Timer::CancelWait);
        let key = TxnKey::client(&branch, b"CANCEL");
        self.new_client(now, key, Role::Cancel, None, None, |ctx| {
            ClientMachine::NonInvite(ClientNonInvite::start(dest, bytes, t.t1_64(), ctx))
        });
    }

    #[allow(clippy::too_many_arguments)]
    fn in_dialog(
        &mut self,
        now: Instant,
        from: Peer,
        msg: Message,
        key: TxnKey,
        top_via: Option<Vec<u8>>,
        reply_to: Peer,
        method: &[u8],
    ) {
        let mf = match routing::max_forwards(&msg) {
            Ok(mf) => mf,
            Err((code, phrase)) => {
                return self.reply_stateless(&msg, top_via.as_deref(), reply_to, code, phrase, &[])
            }
        };
        let (dest, pops) = match routing::in_dialog(&self.settings, &*self.gatekeeper, &msg, from) {
            Ok(next) => next,
            Err(refusal) => {
                // Not relayed: relaying for anyone else would make us an
                // open relay.
                let (code, phrase) = match refusal {
                    Refusal::NotOurs => (404, "Not Here"),
                    Refusal::Forbidden(phrase) => (403, phrase),
                    Refusal::Unresolvable => (478, "Unresolvable Destination"),
                };
                tracing::debug!(%from, code, phrase, "in-dialog request refused");
                return self.reply_stateless(&msg, top_via.as_deref(), reply_to, code, phrase, &[]);
            }
        };
        self.gatekeeper.in_dialog(&msg, &from);
        let invite = method == b"INVITE";
        let branch = self.new_branch();
        let via = routing::via_value(&self.settings, dest, &branch);
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
        let fwd = Forwarding::new(msg, top_via);
        let sidx = self.new_server(now, key, from, Some(fwd), |ctx| {
            if invite {
                ServerMachine::Invite(ServerInvite::new(reply_to, trying, ctx))
            } else {
                ServerMachine::NonInvite(ServerNonInvite::new(reply_to))
            }
        });
        let link = (sidx, self.servers[sidx].gen);
        let timeout = self.settings.intervals().t1_64();
        let key = TxnKey::client(branch.as_bytes(), method);
        let cidx = self.new_client(now, key, Role::Branch, Some(link), None, |ctx| {
            if invite {
                ClientMachine::Invite(ClientInvite::start(dest, bytes, timeout, ctx))
            } else {
                ClientMachine::NonInvite(ClientNonInvite::start(dest, bytes, timeout, ctx))
            }
        });
        if invite {
            self.start_timer_c(now, cidx);
        }
        let cgen = self.clients[cidx].gen;
        if let Some(fwd) = self.servers[sidx].fwd.as_mut() {
            fwd.branch = Some((cidx, cgen));
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
        let key = TxnKey::client(branch, cseq_method);
        let Some(cidx) = self.client_index.get(&key).copied() else {
            // §16.7: no transaction matches; relay statelessly by Via.
            return self.forward_stateless_response(&msg);
        };
        let c = &self.clients[cidx];
        if c.role == Role::Branch {
            if let Some(name) = &c.carrier {
                self.observer.carrier_response(name, code);
            }
        }
        if matches!(c.machine, ClientMachine::Invite(_)) {
            self.invite_response(now, cidx, msg, code)
        } else {
            self.non_invite_response(now, cidx, msg, code)
        }
    }

    fn invite_response(&mut self, now: Instant, cidx: usize, msg: Message, code: u16) {
        let timer_c = self.settings.timer_c;
        let c = &mut self.clients[cidx];
        let (gen, server) = (c.gen, c.server);
        let ClientMachine::Invite(m) = &mut c.machine else {
            return;
        };
        let mut ctx = ctx!(self, now, cidx, gen);
        match m.on_response(code, &msg, &mut ctx) {
            InviteEvent::Provisional => {
                c.provisional = true;
                if code > 100 {
                    // §16.7 step 2: a provisional other than 100 resets C.
                    let reset = now + timer_c;
                    c.timer_c_due = Some(c.ring_limit.map_or(reset, |l| reset.min(l)));
                }
                if c.cancel == CancelState::Held {
                    self.send_cancel(now, cidx);
                }
                if code > 100 {
                    self.relay_provisional(now, server, &msg);
                }
            }
            InviteEvent::Success => self.forward_final(now, server, &msg, code),
            InviteEvent::SuccessAgain => self.relay_success_again(now, server, &msg),
            InviteEvent::Failure => {
                let carrier = c.carrier.clone();
                if let Some(sidx) = self.live_server(server) {
                    let fwd = self.servers[sidx].fwd.as_deref();
                    let retry = matches!(code, 503 | 408)
                        && self.servers[sidx].machine.proceeding()
                        && fwd.is_some_and(|f| !f.cancelled && !f.targets.is_empty());
                    if retry {
                        if let Some(name) = carrier {
                            self.observer.failover(&name);
                            tracing::info!(carrier = %name, code, "carrier refused the call, trying the next one");
                        }
                        return self.try_next_carrier(now, sidx);
                    }
                }
                self.forward_final(now, server, &msg, code);
            }
            InviteEvent::Absorbed => {}
        }
    }

    fn non_invite_response(&mut self, now: Instant, cidx: usize, msg: Message, code: u16) {
        let c = &mut self.clients[cidx];
        let (gen, server, role) = (c.gen, c.server, c.role);
        let ClientMachine::NonInvite(m) = &mut c.machine else {
            return;
        };
        let mut ctx = ctx!(self, now, cidx, gen);
        let event = m.on_response(code, &mut ctx);
        match (role, event) {
            (Role::Ping, NonInviteEvent::Final) => {
                if let Some(name) = c.carrier.clone() {
                    self.ping_result(&name, !matches!(code, 503 | 408));
                }
            }
            (Role::Branch, NonInviteEvent::Provisional) if code > 100 => {
                self.relay_provisional(now, server, &msg)
            }
            (Role::Branch, NonInviteEvent::Final) => self.forward_final(now, server, &msg, code),
            _ => {}
        }
    }

    fn relay_provisional(&mut self, now: Instant, server: Option<Link>, msg: &Message) {
        let Some(sidx) = self.live_server(server) else {
            return;
        };
        let s = &mut self.servers[sidx];
        let gen = s.gen;
        let bytes = build::forward_response(msg, None, s.fwd.as_deref().map(Forwarding::upstream));
        let mut ctx = ctx!(self, now, sidx, gen);
        s.machine.provisional(bytes, &mut ctx);
    }

    /// Relays a final response to the server transaction it answers.
    fn forward_final(&mut self, now: Instant, server: Option<Link>, msg: &Message, code: u16) {
        let Some(sidx) = self.live_server(server) else {
            if (200..300).contains(&code) {
                self.forward_stateless_response(msg);
            }
            return;
        };
        let s = &mut self.servers[sidx];
        if !s.machine.proceeding() {
            return;
        }
        // §16.7 step 6: a 503 from downstream must not make upstream think
        // *this* proxy is overloaded.
        let (status, sent_code) = if code == 503 {
            (Some((500, "Server Internal Error")), 500)
        } else {
            (None, code)
        };
        let bytes =
            build::forward_response(msg, status, s.fwd.as_deref().map(Forwarding::upstream));
        s.fwd = None;
        let gen = s.gen;
        let mut ctx = ctx!(self, now, sidx, gen);
        s.machine.final_response(sent_code, bytes, &mut ctx);
    }

    /// A 2xx retransmitted by the UAS: relayed too (RFC 6026).
    fn relay_success_again(&mut self, now: Instant, server: Option<Link>, msg: &Message) {
        let Some(sidx) = self.live_server(server) else {
            return self.forward_stateless_response(msg);
        };
        let s = &mut self.servers[sidx];
        let gen = s.gen;
        let bytes = build::forward_response(msg, None, None);
        let mut ctx = ctx!(self, now, sidx, gen);
        if let ServerMachine::Invite(m) = &s.machine {
            m.relay_success(bytes, &mut ctx);
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
        self.out.send(
            Peer {
                transport,
                addr: (ip, port).into(),
            },
            bytes,
        );
    }

    // ----------------------------------------------------------------- timers

    fn server_timer(&mut self, now: Instant, f: Fired) {
        let s = &mut self.servers[f.slot];
        let mut ctx = ctx!(self, now, f.slot, f.gen);
        let fate = match &mut s.machine {
            ServerMachine::Invite(m) => m.on_timer(f.timer, &mut ctx),
            ServerMachine::NonInvite(m) => m.on_timer(f.timer, &mut ctx),
        };
        if fate == Fate::Terminated {
            self.remove_server(f.slot);
        }
    }

    fn client_timer(&mut self, now: Instant, f: Fired) {
        match f.timer {
            Timer::C => return self.timer_c(now, f.slot),
            Timer::CancelWait => return self.cancel_wait(now, f.slot),
            _ => {}
        }
        let c = &mut self.clients[f.slot];
        let mut ctx = ctx!(self, now, f.slot, f.gen);
        match c.machine.on_timer(f.timer, &mut ctx) {
            Fate::Alive => {}
            Fate::TimedOut => self.client_failed(now, f.slot, Failure::Timeout),
            Fate::Terminated => self.remove_client(f.slot),
        }
    }

    /// §16.8: Timer C fired on an INVITE branch still without a final.
    fn timer_c(&mut self, now: Instant, cidx: usize) {
        let c = &mut self.clients[cidx];
        let Some(due) = c.timer_c_due.filter(|_| c.machine.waiting()) else {
            return;
        };
        if due > now {
            // Reset by a provisional since it was armed.
            self.timers.arm(due, cidx, c.gen, Timer::C);
            return;
        }
        c.timer_c_due = None;
        if !c.provisional {
            // No provisional: as if the branch had received a 408.
            return self.client_failed(now, cidx, Failure::Timeout);
        }
        // A provisional came: CANCEL the branch, and the caller gets its
        // final now rather than when (or if) the callee side answers.
        let server = c.server;
        self.send_cancel(now, cidx);
        if let Some(sidx) = self.live_server(server) {
            if let Some(carrier) = &self.clients[cidx].carrier {
                tracing::info!(carrier = %carrier, "no final response within timer C: CANCEL and 408");
            }
            self.local_final(now, sidx, 408, "Request Timeout");
        }
    }

    /// §9.1: 64×T1 after its CANCEL, an INVITE branch still has no final
    /// response: it is given up.
    fn cancel_wait(&mut self, now: Instant, cidx: usize) {
        let c = &self.clients[cidx];
        if !c.machine.waiting() {
            return;
        }
        let server = c.server;
        self.remove_client(cidx);
        if let Some(sidx) = self.live_server(server) {
            let cancelled = self.servers[sidx].fwd.as_ref().is_some_and(|f| f.cancelled);
            if cancelled {
                self.local_final(now, sidx, 487, "Request Terminated");
            } else {
                self.local_final(now, sidx, 408, "Request Timeout");
            }
        }
    }

    fn client_failed(&mut self, now: Instant, cidx: usize, why: Failure) {
        let c = &self.clients[cidx];
        match c.role {
            Role::Ping => {
                if let Some(name) = c.carrier.clone() {
                    self.ping_result(&name, false);
                }
                return self.remove_client(cidx);
            }
            Role::Cancel => return self.remove_client(cidx),
            Role::Branch => {}
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
        if !s.machine.proceeding() {
            return;
        }
        let Some(fwd) = s.fwd.as_deref() else { return };
        if !fwd.cancelled && !fwd.targets.is_empty() {
            if let Some(name) = &carrier {
                self.observer.failover(name);
            }
            return self.try_next_carrier(now, sidx);
        }
        match (fwd.cancelled, why) {
            (true, _) => self.local_final(now, sidx, 487, "Request Terminated"),
            (false, Failure::Timeout) => self.local_final(now, sidx, 408, "Request Timeout"),
            (false, Failure::Unreachable) => {
                self.local_final(now, sidx, 503, "Service Unavailable")
            }
        }
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

    // ---------------------------------------------------------- local finals

    /// A final response generated here for a proxied request.
    fn local_final(&mut self, now: Instant, sidx: usize, code: u16, phrase: &str) {
        let s = &mut self.servers[sidx];
        if !s.machine.proceeding() {
            return;
        }
        let Some(fwd) = s.fwd.take() else { return };
        let tag = s.key.local_tag();
        let bytes = build::response(
            &fwd.request,
            fwd.top_via.as_deref(),
            code,
            phrase,
            Some(&tag),
            &[],
        );
        let gen = s.gen;
        let mut ctx = ctx!(self, now, sidx, gen);
        s.machine.final_response(code, bytes, &mut ctx);
    }

    /// Answers a parked INVITE with an explained rejection.
    fn reject_server(&mut self, now: Instant, sidx: usize, r: &Rejection) {
        let Some(fwd) = self.servers[sidx].fwd.take() else {
            return;
        };
        let tag = self.servers[sidx].key.local_tag();
        let bytes = self.explained_response(&fwd.request, fwd.top_via.as_deref(), &tag, r);
        let s = &mut self.servers[sidx];
        let gen = s.gen;
        let mut ctx = ctx!(self, now, sidx, gen);
        s.machine.final_response(r.status, bytes, &mut ctx);
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
        extra.push(("X-Callguard-Reason", r.code.as_str()));
        if let Some(retry) = retry.as_deref() {
            extra.push(("Retry-After", retry));
        }
        build::response(msg, top_via, r.status, &r.phrase, Some(tag), &extra)
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
        let tag = (code > 100).then(|| {
            let mut h = siphasher::sip::SipHasher13::new_with_key(&self.settings.route_key);
            h.write(req.call_id().unwrap_or_default());
            h.write(req.from_tag().unwrap_or_default());
            format!("cg{:x}", h.finish())
        });
        let bytes = build::response(req, top_via, code, phrase, tag.as_deref(), extra);
        self.out.send(to, bytes);
    }

    // ---------------------------------------------------------------- helpers

    fn observe_forward(&self, tenant: &str, warn: Option<Code>) {
        let outcome = if warn.is_some() {
            Outcome::Warn
        } else {
            Outcome::Allow
        };
        self.observer.decision(Some(tenant), outcome, warn);
    }

    fn targets(&mut self) -> VecDeque<Carrier> {
        carriers::order(
            &self.settings.carriers,
            &self.settings.status,
            &mut self.rng,
        )
    }

    /// Carrier INVITEs and health checks use the short bound: a dialer, or
    /// a rotation, cannot wait RFC 3261's 32 s.
    fn carrier_timeout(&self) -> Duration {
        self.settings
            .carrier_timeout
            .min(self.settings.intervals().t1_64())
    }

    fn new_branch(&mut self) -> String {
        self.branch_seq += 1;
        branch_id(self.settings.instance, self.shard, self.branch_seq)
    }

    fn live_server(&self, link: Option<Link>) -> Option<usize> {
        let (idx, gen) = link?;
        self.servers.get(idx).filter(|s| s.gen == gen).map(|_| idx)
    }

    fn live_client(&self, link: Option<Link>) -> Option<usize> {
        let (idx, gen) = link?;
        self.clients.get(idx).filter(|c| c.gen == gen).map(|_| idx)
    }

    fn new_server(
        &mut self,
        now: Instant,
        key: TxnKey,
        source: Peer,
        fwd: Option<Box<Forwarding>>,
        make: impl FnOnce(&mut Ctx<'_>) -> ServerMachine,
    ) -> usize {
        self.gen += 1;
        let gen = self.gen;
        let entry = self.servers.vacant_entry();
        let slot = entry.key();
        let mut ctx = ctx!(self, now, slot, gen);
        let machine = make(&mut ctx);
        entry.insert(ServerEntry {
            gen,
            key: key.clone(),
            source,
            machine,
            fwd,
        });
        self.server_index.insert(key, slot);
        self.observer.transactions(1);
        slot
    }

    fn new_client(
        &mut self,
        now: Instant,
        key: TxnKey,
        role: Role,
        server: Option<Link>,
        carrier: Option<Arc<str>>,
        make: impl FnOnce(&mut Ctx<'_>) -> ClientMachine,
    ) -> usize {
        self.gen += 1;
        let gen = self.gen;
        let entry = self.clients.vacant_entry();
        let slot = entry.key();
        let mut ctx = ctx!(self, now, slot, gen);
        let machine = make(&mut ctx);
        entry.insert(ClientEntry {
            gen,
            key: key.clone(),
            machine,
            role,
            server,
            carrier,
            provisional: false,
            cancel: CancelState::None,
            timer_c_due: None,
            ring_limit: None,
        });
        self.client_index.insert(key, slot);
        self.observer.transactions(1);
        slot
    }

    fn remove_server(&mut self, idx: usize) {
        let s = self.servers.remove(idx);
        if self.server_index.get(&s.key) == Some(&idx) {
            self.server_index.remove(&s.key);
        }
        self.observer.transactions(-1);
    }

    fn remove_client(&mut self, idx: usize) {
        let c = self.clients.remove(idx);
        if self.client_index.get(&c.key) == Some(&idx) {
            self.client_index.remove(&c.key);
        }
        self.observer.transactions(-1);
    }
}

/// A branch of ours: the cookie, our mark, the process instance (so
/// branches never repeat across restarts), the shard and a sequence.
fn branch_id(instance: u32, shard: u16, seq: u64) -> String {
    format!(
        "{}{instance:08x}.{shard:x}.{seq:x}",
        std::str::from_utf8(OUR_BRANCH).unwrap_or("z9hG4bKcg"),
    )
}

/// Every value of the headers named `name`, joined (Proxy-Require, Require).
fn header_values(msg: &Message, name: &str) -> String {
    let mut out = String::new();
    for v in msg.headers_by_name(name) {
        for tag in crate::sip::message::split_commas(v) {
            if !out.is_empty() {
                out.push_str(", ");
            }
            out.push_str(&String::from_utf8_lossy(tag));
        }
    }
    out
}

fn no_carrier() -> Rejection {
    local_rejection(
        503,
        "Service Unavailable",
        Code::NoCarrier,
        "no carrier is configured",
    )
}

/// One info line per rejected call, with its rule code (ops grep these).
fn log_rejected(call_id: &[u8], from: Peer, r: &Rejection) {
    tracing::info!(
        call_id = %String::from_utf8_lossy(call_id),
        %from, status = r.status, reason = %r.code, "call rejected: {}", r.explanation
    );
}

fn local_rejection(status: u16, phrase: &str, code: Code, why: &str) -> Rejection {
    Rejection {
        tenant: None,
        status,
        phrase: phrase.into(),
        code,
        explanation: why.into(),
        retry_after: None,
    }
}

#[cfg(test)]
mod tests;
