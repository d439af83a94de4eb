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
use std::collections::VecDeque;
use std::hash::Hasher;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::build::{self, Forward};
use super::carriers::{self, Carrier};
use super::routing::{self, Refusal};
use super::txn::{
    AckFor, ClientInvite, ClientNonInvite, Ctx, Fate, Fired, InviteEvent, KeyMethod,
    NonInviteEvent, Outbox, ServerInvite, ServerNonInvite, Timer, Timers, TxnIndex, TxnKey,
};
use super::{
    DecisionId, Gatekeeper, Observer, Peer, Pending, Rejection, Settings, Settlement, Ticket,
    Transmit, Transport, Verdict,
};
use crate::codes::{Code, Outcome};
use crate::sip::check::check_request;
use crate::sip::message::HeaderName;
use crate::sip::{Message, ParseError, Via};
use crate::text::Hex;

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
    fn awaits(&self, timer: Timer) -> bool {
        match self {
            ServerMachine::Invite(m) => m.awaits(timer),
            ServerMachine::NonInvite(m) => m.awaits(timer),
        }
    }
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
    /// A call answered here (a CANCEL: 487) while its decision was
    /// pending: if the verdict allows it, the gate has recorded it as
    /// allowed, and this answer is its outcome.
    unsettled: Option<Box<Unsettled>>,
}

impl ServerEntry {
    /// Whether `from` is the host that sent the request. A transaction is
    /// matched on its branch and sent-by (§17.2.3), which the sender
    /// writes: a copy of the request from another host matches as well.
    /// The port is not compared: a TCP sender's next connection has
    /// another.
    fn sent_from(&self, from: Peer) -> bool {
        routing::canonical(self.source.addr.ip()) == routing::canonical(from.addr.ip())
    }
}

struct Unsettled {
    call_id: Box<[u8]>,
    status: u16,
}

/// §16: a request being proxied and what the proxy does with it.
struct Forwarding {
    request: Message,
    /// The received top Via with `received`/`rport` filled in.
    top_via: Option<build::ViaText>,
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
    /// The gatekeeper's, handed back with the outcome.
    ticket: Option<Ticket>,
    /// Waiting for a pending decision since this instant.
    deciding: Option<Instant>,
}

