//! The audit trail: one JSON line per decision on an initial INVITE, the
//! proof a compliance officer shows an inspector. Strangers (sources of
//! no tenant) are accounted for by one line per source and interval
//! (`"kind":"strangers"`), not one per message: a flood must not fill the
//! disk.
//!
//! The call path only moves a compact record into a bounded channel; a
//! writer thread formats, writes and `fsync`s in batches. A batch is
//! flushed when it reaches `BATCH` records or `FLUSH_EVERY` has passed, so
//! a crash loses at most the records of the last `FLUSH_EVERY` (100 ms).
//!
//! Backpressure is explicit and never blocks the call path (which runs
//! under a proxy shard's lock): when the channel is full (the disk
//! stalls), the gate refuses new calls `503 audit_unavailable` instead of
//! placing them unrecorded, and each refusal is counted in
//! `callguard_audit_overflow_total`. Calls in progress (ACK, BYE, CANCEL)
//! are not affected. What found the queue full is accounted for in the
//! trail by a `"kind":"gap"` line once the writer catches up. A write the
//! disk refuses is tried again until it succeeds, never dropped; while it
//! fails, new calls are refused as if the queue were full. Otherwise a
//! full disk would let calls through for as long as the queue takes to
//! fill (minutes at a low rate) with their lines in memory only, out of
//! the loss bound above.
//!
//! Besides decisions, the trail holds each forwarded call's outcome
//! (`"kind":"outcome"`: the final status, answered or not), its end
//! (`"kind":"end"`, the BYE: the duration is the time from the answer) and
//! every admin change (`"kind":"admin"`: what, when, which token). Lines
//! are chained by hash ([`chain`]); `callguard audit verify` checks them
//! and `callguard audit search` ([`search`]) reads them back.
//!
//! Files: `DIR/audit-YYYY-MM-DD.jsonl` (UTC day), rotated to
//! `audit-YYYY-MM-DD.N.jsonl` when larger than `max_bytes`.

pub mod chain;
mod json;
pub mod search;

use chrono::{DateTime, Datelike, Utc};
use serde::Serialize;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use crate::codes::{Code, Outcome};
use crate::numbering::CallerNumber;
use crate::policy::Decision;

const BATCH: usize = 1024;
const FLUSH_EVERY: Duration = Duration::from_millis(100);
const QUEUE: usize = 65_536;
/// How soon a write or an open the disk refused is tried again.
const RETRY_EVERY: Duration = Duration::from_millis(100);

/// What the gate hands over: values, formatted by the writer thread.
#[derive(Debug)]
pub struct Record {
    pub call_id: String,
    pub source: SocketAddr,
    /// The policy decision; `None` when the source matched no tenant.
    pub decision: Option<Decision>,
    pub at: DateTime<Utc>,
    pub config_version: std::sync::Arc<str>,
}

/// The decision line, written by hand ([`json`]): the same JSON as
/// `serde_json` would write for these fields, in this order.
fn format_line(r: &Record, out: &mut Vec<u8>) {
    let mut o = json::Obj::open(out);
    o.time("time", r.at)
        .str("kind", "decision")
        .str("call_id", &r.call_id);
    match &r.decision {
        Some(d) => {
            o.str("tenant", &d.tenant).addr("source", r.source);
            match d.caller {
                Some(CallerNumber::E164(n)) => o.digits("caller", "+", n.digits()),
                Some(CallerNumber::FrShort(n)) => o.digits("caller", "", u64::from(n)),
                None => o.null("caller"),
            };
            match d.callee {
                Some(n) => o.digits("callee", "+", n.digits()),
                None => o.null("callee"),
            }
            .str("mode", d.mode.as_str())
            .array("callee_time_zones", d.zones, |out, z| {
                json::quoted(out, z.name())
            })
            .array("callee_local_time", d.zones, |out, z| {
                json::push_local_time(out, d.at, z)
            })
            .str("decision", d.decision.as_str())
            .num("status", u64::from(d.status))
            .opt_str("reason", d.reason_str())
            .str("explanation", &d.explanation)
            .opt_num("retry_after", d.retry_after)
            .array("failed_rules", &d.failed_rules, |out, f| {
                json::Obj::open(out)
                    .str("rule", f.rule.code().as_str())
                    .str("explanation", &f.explanation)
                    .str("enforcement", f.enforcement.as_str())
                    .close()
            })
            .opt_str("jurisdiction", d.jurisdiction.as_deref())
            .opt_str("rules_version", d.rules_version.as_deref());
        }
        None => {
            o.null("tenant")
                .addr("source", r.source)
                .null("caller")
                .null("callee")
                .null("mode")
                .array("callee_time_zones", [(); 0], |_, ()| {})
                .array("callee_local_time", [(); 0], |_, ()| {})
                .str("decision", Outcome::Reject.as_str())
                .num("status", 403)
                .str("reason", Code::SourceNotAuthorized.as_str())
                .str(
                    "explanation",
                    "the source address is in no tenant's dialer networks",
                )
                .null("retry_after")
                .array("failed_rules", [(); 0], |_, ()| {})
                .null("jurisdiction")
                .null("rules_version");
        }
    }
    o.str("config_version", &r.config_version).close();
}

/// Appends `v` as one JSON object (no newline: the chain seals it), or
/// nothing if it cannot be serialized.
fn write_json<T: Serialize>(out: &mut Vec<u8>, v: &T) {
    let start = out.len();
    if serde_json::to_writer(&mut *out, v).is_err() {
        out.truncate(start);
    }
}

/// The handle the gate writes to. Cloning shares the writer.
#[derive(Clone)]
pub struct Audit {
    tx: mpsc::SyncSender<Msg>,
    shared: std::sync::Arc<Shared>,
    /// Records refused because the queue was full.
    overflow: prometheus_client::metrics::counter::Counter,
    capacity: usize,
    /// What found the queue full since the writer last wrote a gap line.
    losses: std::sync::Arc<parking_lot::Mutex<Losses>>,
}

/// What the call path and the writer both read and write.
#[derive(Debug, Default)]
struct Shared {
    /// Records handed over and not yet taken by the writer.
    queued: AtomicUsize,
    /// The writer is retrying a write or an open the disk refused.
    failing: AtomicBool,
}

/// Lines that could not be queued (the queue was full, or the disk refused
/// the writer's writes), accounted for in the trail itself. The metric
/// says that lines were lost; a compliance officer reading the trail for a
/// period must see it there too, or an absent decision reads as a call
/// never made. The writer adds one `"kind":"gap"` line for them once it
/// has caught up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Losses {
    /// The first and last instants of the records lost.
    span: Option<(DateTime<Utc>, DateTime<Utc>)>,
    /// Indexed by [`Lost`].
    counts: [u64; Lost::ALL.len()],
}

/// What a line that found the queue full was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lost {
    /// A call refused `503 audit_unavailable` before it was decided.
    Refused,
    Decision,
    Outcome,
    End,
    Admin,
    Strangers,
}

impl Lost {
    const ALL: [Lost; 6] = [
        Lost::Refused,
        Lost::Decision,
        Lost::Outcome,
        Lost::End,
        Lost::Admin,
        Lost::Strangers,
    ];

    fn of(e: &Entry) -> Lost {
        match e {
            Entry::Call(_) => Lost::Decision,
            Entry::Outcome(_) => Lost::Outcome,
            Entry::End(_) => Lost::End,
            Entry::Admin(_) => Lost::Admin,
            // A gap line is the writer's own and never queued; counted
            // with the other accounts if it ever were.
            Entry::Strangers(..) | Entry::Gap(_) => Lost::Strangers,
        }
    }
}

impl Losses {
    fn add(&mut self, what: Lost, n: u64, at: DateTime<Utc>) {
        self.counts[what as usize] += n;
        self.span = Some(match self.span {
            Some((first, last)) => (first.min(at), last.max(at)),
            None => (at, at),
        });
    }

    fn count(&self, what: Lost) -> u64 {
        self.counts[what as usize]
    }
}

