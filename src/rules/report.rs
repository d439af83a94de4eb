//! What `callguard rules list` and `rules show` print: the enforced law,
//! readable by a compliance officer, with its sources.

use std::fmt::Write;

use super::{Cite, Jurisdiction, Library, RuleSet};
use crate::schedule::blocks_text;

fn cite(c: &Cite) -> String {
    let mut s = format!(
        "{} [source: {}; confidence {:?}]",
        c.law, c.source, c.confidence
    );
    if let Some(n) = &c.note {
        let _ = write!(s, " ({n})");
    }
    s
}

fn dates(from: Option<chrono::NaiveDate>, until: Option<chrono::NaiveDate>) -> String {
    match (from, until) {
        (None, None) => String::new(),
        (Some(f), None) => format!(" from {f}"),
        (None, Some(u)) => format!(" until {u}"),
        (Some(f), Some(u)) => format!(" from {f} until {u}"),
    }
}

/// One line per rule set and jurisdiction.
pub fn list(lib: &Library) -> String {
    let mut out = String::new();
    for s in lib.sets.values() {
        let _ = writeln!(out, "{} — {} (version {})", s.name, s.title, s.version);
        for j in s.jurisdictions() {
            let _ = writeln!(out, "  {:<8} {}", j.id, j.name);
        }
    }
    out
}

const DAYS: [&str; 8] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun", "Hol"];

fn jurisdiction(out: &mut String, set: &RuleSet, j: &Jurisdiction, year: i32) {
    let _ = writeln!(
        out,
        "{} — {} (rule set {}, version {})",
        j.id, j.name, set.name, set.version
    );
    if let Some(p) = &j.parent {
        let _ = writeln!(
            out,
            "  overlay of {p}: both apply (hours intersect, every cap counts)"
        );
    } else {
        let _ = writeln!(out, "  numbers of: {}", j.countries.join(", "));
    }
    if let Some(n) = &j.note {
        let _ = writeln!(out, "  note: {n}");
    }
    if let (Some(p), true) = (&j.parent, j.is_empty()) {
        let _ = writeln!(out, "  no rule of its own: {p}'s rules apply");
        return;
    }
    if j.hours.is_empty() {
        let _ = writeln!(out, "  hours: none set");
    }
    for h in &j.hours {
        let days: Vec<&str> = (0..8).filter(|d| h.days[*d]).map(|d| DAYS[d]).collect();
        let modes = modes_text(&h.modes);
        let blocks = if h.blocks.is_empty() {
            "no calls".to_owned()
        } else {
            blocks_text(&h.blocks)
        };
        let _ = writeln!(
            out,
            "  hours{modes}: {} {blocks}, callee local time{} — {}",
            days.join(" "),
            dates(h.in_force.from, h.in_force.until),
            cite(&h.cite)
        );
    }
    if j.parent.is_none() && !j.hours.is_empty() {
        let closed: Vec<&str> = (0..7)
            .filter(|d| !j.hours.iter().any(|h| h.modes.is_empty() && h.days[*d]))
            .map(|d| DAYS[d])
            .collect();
        if !closed.is_empty() {
            let _ = writeln!(out, "  no calls on: {}", closed.join(" "));
        }
    }
    for c in &j.caps {
        let _ = writeln!(
            out,
            "  cap: {} per {} h ({:?}){} — {}",
            c.cap.attempts,
            c.cap.window.num_hours(),
            c.scope,
            dates(c.in_force.from, c.in_force.until),
            cite(&c.cite)
        );
    }
    if let Some(c) = &j.cooloff {
        let _ = writeln!(
            out,
            "  after a refusal: no call for {} days{} — {}",
            c.days,
            dates(c.in_force.from, c.in_force.until),
            cite(&c.cite)
        );
    }
    if let Some(c) = &j.consent {
        let _ = writeln!(
            out,
            "  consent needed for: {}{}{} — {}",
            c.campaigns
                .iter()
                .map(|m| format!("{m:?}").to_lowercase())
                .collect::<Vec<_>>()
                .join(", "),
            modes_text(&c.modes),
            dates(c.in_force.from, c.in_force.until),
            cite(&c.cite)
        );
    }
    if let Some(h) = &j.hours_consent {
        let _ = writeln!(
            out,
            "  the callee's consent to calls outside the hours lifts them{} — {}",
            dates(h.in_force.from, h.in_force.until),
            cite(&h.cite)
        );
    }
    for c in &j.caller_id {
        let ranges = |label: &str, list: &[crate::rules::NumberPrefix]| {
            if list.is_empty() {
                String::new()
            } else {
                let l: Vec<String> = list.iter().map(|p| p.to_string()).collect();
                format!(", {label} {}", l.join(" "))
            }
        };
        let _ = writeln!(
            out,
            "  caller ID: {}{}{}{}{} — {}",
            c.check.name(),
            ranges("only from", &c.allow),
            ranges("never from", &c.deny),
            modes_text(&c.modes),
            dates(c.in_force.from, c.in_force.until),
            cite(&c.cite)
        );
    }
    let on_holidays = if j.hours.iter().any(|h| h.days[super::HOLIDAYS]) {
        "the Hol hours"
    } else {
        "no calls"
    };
    for cal in &j.calendars {
        let compiled = cal.compile(&[]);
        let _ = writeln!(
            out,
            "  holidays {year} ({}: {}), {on_holidays}:",
            cal.id, cal.name
        );
        for (d, h) in compiled.year(year) {
            let zones = if h.zones.is_empty() {
                String::new()
            } else {
                format!(
                    " [{}]",
                    h.zones
                        .iter()
                        .map(|z| z.name())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            let _ = writeln!(out, "    {d} {} {}{zones}", d.format("%a"), h.name);
        }
        if let Some(u) = cal.dated_until {
            let _ = writeln!(out, "    (dated holidays known until {u})");
        }
        for r in cal.holidays.iter().filter(|r| r.opt_in.is_some()) {
            let _ = writeln!(
                out,
                "    opt-in `{}`: {}",
                r.opt_in.as_deref().unwrap_or(""),
                r.name
            );
        }
    }
}

/// A jurisdiction's rules in force: with its national rules when it is an
/// overlay. `None` when no set knows `id`.
pub fn show(lib: &Library, id: &str, year: i32) -> Option<String> {
    let (set, j) = lib.find(id)?;
    let mut out = String::new();
    jurisdiction(&mut out, set, j, year);
    if j.parent.is_some() {
        out.push('\n');
        jurisdiction(&mut out, set, &set.national, year);
    }
    Some(out)
}

/// ` (automated calls)` for a rule of some modes only; empty for every mode.
fn modes_text(modes: &[crate::policy::Mode]) -> String {
    if modes.is_empty() {
        return String::new();
    }
    let names: Vec<String> = modes
        .iter()
        .map(|m| format!("{m:?}").to_lowercase())
        .collect();
    format!(" ({} calls)", names.join(", "))
}
