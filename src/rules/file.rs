//! The rule file format (`rules/*.toml`): what a compliance officer reads
//! and reviews. Every value that comes from the law carries the law's
//! name, its source and a confidence mark (H, M, L as in the research).
//!
//! Each rule type repeats its `from`/`until`/`law`/`source`/`confidence`
//! fields rather than sharing a flattened struct: serde's `flatten` does
//! not work with `deny_unknown_fields`, and a misspelt key in a legal file
//! must be an error, not a silently ignored line.

use chrono::NaiveDate;
use serde::Deserialize;

use crate::policy::{Campaign, Mode};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleFile {
    /// The rule set a tenant names (`rule_sets = ["us"]`).
    pub set: String,
    pub title: String,
    /// The data's version (the date it was last reviewed).
    pub version: String,
    #[serde(default, rename = "calendar")]
    pub calendars: Vec<CalendarDef>,
    #[serde(default, rename = "jurisdiction")]
    pub jurisdictions: Vec<JurisdictionDef>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, serde::Serialize)]
pub enum Confidence {
    H,
    M,
    L,
}

/// A named list of holidays, shared by the jurisdictions that name it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalendarDef {
    pub id: String,
    pub name: String,
    /// The last day the dated holidays (`dates`) are known for: a
    /// calendar made of yearly decrees has no data past it.
    #[serde(default)]
    pub dated_until: Option<NaiveDate>,
    #[serde(default, rename = "holiday")]
    pub holidays: Vec<HolidayDef>,
}

/// A weekday, or `hol`: in an hours entry, the holidays of the
/// jurisdiction's calendars (Nebraska lets prerecorded calls through on
/// holidays in the afternoon only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Day {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
    Hol,
}

impl Day {
    /// `None` for `hol`.
    pub fn weekday(self) -> Option<chrono::Weekday> {
        use chrono::Weekday::*;
        Some(match self {
            Day::Mon => Mon,
            Day::Tue => Tue,
            Day::Wed => Wed,
            Day::Thu => Thu,
            Day::Fri => Fri,
            Day::Sat => Sat,
            Day::Sun => Sun,
            Day::Hol => return None,
        })
    }

    /// Monday 0 to Sunday 6, holidays [`super::HOLIDAYS`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// How a holiday that falls on a weekend is observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Observed {
    /// Saturday → also the Friday before, Sunday → also the Monday after
    /// (US federal and most states). The date itself stays closed too:
    /// the conservative reading.
    SatFriSunMon,
    /// Sunday → also the Monday after.
    SunMon,
    /// Saturday or Sunday → also the Monday after (Australia).
    WeekendMon,
    /// Saturday or Sunday → also two days after: the pair Christmas and
    /// Boxing Day, where the first weekend day's substitute takes the
    /// Monday and the second's the Tuesday (Australia).
    WeekendPlusTwo,
}

/// A holiday moved by law to another day (the original is then a normal day).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Moved {
    /// Colombia's Ley Emiliani (Ley 51 de 1983): to the next Monday when
    /// it does not fall on one.
    NextMonday,
}

/// One holiday rule. Exactly one of `date`, `nth`+`weekday`+`month`,
/// `easter` or `dates` says which day it is.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HolidayDef {
    pub name: String,
    /// A fixed day, `MM-DD`.
    #[serde(default)]
    pub date: Option<String>,
    /// The nth `weekday` of `month` (1–5; -1 for the last).
    #[serde(default)]
    pub nth: Option<i8>,
    #[serde(default)]
    pub weekday: Option<Day>,
    #[serde(default)]
    pub month: Option<u32>,
    /// Days after Easter Sunday (negative: before).
    #[serde(default)]
    pub easter: Option<i32>,
    /// Dated occurrences, for calendars no formula gives.
    #[serde(default)]
    pub dates: Option<Vec<NaiveDate>>,
    /// Days added to the day found (the day after Thanksgiving: 1).
    #[serde(default)]
    pub offset: Option<i32>,
    #[serde(default)]
    pub observed: Option<Observed>,
    #[serde(default)]
    pub moved: Option<Moved>,
    /// Only in these time zones (the callee's), e.g. overseas departments.
    #[serde(default)]
    pub zones: Vec<String>,
    /// Only for tenants that opt in (a location no number reveals).
    #[serde(default)]
    pub opt_in: Option<String>,
    #[serde(default)]
    pub from: Option<NaiveDate>,
    #[serde(default)]
    pub until: Option<NaiveDate>,
    pub source: String,
    pub confidence: Confidence,
    #[serde(default)]
    pub note: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JurisdictionDef {
    /// `US`, `US-FL`, `CA-ON`, `CO`, `FR`, …
    pub id: String,
    pub name: String,
    /// The national jurisdiction this one is an overlay of (same file).
    #[serde(default)]
    pub parent: Option<String>,
    /// National jurisdictions: the countries (ISO 3166-1) whose numbers it
    /// covers; default its id.
    #[serde(default)]
    pub countries: Vec<String>,
    /// Calendars of this file whose holidays close the day.
    #[serde(default)]
    pub calendars: Vec<String>,
    #[serde(default)]
    pub hours: Vec<HoursDef>,
    #[serde(default, rename = "cap")]
    pub caps: Vec<CapDef>,
    #[serde(default)]
    pub cooloff: Option<CooloffDef>,
    #[serde(default)]
    pub consent: Option<ConsentDef>,
    /// Whether the callee's consent to calls outside the contact hours
    /// (a consent list's `hours` column) lifts this jurisdiction's hours:
    /// only where the law says so.
    #[serde(default)]
    pub hours_consent: Option<HoursConsentDef>,
    /// `[jurisdiction.caller_id]` for one check, `[[jurisdiction.caller_id]]`
    /// for several (a range forbidden in every mode, another required in
    /// automated calls).
    #[serde(default, deserialize_with = "one_or_many")]
    pub caller_id: Vec<CallerIdDef>,
    #[serde(default)]
    pub note: Option<String>,
}

