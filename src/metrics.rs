//! Prometheus metrics with the contract's names. Labels are bounded: SIP
//! methods outside a known set become `other`, and no number or Call-ID is
//! ever a label.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::{Arc, OnceLock};

use crate::codes::{Code, Outcome};
use crate::proxy::Observer;

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Direction {
    In,
    Out,
}

impl EncodeLabelValue for Direction {
    fn encode(&self, e: &mut prometheus_client::encoding::LabelValueEncoder) -> std::fmt::Result {
        use std::fmt::Write;
        e.write_str(match self {
            Direction::In => "in",
            Direction::Out => "out",
        })
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MessageLabels {
    pub direction: Direction,
    pub method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResponseLabels {
    pub direction: Direction,
    pub code: u16,
}

/// A tenant's id as a label value, shared with the tenant: counting a
/// decision then copies no string (`prometheus-client` encodes `Arc<T>`
/// only for sized `T`).
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct TenantLabel(pub Arc<str>);

impl prometheus_client::encoding::EncodeLabelValue for TenantLabel {
    fn encode(
        &self,
        encoder: &mut prometheus_client::encoding::LabelValueEncoder,
    ) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(encoder, &self.0)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InviteLabels {
    pub tenant: TenantLabel,
    pub decision: &'static str,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CarrierLabels {
    pub carrier: String,
    pub code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CarrierFailure {
    pub carrier: String,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CarrierName {
    pub carrier: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListLabels {
    pub list: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CalendarLabels {
    pub calendar: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

/// What sources of no tenant and no carrier cost (`crate::admission`):
/// handles the driver counts with.
#[derive(Clone, Debug, Default)]
pub struct StrangerMetrics {
    pub answered: Counter,
    pub dropped: Counter,
    pub sources: Gauge,
    pub connections: Gauge,
    pub connections_refused: Counter,
}

pub struct Metrics {
    registry: Registry,
    // Private: counted only through `messages`/`responses`, whose handles
    // would count into nothing if a series were removed from its family.
    sip_messages: Family<MessageLabels, Counter>,
    sip_responses: Family<ResponseLabels, Counter>,
    pub transactions_active: Gauge,
    pub invites: Family<InviteLabels, Counter>,
    pub decision_duration: Histogram,
    pub carrier_responses: Family<CarrierLabels, Counter>,
    pub carrier_failovers: Family<CarrierName, Counter>,
    pub carrier_failures: Family<CarrierFailure, Counter>,
    pub carrier_up: Family<CarrierName, Gauge>,
    pub malformed: Counter,
    pub forged_responses: Counter,
    pub config_reloads: Family<ResultLabels, Counter>,
    pub dnc_entries: Family<ListLabels, Gauge>,
    pub dnc_unreadable: Family<ListLabels, Gauge>,
    pub calendar_dated_until: Family<CalendarLabels, Gauge>,
    pub dnc_age: Family<ListLabels, Gauge>,
    pub dnc_max_age: Family<ListLabels, Gauge>,
    pub state_backend_up: Gauge,
    pub state_errors: Counter,
    pub state_redis_restarts: Counter,
    /// Refusals and callees' attempts this instance keeps until Redis
    /// takes them.
    pub state_unshared: Family<KindLabels, Gauge>,
    pub audit_overflow: Counter,
    pub audit_up: Gauge,
    pub audit_write_errors: Counter,
    pub strangers: StrangerMetrics,
    /// Handles on the `sip_messages` and `sip_responses` series, taken
    /// from their family at a series' first use. A counter is an `Arc`:
    /// the handle and the family's series are one, and the exposition
    /// still shows only the series that were counted. Per message this is
    /// an index, where `get_or_create` hashed the labels under the
    /// family's lock (several times per call, on every call).
    messages: [[OnceLock<Counter>; METHODS.len() + 1]; 2],
    responses: [Box<[OnceLock<Counter>]>; 2],
    /// The tenant label of a source in no tenant: `""`.
    no_tenant: Arc<str>,
}

/// The methods with a series of their own; the rest count as `other`.
const METHODS: [&str; 13] = [
    "INVITE",
    "ACK",
    "BYE",
    "CANCEL",
    "OPTIONS",
    "UPDATE",
    "INFO",
    "PRACK",
    "REFER",
    "NOTIFY",
    "REGISTER",
    "SUBSCRIBE",
    "MESSAGE",
];

/// The status codes with a cached handle: every code a message can carry.
const CODES: std::ops::RangeInclusive<u16> = 100..=699;

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("callguard");
        let sip_messages = Family::<MessageLabels, Counter>::default();
        let sip_responses = Family::<ResponseLabels, Counter>::default();
        let transactions_active = Gauge::default();
        let invites = Family::<InviteLabels, Counter>::default();
        // 1 µs .. ~16 ms: decisions are expected in the low microseconds.
        let decision_duration = Histogram::new(
            prometheus_client::metrics::histogram::exponential_buckets(1e-6, 2.0, 15),
        );
        let carrier_responses = Family::<CarrierLabels, Counter>::default();
        let carrier_failovers = Family::<CarrierName, Counter>::default();
        let carrier_failures = Family::<CarrierFailure, Counter>::default();
        let carrier_up = Family::<CarrierName, Gauge>::default();
        registry.register(
            "carrier_up",
            "1 while the carrier answers its OPTIONS pings, 0 once it is out of rotation",
            carrier_up.clone(),
        );
        let malformed = Counter::default();
        let forged_responses = Counter::default();
        let config_reloads = Family::<ResultLabels, Counter>::default();
        // Both series from the start: `increase()` over a series that
        // appears with its first failure misses that failure, and the
        // reload-failure alert would never fire.
        for result in ["success", "failure"] {
            drop(config_reloads.get_or_create(&ResultLabels { result }));
        }
        let dnc_entries = Family::<ListLabels, Gauge>::default();
        let dnc_unreadable = Family::<ListLabels, Gauge>::default();
        let calendar_dated_until = Family::<CalendarLabels, Gauge>::default();
        let dnc_age = Family::<ListLabels, Gauge>::default();
        let dnc_max_age = Family::<ListLabels, Gauge>::default();
        registry.register(
            "dnc_list_age_seconds",
            "Age of each DNC list's data (from midnight UTC of its date), for lists whose date is known",
            dnc_age.clone(),
        );
        registry.register(
            "dnc_list_max_age_seconds",
            "How old each DNC list's data may be (max_age_days); older, the calls it covers are refused dnc_list_stale",
            dnc_max_age.clone(),
        );
        // A timestamp rather than days left: it stays right between
        // reloads, and the alert compares it with time().
        registry.register(
            "holiday_calendar_dated_until_timestamp_seconds",
            "End (Unix time, the midnight UTC after its last day) of the dated holidays of each holiday calendar in use that no formula gives (e.g. Indonesia's yearly decree): add the next dates before it",
            calendar_dated_until.clone(),
        );
        registry.register(
            "dnc_unreadable_lines",
            "Lines of each DNC list file that held no readable number (skipped: check the file)",
            dnc_unreadable.clone(),
        );
        let state_backend_up = Gauge::default();
        state_backend_up.set(1);
        let state_errors = Counter::default();
        let state_redis_restarts = Counter::default();
        registry.register(
            "state_redis_restarts",
            "With the Redis backend: restarts of the Redis server seen (its run_id changed, checked every 10 s); without appendonly a restart loses the refusals and attempts written since its last snapshot",
            state_redis_restarts.clone(),
        );
        let state_unshared = Family::<KindLabels, Gauge>::default();
        registry.register(
            "state_unshared",
            "With the Redis backend: refusals (kind=\"refusals\") and callees' attempts (kind=\"attempts\") this instance keeps because Redis could not take them (down, or its settings may evict keys), shared every second once it can",
            state_unshared.clone(),
        );
        let audit_overflow = Counter::default();
        registry.register(
            "audit_overflow",
            "Audit records not taken: calls refused 503 audit_unavailable (the disk refused the writer's writes, or its queue was full) and lines lost to a full queue",
            audit_overflow.clone(),
        );
        let audit_up = Gauge::default();
        audit_up.set(1);
        registry.register(
            "audit_up",
            "1 while the audit writer's writes succeed, 0 while it retries one the disk refused (full, failing): new calls are refused 503 audit_unavailable meanwhile",
            audit_up.clone(),
        );
        let audit_write_errors = Counter::default();
        registry.register(
            "audit_write_errors",
            "Audit file writes and opens that failed (each retried every 100 ms until the disk takes the lines)",
            audit_write_errors.clone(),
        );
        let stranger_messages = Family::<OutcomeLabels, Counter>::default();
        // One statement each: the guard `get_or_create` returns holds the
        // family's lock until the statement ends.
        let answered = stranger_messages
            .get_or_create(&OutcomeLabels {
                outcome: "answered",
            })
            .clone();
        let dropped = stranger_messages
            .get_or_create(&OutcomeLabels { outcome: "dropped" })
            .clone();
        let strangers = StrangerMetrics {
            answered,
            dropped,
            ..StrangerMetrics::default()
        };
        registry.register(
            "stranger_messages",
            "Messages from sources of no tenant and no carrier: answered within the source's budget (sip.stranger_rate_per_s), or dropped unparsed past it",
            stranger_messages,
        );
        registry.register(
            "stranger_sources",
            "Stranger addresses tracked one by one now (bounded; the others share one budget)",
            strangers.sources.clone(),
        );
        registry.register(
            "stranger_connections",
            "TCP/TLS connections open now from addresses of no tenant and no carrier",
            strangers.connections.clone(),
        );
        registry.register(
            "stranger_connections_refused",
            "TCP/TLS connections from strangers closed at once: past the per-source or total cap",
            strangers.connections_refused.clone(),
        );
        registry.register(
            "state_backend_up",
            "1 while the call state answers, 0 after a failed operation (a Redis call, or a batch the embedded store could not write)",
            state_backend_up.clone(),
        );
        registry.register(
            "state_errors",
            "Call state operations that failed: Redis calls (error or timeout), embedded batches not written",
            state_errors.clone(),
        );
        registry.register(
            "dnc_entries",
            "Numbers on each DNC list (file plus run-time changes)",
            dnc_entries.clone(),
        );
        registry.register(
            "sip_messages",
            "SIP requests received and sent, by method",
            sip_messages.clone(),
        );
        registry.register(
            "sip_responses",
            "SIP responses received and sent, by status code",
            sip_responses.clone(),
        );
        registry.register(
            "transactions_active",
            "SIP transactions in memory",
            transactions_active.clone(),
        );
        registry.register(
            "invites",
            "Initial INVITEs by tenant, decision and rule code",
            invites.clone(),
        );
        registry.register(
            "decision_duration_seconds",
            "Time to decide on an initial INVITE",
            decision_duration.clone(),
        );
        registry.register(
            "carrier_responses",
            "Responses received from each carrier, by code",
            carrier_responses.clone(),
        );
        registry.register(
            "carrier_failovers",
            "Calls moved to the next carrier after this one failed",
            carrier_failovers.clone(),
        );
        registry.register(
            "carrier_failures",
            "INVITEs a carrier never answered (timeout) or that could not reach it (unreachable)",
            carrier_failures.clone(),
        );
        registry.register(
            "sip_malformed",
            "SIP messages dropped or answered 400 as malformed",
            malformed.clone(),
        );
        registry.register(
            "sip_forged_responses",
            "Responses dropped because their branch is not one this proxy made",
            forged_responses.clone(),
        );
        registry.register(
            "config_reloads",
            "Configuration reloads by result",
            config_reloads.clone(),
        );
        Metrics {
            registry,
            sip_messages,
            sip_responses,
            messages: Default::default(),
            responses: [0, 1].map(|_| CODES.map(|_| OnceLock::new()).collect()),
            no_tenant: Arc::from(""),
            transactions_active,
            invites,
            decision_duration,
            carrier_responses,
            carrier_failovers,
            carrier_failures,
            carrier_up,
            malformed,
            forged_responses,
            config_reloads,
            dnc_entries,
            dnc_unreadable,
            calendar_dated_until,
            dnc_age,
            dnc_max_age,
            state_backend_up,
            state_errors,
            state_redis_restarts,
            state_unshared,
            audit_overflow,
            audit_up,
            audit_write_errors,
            strangers,
        }
    }

    /// Sets `callguard_dnc_entries` for every configured list (start,
    /// reload, and after each API change).
    pub fn dnc_sizes(&self, tenants: &crate::gate::Tenants) {
        self.dnc_entries.clear();
        self.dnc_unreadable.clear();
        for l in tenants.dnc_lists() {
            let labels = ListLabels {
                list: l.name().to_owned(),
            };
            self.dnc_entries.get_or_create(&labels).set(l.len() as i64);
            self.dnc_unreadable
                .get_or_create(&labels)
                .set(l.unreadable_lines() as i64);
        }
    }

    /// Exports each carrier's failover and failure counters at 0 (start,
    /// reload): a rate or `increase()` over a series that appears with its
    /// first count misses that count, and a panel shows no data instead of
    /// 0. Targets found later through DNS get theirs at their first count.
    pub fn carriers_known<'a>(&self, names: impl Iterator<Item = &'a str>) {
        for name in names {
            let carrier = name.to_owned();
            let _ = self.carrier_failovers.get_or_create(&CarrierName {
                carrier: carrier.clone(),
            });
            for reason in ["timeout", "unreachable"] {
                let _ = self.carrier_failures.get_or_create(&CarrierFailure {
                    carrier: carrier.clone(),
                    reason,
                });
            }
        }
    }

    /// Sets the DNC lists' data ages at `now` and their maximum ages.
    pub fn dnc_ages(&self, tenants: &crate::gate::Tenants, now: chrono::DateTime<chrono::Utc>) {
        self.dnc_age.clear();
        self.dnc_max_age.clear();
        for l in tenants.dnc_lists() {
            let labels = ListLabels {
                list: l.name().to_owned(),
            };
            let f = l.freshness();
            if let Some(d) = f.date.and_then(|d| d.and_hms_opt(0, 0, 0)) {
                let age = (now - d.and_utc()).num_seconds();
                self.dnc_age.get_or_create(&labels).set(age);
            }
            if let Some(m) = f.max_age_days {
                self.dnc_max_age
                    .get_or_create(&labels)
                    .set(i64::from(m) * 86_400);
            }
        }
    }

    /// Sets `callguard_holiday_calendar_dated_until_timestamp_seconds` for
    /// the calendars the running tenants use (start, reload).
    pub fn dated_calendars(&self, tenants: &crate::gate::Tenants) {
        self.calendar_dated_until.clear();
        for (calendar, until) in tenants.dated_calendars() {
            let end = until
                .succ_opt()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .map_or(i64::MAX, |t| t.and_utc().timestamp());
            self.calendar_dated_until
                .get_or_create(&CalendarLabels { calendar })
                .set(end);
        }
    }

    /// Handles the shared state reports its health through.
    pub fn state_health(&self) -> crate::state::Health {
        crate::state::Health {
            up: self.state_backend_up.clone(),
            errors: self.state_errors.clone(),
            restarts: self.state_redis_restarts.clone(),
        }
    }

    /// Handles the audit trail reports through.
    pub fn audit_meters(&self) -> crate::audit::Meters {
        crate::audit::Meters {
            overflow: self.audit_overflow.clone(),
            up: self.audit_up.clone(),
            write_errors: self.audit_write_errors.clone(),
        }
    }

    /// The text exposition format served on `/metrics`.
    pub fn encode(&self) -> String {
        let mut s = String::with_capacity(8192);
        let _ = prometheus_client::encoding::text::encode(&mut s, &self.registry);
        s
    }
}

/// `m`'s index in [`METHODS`], or `METHODS.len()` (`other`).
fn method_index(m: &[u8]) -> usize {
    METHODS
        .iter()
        .position(|k| k.as_bytes() == m)
        .unwrap_or(METHODS.len())
}

impl Metrics {
    fn count_message(&self, direction: Direction, method: &[u8]) {
        let i = method_index(method);
        self.messages[direction as usize][i]
            .get_or_init(|| {
                let method = METHODS.get(i).copied().unwrap_or("other");
                self.sip_messages
                    .get_or_create(&MessageLabels { direction, method })
                    .clone()
            })
            .inc();
    }

    fn count_response(&self, direction: Direction, code: u16) {
        let labels = || ResponseLabels { direction, code };
        match self.responses[direction as usize].get(usize::from(code.wrapping_sub(*CODES.start())))
        {
            Some(slot) => slot
                .get_or_init(|| self.sip_responses.get_or_create(&labels()).clone())
                .inc(),
            None => self.sip_responses.get_or_create(&labels()).inc(),
        };
    }
}

impl Observer for Metrics {
    fn message_in(&self, method: &[u8]) {
        self.count_message(Direction::In, method);
    }
    fn message_out(&self, method: &[u8]) {
        self.count_message(Direction::Out, method);
    }
    fn response_in(&self, code: u16) {
        self.count_response(Direction::In, code);
    }
    fn response_out(&self, code: u16) {
        self.count_response(Direction::Out, code);
    }
    fn malformed(&self) {
        self.malformed.inc();
    }
    fn forged_response(&self) {
        self.forged_responses.inc();
    }
    fn transactions(&self, delta: i64) {
        self.transactions_active.inc_by(delta);
    }
    fn decision(&self, tenant: Option<&Arc<str>>, decision: Outcome, reason: Option<Code>) {
        let tenant = TenantLabel(tenant.unwrap_or(&self.no_tenant).clone());
        self.invites
            .get_or_create(&InviteLabels {
                tenant,
                decision: decision.as_str(),
                reason: reason.map_or("", Code::as_str),
            })
            .inc();
    }
    fn carrier_response(&self, carrier: &str, code: u16) {
        self.carrier_responses
            .get_or_create(&CarrierLabels {
                carrier: carrier.to_owned(),
                code,
            })
            .inc();
    }
    fn carrier_failed(&self, carrier: &str, reason: &'static str) {
        self.carrier_failures
            .get_or_create(&CarrierFailure {
                carrier: carrier.to_owned(),
                reason,
            })
            .inc();
    }
    fn carrier_up(&self, carrier: &str, up: bool) {
        self.carrier_up
            .get_or_create(&CarrierName {
                carrier: carrier.to_owned(),
            })
            .set(i64::from(up));
    }
    fn failover(&self, carrier: &str) {
        self.carrier_failovers
            .get_or_create(&CarrierName {
                carrier: carrier.to_owned(),
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of the series `name{labels}` in the exposition, if shown.
    fn series(m: &Metrics, name_and_labels: &str) -> Option<u64> {
        m.encode()
            .lines()
            .find_map(|l| l.strip_prefix(name_and_labels)?.trim().parse().ok())
    }

    /// Counted through the cached handles, each series shows its count in
    /// the exposition, and only series that were counted are shown.
    #[test]
    fn messages_and_responses_count_into_their_series() {
        let m = Metrics::new();
        for _ in 0..3 {
            m.message_in(b"INVITE");
        }
        m.message_out(b"INVITE");
        m.message_in(b"FOO");
        m.message_in(b"PUBLISH");
        m.response_out(603);
        m.response_out(603);
        m.response_in(200);
        m.response_in(699);
        m.response_in(100);
        // Outside what a message can carry: counted, not cached.
        m.response_in(42);
        let msg = |d: &str, method: &str| {
            series(
                &m,
                &format!(r#"callguard_sip_messages_total{{direction="{d}",method="{method}"}}"#),
            )
        };
        let resp = |d: &str, code: u16| {
            series(
                &m,
                &format!(r#"callguard_sip_responses_total{{direction="{d}",code="{code}"}}"#),
            )
        };
        assert_eq!(msg("in", "INVITE"), Some(3));
        assert_eq!(msg("out", "INVITE"), Some(1));
        assert_eq!(msg("in", "other"), Some(2));
        assert_eq!(msg("in", "ACK"), None, "never counted, never shown");
        assert_eq!(msg("out", "other"), None);
        assert_eq!(resp("out", 603), Some(2));
        assert_eq!(resp("in", 603), None);
        assert_eq!(resp("in", 200), Some(1));
        assert_eq!(resp("in", 699), Some(1));
        assert_eq!(resp("in", 100), Some(1));
        assert_eq!(resp("in", 42), Some(1));
    }
}
