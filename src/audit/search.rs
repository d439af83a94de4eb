//! Reading the trail back: every decision on a number in a period, each
//! with its call's outcome and duration, for a compliance officer proving
//! "4 attempts in 30 days" or a dialer team checking abandonment.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::io::BufRead;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What to look for.
#[derive(Debug, Clone)]
pub struct Query {
    /// E.164 with its `+`; matched against caller and callee.
    pub number: String,
    pub tenant: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
}

/// One decision on the number, with what became of the call.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Found {
    pub time: String,
    pub call_id: String,
    pub tenant: Option<String>,
    pub caller: Option<String>,
    pub callee: Option<String>,
    pub jurisdiction: Option<String>,
    pub decision: String,
    pub status: u16,
    pub reason: Option<String>,
    /// The final answer to a forwarded call (`answered`, `busy`, …).
    pub outcome: Option<String>,
    pub final_status: Option<u16>,
    pub answered_at: Option<String>,
    pub ended_at: Option<String>,
    pub ended_by: Option<String>,
    /// From the answer to the BYE, in seconds.
    pub duration_s: Option<f64>,
    pub explanation: Option<String>,
}

/// The fields of any line that a search reads.
#[derive(Deserialize)]
struct Line<'a> {
    time: &'a str,
    kind: Option<&'a str>,
    #[serde(borrow)]
    call_id: Option<std::borrow::Cow<'a, str>>,
    tenant: Option<&'a str>,
    caller: Option<&'a str>,
    callee: Option<&'a str>,
    jurisdiction: Option<&'a str>,
    decision: Option<&'a str>,
    status: Option<u16>,
    reason: Option<&'a str>,
    outcome: Option<&'a str>,
    by: Option<&'a str>,
    #[serde(borrow)]
    explanation: Option<std::borrow::Cow<'a, str>>,
}

/// What a search found, the lines it could not read, and the gaps the
/// trail records in the period.
#[derive(Debug, Default)]
pub struct Results {
    pub found: Vec<Found>,
    pub unreadable: usize,
    pub gaps: Vec<Gap>,
}

/// A `"kind":"gap"` line in the period searched: lines the writer never
/// got (the queue was full), any of which may have been about the number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    pub since: String,
    pub until: String,
    /// Calls whose decision line was not written (refused `503` before
    /// the decision, or decided and not recorded).
    pub calls: u64,
    /// Outcome and end lines not written.
    pub outcomes_and_ends: u64,
}

#[derive(Deserialize)]
struct GapIn<'a> {
    time: &'a str,
    since: &'a str,
    #[serde(default)]
    calls_refused: u64,
    #[serde(default)]
    decisions_lost: u64,
    #[serde(default)]
    outcomes_lost: u64,
    #[serde(default)]
    ends_lost: u64,
}

impl GapIn<'_> {
    /// The gap, if it overlaps the period of `q`.
    fn within(&self, q: &Query) -> Option<Gap> {
        let instant = |t| {
            DateTime::parse_from_rfc3339(t)
                .ok()
                .map(|t| t.with_timezone(&Utc))
        };
        let (since, until) = (instant(self.since)?, instant(self.time)?);
        if q.from.is_some_and(|f| until < f) || q.to.is_some_and(|t| since > t) {
            return None;
        }
        Some(Gap {
            since: self.since.to_owned(),
            until: self.time.to_owned(),
            calls: self.calls_refused + self.decisions_lost,
            outcomes_and_ends: self.outcomes_lost + self.ends_lost,
        })
    }
}

/// Outcomes and ends are looked for this long after the last day asked
/// for: a call decided at 23:59 ends the next day.
const LATE_DAYS: u64 = 2;

