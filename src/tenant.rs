//! Tenants: the companies whose dialers use the trunk, recognised by the
//! source address of their INVITEs, each with its compiled policy. An
//! INVITE from anywhere else is never forwarded (no open relay).

use chrono::{DateTime, Utc, Weekday};
use ipnet::IpNet;
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use crate::config::{Config, RuleSetConfig, WeekConfig};
use crate::dnc::{self, ConsentList, DncList, LoadReport};
use crate::numbering::Country;
use crate::policy::{
    self, CallerIdRule, Enforce, Facts, Outcome, Responses, Rule, RuleSet, TenantPolicy, RULES,
};
use crate::proxy::{Gatekeeper, Peer, Rejection, Verdict};
use crate::schedule::{self, Calendar, Weekly};
use crate::sip::message::{name_addr_uri, HeaderName};
use crate::sip::{Message, Uri};
use crate::transport::tls::PeerNames;

/// Source networks to tenants, most specific prefix first.
#[derive(Debug, Default)]
pub struct Tenants {
    nets: Vec<(IpNet, usize)>,
    /// Client-certificate names (lower case) to tenants.
    tls_names: HashMap<String, usize>,
    tenants: Vec<Arc<TenantPolicy>>,
    /// Every configured DNC list by name, with the country its national
    /// numbers are read in (admin API).
    lists: HashMap<String, (DncList, Country)>,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    List(#[from] dnc::ListError),
    #[error("{0}")]
    Invalid(String),
}

/// One list loaded, for the startup log and `config check`.
#[derive(Debug, Clone)]
pub struct ListLoaded {
    pub kind: &'static str,
    pub name: String,
    pub report: LoadReport,
}

/// A schedule's error: the key it concerns (within the schedule table) and
/// what is wrong.
pub type WeekError = (&'static str, String);

pub fn compile_week(w: &WeekConfig) -> Result<Weekly, WeekError> {
    if let Some(q) = &w.quiet_hours {
        let has_days = [&w.mon, &w.tue, &w.wed, &w.thu, &w.fri, &w.sat, &w.sun]
            .iter()
            .any(|d| d.is_some());
        if has_days {
            return Err((
                "quiet_hours",
                "use either day blocks or quiet_hours, not both".into(),
            ));
        }
        let (start, end) = schedule::parse_span(q).map_err(|e| ("quiet_hours", e.to_string()))?;
        if start == end || (start == 0 && end == 1440) || (start == 1440 && end == 0) {
            return Err((
                "quiet_hours",
                format!("`{q}`: quiet hours that cover the whole day (or none of it) leave no hour to call; write the blocked window, e.g. \"20:00-10:00\""),
            ));
        }
        return Ok(Weekly::from_quiet_hours((start % 1440, end % 1440)));
    }
    let open = match w.unlisted_days.as_deref() {
        None | Some("closed") => false,
        Some("open") => true,
        Some(o) => {
            return Err((
                "unlisted_days",
                format!("unlisted_days must be `closed` or `open`, not `{o}`"),
            ))
        }
    };
    let mut days = Vec::new();
    for (d, key, blocks) in [
        (Weekday::Mon, "mon", &w.mon),
        (Weekday::Tue, "tue", &w.tue),
        (Weekday::Wed, "wed", &w.wed),
        (Weekday::Thu, "thu", &w.thu),
        (Weekday::Fri, "fri", &w.fri),
        (Weekday::Sat, "sat", &w.sat),
        (Weekday::Sun, "sun", &w.sun),
    ] {
        if let Some(blocks) = blocks {
            let mut b = Vec::new();
            for s in blocks {
                let (start, end) = schedule::parse_span(s).map_err(|e| (key, e.to_string()))?;
                if end <= start {
                    return Err((key, format!("`{s}`: a day block must end after it starts (use quiet_hours across midnight)")));
                }
                b.push((start, end));
            }
            days.push((d, b));
        }
    }
    Ok(Weekly::from_days(&days, open))
}

/// A rule set's error: the key it concerns (dotted, within the rule set's
/// table) and what is wrong.
pub fn compile_rule_set(name: &str, c: &RuleSetConfig) -> Result<RuleSet, (String, String)> {
    let mut rs = policy::builtin_rule_set(&c.base)
        .ok_or_else(|| ("base".to_owned(), format!("unknown base `{}`", c.base)))?;
    rs.name = name.to_owned();
    if let Some(h) = &c.hours {
        rs.window.legal = compile_week(h).map_err(|(k, m)| (format!("hours.{k}"), m))?;
    }
    let err = |k: &str, m: String| (k.to_owned(), m);
    match c.holidays.as_deref() {
        None => {}
        Some("fr") => {
            rs.window.calendar = Calendar::France {
                alsace_moselle: false,
            }
        }
        Some("none") => rs.window.calendar = Calendar::None,
        Some(o) => {
            return Err(err(
                "holidays",
                format!("holidays must be `fr` or `none`, not `{o}`"),
            ))
        }
    }
    match c.caller_id.as_deref() {
        None => {}
        Some("fr") => rs.caller_id = CallerIdRule::France,
        Some("none") => rs.caller_id = CallerIdRule::None,
        Some(o) => {
            return Err(err(
                "caller_id",
                format!("caller_id must be `fr` or `none`, not `{o}`"),
            ))
        }
    }
    match c.consent_required_since.as_deref() {
        None => {}
        Some("none") => rs.consent_since = None,
        Some(d) => {
            rs.consent_since = Some(chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").map_err(
                |_| {
                    err(
                        "consent_required_since",
                        format!("consent_required_since `{d}` is not YYYY-MM-DD"),
                    )
                },
            )?)
        }
    }
    match c.refusal_cooloff_days {
        None => {}
        Some(0) => rs.cooloff_days = None,
        Some(d) if d > 3650 => {
            return Err(err(
                "refusal_cooloff_days",
                format!("refusal_cooloff_days {d} is over ten years"),
            ))
        }
        Some(d) => rs.cooloff_days = Some(d),
    }
    match c.frequency_cap {
        None => {}
        Some(c) if c.attempts == 0 => rs.cap = None,
        Some(c) if c.window_hours == 0 || c.window_hours > 24 * 366 => {
            return Err(err(
                "frequency_cap.window_hours",
                format!(
                    "frequency_cap.window_hours must be 1 to {}, not {}",
                    24 * 366,
                    c.window_hours
                ),
            ))
        }
        Some(c) => {
            rs.cap = Some(policy::Cap {
                attempts: c.attempts,
                window: chrono::Duration::hours(c.window_hours as i64),
            })
        }
    }
    Ok(rs)
}

fn enforcement(table: &std::collections::BTreeMap<String, Enforce>) -> [Enforce; RULES] {
    Rule::ALL.map(|r| table.get(r.code()).copied().unwrap_or(Enforce::Block))
}

impl Tenants {
    /// Compiles every tenant and loads the lists. Relative list paths are
    /// read from `base_dir` (the config file's directory). With a state
    /// store, each DNC list carries its run-time changes.
    pub fn build(
        cfg: &Config,
        base_dir: &Path,
        state: Option<&crate::state::Store>,
    ) -> Result<(Tenants, Vec<ListLoaded>), BuildError> {
        let mut loaded = Vec::new();
        let mut lists = HashMap::new();
        for l in &cfg.dnc_lists {
            let country = l.country.unwrap_or(Country::FR);
            let (set, report) = dnc::load_numbers(&base_dir.join(&l.file), country)?;
            loaded.push(ListLoaded {
                kind: "dnc",
                name: l.name.clone(),
                report: report.clone(),
            });
            let delta = state.map(|s| s.dnc_delta(&l.name)).unwrap_or_default();
            let list = DncList::new(l.name.as_str().into(), Arc::new(set), delta)
                .with_unreadable(report.invalid);
            lists.insert(l.name.clone(), (list, country));
        }
        let mut consent: HashMap<&str, Arc<ConsentList>> = HashMap::new();
        for l in &cfg.consent_lists {
            let (list, report) =
                dnc::load_consent(&base_dir.join(&l.file), l.country.unwrap_or(Country::FR))?;
            loaded.push(ListLoaded {
                kind: "consent",
                name: l.name.clone(),
                report,
            });
            consent.insert(&l.name, Arc::new(list));
        }
        let mut responses = Responses::default();
        for (code, r) in &cfg.responses {
            if let Some(rule) = Rule::from_code(code) {
                let phrase = r
                    .phrase
                    .clone()
                    .unwrap_or_else(|| rule.default_response().1.to_owned());
                responses.by_rule[Rule::ALL.iter().position(|x| *x == rule).unwrap_or(0)] =
                    (r.status, phrase);
            }
        }
        let responses = Arc::new(responses);

        let mut t = Tenants::default();
        for (i, tc) in cfg.tenants.iter().enumerate() {
            let id = tc.id.get_ref().as_str();
            let mut rules = match cfg.rule_sets.get(&tc.rule_set) {
                Some(custom) => compile_rule_set(&tc.rule_set, custom).map_err(|(k, m)| {
                    BuildError::Invalid(format!("rule_set.{}.{k}: {m}", tc.rule_set))
                })?,
                None => policy::builtin_rule_set(&tc.rule_set).ok_or_else(|| {
                    BuildError::Invalid(format!(
                        "tenant `{id}`: unknown rule set `{}`",
                        tc.rule_set
                    ))
                })?,
            };
            if tc.alsace_moselle {
                if let Calendar::France { .. } = rules.window.calendar {
                    rules.window.calendar = Calendar::France {
                        alsace_moselle: true,
                    };
                }
            }
            if let Some(w) = &tc.schedule {
                rules.window.tenant = Some(compile_week(w).map_err(|(k, m)| {
                    BuildError::Invalid(format!("tenant `{id}`: schedule.{k}: {m}"))
                })?);
            }
            let caller_ids = tc
                .caller_ids
                .iter()
                .map(|c| {
                    policy::caller_prefix(c, tc.country).ok_or_else(|| {
                        BuildError::Invalid(format!("tenant `{id}`: bad caller ID `{c}`"))
                    })
                })
                .collect::<Result<_, _>>()?;
            let policy = TenantPolicy {
                id: id.into(),
                country: tc.country,
                rules,
                default_mode: tc.default_mode,
                mode_header: tc.mode_header.clone(),
                campaign: tc.campaign,
                caller_ids,
                dnc: tc
                    .dnc_lists
                    .iter()
                    .filter_map(|n| lists.get(n.as_str()).map(|(l, _)| l.clone()))
                    .collect(),
                consent: tc
                    .consent_lists
                    .iter()
                    .filter_map(|n| consent.get(n.as_str()).cloned())
                    .collect(),
                enforce_automated: enforcement(&tc.enforcement.automated),
                enforce_manual: {
                    // Manual mode inherits the automated settings it does not override.
                    let mut m = tc.enforcement.automated.clone();
                    m.extend(tc.enforcement.manual.clone());
                    enforcement(&m)
                },
                responses: responses.clone(),
            };
            t.tenants.push(Arc::new(policy));
            for net in &tc.sources {
                t.nets.push((net.trunc(), i));
            }
            for name in &tc.tls_names {
                t.tls_names.insert(name.to_ascii_lowercase(), i);
            }
        }
        t.nets
            .sort_by_key(|(n, _)| std::cmp::Reverse(n.prefix_len()));
        t.lists = lists;
        Ok((t, loaded))
    }

