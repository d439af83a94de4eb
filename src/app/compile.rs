//! Compiling the configuration into what runs: rule sets, schedules,
//! tenants and their lists. Config (`crate::config`) is data; this is the
//! one place it is turned into policies, for `serve`, reload, `check` and
//! `config check` alike. Every error names the key and its line.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::Weekday;

use crate::config::{Config, ConfigError, RuleSetConfig, Seg, UnknownJurisdiction, WeekConfig};
use crate::dnc::{self, ConsentList, DncList, LoadReport};
use crate::gate::Tenants;
use crate::numbering::Country;
use crate::policy::{self, Campaign, Enforce, Responses, Rule, TenantPolicy, RULES};
use crate::rules::applied::{TenantOptions, TenantRules};
use crate::rules::{
    CallerIdCheck, CallerIdRule, CapRule, CapScope, Cite, Confidence, ConsentRule, CooloffRule,
    HoursRule, InForce, Library, RuleSet, RulesError,
};
use crate::schedule::{self, Weekly};

/// A schedule that does not compile: the key within the schedule table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct WeekError {
    pub key: &'static str,
    pub message: String,
}

impl WeekError {
    fn new(key: &'static str, message: impl std::fmt::Display) -> WeekError {
        WeekError {
            key,
            message: message.to_string(),
        }
    }
}

/// A rule set that does not compile: the key (dotted) within its table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct RuleSetError {
    pub key: String,
    pub message: String,
}

impl RuleSetError {
    fn new(key: &str, message: impl std::fmt::Display) -> RuleSetError {
        RuleSetError {
            key: key.to_owned(),
            message: message.to_string(),
        }
    }
}

/// One list loaded, for the startup log and `config check`.
#[derive(Debug, Clone)]
pub struct ListLoaded {
    pub kind: &'static str,
    pub name: String,
    pub report: LoadReport,
}

