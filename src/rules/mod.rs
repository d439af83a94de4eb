//! The rule library: the telemarketing law of every jurisdiction callguard
//! knows, as data. Rule files (`rules/*.toml`) are compiled into the
//! binary; an operator's own files (`[rules] files`) add rule sets, or
//! replace jurisdictions and calendars of a built-in set by id.
//!
//! A rule set (`us`) holds one national jurisdiction (`US`) and its
//! overlays (`US-FL`, …). The callee's number picks the jurisdiction
//! (`numbering::region_of`); national rules and the overlay's both apply
//! (`applied`).

pub mod applied;
pub mod calendar;
pub mod file;
pub mod report;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::NaiveDate;

use crate::config::locate_display as display;
use crate::config::{Locator, Seg};
use crate::policy::{Campaign, Cap, Mode};
use crate::schedule::{self, Blocks};
use calendar::HolidayRule;
pub use file::{CallerIdCheck, CapScope, Confidence};
use file::{JurisdictionDef, RuleFile};

/// The rule files shipped with callguard, compiled in.
pub const BUILTIN: &[(&str, &str)] = &[
    ("rules/fr.toml", include_str!("../../rules/fr.toml")),
    ("rules/us.toml", include_str!("../../rules/us.toml")),
    ("rules/ca.toml", include_str!("../../rules/ca.toml")),
    ("rules/co.toml", include_str!("../../rules/co.toml")),
    ("rules/br.toml", include_str!("../../rules/br.toml")),
    ("rules/id.toml", include_str!("../../rules/id.toml")),
    ("rules/au.toml", include_str!("../../rules/au.toml")),
    ("rules/es.toml", include_str!("../../rules/es.toml")),
];

/// A rule file that cannot be used: which file, where, and why.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error("cannot read rule file {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("{path}: line {line}: `{key}`: {message}")]
    Invalid {
        path: PathBuf,
        line: usize,
        key: String,
        message: String,
    },
}

/// Where a value comes from: the law as explanations name it, the
/// research source, and how sure the research is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cite {
    pub law: Arc<str>,
    pub source: String,
    pub confidence: Confidence,
    pub note: Option<String>,
}

/// When a rule is in force (local dates of the callee, both included).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct InForce {
    pub from: Option<NaiveDate>,
    pub until: Option<NaiveDate>,
}

impl InForce {
    pub fn on(&self, date: NaiveDate) -> bool {
        self.from.is_none_or(|f| date >= f) && self.until.is_none_or(|u| date <= u)
    }
}

fn applies_to(modes: &[Mode], mode: Mode) -> bool {
    modes.is_empty() || modes.contains(&mode)
}

/// The index of holidays in [`HoursRule::days`], after the weekdays.
pub const HOLIDAYS: usize = 7;
// `Day::index` is the variant's position: `hol` must stay last.
const _: () = assert!(file::Day::Hol as usize == HOLIDAYS);

#[derive(Debug, Clone)]
pub struct HoursRule {
    /// Monday first, then [`HOLIDAYS`].
    pub days: [bool; 8],
    pub blocks: Blocks,
    pub modes: Vec<Mode>,
    pub in_force: InForce,
    pub cite: Cite,
}

#[derive(Debug, Clone)]
pub struct CapRule {
    pub cap: Cap,
    pub scope: CapScope,
    pub modes: Vec<Mode>,
    pub in_force: InForce,
    pub cite: Cite,
}

#[derive(Debug, Clone)]
pub struct CooloffRule {
    pub days: u32,
    pub in_force: InForce,
    pub cite: Cite,
}

#[derive(Debug, Clone)]
pub struct ConsentRule {
    pub campaigns: Vec<Campaign>,
    pub modes: Vec<Mode>,
    pub in_force: InForce,
    pub cite: Cite,
}

/// The law lets the callee's consent to calls outside the contact hours
/// lift them.
#[derive(Debug, Clone)]
pub struct HoursConsentRule {
    pub in_force: InForce,
    pub cite: Cite,
}

impl ConsentRule {
    pub fn needed(&self, campaign: Campaign, mode: Mode, date: NaiveDate) -> bool {
        self.campaigns.contains(&campaign)
            && applies_to(&self.modes, mode)
            && self.in_force.on(date)
    }
}

