//! The time rules against a brute-force reference written here: every
//! zone of the callee checked minute by minute. Random schedules (blocks,
//! quiet hours across midnight, unlisted days open or closed), random
//! enforcement (block or warn per rule), multi-zone numbers and zones with
//! odd offsets and DST rules, instants 2026–2030 with many near DST
//! changes. Decision, reason and Retry-After must agree exactly.

use super::super::*;
use crate::rules::applied::{TenantOptions, TenantRules};
use crate::schedule::{Calendar, Layer, Weekly, Window};
use chrono::{Datelike, TimeZone, Timelike, Weekday};
use proptest::prelude::*;

/// A week as the test states it: per weekday (Monday first) the allowed
/// minutes, either as blocks or as the complement of a quiet window.
#[derive(Debug, Clone)]
enum RefWeek {
    Days {
        days: [Vec<(u16, u16)>; 7],
        unlisted_open: [bool; 7],
    },
    Quiet(u16, u16),
}

impl RefWeek {
    /// The engine's form of the same week.
    fn weekly(&self) -> Weekly {
        match self {
            RefWeek::Days {
                days,
                unlisted_open,
            } => {
                let listed: Vec<(Weekday, Vec<(u16, u16)>)> = (0..7)
                    .filter(|&i| !unlisted_open[i] || !days[i].is_empty())
                    .map(|i| (crate::schedule::weekday(i), days[i].clone()))
                    .collect();
                // A day is "unlisted" when it is absent from `listed`; the
                // generator gives every day the same unlisted policy.
                Weekly::from_days(&listed, unlisted_open[0])
            }
            RefWeek::Quiet(s, e) => Weekly::from_quiet_hours((*s, *e)),
        }
    }

