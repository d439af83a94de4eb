//! The rules one tenant applies to one jurisdiction: the national
//! jurisdiction's and its overlays' together (windows intersect, every cap
//! counts, the longest cool-off wins), compiled ahead of the calls for
//! every jurisdiction the tenant's rule sets know.

use std::sync::Arc;

use chrono::NaiveDate;
use rustc_hash::FxHashMap;
use smallvec::SmallVec;

use super::{
    CallerIdRule, CapRule, Cite, ConsentRule, CooloffRule, HoursConsentRule, Jurisdiction, Library,
    RuleSet,
};
use crate::numbering::{region_of, subdivisions, E164};
use crate::policy::{Campaign, Cap, Mode};
use crate::schedule::{Calendar, Layer, Weekly, Window};

/// The rules for calls to one jurisdiction.
#[derive(Debug, Clone)]
pub struct Applied {
    /// The most specific jurisdiction (`US-FL`; `FR` with no overlay;
    /// `CA-NS&CA-PE` where the number may lie in either).
    pub jurisdiction: Arc<str>,
    /// Every jurisdiction that applies, national first (closures match any).
    pub ids: SmallVec<[Arc<str>; 2]>,
    pub rule_set: Arc<str>,
    pub version: Arc<str>,
    /// By mode: automated, manual.
    windows: [Window; 2],
    pub caller_id: SmallVec<[CallerIdRule; 1]>,
    pub consent: SmallVec<[ConsentRule; 1]>,
    /// Each jurisdiction's exception for a callee's consent to calls
    /// outside the hours, national first (`None`: the law has none).
    pub hours_consent: SmallVec<[Option<HoursConsentRule>; 2]>,
    pub cooloffs: SmallVec<[CooloffRule; 1]>,
    pub caps: SmallVec<[CapRule; 1]>,
}

fn mode_index(m: Mode) -> usize {
    match m {
        Mode::Automated => 0,
        Mode::Manual => 1,
    }
}

impl Applied {
    pub fn window(&self, mode: Mode) -> &Window {
        &self.windows[mode_index(mode)]
    }

    pub fn window_mut(&mut self, mode: Mode) -> &mut Window {
        &mut self.windows[mode_index(mode)]
    }

    /// Whether a callee's consent to calls outside the hours lifts them on
    /// `date`: only when every jurisdiction that applies (national and
    /// overlay, whose windows are intersected) makes that exception.
    pub fn hours_consent_lifts(&self, date: NaiveDate) -> bool {
        !self.hours_consent.is_empty()
            && self
                .hours_consent
                .iter()
                .all(|h| h.as_ref().is_some_and(|h| h.in_force.on(date)))
    }

    /// The longest cool-off in force on `date`.
    pub fn cooloff(&self, date: NaiveDate) -> Option<&CooloffRule> {
        self.cooloffs
            .iter()
            .filter(|c| c.in_force.on(date))
            .max_by_key(|c| c.days)
    }

    /// The caps in force for calls in `mode` on `date`.
    pub fn caps(&self, mode: Mode, date: NaiveDate) -> impl Iterator<Item = &CapRule> {
        self.caps
            .iter()
            .filter(move |c| (c.modes.is_empty() || c.modes.contains(&mode)) && c.in_force.on(date))
    }

    /// The cap the state counts atomically: the one with the longest
    /// window (its attempts are kept that long, so every shorter cap can
    /// be judged from them).
    pub fn counted_cap(&self, mode: Mode, date: NaiveDate) -> Option<Cap> {
        self.caps(mode, date)
            .map(|c| c.cap)
            .max_by_key(|c| c.window)
    }

    /// The consent rule a call of `campaign` in `mode` needs on `date`.
    pub fn consent_needed(&self, campaign: Campaign, mode: Mode, date: NaiveDate) -> Option<&Cite> {
        self.consent
            .iter()
            .find(|c| c.needed(campaign, mode, date))
            .map(|c| &c.cite)
    }

    pub fn caller_checks(
        &self,
        mode: Mode,
        date: NaiveDate,
    ) -> impl Iterator<Item = &CallerIdRule> {
        self.caller_id.iter().filter(move |c| c.applies(mode, date))
    }

    /// The longest a refusal or an attempt must be kept for these rules.
    fn retention(&self) -> (Option<chrono::Duration>, Option<u32>) {
        (
            self.caps.iter().map(|c| c.cap.window).max(),
            self.cooloffs.iter().map(|c| c.days).max(),
        )
    }
}