#[derive(Debug, Clone)]
pub struct CallerIdRule {
    pub check: CallerIdCheck,
    /// `Prefixes`: the caller ID opens with one of these (when any).
    pub allow: Vec<NumberPrefix>,
    /// `Prefixes`: the caller ID opens with none of these.
    pub deny: Vec<NumberPrefix>,
    pub modes: Vec<Mode>,
    pub in_force: InForce,
    pub cite: Cite,
}

impl CallerIdRule {
    pub fn applies(&self, mode: Mode, date: NaiveDate) -> bool {
        applies_to(&self.modes, mode) && self.in_force.on(date)
    }
}

/// The leading digits of E.164 numbers (`+34400`), as a rule writes a
/// range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NumberPrefix {
    pub digits: u64,
    pub len: u32,
}

impl NumberPrefix {
    pub fn matches(self, n: crate::numbering::E164) -> bool {
        n.starts_with(self.digits, self.len)
    }
}

/// A range a rule file writes that is no E.164 prefix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadPrefix {
    #[error("`{0}`: write a range as an E.164 prefix, `+` and the country code first")]
    NoPlus(String),
    #[error("`{0}`: a range is `+` and 1 to 15 digits, the country code first")]
    Digits(String),
}

impl std::str::FromStr for NumberPrefix {
    type Err = BadPrefix;
    fn from_str(s: &str) -> Result<NumberPrefix, BadPrefix> {
        let digits = s
            .strip_prefix('+')
            .ok_or_else(|| BadPrefix::NoPlus(s.to_owned()))?;
        if digits.is_empty()
            || digits.len() > 15
            || !digits.bytes().all(|b| b.is_ascii_digit())
            || digits.starts_with('0')
        {
            return Err(BadPrefix::Digits(s.to_owned()));
        }
        Ok(NumberPrefix {
            // 15 digits or fewer always fit.
            digits: digits
                .parse()
                .map_err(|_| BadPrefix::Digits(s.to_owned()))?,
            len: digits.len() as u32,
        })
    }
}

impl std::fmt::Display for NumberPrefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // No range opens with 0 (`from_str`): the digits print whole.
        write!(f, "+{}", self.digits)
    }
}

/// A named holiday list of a rule set.
#[derive(Debug, Clone)]
pub struct CalendarRules {
    pub id: String,
    pub name: String,
    pub dated_until: Option<NaiveDate>,
    pub holidays: Vec<HolidayRule>,
}

impl CalendarRules {
    /// Compiled, with the holidays of `opt_ins`.
    pub fn compile(&self, opt_ins: &[String]) -> calendar::Calendar {
        calendar::Calendar::new(
            &self.id,
            &self.name,
            &self.holidays,
            self.dated_until,
            opt_ins,
        )
    }
}

/// One jurisdiction's rules.
#[derive(Debug, Clone)]
pub struct Jurisdiction {
    pub id: Arc<str>,
    pub name: String,
    pub parent: Option<String>,
    pub countries: Vec<String>,
    pub hours: Vec<HoursRule>,
    pub calendars: Vec<Arc<CalendarRules>>,
    pub caps: Vec<CapRule>,
    pub cooloff: Option<CooloffRule>,
    pub consent: Option<ConsentRule>,
    pub hours_consent: Option<HoursConsentRule>,
    pub caller_id: Vec<CallerIdRule>,
    pub note: Option<String>,
}

impl Jurisdiction {
    /// The blocks allowed on `weekday` (Monday 0) of `date` for calls in
    /// `mode`; `None` when this jurisdiction sets no hours then. `weekday`
    /// [`HOLIDAYS`] asks for its holidays' hours.
    ///
    /// Entries for every mode make up the week: a day none of them lists
    /// is closed. An entry for some modes only restricts the days it
    /// lists, for those modes (Oklahoma's automated calls 09:00–21:00).
    pub fn day_blocks(&self, date: NaiveDate, weekday: usize, mode: Mode) -> Option<Blocks> {
        let mut general: Option<Blocks> = None;
        for h in self
            .hours
            .iter()
            .filter(|h| h.modes.is_empty() && h.in_force.on(date))
        {
            let b = general.get_or_insert_with(Blocks::new);
            if h.days[weekday] {
                b.extend(h.blocks.iter().copied());
            }
        }
        let mut out = general.map(schedule::normalize);
        for h in &self.hours {
            if h.modes.is_empty() || !h.modes.contains(&mode) || !h.in_force.on(date) {
                continue;
            }
            if h.days[weekday] {
                out = Some(match out {
                    None => h.blocks.clone(),
                    Some(prev) => schedule::intersect(&prev, &h.blocks),
                });
            }
        }
        out
    }