    pub fn find(&self, ip: IpAddr) -> Option<&Arc<TenantPolicy>> {
        // IPv4-mapped IPv6 sources (dual-stack sockets) match IPv4 ranges.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        self.nets
            .iter()
            .find(|(n, _)| n.contains(&ip))
            .map(|(_, i)| &self.tenants[*i])
    }

    /// The tenant of a peer: by the names of the verified client
    /// certificate of its TLS connection (or, for a destination, of a TLS
    /// connection open from its host), else by its source network.
    pub fn find_peer(&self, peer: &Peer, names: Option<&PeerNames>) -> Option<&Arc<TenantPolicy>> {
        if peer.transport == crate::proxy::Transport::Tls && !self.tls_names.is_empty() {
            let ns = names.and_then(|n| n.get(&peer.addr).or_else(|| n.by_ip(peer.addr.ip())));
            if let Some(&i) = ns
                .iter()
                .flat_map(|ns| ns.iter())
                .find_map(|n| self.tls_names.get(&**n))
            {
                return Some(&self.tenants[i]);
            }
        }
        self.find(peer.addr.ip())
    }

    pub fn by_id(&self, id: &str) -> Option<&Arc<TenantPolicy>> {
        self.tenants.iter().find(|t| &*t.id == id)
    }

    pub fn len(&self) -> usize {
        self.tenants.len()
    }

