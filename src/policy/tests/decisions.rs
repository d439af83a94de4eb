//! Decisions of one tenant's policy, built in memory: rule order, codes,
//! responses, explanations, hours, consent, cool-off, cap and Retry-After.

use super::super::*;
use crate::schedule::Weekly;
use crate::testing::{acme, paris, tuesday_11};
use chrono::{TimeZone, Weekday};
use chrono_tz::Tz;

fn decide(
    f: &TenantPolicy,
    caller: Option<&str>,
    callee: &str,
    mode: Option<&str>,
    at: DateTime<Utc>,
) -> Decision {
    f.decide(
        &Facts {
            caller,
            callee,
            mode,
            ..Default::default()
        },
        &History::default(),
        at,
    )
}

fn decide_with(f: &TenantPolicy, callee: &str, h: &History, at: DateTime<Utc>) -> Decision {
    f.decide(&Facts::new("0162000000", callee, None), h, at)
}

fn numbering(s: &str) -> E164 {
    crate::numbering::parse(s, Country::FR).unwrap()
}

#[test]
fn allowed_call() {
    let f = acme(|_| {});
    let d = decide(&f, Some("+33162000000"), "0142000000", None, tuesday_11());
    assert_eq!(d.decision, Outcome::Allow, "{d:?}");
    assert_eq!(
        d.callee.map(|c| c.to_string()).as_deref(),
        Some("+33142000000")
    );
    let json = serde_json::to_value(&d).unwrap();
    assert_eq!(json["callee"], "+33142000000");
    assert_eq!(json["caller"], "+33162000000");
    assert_eq!(json["decision"], "allow");
    assert_eq!(
        json["callee_time_zones"],
        serde_json::json!(["Europe/Paris"])
    );
    assert_eq!(
        json["callee_local_time"],
        serde_json::json!(["2026-11-17T11:00:00+01:00"])
    );
    assert!(json.get("reason").is_none());
    assert!(d.failed_rules.is_empty());
}

#[test]
fn each_rule_in_order_with_its_response() {
    let f = acme(|_| {});
    let t = tuesday_11();
    let cases: &[(Option<&str>, &str, u16, &str)] = &[
        (Some("+33162000000"), "12", 484, "invalid_callee"),
        (Some("+33162000000"), "sip:@x", 484, "invalid_callee"),
        (None, "0142000000", 433, "anonymous_caller_id"),
        (Some("anonymous"), "0142000000", 433, "anonymous_caller_id"),
        (Some("0612345678"), "0142000000", 403, "caller_id_category"),
        (Some("0142000000"), "0142000001", 403, "caller_id_category"),
        (Some("0899123456"), "0142000001", 403, "caller_id_category"),
        (
            Some("not a number"),
            "0142000001",
            403,
            "caller_id_category",
        ),
        (Some("+33162000000"), "+33612345678", 603, "dnc"),
        (Some("+33162000000"), "01 42 00 00 99", 603, "dnc"),
    ];
    for (caller, callee, status, code) in cases {
        let d = decide(&f, *caller, callee, None, t);
        assert_eq!(
            (d.decision, d.status, d.reason_str()),
            (Outcome::Reject, *status, Some(*code)),
            "{caller:?} → {callee}: {d:?}"
        );
        assert!(!d.explanation.is_empty());
        assert_eq!(d.retry_after, None);
    }
    // Allowed categories for automated calls.
    for caller in [
        "0162000000",
        "0949000000",
        "0947700000",
        "0800123456",
        "3010",
        "3199",
    ] {
        assert_eq!(
            decide(&f, Some(caller), "0142000000", None, t).decision,
            Outcome::Allow,
            "{caller}"
        );
    }
    // Manual calls may present a geographic number, never a mobile.
    assert_eq!(
        decide(&f, Some("0142000000"), "0142000001", Some("preview"), t).decision,
        Outcome::Allow
    );
    assert_eq!(
        decide(&f, Some("0612345678"), "0142000001", Some("manual"), t).reason_str(),
        Some("caller_id_category")
    );
    assert_eq!(
        decide(&f, Some("0142000000"), "0142000001", Some("predictive"), t).reason_str(),
        Some("caller_id_category")
    );
    assert_eq!(
        decide(&f, Some("0142000000"), "0142000001", Some("progressive"), t).mode,
        Mode::Automated
    );
}

