//! The transaction-stateful proxy (RFC 3261 §16, §17) as a deterministic
//! state machine: messages and instants go in, datagrams to send and the
//! next timer deadline come out. No sockets, no clock, no threads here, so
//! every path is tested with simulated time (see `core/tests/`).
//!
//! - [`txn`]: the four §17 transaction machines, their timers and the
//!   typed transaction key.
//! - [`core`](Core): §16, what a proxy does with them: dispatch, the
//!   gatekeeper's verdicts, serial failover, local final responses, Timer C,
//!   CANCEL, draining.
//! - `routing`: loose routing, the Record-Route token, Max-Forwards, Via and
//!   Request-URI rewriting.
//! - `carriers`: carrier order, weights, health pings.
//! - `build`: the messages the proxy writes.

mod build;
pub mod carriers;
mod core;
pub mod routing;
pub mod txn;

pub use self::core::Core;
pub use build::escape_quoted;
pub use carriers::{Carrier, CarrierStatus};

use bytes::Bytes;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::codes::{Code, Outcome};
use crate::sip::Message;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
}

impl Transport {
    pub fn is_reliable(self) -> bool {
        matches!(self, Transport::Tcp | Transport::Tls)
    }
    pub fn as_via(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
        }
    }
    pub fn from_bytes(b: &[u8]) -> Option<Transport> {
        if b.eq_ignore_ascii_case(b"udp") {
            Some(Transport::Udp)
        } else if b.eq_ignore_ascii_case(b"tcp") {
            Some(Transport::Tcp)
        } else if b.eq_ignore_ascii_case(b"tls") {
            Some(Transport::Tls)
        } else {
            None
        }
    }
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        })
    }
}

/// The far end of a message: for TCP, the connection's remote address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Peer {
    pub transport: Transport,
    pub addr: SocketAddr,
}

impl Peer {
    pub fn udp(addr: SocketAddr) -> Peer {
        Peer {
            transport: Transport::Udp,
            addr,
        }
    }
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.transport, self.addr)
    }
}

/// A message the driver must send.
#[derive(Debug, Clone)]
pub struct Transmit {
    pub to: Peer,
    pub payload: Bytes,
    /// Send before doing anything else: a later message of the same
    /// transaction may be produced on another thread (the answer to a
    /// decision that waits for the state store) and must not overtake
    /// this one. A driver may hold the others to send several in one
    /// system call.
    pub urgent: bool,
}

/// How this proxy names itself in Via and Record-Route for one transport
/// and address family.
#[derive(Debug, Clone)]
pub struct LocalEndpoint {
    pub transport: Transport,
    pub ipv6: bool,
    /// Host as written in URIs (IPv6 in brackets).
    pub host: String,
    pub port: u16,
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub t1: Duration,
    pub t2: Duration,
    pub t4: Duration,
    /// No response at all from a carrier within this bound: try the next
    /// carrier, or answer 408 (a Timer B shortened for dialers, which give
    /// up on a call long before RFC 3261's 32 s).
    pub carrier_timeout: Duration,
    /// RFC 3261 §16.6 Timer C: bound on a forwarded INVITE without a
    /// final response (from forwarding, and from each provisional).
    pub timer_c: Duration,
    pub local: Vec<LocalEndpoint>,
    /// Extra host names that designate this proxy in Route headers.
    pub aliases: Vec<String>,
    /// Carriers sorted by priority (stable), for serial failover.
    pub carriers: Vec<Carrier>,
    /// Which carriers answer their OPTIONS pings; kept across reloads.
    pub status: Arc<CarrierStatus>,
    /// Key for the Record-Route token that binds a dialog to its two hops
    /// (see `routing`).
    pub route_key: [u8; 16],
    /// Random per-process prefix so branches never repeat across restarts.
    pub instance: u32,
}

impl Settings {
    /// The config's default timers (RFC 3261's T1 500 ms, T2 4 s, T4 5 s;
    /// a carrier answers within 5 s; Timer C 180 s) on one UDP endpoint
    /// `host:port`, a carrier out of rotation after 2 unanswered pings
    /// (the config's default is 3): the core as tests, fuzzing and
    /// benchmarks run it in simulated time.
    pub fn simulated(host: &str, port: u16, carriers: Vec<Carrier>) -> Settings {
        Settings {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
            carrier_timeout: Duration::from_secs(5),
            timer_c: Duration::from_secs(180),
            local: vec![LocalEndpoint {
                transport: Transport::Udp,
                ipv6: false,
                host: host.into(),
                port,
            }],
            aliases: vec![],
            carriers,
            route_key: [7; 16],
            instance: 1,
            status: Arc::new(CarrierStatus::new(2)),
        }
    }

    pub fn intervals(&self) -> txn::Intervals {
        txn::Intervals {
            t1: self.t1,
            t2: self.t2,
            t4: self.t4,
        }
    }
}