    fn allows(&self, day: usize, minute: u16) -> bool {
        match self {
            RefWeek::Days {
                days,
                unlisted_open,
            } => {
                if days[day].is_empty() && unlisted_open[day] {
                    return true;
                }
                days[day].iter().any(|&(s, e)| s <= minute && minute < e)
            }
            RefWeek::Quiet(s, e) => {
                let quiet = if s < e {
                    *s <= minute && minute < *e
                } else {
                    minute >= *s || minute < *e
                };
                !quiet
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Code {
    Holiday,
    Weekend,
    Outside,
}

struct Reference<'a> {
    /// Every jurisdiction's hours: all must allow a minute.
    legal: &'a [RefWeek],
    tenant: Option<&'a RefWeek>,
    calendar: Option<Arc<Calendar>>,
    /// The first jurisdiction's hours on its holidays (`None`: closed).
    holiday_hours: Option<&'a [(u16, u16)]>,
    /// Whether each weekday has any legal minute (the weekend/outside
    /// distinction), worked out once.
    legal_days: [bool; 7],
}

impl<'a> Reference<'a> {
    fn new(
        legal: &'a [RefWeek],
        tenant: Option<&'a RefWeek>,
        calendar: Option<Arc<Calendar>>,
        holiday_hours: Option<&'a [(u16, u16)]>,
    ) -> Self {
        Reference {
            legal,
            tenant,
            calendar,
            holiday_hours,
            legal_days: std::array::from_fn(|d| {
                (0..1440).any(|m| legal.iter().all(|w| w.allows(d, m)))
            }),
        }
    }

    /// Why `at` is closed in `zone`, straight from the rules' wording.
    fn classify(&self, at: DateTime<Utc>, zone: Tz) -> Option<Code> {
        let l = at.with_timezone(&zone);
        let date = l.date_naive();
        let day = date.weekday().num_days_from_monday() as usize;
        let minute = (l.hour() * 60 + l.minute()) as u16;
        // Holidays come from the calendar, tested on their own to the day;
        // with holiday hours, the first jurisdiction allows those on them
        // and the others their weekday hours.
        if self
            .calendar
            .as_ref()
            .is_some_and(|c| c.holiday(date, zone).is_some())
        {
            let Some(hours) = self.holiday_hours.filter(|h| !h.is_empty()) else {
                return Some(Code::Holiday);
            };
            let ok = hours.iter().any(|&(s, e)| s <= minute && minute < e)
                && self.legal[1..].iter().all(|w| w.allows(day, minute))
                && self.tenant.is_none_or(|t| t.allows(day, minute));
            return (!ok).then_some(Code::Outside);
        }
        if !self.legal_days[day] {
            return Some(if day >= 5 {
                Code::Weekend
            } else {
                Code::Outside
            });
        }
        let ok = self.legal.iter().all(|w| w.allows(day, minute))
            && self.tenant.is_none_or(|t| t.allows(day, minute));
        (!ok).then_some(Code::Outside)
    }

    fn open_everywhere(&self, at: DateTime<Utc>, zones: &[Tz]) -> bool {
        zones.iter().all(|z| self.classify(at, *z).is_none())
    }

    /// The first instant at or after `now` open in every zone: `now`
    /// itself, else the first whole minute after it, minute by minute for
    /// up to a year.
    fn next_open(&self, now: DateTime<Utc>, zones: &[Tz]) -> Option<DateTime<Utc>> {
        if self.open_everywhere(now, zones) {
            return Some(now);
        }
        let mut t =
            DateTime::from_timestamp(now.timestamp() - now.timestamp().rem_euclid(60) + 60, 0)?;
        let end = now + chrono::Duration::days(crate::schedule::SEARCH_DAYS);
        while t <= end {
            if self.open_everywhere(t, zones) {
                return Some(t);
            }
            t += chrono::Duration::minutes(1);
        }
        None
    }
}

/// Zones with DST north and south, half- and quarter-hour offsets, a
/// 30-minute DST shift (Lord Howe), a DST change at midnight (Santiago).
const ZONES: &[Tz] = &[
    Tz::Europe__Paris,
    Tz::America__New_York,
    Tz::America__Los_Angeles,
    Tz::America__Boise,
    Tz::America__St_Johns,
    Tz::America__Santiago,
    Tz::Australia__Lord_Howe,
    Tz::Pacific__Chatham,
    Tz::Asia__Kathmandu,
    Tz::Pacific__Marquesas,
    Tz::Pacific__Tahiti,
    Tz::Indian__Reunion,
    Tz::Asia__Tokyo,
];

/// Instants near the DST changes of 2026–2030 (Europe, North America,
/// Chile, Lord Howe, Chatham): the dates the changes fall on.
fn dst_dates() -> Vec<chrono::NaiveDate> {
    let mut out = Vec::new();
    for y in 2026..=2030 {
        let nth_sunday = |m: u32, n: u32| {
            let first = chrono::NaiveDate::from_ymd_opt(y, m, 1).unwrap();
            let off = (7 - first.weekday().num_days_from_sunday()) % 7;
            first + chrono::Days::new(u64::from(off + 7 * (n - 1)))
        };
        let last_sunday = |m: u32| {
            let mut d = nth_sunday(m, 4);
            while (d + chrono::Days::new(7)).month() == m {
                d = d + chrono::Days::new(7);
            }
            d
        };
        out.extend([
            last_sunday(3),
            last_sunday(10),
            nth_sunday(3, 2),
            nth_sunday(11, 1),
            nth_sunday(4, 1),
            nth_sunday(9, 1),
            nth_sunday(10, 1),
            last_sunday(9),
        ]);
    }
    out
}

fn blocks() -> impl Strategy<Value = Vec<(u16, u16)>> {
    prop::collection::vec((0u16..=96, 1u16..=40), 0..=3).prop_map(|v| {
        v.into_iter()
            .map(|(s, len)| {
                let s = s * 15;
                (s.min(1439), (s + len * 15).min(1440))
            })
            .filter(|(s, e)| s < e)
            .collect()
    })
}

fn week() -> impl Strategy<Value = RefWeek> {
    prop_oneof![
        3 => (prop::array::uniform7(blocks()), any::<bool>()).prop_map(|(days, open)| {
            RefWeek::Days { days, unlisted_open: [open; 7] }
        }),
        1 => (0u16..1440, 0u16..1440)
            .prop_filter("quiet hours of some length", |(s, e)| s != e)
            .prop_map(|(s, e)| RefWeek::Quiet(s / 5 * 5, e / 5 * 5))
            .prop_filter("quiet hours of some length", |w| !matches!(w, RefWeek::Quiet(s, e) if s == e)),
    ]
}

fn instant() -> impl Strategy<Value = DateTime<Utc>> {
    let dates = dst_dates();
    prop_oneof![
        // Anywhere in 2026–2030, to the second.
        (1_767_225_600i64..1_924_992_000).prop_map(|s| DateTime::from_timestamp(s, 0).unwrap()),
        // Within a day of a DST change, to the minute.
        (0..dates.len(), -1440i64..2880).prop_map(move |(i, m)| {
            Utc.from_utc_datetime(&dates[i].and_hms_opt(0, 0, 0).unwrap())
                + chrono::Duration::minutes(m)
        }),
    ]
}

fn zone_set() -> impl Strategy<Value = Vec<Tz>> {
    prop::collection::vec(0..ZONES.len(), 1..=3).prop_map(|v| {
        let mut z: Vec<Tz> = v.into_iter().map(|i| ZONES[i]).collect();
        z.dedup();
        z
    })
}

/// No holidays, the French calendar (with or without Alsace-Moselle), or
/// the US federal list with its observed days.
fn calendar() -> impl Strategy<Value = Option<Arc<Calendar>>> {
    static CALENDARS: std::sync::OnceLock<Vec<Arc<Calendar>>> = std::sync::OnceLock::new();
    let all = CALENDARS.get_or_init(|| {
        let cal = |set: &str, opt_ins: &[&str]| {
            let opts = TenantOptions {
                opt_ins: opt_ins.iter().map(|s| s.to_string()).collect(),
                ..TenantOptions::default()
            };
            let lib = crate::rules::Library::builtin().unwrap();
            let rules = TenantRules::new(vec![lib.sets[set].clone()], &opts);
            let w = rules.primary.window(Mode::Automated);
            w.calendars()[0].clone()
        };
        let lib = crate::rules::Library::builtin().unwrap();
        let pa = lib.find("US-PA").unwrap().1.calendars[0].compile(&[]);
        vec![cal("fr", &[]), cal("fr", &["alsace_moselle"]), Arc::new(pa)]
    });
    prop_oneof![
        Just(None),
        (0..all.len()).prop_map(move |i| Some(all[i].clone())),
    ]
}

/// One or two jurisdictions' hours (a national set and an overlay).
fn layers() -> impl Strategy<Value = Vec<RefWeek>> {
    prop::collection::vec(week(), 1..=2)
}

fn window(
    legal: &[RefWeek],
    tenant: Option<&RefWeek>,
    calendar: Option<Arc<Calendar>>,
    holiday_hours: Option<&[(u16, u16)]>,
) -> Window {
    let layers = legal
        .iter()
        .enumerate()
        .map(|(i, w)| Layer {
            label: format!("layer {i}").into(),
            periods: smallvec::smallvec![(chrono::NaiveDate::MIN, Some(w.weekly()))],
            calendars: if i == 0 {
                calendar.clone().into_iter().collect()
            } else {
                Default::default()
            },
            holiday_hours: match holiday_hours {
                Some(h) if i == 0 => smallvec::smallvec![(
                    chrono::NaiveDate::MIN,
                    crate::schedule::normalize(h.iter().copied().collect())
                )],
                _ => Default::default(),
            },
        })
        .collect();
    Window::new(layers, tenant.map(RefWeek::weekly))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// The schedule alone: every zone's reason, and the next instant open
    /// in all zones.
    #[test]
    fn schedule_matches_the_minute_by_minute_reference(
        legal in layers(),
        tenant in prop::option::of(week()),
        calendar in calendar(),
        holiday_hours in prop::option::of(blocks()),
        zones in zone_set(),
        now in instant(),
    ) {
        let hol = holiday_hours.as_deref();
        let w = window(&legal, tenant.as_ref(), calendar.clone(), hol);
        let r = Reference::new(&legal, tenant.as_ref(), calendar, hol);
        for &z in &zones {
            let got = w.check_zone(now, z).err().map(|c| match c {
                crate::schedule::Closed::PublicHoliday(_) => Code::Holiday,
                crate::schedule::Closed::Weekend => Code::Weekend,
                crate::schedule::Closed::OutsideHours => Code::Outside,
            });
            prop_assert_eq!(got, r.classify(now, z), "zone {}", z);
        }
        prop_assert_eq!(w.next_allowed(now, &zones), r.next_open(now, &zones));
    }
}

/// Numbers whose zones are one, two or three zones (rules.md).
const CALLEES: &[&str] = &[
    "+33142000000",  // Paris
    "+68987123456",  // Gambier, Marquesas, Tahiti
    "+12083001234",  // Boise, Los Angeles
    "+12125550123",  // New York
    "+262262123456", // Réunion
];

fn policy(window: Window, automated: [Enforce; RULES], manual: [Enforce; RULES]) -> TenantPolicy {
    // The French set with only the window under test: every callee is
    // judged under it (unknown_jurisdiction = allow).
    let mut rules = TenantRules::builtin(
        &["fr"],
        &TenantOptions {
            unknown_allow: true,
            ..TenantOptions::default()
        },
    );
    rules.each_mut(|a| {
        *a.window_mut(Mode::Automated) = window.clone();
        *a.window_mut(Mode::Manual) = window.clone();
        a.caps.clear();
        a.cooloffs.clear();
        a.consent.clear();
        a.caller_id.clear();
    });
    TenantPolicy {
        id: "t".into(),
        country: Country::FR,
        rules,
        default_mode: Mode::Automated,
        mode_header: "X-Dial-Mode".into(),
        campaign: Campaign::Contract,
        caller_ids: Vec::new(),
        dnc: Vec::new(),
        consent: Vec::new(),
        enforce_automated: automated,
        enforce_manual: manual,
        responses: Arc::new(Responses::default()),
    }
}

fn enforcement() -> impl Strategy<Value = [Enforce; RULES]> {
    prop::array::uniform13(prop_oneof![Just(Enforce::Block), Just(Enforce::Warn)])
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// The whole decision: forwarded only when every failure in every zone
    /// is enforced as `warn`; the first blocking rule reported; Retry-After
    /// the first instant open in every zone.
    #[test]
    fn decision_matches_the_reference(
        legal in layers(),
        tenant in prop::option::of(week()),
        calendar in calendar(),
        holiday_hours in prop::option::of(blocks()),
        callee in 0..CALLEES.len(),
        now in instant(),
        automated in enforcement(),
        manual in enforcement(),
        mode in prop_oneof![Just("predictive"), Just("preview")],
    ) {
        let hol = holiday_hours.as_deref();
        let p = policy(window(&legal, tenant.as_ref(), calendar.clone(), hol), automated, manual);
        let facts = Facts::new("+33162000000", CALLEES[callee], Some(mode));
        let d = p.decide(&facts, &History::default(), now);
        let zones = d.zones;
        let r = Reference::new(&legal, tenant.as_ref(), calendar, hol);
        let mut failed: Vec<Rule> = Vec::new();
        for code in [Code::Holiday, Code::Weekend, Code::Outside] {
            if zones.iter().any(|z| r.classify(now, *z) == Some(code)) {
                failed.push(match code {
                    Code::Holiday => Rule::PublicHoliday,
                    Code::Weekend => Rule::Weekend,
                    Code::Outside => Rule::OutsideHours,
                });
            }
        }
        let enforce = if mode == "preview" { &manual } else { &automated };
        let blocking = failed.iter().find(|r| enforce[r.index()] == Enforce::Block);
        let rules: Vec<Rule> = d.failed_rules.iter().map(|f| f.rule).collect();
        prop_assert_eq!(rules, failed.clone());
        match (blocking, failed.first()) {
            (Some(rule), _) => {
                prop_assert_eq!(d.decision, Outcome::Reject);
                prop_assert_eq!(d.reason, Some(rule.code()));
                prop_assert_eq!(d.status, 480);
                let retry = r.next_open(now, zones).map(|n| (n - now).num_seconds().max(1) as u64);
                prop_assert_eq!(d.retry_after, retry);
            }
            (None, Some(rule)) => {
                prop_assert_eq!(d.decision, Outcome::Warn);
                prop_assert_eq!(d.reason, Some(rule.code()));
            }
            (None, None) => prop_assert_eq!(d.decision, Outcome::Allow),
        }
    }
}
