//! Holiday calendars: holiday rules (fixed dates, nth weekdays,
//! Easter-relative days, dated lists, observed and moved days) turned into
//! the dates of each year, once, when the rules are loaded; the call path
//! only looks a date up.

use std::sync::Arc;

use chrono::{Datelike, Days, NaiveDate, Weekday};
use chrono_tz::Tz;
use rustc_hash::FxHashMap;
use smallvec::SmallVec;

use super::file::{HolidayDef, Moved, Observed};
use crate::schedule::easter;

/// The years whose holidays are computed. A date outside them has no
/// holiday, which `rules check` reports for dated lists.
pub const FIRST_YEAR: i32 = 2000;
pub const LAST_YEAR: i32 = 2100;

/// A holiday rule that cannot say which day it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct HolidayError {
    pub key: &'static str,
    pub message: String,
}

fn err(key: &'static str, message: impl Into<String>) -> HolidayError {
    HolidayError {
        key,
        message: message.into(),
    }
}

/// A holiday rule, checked.
#[derive(Debug, Clone)]
pub struct HolidayRule {
    pub name: Arc<str>,
    base: Base,
    offset: i32,
    observed: Option<Observed>,
    moved: Option<Moved>,
    zones: SmallVec<[Tz; 1]>,
    pub opt_in: Option<String>,
    from: Option<NaiveDate>,
    until: Option<NaiveDate>,
    pub source: String,
    pub confidence: super::file::Confidence,
}

#[derive(Debug, Clone)]
enum Base {
    Fixed(u32, u32),
    Nth(i8, Weekday, u32),
    Easter(i32),
    Dated(Vec<NaiveDate>),
}

impl HolidayRule {
    pub fn new(d: &HolidayDef) -> Result<HolidayRule, HolidayError> {
        let mut bases = Vec::new();
        if let Some(s) = &d.date {
            let (m, day) = s
                .split_once('-')
                .and_then(|(m, d)| Some((m.parse::<u32>().ok()?, d.parse::<u32>().ok()?)))
                .filter(|&(m, d)| NaiveDate::from_ymd_opt(2024, m, d).is_some())
                .ok_or_else(|| err("date", format!("`{s}` is not a day of the year (MM-DD)")))?;
            bases.push(Base::Fixed(m, day));
        }
        if d.nth.is_some() || d.weekday.is_some() || d.month.is_some() {
            let (Some(n), Some(w), Some(m)) = (d.nth, d.weekday, d.month) else {
                return Err(err(
                    "nth",
                    "an nth-weekday holiday needs `nth`, `weekday` and `month`",
                ));
            };
            if !(n == -1 || (1..=5).contains(&n)) {
                return Err(err(
                    "nth",
                    format!("nth must be 1 to 5 or -1 (last), not {n}"),
                ));
            }
            if !(1..=12).contains(&m) {
                return Err(err("month", format!("month must be 1 to 12, not {m}")));
            }
            let w = w
                .weekday()
                .ok_or_else(|| err("weekday", "`hol` is not a weekday"))?;
            bases.push(Base::Nth(n, w, m));
        }
        if let Some(e) = d.easter {
            if e.abs() > 120 {
                return Err(err(
                    "easter",
                    format!("{e} days from Easter is not a holiday rule"),
                ));
            }
            bases.push(Base::Easter(e));
        }
        if let Some(dates) = &d.dates {
            if dates.is_empty() {
                return Err(err("dates", "an empty list of dates"));
            }
            bases.push(Base::Dated(dates.clone()));
        }
        let base = match bases.len() {
            1 => bases.remove(0),
            0 => {
                return Err(err(
                    "name",
                    format!(
                        "holiday `{}` says no day: give `date`, `nth`/`weekday`/`month`, `easter` or `dates`",
                        d.name
                    ),
                ))
            }
            _ => {
                return Err(err(
                    "name",
                    format!(
                        "holiday `{}` gives its day more than one way; give one of `date`, `nth`, `easter`, `dates`",
                        d.name
                    ),
                ))
            }
        };
        if d.observed.is_some() && d.moved.is_some() {
            return Err(err(
                "moved",
                "a holiday is either `observed` or `moved`, not both",
            ));
        }
        let offset = d.offset.unwrap_or(0);
        if offset.abs() > 31 {
            return Err(err(
                "offset",
                format!("offset {offset} is more than a month"),
            ));
        }
        let mut zones = SmallVec::new();
        for z in &d.zones {
            zones.push(
                z.parse::<Tz>()
                    .map_err(|_| err("zones", format!("`{z}` is not an IANA time zone")))?,
            );
        }
        if let (Some(f), Some(u)) = (d.from, d.until) {
            if u < f {
                return Err(err("until", format!("until {u} is before from {f}")));
            }
        }
        Ok(HolidayRule {
            name: d.name.as_str().into(),
            base,
            offset,
            observed: d.observed,
            moved: d.moved,
            zones,
            opt_in: d.opt_in.clone(),
            from: d.from,
            until: d.until,
            source: d.source.clone(),
            confidence: d.confidence,
        })
    }