/// Contact hours on some days. Days no entry lists are closed; a
/// jurisdiction with no entry sets no hours.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HoursDef {
    /// `hol`: on the holidays of the jurisdiction's calendars, which then
    /// take these hours instead of closing the day.
    pub days: Vec<Day>,
    /// `HH:MM-HH:MM`, callee local time; empty: no call on those days.
    pub blocks: Vec<String>,
    /// Only for calls in these modes (default every mode).
    #[serde(default)]
    pub modes: Vec<Mode>,
    #[serde(default)]
    pub from: Option<NaiveDate>,
    #[serde(default)]
    pub until: Option<NaiveDate>,
    pub law: String,
    pub source: String,
    pub confidence: Confidence,
    #[serde(default)]
    pub note: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CapScope {
    /// Every call of the tenant to the callee.
    Callee,
    /// Calls on the same subject: counted per tenant, which is stricter
    /// (a tenant's calls on every subject count together).
    CalleeSubject,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapDef {
    pub attempts: u32,
    pub window_hours: u32,
    pub scope: CapScope,
    #[serde(default)]
    pub modes: Vec<Mode>,
    #[serde(default)]
    pub from: Option<NaiveDate>,
    #[serde(default)]
    pub until: Option<NaiveDate>,
    pub law: String,
    pub source: String,
    pub confidence: Confidence,
    #[serde(default)]
    pub note: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CooloffDef {
    /// Full calendar days after a refusal during which the callee may not
    /// be called.
    pub days: u32,
    #[serde(default)]
    pub from: Option<NaiveDate>,
    #[serde(default)]
    pub until: Option<NaiveDate>,
    pub law: String,
    pub source: String,
    pub confidence: Confidence,
    #[serde(default)]
    pub note: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsentDef {
    /// Campaign types that need the callee's consent.
    pub campaigns: Vec<Campaign>,
    #[serde(default)]
    pub modes: Vec<Mode>,
    #[serde(default)]
    pub from: Option<NaiveDate>,
    #[serde(default)]
    pub until: Option<NaiveDate>,
    pub law: String,
    pub source: String,
    pub confidence: Confidence,
    #[serde(default)]
    pub note: Option<String>,
}

/// The law's exception to its contact hours for a callee who consented to
/// calls outside them (France's D.223-9, Colombia's Ley 2300).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HoursConsentDef {
    #[serde(default)]
    pub from: Option<NaiveDate>,
    #[serde(default)]
    pub until: Option<NaiveDate>,
    pub law: String,
    pub source: String,
    pub confidence: Confidence,
    #[serde(default)]
    pub note: Option<String>,
}

/// The caller-ID checks callguard knows how to make.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CallerIdCheck {
    /// ARCEP 2022-1583: automated calls only from NPV, 08 (not 089) and
    /// 30/31 short numbers; mobile numbers never.
    FrArcep,
    /// The ranges the rule writes: the caller ID opens with one of `allow`
    /// (when it lists any) and with none of `deny` (a dedicated code for
    /// commercial calls, such as the one Spain's Ley 10/2025 provides for).
    Prefixes,
}

impl CallerIdCheck {
    /// As rule files write it.
    pub fn name(self) -> &'static str {
        match self {
            CallerIdCheck::FrArcep => "fr-arcep",
            CallerIdCheck::Prefixes => "prefixes",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallerIdDef {
    pub check: CallerIdCheck,
    /// `prefixes`: E.164 prefixes (`+34400`) the caller ID must open with
    /// one of.
    #[serde(default)]
    pub allow: Vec<String>,
    /// `prefixes`: E.164 prefixes the caller ID must not open with.
    #[serde(default)]
    pub deny: Vec<String>,
    /// Only for calls in these modes (default every mode).
    #[serde(default)]
    pub modes: Vec<Mode>,
    #[serde(default)]
    pub from: Option<NaiveDate>,
    #[serde(default)]
    pub until: Option<NaiveDate>,
    pub law: String,
    pub source: String,
    pub confidence: Confidence,
    #[serde(default)]
    pub note: Option<String>,
}

/// One table or an array of tables, as a list. Written here rather than
/// taken from `serde_with` (`OneOrMany`): one field needs it, and the
/// visitor keeps the element's own errors (a misspelt key is named), which
/// an untagged enum would reduce to "did not match any variant".
fn one_or_many<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct Visit<T>(std::marker::PhantomData<T>);
    impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Visit<T> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a table or an array of tables")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, m: A) -> Result<Vec<T>, A::Error> {
            T::deserialize(serde::de::value::MapAccessDeserializer::new(m)).map(|t| vec![t])
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut s: A) -> Result<Vec<T>, A::Error> {
            let mut out = Vec::new();
            while let Some(t) = s.next_element()? {
                out.push(t);
            }
            Ok(out)
        }
    }
    d.deserialize_any(Visit(std::marker::PhantomData))
}
