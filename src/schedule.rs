//! When a callee may be called: weekly time blocks in the callee's local
//! time, public holidays, and the next allowed instant (for `Retry-After`).
//!
//! A call is allowed at an instant when, in *every* zone the callee number
//! may be in, the local date is not a holiday and the local time lies in
//! the intersection of the legal blocks and the tenant's own blocks.

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Timelike, Utc, Weekday};
use chrono_tz::Tz;
use smallvec::SmallVec;
use std::fmt::{self, Write as _};
use std::sync::Arc;

pub use crate::rules::calendar::Calendar;

/// Minutes since local midnight, half-open `[start, end)`.
pub type Block = (u16, u16);
pub type Blocks = SmallVec<[Block; 4]>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}`: expected HH:MM-HH:MM with HH:MM from 00:00 to 24:00")]
pub struct BlockError(pub String);

fn minutes(s: &str) -> Option<u16> {
    let (h, m) = s.trim().split_once(':')?;
    let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
    (h <= 24 && m < 60 && h * 60 + m <= 1440).then_some(h * 60 + m)
}

/// `HH:MM-HH:MM`. `end <= start` means across midnight (quiet hours only).
pub fn parse_span(s: &str) -> Result<(u16, u16), BlockError> {
    let (a, b) = s.split_once('-').ok_or_else(|| BlockError(s.into()))?;
    match (minutes(a), minutes(b)) {
        (Some(a), Some(b)) => Ok((a, b)),
        _ => Err(BlockError(s.into())),
    }
}

/// Allowed blocks for each weekday (Monday first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Weekly {
    days: [Blocks; 7],
}

impl Weekly {
    pub fn always() -> Weekly {
        Weekly {
            days: std::array::from_fn(|_| Blocks::from_slice(&[(0, 1440)])),
        }
    }

    /// From explicit day blocks; days absent from `days` are closed, or
    /// open all day when `unlisted_open`.
    pub fn from_days(days: &[(Weekday, Vec<Block>)], unlisted_open: bool) -> Weekly {
        let mut w: [Blocks; 7] = std::array::from_fn(|_| {
            if unlisted_open {
                Blocks::from_slice(&[(0, 1440)])
            } else {
                Blocks::new()
            }
        });
        for (d, blocks) in days {
            let mut b: Blocks = blocks.iter().copied().filter(|(s, e)| s < e).collect();
            b.sort_unstable();
            w[d.num_days_from_monday() as usize] = normalize(b);
        }
        Weekly { days: w }
    }

    /// Everything but a daily quiet window, which may cross midnight.
    pub fn from_quiet_hours((start, end): (u16, u16)) -> Weekly {
        let b: Blocks = if start < end {
            [(0, start), (end, 1440)]
                .into_iter()
                .filter(|(s, e)| s < e)
                .collect()
        } else {
            Blocks::from_slice(&[(end, start)])
        };
        Weekly {
            days: std::array::from_fn(|_| b.clone()),
        }
    }

    /// From each day's blocks, Monday first.
    pub fn from_blocks(days: [Blocks; 7]) -> Weekly {
        Weekly {
            days: days.map(normalize),
        }
    }

    pub fn day(&self, d: Weekday) -> &[Block] {
        &self.days[d.num_days_from_monday() as usize]
    }
}

pub fn normalize(mut b: Blocks) -> Blocks {
    let mut out = Blocks::new();
    b.sort_unstable();
    for (s, e) in b {
        match out.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

/// Whether `minute` lies in one of `blocks`.
fn covers(blocks: &[Block], minute: u16) -> bool {
    blocks.iter().any(|&(s, e)| s <= minute && minute < e)
}

pub fn intersect(a: &[Block], b: &[Block]) -> Blocks {
    let mut out = Blocks::new();
    for &(s1, e1) in a {
        for &(s2, e2) in b {
            let (s, e) = (s1.max(s2), e1.min(e2));
            if s < e {
                out.push((s, e));
            }
        }
    }
    normalize(out)
}

/// Easter Sunday (Gregorian), by the anonymous Meeus/Jones/Butcher
/// computus: a dozen integer operations, not worth a dependency.
pub fn easter(year: i32) -> NaiveDate {
    let a = year % 19;
    let b = year / 100;
    let c = year % 100;
    let d = b / 4;
    let e = b % 4;
    let f = (b + 8) / 25;
    let g = (b - f + 1) / 3;
    let h = (19 * a + b - d - g + 15) % 30;
    let i = c / 4;
    let k = c % 4;
    let l = (32 + 2 * e + 2 * i - h - k) % 7;
    let m = (a + 11 * h + 22 * l) / 451;
    let month = (h + l - 7 * m + 114) / 31;
    let day = (h + l - 7 * m + 114) % 31 + 1;
    NaiveDate::from_ymd_opt(year, month as u32, day as u32).expect("computus yields a valid date")
}

/// Why a time check failed, in the contract's rule codes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Closed {
    PublicHoliday(Arc<str>),
    Weekend,
    OutsideHours,
}

impl Closed {
    pub fn code(&self) -> &'static str {
        match self {
            Closed::PublicHoliday(_) => "public_holiday",
            Closed::Weekend => "weekend",
            Closed::OutsideHours => "outside_hours",
        }
    }
}

/// One jurisdiction's part of a window, kept to say which law closed it.
#[derive(Debug, Clone)]
pub struct Layer {
    /// The law, as explanations name it ("US-FL Florida FTSA, …").
    pub label: Arc<str>,
    /// Its hours from each date on (sorted); `None`: it sets no hours.
    pub periods: SmallVec<[(NaiveDate, Option<Weekly>); 1]>,
    pub calendars: SmallVec<[Arc<Calendar>; 1]>,
    /// Its hours on its calendars' holidays from each date on (sorted);
    /// empty blocks, or no entry: no calls.
    pub holiday_hours: SmallVec<[(NaiveDate, Blocks); 1]>,
}

impl Layer {
    fn hours_on(&self, date: NaiveDate) -> Option<&Weekly> {
        period_on(&self.periods, date).and_then(Option::as_ref)
    }

    fn holiday_hours_on(&self, date: NaiveDate) -> &[Block] {
        period_on(&self.holiday_hours, date).map_or(&[], |b| &b[..])
    }

    /// The holiday `date` is in `zone` for this layer's calendars.
    fn holiday(&self, date: NaiveDate, zone: Tz) -> Option<&Arc<str>> {
        self.calendars.iter().find_map(|c| c.holiday(date, zone))
    }
}

fn period_on<T>(periods: &[(NaiveDate, T)], date: NaiveDate) -> Option<&T> {
    match periods {
        [] => None,
        [only] => Some(&only.1),
        _ => {
            let i = periods.partition_point(|(d, _)| *d <= date);
            Some(&periods[i.saturating_sub(1)].1)
        }
    }
}

/// The legal windows of every jurisdiction of a callee and the tenant's
/// own, evaluated together.
#[derive(Debug, Clone)]
pub struct Window {
    /// The layers' hours intersected, from each date on (sorted; the first
    /// starts at `NaiveDate::MIN`).
    legal: SmallVec<[(NaiveDate, Weekly); 1]>,
    calendars: SmallVec<[Arc<Calendar>; 2]>,
    /// Whether some layer allows calls on its holidays: a holiday then
    /// needs every layer's hours that day, not a closed day.
    holiday_hours: bool,
    pub tenant: Option<Weekly>,
    pub layers: SmallVec<[Layer; 2]>,
}

/// How far ahead [`Window::next_allowed`] searches. A year covers every
/// holiday run and every weekly schedule; a window that stays closed longer
/// is reported as having no allowed instant, never as a guess.
pub const SEARCH_DAYS: i64 = 366;

/// An interval of UTC seconds, half-open.
type Span = (i64, i64);
type Spans = SmallVec<[Span; 16]>;

impl Window {
    /// The window of `layers` (all must allow a call) and the tenant's
    /// schedule.
    pub fn new(layers: SmallVec<[Layer; 2]>, tenant: Option<Weekly>) -> Window {
        let mut starts: Vec<NaiveDate> = vec![NaiveDate::MIN];
        for l in &layers {
            starts.extend(l.periods.iter().map(|p| p.0));
        }
        starts.sort_unstable();
        starts.dedup();
        let legal = starts
            .into_iter()
            .map(|d| {
                let w = layers
                    .iter()
                    .filter_map(|l| l.hours_on(d))
                    .fold(Weekly::always(), |acc, w| acc.intersect(w));
                (d, w)
            })
            .collect();
        let mut calendars: SmallVec<[Arc<Calendar>; 2]> = SmallVec::new();
        for c in layers.iter().flat_map(|l| l.calendars.iter()) {
            if !calendars.iter().any(|x| Arc::ptr_eq(x, c)) {
                calendars.push(c.clone());
            }
        }
        let holiday_hours = layers
            .iter()
            .any(|l| l.holiday_hours.iter().any(|(_, b)| !b.is_empty()));
        Window {
            legal,
            calendars,
            holiday_hours,
            tenant,
            layers,
        }
    }

    /// One layer of fixed hours and calendars (tests, simple sets).
    pub fn simple(legal: Weekly, calendars: Vec<Arc<Calendar>>, tenant: Option<Weekly>) -> Window {
        Window::new(
            smallvec::smallvec![Layer {
                label: "legal hours".into(),
                periods: smallvec::smallvec![(NaiveDate::MIN, Some(legal))],
                calendars: calendars.into_iter().collect(),
                holiday_hours: SmallVec::new(),
            }],
            tenant,
        )
    }

    /// Every layer's holiday calendars.
    pub fn calendars(&self) -> &[Arc<Calendar>] {
        &self.calendars
    }

    /// The holiday `date` is in `zone`, for any layer.
    pub fn holiday(&self, date: NaiveDate, zone: Tz) -> Option<&Arc<str>> {
        self.calendars.iter().find_map(|c| c.holiday(date, zone))
    }

    /// The legal hours in force on `date`.
    pub fn legal_on(&self, date: NaiveDate) -> &Weekly {
        period_on(&self.legal, date).expect("a window has a period from NaiveDate::MIN")
    }

    fn day_blocks(&self, date: NaiveDate, zone: Tz) -> Result<Blocks, Closed> {
        if let Some(name) = self.holiday(date, zone) {
            if !self.holiday_hours {
                return Err(Closed::PublicHoliday(name.clone()));
            }
            return self.holiday_blocks(date, zone);
        }
        let legal = self.legal_on(date).day(date.weekday());
        if legal.is_empty() {
            return Err(if matches!(date.weekday(), Weekday::Sat | Weekday::Sun) {
                Closed::Weekend
            } else {
                Closed::OutsideHours
            });
        }
        let b = match &self.tenant {
            Some(t) => intersect(legal, t.day(date.weekday())),
            None => Blocks::from_slice(legal),
        };
        if b.is_empty() {
            return Err(Closed::OutsideHours);
        }
        Ok(b)
    }

    /// A holiday's blocks when some layer allows calls on its holidays:
    /// each layer's holiday hours where `date` is one of its holidays, its
    /// weekday hours where it is not, intersected.
    fn holiday_blocks(&self, date: NaiveDate, zone: Tz) -> Result<Blocks, Closed> {
        let mut acc = Blocks::from_slice(&[(0, 1440)]);
        for l in &self.layers {
            let day = match l.holiday(date, zone) {
                Some(name) => {
                    let b = l.holiday_hours_on(date);
                    if b.is_empty() {
                        return Err(Closed::PublicHoliday(name.clone()));
                    }
                    b
                }
                None => match l.hours_on(date) {
                    Some(w) => w.day(date.weekday()),
                    None => continue,
                },
            };
            acc = intersect(&acc, day);
        }
        if let Some(t) = &self.tenant {
            acc = intersect(&acc, t.day(date.weekday()));
        }
        if acc.is_empty() {
            return Err(Closed::OutsideHours);
        }
        Ok(acc)
    }

    /// Whether `at` is allowed in `zone`; the reason when it is not. A day
    /// that is a holiday, or a weekend day with no legal hours, is closed
    /// as a whole (`public_holiday`, `weekend`); otherwise the local
    /// minute must lie in a block (`outside_hours`).
    pub fn check_zone(&self, at: DateTime<Utc>, zone: Tz) -> Result<(), Closed> {
        let local = at.with_timezone(&zone);
        let blocks = self.day_blocks(local.date_naive(), zone)?;
        let minute = (local.hour() * 60 + local.minute()) as u16;
        if covers(&blocks, minute) {
            Ok(())
        } else {
            Err(Closed::OutsideHours)
        }
    }

    /// Whether `at` is allowed in every zone; the first zone's reason when
    /// it is not. See [`Window::closed_zones`] for every zone's reason.
    pub fn check(&self, at: DateTime<Utc>, zones: &[Tz]) -> Result<(), Closed> {
        zones.iter().try_for_each(|z| self.check_zone(at, *z))
    }

    /// The zones in which `at` is not allowed, each with its reason: a call
    /// is allowed only when this is empty.
    pub fn closed_zones(&self, at: DateTime<Utc>, zones: &[Tz]) -> SmallVec<[(Tz, Closed); 2]> {
        zones
            .iter()
            .filter_map(|&z| self.check_zone(at, z).err().map(|c| (z, c)))
            .collect()
    }

    /// Appends "; LAW" for each law that closes `at` in `zone`, with what
    /// it allows that day ("; US-FL Florida FTSA: calls 08:00–20:00 callee
    /// time"), unless `out` names it already (another zone of the callee):
    /// the explanation of a time refusal names them.
    pub fn write_closing_laws(&self, at: DateTime<Utc>, zone: Tz, out: &mut String) {
        let local = at.with_timezone(&zone);
        let date = local.date_naive();
        let minute = (local.hour() * 60 + local.minute()) as u16;
        let wd = date.weekday();
        let judge = |out: &mut String, label: &str, blocks: &[Block]| {
            if covers(blocks, minute) {
                return;
            }
            if blocks.is_empty() {
                push_law(out, label, format_args!(": no calls on {}", day_name(wd)));
            } else {
                let b = BlocksText(blocks);
                push_law(out, label, format_args!(": calls {b} callee time"));
            }
        };
        for l in &self.layers {
            if let Some(h) = l.holiday(date, zone) {
                let blocks = l.holiday_hours_on(date);
                if blocks.is_empty() {
                    push_law(
                        out,
                        &l.label,
                        format_args!(": no calls on public holidays ({h})"),
                    );
                } else if !covers(blocks, minute) {
                    let b = BlocksText(blocks);
                    push_law(
                        out,
                        &l.label,
                        format_args!(": calls {b} callee time on public holidays ({h})"),
                    );
                }
            } else if let Some(w) = l.hours_on(date) {
                judge(out, &l.label, w.day(wd));
            }
        }
        if let Some(t) = &self.tenant {
            judge(out, "the tenant's schedule", t.day(wd));
        }
    }

    /// Whether some hour of the week is open, holidays aside: a schedule
    /// for which this is false refuses every call.
    pub fn opens_in_a_week(&self) -> bool {
        (0..7).map(weekday).any(|d| {
            let legal = self.legal.last().map_or(&[][..], |l| l.1.day(d));
            match &self.tenant {
                Some(t) => !intersect(legal, t.day(d)).is_empty(),
                None => !legal.is_empty(),
            }
        })
    }

    /// The first instant at or after `at` allowed in every zone, searched
    /// up to [`SEARCH_DAYS`] ahead; `None` when there is none.
    ///
    /// Exact, not sampled: each zone's allowed time is built as UTC
    /// intervals from its blocks, piece by piece between UTC-offset
    /// changes (so a block start that falls in a DST gap opens when the
    /// clock jumps, and an hour repeated at the end of DST is allowed both
    /// times), and the zones' intervals are intersected.
    pub fn next_allowed(&self, at: DateTime<Utc>, zones: &[Tz]) -> Option<DateTime<Utc>> {
        let start = at.timestamp();
        let first_zone = *zones.first()?;
        // A day at a time, each ending at the first zone's local midnight:
        // most answers lie within one (this evening -> tomorrow morning),
        // and each day searched costs its spans. Spans cut at a chunk's end
        // are exact for this: only the first start matters.
        let offset = offset_at(first_zone, start);
        let mut from = start;
        let mut to = ((start + offset).div_euclid(86_400) + 1) * 86_400 - offset;
        let horizon = start + SEARCH_DAYS * 86_400;
        while from < horizon {
            if let Some(t) = self.first_allowed(start, from, to, zones) {
                // The last day's piece runs past the horizon: an instant
                // beyond it is "none", as documented, not a guess.
                if t > horizon {
                    return None;
                }
                return if t == start {
                    Some(at)
                } else {
                    DateTime::from_timestamp(t, 0)
                };
            }
            (from, to) = (to, to + 86_400);
        }
        None
    }

    /// The first second `>= at` in `[from, to)` allowed in every zone.
    fn first_allowed(&self, at: i64, from: i64, to: i64, zones: &[Tz]) -> Option<i64> {
        let (first, rest) = zones.split_first()?;
        let mut acc = Spans::new();
        self.allowed_spans(*first, from, to, &mut acc);
        let mut other = Spans::new();
        for &z in rest {
            if acc.is_empty() {
                return None;
            }
            other.clear();
            self.allowed_spans(z, from, to, &mut other);
            acc = intersect_spans(&acc, &other);
        }
        acc.iter().find(|s| s.1 > at).map(|s| s.0.max(at))
    }

    /// Appends the UTC intervals of `[from, to)` that are allowed in `zone`.
    fn allowed_spans(&self, zone: Tz, from: i64, to: i64, out: &mut Spans) {
        let mut u0 = from;
        while u0 < to {
            let offset = offset_at(zone, u0);
            // Offsets change at most once a day: probe a day ahead, and
            // bisect to the second when it changed.
            let mut u1 = (u0 + 86_400).min(to);
            if offset_at(zone, u1 - 1) != offset {
                // offset_at(lo) == offset, offset_at(hi) != offset
                let (mut lo, mut hi) = (u0, u1 - 1);
                while hi - lo > 1 {
                    let mid = lo + (hi - lo) / 2;
                    if offset_at(zone, mid) == offset {
                        lo = mid;
                    } else {
                        hi = mid;
                    }
                }
                u1 = hi;
            }
            self.spans_with_offset(zone, u0, u1, offset, out);
            u0 = u1;
        }
    }

    /// The allowed intervals of `[u0, u1)`, during which `zone`'s clock is
    /// UTC + `offset` seconds.
    fn spans_with_offset(&self, zone: Tz, u0: i64, u1: i64, offset: i64, out: &mut Spans) {
        let (l0, l1) = (u0 + offset, u1 + offset);
        for day in l0.div_euclid(86_400)..=(l1 - 1).div_euclid(86_400) {
            let Some(date) = i32::try_from(day)
                .ok()
                .and_then(|d| d.checked_add(UNIX_EPOCH_CE))
                .and_then(NaiveDate::from_num_days_from_ce_opt)
            else {
                continue;
            };
            let Ok(blocks) = self.day_blocks(date, zone) else {
                continue;
            };
            let midnight = day * 86_400;
            for (s, e) in blocks {
                let a = (midnight + i64::from(s) * 60).max(l0);
                let b = (midnight + i64::from(e) * 60).min(l1);
                if a < b {
                    push_span(out, (a - offset, b - offset));
                }
            }
        }
    }
}

/// The weekday of index `i`, Monday 0 (the order of [`Weekly`]'s days).
pub fn weekday(i: usize) -> Weekday {
    [
        Weekday::Mon,
        Weekday::Tue,
        Weekday::Wed,
        Weekday::Thu,
        Weekday::Fri,
        Weekday::Sat,
        Weekday::Sun,
    ][i % 7]
}

fn day_name(d: Weekday) -> &'static str {
    match d {
        Weekday::Mon => "Mondays",
        Weekday::Tue => "Tuesdays",
        Weekday::Wed => "Wednesdays",
        Weekday::Thu => "Thursdays",
        Weekday::Fri => "Fridays",
        Weekday::Sat => "Saturdays",
        Weekday::Sun => "Sundays",
    }
}

/// "08:00–20:00" or "10:00–13:00, 14:00–20:00".
pub fn blocks_text(blocks: &[Block]) -> String {
    BlocksText(blocks).to_string()
}

/// [`blocks_text`] without the allocation, for explanations built per call.
pub struct BlocksText<'a>(pub &'a [Block]);

impl fmt::Display for BlocksText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, &(s, e)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write_hm(f, s)?;
            f.write_char('–')?;
            write_hm(f, e)?;
        }
        Ok(())
    }
}

/// Writes `minutes` after midnight as "HH:MM" (24:00 included).
///
/// By hand, as are the other writers of explanation text here: `core::fmt`'s
/// padded integers made up about a third of a refused call's decision.
pub fn write_hm(f: &mut impl fmt::Write, minutes: u16) -> fmt::Result {
    write_2d(f, u32::from(minutes / 60))?;
    f.write_char(':')?;
    write_2d(f, u32::from(minutes % 60))
}

/// Writes `n % 100` as two digits.
pub fn write_2d(f: &mut impl fmt::Write, n: u32) -> fmt::Result {
    f.write_char(char::from(b'0' + (n / 10 % 10) as u8))?;
    f.write_char(char::from(b'0' + (n % 10) as u8))
}

/// Appends "; LABEL…" to `out` unless it holds that text already.
fn push_law(out: &mut String, label: &str, rest: fmt::Arguments<'_>) {
    let start = out.len();
    out.push_str("; ");
    out.push_str(label);
    let _ = out.write_fmt(rest);
    if out[..start].contains(&out[start..]) {
        out.truncate(start);
    }
}

/// Days from 0001-01-01 (chrono's day 1) to 1970-01-01.
const UNIX_EPOCH_CE: i32 = 719_163;

fn offset_at(zone: Tz, secs: i64) -> i64 {
    use chrono::Offset;
    let Some(t) = DateTime::from_timestamp(secs, 0) else {
        return 0;
    };
    i64::from(
        zone.offset_from_utc_datetime(&t.naive_utc())
            .fix()
            .local_minus_utc(),
    )
}

/// Appends a span, merging it with the last one when they touch.
fn push_span(out: &mut Spans, s: Span) {
    match out.last_mut() {
        Some(last) if s.0 <= last.1 => last.1 = last.1.max(s.1),
        _ => out.push(s),
    }
}

/// The intersection of two sorted lists of disjoint spans.
fn intersect_spans(a: &[Span], b: &[Span]) -> Spans {
    let (mut i, mut j) = (0, 0);
    let mut out = Spans::new();
    while i < a.len() && j < b.len() {
        let (s, e) = (a[i].0.max(b[j].0), a[i].1.min(b[j].1));
        if s < e {
            out.push((s, e));
        }
        if a[i].1 < b[j].1 {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

impl Weekly {
    /// The blocks both weeks allow, day by day.
    pub fn intersect(&self, other: &Weekly) -> Weekly {
        Weekly {
            days: std::array::from_fn(|i| intersect(&self.days[i], &other.days[i])),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::policy::Mode;
    use crate::rules::applied::{TenantOptions, TenantRules};

    /// A built-in set's national window (automated calls).
    fn national(set: &str, opt_ins: &[&str]) -> Window {
        let opts = TenantOptions {
            opt_ins: opt_ins.iter().map(|s| s.to_string()).collect(),
            ..TenantOptions::default()
        };
        TenantRules::builtin(&[set], &opts)
            .primary
            .window(Mode::Automated)
            .clone()
    }

    fn fr() -> Window {
        national("fr", &[])
    }

    fn holiday(n: &str) -> Closed {
        Closed::PublicHoliday(n.into())
    }

    fn at(zone: Tz, y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        zone.with_ymd_and_hms(y, mo, d, h, mi, 0)
            .single()
            .unwrap()
            .with_timezone(&Utc)
    }

    /// A layer with holiday hours takes them on its holidays, the other
    /// layers and the tenant keep their weekday hours, a layer that closes
    /// its holidays still closes the day.
    #[test]
    fn holiday_hours_intersect_with_the_other_layers() {
        let paris = Tz::Europe__Paris;
        let cal = fr().calendars()[0].clone();
        let daily = |s: u16, e: u16| {
            Weekly::from_blocks(std::array::from_fn(|_| Blocks::from_slice(&[(s, e)])))
        };
        let layer = |label: &str, w: Weekly, cals: Vec<Arc<Calendar>>, hol: &[Block]| Layer {
            label: label.into(),
            periods: smallvec::smallvec![(NaiveDate::MIN, Some(w))],
            calendars: cals.into_iter().collect(),
            holiday_hours: smallvec::smallvec![(NaiveDate::MIN, Blocks::from_slice(hol))],
        };
        let afternoons = layer(
            "afternoons",
            daily(480, 1260),
            vec![cal.clone()],
            &[(780, 1260)],
        );
        let plain = layer("plain", daily(600, 1200), vec![], &[]);
        let w = Window::new(
            smallvec::smallvec![afternoons.clone(), plain.clone()],
            Some(daily(0, 900)),
        );
        // Friday 25 December 2026: 13:00-15:00 only.
        let xmas = |h, m| at(paris, 2026, 12, 25, h, m);
        assert_eq!(w.check(xmas(12, 59), &[paris]), Err(Closed::OutsideHours));
        assert_eq!(w.check(xmas(13, 0), &[paris]), Ok(()));
        assert_eq!(w.check(xmas(15, 0), &[paris]), Err(Closed::OutsideHours));
        assert_eq!(w.next_allowed(xmas(10, 0), &[paris]), Some(xmas(13, 0)));
        assert_eq!(
            w.next_allowed(xmas(15, 0), &[paris]),
            Some(at(paris, 2026, 12, 26, 10, 0))
        );
        let mut why = String::new();
        w.write_closing_laws(xmas(12, 0), paris, &mut why);
        assert_eq!(
            why,
            "; afternoons: calls 13:00–21:00 callee time on public holidays (Christmas Day)"
        );
        // An ordinary day keeps the weekday hours.
        assert_eq!(w.check(at(paris, 2026, 12, 24, 10, 0), &[paris]), Ok(()));
        let closing = layer("closing", Weekly::always(), vec![cal], &[]);
        let w = Window::new(smallvec::smallvec![afternoons, plain, closing], None);
        assert_eq!(
            w.check(xmas(14, 0), &[paris]),
            Err(holiday("Christmas Day"))
        );
        assert_eq!(
            w.next_allowed(xmas(14, 0), &[paris]),
            Some(at(paris, 2026, 12, 26, 10, 0))
        );
    }

    #[test]
    fn boundaries_in_every_french_zone() {
        // Tuesday 17 November 2026, a working day everywhere.
        for zone in [
            Tz::Europe__Paris,
            Tz::Indian__Reunion,
            Tz::America__Martinique,
            Tz::America__Cayenne,
            Tz::Pacific__Noumea,
        ] {
            for (h, m, ok) in [
                (9, 59, false),
                (10, 0, true),
                (12, 59, true),
                (13, 0, false),
                (13, 59, false),
                (14, 0, true),
                (19, 59, true),
                (20, 0, false),
            ] {
                let r = fr().check(at(zone, 2026, 11, 17, h, m), &[zone]);
                assert_eq!(r.is_ok(), ok, "{zone} {h:02}:{m:02}");
                if !ok {
                    assert_eq!(r, Err(Closed::OutsideHours));
                }
            }
        }
    }

    #[test]
    fn friday_evening_retries_monday_ten() {
        let paris = Tz::Europe__Paris;
        let fri = at(paris, 2026, 11, 20, 19, 59);
        assert!(fr().check(fri, &[paris]).is_ok());
        let late = at(paris, 2026, 11, 20, 20, 0);
        assert_eq!(fr().check(late, &[paris]), Err(Closed::OutsideHours));
        assert_eq!(
            fr().next_allowed(late, &[paris]),
            Some(at(paris, 2026, 11, 23, 10, 0))
        );
        let sat = at(paris, 2026, 11, 21, 11, 0);
        assert_eq!(fr().check(sat, &[paris]), Err(Closed::Weekend));
        assert_eq!(
            fr().next_allowed(sat, &[paris]),
            Some(at(paris, 2026, 11, 23, 10, 0))
        );
        // Lunch break: retry at 14:00 the same day.
        let lunch = at(paris, 2026, 11, 17, 13, 30);
        assert_eq!(
            fr().next_allowed(lunch, &[paris]),
            Some(at(paris, 2026, 11, 17, 14, 0))
        );
    }

    #[test]
    fn across_the_year_end() {
        // Thursday 31 Dec 2026 20:00 → 1 Jan is a holiday, 2–3 Jan a
        // weekend: Monday 4 Jan 2027 10:00.
        let paris = Tz::Europe__Paris;
        let t = at(paris, 2026, 12, 31, 20, 0);
        assert_eq!(fr().check(t, &[paris]), Err(Closed::OutsideHours));
        assert_eq!(
            fr().next_allowed(t, &[paris]),
            Some(at(paris, 2027, 1, 4, 10, 0))
        );
        let t = at(paris, 2027, 1, 1, 11, 0);
        assert_eq!(fr().check(t, &[paris]), Err(holiday("New Year's Day")));
        // Réunion adds 20 Dec; 25 Dec 2026 is a Friday: from Friday 18 Dec
        // 20:00 the next day is Monday 21 Dec.
        let re = Tz::Indian__Reunion;
        assert_eq!(
            fr().next_allowed(at(re, 2026, 12, 18, 20, 0), &[re]),
            Some(at(re, 2026, 12, 21, 10, 0))
        );
    }

    #[test]
    fn dst_changes_2026_and_2027() {
        let paris = Tz::Europe__Paris;
        // Europe: clocks go forward on 29 Mar 2026 and 28 Mar 2027 (Sundays),
        // back on 25 Oct 2026 and 31 Oct 2027. The Monday after each: 10:00
        // local is 08:00 UTC in summer and 09:00 UTC in winter.
        for (y, m, d, utc_hour) in [
            (2026, 3, 30, 8),
            (2026, 10, 26, 9),
            (2027, 3, 29, 8),
            (2027, 11, 1, 9),
        ] {
            let monday = NaiveDate::from_ymd_opt(y, m, d).unwrap();
            let sunday =
                Utc.from_utc_datetime(&monday.pred_opt().unwrap().and_hms_opt(12, 0, 0).unwrap());
            let next = fr().next_allowed(sunday, &[paris]).unwrap();
            // 29 Mar 2027 is Easter Monday and 1 Nov 2027 All Saints' Day:
            // the next allowed day is the day after.
            let day = if matches!((y, m, d), (2027, 11, 1) | (2027, 3, 29)) {
                monday.succ_opt().unwrap()
            } else {
                monday
            };
            assert_eq!(
                next,
                Utc.from_utc_datetime(&day.and_hms_opt(utc_hour, 0, 0).unwrap()),
                "{y}-{m}-{d}"
            );
        }
        // US: spring forward 8 Mar 2026 / 14 Mar 2027, fall back 1 Nov 2026 / 7 Nov 2027.
        let us = national("us", &[]);
        let ny = Tz::America__New_York;
        for (y, m, d, utc_hour) in [
            (2026, 3, 8, 12),
            (2026, 11, 1, 13),
            (2027, 3, 14, 12),
            (2027, 11, 7, 13),
        ] {
            let before = at(ny, y, m, d, 7, 59);
            assert!(us.check(before, &[ny]).is_err());
            assert_eq!(
                us.next_allowed(before, &[ny]),
                Some(Utc.with_ymd_and_hms(y, m, d, utc_hour, 0, 0).unwrap())
            );
        }
    }

    #[test]
    fn french_holidays_2026_to_2028() {
        let paris = Tz::Europe__Paris;
        let cal = national("fr", &[]);
        let expected = [
            // 2026: Easter 5 April
            (2026, 1, 1),
            (2026, 4, 6),
            (2026, 5, 1),
            (2026, 5, 8),
            (2026, 5, 14),
            (2026, 5, 25),
            (2026, 7, 14),
            (2026, 8, 15),
            (2026, 11, 1),
            (2026, 11, 11),
            (2026, 12, 25),
            // 2027: Easter 28 March
            (2027, 1, 1),
            (2027, 3, 29),
            (2027, 5, 1),
            (2027, 5, 6),
            (2027, 5, 8),
            (2027, 5, 17),
            (2027, 7, 14),
            (2027, 8, 15),
            (2027, 11, 1),
            (2027, 11, 11),
            (2027, 12, 25),
            // 2028: Easter 16 April
            (2028, 1, 1),
            (2028, 4, 17),
            (2028, 5, 1),
            (2028, 5, 8),
            (2028, 5, 25),
            (2028, 6, 5),
            (2028, 7, 14),
            (2028, 8, 15),
            (2028, 11, 1),
            (2028, 11, 11),
            (2028, 12, 25),
        ];
        let mut found = Vec::new();
        for y in 2026..=2028 {
            let mut d = NaiveDate::from_ymd_opt(y, 1, 1).unwrap();
            while d.year() == y {
                if cal.holiday(d, paris).is_some() {
                    found.push((d.year(), d.month(), d.day()));
                }
                d = d.succ_opt().unwrap();
            }
        }
        assert_eq!(found, expected);
        assert_eq!(easter(2026), NaiveDate::from_ymd_opt(2026, 4, 5).unwrap());
        // A holiday on a weekday blocks the whole day, with its own code.
        let ascension = at(paris, 2026, 5, 14, 11, 0);
        assert_eq!(
            fr().check(ascension, &[paris]),
            Err(holiday("Ascension Day"))
        );
        assert_eq!(
            fr().next_allowed(ascension, &[paris]),
            Some(at(paris, 2026, 5, 15, 10, 0))
        );
    }

    #[test]
    fn overseas_and_alsace_days() {
        let cal = national("fr", &[]);
        let day = |m, d| NaiveDate::from_ymd_opt(2026, m, d).unwrap();
        assert!(cal.holiday(day(12, 20), Tz::Indian__Reunion).is_some());
        assert!(cal.holiday(day(12, 20), Tz::Europe__Paris).is_none());
        assert!(cal.holiday(day(4, 27), Tz::Indian__Mayotte).is_some());
        assert!(cal.holiday(day(5, 22), Tz::America__Martinique).is_some());
        assert!(cal.holiday(day(5, 27), Tz::America__Guadeloupe).is_some());
        assert!(cal.holiday(day(5, 28), Tz::America__Guadeloupe).is_some());
        assert!(cal.holiday(day(10, 9), Tz::America__Guadeloupe).is_some());
        assert!(cal.holiday(day(6, 10), Tz::America__Cayenne).is_some());
        assert!(cal.holiday(day(12, 26), Tz::Europe__Paris).is_none());
        let am = national("fr", &["alsace_moselle"]);
        assert!(am.holiday(day(12, 26), Tz::Europe__Paris).is_some());
        assert!(
            am.holiday(day(4, 3), Tz::Europe__Paris).is_some(),
            "Good Friday 2026"
        );
    }

    #[test]
    fn several_zones_must_all_allow() {
        // +1 208 spans Boise (UTC-7) and Los Angeles (UTC-8) in winter.
        let us = national("us", &[]);
        let zones = [Tz::America__Boise, Tz::America__Los_Angeles];
        let t = at(Tz::America__Boise, 2026, 11, 17, 8, 30); // 07:30 in LA
        assert!(us.check(t, &zones[..1]).is_ok());
        assert_eq!(us.check(t, &zones), Err(Closed::OutsideHours));
        assert_eq!(
            us.next_allowed(t, &zones),
            Some(at(Tz::America__Los_Angeles, 2026, 11, 17, 8, 0))
        );
        let late = at(Tz::America__Boise, 2026, 11, 17, 21, 0); // 20:00 in LA, 21:00 in Boise
        assert_eq!(us.check(late, &zones), Err(Closed::OutsideHours));
        assert_eq!(
            us.next_allowed(late, &zones),
            Some(at(Tz::America__Los_Angeles, 2026, 11, 18, 8, 0))
        );
        // Polynesia: three zones, the call must fit all of them.
        let fr = fr();
        let pf = [
            Tz::Pacific__Gambier,
            Tz::Pacific__Marquesas,
            Tz::Pacific__Tahiti,
        ];
        let t = at(Tz::Pacific__Tahiti, 2026, 11, 17, 10, 0); // 10:30 Marquesas, 11:00 Gambier
        assert!(fr.check(t, &pf).is_ok());
        let t = at(Tz::Pacific__Gambier, 2026, 11, 17, 10, 0); // 09:00 Tahiti
        assert!(fr.check(t, &pf).is_err());
    }

    /// The search stops at its horizon to the second: an opening on the
    /// horizon's own day but after it is reported as none (the day-long
    /// last piece once returned it, a year and a day ahead), one before it
    /// is found.
    #[test]
    fn nothing_is_reported_past_the_search_horizon() {
        use crate::rules::calendar::{Calendar, HolidayRule};
        use crate::rules::file::HolidayDef;
        let paris = Tz::Europe__Paris;
        // Every Monday of 2027 is a holiday; the next is Monday 3 January 2028.
        let mondays: Vec<String> = (0..52)
            .map(|w| {
                let d = NaiveDate::from_ymd_opt(2027, 1, 4).unwrap() + chrono::Days::new(7 * w);
                format!("\"{d}\"")
            })
            .collect();
        let def: HolidayDef = toml::from_str(&format!(
            "name = \"closed\"\ndates = [{}]\nsource = \"test\"\nconfidence = \"H\"",
            mondays.join(", ")
        ))
        .unwrap();
        let cal = Calendar::new("t", "t", &[HolidayRule::new(&def).unwrap()], None, &[]);
        let mondays_late = Weekly::from_days(
            &[(Weekday::Mon, vec![parse_span("16:00-22:30").unwrap()])],
            false,
        );
        let w = Window::simple(mondays_late, vec![Arc::new(cal)], None);
        // From Saturday 2 January 2027, 366 days end on Monday 3 January
        // 2028 at the same hour (both dates in winter time).
        let opening = at(paris, 2028, 1, 3, 16, 0);
        assert_eq!(
            w.next_allowed(at(paris, 2027, 1, 2, 15, 0), &[paris]),
            None,
            "16:00 is an hour past the horizon"
        );
        assert_eq!(
            w.next_allowed(at(paris, 2027, 1, 2, 17, 0), &[paris]),
            Some(opening)
        );
        assert_eq!(
            w.next_allowed(at(paris, 2027, 1, 2, 16, 0), &[paris]),
            Some(opening),
            "the horizon itself is inside"
        );
    }

    #[test]
    fn tenant_schedule_intersects_and_quiet_hours_cross_midnight() {
        let paris = Tz::Europe__Paris;
        let tenant = Weekly::from_days(
            &[(Weekday::Tue, vec![parse_span("11:00-12:00").unwrap()])],
            false,
        );
        let mut w = fr();
        w.tenant = Some(tenant);
        assert!(w.check(at(paris, 2026, 11, 17, 10, 30), &[paris]).is_err());
        assert!(w.check(at(paris, 2026, 11, 17, 11, 30), &[paris]).is_ok());
        assert_eq!(
            w.check(at(paris, 2026, 11, 18, 11, 30), &[paris]),
            Err(Closed::OutsideHours),
            "Wednesday closed by the tenant"
        );
        assert_eq!(
            w.next_allowed(at(paris, 2026, 11, 17, 12, 0), &[paris]),
            Some(at(paris, 2026, 11, 24, 11, 0))
        );

        let open = Weekly::from_days(&[], true);
        assert_eq!(open.day(Weekday::Wed), &[(0, 1440)]);
        let quiet = Weekly::from_quiet_hours(parse_span("21:00-08:00").unwrap());
        assert_eq!(quiet.day(Weekday::Sun), &[(480, 1260)]);
        let quiet = Weekly::from_quiet_hours(parse_span("12:00-14:00").unwrap());
        assert_eq!(quiet.day(Weekday::Sun), &[(0, 720), (840, 1440)]);
        assert!(parse_span("25:00-26:00").is_err());
        assert!(parse_span("10h-12h").is_err());
    }
}