/// Searches the audit files of `dir`, oldest first.
pub fn search(dir: &Path, q: &Query) -> Result<Results, SearchError> {
    let io = |source| SearchError::Io {
        path: dir.to_owned(),
        source,
    };
    let first_day = q.from.map(|t| t.date_naive());
    let last_day = q.to.and_then(|t| {
        t.date_naive()
            .checked_add_days(chrono::Days::new(LATE_DAYS))
    });
    let mut out = Results::default();
    // Call-ID → index in `found`, for the outcome and end lines.
    let mut open: std::collections::HashMap<String, usize> = Default::default();
    let digits = q.number.trim_start_matches('+').as_bytes().to_vec();
    for path in super::chain::files_in(dir).map_err(io)? {
        let Some((day, _)) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(super::chain::file_key)
        else {
            continue;
        };
        if first_day.is_some_and(|f| day < f) || last_day.is_some_and(|l| day > l) {
            continue;
        }
        let file = std::fs::File::open(&path).map_err(|source| SearchError::Io {
            path: path.clone(),
            source,
        })?;
        let mut r = std::io::BufReader::new(file);
        let mut bytes = Vec::new();
        loop {
            bytes.clear();
            match r.read_until(b'\n', &mut bytes) {
                Ok(0) => break,
                Ok(_) => {}
                Err(source) => {
                    return Err(SearchError::Io {
                        path: path.clone(),
                        source,
                    })
                }
            }
            // A key: quotes inside a JSON string are escaped.
            if contains(&bytes, b"\"kind\":\"gap\"") {
                match serde_json::from_slice::<GapIn>(&bytes) {
                    Ok(g) => out.gaps.extend(g.within(q)),
                    Err(_) => out.unreadable += 1,
                }
                continue;
            }
            // Most lines are decisions on other numbers: skipped before
            // they are parsed.
            let follows = !open.is_empty()
                && (contains(&bytes, b"\"kind\":\"outcome\"")
                    || contains(&bytes, b"\"kind\":\"end\""));
            if !follows && !contains(&bytes, &digits) {
                continue;
            }
            let Ok(line) = serde_json::from_slice::<Line>(&bytes) else {
                out.unreadable += 1;
                continue;
            };
            match line.kind {
                Some("decision") | None => {
                    if let Some(f) = matches(&line, q) {
                        if let Some(id) = &line.call_id {
                            open.insert(id.to_string(), out.found.len());
                        }
                        out.found.push(f);
                    }
                }
                Some("outcome") => {
                    let Some(&i) = line.call_id.as_deref().and_then(|id| open.get(id)) else {
                        continue;
                    };
                    let f = &mut out.found[i];
                    f.outcome = line.outcome.map(str::to_owned);
                    f.final_status = line.status;
                    if line.outcome == Some("answered") {
                        f.answered_at = Some(line.time.to_owned());
                    }
                }
                Some("end") => {
                    let Some(&i) = line.call_id.as_deref().and_then(|id| open.get(id)) else {
                        continue;
                    };
                    let f = &mut out.found[i];
                    if f.ended_at.is_some() {
                        continue;
                    }
                    f.ended_at = Some(line.time.to_owned());
                    f.ended_by = line.by.map(str::to_owned);
                    f.duration_s = f.answered_at.as_deref().and_then(|a| {
                        let a = DateTime::parse_from_rfc3339(a).ok()?;
                        let e = DateTime::parse_from_rfc3339(line.time).ok()?;
                        Some((e - a).num_milliseconds() as f64 / 1000.0)
                    });
                }
                Some(_) => {}
            }
        }
    }
    Ok(out)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    memchr::memmem::find(hay, needle).is_some()
}

fn matches(line: &Line<'_>, q: &Query) -> Option<Found> {
    let number = q.number.as_str();
    if line.caller != Some(number) && line.callee != Some(number) {
        return None;
    }
    if q.tenant.as_deref().is_some_and(|t| line.tenant != Some(t)) {
        return None;
    }
    let time = DateTime::parse_from_rfc3339(line.time)
        .ok()?
        .with_timezone(&Utc);
    if q.from.is_some_and(|f| time < f) || q.to.is_some_and(|t| time > t) {
        return None;
    }
    Some(Found {
        time: line.time.to_owned(),
        call_id: line.call_id.as_deref().unwrap_or_default().to_owned(),
        tenant: line.tenant.map(str::to_owned),
        caller: line.caller.map(str::to_owned),
        callee: line.callee.map(str::to_owned),
        jurisdiction: line.jurisdiction.map(str::to_owned),
        decision: line.decision.unwrap_or_default().to_owned(),
        status: line.status.unwrap_or_default(),
        reason: line.reason.map(str::to_owned),
        outcome: None,
        final_status: None,
        answered_at: None,
        ended_at: None,
        ended_by: None,
        duration_s: None,
        explanation: line.explanation.as_deref().map(str::to_owned),
    })
}