    /// Whether this rule is written as dated occurrences.
    pub fn is_dated(&self) -> bool {
        matches!(self.base, Base::Dated(_))
    }

    /// The days this holiday closes in `year` (observed days included).
    pub fn dates(&self, year: i32) -> SmallVec<[NaiveDate; 2]> {
        let mut out: SmallVec<[NaiveDate; 2]> = SmallVec::new();
        let base: SmallVec<[NaiveDate; 2]> = match &self.base {
            Base::Fixed(m, d) => NaiveDate::from_ymd_opt(year, *m, *d).into_iter().collect(),
            Base::Nth(n, w, m) => nth_weekday(year, *m, *w, *n).into_iter().collect(),
            Base::Easter(e) => easter(year)
                .checked_add_signed(chrono::Duration::days(i64::from(*e)))
                .into_iter()
                .collect(),
            Base::Dated(ds) => ds.iter().copied().filter(|d| d.year() == year).collect(),
        };
        for d in base {
            let Some(d) = d.checked_add_signed(chrono::Duration::days(i64::from(self.offset)))
            else {
                continue;
            };
            match self.moved {
                Some(Moved::NextMonday) => {
                    let ahead = (7 - d.weekday().num_days_from_monday()) % 7;
                    out.extend(d.checked_add_days(Days::new(u64::from(ahead))));
                }
                None => {
                    out.push(d);
                    let shift = match (self.observed, d.weekday()) {
                        (Some(Observed::SatFriSunMon), Weekday::Sat) => -1,
                        (Some(Observed::WeekendMon), Weekday::Sat) => 2,
                        (Some(Observed::WeekendPlusTwo), Weekday::Sat | Weekday::Sun) => 2,
                        (Some(_), Weekday::Sun) => 1,
                        _ => 0,
                    };
                    if shift != 0 {
                        out.extend(d.checked_add_signed(chrono::Duration::days(shift)));
                    }
                }
            }
        }
        out.retain(|d| self.from.is_none_or(|f| *d >= f) && self.until.is_none_or(|u| *d <= u));
        out
    }
}

/// The nth (1-based; -1: last) `weekday` of `month`.
pub fn nth_weekday(year: i32, month: u32, weekday: Weekday, n: i8) -> Option<NaiveDate> {
    if n == -1 {
        let next = if month == 12 {
            NaiveDate::from_ymd_opt(year + 1, 1, 1)?
        } else {
            NaiveDate::from_ymd_opt(year, month + 1, 1)?
        };
        let last = next.pred_opt()?;
        let back = (7 + last.weekday().num_days_from_monday() - weekday.num_days_from_monday()) % 7;
        return last.checked_sub_days(Days::new(u64::from(back)));
    }
    NaiveDate::from_weekday_of_month_opt(year, month, weekday, u8::try_from(n).ok()?)
}