    pub fn dnc_list(&self, name: &str) -> Option<&(DncList, Country)> {
        self.lists.get(name)
    }

    pub fn dnc_lists(&self) -> impl Iterator<Item = &DncList> {
        self.lists.values().map(|(l, _)| l)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<TenantPolicy>> {
        self.tenants.iter()
    }

    /// The longest attempt window and refusal cool-off over all tenants:
    /// how long the state store must keep entries.
    pub fn retention(&self) -> (chrono::Duration, chrono::Duration) {
        let window = self
            .tenants
            .iter()
            .filter_map(|t| t.rules.cap.map(|c| c.window))
            .max()
            .unwrap_or_default();
        let cooloff = self
            .tenants
            .iter()
            .filter_map(|t| t.rules.cooloff_days)
            .max()
            .unwrap_or(0);
        (window, chrono::Duration::days(cooloff as i64 + 1))
    }

    pub fn is_empty(&self) -> bool {
        self.tenants.is_empty()
    }
}

/// The policy clock. `Shifted` serves `serve --at`: testers exercise the
/// hour rules at any time of day; never for production.
#[derive(Debug, Clone, Copy)]
pub enum Clock {
    System,
    Shifted(chrono::Duration),
}

impl Clock {
    /// A clock that reads `at` now and runs on from there.
    pub fn starting_at(at: DateTime<Utc>) -> Clock {
        Clock::Shifted(at - Utc::now())
    }
    pub fn now(&self) -> DateTime<Utc> {
        match self {
            Clock::System => Utc::now(),
            Clock::Shifted(d) => Utc::now() + *d,
        }
    }
}

/// Rule 1 of the decision table: the source must belong to a tenant.
pub fn source_not_authorized(source: &Peer) -> Rejection {
    Rejection {
        tenant: None,
        status: 403,
        phrase: "Source Not Authorized".into(),
        code: "source_not_authorized",
        explanation: format!(
            "source {} is not in any tenant's dialer networks",
            source.addr.ip()
        ),
        retry_after: None,
    }
}

fn uri_user(v: &[u8]) -> Option<&str> {
    let uri = Uri::parse(name_addr_uri(v))?;
    if uri.host.eq_ignore_ascii_case(b"anonymous.invalid") {
        return Some("anonymous");
    }
    std::str::from_utf8(uri.user.unwrap_or_default()).ok()
}

/// The call's facts as the INVITE states them: callee from the
/// Request-URI; caller from the first P-Asserted-Identity, else From; every
/// other identity the carrier will see (further P-Asserted-Identity values,
/// P-Preferred-Identity, Remote-Party-ID, From when it holds a number) to
/// be checked as well.
pub fn facts<'a>(invite: &'a Message, mode_header: &str) -> Facts<'a> {
    let callee = invite.request_uri().and_then(uri_user).unwrap_or("");
    let mut identities = invite
        .headers_by_name("P-Asserted-Identity")
        .flat_map(crate::sip::message::split_commas)
        // A value that is not a URI is kept as written: it fails the
        // caller-ID check instead of being skipped.
        .map(|v| {
            uri_user(v)
                .or_else(|| std::str::from_utf8(v).ok())
                .unwrap_or("?")
        });
    let from = invite.header(HeaderName::From).and_then(uri_user);
    // Identities a carrier may also present: P-Preferred-Identity (RFC
    // 3325, a hint some networks assert as is) and Remote-Party-ID (the
    // pre-standard header many trunks still read the calling number from).
    let others = ["P-Preferred-Identity", "Remote-Party-ID"]
        .into_iter()
        .flat_map(|h| invite.headers_by_name(h))
        .flat_map(crate::sip::message::split_commas)
        .filter(|v| {
            // Remote-Party-ID also names the called party and diversions.
            crate::sip::message::header_param(v, b"party")
                .is_none_or(|p| p.eq_ignore_ascii_case(b"calling"))
        })
        .map(|v| {
            uri_user(v)
                .or_else(|| std::str::from_utf8(v).ok())
                .unwrap_or("?")
        });
    let mut also_presented = smallvec::SmallVec::new();
    let caller = match identities.next() {
        Some(first) => {
            also_presented.extend(identities);
            also_presented.extend(others);
            // From is presented too when it holds a number (a name such
            // as `dialer` or `anonymous` is not a caller ID).
            if let Some(f) = from.filter(|f| looks_like_number(f)) {
                also_presented.push(f);
            }
            Some(first)
        }
        None => {
            also_presented.extend(others);
            from
        }
    }
    .filter(|u| !u.is_empty());
    let withheld = invite.headers_by_name("Privacy").any(|v| {
        v.split(|&c| c == b';')
            .map(|t| t.trim_ascii())
            .any(|t| t.eq_ignore_ascii_case(b"id") || t.eq_ignore_ascii_case(b"user"))
    }) || invite
        .headers_by_name("Remote-Party-ID")
        .flat_map(crate::sip::message::split_commas)
        .any(|v| {
            crate::sip::message::header_param(v, b"privacy")
                .is_some_and(|p| p.eq_ignore_ascii_case(b"full") || p.eq_ignore_ascii_case(b"uri"))
        });
    let mode = invite
        .header_by_name(mode_header)
        .and_then(|v| std::str::from_utf8(v).ok());
    Facts {
        caller,
        also_presented,
        withheld,
        callee,
        mode,
    }
}