#[derive(Serialize)]
struct GapLine {
    time: String,
    kind: &'static str,
    since: String,
    calls_refused: u64,
    decisions_lost: u64,
    outcomes_lost: u64,
    ends_lost: u64,
    admin_changes_lost: u64,
    stranger_lines_lost: u64,
    explanation: &'static str,
}

/// The metrics the audit trail reports through.
#[derive(Debug, Clone, Default)]
pub struct Meters {
    /// Records and calls refused because the queue was full.
    pub overflow: prometheus_client::metrics::counter::Counter,
    /// 1 while writes succeed, 0 while one is retried.
    pub up: prometheus_client::metrics::gauge::Gauge,
    /// Writes and opens that failed.
    pub write_errors: prometheus_client::metrics::counter::Counter,
}

/// The record could not be queued: the writer is behind (or gone).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the audit trail is not keeping up")]
pub struct Full;

/// What strangers sent in an interval, per source
/// ([`crate::admission::Strangers::take_account`]).
#[derive(Debug, Clone)]
pub struct StrangerAccount {
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
    pub counts: Vec<crate::admission::SourceCount>,
    pub config_version: std::sync::Arc<str>,
}

#[derive(Serialize)]
struct StrangerLine<'a> {
    time: String,
    kind: &'static str,
    source: Option<String>,
    since: String,
    answered: u64,
    dropped: u64,
    decision: Outcome,
    status: u16,
    reason: Code,
    explanation: &'static str,
    config_version: &'a str,
}

/// The final answer to a forwarded call's INVITE (the carrier's, or this
/// proxy's when no carrier gave one).
#[derive(Debug, Clone)]
pub struct CallOutcome {
    pub call_id: String,
    pub tenant: std::sync::Arc<str>,
    pub status: u16,
    pub carrier: Option<std::sync::Arc<str>>,
    pub at: DateTime<Utc>,
}

/// What a final status means for the call, in the words of a dialer's
/// report.
pub fn outcome_of(status: u16) -> &'static str {
    match status {
        200..=299 => "answered",
        486 | 600 => "busy",
        487 => "cancelled",
        408 | 480 => "no_answer",
        603 | 607 | 608 => "declined",
        _ => "failed",
    }
}

/// Which side ended an answered call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Party {
    /// The tenant's dialer (or agent) hung up.
    Dialer,
    /// The callee's side (through the carrier).
    Carrier,
}

impl Party {
    pub fn as_str(self) -> &'static str {
        match self {
            Party::Dialer => "dialer",
            Party::Carrier => "carrier",
        }
    }
}

/// A BYE seen on a dialog this proxy record-routed.
#[derive(Debug, Clone)]
pub struct CallEnd {
    pub call_id: String,
    pub by: Party,
    pub at: DateTime<Utc>,
}

/// How an admin change came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Via {
    Api,
    Signal,
}

/// A change an operator made: to lists, refusals, closures, consent, or
/// the configuration.
#[derive(Debug, Clone, Serialize)]
pub struct AdminChange {
    #[serde(skip)]
    pub at: DateTime<Utc>,
    pub via: Via,
    /// `sha256:` and the first 16 hex digits of the bearer token's hash:
    /// which token, never the token. `None` when the API has no token.
    pub token: Option<String>,
    pub method: String,
    pub path: String,
    /// The request body when it is JSON, or its size in bytes otherwise.
    pub request: Option<serde_json::Value>,
    pub status: u16,
    /// The response body when it is JSON.
    pub result: Option<serde_json::Value>,
}

/// The id the trail records for a bearer token.
pub fn token_id(token: &str) -> String {
    format!("sha256:{}", &chain::sha256_hex(token.as_bytes())[..16])
}

#[derive(Serialize)]
struct AdminLine<'a> {
    time: String,
    kind: &'static str,
    #[serde(flatten)]
    change: &'a AdminChange,
}

/// One line to write. Records go by value as they came (boxing them
/// would cost an allocation per call).
#[allow(clippy::large_enum_variant)]
enum Entry {
    Call(Record),
    Outcome(CallOutcome),
    End(CallEnd),
    Admin(Box<AdminChange>),
    Strangers(std::sync::Arc<StrangerAccount>, usize),
    /// Written by the writer, never queued.
    Gap(Box<Losses>),
}