/// What the policy layer decided for an initial INVITE.
#[derive(Debug)]
pub enum Verdict {
    Forward {
        tenant: Arc<str>,
        /// Headers added to the forwarded INVITE (e.g. a `warn` tag).
        headers: Vec<(String, String)>,
        /// Rule code when a failed rule is enforced as `warn`.
        warn: Option<Code>,
        /// Given back with the call's outcome ([`Gatekeeper::settled`]).
        ticket: Option<Ticket>,
    },
    Reject(Rejection),
    /// The decision needs I/O (a shared state store). The core answers
    /// `100 Trying`, parks the transaction and hands the job out through
    /// [`Core::poll_decision`]; the driver runs it and feeds the verdict
    /// back with [`Core::handle_verdict`]. The job must end on its own
    /// (its I/O bounded by a timeout) and never return `Pending`.
    Pending(Pending),
}

/// What a gatekeeper attaches to a call it lets through, opaque to the
/// core, which hands it back with the call's outcome (the gate: the
/// attempt it counted, to take back when the carrier only challenged the
/// dialer for credentials).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket(pub [u64; 2]);

/// An allowed call's final answer, for [`Gatekeeper::settled`].
#[derive(Debug, Clone, Copy)]
pub struct Settlement<'a> {
    pub call_id: &'a [u8],
    pub tenant: &'a Arc<str>,
    pub status: u16,
    /// The carrier that answered, or the last one tried.
    pub carrier: Option<&'a Arc<str>>,
    pub ticket: Option<Ticket>,
}

/// A decision that runs outside the core (see [`Verdict::Pending`]).
pub struct Pending(pub std::pin::Pin<Box<dyn std::future::Future<Output = Verdict> + Send>>);

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pending")
    }
}

/// Names the transaction a pending decision belongs to; stale once the
/// transaction has ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecisionId {
    pub(crate) slot: usize,
    pub(crate) gen: u64,
}

/// A rejection with everything the response must explain (product
/// contract: reason phrase, `Reason`, `Warning`, `X-Callguard-Reason`,
/// `Retry-After`).
#[derive(Debug, Clone)]
pub struct Rejection {
    pub tenant: Option<Arc<str>>,
    pub status: u16,
    pub phrase: std::borrow::Cow<'static, str>,
    /// Rule code, e.g. `source_not_authorized`.
    pub code: Code,
    pub explanation: String,
    pub retry_after: Option<u64>,
}

/// The decision hook for initial INVITEs. Implementations must not block:
/// the core calls it inline. They time their own decisions: the core
/// reads no clock.
pub trait Gatekeeper: Send + Sync {
    fn check(&self, invite: &Message, source: &Peer) -> Verdict;
    /// The tenant `peer` belongs to (its certificate, or its network): an
    /// in-dialog request is relayed only between the tenant and the
    /// carrier of its dialog.
    fn tenant_of(&self, _peer: &Peer) -> Option<Arc<str>> {
        None
    }
    /// Whether `peer` is a tenant's (what [`Gatekeeper::tenant_of`] says,
    /// without building its name).
    fn knows(&self, peer: &Peer) -> bool {
        self.tenant_of(peer).is_some()
    }
    /// Sees each in-dialog request of a dialog this proxy record-routed,
    /// before it is forwarded (e.g. a BYE that signals a refusal). Never
    /// changes how it is routed.
    fn in_dialog(&self, _req: &Message, _source: &Peer) {}
    /// An allowed call's INVITE got its final answer: the carrier's, or
    /// this proxy's when no carrier gave one (`carrier` is then the last
    /// one tried, if any; none for a call cancelled before its verdict
    /// came, answered 487). Called once per allowed call.
    fn settled(&self, _call: Settlement<'_>) {}
}

/// Counters the core reports; implemented by the metrics registry, and by
/// a no-op in tests.
pub trait Observer: Send + Sync {
    fn message_in(&self, _method: &[u8]) {}
    fn message_out(&self, _method: &[u8]) {}
    fn response_in(&self, _code: u16) {}
    fn response_out(&self, _code: u16) {}
    fn malformed(&self) {}
    /// A response to a branch this proxy never made, dropped.
    fn forged_response(&self) {}
    fn transactions(&self, _delta: i64) {}
    /// An initial INVITE was decided (`allow`, `warn`, `reject`).
    fn decision(&self, _tenant: Option<&Arc<str>>, _decision: Outcome, _reason: Option<Code>) {}
    fn carrier_response(&self, _carrier: &str, _code: u16) {}
    /// A carrier went up or down (OPTIONS pings).
    fn carrier_up(&self, _carrier: &str, _up: bool) {}
    /// The carrier never answered (`timeout`) or could not be reached
    /// (`unreachable`): the signal that it is down.
    fn carrier_failed(&self, _carrier: &str, _reason: &'static str) {}
    fn failover(&self, _carrier: &str) {}
}

pub struct NoObserver;
impl Observer for NoObserver {}