pub fn week(w: &WeekConfig) -> Result<Weekly, WeekError> {
    if let Some(q) = &w.quiet_hours {
        let has_days = [&w.mon, &w.tue, &w.wed, &w.thu, &w.fri, &w.sat, &w.sun]
            .iter()
            .any(|d| d.is_some());
        if has_days {
            return Err(WeekError::new(
                "quiet_hours",
                "use either day blocks or quiet_hours, not both",
            ));
        }
        let (start, end) = schedule::parse_span(q).map_err(|e| WeekError::new("quiet_hours", e))?;
        if start == end || (start == 0 && end == 1440) || (start == 1440 && end == 0) {
            return Err(WeekError::new(
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
            return Err(WeekError::new(
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
                let (start, end) = schedule::parse_span(s).map_err(|e| WeekError::new(key, e))?;
                if end <= start {
                    return Err(WeekError::new(key, format!("`{s}`: a day block must end after it starts (use quiet_hours across midnight)")));
                }
                b.push((start, end));
            }
            days.push((d, b));
        }
    }
    Ok(Weekly::from_days(&days, open))
}

/// The rule library: built in, with the operator's files (`[rules]
/// files`, relative to the config file's directory).
pub fn library(cfg: &Config) -> Result<Library, ConfigError> {
    let dir = cfg.path().parent().unwrap_or(Path::new("."));
    let files: Vec<PathBuf> = cfg.rules.files.iter().map(|f| dir.join(f)).collect();
    Library::load(&files).map_err(|e| match e {
        RulesError::Read { path, source } => ConfigError::Read { path, source },
        RulesError::Syntax { path, message } => ConfigError::Syntax { path, message },
        RulesError::Invalid {
            path,
            line,
            key,
            message,
        } => ConfigError::Invalid {
            path,
            line,
            key,
            message,
        },
    })
}

/// A `[rule_set.NAME]`: its base set with the national values it replaces.
/// The base's overlays still apply (a state's law does not stop applying
/// because the national hours were changed).
pub fn rule_set(name: &str, c: &RuleSetConfig, lib: &Library) -> Result<RuleSet, RuleSetError> {
    let err = RuleSetError::new;
    let base = lib.sets.get(&c.base).ok_or_else(|| {
        err(
            "base",
            format!(
                "base `{}` is not a rule set ({})",
                c.base,
                lib.sets.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        )
    })?;
    let mut rs = (**base).clone();
    rs.name = name.to_owned();
    rs.origin.push(format!("[rule_set.{name}]"));
    let mut national = (*rs.national).clone();
    let cite = |what: &str| Cite {
        law: format!("rule_set.{name} {what}").into(),
        source: "operator configuration".into(),
        confidence: Confidence::H,
        note: None,
    };
    if let Some(h) = &c.hours {
        let w = week(h).map_err(|e| RuleSetError {
            key: format!("hours.{}", e.key),
            message: e.message,
        })?;
        national.hours = (0..7)
            .map(|d| {
                let mut days = [false; 8];
                days[d] = true;
                HoursRule {
                    days,
                    blocks: w.day(schedule::weekday(d)).iter().copied().collect(),
                    modes: Vec::new(),
                    in_force: InForce::default(),
                    cite: cite("hours"),
                }
            })
            .collect();
    }
    match c.holidays.as_deref() {
        None => {}
        Some("none") => national.calendars.clear(),
        Some(set) => {
            let from = lib.sets.get(set).ok_or_else(|| {
                err(
                    "holidays",
                    format!(
                        "holidays must be `none` or a rule set whose holidays apply, not `{set}`"
                    ),
                )
            })?;
            national.calendars = from.national.calendars.clone();
        }
    }
    match c.caller_id.as_deref() {
        None => {}
        Some("fr") => {
            national.caller_id = vec![CallerIdRule {
                check: CallerIdCheck::FrArcep,
                allow: Vec::new(),
                deny: Vec::new(),
                modes: Vec::new(),
                in_force: InForce::default(),
                cite: cite("caller_id (ARCEP 2022-1583)"),
            }]
        }
        Some("none") => national.caller_id.clear(),
        Some(o) => {
            return Err(err(
                "caller_id",
                format!("caller_id must be `fr` or `none`, not `{o}`"),
            ))
        }
    }
    match c.consent_required_since.as_deref() {
        None => {}
        Some("none") => national.consent = None,
        Some(d) => {
            let from = chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").map_err(|_| {
                err(
                    "consent_required_since",
                    format!("consent_required_since `{d}` is not YYYY-MM-DD"),
                )
            })?;
            national.consent = Some(ConsentRule {
                campaigns: vec![Campaign::Prospecting],
                modes: Vec::new(),
                in_force: InForce {
                    from: Some(from),
                    until: None,
                },
                cite: cite("consent_required_since"),
            });
        }
    }
    match c.refusal_cooloff_days {
        None => {}
        Some(0) => national.cooloff = None,
        Some(d) if d > 3650 => {
            return Err(err(
                "refusal_cooloff_days",
                format!("refusal_cooloff_days {d} is over ten years"),
            ))
        }
        Some(d) => {
            national.cooloff = Some(CooloffRule {
                days: d,
                in_force: InForce::default(),
                cite: cite("refusal_cooloff_days"),
            })
        }
    }
    match c.frequency_cap {
        None => {}
        Some(c) if c.attempts == 0 => national.caps.clear(),
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
            national.caps = vec![CapRule {
                cap: policy::Cap {
                    attempts: c.attempts,
                    window: chrono::Duration::hours(c.window_hours as i64),
                },
                scope: CapScope::Callee,
                modes: Vec::new(),
                in_force: InForce::default(),
                cite: cite("frequency_cap"),
            }]
        }
    }
    rs.national = Arc::new(national);
    Ok(rs)
}

fn enforcement(table: &std::collections::BTreeMap<String, Enforce>) -> [Enforce; RULES] {
    Rule::ALL.map(|r| {
        table
            .get(r.code().as_str())
            .copied()
            .unwrap_or(Enforce::Block)
    })
}

/// The rule sets a config can name: the library's and its own
/// `[rule_set.NAME]`s.
fn rule_sets(cfg: &Config, lib: &Library) -> Result<BTreeMap<String, Arc<RuleSet>>, ConfigError> {
    use Seg::Key;
    let mut sets = lib.sets.clone();
    for (name, rs) in &cfg.rule_sets {
        let compiled = rule_set(name, rs, lib).map_err(|e| {
            let mut at = vec![Key("rule_set"), Key(name.as_str())];
            at.extend(e.key.split('.').map(Key));
            cfg.invalid(&at, format!("rule_set.{name}: {}", e.message))
        })?;
        let opens = TenantRules::new(vec![Arc::new(compiled.clone())], &TenantOptions::default())
            .primary
            .window(policy::Mode::Manual)
            .opens_in_a_week();
        if !opens {
            return Err(cfg.invalid(
                &[Key("rule_set"), Key(name.as_str()), Key("hours")],
                format!("rule_set.{name}: these hours never open: every call would be refused"),
            ));
        }
        sets.insert(name.clone(), Arc::new(compiled));
    }
    Ok(sets)
}

/// Calendars made of dated lists (yearly decrees) must be extended before
/// their data runs out: warned 60 days ahead, at start and on reload.
pub fn warn_stale_calendars(
    tenant: &str,
    rules: &TenantRules,
    today: chrono::NaiveDate,
) -> Vec<String> {
    let mut out = Vec::new();
    for s in &rules.sets {
        for j in s.jurisdictions() {
            for c in &j.calendars {
                let Some(until) = c.dated_until else { continue };
                let left = (until - today).num_days();
                if left < 60 && !out.contains(&c.id) {
                    tracing::warn!(
                        tenant,
                        calendar = %c.id,
                        dated_until = %until,
                        days_left = left,
                        "holiday calendar has no dated holidays past {until}: add the next decree in a rule file"
                    );
                    out.push(c.id.clone());
                }
            }
        }
    }
    out
}

/// A tenant's compiled rules.
fn tenant_rules(
    cfg: &Config,
    i: usize,
    sets: &BTreeMap<String, Arc<RuleSet>>,
) -> Result<TenantRules, ConfigError> {
    use Seg::{Index, Key};
    let tc = &cfg.tenants[i];
    let id = tc.id.get_ref();
    let names = tc.rule_set_names();
    let key = if tc.rule_sets.is_empty() {
        "rule_set"
    } else {
        "rule_sets"
    };
    let mut chosen = Vec::new();
    for (j, n) in names.iter().enumerate() {
        let s = sets.get(n).ok_or_else(|| {
            let mut at = vec![Key("tenant"), Index(i), Key(key)];
            if key == "rule_sets" {
                at.push(Index(j));
            }
            cfg.invalid(
                &at,
                format!(
                    "tenant `{id}`: unknown rule set `{n}` ({}, or a [rule_set.NAME])",
                    sets.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            )
        })?;
        chosen.push(s.clone());
    }
    let schedule = match &tc.schedule {
        Some(w) => Some(week(w).map_err(|e| {
            cfg.invalid(
                &[Key("tenant"), Index(i), Key("schedule"), Key(e.key)],
                format!("tenant `{id}`: {}", e.message),
            )
        })?),
        None => None,
    };
    let opts = TenantOptions {
        schedule,
        opt_ins: if tc.alsace_moselle {
            vec!["alsace_moselle".into()]
        } else {
            Vec::new()
        },
        unknown_allow: tc.unknown_jurisdiction == UnknownJurisdiction::Allow,
    };
    let has_schedule = opts.schedule.is_some();
    let rules = TenantRules::new(chosen, &opts);
    if has_schedule && !rules.primary.window(policy::Mode::Manual).opens_in_a_week() {
        return Err(cfg.invalid(
            &[Key("tenant"), Index(i), Key("schedule")],
            format!(
                "tenant `{id}`: this schedule and the hours of rule set `{}` never overlap: every call would be refused",
                names[0]
            ),
        ));
    }
    Ok(rules)
}

/// Checks what only compiling can show: rule files, rule sets and
/// schedules that do not compile or never open. `Config::parse` has
/// checked the rest.
pub fn check(cfg: &Config) -> Result<(), ConfigError> {
    let lib = library(cfg)?;
    let sets = rule_sets(cfg, &lib)?;
    for i in 0..cfg.tenants.len() {
        tenant_rules(cfg, i, &sets)?;
    }
    Ok(())
}

/// The UTC date a file was last modified: a downloaded list's date when
/// nothing better says it.
fn modified(path: &Path) -> Option<chrono::NaiveDate> {
    let t = std::fs::metadata(path).ok()?.modified().ok()?;
    Some(chrono::DateTime::<chrono::Utc>::from(t).date_naive())
}

/// Compiles every tenant and loads the lists. Relative list paths are
/// read from `base_dir` (the config file's directory). With a state store,
/// each DNC list carries its run-time changes.
pub fn tenants(
    cfg: &Config,
    base_dir: &Path,
    state: Option<&crate::state::Store>,
) -> Result<(Tenants, Vec<ListLoaded>), ConfigError> {
    use Seg::{Index, Key};
    let lib = library(cfg)?;
    let sets = rule_sets(cfg, &lib)?;
    let mut loaded = Vec::new();
    let mut t = Tenants::default();
    let mut dnc_lists: HashMap<&str, DncList> = HashMap::new();
    for (i, l) in cfg.dnc_lists.iter().enumerate() {
        let country = l.country.unwrap_or(Country::FR);
        let date = l
            .date
            .as_deref()
            .map(|d| {
                chrono::NaiveDate::parse_from_str(d.trim(), "%Y-%m-%d").map_err(|e| {
                    cfg.invalid(
                        &[Key("dnc_list"), Index(i), Key("date")],
                        format!("`{d}` is not a date YYYY-MM-DD ({e})"),
                    )
                })
            })
            .transpose()?;
        for (j, c) in l.countries.iter().enumerate() {
            if c.len() != 2 || !c.bytes().all(|b| b.is_ascii_alphabetic()) {
                return Err(cfg.invalid(
                    &[Key("dnc_list"), Index(i), Key("countries"), Index(j)],
                    format!("`{c}` is not an ISO country code (`US`, `CA`)"),
                ));
            }
        }
        let path = base_dir.join(&l.file);
        let (mut set, mut report) =
            dnc::load_numbers_dated(&path, country, date.or_else(|| modified(&path))).map_err(
                |e| cfg.invalid(&[Key("dnc_list"), Index(i), Key("file")], e.to_string()),
            )?;
        // The data is as recent as its latest change list.
        let mut data_date = set.date();
        if !l.changes.is_empty() {
            let mut all = dnc::Changes::default();
            for (j, c) in l.changes.iter().enumerate() {
                let p = base_dir.join(c);
                let (changes, r) = dnc::load_changes(&p, country).map_err(|e| {
                    cfg.invalid(
                        &[Key("dnc_list"), Index(i), Key("changes"), Index(j)],
                        e.to_string(),
                    )
                })?;
                report.invalid += r.invalid;
                data_date = data_date.max(modified(&p));
                all = all.then(changes);
            }
            set = set.with_changes(&all);
            report.entries = set.len();
        }
        // The config's date wins: it is there because the others are wrong.
        let freshness = dnc::Freshness {
            date: date.or(data_date),
            max_age_days: l.max_age_days,
            countries: l.countries.iter().map(|c| c.to_ascii_uppercase()).collect(),
        };
        loaded.push(ListLoaded {
            kind: "dnc",
            name: l.name.clone(),
            report: report.clone(),
        });
        let delta = state.map(|s| s.dnc_delta(&l.name)).unwrap_or_default();
        let list = DncList::new(l.name.as_str().into(), Arc::new(set), delta)
            .with_unreadable(report.invalid)
            .with_freshness(freshness);
        dnc_lists.insert(&l.name, list.clone());
        t.add_dnc_list(list, country);
    }
    let mut consent: HashMap<&str, Arc<ConsentList>> = HashMap::new();
    for (i, l) in cfg.consent_lists.iter().enumerate() {
        let (list, report) =
            dnc::load_consent(&base_dir.join(&l.file), l.country.unwrap_or(Country::FR)).map_err(
                |e| cfg.invalid(&[Key("consent_list"), Index(i), Key("file")], e.to_string()),
            )?;
        loaded.push(ListLoaded {
            kind: "consent",
            name: l.name.clone(),
            report,
        });
        let delta = state.map(|s| s.consent_delta(&l.name)).unwrap_or_default();
        let list = Arc::new(list.with_delta(delta));
        t.add_consent_list(&l.name, list.clone(), l.country.unwrap_or(Country::FR));
        consent.insert(&l.name, list);
    }
    let mut responses = Responses::default();
    for (code, r) in &cfg.responses {
        if let Some(rule) = Rule::from_code(code) {
            let phrase = r.phrase.clone().map_or(
                std::borrow::Cow::Borrowed(rule.default_response().1),
                std::borrow::Cow::Owned,
            );
            responses.by_rule[Rule::ALL.iter().position(|x| *x == rule).unwrap_or(0)] =
                (r.status, phrase);
        }
    }
    let responses = Arc::new(responses);

    for (i, tc) in cfg.tenants.iter().enumerate() {
        let id = tc.id.get_ref().as_str();
        let rules = tenant_rules(cfg, i, &sets)?;
        warn_stale_calendars(id, &rules, chrono::Utc::now().date_naive());
        let caller_ids = tc
            .caller_ids
            .iter()
            .filter_map(|c| policy::caller_prefix(c, tc.country))
            .collect();
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
                .filter_map(|n| dnc_lists.get(n.as_str()).cloned())
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
        t.add(Arc::new(policy), &tc.sources, &tc.tls_names);
    }
    Ok((t, loaded))
}

#[cfg(test)]
mod tests;
