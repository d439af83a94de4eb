//! The decision on an initial INVITE: pure, no I/O. Given a tenant's
//! compiled rules, the call's facts and an instant, [`TenantPolicy::decide`]
//! returns whether to forward or reject and why, with every rule that
//! failed (for the audit trail) and when to retry.
//!
//! Rules are checked in the contract's order; the response reports the
//! first failure whose enforcement is `block`. A failure enforced as
//! `warn` lets the call through, tagged.

use chrono::{DateTime, Datelike, Timelike, Utc, Weekday};
use chrono_tz::Tz;
use smallvec::SmallVec;
use std::borrow::Cow;
use std::fmt::{self, Write as _};
use std::sync::Arc;

pub use crate::codes::{Code, Outcome};
use crate::dnc::{ConsentList, DncList};
use crate::numbering::{self, CallerNumber, Country, FrCategory, E164};
use crate::rules::applied::{Applied, Lookup, TenantRules};
use crate::rules::{CallerIdCheck, CallerIdRule, NumberPrefix};
use crate::schedule::{write_2d, write_hm, Closed};

/// Rule codes, in decision order (contract: `X-Callguard-Reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rule {
    InvalidCallee,
    NoRuleSet,
    AnonymousCallerId,
    CallerIdCategory,
    Dnc,
    DncListStale,
    RefusalCooloff,
    NoConsent,
    Closure,
    PublicHoliday,
    Weekend,
    OutsideHours,
    FrequencyCap,
}

/// Number of rules a tenant configures (source authorisation is not one:
/// it decides which tenant applies).
pub const RULES: usize = 13;

impl Rule {
    pub const ALL: [Rule; RULES] = [
        Rule::InvalidCallee,
        Rule::NoRuleSet,
        Rule::AnonymousCallerId,
        Rule::CallerIdCategory,
        Rule::Dnc,
        Rule::DncListStale,
        Rule::RefusalCooloff,
        Rule::NoConsent,
        Rule::Closure,
        Rule::PublicHoliday,
        Rule::Weekend,
        Rule::OutsideHours,
        Rule::FrequencyCap,
    ];

    pub fn code(self) -> Code {
        match self {
            Rule::InvalidCallee => Code::InvalidCallee,
            Rule::NoRuleSet => Code::NoRuleSet,
            Rule::AnonymousCallerId => Code::AnonymousCallerId,
            Rule::CallerIdCategory => Code::CallerIdCategory,
            Rule::Dnc => Code::Dnc,
            Rule::DncListStale => Code::DncListStale,
            Rule::RefusalCooloff => Code::RefusalCooloff,
            Rule::NoConsent => Code::NoConsent,
            Rule::Closure => Code::Closure,
            Rule::PublicHoliday => Code::PublicHoliday,
            Rule::Weekend => Code::Weekend,
            Rule::OutsideHours => Code::OutsideHours,
            Rule::FrequencyCap => Code::FrequencyCap,
        }
    }

    pub fn from_code(s: &str) -> Option<Rule> {
        Rule::ALL.into_iter().find(|r| r.code().as_str() == s)
    }