#[test]
fn every_failed_rule_is_listed_and_the_first_reported() {
    let f = acme(|_| {});
    let sunday = Tz::Europe__Paris
        .with_ymd_and_hms(2026, 11, 22, 11, 0, 0)
        .unwrap()
        .with_timezone(&Utc);
    let d = decide(&f, Some("0612345678"), "0612345678", None, sunday);
    assert_eq!(d.reason_str(), Some("caller_id_category"));
    let rules: Vec<_> = d
        .failed_rules
        .iter()
        .map(|r| r.rule.code().as_str())
        .collect();
    assert_eq!(rules, ["caller_id_category", "dnc", "weekend"]);
}

#[test]
fn hours_weekend_holiday_with_retry_after() {
    let f = acme(|_| {});
    let paris = Tz::Europe__Paris;
    let at = |y, m, d, h, mi| {
        paris
            .with_ymd_and_hms(y, m, d, h, mi, 0)
            .unwrap()
            .with_timezone(&Utc)
    };
    let d = decide(
        &f,
        Some("0162000000"),
        "0142000000",
        None,
        at(2026, 11, 20, 20, 0),
    );
    assert_eq!(
        (d.status, &*d.phrase, d.reason_str()),
        (480, "Outside Contact Hours", Some("outside_hours"))
    );
    assert_eq!(
        d.retry_after,
        Some((at(2026, 11, 23, 10, 0) - at(2026, 11, 20, 20, 0)).num_seconds() as u64)
    );
    let d = decide(
        &f,
        Some("0162000000"),
        "0142000000",
        None,
        at(2026, 11, 21, 12, 0),
    );
    assert_eq!((&*d.phrase, d.reason_str()), ("Weekend", Some("weekend")));
    let d = decide(
        &f,
        Some("0162000000"),
        "0142000000",
        None,
        at(2026, 11, 11, 12, 0),
    );
    assert_eq!(
        (&*d.phrase, d.reason_str()),
        ("Public Holiday", Some("public_holiday"))
    );
    assert!(d.explanation.contains("Armistice"), "{}", d.explanation);
    assert_eq!(d.retry_after, Some(22 * 3600));
    // Réunion is UTC+4: 11:00 in Paris is 14:00 there, allowed; 09:30 in
    // Paris is 12:30 there, allowed; 06:30 Paris is 09:30 there, not.
    assert_eq!(
        decide(
            &f,
            Some("0162000000"),
            "0262123456",
            None,
            at(2026, 11, 17, 6, 30)
        )
        .reason_str(),
        Some("outside_hours")
    );
    assert_eq!(
        decide(
            &f,
            Some("0162000000"),
            "0262123456",
            None,
            at(2026, 11, 17, 9, 30)
        )
        .decision,
        Outcome::Allow
    );
}

#[test]
fn consent_for_prospecting_since_august_2026_and_hours_consent() {
    let f = acme(|t| t.campaign = Campaign::Prospecting);
    let t = tuesday_11();
    let d = decide(&f, Some("0162000000"), "0142000000", None, t);
    assert_eq!((d.status, d.reason_str()), (608, Some("no_consent")));
    assert_eq!(
        decide(&f, Some("0162000000"), "0142000001", None, t).decision,
        Outcome::Allow
    );
    // Before 11 August 2026 no consent was required.
    let july = Tz::Europe__Paris
        .with_ymd_and_hms(2026, 7, 15, 11, 0, 0)
        .unwrap()
        .with_timezone(&Utc);
    assert_eq!(
        decide(&f, Some("0162000000"), "0142000000", None, july).decision,
        Outcome::Allow
    );
    // An hours consent lifts the hours rule, not weekends.
    let evening = Tz::Europe__Paris
        .with_ymd_and_hms(2026, 11, 17, 21, 0, 0)
        .unwrap()
        .with_timezone(&Utc);
    assert_eq!(
        decide(&f, Some("0162000000"), "0142000002", None, evening).decision,
        Outcome::Allow
    );
    assert_eq!(
        decide(&f, Some("0162000000"), "0142000001", None, evening).reason_str(),
        Some("outside_hours")
    );
    let saturday = Tz::Europe__Paris
        .with_ymd_and_hms(2026, 11, 21, 11, 0, 0)
        .unwrap()
        .with_timezone(&Utc);
    assert_eq!(
        decide(&f, Some("0162000000"), "0142000002", None, saturday).reason_str(),
        Some("weekend")
    );
}