/// A user part that is written as a telephone number (digits, with an
/// optional `+` and visual separators).
fn looks_like_number(u: &str) -> bool {
    let u = u.trim();
    let digits = u.trim_start_matches('+');
    !digits.is_empty()
        && digits.starts_with(|c: char| c.is_ascii_digit())
        && digits
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '-' | '.' | ' ' | '(' | ')'))
}

/// A refusal signalled by the dialer on a BYE (`X-Disposition: refused`).
#[derive(Debug, Clone, Default)]
pub struct RefusalSignal {
    /// Header name; empty = ignore BYEs.
    pub header: String,
    /// Values that mean "refused", lower-case.
    pub values: Vec<String>,
}

impl RefusalSignal {
    pub fn from_config(c: &crate::config::State) -> RefusalSignal {
        RefusalSignal {
            header: c.refusal_header.trim().to_owned(),
            values: c
                .refusal_values
                .iter()
                .map(|v| v.trim().to_ascii_lowercase())
                .collect(),
        }
    }

    fn matches(&self, req: &Message) -> bool {
        !self.header.is_empty()
            && req
                .header_by_name(&self.header)
                .and_then(|v| std::str::from_utf8(v).ok())
                .is_some_and(|v| {
                    let v = v.split(';').next().unwrap_or("").trim();
                    self.values.iter().any(|x| v.eq_ignore_ascii_case(x))
                })
    }
}