    /// The hours on this jurisdiction's holidays on `date` in `mode`; empty:
    /// no calls. Its calendars close the day in every mode unless an hours
    /// entry lists `hol`: then holidays follow the entries like any day
    /// (an entry for every mode that does not list `hol` closes them), and
    /// in a mode no entry covers, they restrict nothing.
    pub fn holiday_blocks(&self, date: NaiveDate, mode: Mode) -> Blocks {
        match self.day_blocks(date, HOLIDAYS, mode) {
            Some(b) => b,
            None if self.hours.iter().any(|h| h.days[HOLIDAYS]) => Blocks::from_slice(&[(0, 1440)]),
            None => Blocks::new(),
        }
    }

    /// Whether it sets no rule at all (an overlay that names a state whose
    /// law adds nothing to the national one).
    pub fn is_empty(&self) -> bool {
        self.hours.is_empty()
            && self.calendars.is_empty()
            && self.caps.is_empty()
            && self.cooloff.is_none()
            && self.consent.is_none()
            && self.hours_consent.is_none()
            && self.caller_id.is_empty()
    }

    /// The dates at which any dated rule of this jurisdiction starts or
    /// stops: the hours are constant between two of them.
    pub fn hour_changes(&self) -> Vec<NaiveDate> {
        let mut out = Vec::new();
        for h in &self.hours {
            out.extend(h.in_force.from);
            out.extend(h.in_force.until.and_then(|u| u.succ_opt()));
        }
        out
    }
}

/// A rule set: a national jurisdiction and its overlays.
#[derive(Debug, Clone)]
pub struct RuleSet {
    pub name: String,
    pub title: String,
    pub version: String,
    /// The files it was read from (built-in paths start with `rules/`).
    pub origin: Vec<String>,
    pub national: Arc<Jurisdiction>,
    pub overlays: BTreeMap<String, Arc<Jurisdiction>>,
}

impl RuleSet {
    pub fn jurisdictions(&self) -> impl Iterator<Item = &Arc<Jurisdiction>> {
        std::iter::once(&self.national).chain(self.overlays.values())
    }

    pub fn find(&self, id: &str) -> Option<&Arc<Jurisdiction>> {
        if self.national.id.eq_ignore_ascii_case(id) {
            return Some(&self.national);
        }
        self.overlays
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(id))
            .map(|(_, j)| j)
    }

    /// Whether numbers of `country` fall under this set.
    pub fn covers(&self, country: &str) -> bool {
        self.national.countries.iter().any(|c| c == country)
    }
}

/// Every rule set callguard knows.
#[derive(Debug, Clone)]
pub struct Library {
    pub sets: BTreeMap<String, Arc<RuleSet>>,
}

/// A rule file parsed, not yet merged.
struct Parsed {
    path: String,
    text: Arc<str>,
    file: RuleFile,
}

impl Library {
    /// The built-in rule sets alone (parsed once per process).
    pub fn builtin() -> Result<Library, RulesError> {
        static BUILT: std::sync::OnceLock<Result<Library, String>> = std::sync::OnceLock::new();
        match BUILT.get_or_init(|| Library::parse_all(&[]).map_err(|e| e.to_string())) {
            Ok(l) => Ok(l.clone()),
            Err(e) => Err(RulesError::Syntax {
                path: "rules/".into(),
                message: e.clone(),
            }),
        }
    }

    /// The built-in sets, with the operator's files over them.
    pub fn load(files: &[PathBuf]) -> Result<Library, RulesError> {
        if files.is_empty() {
            return Library::builtin();
        }
        Library::parse_all(files)
    }

    fn parse_all(files: &[PathBuf]) -> Result<Library, RulesError> {
        let mut parsed = Vec::new();
        for (path, text) in BUILTIN {
            parsed.push(parse(path, text)?);
        }
        for p in files {
            let text = std::fs::read_to_string(p).map_err(|source| RulesError::Read {
                path: p.clone(),
                source,
            })?;
            parsed.push(parse(&p.display().to_string(), &text)?);
        }
        let mut lib = Library {
            sets: BTreeMap::new(),
        };
        for p in parsed {
            lib.merge(p)?;
        }
        Ok(lib)
    }