/// What a tenant adds to the law.
#[derive(Debug, Clone, Default)]
pub struct TenantOptions {
    pub schedule: Option<Weekly>,
    /// Opt-in holidays (`alsace_moselle`).
    pub opt_ins: Vec<String>,
    /// A callee no set covers is called under the first set's national
    /// rules instead of refused.
    pub unknown_allow: bool,
}

/// A tenant's rules for every jurisdiction its sets know.
#[derive(Debug)]
pub struct TenantRules {
    pub sets: Vec<Arc<RuleSet>>,
    by_country: FxHashMap<String, Arc<Applied>>,
    by_subdivision: FxHashMap<&'static str, Arc<Applied>>,
    /// The first set's national rules: for a callee no set covers when
    /// `unknown_allow`, and for caller-ID checks of a call whose callee
    /// is not a number.
    pub primary: Arc<Applied>,
    pub unknown_allow: bool,
    /// The longest attempt window and cool-off (days) of any jurisdiction.
    retention: (Option<chrono::Duration>, Option<u32>),
}

/// What [`TenantRules::for_callee`] found.
#[derive(Clone, Copy)]
pub enum Lookup<'a> {
    Found(&'a Arc<Applied>),
    /// No set covers the callee's country (named).
    Uncovered(&'static str),
}

impl TenantRules {
    /// Compiles `sets` (in the tenant's order) with the tenant's options.
    pub fn new(sets: Vec<Arc<RuleSet>>, opts: &TenantOptions) -> TenantRules {
        assert!(
            !sets.is_empty(),
            "a tenant calls under at least one rule set"
        );
        let mut calendars = CalendarCache::default();
        let mut by_country = FxHashMap::default();
        for s in &sets {
            let national = Arc::new(applied(s, &[&s.national], opts, &mut calendars));
            for c in &s.national.countries {
                by_country
                    .entry(c.clone())
                    .or_insert_with(|| national.clone());
            }
        }
        let mut by_subdivision = FxHashMap::default();
        for sub in subdivisions() {
            let country = sub.split('-').next().unwrap_or(sub);
            let Some(s) = sets.iter().find(|s| s.covers(country)) else {
                continue;
            };
            let overlays: Vec<&Arc<Jurisdiction>> =
                sub.split('&').filter_map(|id| s.overlays.get(id)).collect();
            if overlays.is_empty() {
                continue;
            }
            let mut js = vec![&s.national];
            js.extend(overlays);
            by_subdivision.insert(sub, Arc::new(applied(s, &js, opts, &mut calendars)));
        }
        let primary = by_country
            .get(&sets[0].national.countries[0])
            .cloned()
            .expect("the first set's national rules are compiled");
        let retention = by_country.values().chain(by_subdivision.values()).fold(
            (None, None),
            |(w, c), a: &Arc<Applied>| {
                let (w2, c2) = a.retention();
                (w.max(w2), c.max(c2))
            },
        );
        TenantRules {
            sets,
            by_country,
            by_subdivision,
            primary,
            unknown_allow: opts.unknown_allow,
            retention,
        }
    }

    /// The built-in sets named, for tests and `check`.
    pub fn builtin(names: &[&str], opts: &TenantOptions) -> TenantRules {
        let lib = Library::builtin().expect("the built-in rules load");
        TenantRules::new(names.iter().map(|n| lib.sets[*n].clone()).collect(), opts)
    }

    /// The rules for a callee.
    pub fn for_callee(&self, callee: E164) -> Lookup<'_> {
        let r = region_of(callee);
        if let Some(a) = r.subdivision.and_then(|s| self.by_subdivision.get(s)) {
            return Lookup::Found(a);
        }
        match self.by_country.get(r.country) {
            Some(a) => Lookup::Found(a),
            None if self.unknown_allow => Lookup::Found(&self.primary),
            None => Lookup::Uncovered(r.country),
        }
    }

    /// Every compiled jurisdiction's rules.
    pub fn all(&self) -> impl Iterator<Item = &Arc<Applied>> {
        self.by_country.values().chain(self.by_subdivision.values())
    }

    /// The longest attempt window and cool-off (days) of any jurisdiction.
    pub fn retention(&self) -> (Option<chrono::Duration>, Option<u32>) {
        self.retention
    }

    /// Whether some jurisdiction counts attempts or keeps refusals: the
    /// calls then read the state.
    pub fn needs_state(&self) -> bool {
        self.retention != (None, None)
    }

    /// The set names, for messages.
    pub fn names(&self) -> String {
        self.sets
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Changes every jurisdiction's rules (tests that adjust one rule).
    pub fn each_mut(&mut self, mut f: impl FnMut(&mut Applied)) {
        for a in self
            .by_country
            .values_mut()
            .chain(self.by_subdivision.values_mut())
        {
            f(Arc::make_mut(a));
        }
        f(Arc::make_mut(&mut self.primary));
        self.retention = self.all().fold((None, None), |(w, c), a| {
            let (w2, c2) = a.retention();
            (w.max(w2), c.max(c2))
        });
    }
}

/// Calendars compiled once per tenant (with its opt-ins) and shared by
/// every jurisdiction that names them.
#[derive(Default)]
struct CalendarCache {
    done: Vec<(*const super::CalendarRules, Arc<Calendar>)>,
}

impl CalendarCache {
    fn get(&mut self, c: &Arc<super::CalendarRules>, opt_ins: &[String]) -> Arc<Calendar> {
        let key = Arc::as_ptr(c);
        if let Some((_, cal)) = self.done.iter().find(|(k, _)| *k == key) {
            return cal.clone();
        }
        let cal = Arc::new(c.compile(opt_ins));
        self.done.push((key, cal.clone()));
        cal
    }
}

fn layer(
    j: &Jurisdiction,
    mode: Mode,
    calendars: &mut CalendarCache,
    opts: &TenantOptions,
) -> Layer {
    let mut starts: Vec<NaiveDate> = vec![NaiveDate::MIN];
    starts.extend(j.hour_changes());
    starts.sort_unstable();
    starts.dedup();
    let holiday_hours = if j.calendars.is_empty() {
        SmallVec::new()
    } else {
        starts
            .iter()
            .map(|&d| (d, crate::schedule::normalize(j.holiday_blocks(d, mode))))
            .collect()
    };
    let periods = starts
        .into_iter()
        .map(|d| {
            let days: Vec<Option<crate::schedule::Blocks>> =
                (0..7).map(|wd| j.day_blocks(d, wd, mode)).collect();
            let week = if days.iter().all(Option::is_none) {
                None
            } else {
                Some(Weekly::from_blocks(std::array::from_fn(|wd| {
                    days[wd]
                        .clone()
                        .unwrap_or_else(|| smallvec::smallvec![(0, 1440)])
                })))
            };
            (d, week)
        })
        .collect();
    let law = j
        .hours
        .iter()
        .find(|h| h.modes.is_empty() || h.modes.contains(&mode))
        .map(|h| h.cite.law.clone());
    let label: Arc<str> = match law {
        Some(l) => format!("{} {}", j.id, l).into(),
        None => format!("{} {}", j.id, j.name).into(),
    };
    Layer {
        label,
        periods,
        calendars: j
            .calendars
            .iter()
            .map(|c| calendars.get(c, &opts.opt_ins))
            .collect(),
        holiday_hours,
    }
}

/// The jurisdiction a call reports: the overlay (`US-FL`), the national
/// one without overlay (`FR`), and every overlay where the number may lie
/// in several (`CA-YT&CA-NT&CA-NU`): naming one of them would be a guess.
fn reported(js: &[&Arc<Jurisdiction>]) -> Arc<str> {
    match js {
        [] => "?".into(),
        [only] => only.id.clone(),
        [_, overlay] => overlay.id.clone(),
        [_, overlays @ ..] => overlays
            .iter()
            .map(|j| &*j.id)
            .collect::<Vec<_>>()
            .join("&")
            .into(),
    }
}

fn applied(
    set: &RuleSet,
    js: &[&Arc<Jurisdiction>],
    opts: &TenantOptions,
    calendars: &mut CalendarCache,
) -> Applied {
    let windows = [Mode::Automated, Mode::Manual].map(|m| {
        Window::new(
            js.iter().map(|j| layer(j, m, calendars, opts)).collect(),
            opts.schedule.clone(),
        )
    });
    Applied {
        jurisdiction: reported(js),
        ids: js.iter().map(|j| j.id.clone()).collect(),
        rule_set: set.name.as_str().into(),
        version: set.version.as_str().into(),
        windows,
        caller_id: js
            .iter()
            .flat_map(|j| j.caller_id.iter().cloned())
            .collect(),
        consent: js.iter().filter_map(|j| j.consent.clone()).collect(),
        hours_consent: js.iter().map(|j| j.hours_consent.clone()).collect(),
        cooloffs: js.iter().filter_map(|j| j.cooloff.clone()).collect(),
        caps: js.iter().flat_map(|j| j.caps.iter().cloned()).collect(),
    }
}