/// The gatekeeper the proxy core calls for each initial INVITE.
pub struct Gate {
    pub tenants: Tenants,
    pub clock: Clock,
    pub audit: Option<crate::audit::Audit>,
    /// Refusals and attempt counts; without it rules 6 and 9 see no history.
    pub state: Option<crate::state::Store>,
    pub refusal: RefusalSignal,
    /// Hash of the config text, written in every audit line.
    pub config_version: Arc<str>,
    /// Refusals and attempts shared with other instances (Redis). When
    /// set, it replaces `state` for rules 6 and 9.
    pub shared: Option<SharedPolicy>,
    /// Where the time each decision takes is observed
    /// (`callguard_decision_duration_seconds`).
    pub durations: Option<prometheus_client::metrics::histogram::Histogram>,
    /// Client-certificate names of the TLS connections open now.
    pub peer_names: Option<Arc<PeerNames>>,
}

/// Deciding with the shared state: how to behave when it is unavailable.
#[derive(Clone)]
pub struct SharedPolicy {
    pub store: crate::state::shared::Shared,
    pub fail_open: bool,
    pub retry_after: u64,
}

/// The facts of a call, owned, for a decision that outlives the message.
struct OwnedFacts {
    caller: Option<Box<str>>,
    also_presented: Vec<Box<str>>,
    withheld: bool,
    callee: Box<str>,
    mode: Option<Box<str>>,
}