    /// Checks one operator file alone and over the built-in sets.
    pub fn check_file(path: &Path) -> Result<Library, RulesError> {
        Library::load(&[path.to_owned()])
    }

    fn merge(&mut self, p: Parsed) -> Result<(), RulesError> {
        let loc = Locator::new(&p.text);
        let invalid = |at: &[Seg<'_>], message: String| RulesError::Invalid {
            path: PathBuf::from(&p.path),
            line: loc.line(at),
            key: display(at),
            message,
        };
        use Seg::{Index, Key};
        let f = &p.file;
        let name = f.set.trim();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        {
            return Err(invalid(
                &[Key("set")],
                format!("set `{}`: use lower-case letters, digits, - and _", f.set),
            ));
        }
        let existing = self.sets.get(name).cloned();
        // Calendars: this file's, then the set's existing ones by id.
        let mut calendars: BTreeMap<String, Arc<CalendarRules>> = BTreeMap::new();
        if let Some(e) = &existing {
            for j in e.jurisdictions() {
                for c in &j.calendars {
                    calendars.insert(c.id.clone(), c.clone());
                }
            }
        }
        for (ci, c) in f.calendars.iter().enumerate() {
            let mut holidays = Vec::new();
            for (hi, h) in c.holidays.iter().enumerate() {
                let rule = HolidayRule::new(h).map_err(|e| {
                    invalid(
                        &[
                            Key("calendar"),
                            Index(ci),
                            Key("holiday"),
                            Index(hi),
                            Key(e.key),
                        ],
                        format!("calendar `{}`: {}", c.id, e.message),
                    )
                })?;
                if rule.is_dated() && c.dated_until.is_none() {
                    return Err(invalid(
                        &[Key("calendar"), Index(ci), Key("holiday"), Index(hi), Key("dates")],
                        format!(
                            "calendar `{}`: dated holidays need the calendar's `dated_until` (the last day the dates are known for)",
                            c.id
                        ),
                    ));
                }
                holidays.push(rule);
            }
            calendars.insert(
                c.id.clone(),
                Arc::new(CalendarRules {
                    id: c.id.clone(),
                    name: c.name.clone(),
                    dated_until: c.dated_until,
                    holidays,
                }),
            );
        }
        let mut national = existing.as_ref().map(|e| e.national.clone());
        let mut overlays = existing
            .as_ref()
            .map(|e| e.overlays.clone())
            .unwrap_or_default();
        let mut seen = std::collections::HashSet::new();
        for (ji, jd) in f.jurisdictions.iter().enumerate() {
            let at = |k: &'static str| [Key("jurisdiction"), Index(ji), Key(k)];
            if !seen.insert(jd.id.clone()) {
                return Err(invalid(
                    &at("id"),
                    format!("jurisdiction `{}` is defined twice in this file", jd.id),
                ));
            }
            let j = jurisdiction(jd, &calendars).map_err(|(k, i, m)| {
                let mut path = vec![Key("jurisdiction"), Index(ji), Key(k)];
                path.extend(i.map(Index));
                invalid(&path, format!("jurisdiction `{}`: {m}", jd.id))
            })?;
            match &jd.parent {
                None => {
                    if j.countries.is_empty() {
                        return Err(invalid(
                            &at("countries"),
                            format!("jurisdiction `{}`: a national jurisdiction covers at least one country", jd.id),
                        ));
                    }
                    if let Some(n) = &national {
                        if n.id != j.id {
                            return Err(invalid(
                                &at("id"),
                                format!(
                                    "rule set `{name}` already has the national jurisdiction `{}`; `{}` needs `parent = \"{}\"`",
                                    n.id, jd.id, n.id
                                ),
                            ));
                        }
                    }
                    national = Some(Arc::new(j));
                }
                Some(parent) => {
                    let parent_ok = national.as_ref().is_some_and(|n| *n.id == **parent)
                        || f.jurisdictions
                            .iter()
                            .any(|o| o.parent.is_none() && &o.id == parent);
                    if !parent_ok {
                        return Err(invalid(
                            &at("parent"),
                            format!(
                                "jurisdiction `{}`: parent `{parent}` is not the national jurisdiction of rule set `{name}`",
                                jd.id
                            ),
                        ));
                    }
                    overlays.insert(jd.id.clone(), Arc::new(j));
                }
            }
        }
        let Some(national) = national else {
            return Err(invalid(
                &[Key("jurisdiction")],
                format!("rule set `{name}` has no national jurisdiction (one without `parent`)"),
            ));
        };
        let mut origin = existing
            .as_ref()
            .map(|e| e.origin.clone())
            .unwrap_or_default();
        origin.push(p.path.clone());
        let version = match &existing {
            Some(e) => format!("{}+{}", e.version, f.version),
            None => f.version.clone(),
        };
        self.sets.insert(
            name.to_owned(),
            Arc::new(RuleSet {
                name: name.to_owned(),
                title: f.title.clone(),
                version,
                origin,
                national,
                overlays,
            }),
        );
        Ok(())
    }