/// The columns of `--csv`, in order.
pub const CSV_HEADER: &str = "time,call_id,tenant,caller,callee,jurisdiction,decision,status,reason,outcome,final_status,answered_at,ended_at,ended_by,duration_s,explanation";

/// One CSV row (RFC 4180 quoting), without its line end.
pub fn csv_row(f: &Found) -> String {
    fn field(out: &mut String, v: &str) {
        if v.contains([',', '"', '\n', '\r']) {
            out.push('"');
            out.push_str(&v.replace('"', "\"\""));
            out.push('"');
        } else {
            out.push_str(v);
        }
    }
    let opt = |v: &Option<String>| v.clone().unwrap_or_default();
    let num = |v: Option<u16>| v.map(|n| n.to_string()).unwrap_or_default();
    let cells = [
        f.time.clone(),
        f.call_id.clone(),
        opt(&f.tenant),
        opt(&f.caller),
        opt(&f.callee),
        opt(&f.jurisdiction),
        f.decision.clone(),
        f.status.to_string(),
        opt(&f.reason),
        opt(&f.outcome),
        num(f.final_status),
        opt(&f.answered_at),
        opt(&f.ended_at),
        opt(&f.ended_by),
        f.duration_s.map(|d| format!("{d:.3}")).unwrap_or_default(),
        opt(&f.explanation),
    ];
    let mut out = String::new();
    for (i, c) in cells.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        field(&mut out, c);
    }
    out
}