impl OwnedFacts {
    fn new(f: &Facts<'_>) -> OwnedFacts {
        OwnedFacts {
            caller: f.caller.map(Into::into),
            also_presented: f.also_presented.iter().map(|&c| c.into()).collect(),
            withheld: f.withheld,
            callee: f.callee.into(),
            mode: f.mode.map(Into::into),
        }
    }
    fn get(&self) -> Facts<'_> {
        Facts {
            caller: self.caller.as_deref(),
            also_presented: self.also_presented.iter().map(|c| &**c).collect(),
            withheld: self.withheld,
            callee: &self.callee,
            mode: self.mode.as_deref(),
        }
    }
}

impl SharedPolicy {
    /// Whether tenant `t`'s rules need the state at all.
    fn needed(t: &TenantPolicy) -> bool {
        t.rules.cooloff_days.is_some() || t.rules.cap.is_some()
    }

    /// The decision for one call with its history read from Redis; see
    /// [`Gate::decide`]. If Redis fails, the rules that need no state
    /// still apply; a call they allow is refused `503 policy_unavailable`
    /// (fail-closed) or forwarded with a `policy_unavailable` warning
    /// (fail-open).
    pub async fn decide(
        &self,
        t: &TenantPolicy,
        facts: &Facts<'_>,
        now: DateTime<Utc>,
        count: bool,
    ) -> policy::Decision {
        let Some(callee) = crate::numbering::parse(facts.callee, t.country).ok() else {
            return t.decide(facts, &policy::History::default(), now);
        };
        let window = t.rules.cap.map(|c| c.window);
        let read = self
            .store
            .read(&t.id, callee, t.rules.cooloff_days.is_some(), window, now)
            .await;
        let read = match read {
            Ok(r) => r,
            Err(e) => return self.unavailable(t.decide(facts, &Default::default(), now), &e),
        };
        let history = policy::History {
            refused_at: read.refused_at,
            attempts: Default::default(),
        };
        let mut d = t.decide(facts, &history, now);
        if let (Some(cap), Some(callee)) = (t.rules.cap, d.callee) {
            let prior = if count && d.decision != Outcome::Reject {
                let enforce = t.enforcement(d.mode, Rule::FrequencyCap) == Enforce::Block;
                match self.store.count(&t.id, callee, now, cap, enforce).await {
                    Ok(p) => p,
                    Err(e) => return self.unavailable(d, &e),
                }
            } else {
                read.attempts
            };
            t.fold_cap(&mut d, callee, &prior, now);
        }
        d
    }

    fn unavailable(
        &self,
        mut d: policy::Decision,
        e: &crate::state::shared::SharedError,
    ) -> policy::Decision {
        if d.decision == Outcome::Reject {
            // Refused whatever the state says.
            return d;
        }
        d.reason = Some("policy_unavailable");
        if self.fail_open {
            d.decision = Outcome::Warn;
            d.explanation = format!(
                "call state unavailable ({e}): forwarded without checking refusals and attempts (fail_open)"
            )
            .into();
        } else {
            d.decision = Outcome::Reject;
            d.status = 503;
            d.phrase = "Service Unavailable".into();
            d.explanation =
                format!("call state unavailable ({e}): refusals and attempts cannot be checked")
                    .into();
            d.retry_after = Some(self.retry_after);
        }
        d
    }
}