impl Forwarding {
    fn new(request: Message, top_via: Option<build::ViaText>) -> Box<Forwarding> {
        Box::new(Forwarding {
            request,
            top_via,
            branch: None,
            targets: VecDeque::new(),
            tenant: None,
            cancelled: false,
            extra: Vec::new(),
            ticket: None,
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
    fn awaits(&self, timer: Timer) -> bool {
        match self {
            ClientMachine::Invite(m) => m.awaits(timer),
            ClientMachine::NonInvite(m) => m.awaits(timer),
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
    server_index: TxnIndex,
    client_index: TxnIndex,
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
    /// Loops found since the last warning, and when that was: one warn
    /// line a minute at most (a loop repeats for every call).
    loops: (u64, Option<Instant>),
}

/// At most one warning this far apart for a kind of repeated fault.
const WARN_EVERY: Duration = Duration::from_secs(60);

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
            server_index: TxnIndex::default(),
            client_index: TxnIndex::default(),
            timers: Timers::default(),
            gen: 0,
            branch_seq: 0,
            draining: false,
            decisions: VecDeque::new(),
            rng: rand::SeedableRng::seed_from_u64(u64::from(shard)),
            loops: (0, None),
        }
    }

    // ---------------------------------------------------------------- getters

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop()
    }

    /// The next instant a timer can do something. Entries whose
    /// transaction ended or moved on (a Timer G after its ACK, a Timer C
    /// after the final response) are dropped from the queues' fronts here,
    /// as soon as they are found, rather than when due: the driver then
    /// sleeps until a timer that matters, not the stale one's deadline,
    /// and the queues do not hold every call of the last three minutes.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        let (servers, clients) = (&self.servers, &self.clients);
        self.timers.prune(|f| timer_live(servers, clients, f));
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
        let branch = self.new_branch(Bound {
            call_id: call_id.as_bytes(),
            reply_to: None,
        });
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
        let msg = match Message::parse_or_return(data) {
            Ok(m) => m,
            Err((e, data)) => {
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
    /// ended meanwhile; a CANCEL that came first has already answered 487,
    /// and an allowed call then has that for its outcome.
    pub fn handle_verdict(&mut self, now: Instant, id: DecisionId, verdict: Verdict) {
        let Some(s) = self.servers.get_mut(id.slot).filter(|s| s.gen == id.gen) else {
            return;
        };
        if let Some(u) = s.unsettled.take() {
            if let Verdict::Forward { tenant, ticket, .. } = &verdict {
                self.gatekeeper.settled(Settlement {
                    call_id: &u.call_id,
                    tenant,
                    status: u.status,
                    carrier: None,
                    ticket: *ticket,
                });
            }
            return;
        }
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
                    .decision(r.tenant.as_ref(), Outcome::Reject, Some(r.code));
                let call_id = fwd.request.call_id().unwrap_or_default();
                log_rejected(call_id, s.source, &r);
                self.reject_server(now, id.slot, &r);
            }
            Verdict::Forward {
                tenant,
                headers,
                warn,
                ticket,
            } => {
                self.observe_forward(&tenant, warn);
                let sips = self.servers[id.slot]
                    .fwd
                    .as_ref()
                    .is_some_and(|f| routing::is_sips_request(&f.request));
                let targets = self.targets(sips);
                if let Some(fwd) = self.servers[id.slot].fwd.as_mut() {
                    // Set first: a call allowed with no carrier to take it
                    // has an outcome too.
                    fwd.tenant = Some(tenant);
                    fwd.ticket = ticket;
                    if targets.is_empty() {
                        let r = self.no_target(sips);
                        return self.reject_server(now, id.slot, &r);
                    }
                    fwd.targets = targets;
                    fwd.extra = headers;
                }
                self.try_next_carrier(now, id.slot);
            }
            Verdict::Pending(_) => {
                tracing::error!("a pending decision resolved to another pending decision");
                self.local_final(now, id.slot, 500, "Server Internal Error");
            }
        }
    }

    // ---------------------------------------------------------- local finals

    /// The final answer to a forwarded call (`fwd` has a tenant once the
    /// gate let it through): the gatekeeper records its outcome.
    fn settle(&self, fwd: &Forwarding, code: u16) {
        let Some(tenant) = &fwd.tenant else { return };
        let carrier = self
            .live_client(fwd.branch)
            .and_then(|c| self.clients[c].carrier.as_ref());
        self.gatekeeper.settled(Settlement {
            call_id: fwd.request.call_id().unwrap_or_default(),
            tenant,
            status: code,
            carrier,
            ticket: fwd.ticket,
        });
    }

    /// A final response generated here for a proxied request.
    fn local_final(&mut self, now: Instant, sidx: usize, code: u16, phrase: &str) {
        if !self.servers[sidx].machine.proceeding() {
            return;
        }
        let Some(fwd) = self.servers[sidx].fwd.take() else {
            return;
        };
        self.settle(&fwd, code);
        let s = &mut self.servers[sidx];
        if fwd.deciding.is_some() {
            s.unsettled = Some(Box::new(Unsettled {
                call_id: fwd.request.call_id().unwrap_or_default().into(),
                status: code,
            }));
        }
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

    /// The final response when no carrier gave one (`408` for silence,
    /// `503` when none could be reached), explained like every refusal:
    /// the dialer learns the call failed at the carrier, not at the policy.
    fn gave_up(&mut self, now: Instant, sidx: usize, why: Failure, explanation: &str) {
        if !self.servers[sidx].machine.proceeding() {
            return;
        }
        let r = match why {
            Failure::Timeout => {
                local_rejection(408, "Request Timeout", Code::CarrierTimeout, explanation)
            }
            Failure::Unreachable => local_rejection(
                503,
                "Service Unavailable",
                Code::CarrierUnreachable,
                explanation,
            ),
        };
        self.reject_server(now, sidx, &r);
    }

    /// Answers a parked INVITE with an explained rejection.
    fn reject_server(&mut self, now: Instant, sidx: usize, r: &Rejection) {
        let Some(fwd) = self.servers[sidx].fwd.take() else {
            return;
        };
        self.settle(&fwd, r.status);
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
        let host = self
            .settings
            .local
            .first()
            .map(|l| l.host.as_str())
            .unwrap_or("callguard");
        // The three values written into one buffer: one allocation per
        // rejection instead of four.
        let mut text = String::with_capacity(2 * r.explanation.len() + host.len() + 64);
        text.push_str("SIP ;cause=");
        text.push_str(itoa::Buffer::new().format(r.status));
        text.push_str(" ;text=\"");
        let quoted = text.len();
        build::escape_quoted_into(&mut text, &r.explanation);
        let quoted = quoted..text.len();
        text.push('"');
        let reason_end = text.len();
        text.push_str("399 ");
        text.push_str(host);
        text.push_str(" \"");
        text.extend_from_within(quoted);
        text.push('"');
        let warning_end = text.len();
        if let Some(s) = r.retry_after {
            text.push_str(itoa::Buffer::new().format(s));
        }
        let (reason, rest) = text.split_at(reason_end);
        let (warning, retry) = rest.split_at(warning_end - reason_end);
        let mut extra: SmallVec<[(&str, &str); 4]> = SmallVec::new();
        extra.push(("Reason", reason));
        extra.push(("Warning", warning));
        extra.push(("X-Callguard-Reason", r.code.as_str()));
        if r.retry_after.is_some() {
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
            let mut tag = String::with_capacity(18);
            tag.push_str("cg");
            tag.push_str(Hex::new(h.finish()).as_str());
            tag
        });
        let bytes = build::response(req, top_via, code, phrase, tag.as_deref(), extra);
        self.out.send(to, bytes);
    }

    // ---------------------------------------------------------------- helpers

    fn observe_forward(&self, tenant: &Arc<str>, warn: Option<Code>) {
        let outcome = if warn.is_some() {
            Outcome::Warn
        } else {
            Outcome::Allow
        };
        self.observer.decision(Some(tenant), outcome, warn);
    }

    /// The carriers to try, in order; for a SIPS request only those
    /// reached over TLS.
    fn targets(&mut self, sips: bool) -> VecDeque<Carrier> {
        let mut t = carriers::order(
            &self.settings.carriers,
            &self.settings.status,
            &mut self.rng,
        );
        if sips {
            // Dropping the others from the weighted order leaves the TLS
            // carriers in a weighted order of their own: each pick's
            // chance is still its weight among those left.
            t.retain(|c| c.peer.transport == Transport::Tls);
        }
        t
    }

    /// Why an allowed call has no carrier to go to.
    fn no_target(&self, sips: bool) -> Rejection {
        if sips && !self.settings.carriers.is_empty() {
            // RFC 5630 §5.3 answers a SIPS request that cannot be routed
            // over TLS with 480.
            return local_rejection(
                480,
                "Temporarily Unavailable",
                Code::NoCarrier,
                "the Request-URI is a sips: URI, which needs TLS on every hop (RFC 5630), and no carrier is reached over TLS",
            );
        }
        no_carrier()
    }

    /// Carrier INVITEs and health checks use the short bound: a dialer, or
    /// a rotation, cannot wait RFC 3261's 32 s.
    fn carrier_timeout(&self) -> Duration {
        self.settings
            .carrier_timeout
            .min(self.settings.intervals().t1_64())
    }

    fn new_branch(&mut self, bound: Bound<'_>) -> String {
        self.branch_seq += 1;
        branch_id(
            self.settings.instance,
            self.shard,
            self.branch_seq,
            &self.settings.route_key,
            bound,
        )
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
            key,
            source,
            machine,
            fwd,
            unsettled: None,
        });
        let servers = &self.servers;
        self.server_index
            .insert(&servers[slot].key, slot, |i| servers.get(i).map(|s| &s.key));
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
            key,
            machine,
            role,
            server,
            carrier,
            provisional: false,
            cancel: CancelState::None,
            timer_c_due: None,
            ring_limit: None,
        });
        let clients = &self.clients;
        self.client_index
            .insert(&clients[slot].key, slot, |i| clients.get(i).map(|c| &c.key));
        self.observer.transactions(1);
        slot
    }

    /// The server transaction keyed `key`.
    fn server_txn(&self, key: &TxnKey) -> Option<usize> {
        self.server_index
            .get(key, |i| self.servers.get(i).map(|s| &s.key))
    }

    /// The client transaction keyed `key`.
    fn client_txn(&self, key: &TxnKey) -> Option<usize> {
        self.client_index
            .get(key, |i| self.clients.get(i).map(|c| &c.key))
    }

    fn remove_server(&mut self, idx: usize) {
        self.server_index.remove(&self.servers[idx].key, idx);
        self.servers.remove(idx);
        self.observer.transactions(-1);
    }

    fn remove_client(&mut self, idx: usize) {
        self.client_index.remove(&self.clients[idx].key, idx);
        self.clients.remove(idx);
        self.observer.transactions(-1);
    }
}