#[test]
fn entitlement_warn_enforcement_schedule_and_custom_codes() {
    let f = acme(|t| {
        t.caller_ids = ["+3316200*", "3010"]
            .iter()
            .map(|c| caller_prefix(c, Country::FR).unwrap())
            .collect();
        let week = Weekly::from_days(&[(Weekday::Tue, vec![(600, 720)])], false);
        t.rules.each_mut(|a| {
            a.window_mut(Mode::Automated).tenant = Some(week.clone());
            a.window_mut(Mode::Manual).tenant = Some(week.clone());
        });
        t.enforce_automated[Rule::Dnc.index()] = Enforce::Warn;
        t.enforce_manual[Rule::Dnc.index()] = Enforce::Warn;
        let mut r = Responses::default();
        r.by_rule[Rule::OutsideHours.index()] = (486, "Not Now".into());
        t.responses = Arc::new(r);
    });
    let t = tuesday_11();
    assert_eq!(
        decide(&f, Some("+33162000123"), "0142000000", None, t).decision,
        Outcome::Allow
    );
    assert_eq!(
        decide(&f, Some("3010"), "0142000000", None, t).decision,
        Outcome::Allow
    );
    let d = decide(&f, Some("+33163000000"), "0142000000", None, t);
    assert_eq!(d.reason_str(), Some("caller_id_category"));
    assert!(
        d.explanation.contains("not one of tenant acme's numbers"),
        "{}",
        d.explanation
    );
    let d = decide(&f, Some("+33162000123"), "0612345678", None, t);
    assert_eq!((d.decision, d.reason_str()), (Outcome::Warn, Some("dnc")));
    let noon = Tz::Europe__Paris
        .with_ymd_and_hms(2026, 11, 17, 12, 30, 0)
        .unwrap()
        .with_timezone(&Utc);
    let d = decide(&f, Some("+33162000123"), "0142000000", None, noon);
    assert_eq!((d.status, &*d.phrase), (486, "Not Now"));
    assert_eq!(
        d.retry_after,
        Some(7 * 24 * 3600 - 2 * 3600 - 1800),
        "next Tuesday 10:00"
    );
}

#[test]
fn refusal_cooloff_runs_sixty_full_days_in_the_callee_zone() {
    let f = acme(|_| {});
    // Refused Tuesday 17 November 2026 at 15:00 in Paris: the 60 full days
    // are 18 November .. 16 January; calls may resume on 17 January 2027,
    // a Sunday, so the first allowed instant is Monday 18 January 10:00.
    let h = History {
        refused_at: Some(paris(2026, 11, 17, 15, 0)),
        ..Default::default()
    };
    let d = decide_with(&f, "0142000000", &h, paris(2026, 11, 17, 16, 0));
    assert_eq!((d.status, d.reason_str()), (603, Some("refusal_cooloff")));
    assert_eq!(&*d.phrase, "Callee Refused Recently");
    let resume = paris(2027, 1, 18, 10, 0);
    assert_eq!(
        d.retry_after,
        Some((resume - paris(2026, 11, 17, 16, 0)).num_seconds() as u64)
    );
    assert!(d.explanation.contains("2026-11-17"), "{}", d.explanation);
    assert!(
        d.explanation.contains("2027-01-18 10:00"),
        "{}",
        d.explanation
    );
    // Friday 15 January, the 59th full day: still refused.
    let d = decide_with(&f, "0142000000", &h, paris(2027, 1, 15, 11, 0));
    assert_eq!(d.reason_str(), Some("refusal_cooloff"));
    // Saturday 16 January 23:59 is still inside; it is a weekend too, and
    // the cool-off is reported first (decision order).
    let d = decide_with(&f, "0142000000", &h, paris(2027, 1, 16, 23, 59));
    assert_eq!(d.reason_str(), Some("refusal_cooloff"));
    assert_eq!(d.failed_rules.len(), 2);
    // Sunday 17 January 00:00: over; only the weekend remains.
    let d = decide_with(&f, "0142000000", &h, paris(2027, 1, 17, 0, 0));
    assert_eq!(d.reason_str(), Some("weekend"));
    assert_eq!(
        decide_with(&f, "0142000000", &h, resume).decision,
        Outcome::Allow
    );
    // A refusal of another callee changes nothing for this one.
    assert_eq!(
        decide_with(
            &f,
            "0142000000",
            &History::default(),
            paris(2026, 11, 17, 16, 0)
        )
        .decision,
        Outcome::Allow
    );
}