impl Gate {
    fn audit(
        &self,
        invite: &Message,
        source: &Peer,
        decision: Option<policy::Decision>,
        at: DateTime<Utc>,
    ) {
        if let Some(a) = &self.audit {
            a.record(crate::audit::Record {
                call_id: String::from_utf8_lossy(invite.call_id().unwrap_or_default()).into_owned(),
                source: source.addr,
                decision,
                at,
                config_version: self.config_version.clone(),
            });
        }
    }

    /// The decision for one call of tenant `t`, with its history read from
    /// the state. `count` = the call will be forwarded if allowed, so its
    /// attempt is counted (atomically with the cap check); `false` for
    /// `POST /v1/check`, which only asks.
    pub fn decide(
        &self,
        t: &TenantPolicy,
        facts: &Facts<'_>,
        now: DateTime<Utc>,
        count: bool,
    ) -> policy::Decision {
        let callee = crate::numbering::parse(facts.callee, t.country).ok();
        // Attempts are read below, where the call is counted: one map
        // access per call, under the entry lock that makes it atomic.
        let history = policy::History {
            refused_at: self
                .state
                .as_ref()
                .zip(callee)
                .and_then(|(s, c)| s.refused_at(&t.id, c)),
            attempts: Default::default(),
        };
        let mut d = t.decide(facts, &history, now);
        if let (Some(s), Some(cap), Some(callee)) = (&self.state, t.rules.cap, d.callee) {
            let prior = if count && d.decision != Outcome::Reject {
                let enforce = t.enforcement(d.mode, Rule::FrequencyCap) == Enforce::Block;
                s.count(&t.id, callee, now, cap, enforce)
            } else {
                s.attempts(&t.id, callee)
            };
            t.fold_cap(&mut d, callee, &prior, now);
        }
        d
    }

    /// The decision for the admin API: from the shared state when there is
    /// one, else as [`Gate::decide`].
    pub async fn decide_any(
        &self,
        t: &TenantPolicy,
        facts: &Facts<'_>,
        now: DateTime<Utc>,
    ) -> policy::Decision {
        match &self.shared {
            Some(s) => s.decide(t, facts, now, false).await,
            None => self.decide(t, facts, now, false),
        }
    }
}

impl Gatekeeper for Gate {
    fn check(&self, invite: &Message, source: &Peer) -> Verdict {
        let started = std::time::Instant::now();
        let verdict = self.check_untimed(invite, source, started);
        if !matches!(verdict, Verdict::Pending(_)) {
            self.observe_duration(started);
        }
        verdict
    }

    fn tenant_of(&self, peer: &Peer) -> Option<Arc<str>> {
        self.tenants
            .find_peer(peer, self.peer_names.as_deref())
            .map(|t| t.id.clone())
    }

    /// A BYE from a tenant's dialer that says the callee refused: the
    /// callee is the dialog's remote party, named in the To header.
    fn in_dialog(&self, req: &Message, source: &Peer) {
        if req.method() != Some(&b"BYE"[..]) || !self.refusal.matches(req) {
            return;
        }
        let Some(t) = self.tenants.find_peer(source, self.peer_names.as_deref()) else {
            return;
        };
        let callee = req
            .header(HeaderName::To)
            .and_then(uri_user)
            .and_then(|u| crate::numbering::parse(u, t.country).ok());
        match callee {
            Some(c) => {
                tracing::info!(tenant = %t.id, callee = %c, "refusal signalled on BYE");
                let now = self.clock.now();
                if let Some(shared) = &self.shared {
                    let (store, id, keep) = (shared.store.clone(), t.id.clone(), t.refusal_keep());
                    // Written in the background: the BYE is relayed at once.
                    if let Ok(rt) = tokio::runtime::Handle::try_current() {
                        rt.spawn(async move {
                            if let Err(e) = store.record_refusal(&id, c, now, keep).await {
                                tracing::error!(tenant = %id, callee = %c, error = %e, "refusal signalled on BYE not recorded");
                            }
                        });
                    }
                } else if let Some(state) = &self.state {
                    state.record_refusal_soon(&t.id, c, now);
                }
            }
            None => tracing::warn!(
                tenant = %t.id,
                "refusal signalled on a BYE whose To header holds no valid number; ignored"
            ),
        }
    }
}

