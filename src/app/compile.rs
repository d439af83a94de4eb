//! Compiling the configuration into what runs: rule sets, schedules,
//! tenants and their lists. Config (`crate::config`) is data; this is the
//! one place it is turned into policies, for `serve`, reload, `check` and
//! `config check` alike. Every error names the key and its line.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use chrono::Weekday;

use crate::config::{Config, ConfigError, RuleSetConfig, Seg, WeekConfig};
use crate::dnc::{self, ConsentList, DncList, LoadReport};
use crate::gate::Tenants;
use crate::numbering::Country;
use crate::policy::{self, CallerIdRule, Enforce, Responses, Rule, RuleSet, TenantPolicy, RULES};
use crate::schedule::{self, Calendar, Weekly};

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

/// A rule set's error: the key it concerns (dotted, within the rule set's
/// table) and what is wrong.
pub fn rule_set(name: &str, c: &RuleSetConfig) -> Result<RuleSet, RuleSetError> {
    let mut rs = policy::builtin_rule_set(&c.base).ok_or_else(|| {
        RuleSetError::new(
            "base",
            format!("base must be `fr` or `us`, not `{}`", c.base),
        )
    })?;
    rs.name = name.to_owned();
    if let Some(h) = &c.hours {
        rs.window.legal = week(h).map_err(|e| RuleSetError {
            key: format!("hours.{}", e.key),
            message: e.message,
        })?;
    }
    let err = RuleSetError::new;
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
    Rule::ALL.map(|r| {
        table
            .get(r.code().as_str())
            .copied()
            .unwrap_or(Enforce::Block)
    })
}

/// A tenant's rule set: built in, or `[rule_set.NAME]`.
fn tenant_rules(cfg: &Config, i: usize) -> Result<RuleSet, ConfigError> {
    use Seg::{Index, Key};
    let tc = &cfg.tenants[i];
    let id = tc.id.get_ref();
    match cfg.rule_sets.get(&tc.rule_set) {
        Some(custom) => rule_set(&tc.rule_set, custom).map_err(|e| {
            let mut at = vec![Key("rule_set"), Key(tc.rule_set.as_str())];
            at.extend(e.key.split('.').map(Key));
            cfg.invalid(&at, format!("rule_set.{}: {}", tc.rule_set, e.message))
        }),
        None => policy::builtin_rule_set(&tc.rule_set).ok_or_else(|| {
            cfg.invalid(
                &[Key("tenant"), Index(i), Key("rule_set")],
                format!(
                    "tenant `{id}`: unknown rule set `{}` (fr, us, or a [rule_set.NAME])",
                    tc.rule_set
                ),
            )
        }),
    }
}

/// Checks what only compiling can show: rule sets and schedules that do
/// not compile or never open. `Config::parse` has checked the rest.
pub fn check(cfg: &Config) -> Result<(), ConfigError> {
    use Seg::{Index, Key};
    for (name, rs) in &cfg.rule_sets {
        let compiled = rule_set(name, rs).map_err(|e| {
            let mut at = vec![Key("rule_set"), Key(name.as_str())];
            at.extend(e.key.split('.').map(Key));
            cfg.invalid(&at, format!("rule_set.{name}: {}", e.message))
        })?;
        if !compiled.window.opens_in_a_week() {
            return Err(cfg.invalid(
                &[Key("rule_set"), Key(name.as_str()), Key("hours")],
                format!("rule_set.{name}: these hours never open: every call would be refused"),
            ));
        }
    }
    for (i, t) in cfg.tenants.iter().enumerate() {
        let id = t.id.get_ref();
        let mut rules = tenant_rules(cfg, i)?;
        if let Some(w) = &t.schedule {
            let week = week(w).map_err(|e| {
                cfg.invalid(
                    &[Key("tenant"), Index(i), Key("schedule"), Key(e.key)],
                    format!("tenant `{id}`: {}", e.message),
                )
            })?;
            rules.window.tenant = Some(week);
            if !rules.window.opens_in_a_week() {
                return Err(cfg.invalid(
                    &[Key("tenant"), Index(i), Key("schedule")],
                    format!(
                        "tenant `{id}`: this schedule and the hours of rule set `{}` never overlap: every call would be refused",
                        t.rule_set
                    ),
                ));
            }
        }
    }
    Ok(())
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
    check(cfg)?;
    let mut loaded = Vec::new();
    let mut t = Tenants::default();
    let mut dnc_lists: HashMap<&str, DncList> = HashMap::new();
    for (i, l) in cfg.dnc_lists.iter().enumerate() {
        let country = l.country.unwrap_or(Country::FR);
        let (set, report) = dnc::load_numbers(&base_dir.join(&l.file), country)
            .map_err(|e| cfg.invalid(&[Key("dnc_list"), Index(i), Key("file")], e.to_string()))?;
        loaded.push(ListLoaded {
            kind: "dnc",
            name: l.name.clone(),
            report: report.clone(),
        });
        let delta = state.map(|s| s.dnc_delta(&l.name)).unwrap_or_default();
        let list = DncList::new(l.name.as_str().into(), Arc::new(set), delta)
            .with_unreadable(report.invalid);
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

    for (i, tc) in cfg.tenants.iter().enumerate() {
        let id = tc.id.get_ref().as_str();
        let mut rules = tenant_rules(cfg, i)?;
        if tc.alsace_moselle {
            if let Calendar::France { .. } = rules.window.calendar {
                rules.window.calendar = Calendar::France {
                    alsace_moselle: true,
                };
            }
        }
        if let Some(w) = &tc.schedule {
            // `check` compiled it already.
            rules.window.tenant = week(w).ok();
        }
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