fn millis(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl Entry {
    fn at(&self) -> DateTime<Utc> {
        match self {
            Entry::Call(r) => r.at,
            Entry::Outcome(o) => o.at,
            Entry::End(e) => e.at,
            Entry::Admin(a) => a.at,
            Entry::Strangers(a, _) => a.until,
            Entry::Gap(g) => g.span.map_or(DateTime::UNIX_EPOCH, |(_, last)| last),
        }
    }

    /// Appends the entry as one JSON object, without newline.
    fn format(&self, out: &mut Vec<u8>) {
        let (a, c) = match self {
            Entry::Call(r) => return format_line(r, out),
            Entry::Outcome(o) => {
                return json::Obj::open(out)
                    .time("time", o.at)
                    .str("kind", "outcome")
                    .str("call_id", &o.call_id)
                    .str("tenant", &o.tenant)
                    .num("status", u64::from(o.status))
                    .str("outcome", outcome_of(o.status))
                    .bool("answered", (200..300).contains(&o.status))
                    .opt_str("carrier", o.carrier.as_deref())
                    .close();
            }
            Entry::End(e) => {
                return json::Obj::open(out)
                    .time("time", e.at)
                    .str("kind", "end")
                    .str("call_id", &e.call_id)
                    .str("by", e.by.as_str())
                    .close();
            }
            Entry::Admin(a) => {
                let line = AdminLine {
                    time: millis(a.at),
                    kind: "admin",
                    change: a,
                };
                return write_json(out, &line);
            }
            Entry::Gap(g) => {
                let Some((first, last)) = g.span else { return };
                let line = GapLine {
                    time: millis(last),
                    kind: "gap",
                    since: millis(first),
                    calls_refused: g.count(Lost::Refused),
                    decisions_lost: g.count(Lost::Decision),
                    outcomes_lost: g.count(Lost::Outcome),
                    ends_lost: g.count(Lost::End),
                    admin_changes_lost: g.count(Lost::Admin),
                    stranger_lines_lost: g.count(Lost::Strangers),
                    explanation: "the audit trail could not take these records between since and time (its disk refused writes, or its queue was full): they were not written; no call went to a carrier without its decision line: a call refused before its decision, or allowed but not recorded, was answered 503 audit_unavailable",
                };
                return write_json(out, &line);
            }
            Entry::Strangers(a, i) => match a.counts.get(*i) {
                Some(c) => (a, c),
                None => return,
            },
        };
        let line = StrangerLine {
            time: millis(a.until),
            kind: "strangers",
            source: c.source.map(|ip| ip.to_string()),
            since: millis(a.since),
            answered: c.answered,
            dropped: c.dropped,
            decision: Outcome::Reject,
            status: 403,
            reason: Code::SourceNotAuthorized,
            explanation: if c.source.is_some() {
                "the source address is in no tenant's dialer networks: INVITEs answered 403 within its budget, the rest dropped unanswered"
            } else {
                "sources past the tracked number, together: in no tenant's dialer networks"
            },
            config_version: &a.config_version,
        };
        write_json(out, &line);
    }
}

// Boxing the record would cost an allocation per call to shrink a message
// that is sent once at shutdown.
#[allow(clippy::large_enum_variant)]
enum Msg {
    Entry(Entry),
    Strangers(StrangerAccount),
    /// Write and fsync what came before, then answer (shutdown).
    Flush(mpsc::SyncSender<()>),
    /// Losses began: the writer, waiting for a record, must write their
    /// gap line even if none comes (a call refused while the writes fail
    /// queues nothing).
    Wake,
}

impl Audit {
    /// Starts the writer thread on `dir` (created if missing); records
    /// refused for a full queue are counted in `meters.overflow`. With
    /// `retention_days`, files of days more than that many days before the
    /// day a new file is opened for are deleted then.
    pub fn start(
        dir: &Path,
        max_bytes: u64,
        retention_days: Option<u32>,
        meters: Meters,
    ) -> std::io::Result<Audit> {
        Audit::start_with_queue(dir, max_bytes, retention_days, meters, QUEUE)
    }

    fn start_with_queue(
        dir: &Path,
        max_bytes: u64,
        retention_days: Option<u32>,
        meters: Meters,
        capacity: usize,
    ) -> std::io::Result<Audit> {
        let sync: SyncFn = std::fs::File::sync_data;
        Audit::start_with_sync(dir, max_bytes, retention_days, meters, capacity, sync)
    }

    fn start_with_sync(
        dir: &Path,
        max_bytes: u64,
        retention_days: Option<u32>,
        meters: Meters,
        capacity: usize,
        sync: SyncFn,
    ) -> std::io::Result<Audit> {
        std::fs::create_dir_all(dir)?;
        let (tx, rx) = mpsc::sync_channel(capacity);
        let shared = std::sync::Arc::<Shared>::default();
        let losses = std::sync::Arc::default();
        let overflow = meters.overflow.clone();
        let mut w = Writer::new(dir, max_bytes, retention_days, shared.clone(), meters)?;
        w.sync = sync;
        let lost = std::sync::Arc::clone(&losses);
        std::thread::Builder::new()
            .name("callguard-audit".into())
            .spawn(move || w.run(rx, &lost))?;
        Ok(Audit {
            tx,
            shared,
            overflow,
            capacity,
            losses,
        })
    }

    /// An audit trail whose writer never runs, with a queue of `queue`
    /// records: what a stalled disk looks like to the call path.
    #[cfg(test)]
    pub(crate) fn stalled(queue: usize) -> (Audit, impl Drop) {
        struct Keep(#[allow(dead_code)] mpsc::Receiver<Msg>);
        impl Drop for Keep {
            fn drop(&mut self) {}
        }
        let (tx, rx) = mpsc::sync_channel(queue);
        let a = Audit {
            tx,
            shared: Default::default(),
            overflow: Default::default(),
            capacity: queue,
            losses: Default::default(),
        };
        (a, Keep(rx))
    }

    pub fn overflowed(&self) -> u64 {
        self.overflow.get()
    }

    /// Whether a record would be queued now and written (the gate asks
    /// before deciding, so that a call it cannot record is not counted
    /// either): not while the queue is full, nor while the disk refuses the
    /// writer's writes. A call refused at `at` is accounted for in a gap
    /// line.
    pub fn has_room(&self, at: DateTime<Utc>) -> bool {
        let room = self.is_writable();
        if !room {
            self.overflow.inc();
            self.lose(Lost::Refused, 1, at);
        }
        room
    }

    /// Whether a record handed over now would be written: the queue has
    /// room and the disk takes the writer's lines. Unlike [`has_room`]
    /// nothing is counted: the admin API asks before it applies a change.
    ///
    /// [`has_room`]: Audit::has_room
    pub fn is_writable(&self) -> bool {
        let s = &*self.shared;
        s.queued.load(Ordering::Relaxed) < self.capacity && !s.failing.load(Ordering::Relaxed)
    }

    /// Queues a record without waiting; `Full` when the writer is behind.
    pub fn try_record(&self, r: Record) -> Result<(), Full> {
        self.send(Entry::Call(r))
    }

    /// Queues a forwarded call's outcome. The call is placed already: a
    /// full queue loses the line (counted in the overflow and logged).
    pub fn record_outcome(&self, o: CallOutcome) {
        if self.send(Entry::Outcome(o)).is_err() {
            tracing::warn!("audit trail behind: a call's outcome was not recorded");
        }
    }

    /// Queues the end (BYE) of an answered call.
    pub fn record_end(&self, e: CallEnd) {
        if self.send(Entry::End(e)).is_err() {
            tracing::warn!("audit trail behind: a call's end was not recorded");
        }
    }

    /// Queues an admin change.
    pub fn record_admin(&self, a: AdminChange) -> Result<(), Full> {
        self.send(Entry::Admin(Box::new(a)))
    }

    fn send(&self, e: Entry) -> Result<(), Full> {
        // Counted before it is sent: the writer may take the record and
        // subtract it before this thread runs again, and a count that went
        // below zero (wrapping) would read as a full queue to every call.
        self.shared.queued.fetch_add(1, Ordering::Relaxed);
        let m = match self.tx.try_send(Msg::Entry(e)) {
            Ok(()) => return Ok(()),
            Err(mpsc::TrySendError::Full(m)) => m,
            Err(mpsc::TrySendError::Disconnected(m)) => {
                tracing::error!("audit writer stopped: record not written");
                m
            }
        };
        self.shared.queued.fetch_sub(1, Ordering::Relaxed);
        self.overflow.inc();
        if let Msg::Entry(e) = &m {
            self.lose(Lost::of(e), 1, e.at());
        }
        Err(Full)
    }

    /// Queues an interval's account of strangers (one line per source).
    pub fn record_strangers(&self, account: StrangerAccount) -> Result<(), Full> {
        if account.counts.is_empty() {
            return Ok(());
        }
        let (lines, at) = (account.counts.len() as u64, account.until);
        self.tx.try_send(Msg::Strangers(account)).map_err(|_| {
            self.lose(Lost::Strangers, lines, at);
            Full
        })
    }

    /// Accounts for records not taken, and wakes the writer at the first
    /// of a span. Refused here (the queue full) the wake costs nothing:
    /// records are waiting then.
    fn lose(&self, what: Lost, n: u64, at: DateTime<Utc>) {
        let first = {
            let mut l = self.losses.lock();
            let first = l.span.is_none();
            l.add(what, n, at);
            first
        };
        if first {
            let _ = self.tx.try_send(Msg::Wake);
        }
    }

    /// Returns once every record handed over before the call is on disk
    /// (fsync'd), or after `bound` if the disk stalls: shutdown must end.
    pub fn flush(&self, bound: Duration) -> bool {
        let deadline = std::time::Instant::now() + bound;
        let (tx, rx) = mpsc::sync_channel(1);
        // Not `send`: with the queue full (the disk stalls) it would wait
        // for ever, and an admin request or the shutdown with it.
        let mut msg = Msg::Flush(tx);
        loop {
            match self.tx.try_send(msg) {
                Ok(()) => break,
                Err(mpsc::TrySendError::Disconnected(_)) => return false,
                Err(mpsc::TrySendError::Full(m)) => {
                    if std::time::Instant::now() >= deadline {
                        return false;
                    }
                    msg = m;
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
        rx.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
            .is_ok()
    }
}

/// How the writer makes a file's data durable: `File::sync_data`, or in
/// tests a disk whose fsync fails.
type SyncFn = fn(&std::fs::File) -> std::io::Result<()>;

struct Writer {
    dir: PathBuf,
    max_bytes: u64,
    retention_days: Option<u32>,
    file: Option<std::fs::File>,
    day: String,
    size: u64,
    /// Bytes formatted for the current file but not yet written.
    pending: u64,
    shared: std::sync::Arc<Shared>,
    /// The chain value of the last line formatted.
    head: chain::Head,
    /// The file the last line went to (or, before the first, the newest
    /// file found at start), which the next file's chain start names.
    last_file: Option<String>,
    /// `last_file` ends with a complete sealed line: appending to it
    /// continues the chain.
    last_sealed: bool,
    meters: Meters,
    /// What was written to the current file since the last fsync whose
    /// read-back check passed, and the file's length then: a failed or
    /// lying fsync is repaired from them (see [`Writer::make_durable`]).
    unsynced: Vec<u8>,
    durable_len: u64,
    /// What the check after each fsync read back (kept: one allocation).
    read_back: Vec<u8>,
    /// The file system refused `posix_fadvise` (warned once).
    fadvise_refused: bool,
    /// The kernel drops cached pages whole: the check's range starts at a
    /// page boundary, or its first page would be read from the cache.
    page: u64,
    sync: SyncFn,
}

/// The memory page size (4 KiB on x86-64, up to 64 KiB on some arm64 and
/// ppc64 kernels); 64 KiB, which covers every smaller size, if unknown.
fn page_size() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .and_then(|p| u64::try_from(p).ok())
        .filter(|p| p.is_power_of_two())
        .unwrap_or(64 * 1024)
}

impl Writer {
    fn new(
        dir: &Path,
        max_bytes: u64,
        retention_days: Option<u32>,
        shared: std::sync::Arc<Shared>,
        meters: Meters,
    ) -> std::io::Result<Writer> {
        // The chain goes on from the newest file of an earlier run.
        let newest = chain::files_in(dir)?.pop();
        let tail = match &newest {
            Some(p) => chain::tail(p)?,
            None => chain::Tail {
                head: None,
                sealed: false,
            },
        };
        if let (Some(p), false) = (&newest, tail.sealed) {
            tracing::warn!(file = %p.display(), "the newest audit file does not end with a complete chained line (a crash mid-write, or a file from before the chain): a new file starts the chain");
        }
        Ok(Writer {
            dir: dir.to_owned(),
            max_bytes,
            retention_days,
            file: None,
            day: String::new(),
            size: 0,
            pending: 0,
            shared,
            head: tail.head.unwrap_or(chain::GENESIS),
            last_file: newest.and_then(|p| Some(p.file_name()?.to_str()?.to_owned())),
            last_sealed: tail.sealed,
            meters,
            unsynced: Vec::new(),
            durable_len: 0,
            read_back: Vec::new(),
            fadvise_refused: false,
            page: page_size(),
            sync: std::fs::File::sync_data,
        })
    }

    fn run(&mut self, rx: mpsc::Receiver<Msg>, losses: &parking_lot::Mutex<Losses>) {
        let mut buf = Vec::with_capacity(512 * BATCH);
        // Kept from batch to batch: a vector grown anew each time copied
        // every record it held at each doubling (a tenth of this thread's
        // time at 1,500 records a second).
        let mut batch: Vec<Entry> = Vec::with_capacity(BATCH);
        let mut day = String::new();
        let mut day_of = None;
        let mut behind = false;
        loop {
            // Wait for the first record, then take what else arrives within
            // FLUSH_EVERY, up to BATCH records.
            let mut counted = 0;
            let mut take = |m: Msg, batch: &mut Vec<Entry>| match m {
                Msg::Entry(e) => {
                    counted += 1;
                    batch.push(e);
                    None
                }
                Msg::Strangers(a) => {
                    let a = std::sync::Arc::new(a);
                    batch.extend((0..a.counts.len()).map(|i| Entry::Strangers(a.clone(), i)));
                    None
                }
                Msg::Flush(done) => Some(done),
                Msg::Wake => None,
            };
            let mut flushed = match rx.recv() {
                Ok(m) => take(m, &mut batch),
                Err(_) => return,
            };
            // Sleep rather than wait on the channel for the rest of the
            // batch: a receiver parked on the channel is woken by every
            // record, a thread switch per call at thousands of calls a
            // second. Asleep, the records queue and are taken at once.
            // A full last batch means records are waiting already.
            if flushed.is_none() && !behind {
                std::thread::sleep(FLUSH_EVERY);
            }
            while flushed.is_none() && batch.len() < BATCH {
                match rx.try_recv() {
                    Ok(m) => flushed = take(m, &mut batch),
                    Err(_) => break,
                }
            }
            behind = batch.len() >= BATCH;
            // After the records taken: those that found the queue full
            // came after them.
            let lost = std::mem::take(&mut *losses.lock());
            if lost.span.is_some() {
                tracing::warn!(
                    refused = lost.count(Lost::Refused),
                    decisions = lost.count(Lost::Decision),
                    others = [Lost::Outcome, Lost::End, Lost::Admin, Lost::Strangers]
                        .into_iter()
                        .map(|k| lost.count(k))
                        .sum::<u64>(),
                    "the audit trail could not take records (its writes failed, or its queue was full): a gap line accounts for what was not written"
                );
                batch.push(Entry::Gap(Box::new(lost)));
            }
            self.shared.queued.fetch_sub(counted, Ordering::Relaxed);
            // One write per batch, not per line: a syscall per decision
            // cost more than formatting it.
            for r in &batch {
                // Formatted when the day changes, not per line: formatting
                // costs more than comparing dates.
                let d = r.at().date_naive();
                if day_of != Some(d) {
                    day_of = Some(d);
                    day.clear();
                    let _ = std::fmt::Write::write_fmt(
                        &mut day,
                        format_args!("{:04}-{:02}-{:02}", d.year(), d.month(), d.day()),
                    );
                }
                let mut start = buf.len();
                r.format(&mut buf);
                if buf.len() == start {
                    continue;
                }
                let len = (buf.len() - start) as u64 + chain::SUFFIX_LEN as u64 + 1;
                if self.file.is_none()
                    || self.day != day
                    || self.size + self.pending + len > self.max_bytes
                {
                    // Lines so far belong to the current file, and are
                    // on disk before another takes over.
                    let line = buf.split_off(start);
                    self.flush(&mut buf);
                    self.make_durable();
                    let at = r.at();
                    self.until_done("file open", |w| w.open(&day, at, &mut buf));
                    start = buf.len();
                    buf.extend_from_slice(&line);
                }
                chain::seal(&mut self.head, &mut buf, start);
                self.pending += (buf.len() - start) as u64;
            }
            // Emptied now, not when the next batch starts: an idle
            // proxy holds no records written long ago.
            batch.clear();
            self.flush(&mut buf);
            self.make_durable();
            if let Some(done) = flushed {
                let _ = done.send(());
            }
        }
    }

    /// Appends the pending lines to the current file. A disk that refuses
    /// them (full, failing, a file size limit) is tried again until it
    /// takes them. Dropping them would lose decisions of calls already
    /// placed, and break the chain: the lines after them are hashed on
    /// them, so `audit verify` would report an edit. Meanwhile the writer
    /// takes no record from the queue, which fills, and new calls are
    /// refused `503 audit_unavailable` rather than placed unrecorded.
    fn flush(&mut self, buf: &mut Vec<u8>) {
        self.until_done("write", |w| w.write_pending(buf));
        self.size += self.pending;
        self.pending = 0;
    }

    /// Writes `buf` to the current file, as much as the disk takes; what
    /// was written leaves `buf`, the rest stays for the next try.
    fn write_pending(&mut self, buf: &mut Vec<u8>) -> std::io::Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        let Some(f) = self.file.as_mut() else {
            return Err(std::io::Error::other("no audit file is open"));
        };
        // Not `write_all`: after a short write it does not say how much
        // went, and a retry would write the start of a line twice.
        let mut written = 0;
        let result = loop {
            if written == buf.len() {
                break Ok(());
            }
            match f.write(&buf[written..]) {
                Ok(0) => break Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => written += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        self.unsynced.extend_from_slice(&buf[..written]);
        buf.drain(..written);
        result
    }

    /// Makes what was written to the current file durable, and returns
    /// only once it is. Neither a failed fsync tried again nor an fsync
    /// that succeeds is proof. Linux marks the pages whose writeback failed
    /// clean, so the next fsync succeeds with those lines lost; and on ext4
    /// over a device that ran out of room (a thin-provisioned volume), an
    /// fsync was measured to succeed while a block it covered was never
    /// written, the error coming with the next one (`tests/audit.rs`,
    /// `a_failed_fsync_on_a_real_disk_loses_no_decision`). Either way the
    /// lines read back as zeros after a restart, and `audit verify` fails
    /// on the decisions of calls already placed. So what each fsync
    /// covered is read back from the device and compared; on any failure
    /// the file is cut back to its length at the last check that passed,
    /// the lines since are written again from memory, synced and checked,
    /// until that passes. Meanwhile new calls are refused `503
    /// audit_unavailable` and flush waiters (the admin API, the shutdown)
    /// are not answered.
    fn make_durable(&mut self) {
        if self.file.is_none() || self.unsynced.is_empty() {
            return;
        }
        let mut first = true;
        self.until_done("fsync", |w| {
            if std::mem::take(&mut first) {
                w.sync_and_read_back()
            } else {
                w.rewrite_unsynced()
            }
        });
        self.unsynced.clear();
        self.durable_len = self.size;
    }

    fn rewrite_unsynced(&mut self) -> std::io::Result<()> {
        let Some(f) = self.file.as_mut() else {
            return Err(std::io::Error::other("no audit file is open"));
        };
        f.set_len(self.durable_len)?;
        // A short write fails this try; the next one cuts the file back
        // again, so nothing is written twice.
        f.write_all(&self.unsynced)?;
        self.sync_and_read_back()
    }

    /// Syncs the current file, then reads what was written since the last
    /// check from the device, not the page cache (its pages, clean after
    /// the fsync, are dropped first), and compares. The cost is one read
    /// of each batch, on the writer's thread, off the call path.
    fn sync_and_read_back(&mut self) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        let Some(f) = self.file.as_ref() else {
            return Err(std::io::Error::other("no audit file is open"));
        };
        (self.sync)(f)?;
        let from = self.durable_len & !(self.page - 1);
        let len = self.durable_len + self.unsynced.len() as u64 - from;
        let (Ok(from_off), Ok(len_off)) = (i64::try_from(from), i64::try_from(len)) else {
            return Err(std::io::Error::other("audit file offset out of range"));
        };
        let dropped = nix::fcntl::posix_fadvise(
            f,
            from_off,
            len_off,
            nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
        );
        // Advice a file system does not take must not stop the trail (and
        // every call with it): the check then reads the cache, and says so.
        if let (Err(e), false) = (dropped, self.fadvise_refused) {
            self.fadvise_refused = true;
            tracing::warn!(error = %e, dir = %self.dir.display(), "this file system does not drop cached pages on request: each audit fsync is checked against the page cache only, which does not show a writeback the kernel lost");
        }
        self.read_back.resize(self.unsynced.len(), 0);
        f.read_exact_at(&mut self.read_back, self.durable_len)?;
        if self.read_back != self.unsynced {
            return Err(std::io::Error::other(
                "the lines the fsync covered read back different from the disk (a writeback failed unreported)",
            ));
        }
        Ok(())
    }

    /// Runs `step` until it succeeds, `RETRY_EVERY` apart, with one log
    /// line when it first fails and one when it recovers.
    fn until_done(&mut self, what: &str, mut step: impl FnMut(&mut Self) -> std::io::Result<()>) {
        let mut failing: Option<(std::time::Instant, u64)> = None;
        while let Err(e) = step(self) {
            self.meters.write_errors.inc();
            self.meters.up.set(0);
            self.shared.failing.store(true, Ordering::Relaxed);
            match &mut failing {
                None => {
                    tracing::error!(error = %e, dir = %self.dir.display(), "audit {what} failed: trying again every {} ms; until it succeeds, new calls are refused 503 audit_unavailable", RETRY_EVERY.as_millis());
                    failing = Some((std::time::Instant::now(), 1));
                }
                Some((_, tries)) => *tries += 1,
            }
            std::thread::sleep(RETRY_EVERY);
        }
        if let Some((since, tries)) = failing {
            self.shared.failing.store(false, Ordering::Relaxed);
            self.meters.up.set(1);
            tracing::warn!(
                dir = %self.dir.display(),
                after_ms = since.elapsed().as_millis() as u64,
                tries,
                "audit {what} succeeded again"
            );
        }
    }

    /// Opens the file of `day` for appending. A new file (or one that
    /// cannot be continued) gets a chain start in `buf`.
    fn open(&mut self, day: &str, at: DateTime<Utc>, buf: &mut Vec<u8>) -> std::io::Result<()> {
        // Durable already (`make_durable` ran before).
        self.file = None;
        // Made again if removed under a running proxy: the writer would
        // otherwise wait for ever.
        std::fs::create_dir_all(&self.dir)?;
        let name = format!("audit-{day}.jsonl");
        let current = self.dir.join(&name);
        let size = std::fs::metadata(&current).map(|m| m.len()).unwrap_or(0);
        let ours = self.last_file.as_deref() == Some(name.as_str());
        let continues = size > 0 && size < self.max_bytes && ours && self.last_sealed;
        if size > 0 && !continues {
            // Rotate: the full file (or one whose chain cannot go on)
            // becomes .N, a new one starts.
            let n = (1..)
                .find(|n| !self.dir.join(format!("audit-{day}.{n}.jsonl")).exists())
                .unwrap_or(1);
            let rotated = format!("audit-{day}.{n}.jsonl");
            std::fs::rename(&current, self.dir.join(&rotated))?;
            if ours {
                self.last_file = Some(rotated);
            }
        }
        // Readable too: each fsync is checked by reading back.
        let f = std::fs::OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&current)?;
        self.size = f.metadata()?.len();
        self.durable_len = self.size;
        self.unsynced.clear();
        self.file = Some(f);
        if !continues {
            let start = chain::Start {
                time: millis(at),
                kind: "chain".into(),
                previous_file: self.last_file.take(),
                previous_hash: (self.head != chain::GENESIS)
                    .then(|| String::from_utf8_lossy(&self.head).into_owned()),
            };
            let at = buf.len();
            write_json(buf, &start);
            chain::seal(&mut self.head, buf, at);
            self.pending += (buf.len() - at) as u64;
        }
        self.last_file = Some(name);
        self.last_sealed = true;
        if self.day != day {
            self.expire(day);
        }
        self.day = day.to_owned();
        Ok(())
    }

    /// Deletes the audit files of days more than `retention_days` before
    /// `day`. Only files named as this writer names them are touched.
    fn expire(&self, day: &str) {
        let (Some(keep), Ok(day)) = (
            self.retention_days,
            chrono::NaiveDate::parse_from_str(day, "%Y-%m-%d"),
        ) else {
            return;
        };
        let Some(oldest) = day.checked_sub_days(chrono::Days::new(keep.into())) else {
            return;
        };
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(error = %e, dir = %self.dir.display(), "audit retention: cannot list the directory");
                return;
            }
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some((file_day, _)) = name.to_str().and_then(chain::file_key) else {
                continue;
            };
            if file_day < oldest {
                match std::fs::remove_file(entry.path()) {
                    Ok(()) => {
                        tracing::info!(file = %entry.path().display(), "audit file past retention deleted")
                    }
                    Err(e) => {
                        tracing::error!(file = %entry.path().display(), error = %e, "audit file past retention not deleted")
                    }
                }
            }
        }
    }
}

/// A short, stable version of the config text for the audit trail.
pub fn config_version(text: &str) -> String {
    use std::hash::Hasher;
    let mut h = siphasher::sip::SipHasher13::new();
    h.write(text.as_bytes());
    format!("{:016x}", h.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// While fewer records wait than the queue holds, no call is refused.
    /// (The SIP load found 0.05–0.1 % of calls refused `audit_unavailable`
    /// at 4,000–8,000 calls/s: the waiting count was raised after the send,
    /// and a worker preempted in between let the writer's decrement wrap
    /// it. That interleaving is too rare to reproduce here; the load run in
    /// `benches/RESULTS.md` shows it gone.)
    #[test]
    fn fewer_records_than_the_queue_holds_are_never_refused() {
        let dir = tempfile::tempdir().unwrap();
        let a = Audit::start(dir.path(), 1 << 30, None, Default::default()).unwrap();
        let at = Utc::now();
        std::thread::scope(|s| {
            // More threads than cores, so that some are preempted between
            // handing a record over and counting it.
            for t in 0..16 {
                let a = a.clone();
                s.spawn(move || {
                    // Paced well below what the writer takes: fewer than
                    // 16 × 16 records wait at any time, against 65,536.
                    for round in 0..400 {
                        for i in 0..16 {
                            assert!(a.has_room(at), "thread {t}, round {round}, record {i}");
                            assert_eq!(a.try_record(rec("c", at)), Ok(()));
                        }
                        std::thread::sleep(Duration::from_millis(1));
                    }
                });
            }
        });
        assert!(a.flush(Duration::from_secs(30)));
        assert_eq!(a.overflowed(), 0);
    }

    /// What the decision, outcome and end lines were when `serde_json`
    /// wrote them: the hand-written lines must stay byte for byte the
    /// same, or every verifier and search of old files would see a change.
    mod reference {
        use super::*;
        use crate::numbering::{CallerNumber, E164};

        pub struct Shown<T>(pub T);
        impl<T: std::fmt::Display> Serialize for Shown<T> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(&self.0)
            }
        }

        #[derive(Serialize)]
        pub struct Line<'a> {
            pub time: String,
            pub kind: &'static str,
            pub call_id: &'a str,
            pub tenant: Option<&'a str>,
            pub source: Shown<SocketAddr>,
            pub caller: Option<Shown<CallerNumber>>,
            pub callee: Option<Shown<E164>>,
            pub mode: Option<crate::policy::Mode>,
            pub callee_time_zones: Vec<&'static str>,
            pub callee_local_time: Vec<String>,
            pub decision: Outcome,
            pub status: u16,
            pub reason: Option<Code>,
            pub explanation: &'a str,
            pub retry_after: Option<u64>,
            pub failed_rules: &'a [crate::policy::Failure],
            pub jurisdiction: Option<&'a str>,
            pub rules_version: Option<&'a str>,
            pub config_version: &'a str,
        }

        #[derive(Serialize)]
        pub struct OutcomeLine<'a> {
            pub time: String,
            pub kind: &'static str,
            pub call_id: &'a str,
            pub tenant: &'a str,
            pub status: u16,
            pub outcome: &'static str,
            pub answered: bool,
            pub carrier: Option<&'a str>,
        }

        #[derive(Serialize)]
        pub struct EndLine<'a> {
            pub time: String,
            pub kind: &'static str,
            pub call_id: &'a str,
            pub by: Party,
        }
    }

    fn text(e: &Entry) -> String {
        let mut out = Vec::new();
        e.format(&mut out);
        String::from_utf8(out).unwrap()
    }

    proptest::proptest! {
        #[test]
        fn hand_written_lines_are_what_serde_json_wrote(
            call_id in ".{0,40}",
            tenant in ".{0,12}",
            explanation in ".{0,80}",
            failed in proptest::collection::vec((0..crate::policy::RULES, ".{0,60}", proptest::bool::ANY), 0..3),
            status in 100u16..700,
            retry_after in proptest::option::of(proptest::num::u64::ANY),
            callee in proptest::option::of(1u64..999_999_999_999_999),
            zones in 0usize..4,
            ms in 0i64..8_000_000_000_000,
            stranger in proptest::bool::ANY,
            carrier in proptest::option::of(".{0,20}"),
        ) {
            use crate::policy::{Decision, Enforce, Failure, Mode, Rule};
            const ZONES: &[chrono_tz::Tz] = &[chrono_tz::Europe::Paris, chrono_tz::America::St_Johns, chrono_tz::Australia::Lord_Howe];
            let at = DateTime::<Utc>::from_timestamp_millis(ms).unwrap();
            let source: SocketAddr = if zones % 2 == 0 { "127.0.0.1:5090" } else { "[2001:db8::1]:5090" }.parse().unwrap();
            let failed_rules: smallvec::SmallVec<[Failure; 2]> = failed
                .iter()
                .map(|(r, e, warn)| Failure {
                    rule: Rule::ALL[*r],
                    explanation: e.clone(),
                    enforcement: if *warn { Enforce::Warn } else { Enforce::Block },
                })
                .collect();
            let d = Decision {
                decision: if failed.is_empty() { Outcome::Allow } else { Outcome::Reject },
                status,
                phrase: "x".into(),
                reason: failed.first().map(|(r, _, _)| Rule::ALL[*r].code()),
                explanation: explanation.clone().into(),
                retry_after,
                tenant: tenant.as_str().into(),
                mode: if zones % 2 == 0 { Mode::Automated } else { Mode::Manual },
                caller: callee.map(|c| if c % 3 == 0 {
                    CallerNumber::FrShort((c % 10_000) as u16)
                } else {
                    CallerNumber::E164(crate::numbering::E164::from_digits(c / 7 + 1))
                }),
                callee: callee.map(crate::numbering::E164::from_digits),
                zones: &ZONES[..zones.min(ZONES.len())],
                at,
                failed_rules,
                jurisdiction: callee.map(|_| "US-FL".into()),
                rules_version: retry_after.map(|_| "2026-11-24".into()),
            };
            let r = Record {
                call_id: call_id.clone(),
                source,
                decision: (!stranger).then(|| d.clone()),
                at,
                config_version: explanation.as_str().into(),
            };
            let time = at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            let none = [];
            let want = match &r.decision {
                Some(d) => reference::Line {
                    time: time.clone(),
                    kind: "decision",
                    call_id: &call_id,
                    tenant: Some(&d.tenant),
                    source: reference::Shown(source),
                    caller: d.caller.map(reference::Shown),
                    callee: d.callee.map(reference::Shown),
                    mode: Some(d.mode),
                    callee_time_zones: d.zones.iter().map(|z| z.name()).collect(),
                    callee_local_time: d.callee_local_time(),
                    decision: d.decision,
                    status: d.status,
                    reason: d.reason,
                    explanation: &d.explanation,
                    retry_after: d.retry_after,
                    failed_rules: &d.failed_rules,
                    jurisdiction: d.jurisdiction.as_deref(),
                    rules_version: d.rules_version.as_deref(),
                    config_version: &r.config_version,
                },
                None => reference::Line {
                    time: time.clone(),
                    kind: "decision",
                    call_id: &call_id,
                    tenant: None,
                    source: reference::Shown(source),
                    caller: None,
                    callee: None,
                    mode: None,
                    callee_time_zones: Vec::new(),
                    callee_local_time: Vec::new(),
                    decision: Outcome::Reject,
                    status: 403,
                    reason: Some(Code::SourceNotAuthorized),
                    explanation: "the source address is in no tenant's dialer networks",
                    retry_after: None,
                    failed_rules: &none,
                    jurisdiction: None,
                    rules_version: None,
                    config_version: &r.config_version,
                },
            };
            let want = serde_json::to_string(&want).unwrap();
            proptest::prop_assert_eq!(text(&Entry::Call(r)), want);

            let o = CallOutcome {
                call_id: call_id.clone(),
                tenant: tenant.as_str().into(),
                status,
                carrier: carrier.as_deref().map(Into::into),
                at,
            };
            let want = reference::OutcomeLine {
                time: time.clone(),
                kind: "outcome",
                call_id: &call_id,
                tenant: &tenant,
                status,
                outcome: outcome_of(status),
                answered: (200..300).contains(&status),
                carrier: carrier.as_deref(),
            };
            proptest::prop_assert_eq!(text(&Entry::Outcome(o)), serde_json::to_string(&want).unwrap());

            let by = if stranger { Party::Dialer } else { Party::Carrier };
            let e = CallEnd { call_id: call_id.clone(), by, at };
            let want = reference::EndLine { time, kind: "end", call_id: &call_id, by };
            proptest::prop_assert_eq!(text(&Entry::End(e)), serde_json::to_string(&want).unwrap());
        }
    }

    fn rec(call_id: &str, at: DateTime<Utc>) -> Record {
        Record {
            call_id: call_id.into(),
            source: "10.0.0.1:5060".parse().unwrap(),
            decision: None,
            at,
            config_version: "v1".into(),
        }
    }

    fn read_all(dir: &Path) -> Vec<(String, Vec<serde_json::Value>)> {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        files
            .into_iter()
            .map(|p| {
                let text = std::fs::read_to_string(&p).unwrap();
                let lines = text
                    .lines()
                    .map(|l| serde_json::from_str(l).unwrap())
                    .collect();
                (p.file_name().unwrap().to_string_lossy().into_owned(), lines)
            })
            .collect()
    }

    /// With a retention, opening a day's file deletes the audit files of
    /// days past it (rotated parts too), and nothing else.
    #[test]
    fn files_past_retention_are_deleted_when_a_day_starts() {
        let dir = tempfile::tempdir().unwrap();
        let names = [
            "audit-2026-10-17.jsonl",   // 31 days before: deleted
            "audit-2026-10-17.2.jsonl", // a rotated part of it: deleted
            "audit-2026-10-18.jsonl",   // 30 days before: kept
            "audit-2026-11-16.jsonl",
            "audit-2026-10-01.json",    // not ours: kept
            "audit-2026-10-01.x.jsonl", // not ours: kept
            "notes.txt",
        ];
        for n in names {
            std::fs::write(dir.path().join(n), "{}\n").unwrap();
        }
        let a = Audit::start(dir.path(), 1 << 20, Some(30), Default::default()).unwrap();
        a.try_record(rec("r1", "2026-11-17T10:00:00Z".parse().unwrap()))
            .unwrap();
        assert!(a.flush(Duration::from_secs(10)));
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "audit-2026-10-01.json",
                "audit-2026-10-01.x.jsonl",
                "audit-2026-10-18.jsonl",
                "audit-2026-11-16.jsonl",
                "audit-2026-11-17.jsonl",
                "notes.txt",
            ]
        );
        // Without a retention nothing is deleted.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(names[0]), "{}\n").unwrap();
        let a = Audit::start(dir.path(), 1 << 20, None, Default::default()).unwrap();
        a.try_record(rec("r2", "2026-11-17T10:00:00Z".parse().unwrap()))
            .unwrap();
        assert!(a.flush(Duration::from_secs(10)));
        assert!(dir.path().join(names[0]).exists());
    }

    #[test]
    fn flush_returns_once_every_earlier_record_is_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let a = Audit::start(dir.path(), 1 << 20, None, Default::default()).unwrap();
        let at = "2026-11-17T10:00:00Z".parse().unwrap();
        for i in 0..3000 {
            a.try_record(rec(&format!("f{i}"), at)).unwrap();
        }
        assert!(a.flush(Duration::from_secs(10)));
        // No waiting: everything is there when flush returns.
        let lines: usize = read_all(dir.path())
            .iter()
            .flat_map(|(_, l)| l)
            .filter(|l| l["kind"] == "decision")
            .count();
        assert_eq!(lines, 3000);
        // A flush with nothing pending returns too.
        assert!(a.flush(Duration::from_secs(10)));
    }

    /// A disk that loses the pages it could not write back: its fsync
    /// fails (and Linux marks those pages clean: the next fsync succeeds
    /// without them), or succeeds regardless (measured on ext4 over a
    /// device out of room, see `tests/audit.rs`). Nothing is acknowledged
    /// while the lines are not durable, calls are refused meanwhile, and
    /// once the disk keeps what it is given the file holds every line
    /// once, intact.
    #[test]
    fn lines_whose_fsync_failed_are_written_again_not_lost() {
        static FAILS: AtomicUsize = AtomicUsize::new(0);
        static LIES: AtomicUsize = AtomicUsize::new(0);
        fn losing_disk(f: &std::fs::File) -> std::io::Result<()> {
            let lie = LIES.load(Ordering::SeqCst) > 0;
            if !lie && FAILS.load(Ordering::SeqCst) == 0 {
                return f.sync_data();
            }
            // The pages lost: the file keeps its length, its last 100
            // bytes (less than a line, so only the newest batch is hit)
            // read as zeros.
            let len = f.metadata()?.len();
            f.set_len(len.saturating_sub(100))?;
            f.set_len(len)?;
            if lie {
                LIES.fetch_sub(1, Ordering::SeqCst);
                return Ok(());
            }
            FAILS.fetch_sub(1, Ordering::SeqCst);
            Err(std::io::Error::other("EIO (simulated writeback failure)"))
        }
        let dir = tempfile::tempdir().unwrap();
        let a = Audit::start_with_sync(
            dir.path(),
            1 << 20,
            None,
            Default::default(),
            QUEUE,
            losing_disk,
        )
        .unwrap();
        let at = "2026-11-17T10:00:00Z".parse().unwrap();
        a.try_record(rec("d0", at)).unwrap();
        assert!(a.flush(Duration::from_secs(10)));

        FAILS.store(3, Ordering::SeqCst);
        a.try_record(rec("d1", at)).unwrap();
        a.try_record(rec("d2", at)).unwrap();
        // Three failures, RETRY_EVERY apart: not durable within 50 ms.
        assert!(!a.flush(Duration::from_millis(50)));
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while a.has_room(at) {
            assert!(std::time::Instant::now() < deadline, "calls never refused");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(a.flush(Duration::from_secs(10)));
        assert_eq!(FAILS.load(Ordering::SeqCst), 0);
        assert!(a.has_room(at));

        // An fsync that says yes and lost the lines: found by reading
        // back, written again (at least RETRY_EVERY later).
        LIES.store(1, Ordering::SeqCst);
        a.try_record(rec("d3", at)).unwrap();
        assert!(!a.flush(Duration::from_millis(50)));
        assert!(a.flush(Duration::from_secs(10)));
        assert_eq!(LIES.load(Ordering::SeqCst), 0);

        let files = read_all(dir.path());
        assert_eq!(files.len(), 1, "no file set aside: {files:?}");
        let lines = &files[0].1;
        let ids: Vec<&str> = lines.iter().filter_map(|l| l["call_id"].as_str()).collect();
        assert_eq!(ids, ["d0", "d1", "d2", "d3"]);
        assert_eq!(lines[0]["kind"], "chain");
        let gap = lines.iter().find(|l| l["kind"] == "gap").unwrap();
        assert!(gap["calls_refused"].as_u64() >= Some(1), "{gap}");
        let report = chain::verify(&[dir.path().join(&files[0].0)]).unwrap();
        assert_eq!(report[0].defect, None, "{report:?}");
        assert_eq!(report[0].lines, lines.len());
    }

    #[test]
    fn lines_rotate_by_day_and_size_and_the_chain_runs_through() {
        let dir = tempfile::tempdir().unwrap();
        // Room for a chain start and two decisions a file.
        let a = Audit::start(dir.path(), 1400, None, Default::default()).unwrap();
        let d1 = "2026-11-17T10:00:00Z".parse().unwrap();
        let d2 = "2026-11-18T10:00:00Z".parse().unwrap();
        for i in 0..4 {
            a.try_record(rec(&format!("c{i}"), d1)).unwrap();
        }
        a.try_record(rec("next-day", d2)).unwrap();
        assert!(a.flush(Duration::from_secs(10)));
        let files = read_all(dir.path());
        let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "audit-2026-11-17.1.jsonl",
                "audit-2026-11-17.jsonl",
                "audit-2026-11-18.jsonl"
            ],
            "{files:?}"
        );
        for (_, lines) in &files {
            assert_eq!(lines[0]["kind"], "chain");
        }
        let decisions: usize = files.iter().map(|(_, l)| l.len() - 1).sum();
        assert_eq!(decisions, 5);
        let line = &files[2].1[1];
        assert_eq!(line["call_id"], "next-day");
        assert_eq!(line["decision"], "reject");
        assert_eq!(line["reason"], "source_not_authorized");
        assert_eq!(line["status"], 403);
        assert_eq!(line["source"], "10.0.0.1:5060");
        assert_eq!(line["time"], "2026-11-18T10:00:00.000Z");
        assert_eq!(line["config_version"], "v1");
        assert_eq!(files[1].1[0]["previous_file"], "audit-2026-11-17.1.jsonl");
        // The files verify in the writer's order, each continuing the last.
        let reports = chain::verify(&chain::files_in(dir.path()).unwrap()).unwrap();
        let links: Vec<_> = reports
            .iter()
            .map(|r| (r.link.clone(), r.defect.clone()))
            .collect();
        assert_eq!(
            links,
            [
                (chain::Link::Genesis, None),
                (chain::Link::Continues, None),
                (chain::Link::Continues, None)
            ]
        );
    }

    /// A restart goes on with the chain of the file it finds; a file cut
    /// mid-line (a crash) is set aside and a new one starts.
    #[test]
    fn a_restart_continues_the_chain_and_a_cut_file_is_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let at = "2026-11-17T10:00:00Z".parse().unwrap();
        let run = |ids: &[&str]| {
            let a = Audit::start(dir.path(), 1 << 20, None, Default::default()).unwrap();
            for id in ids {
                a.try_record(rec(id, at)).unwrap();
            }
            assert!(a.flush(Duration::from_secs(10)));
        };
        run(&["r1", "r2"]);
        run(&["r3"]);
        let files = read_all(dir.path());
        assert_eq!(files.len(), 1);
        let kinds: Vec<_> = files[0]
            .1
            .iter()
            .map(|l| l["kind"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(kinds, ["chain", "decision", "decision", "decision"]);
        let all = chain::files_in(dir.path()).unwrap();
        assert_eq!(chain::verify(&all).unwrap()[0].defect, None);

        // A crash mid-write leaves half a line.
        let file = dir.path().join("audit-2026-11-17.jsonl");
        let mut text = std::fs::read(&file).unwrap();
        text.extend_from_slice(b"{\"time\":\"2026-11-17T10:00:00.000Z\",\"kind\":\"deci");
        std::fs::write(&file, &text).unwrap();
        run(&["r4"]);
        let all = chain::files_in(dir.path()).unwrap();
        let names: Vec<_> = all
            .iter()
            .map(|p| p.file_name().unwrap().to_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            names,
            ["audit-2026-11-17.1.jsonl", "audit-2026-11-17.jsonl"]
        );
        let reports = chain::verify(&all).unwrap();
        assert_eq!(
            reports[0].defect.as_ref().map(|d| d.0),
            Some(5),
            "the cut line is shown"
        );
        assert_eq!(reports[1].defect, None);
        // The new file goes on from the last complete line before the cut.
        assert_eq!(reports[1].link, chain::Link::Continues);
        let text = std::fs::read_to_string(&all[1]).unwrap();
        assert!(text.lines().nth(1).unwrap().contains("\"r4\""));
    }

    #[test]
    fn outcomes_ends_and_admin_changes_have_their_lines() {
        let dir = tempfile::tempdir().unwrap();
        let a = Audit::start(dir.path(), 1 << 20, None, Default::default()).unwrap();
        let at = "2026-11-17T10:00:00Z".parse().unwrap();
        a.record_outcome(CallOutcome {
            call_id: "o1".into(),
            tenant: "t".into(),
            status: 487,
            carrier: Some("c1".into()),
            at,
        });
        a.record_end(CallEnd {
            call_id: "o1".into(),
            by: Party::Carrier,
            at,
        });
        a.record_admin(AdminChange {
            at,
            via: Via::Api,
            token: Some(token_id("s3cret")),
            method: "DELETE".into(),
            path: "/v1/closures/7".into(),
            request: None,
            status: 404,
            result: Some(serde_json::json!({"error": "no closure 7"})),
        })
        .unwrap();
        assert!(a.flush(Duration::from_secs(10)));
        let files = read_all(dir.path());
        let l = &files[0].1;
        assert_eq!(l[1]["kind"], "outcome");
        assert_eq!(l[1]["outcome"], "cancelled");
        assert_eq!(l[1]["answered"], false);
        assert_eq!(l[1]["carrier"], "c1");
        assert_eq!(l[2]["kind"], "end");
        assert_eq!(l[2]["by"], "carrier");
        assert_eq!(l[3]["kind"], "admin");
        assert_eq!(l[3]["via"], "api");
        assert_eq!(l[3]["status"], 404);
        assert_eq!(l[3]["result"]["error"], "no closure 7");
        // `printf s3cret | sha256sum`, its first 16 digits.
        assert_eq!(l[3]["token"], "sha256:1ec1c26b50d5d3c5");
        assert_eq!(outcome_of(200), "answered");
        assert_eq!(outcome_of(486), "busy");
        assert_eq!(outcome_of(408), "no_answer");
        assert_eq!(outcome_of(603), "declined");
        assert_eq!(outcome_of(503), "failed");
    }

    /// A stalled disk does not hold a flush (an admin change, the
    /// shutdown) past its bound, even with the queue full.
    #[test]
    fn a_flush_on_a_full_queue_gives_up_at_its_bound() {
        let (a, _keep) = Audit::stalled(1);
        a.try_record(rec("q1", chrono::Utc::now())).unwrap();
        let started = std::time::Instant::now();
        assert!(!a.flush(Duration::from_millis(200)));
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    /// Lines that find the queue full are accounted for in the trail: a
    /// gap line per batch that met them, with their number and span,
    /// chained like any other line.
    #[test]
    fn lines_lost_to_a_full_queue_leave_a_gap_line() {
        let dir = tempfile::tempdir().unwrap();
        let overflow = prometheus_client::metrics::counter::Counter::default();
        // Two records of room: the writer, asleep for its batch window
        // after the first record, lets the queue fill at once.
        let meters = Meters {
            overflow: overflow.clone(),
            ..Meters::default()
        };
        let a = Audit::start_with_queue(dir.path(), 1 << 30, None, meters, 2).unwrap();
        let t0 = chrono::TimeZone::with_ymd_and_hms(&Utc, 2026, 11, 17, 10, 0, 0).unwrap();
        let (mut written, mut lost, mut refused, mut outcomes_lost) = (0, 0, 0, 0);
        let started = std::time::Instant::now();
        let mut i = 0;
        while (lost == 0 || refused == 0) && started.elapsed() < Duration::from_secs(10) {
            let at = t0 + chrono::Duration::milliseconds(i);
            if !a.has_room(at) {
                refused += 1;
            }
            match a.try_record(rec(&format!("c{i}"), at)) {
                Ok(()) => written += 1,
                Err(Full) => lost += 1,
            }
            if a.send(Entry::Outcome(CallOutcome {
                call_id: format!("c{i}"),
                tenant: "t".into(),
                status: 200,
                carrier: None,
                at,
            }))
            .is_err()
            {
                outcomes_lost += 1;
            }
            i += 1;
        }
        assert!(lost > 0 && refused > 0, "the queue never filled");
        let last = t0 + chrono::Duration::milliseconds(i - 1);
        assert!(a.flush(Duration::from_secs(10)));
        assert_eq!(overflow.get(), lost + refused + outcomes_lost);

        let files = read_all(dir.path());
        let lines: Vec<&serde_json::Value> = files.iter().flat_map(|(_, l)| l).collect();
        let decisions = lines.iter().filter(|l| l["kind"] == "decision").count();
        assert_eq!(decisions as u64, written);
        let gaps: Vec<_> = lines.iter().filter(|l| l["kind"] == "gap").collect();
        assert!(!gaps.is_empty());
        let sum = |k: &str| gaps.iter().map(|g| g[k].as_u64().unwrap()).sum::<u64>();
        assert_eq!(sum("decisions_lost"), lost);
        assert_eq!(sum("calls_refused"), refused);
        assert_eq!(sum("outcomes_lost"), outcomes_lost);
        assert_eq!(
            sum("ends_lost") + sum("admin_changes_lost") + sum("stranger_lines_lost"),
            0
        );
        let instant = |v: &serde_json::Value| {
            DateTime::parse_from_rfc3339(v.as_str().unwrap())
                .unwrap()
                .with_timezone(&Utc)
        };
        for g in &gaps {
            let (since, until) = (instant(&g["since"]), instant(&g["time"]));
            assert!(t0 <= since && since <= until && until <= last, "{g}");
        }
        // The gap lines are chained with the rest.
        let paths: Vec<_> = files.iter().map(|(n, _)| dir.path().join(n)).collect();
        for report in chain::verify(&paths).unwrap() {
            assert_eq!(report.defect, None, "{report:?}");
        }
    }

    #[test]
    fn a_full_queue_refuses_without_waiting_and_counts() {
        let (a, _keep) = Audit::stalled(2);
        let at = chrono::Utc::now();
        assert!(a.has_room(at));
        a.try_record(rec("q1", at)).unwrap();
        a.try_record(rec("q2", at)).unwrap();
        assert!(!a.has_room(at), "two records wait, none is written");
        assert_eq!(a.try_record(rec("q3", at)), Err(Full));
        assert_eq!(a.overflowed(), 2);
    }
}