/// A number as typed on the command line, in the E.164 form the trail
/// writes (`+33612345678`): spaces, dots, dashes and brackets dropped.
pub fn normalize_number(text: &str) -> Option<String> {
    let kept: String = text
        .chars()
        .filter(|c| !matches!(c, ' ' | '.' | '-' | '(' | ')'))
        .collect();
    let digits = kept.strip_prefix('+').unwrap_or(&kept);
    let ok = (6..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit());
    ok.then(|| format!("+{digits}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, lines: &[&str]) {
        let mut text = String::new();
        for l in lines {
            text.push_str(l);
            text.push('\n');
        }
        std::fs::write(dir.join(name), text).unwrap();
    }

    #[test]
    fn decisions_come_back_with_their_outcome_and_duration() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "audit-2026-11-17.jsonl",
            &[
                r#"{"time":"2026-11-17T00:00:00.000Z","kind":"chain","previous_file":null,"previous_hash":null}"#,
                r#"{"time":"2026-11-17T10:00:00.000Z","kind":"decision","call_id":"a","tenant":"t1","caller":"+33123456789","callee":"+33612345678","jurisdiction":"FR","decision":"allow","status":200,"reason":null,"explanation":"ok"}"#,
                r#"{"time":"2026-11-17T10:00:01.000Z","kind":"decision","call_id":"b","tenant":"t1","caller":"+33123456789","callee":"+33699999999","decision":"allow","status":200}"#,
                r#"{"time":"2026-11-17T10:00:05.500Z","kind":"outcome","call_id":"a","tenant":"t1","status":200,"outcome":"answered","answered":true}"#,
                r#"{"time":"2026-11-17T11:00:00.000Z","kind":"decision","call_id":"c","tenant":"t2","caller":"+33123456789","callee":"+33612345678","decision":"reject","status":603,"reason":"dnc_listed","explanation":"on the list, \"Bloctel\""}"#,
                "not json",
            ],
        );
        write(
            dir.path(),
            "audit-2026-11-18.jsonl",
            &[r#"{"time":"2026-11-18T00:00:01.750Z","kind":"end","call_id":"a","by":"carrier"}"#],
        );
        let q = Query {
            number: normalize_number("+33 6 12 34 56 78").unwrap(),
            tenant: None,
            from: Some("2026-11-17T00:00:00Z".parse().unwrap()),
            to: Some("2026-11-17T23:59:59Z".parse().unwrap()),
        };
        let r = search(dir.path(), &q).unwrap();
        assert_eq!(r.found.len(), 2, "{r:?}");
        let a = &r.found[0];
        assert_eq!(a.call_id, "a");
        assert_eq!(a.outcome.as_deref(), Some("answered"));
        assert_eq!(a.final_status, Some(200));
        assert_eq!(a.ended_by.as_deref(), Some("carrier"));
        assert_eq!(a.duration_s, Some(50396.25));
        let c = &r.found[1];
        assert_eq!((c.decision.as_str(), c.status), ("reject", 603));
        assert_eq!(c.outcome, None);
        assert_eq!(
            csv_row(c),
            "2026-11-17T11:00:00.000Z,c,t2,+33123456789,+33612345678,,reject,603,dnc_listed,,,,,,,\"on the list, \"\"Bloctel\"\"\""
        );
        assert_eq!(CSV_HEADER.split(',').count(), 16);
        // A tenant, and a period that excludes the call.
        let r = search(
            dir.path(),
            &Query {
                tenant: Some("t2".into()),
                ..q.clone()
            },
        )
        .unwrap();
        assert_eq!(r.found.len(), 1);
        let r = search(
            dir.path(),
            &Query {
                from: Some("2026-11-17T10:30:00Z".parse().unwrap()),
                tenant: None,
                ..q.clone()
            },
        )
        .unwrap();
        assert_eq!(
            r.found
                .iter()
                .map(|f| f.call_id.as_str())
                .collect::<Vec<_>>(),
            ["c"]
        );
        // The caller's number finds all three.
        let r = search(
            dir.path(),
            &Query {
                number: "+33123456789".into(),
                ..q
            },
        )
        .unwrap();
        assert_eq!(r.found.len(), 3);
    }

    /// A gap the trail records in the period is reported with what was
    /// found: a decision on the number may be among the lines lost.
    #[test]
    fn gaps_in_the_period_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let gap = |since: &str, until: &str| {
            format!(
                r#"{{"time":"{until}","kind":"gap","since":"{since}","calls_refused":3,"decisions_lost":2,"outcomes_lost":1,"ends_lost":0,"admin_changes_lost":0,"stranger_lines_lost":0,"explanation":"x"}}"#
            )
        };
        let early = gap("2026-11-17T09:00:00.000Z", "2026-11-17T09:00:04.000Z");
        let late = gap("2026-11-17T12:00:00.000Z", "2026-11-17T12:00:01.000Z");
        write(
            dir.path(),
            "audit-2026-11-17.jsonl",
            &[
                r#"{"time":"2026-11-17T10:00:00.000Z","kind":"decision","call_id":"a","tenant":"t1","caller":"+33123456789","callee":"+33612345678","decision":"allow","status":200}"#,
                &early,
                &late,
                r#"{"time":"2026-11-17T12:00:02.000Z","kind":"gap","since":"#,
            ],
        );
        let q = Query {
            number: "+33612345678".into(),
            tenant: None,
            from: Some("2026-11-17T09:00:02Z".parse().unwrap()),
            to: Some("2026-11-17T11:00:00Z".parse().unwrap()),
        };
        let r = search(dir.path(), &q).unwrap();
        assert_eq!(r.found.len(), 1);
        assert_eq!(
            r.gaps,
            [Gap {
                since: "2026-11-17T09:00:00.000Z".into(),
                until: "2026-11-17T09:00:04.000Z".into(),
                calls: 5,
                outcomes_and_ends: 1,
            }]
        );
        assert_eq!(r.unreadable, 1, "the cut gap line");
        let r = search(dir.path(), &Query { to: None, ..q }).unwrap();
        assert_eq!(r.gaps.len(), 2);
    }

    #[test]
    fn numbers_are_read_as_typed() {
        assert_eq!(
            normalize_number("+1 (305) 555-0100").as_deref(),
            Some("+13055550100")
        );
        assert_eq!(
            normalize_number("33612345678").as_deref(),
            Some("+33612345678")
        );
        assert_eq!(normalize_number("+33 6x"), None);
        assert_eq!(normalize_number("123"), None);
    }
}