/// A branch of ours: the cookie, our mark, the process instance (so
/// branches never repeat across restarts), the shard, a sequence, and a
/// keyed hash of them and of what the branch is [`Bound`] to. Responses are
/// matched by branch alone (§17.1.3), and the first parts show in the Via
/// of requests we relay: without the hash, anyone could answer (`486`, or a
/// `407` that gives an attempt back) for a call they guessed.
fn branch_id(instance: u32, shard: u16, seq: u64, key: &[u8; 16], bound: Bound<'_>) -> String {
    let mut b = String::with_capacity(56);
    b.push_str(std::str::from_utf8(OUR_BRANCH).unwrap_or("z9hG4bKcg"));
    b.push_str(Hex::padded(instance.into(), 8).as_str());
    b.push('.');
    b.push_str(Hex::new(shard.into()).as_str());
    b.push('.');
    b.push_str(Hex::new(seq).as_str());
    let tag = branch_tag(b.as_bytes(), key, bound);
    b.push('.');
    b.push_str(Hex::padded(tag, 8).as_str());
    b
}

/// What a branch answers for: its call, and where a response to it goes
/// back (from the Via below ours; `None` for requests of our own). A
/// response that outlives its transaction is relayed by its Vias (§16.7),
/// which its sender writes: bound this way, a branch someone saw relays
/// nothing for another call or to another address.
#[derive(Clone, Copy)]
struct Bound<'a> {
    call_id: &'a [u8],
    reply_to: Option<Peer>,
}

