//! Test fixtures shared by the unit tests of several modules.

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use std::sync::Arc;

use crate::dnc::{Consent, ConsentList, Delta, DncList, NumberSet};
use crate::numbering::{self, Country};
use crate::policy::{Campaign, Enforce, Mode, Responses, TenantPolicy, RULES};

fn n(s: &str) -> numbering::E164 {
    numbering::parse(s, Country::FR).unwrap()
}

/// Tenant `acme` as the default configuration makes it: `fr` rules,
/// country FR, automated by default, calls linked to a contract; DNC list
/// `demo` (+33612345678, +33142000099); consent list `optin`
/// (+33142000001 from 2026-09-01, +33142000002 from the same day with
/// consent to calls outside the hours). `change` adjusts it.
pub fn acme(change: impl FnOnce(&mut TenantPolicy)) -> TenantPolicy {
    let dnc = DncList::new(
        "demo".into(),
        Arc::new(NumberSet::from_numbers([
            n("+33612345678"),
            n("+33142000099"),
        ])),
        Arc::new(Delta::default()),
    );
    let day = chrono::NaiveDate::from_ymd_opt(2026, 9, 1).unwrap();
    let consent = ConsentList::from_entries([
        (
            n("+33142000001"),
            Consent {
                date: day,
                proof: "form-1".into(),
                hours: false,
            },
        ),
        (
            n("+33142000002"),
            Consent {
                date: day,
                proof: "form-2".into(),
                hours: true,
            },
        ),
    ]);
    let mut t = TenantPolicy {
        id: "acme".into(),
        country: Country::FR,
        rules: crate::rules::applied::TenantRules::builtin(
            &["fr"],
            &crate::rules::applied::TenantOptions::default(),
        ),
        default_mode: Mode::Automated,
        mode_header: "X-Dial-Mode".into(),
        campaign: Campaign::Contract,
        caller_ids: Vec::new(),
        dnc: vec![dnc],
        consent: vec![Arc::new(consent)],
        enforce_automated: [Enforce::Block; RULES],
        enforce_manual: [Enforce::Block; RULES],
        responses: Arc::new(Responses::default()),
    };
    change(&mut t);
    t
}

pub fn paris(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
    Tz::Europe__Paris
        .with_ymd_and_hms(y, m, d, h, min, 0)
        .unwrap()
        .with_timezone(&Utc)
}

/// Tuesday 17 November 2026, 11:00 in Paris: the hours are open.
pub fn tuesday_11() -> DateTime<Utc> {
    paris(2026, 11, 17, 11, 0)
}

/// The test binary's allocator: the system's, counting each thread's
/// allocations, so that a test can measure what a call path allocates
/// while other tests run on other threads.
struct PerThreadCount;

thread_local! {
    static ALLOCATIONS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

fn count_one() {
    // `try_with`: an allocation during the thread's teardown goes uncounted.
    let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
}

// SAFETY: every call is passed on to `System` unchanged.
unsafe impl std::alloc::GlobalAlloc for PerThreadCount {
    unsafe fn alloc(&self, l: std::alloc::Layout) -> *mut u8 {
        count_one();
        unsafe { std::alloc::System.alloc(l) }
    }
    unsafe fn alloc_zeroed(&self, l: std::alloc::Layout) -> *mut u8 {
        count_one();
        unsafe { std::alloc::System.alloc_zeroed(l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: std::alloc::Layout, size: usize) -> *mut u8 {
        count_one();
        unsafe { std::alloc::System.realloc(p, l, size) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: std::alloc::Layout) {
        unsafe { std::alloc::System.dealloc(p, l) }
    }
}

#[global_allocator]
static COUNTING: PerThreadCount = PerThreadCount;

/// How many allocations (and reallocations) `f` made on this thread.
pub fn allocations<T>(f: impl FnOnce() -> T) -> (T, u64) {
    let before = ALLOCATIONS.with(std::cell::Cell::get);
    let out = f();
    (out, ALLOCATIONS.with(std::cell::Cell::get) - before)
}