    /// Default status and reason phrase (contract's decision table).
    pub fn default_response(self) -> (u16, &'static str) {
        match self {
            Rule::InvalidCallee => (484, "Address Incomplete"),
            Rule::NoRuleSet => (403, "No Rule Set For Callee"),
            Rule::AnonymousCallerId => (433, "Anonymity Disallowed"),
            Rule::CallerIdCategory => (403, "Caller ID Not Allowed"),
            Rule::Dnc => (603, "Do Not Call"),
            // A failure of callguard's data, not of the call: 5xx, and no
            // Retry-After (it lasts until the list is refreshed).
            Rule::DncListStale => (503, "DNC List Out Of Date"),
            Rule::RefusalCooloff => (603, "Callee Refused Recently"),
            Rule::NoConsent => (608, "No Consent On Record"),
            Rule::Closure => (480, "Jurisdiction Closed"),
            Rule::PublicHoliday => (480, "Public Holiday"),
            Rule::Weekend => (480, "Weekend"),
            Rule::OutsideHours => (480, "Outside Contact Hours"),
            Rule::FrequencyCap => (480, "Contact Limit Reached"),
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

impl serde::Serialize for Rule {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.code().as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Enforce {
    Block,
    Warn,
}

impl Enforce {
    pub fn as_str(self) -> &'static str {
        match self {
            Enforce::Block => "block",
            Enforce::Warn => "warn",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Automated,
    Manual,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Automated => "automated",
            Mode::Manual => "manual",
        }
    }

    /// Dialing mode from the mode header (`X-Dial-Mode`): predictive and
    /// progressive dialers are automated systems (ARCEP's definition).
    /// An unknown value counts as automated, the stricter reading.
    pub fn from_header(v: &str) -> Mode {
        let v = v.trim();
        if v.eq_ignore_ascii_case("preview") || v.eq_ignore_ascii_case("manual") {
            Mode::Manual
        } else {
            Mode::Automated
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Campaign {
    Contract,
    Prospecting,
}

/// A frequency cap: at most `attempts` forwarded INVITEs per tenant and
/// callee within any `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cap {
    pub attempts: u32,
    pub window: chrono::Duration,
}

/// What the state store knows of a callee for one tenant, read before the
/// decision so that [`TenantPolicy::decide`] stays free of I/O.
#[derive(Debug, Clone, Default)]
pub struct History {
    pub refused_at: Option<DateTime<Utc>>,
    /// Instants of the attempts counted so far (any order; those outside
    /// the window are ignored).
    pub attempts: SmallVec<[DateTime<Utc>; 4]>,
    /// Closures in force or announced (`POST /v1/closures`).
    pub closures: Option<Arc<Vec<Closure>>>,
}

/// A jurisdiction closed to calls for a while (a state of emergency, a day
/// of mourning), from `from` to `to`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Closure {
    pub id: u64,
    pub jurisdiction: String,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub reason: String,
}

/// A tenant's compiled policy.
#[derive(Debug)]
pub struct TenantPolicy {
    pub id: Arc<str>,
    pub country: Country,
    pub rules: TenantRules,
    pub default_mode: Mode,
    pub mode_header: String,
    pub campaign: Campaign,
    /// Entitled caller IDs as (digits, length) prefixes; empty = any.
    pub caller_ids: Vec<(u64, u32)>,
    pub dnc: Vec<DncList>,
    pub consent: Vec<Arc<ConsentList>>,
    pub enforce_automated: [Enforce; RULES],
    pub enforce_manual: [Enforce; RULES],
    pub responses: Arc<Responses>,
}

/// Status and phrase per rule (configurable).
#[derive(Debug, Clone)]
pub struct Responses {
    /// Borrowed for the default phrases: a refusal then copies none.
    pub by_rule: [(u16, Cow<'static, str>); RULES],
}

impl Default for Responses {
    fn default() -> Self {
        Responses {
            by_rule: Rule::ALL.map(|r| {
                let (status, phrase) = r.default_response();
                (status, Cow::Borrowed(phrase))
            }),
        }
    }
}

/// The facts of one call, as received.
#[derive(Debug, Clone, Default)]
pub struct Facts<'a> {
    /// The caller ID: the first P-Asserted-Identity, else the From user.
    pub caller: Option<&'a str>,
    /// Every other identity the carrier will see and may present to the
    /// callee: further P-Asserted-Identity values, and the From user when
    /// it is a number. Each must pass the caller-ID rules too, so that
    /// what is checked is exactly what is presented.
    pub also_presented: SmallVec<[&'a str; 2]>,
    /// The caller asked for its identity to be withheld from the callee
    /// (RFC 3323 `Privacy: id` or `user`): an anonymous call.
    pub withheld: bool,
    pub callee: &'a str,
    /// Mode header value, when present.
    pub mode: Option<&'a str>,
}

impl<'a> Facts<'a> {
    /// The facts of a call stated by hand (`check`, `POST /v1/check`).
    pub fn new(caller: &'a str, callee: &'a str, mode: Option<&'a str>) -> Facts<'a> {
        Facts {
            caller: Some(caller),
            callee,
            mode,
            ..Facts::default()
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Failure {
    pub rule: Rule,
    pub explanation: String,
    pub enforcement: Enforce,
}

/// The decision and its explanation (`callguard check --json`,
/// `POST /v1/check`, the audit log). Numbers, zones and the instant are
/// kept as values and formatted only when serialised: the call path must
/// not pay for text it does not send.
#[derive(Debug, Clone)]
pub struct Decision {
    pub decision: Outcome,
    /// SIP status: 200 when forwarded (the carrier's answer is not known yet).
    pub status: u16,
    pub phrase: Cow<'static, str>,
    pub reason: Option<Code>,
    pub explanation: Cow<'static, str>,
    pub retry_after: Option<u64>,
    pub tenant: Arc<str>,
    pub mode: Mode,
    pub caller: Option<CallerNumber>,
    pub callee: Option<E164>,
    pub zones: &'static [Tz],
    pub at: DateTime<Utc>,
    pub failed_rules: SmallVec<[Failure; 2]>,
    /// The callee's jurisdiction (`US-FL`) and the version of its rules.
    pub jurisdiction: Option<Arc<str>>,
    pub rules_version: Option<Arc<str>>,
}

impl Decision {
    /// The reason code as the contract writes it.
    pub fn reason_str(&self) -> Option<&'static str> {
        self.reason.map(Code::as_str)
    }

    pub fn callee_local_time(&self) -> Vec<String> {
        self.zones
            .iter()
            .map(|z| {
                self.at
                    .with_timezone(z)
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
            })
            .collect()
    }
}

impl serde::Serialize for Decision {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("decision", &self.decision)?;
        m.serialize_entry("status", &self.status)?;
        if let Some(r) = self.reason {
            m.serialize_entry("reason", &r)?;
        }
        m.serialize_entry("explanation", &self.explanation)?;
        if let Some(r) = self.retry_after {
            m.serialize_entry("retry_after", &r)?;
        }
        m.serialize_entry("tenant", &*self.tenant)?;
        m.serialize_entry("mode", &self.mode)?;
        m.serialize_entry("caller", &self.caller.map(|c| c.to_string()))?;
        m.serialize_entry("callee", &self.callee.map(|c| c.to_string()))?;
        m.serialize_entry(
            "callee_time_zones",
            &self.zones.iter().map(|z| z.name()).collect::<Vec<_>>(),
        )?;
        m.serialize_entry("callee_local_time", &self.callee_local_time())?;
        m.serialize_entry("jurisdiction", &self.jurisdiction.as_deref())?;
        m.serialize_entry("rules_version", &self.rules_version.as_deref())?;
        m.serialize_entry("failed_rules", &self.failed_rules[..])?;
        m.end()
    }
}

fn caller_is_anonymous(c: &str) -> bool {
    let c = c.trim();
    c.is_empty()
        || c.eq_ignore_ascii_case("anonymous")
        || c.eq_ignore_ascii_case("unknown")
        || c.eq_ignore_ascii_case("restricted")
}

fn category_text(c: FrCategory) -> &'static str {
    match c {
        FrCategory::Npv => "an NPV number",
        FrCategory::Special => "an 08 special number",
        FrCategory::Premium => "an 089 premium-rate number",
        FrCategory::Short => "a short number",
        FrCategory::Geographic => "a geographic number",
        FrCategory::NonGeographic => "a 09 number outside the NPV ranges",
        FrCategory::Mobile => "a mobile number",
        FrCategory::Foreign => "not a French number",
        FrCategory::Unassigned => "in no assigned French range",
    }
}

impl TenantPolicy {
    pub fn mode_of(&self, header: Option<&str>) -> Mode {
        header.map(Mode::from_header).unwrap_or(self.default_mode)
    }

    pub fn enforcement(&self, mode: Mode, rule: Rule) -> Enforce {
        match mode {
            Mode::Automated => self.enforce_automated[rule.index()],
            Mode::Manual => self.enforce_manual[rule.index()],
        }
    }

    fn caller_entitled(&self, c: CallerNumber) -> bool {
        if self.caller_ids.is_empty() {
            return true;
        }
        match c {
            CallerNumber::E164(e) => self.caller_ids.iter().any(|&(p, l)| e.starts_with(p, l)),
            CallerNumber::FrShort(s) => self.caller_ids.iter().any(|&(p, _)| p == s as u64),
        }
    }

    /// The rules for `callee`; `None` when none of the tenant's rule sets
    /// covers it.
    pub fn applied_for(&self, callee: E164) -> Option<&Arc<Applied>> {
        match self.rules.for_callee(callee) {
            Lookup::Found(a) => Some(a),
            Lookup::Uncovered(_) => None,
        }
    }

    /// The callee's number and the rules that apply to it: what the gate
    /// needs before it reads the history, then hands to
    /// [`TenantPolicy::decide_resolved`] (parsed and looked up once a call).
    pub fn resolve(&self, facts: &Facts<'_>) -> Resolved<'_> {
        let callee = numbering::parse(facts.callee, self.country);
        Resolved {
            callee,
            lookup: callee.ok().map(|c| self.rules.for_callee(c)),
        }
    }

    pub fn decide(&self, facts: &Facts<'_>, history: &History, now: DateTime<Utc>) -> Decision {
        self.decide_resolved(facts, &self.resolve(facts), history, now)
    }

    /// [`TenantPolicy::decide`] with the callee `resolve` found for `facts`.
    pub fn decide_resolved(
        &self,
        facts: &Facts<'_>,
        resolved: &Resolved<'_>,
        history: &History,
        now: DateTime<Utc>,
    ) -> Decision {
        let mode = self.mode_of(facts.mode);
        let today = now.date_naive();
        let mut failures: SmallVec<[Failed; 4]> = SmallVec::new();
        let fail = |rule, why| (rule, why, None);

        // 2: callee
        let callee = resolved.callee;
        if let Err(e) = &callee {
            failures.push(fail(
                Rule::InvalidCallee,
                format!("callee `{}` is not a valid number: {e}", facts.callee),
            ));
        }
        // 2b: the callee's jurisdiction picks the rules
        let applied: Option<&Arc<Applied>> = match (callee, resolved.lookup) {
            (Ok(c), Some(lookup)) => match lookup {
                Lookup::Found(a) => Some(a),
                Lookup::Uncovered(country) => {
                    failures.push(fail(
                        Rule::NoRuleSet,
                        format!(
                            "callee {c} ({country}) is in no jurisdiction of tenant {}'s rule sets ({})",
                            self.id,
                            self.rules.names()
                        ),
                    ));
                    None
                }
            },
            _ => None,
        };
        let rules: &Applied = applied.map_or(&*self.rules.primary, |a| &**a);
        // 3: a caller ID the callee will see
        let anonymous = match facts.caller {
            None => Some("the call presents no caller ID"),
            Some(c) if caller_is_anonymous(c) => Some("the caller ID is anonymous"),
            Some(_) if facts.withheld => {
                Some("the caller ID is withheld from the callee (Privacy: id)")
            }
            Some(_) => None,
        };
        if let Some(why) = anonymous {
            failures.push(fail(Rule::AnonymousCallerId, why.into()));
        }
        // 4: every identity presented is a valid number of an allowed
        // category that the tenant is entitled to
        let mut caller_number = None;
        let mut problems: SmallVec<[String; 1]> = SmallVec::new();
        let presented = facts
            .caller
            .filter(|_| anonymous.is_none())
            .into_iter()
            .chain(facts.also_presented.iter().copied());
        for (i, c) in presented.enumerate() {
            match numbering::parse_caller(c, self.country) {
                Err(e) => problems.push(format!("caller ID `{c}` is not a valid number: {e}")),
                Ok(n) => {
                    if i == 0 && anonymous.is_none() {
                        caller_number = Some(n);
                    }
                    if let Some(why) = self.caller_id_problem(n, mode, rules, today) {
                        problems.push(why);
                    }
                }
            }
        }
        if !problems.is_empty() {
            failures.push(fail(Rule::CallerIdCategory, problems.join("; ")));
        }

        let mut zones: &'static [Tz] = &[];
        if let Ok(callee) = callee {
            zones = numbering::callee_zones(callee);
            // 5: do-not-call
            if let Some(l) = self.dnc.iter().find(|l| l.contains(callee)) {
                failures.push(fail(
                    Rule::Dnc,
                    format!("callee {callee} is on the do-not-call list `{}`", l.name()),
                ));
            }
            // 5b: a list older than the law allows cannot clear the call
            if let Some((l, age)) = self
                .dnc
                .iter()
                .find_map(|l| l.stale_for(callee, today).map(|age| (l, age)))
            {
                failures.push(fail(
                    Rule::DncListStale,
                    format!(
                        "do-not-call list `{}` {age}: calls it covers wait for a fresh copy",
                        l.name()
                    ),
                ));
            }
        }
        if let (Ok(callee), Some(a)) = (callee, applied) {
            let window = a.window(mode);
            // 6: refusal cool-off
            if let (Some(c), Some(refused)) = (a.cooloff(today), history.refused_at) {
                let until = cooloff_end(refused, c.days, zones);
                if now < until {
                    let next = window.next_allowed(until, zones);
                    let l = refused.with_timezone(&zones[0]);
                    failures.push((
                        Rule::RefusalCooloff,
                        format!(
                            "callee {callee} refused calls from tenant {} on {}; {} {}: no call for {} full days, {}",
                            self.id,
                            l.date_naive(),
                            a.jurisdiction,
                            c.cite.law,
                            c.days,
                            next_text(next, zones[0])
                        ),
                        seconds_until(next, now),
                    ));
                }
            }
            // 7: consent
            let consent = self
                .consent
                .iter()
                .find_map(|l| l.get(callee))
                .filter(|c| c.date <= today);
            if let Some(law) = a.consent_needed(self.campaign, mode, today) {
                if consent.is_none() {
                    failures.push(fail(
                        Rule::NoConsent,
                        format!(
                            "{} {}: prospecting call to {callee}, who is on no consent list of tenant {}",
                            a.jurisdiction, law.law, self.id
                        ),
                    ));
                }
            }
            // 7b: a closure of the callee's jurisdiction
            if let Some(f) = closure_failure(a, history, zones, window, now) {
                failures.push(f);
            }
            // 8: time of day in every zone of the callee: each zone's
            // failure counts, so a warned weekend in one zone cannot hide
            // closed hours in another
            let closed = window.closed_zones(now, zones);
            if !closed.is_empty() {
                // The callee's consent to calls outside the hours lifts
                // them only where the law makes that exception.
                let hours_consent =
                    consent.is_some_and(|c| c.hours) && a.hours_consent_lifts(today);
                let next = window.next_allowed(now, zones);
                for rule in [Rule::PublicHoliday, Rule::Weekend, Rule::OutsideHours] {
                    if rule == Rule::OutsideHours && hours_consent {
                        continue;
                    }
                    let these: SmallVec<[(Tz, Closed); 2]> = closed
                        .iter()
                        .filter(|(_, c)| closed_rule(c) == rule)
                        .cloned()
                        .collect();
                    if !these.is_empty() {
                        failures.push(closed_failure(a, mode, rule, &these, zones, now, next));
                    }
                }
            }
            // 9: frequency cap (as last read; the proxy counts atomically
            // when it forwards, see `cap_reached`)
            if let Some(f) = self.cap_failure(a, mode, callee, &history.attempts, now) {
                failures.push(f);
            }
        }
        let mut d = self.conclude(mode, failures, caller_number, callee.ok(), zones, now);
        if let Some(a) = applied {
            d.jurisdiction = Some(a.jurisdiction.clone());
            d.rules_version = Some(a.version.clone());
        }
        d
    }

    fn caller_id_problem(
        &self,
        n: CallerNumber,
        mode: Mode,
        rules: &Applied,
        today: chrono::NaiveDate,
    ) -> Option<String> {
        if !self.caller_entitled(n) {
            return Some(format!(
                "caller ID {n} is not one of tenant {}'s numbers",
                self.id
            ));
        }
        rules
            .caller_checks(mode, today)
            .find_map(|check| match check.check {
                CallerIdCheck::Prefixes => range_problem(n, check),
                CallerIdCheck::FrArcep => arcep_problem(n, mode, check),
            })
    }

    /// Rule 9 over the attempts counted so far: `None` while under every
    /// cap in force.
    pub fn cap_failure(
        &self,
        a: &Applied,
        mode: Mode,
        callee: E164,
        attempts: &[DateTime<Utc>],
        now: DateTime<Utc>,
    ) -> Option<Failed> {
        let mut worst: Option<(DateTime<Utc>, &crate::rules::CapRule, usize)> = None;
        for c in a.caps(mode, now.date_naive()) {
            let cap = c.cap;
            let since = now - cap.window;
            let mut in_window: SmallVec<[DateTime<Utc>; 8]> = attempts
                .iter()
                .copied()
                .filter(|&t| t > since && t <= now)
                .collect();
            let n = in_window.len();
            if n < cap.attempts as usize {
                continue;
            }
            in_window.sort_unstable();
            // Below the cap again once the attempts that make it up leave
            // the window: with n counted, the (n - cap + 1)-th oldest is
            // the last of them (n can exceed the cap: attempts counted
            // under `warn`).
            let free = in_window[n - cap.attempts as usize] + cap.window;
            if worst.as_ref().is_none_or(|w| free > w.0) {
                worst = Some((free, c, n));
            }
        }
        let (free, c, n) = worst?;
        let zones = numbering::callee_zones(callee);
        let next = a.window(mode).next_allowed(free, zones);
        let hours = c.cap.window.num_hours();
        let span = if hours % 24 == 0 {
            format!("{} days", hours / 24)
        } else {
            format!("{hours} hours")
        };
        Some((
            Rule::FrequencyCap,
            format!(
                "{n} attempts to {callee} by tenant {} in the last {span} ({} {}: limit {}); {}",
                self.id,
                a.jurisdiction,
                c.cite.law,
                c.cap.attempts,
                next_text(next, zones[0])
            ),
            seconds_until(next, now),
        ))
    }

    /// Judges rule 9 on the attempts the state returned when counting (or
    /// read, when not counting) and folds a failure into the decision.
    pub fn fold_cap(
        &self,
        d: &mut Decision,
        a: &Applied,
        callee: E164,
        prior: &[DateTime<Utc>],
        now: DateTime<Utc>,
    ) {
        if let Some(f) = self.cap_failure(a, d.mode, callee, prior, now) {
            self.cap_reached(d, f);
        }
    }

    /// How long a refusal must be kept for rule 6: the longest cool-off,
    /// plus two days for its end at a local midnight in any zone.
    pub fn refusal_keep(&self) -> chrono::Duration {
        chrono::Duration::days(i64::from(self.rules.retention().1.unwrap_or(0)) + 2)
    }

    /// Folds a frequency-cap failure found when counting (another call to
    /// the same callee was counted between the read and the count) into a
    /// decision that was going to forward.
    pub fn cap_reached(&self, d: &mut Decision, failure: Failed) {
        let (rule, why, retry) = failure;
        let enforcement = self.enforcement(d.mode, rule);
        d.failed_rules.push(Failure {
            rule,
            explanation: why.clone(),
            enforcement,
        });
        match (enforcement, d.decision) {
            (Enforce::Block, Outcome::Reject) => {
                // Already refused: the retry must also wait for the cap.
                d.retry_after = latest(d.retry_after, retry);
            }
            (Enforce::Warn, Outcome::Reject) => {}
            (Enforce::Block, _) => {
                let (status, phrase) = &self.responses.by_rule[rule.index()];
                d.decision = Outcome::Reject;
                d.status = *status;
                d.phrase = phrase.clone();
                d.reason = Some(rule.code());
                d.explanation = Cow::Owned(why);
                d.retry_after = retry;
            }
            (Enforce::Warn, Outcome::Allow) => {
                d.decision = Outcome::Warn;
                d.reason = Some(rule.code());
                d.explanation = Cow::Owned(why);
            }
            (Enforce::Warn, Outcome::Warn) => {}
        }
    }

    fn conclude(
        &self,
        mode: Mode,
        mut failures: SmallVec<[Failed; 4]>,
        caller: Option<CallerNumber>,
        callee: Option<E164>,
        zones: &'static [Tz],
        now: DateTime<Utc>,
    ) -> Decision {
        let blocking = failures
            .iter()
            .position(|(r, _, _)| self.enforcement(mode, *r) == Enforce::Block);
        let failed_rules: SmallVec<[Failure; 2]> = failures
            .iter()
            .map(|(r, why, _)| Failure {
                rule: *r,
                explanation: why.clone(),
                enforcement: self.enforcement(mode, *r),
            })
            .collect();
        let mut d = Decision {
            decision: Outcome::Allow,
            status: 200,
            phrase: Cow::Borrowed("OK"),
            reason: None,
            explanation: Cow::Borrowed("every rule passed"),
            retry_after: None,
            tenant: self.id.clone(),
            mode,
            caller,
            callee,
            zones,
            at: now,
            failed_rules,
            jurisdiction: None,
            rules_version: None,
        };
        match blocking {
            Some(i) => {
                // Retry when every blocking rule lets the call through:
                // the latest of their instants; never when one of them has
                // none (a permanent rule, or no allowed instant in a year).
                let retry = failures
                    .iter()
                    .filter(|(r, _, _)| self.enforcement(mode, *r) == Enforce::Block)
                    .map(|(_, _, retry)| *retry)
                    .reduce(latest)
                    .flatten();
                let (rule, mut why, own) = failures.swap_remove(i);
                if retry.is_some() && retry != own {
                    if let (Some(secs), Some(&zone)) = (retry, zones.first()) {
                        let at = now + chrono::Duration::seconds(secs as i64);
                        why.push_str(&format!(
                            "; other rules also refuse the call until {}",
                            local_text(at, zone)
                        ));
                    }
                }
                let (status, phrase) = &self.responses.by_rule[rule.index()];
                d.decision = Outcome::Reject;
                d.status = *status;
                d.phrase = phrase.clone();
                d.reason = Some(rule.code());
                d.explanation = Cow::Owned(why);
                d.retry_after = retry;
            }
            None => {
                if let Some((rule, why, _)) = failures.into_iter().next() {
                    d.decision = Outcome::Warn;
                    d.reason = Some(rule.code());
                    d.explanation = Cow::Owned(why);
                }
            }
        }
        d
    }
}

/// Rule 8's failure for the zones `these` closes with `rule`, naming the
/// laws that close it.
fn closed_failure(
    a: &Applied,
    mode: Mode,
    rule: Rule,
    these: &[(Tz, Closed)],
    zones: &[Tz],
    now: DateTime<Utc>,
    next: Option<DateTime<Utc>>,
) -> Failed {
    // Formatted by hand: chrono's strftime-style parser costs more than
    // the rest of the decision.
    use std::fmt::Write;
    let mut why = String::with_capacity(192);
    match rule {
        Rule::PublicHoliday => {
            why.push_str("it is a public holiday (");
            let mut names: SmallVec<[&str; 2]> = SmallVec::new();
            for (_, c) in these {
                if let Closed::PublicHoliday(n) = c {
                    if !names.contains(&&**n) {
                        names.push(n);
                    }
                }
            }
            why.push_str(&names.join(", "));
            why.push(')');
        }
        Rule::Weekend => why.push_str("no calls on weekends"),
        _ => why.push_str("outside the allowed contact hours"),
    }
    why.push_str(": callee local time");
    for (i, (z, _)) in these.iter().enumerate() {
        let l = now.with_timezone(z);
        why.push_str(if i == 0 { " " } else { " / " });
        why.push_str(weekday_abbr(l.weekday()));
        why.push(' ');
        let _ = write_hm(&mut why, (l.hour() * 60 + l.minute()) as u16);
        if zones.len() > 1 {
            let _ = write!(why, " ({})", z.name());
        }
    }
    for (z, _) in these {
        a.window(mode).write_closing_laws(now, *z, &mut why);
    }
    let _ = write!(why, "; {}", next_text(next, zones[0]));
    (rule, why, seconds_until(next, now))
}

/// A closure of the callee's jurisdiction in force at `now`: refused until
/// its end (and the closures that follow without a gap), then the hours.
fn closure_failure(
    a: &Applied,
    history: &History,
    zones: &[Tz],
    window: &crate::schedule::Window,
    now: DateTime<Utc>,
) -> Option<Failed> {
    let closures = history.closures.as_deref()?;
    let applies = |c: &&Closure| {
        a.ids
            .iter()
            .any(|id| id.eq_ignore_ascii_case(&c.jurisdiction))
    };
    let first = closures
        .iter()
        .filter(applies)
        .find(|c| c.from <= now && now < c.to)?;
    let mut end = first.to;
    // Closures that overlap or touch extend it.
    loop {
        let later = closures
            .iter()
            .filter(applies)
            .filter(|c| c.from <= end && c.to > end)
            .map(|c| c.to)
            .max();
        match later {
            Some(t) => end = t,
            None => break,
        }
    }
    let next = window.next_allowed(end, zones);
    Some((
        Rule::Closure,
        format!(
            "calls to {} are suspended until {} ({}; closure {}); {}",
            first.jurisdiction,
            local_text(end, zones[0]),
            first.reason,
            first.id,
            next_text(next, zones[0])
        ),
        seconds_until(next, now),
    ))
}

/// The later of two retry delays; `None` (never) wins.
fn latest(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    Some(a?.max(b?))
}

fn closed_rule(c: &Closed) -> Rule {
    match c {
        Closed::PublicHoliday(_) => Rule::PublicHoliday,
        Closed::Weekend => Rule::Weekend,
        Closed::OutsideHours => Rule::OutsideHours,
    }
}

/// Seconds from `now` to `next` (at least 1: a dialer told 0 would retry
/// at once).
fn seconds_until(next: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Option<u64> {
    next.map(|n| (n - now).num_seconds().max(1) as u64)
}

/// "next allowed Mon 2026-11-23 10:00 CET", or that there is none.
fn next_text(next: Option<DateTime<Utc>>, zone: Tz) -> NextText {
    NextText(next, zone)
}

struct NextText(Option<DateTime<Utc>>, Tz);

impl fmt::Display for NextText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(n) => write!(f, "next allowed {}", local_text(n, self.1)),
            None => write!(
                f,
                "no allowed instant within {} days",
                crate::schedule::SEARCH_DAYS
            ),
        }
    }
}

/// A call's callee as [`TenantPolicy::resolve`] reads it.
pub struct Resolved<'a> {
    pub callee: Result<E164, numbering::NumberError>,
    /// The callee's rules; `None` when the number is invalid.
    pub lookup: Option<Lookup<'a>>,
}

impl Resolved<'_> {
    /// The rules that apply; `None` when the number is invalid or no rule
    /// set of the tenant covers it.
    pub fn applied(&self) -> Option<&Arc<Applied>> {
        match self.lookup? {
            Lookup::Found(a) => Some(a),
            Lookup::Uncovered(_) => None,
        }
    }
}

/// A failed rule: which, why, and seconds until the call may be retried.
pub type Failed = (Rule, String, Option<u64>);

/// "Mon 2026-11-23 10:00 CET" in `zone` (the zone's abbreviation, or its
/// offset where it has none).
fn local_text(at: DateTime<Utc>, zone: Tz) -> LocalText {
    LocalText(at, zone)
}

struct LocalText(DateTime<Utc>, Tz);

impl fmt::Display for LocalText {
    // By hand (see `schedule::write_hm`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use chrono_tz::OffsetName;
        let l = self.0.with_timezone(&self.1);
        f.write_str(weekday_abbr(l.weekday()))?;
        f.write_char(' ')?;
        let y = l.year();
        if (1000..=9999).contains(&y) {
            write_2d(f, y as u32 / 100)?;
            write_2d(f, y as u32)?;
        } else {
            write!(f, "{y:04}")?;
        }
        f.write_char('-')?;
        write_2d(f, l.month())?;
        f.write_char('-')?;
        write_2d(f, l.day())?;
        f.write_char(' ')?;
        write_hm(f, (l.hour() * 60 + l.minute()) as u16)?;
        f.write_char(' ')?;
        match l.offset().abbreviation() {
            Some(a) => f.write_str(a),
            None => fmt::Display::fmt(l.offset(), f),
        }
    }
}

/// "Mon" as chrono writes it, without going through `core::fmt`.
fn weekday_abbr(d: Weekday) -> &'static str {
    ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"][d.num_days_from_monday() as usize]
}

/// The end of a refusal cool-off: the local midnight after `days` full
/// calendar days following the day of the refusal, in every zone of the
/// callee (the latest of them).
pub fn cooloff_end(refused: DateTime<Utc>, days: u32, zones: &[Tz]) -> DateTime<Utc> {
    use chrono::TimeZone;
    let mut end = refused;
    for z in zones {
        let day = refused.with_timezone(z).date_naive() + chrono::Days::new(days as u64 + 1);
        // Where midnight does not exist (a DST change at 00:00), the first
        // instant of the day is the next hour that does.
        let start = (0..3)
            .find_map(|h| z.from_local_datetime(&day.and_hms_opt(h, 0, 0)?).earliest())
            .map(|t| t.with_timezone(&Utc));
        if let Some(start) = start {
            end = end.max(start);
        }
    }
    end
}

/// A caller ID outside the ranges `check` allows, or inside one it denies.
fn range_problem(n: CallerNumber, check: &CallerIdRule) -> Option<String> {
    let e = match n {
        CallerNumber::E164(e) => Some(e),
        CallerNumber::FrShort(_) => None,
    };
    let opens = |p: &NumberPrefix| e.is_some_and(|e| p.matches(e));
    if let Some(p) = check.deny.iter().find(|p| opens(p)) {
        return Some(format!(
            "caller ID {n} is in the range {p}, which {} forbids for these calls",
            check.cite.law
        ));
    }
    if !check.allow.is_empty() && !check.allow.iter().any(opens) {
        let ranges: Vec<String> = check.allow.iter().map(|p| p.to_string()).collect();
        return Some(format!(
            "caller ID {n} is outside the ranges {} allows for these calls ({})",
            check.cite.law,
            ranges.join(", ")
        ));
    }
    None
}

/// ARCEP 2022-1583: a mobile number never; automated calls only from NPV,
/// 08 and 30/31 numbers.
fn arcep_problem(n: CallerNumber, mode: Mode, check: &CallerIdRule) -> Option<String> {
    let cat = numbering::fr_category(n);
    if cat == FrCategory::Mobile {
        return Some(format!(
            "caller ID {n} is a mobile number, which a call centre may never present ({})",
            check.cite.law
        ));
    }
    if mode == Mode::Automated
        && !matches!(
            cat,
            FrCategory::Npv | FrCategory::Special | FrCategory::Short
        )
    {
        return Some(format!(
            "automated calls must present an NPV, 08 or 30/31 number ({}); caller ID {n} is {}",
            check.cite.law,
            category_text(cat)
        ));
    }
    None
}

/// Parses an entitled caller-ID entry: a number, or a prefix ending in `*`.
pub fn caller_prefix(s: &str, country: Country) -> Option<(u64, u32)> {
    match s.strip_suffix('*') {
        Some(p) => {
            let digits: String = p
                .trim()
                .trim_start_matches('+')
                .chars()
                .filter(|c| c.is_ascii_digit())
                .collect();
            // National format opens with the trunk prefix; without one, a
            // prefix is written with its country code.
            let d = match country.trunk_prefix() {
                Some(t) if digits.starts_with(t) => {
                    format!("{}{}", country.calling_code(), &digits[1..])
                }
                _ => digits,
            };
            (!d.is_empty() && d.len() <= 15)
                .then(|| (d.parse().ok(), d.len() as u32))
                .and_then(|(p, l)| Some((p?, l)))
        }
        None => match numbering::parse_caller(s, country).ok()? {
            CallerNumber::E164(e) => Some((e.digits(), e.digits().ilog10() + 1)),
            CallerNumber::FrShort(n) => Some((n as u64, 4)),
        },
    }
}

#[cfg(test)]
mod tests;