    /// The jurisdiction `id` (`US-FL`, `fr`…) and the set holding it.
    pub fn find(&self, id: &str) -> Option<(&Arc<RuleSet>, &Arc<Jurisdiction>)> {
        self.sets.values().find_map(|s| s.find(id).map(|j| (s, j)))
    }

    /// Whether `id` names a jurisdiction of some set (closures).
    pub fn knows(&self, id: &str) -> bool {
        self.find(id).is_some()
    }
}

fn parse(path: &str, text: &str) -> Result<Parsed, RulesError> {
    let file: RuleFile = toml::from_str(text).map_err(|e| RulesError::Syntax {
        path: PathBuf::from(path),
        message: e.to_string().trim_end().to_owned(),
    })?;
    Ok(Parsed {
        path: path.to_owned(),
        text: text.into(),
        file,
    })
}

type DefError = (&'static str, Option<usize>, String);

/// The dates of the entry `key` (`hours`, its `i`-th) is in force; an
/// error names that entry, whose line the operator then finds.
fn in_force(
    from: Option<NaiveDate>,
    until: Option<NaiveDate>,
    key: &'static str,
    i: Option<usize>,
) -> Result<InForce, DefError> {
    if let (Some(f), Some(u)) = (from, until) {
        if u < f {
            return Err((key, i, format!("until {u} is before from {f}")));
        }
    }
    Ok(InForce { from, until })
}

fn cite(law: &str, source: &str, confidence: Confidence, note: &Option<String>) -> Cite {
    Cite {
        law: law.into(),
        source: source.to_owned(),
        confidence,
        note: note.clone(),
    }
}

fn jurisdiction(
    d: &JurisdictionDef,
    calendars: &BTreeMap<String, Arc<CalendarRules>>,
) -> Result<Jurisdiction, DefError> {
    let id_ok = d.id.split('-').all(|p| {
        !p.is_empty()
            && p.chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
    });
    if !id_ok {
        return Err((
            "id",
            None,
            format!(
                "`{}` is not an upper-case ISO 3166 code (`US`, `US-FL`)",
                d.id
            ),
        ));
    }
    let mut hours = Vec::new();
    for (i, h) in d.hours.iter().enumerate() {
        if h.days.is_empty() {
            return Err(("hours", Some(i), "an hours entry lists no days".into()));
        }
        let mut days = [false; 8];
        for day in &h.days {
            days[day.index()] = true;
        }
        if days[HOLIDAYS] && d.calendars.is_empty() {
            return Err((
                "hours",
                Some(i),
                "`hol` (holiday hours) needs the jurisdiction's `calendars`".into(),
            ));
        }
        let mut blocks = Blocks::new();
        for b in &h.blocks {
            let (s, e) = schedule::parse_span(b).map_err(|e| ("hours", Some(i), e.to_string()))?;
            if e <= s {
                return Err((
                    "hours",
                    Some(i),
                    format!("`{b}`: a block must end after it starts"),
                ));
            }
            blocks.push((s, e));
        }
        blocks.sort_unstable();
        hours.push(HoursRule {
            days,
            blocks,
            modes: h.modes.clone(),
            in_force: in_force(h.from, h.until, "hours", Some(i))?,
            cite: cite(&h.law, &h.source, h.confidence, &h.note),
        });
    }
    let mut cals = Vec::new();
    for (i, c) in d.calendars.iter().enumerate() {
        cals.push(calendars.get(c).cloned().ok_or_else(|| {
            (
                "calendars",
                Some(i),
                format!("no calendar `{c}` in this rule set"),
            )
        })?);
    }
    let mut caps = Vec::new();
    for (i, c) in d.caps.iter().enumerate() {
        if c.attempts == 0 || c.window_hours == 0 || c.window_hours > 24 * 366 {
            return Err((
                "cap",
                Some(i),
                format!(
                    "a cap needs attempts ≥ 1 and window_hours 1 to {}",
                    24 * 366
                ),
            ));
        }
        caps.push(CapRule {
            cap: Cap {
                attempts: c.attempts,
                window: chrono::Duration::hours(i64::from(c.window_hours)),
            },
            scope: c.scope,
            modes: c.modes.clone(),
            in_force: in_force(c.from, c.until, "cap", Some(i))?,
            cite: cite(&c.law, &c.source, c.confidence, &c.note),
        });
    }
    let cooloff = match &d.cooloff {
        Some(c) if c.days == 0 || c.days > 3660 => {
            return Err((
                "cooloff",
                None,
                format!("cooloff days must be 1 to 3660, not {}", c.days),
            ))
        }
        Some(c) => Some(CooloffRule {
            days: c.days,
            in_force: in_force(c.from, c.until, "cooloff", None)?,
            cite: cite(&c.law, &c.source, c.confidence, &c.note),
        }),
        None => None,
    };
    let consent = match &d.consent {
        Some(c) if c.campaigns.is_empty() => {
            return Err(("consent", None, "consent names no campaign type".into()))
        }
        Some(c) => Some(ConsentRule {
            campaigns: c.campaigns.clone(),
            modes: c.modes.clone(),
            in_force: in_force(c.from, c.until, "consent", None)?,
            cite: cite(&c.law, &c.source, c.confidence, &c.note),
        }),
        None => None,
    };
    let hours_consent = match &d.hours_consent {
        Some(h) => Some(HoursConsentRule {
            in_force: in_force(h.from, h.until, "hours_consent", None)?,
            cite: cite(&h.law, &h.source, h.confidence, &h.note),
        }),
        None => None,
    };
    let mut caller_id = Vec::new();
    for (i, c) in d.caller_id.iter().enumerate() {
        let ranges = |list: &[String]| {
            list.iter()
                .map(|p| p.parse::<NumberPrefix>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| ("caller_id", Some(i), e.to_string()))
        };
        let (allow, deny) = (ranges(&c.allow)?, ranges(&c.deny)?);
        match c.check {
            CallerIdCheck::FrArcep if !allow.is_empty() || !deny.is_empty() => {
                return Err((
                    "caller_id",
                    Some(i),
                    "`fr-arcep` takes no `allow` or `deny` (its ranges are ARCEP's); use `check = \"prefixes\"` for ranges of your own".into(),
                ))
            }
            CallerIdCheck::Prefixes if allow.is_empty() && deny.is_empty() => {
                return Err((
                    "caller_id",
                    Some(i),
                    "`prefixes` needs the ranges: `allow`, `deny` or both".into(),
                ))
            }
            _ => {}
        }
        if let Some(p) = allow.iter().find(|a| deny.iter().any(|d| d == *a)) {
            return Err((
                "caller_id",
                Some(i),
                format!("{p} is both allowed and denied"),
            ));
        }
        caller_id.push(CallerIdRule {
            check: c.check,
            allow,
            deny,
            modes: c.modes.clone(),
            in_force: in_force(c.from, c.until, "caller_id", Some(i))?,
            cite: cite(&c.law, &c.source, c.confidence, &c.note),
        });
    }
    let countries = if d.parent.is_some() {
        Vec::new()
    } else if d.countries.is_empty() {
        vec![d.id.clone()]
    } else {
        d.countries.clone()
    };
    Ok(Jurisdiction {
        id: d.id.as_str().into(),
        name: d.name.clone(),
        parent: d.parent.clone(),
        countries,
        hours,
        calendars: cals,
        caps,
        cooloff,
        consent,
        hours_consent,
        caller_id,
        note: d.note.clone(),
    })
}

#[cfg(test)]
mod tests;