#[test]
fn refusal_cooloff_days_are_counted_in_reunion_time() {
    let f = acme(|_| {});
    // 22:30 in Paris on 17 November is already 18 November 01:30 in
    // Réunion (UTC+4): the refusal day there is the 18th, so the cool-off
    // ends on 18 January 2027 00:00 Réunion, and calls resume that Monday
    // at 10:00 Réunion time.
    let refused = paris(2026, 11, 17, 22, 30);
    let h = History {
        refused_at: Some(refused),
        ..Default::default()
    };
    let reunion = |d, h| {
        Tz::Indian__Reunion
            .with_ymd_and_hms(2027, 1, d, h, 0, 0)
            .unwrap()
            .with_timezone(&Utc)
    };
    let d = decide_with(&f, "0262123456", &h, reunion(15, 11));
    assert_eq!(d.reason_str(), Some("refusal_cooloff"));
    assert_eq!(
        d.retry_after,
        Some((reunion(18, 10) - reunion(15, 11)).num_seconds() as u64)
    );
    assert_eq!(
        decide_with(&f, "0262123456", &h, reunion(18, 10)).decision,
        Outcome::Allow
    );
}

#[test]
fn frequency_cap_is_four_attempts_in_thirty_days() {
    let f = acme(|_| {});
    let t = &f;
    let now = paris(2026, 11, 17, 11, 0);
    // Attempts on 20 October 11:00 and three later ones.
    let first = paris(2026, 10, 20, 11, 0);
    let mut h = History::default();
    for d in [0, 5, 10] {
        h.attempts.push(first + chrono::Duration::days(d));
    }
    assert_eq!(
        decide_with(&f, "0142000000", &h, now).decision,
        Outcome::Allow
    );
    h.attempts.push(first + chrono::Duration::days(20));
    let d = decide_with(&f, "0142000000", &h, now);
    assert_eq!(
        (d.status, &*d.phrase, d.reason_str()),
        (480, "Contact Limit Reached", Some("frequency_cap"))
    );
    // The oldest attempt leaves the window 30 × 24 h later: 19 November
    // 10:00 in Paris (summer time ended in between), a Thursday inside
    // the hours.
    assert_eq!(
        d.retry_after,
        Some((paris(2026, 11, 19, 10, 0) - now).num_seconds() as u64)
    );
    assert!(d.explanation.contains("4 attempts"), "{}", d.explanation);
    // At that instant the first attempt is out of the window.
    assert_eq!(
        decide_with(&f, "0142000000", &h, paris(2026, 11, 19, 11, 0)).decision,
        Outcome::Allow
    );
    // An attempt in the future of `now` (clock skew between instances)
    // does not count.
    let mut skewed = History::default();
    for _ in 0..4 {
        skewed.attempts.push(now + chrono::Duration::hours(1));
    }
    assert_eq!(
        decide_with(&f, "0142000000", &skewed, now).decision,
        Outcome::Allow
    );
    // The cap found when counting (a race lost) turns an allow into a
    // rejection with the same explanation.
    let mut d = decide_with(&f, "0142000000", &History::default(), now);
    assert_eq!(d.decision, Outcome::Allow);
    let callee = d.callee.unwrap();
    let fail = t
        .cap_failure(&t.rules.primary, Mode::Automated, callee, &h.attempts, now)
        .unwrap();
    t.cap_reached(&mut d, fail);
    assert_eq!(
        (d.decision, d.status, d.reason_str()),
        (Outcome::Reject, 480, Some("frequency_cap"))
    );
    assert!(d.retry_after.is_some());
}