impl Gate {
    fn observe_duration(&self, started: std::time::Instant) {
        if let Some(h) = &self.durations {
            h.observe(started.elapsed().as_secs_f64());
        }
    }

    fn check_untimed(
        &self,
        invite: &Message,
        source: &Peer,
        started: std::time::Instant,
    ) -> Verdict {
        let now = self.clock.now();
        let Some(t) = self.tenants.find_peer(source, self.peer_names.as_deref()) else {
            self.audit(invite, source, None, now);
            return Verdict::Reject(source_not_authorized(source));
        };
        let f = facts(invite, &t.mode_header);
        if let Some(shared) = self.shared.as_ref().filter(|_| SharedPolicy::needed(t)) {
            // Redis is I/O: the core parks the call and the driver runs this.
            let job = PendingCall {
                shared: shared.clone(),
                tenant: t.clone(),
                facts: OwnedFacts::new(&f),
                now,
                audit: self.audit.clone(),
                call_id: String::from_utf8_lossy(invite.call_id().unwrap_or_default()).into_owned(),
                source: source.addr,
                config_version: self.config_version.clone(),
                started,
                durations: self.durations.clone(),
            };
            return Verdict::Pending(crate::proxy::Pending(Box::pin(job.run())));
        }
        let d = self.decide(t, &f, now, true);
        let verdict = Self::verdict(t, &d);
        self.audit(invite, source, Some(d), now);
        verdict
    }
}

/// A call waiting for the shared state: owns what the decision and its
/// audit line need, since the INVITE stays with the core.
struct PendingCall {
    shared: SharedPolicy,
    tenant: Arc<TenantPolicy>,
    facts: OwnedFacts,
    now: DateTime<Utc>,
    audit: Option<crate::audit::Audit>,
    call_id: String,
    source: std::net::SocketAddr,
    config_version: Arc<str>,
    /// When the INVITE came: the decision's duration includes the wait.
    started: std::time::Instant,
    durations: Option<prometheus_client::metrics::histogram::Histogram>,
}

impl PendingCall {
    async fn run(self) -> Verdict {
        let d = self
            .shared
            .decide(&self.tenant, &self.facts.get(), self.now, true)
            .await;
        let verdict = Gate::verdict(&self.tenant, &d);
        if let Some(h) = &self.durations {
            h.observe(self.started.elapsed().as_secs_f64());
        }
        if let Some(a) = &self.audit {
            a.record(crate::audit::Record {
                call_id: self.call_id,
                source: self.source,
                decision: Some(d),
                at: self.now,
                config_version: self.config_version,
            });
        }
        verdict
    }
}

impl Gate {
    fn verdict(t: &TenantPolicy, d: &policy::Decision) -> Verdict {
        match d.decision {
            Outcome::Allow => Verdict::Forward {
                tenant: t.id.clone(),
                headers: Vec::new(),
                warn: None,
            },
            Outcome::Warn => Verdict::Forward {
                tenant: t.id.clone(),
                headers: vec![(
                    "X-Callguard-Warning".into(),
                    format!("{}; {}", d.reason.unwrap_or(""), d.explanation),
                )],
                warn: d.reason,
            },
            Outcome::Reject => Verdict::Reject(Rejection {
                tenant: Some(t.id.clone()),
                status: d.status,
                phrase: d.phrase.to_string(),
                code: d.reason.unwrap_or("policy"),
                explanation: d.explanation.to_string(),
                retry_after: d.retry_after,
            }),
        }
    }
}

#[cfg(test)]
mod tests;