impl<'a> Bound<'a> {
    /// A request relayed with `upstream` below our Via.
    fn relayed(call_id: &'a [u8], upstream: Option<&[u8]>) -> Bound<'a> {
        Bound {
            call_id,
            reply_to: upstream
                .and_then(Via::parse)
                .and_then(|v| routing::via_reply_peer(&v)),
        }
    }
}

fn branch_tag(head: &[u8], key: &[u8; 16], bound: Bound<'_>) -> u64 {
    let mut h = siphasher::sip::SipHasher13::new_with_key(key);
    h.write(b"branch");
    h.write(head);
    h.write_u32(bound.call_id.len() as u32);
    h.write(bound.call_id);
    if let Some(p) = bound.reply_to {
        h.write_u8(p.transport as u8);
        match p.addr.ip() {
            std::net::IpAddr::V4(ip) => h.write(&ip.octets()),
            std::net::IpAddr::V6(ip) => h.write(&ip.octets()),
        }
        h.write_u16(p.addr.port());
    }
    h.finish() >> 32
}

/// Whether `branch` is one `branch_id` made with `key` for `bound`.
fn branch_is_ours(branch: &[u8], key: &[u8; 16], bound: Bound<'_>) -> bool {
    let Some(dot) = branch.iter().rposition(|&c| c == b'.') else {
        return false;
    };
    let (head, tail) = (&branch[..dot], &branch[dot + 1..]);
    tail.len() == 8
        && head.starts_with(OUR_BRANCH)
        && std::str::from_utf8(tail)
            .ok()
            .and_then(|t| u64::from_str_radix(t, 16).ok())
            == Some(branch_tag(head, key, bound))
}

impl Core {
    /// §16.3 step 4: whether `msg` carries a Via this proxy wrote, whose
    /// branch checks out for this call and the hop below it. Then this
    /// proxy relayed it before and it came back: a carrier whose address
    /// is our own, or one that routes the call back to us. Decided again,
    /// one call would count as several attempts against its callee's cap
    /// and be answered by the last decision, not the first. The check is
    /// keyed, so nobody can make another's call look like a loop; a
    /// spiral (§16.3 allows one when the Request-URI changed) is treated
    /// as a loop too: nothing legitimate sends a call of ours back through
    /// the gate.
    pub(super) fn has_looped(&self, msg: &Message) -> bool {
        let finder = memchr::memmem::Finder::new(OUR_BRANCH);
        let call_id = msg.call_id().unwrap_or_default();
        let mut vias = msg.values(HeaderName::Via).peekable();
        while let Some(v) = vias.next() {
            // Most requests carry only the dialer's Via: the scan for our
            // mark spares them the parse.
            if finder.find(v).is_none() {
                continue;
            }
            let Some(branch) = Via::parse(v).and_then(|v| v.branch) else {
                continue;
            };
            let bound = Bound::relayed(call_id, vias.peek().copied());
            if branch_is_ours(branch, &self.settings.route_key, bound) {
                return true;
            }
        }
        false
    }
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

/// One debug line per rejected call, with its rule code. Not at info: the
/// audit trail already holds every decision, and a synchronous log line
/// per refused call cost an eighth of the reject path (and floods a
/// journal at thousands of refusals a second).
fn log_rejected(call_id: &[u8], from: Peer, r: &Rejection) {
    tracing::debug!(
        call_id = %String::from_utf8_lossy(call_id),
        %from, status = r.status, reason = %r.code, "call rejected: {}", r.explanation
    );
}

fn local_rejection(status: u16, phrase: &'static str, code: Code, why: &str) -> Rejection {
    Rejection {
        tenant: None,
        status,
        phrase: phrase.into(),
        code,
        explanation: why.into(),
        retry_after: None,
    }
}

mod requests;
mod responses;
mod timers;
use timers::timer_live;

#[cfg(test)]
mod tests;