/// One holiday on one day.
#[derive(Debug, Clone)]
pub struct Holiday {
    pub name: Arc<str>,
    /// Only in these zones; empty: everywhere.
    pub zones: SmallVec<[Tz; 1]>,
}

/// The holidays of a calendar, by day, for [`FIRST_YEAR`]..=[`LAST_YEAR`].
#[derive(Debug, Default)]
pub struct Calendar {
    pub id: String,
    pub name: String,
    days: FxHashMap<i32, SmallVec<[Holiday; 1]>>,
    /// Dated holidays are known up to this day.
    pub dated_until: Option<NaiveDate>,
}

impl Calendar {
    /// Compiles rules; a rule with `opt_in` is kept only when `opt_ins`
    /// names it.
    pub fn new(
        id: &str,
        name: &str,
        rules: &[HolidayRule],
        dated_until: Option<NaiveDate>,
        opt_ins: &[String],
    ) -> Calendar {
        let mut days: FxHashMap<i32, SmallVec<[Holiday; 1]>> = FxHashMap::default();
        for r in rules {
            if r.opt_in.as_ref().is_some_and(|o| !opt_ins.contains(o)) {
                continue;
            }
            for year in FIRST_YEAR..=LAST_YEAR {
                for d in r.dates(year) {
                    let e = days.entry(d.num_days_from_ce()).or_default();
                    if !e.iter().any(|h| h.name == r.name && h.zones == r.zones) {
                        e.push(Holiday {
                            name: r.name.clone(),
                            zones: r.zones.clone(),
                        });
                    }
                }
            }
        }
        Calendar {
            id: id.to_owned(),
            name: name.to_owned(),
            days,
            dated_until,
        }
    }

    /// The holiday's name when `date`, local to `zone`, is one there.
    #[inline]
    pub fn holiday(&self, date: NaiveDate, zone: Tz) -> Option<&Arc<str>> {
        let hs = self.days.get(&date.num_days_from_ce())?;
        hs.iter()
            .find(|h| h.zones.is_empty() || h.zones.contains(&zone))
            .map(|h| &h.name)
    }

    /// Every holiday of `year`, by date (for `rules show`).
    pub fn year(&self, year: i32) -> Vec<(NaiveDate, &Holiday)> {
        let mut out: Vec<(NaiveDate, &Holiday)> = self
            .days
            .iter()
            .filter_map(|(d, hs)| {
                let date = NaiveDate::from_num_days_from_ce_opt(*d)?;
                (date.year() == year).then_some((date, hs))
            })
            .flat_map(|(date, hs)| hs.iter().map(move |h| (date, h)))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.name.cmp(&b.1.name)));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).unwrap()
    }

    #[test]
    fn nth_and_last_weekdays() {
        // MLK Day: third Monday of January.
        assert_eq!(nth_weekday(2026, 1, Weekday::Mon, 3), Some(d(2026, 1, 19)));
        assert_eq!(nth_weekday(2027, 1, Weekday::Mon, 3), Some(d(2027, 1, 18)));
        // Memorial Day: last Monday of May.
        assert_eq!(nth_weekday(2026, 5, Weekday::Mon, -1), Some(d(2026, 5, 25)));
        assert_eq!(nth_weekday(2027, 5, Weekday::Mon, -1), Some(d(2027, 5, 31)));
        assert_eq!(
            nth_weekday(2028, 12, Weekday::Sun, -1),
            Some(d(2028, 12, 31))
        );
        // Thanksgiving: fourth Thursday of November.
        assert_eq!(
            nth_weekday(2028, 11, Weekday::Thu, 4),
            Some(d(2028, 11, 23))
        );
        assert_eq!(nth_weekday(2026, 2, Weekday::Mon, 5), None);
    }
}