#[test]
fn custom_rule_sets_set_or_drop_the_cap_and_the_cooloff() {
    let f = acme(|t| {
        t.rules.each_mut(|a| {
            a.cooloffs.clear();
            for c in &mut a.caps {
                c.cap = Cap {
                    attempts: 3,
                    window: chrono::Duration::hours(24),
                };
            }
        });
    });
    let now = paris(2026, 11, 17, 11, 0);
    let h = History {
        refused_at: Some(now - chrono::Duration::hours(1)),
        attempts: (1..=3).map(|i| now - chrono::Duration::hours(i)).collect(),
        closures: None,
    };
    let d = decide_with(&f, "0142000000", &h, now);
    assert_eq!(d.reason_str(), Some("frequency_cap"));
    assert_eq!(d.failed_rules.len(), 1, "no cool-off rule any more");
    // 24 h after the oldest (08:00 today) is tomorrow 08:00, before the
    // hours open: retry at 10:00.
    assert_eq!(
        d.retry_after,
        Some((paris(2026, 11, 18, 10, 0) - now).num_seconds() as u64)
    );
}

#[test]
fn retry_after_waits_for_every_blocking_rule() {
    let f = acme(|_| {});
    // Saturday 21 November 2026, 11:00: weekend. Four attempts, the oldest
    // on 27 October 15:00, so the cap frees on Thursday 26 November 15:00
    // (30 × 24 h later; Paris is on winter time throughout).
    let now = paris(2026, 11, 21, 11, 0);
    let first = paris(2026, 10, 27, 15, 0);
    let mut h = History::default();
    for d in [0, 1, 2, 3] {
        h.attempts.push(first + chrono::Duration::days(d));
    }
    let d = decide_with(&f, "0142000000", &h, now);
    assert_eq!(d.reason_str(), Some("weekend"));
    assert_eq!(
        d.retry_after,
        Some((paris(2026, 11, 26, 15, 0) - now).num_seconds() as u64),
        "{}",
        d.explanation
    );
    assert!(
        d.explanation
            .contains("other rules also refuse the call until Thu 2026-11-26 15:00"),
        "{}",
        d.explanation
    );
    // A permanent refusal among them: no Retry-After at all.
    let d = decide_with(&f, "+33142000099", &h, now);
    assert_eq!((d.reason_str(), d.retry_after), (Some("dnc"), None));
}

#[test]
fn the_cap_frees_when_enough_attempts_have_left_the_window() {
    let f = acme(|_| {});
    let t = &f;
    let now = paris(2026, 11, 17, 11, 0);
    // Six attempts, 20 to 25 October (counted while the cap was only
    // warned): the cap of 4 frees when the third oldest leaves the window,
    // on Saturday 21 November, so Monday 23 November 10:00 (the oldest
    // alone would have said Thursday 19 November).
    let attempts: Vec<_> = (0..6).map(|i| paris(2026, 10, 20 + i, 11, 0)).collect();
    let (_, why, retry) = t
        .cap_failure(
            &t.rules.primary,
            Mode::Automated,
            numbering("0142000000"),
            &attempts,
            now,
        )
        .unwrap();
    assert_eq!(
        retry,
        Some((paris(2026, 11, 23, 10, 0) - now).num_seconds() as u64),
        "{why}"
    );
}

/// A caller-ID pattern in national format opens with the country's trunk
/// prefix; where there is none, it is written with the country code.
#[test]
fn caller_id_patterns_in_each_countrys_national_format() {
    for (pattern, country, want) in [
        ("0162*", Country::FR, (33162, 5)),
        ("04*", Country::AU, (614, 3)),
        ("0812*", Country::ID, (62812, 5)),
        ("011*", Country::BR, (5511, 4)),
        ("+61 2*", Country::FR, (612, 3)),
        ("1212*", Country::US, (1212, 4)),
        ("346*", Country::ES, (346, 3)),
    ] {
        assert_eq!(
            caller_prefix(pattern, country),
            Some(want),
            "{pattern} {country:?}"
        );
    }
    // A whole number is read like any caller ID.
    assert_eq!(
        caller_prefix("0412345678", Country::AU),
        Some((61_412_345_678, 11))
    );
}
