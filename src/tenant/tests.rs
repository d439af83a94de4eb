//! Decisions through a compiled config: rule order, codes, explanations.

use super::*;
use crate::policy::{Decision, History, Mode};
use chrono::TimeZone;
use chrono_tz::Tz;
use std::io::Write;

struct Fixture {
    _dir: tempfile::TempDir,
    tenants: Tenants,
}

fn fixture(extra_tenant: &str, extra: &str) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    std::fs::File::create(dir.path().join("dnc.txt"))
        .unwrap()
        .write_all(b"+33612345678\n0142000099\n")
        .unwrap();
    std::fs::File::create(dir.path().join("consent.csv"))
        .unwrap()
        .write_all(b"number,date,proof,hours\n+33142000001,2026-09-01,form-1,no\n+33142000002,2026-09-01,form-2,yes\n")
        .unwrap();
    let text = format!(
        r#"
[sip]
listen = ["udp:127.0.0.1:5060"]
[[dnc_list]]
name = "demo"
file = "dnc.txt"
[[consent_list]]
name = "optin"
file = "consent.csv"
[[tenant]]
id = "acme"
sources = ["10.0.0.0/8"]
dnc_lists = ["demo"]
consent_lists = ["optin"]
{extra_tenant}
{extra}
"#
    );
    let cfg = Config::parse(&text, &dir.path().join("c.toml")).unwrap();
    let (tenants, lists) = Tenants::build(&cfg, dir.path(), None).unwrap();
    assert_eq!(lists.len(), 2);
    Fixture { _dir: dir, tenants }
}

/// Tuesday 17 November 2026, 11:00 in Paris.
fn tuesday_11() -> DateTime<Utc> {
    Tz::Europe__Paris
        .with_ymd_and_hms(2026, 11, 17, 11, 0, 0)
        .unwrap()
        .with_timezone(&Utc)
}

fn decide(
    f: &Fixture,
    caller: Option<&str>,
    callee: &str,
    mode: Option<&str>,
    at: DateTime<Utc>,
) -> Decision {
    f.tenants.by_id("acme").unwrap().decide(
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

#[test]
fn allowed_call() {
    let f = fixture("", "");
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
    let f = fixture("", "");
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
            (d.decision, d.status, d.reason),
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
        decide(&f, Some("0612345678"), "0142000001", Some("manual"), t).reason,
        Some("caller_id_category")
    );
    assert_eq!(
        decide(&f, Some("0142000000"), "0142000001", Some("predictive"), t).reason,
        Some("caller_id_category")
    );
    assert_eq!(
        decide(&f, Some("0142000000"), "0142000001", Some("progressive"), t).mode,
        Mode::Automated
    );
}

#[test]
fn every_failed_rule_is_listed_and_the_first_reported() {
    let f = fixture("", "");
    let sunday = Tz::Europe__Paris
        .with_ymd_and_hms(2026, 11, 22, 11, 0, 0)
        .unwrap()
        .with_timezone(&Utc);
    let d = decide(&f, Some("0612345678"), "0612345678", None, sunday);
    assert_eq!(d.reason, Some("caller_id_category"));
    let rules: Vec<_> = d.failed_rules.iter().map(|r| r.rule).collect();
    assert_eq!(rules, ["caller_id_category", "dnc", "weekend"]);
}

#[test]
fn hours_weekend_holiday_with_retry_after() {
    let f = fixture("", "");
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
        (d.status, &*d.phrase, d.reason),
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
    assert_eq!((&*d.phrase, d.reason), ("Weekend", Some("weekend")));
    let d = decide(
        &f,
        Some("0162000000"),
        "0142000000",
        None,
        at(2026, 11, 11, 12, 0),
    );
    assert_eq!(
        (&*d.phrase, d.reason),
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
        .reason,
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
    let f = fixture("campaign = \"prospecting\"", "");
    let t = tuesday_11();
    let d = decide(&f, Some("0162000000"), "0142000000", None, t);
    assert_eq!((d.status, d.reason), (608, Some("no_consent")));
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
        decide(&f, Some("0162000000"), "0142000001", None, evening).reason,
        Some("outside_hours")
    );
    let saturday = Tz::Europe__Paris
        .with_ymd_and_hms(2026, 11, 21, 11, 0, 0)
        .unwrap()
        .with_timezone(&Utc);
    assert_eq!(
        decide(&f, Some("0162000000"), "0142000002", None, saturday).reason,
        Some("weekend")
    );
}

#[test]
fn entitlement_warn_enforcement_schedule_and_custom_codes() {
    let f = fixture(
        "caller_ids = [\"+3316200*\", \"3010\"]\nschedule = { tue = [\"10:00-12:00\"] }\n[tenant.enforcement.automated]\ndnc = \"warn\"",
        "[responses.outside_hours]\nstatus = 486\nphrase = \"Not Now\"",
    );
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
    assert_eq!(d.reason, Some("caller_id_category"));
    assert!(
        d.explanation.contains("not one of tenant acme's numbers"),
        "{}",
        d.explanation
    );
    let d = decide(&f, Some("+33162000123"), "0612345678", None, t);
    assert_eq!((d.decision, d.reason), (Outcome::Warn, Some("dnc")));
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
fn bad_config_references_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let base = "[sip]\nlisten = [\"udp:127.0.0.1:5060\"]\n[[tenant]]\nid = \"a\"\nsources = [\"10.0.0.0/8\"]\n";
    for (extra, needle) in [
        ("dnc_lists = [\"nope\"]", "no [[dnc_list]] named `nope`"),
        ("rule_set = \"de\"", "unknown rule set `de`"),
        ("caller_ids = [\"abc\"]", "`abc` is not a number"),
        (
            "schedule = { mon = [\"12:00-10:00\"] }",
            "must end after it starts",
        ),
        (
            "[tenant.enforcement.automated]\nweekends = \"warn\"",
            "unknown rule code `weekends`",
        ),
    ] {
        let e = Config::parse(&format!("{base}{extra}\n"), &dir.path().join("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains(needle), "{extra}: {e}");
    }
    let missing =
        format!("[[dnc_list]]\nname = \"x\"\nfile = \"missing.txt\"\n{base}dnc_lists = [\"x\"]\n");
    let cfg = Config::parse(&missing, &dir.path().join("c.toml")).unwrap();
    let e = Tenants::build(&cfg, dir.path(), None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing.txt"), "{e}");
}

#[test]
fn facts_from_the_invite() {
    let m = Message::parse(bytes::Bytes::from_static(
        b"INVITE sip:0142000000@proxy;user=phone SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\
From: \"Agent\" <sip:+33142999999@dialer>;tag=1\r\nP-Asserted-Identity: <sip:+33162000000@dialer>\r\n\
To: <sip:0142000000@proxy>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nX-Dial-Mode: preview\r\n\r\n",
    ))
    .unwrap();
    let f = facts(&m, "X-Dial-Mode");
    assert_eq!(
        (f.caller, f.callee, f.mode),
        (Some("+33162000000"), "0142000000", Some("preview"))
    );
    let m = Message::parse(bytes::Bytes::from_static(
        b"INVITE tel:+33142000000 SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\
From: \"Anonymous\" <sip:anonymous@anonymous.invalid>;tag=1\r\nTo: <sip:x@y>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n\r\n",
    ))
    .unwrap();
    let f = facts(&m, "X-Dial-Mode");
    assert_eq!(
        (f.caller, f.callee, f.mode),
        (Some("anonymous"), "+33142000000", None)
    );
}

fn paris(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
    Tz::Europe__Paris
        .with_ymd_and_hms(y, m, d, h, min, 0)
        .unwrap()
        .with_timezone(&Utc)
}

fn decide_with(f: &Fixture, callee: &str, h: &History, at: DateTime<Utc>) -> Decision {
    f.tenants
        .by_id("acme")
        .unwrap()
        .decide(&Facts::new("0162000000", callee, None), h, at)
}

#[test]
fn refusal_cooloff_runs_sixty_full_days_in_the_callee_zone() {
    let f = fixture("", "");
    // Refused Tuesday 17 November 2026 at 15:00 in Paris: the 60 full days
    // are 18 November .. 16 January; calls may resume on 17 January 2027,
    // a Sunday, so the first allowed instant is Monday 18 January 10:00.
    let h = History {
        refused_at: Some(paris(2026, 11, 17, 15, 0)),
        ..Default::default()
    };
    let d = decide_with(&f, "0142000000", &h, paris(2026, 11, 17, 16, 0));
    assert_eq!((d.status, d.reason), (603, Some("refusal_cooloff")));
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
    assert_eq!(d.reason, Some("refusal_cooloff"));
    // Saturday 16 January 23:59 is still inside; it is a weekend too, and
    // the cool-off is reported first (decision order).
    let d = decide_with(&f, "0142000000", &h, paris(2027, 1, 16, 23, 59));
    assert_eq!(d.reason, Some("refusal_cooloff"));
    assert_eq!(d.failed_rules.len(), 2);
    // Sunday 17 January 00:00: over; only the weekend remains.
    let d = decide_with(&f, "0142000000", &h, paris(2027, 1, 17, 0, 0));
    assert_eq!(d.reason, Some("weekend"));
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
    let f = fixture("", "");
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
    assert_eq!(d.reason, Some("refusal_cooloff"));
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
    let f = fixture("", "");
    let t = f.tenants.by_id("acme").unwrap();
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
        (d.status, &*d.phrase, d.reason),
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
    let fail = t.cap_failure(callee, &h.attempts, now).unwrap();
    t.cap_reached(&mut d, fail);
    assert_eq!(
        (d.decision, d.status, d.reason),
        (Outcome::Reject, 480, Some("frequency_cap"))
    );
    assert!(d.retry_after.is_some());
}

#[test]
fn custom_rule_sets_set_or_drop_the_cap_and_the_cooloff() {
    let f = fixture(
        "rule_set = \"strict\"",
        "[rule_set.strict]\nbase = \"fr\"\nrefusal_cooloff_days = 0\nfrequency_cap = { attempts = 3, window_hours = 24 }",
    );
    let now = paris(2026, 11, 17, 11, 0);
    let h = History {
        refused_at: Some(now - chrono::Duration::hours(1)),
        attempts: (1..=3).map(|i| now - chrono::Duration::hours(i)).collect(),
    };
    let d = decide_with(&f, "0142000000", &h, now);
    assert_eq!(d.reason, Some("frequency_cap"));
    assert_eq!(d.failed_rules.len(), 1, "no cool-off rule any more");
    // 24 h after the oldest (08:00 today) is tomorrow 08:00, before the
    // hours open: retry at 10:00.
    assert_eq!(
        d.retry_after,
        Some((paris(2026, 11, 18, 10, 0) - now).num_seconds() as u64)
    );
    for (bad, why) in [
        (
            "frequency_cap = { attempts = 3, window_hours = 0 }",
            "window_hours",
        ),
        ("refusal_cooloff_days = 99999", "ten years"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "[sip]\nlisten = [\"udp:127.0.0.1:5060\"]\n[rule_set.x]\nbase = \"fr\"\n{bad}\n[[tenant]]\nid = \"a\"\nsources = [\"10.0.0.0/8\"]\nrule_set = \"x\"\n"
        );
        let e = Config::parse(&text, &dir.path().join("c.toml"))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains(why) && e.contains("rule_set.x"), "{e}");
    }
}

#[test]
fn retry_after_waits_for_every_blocking_rule() {
    let f = fixture("", "");
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
    assert_eq!(d.reason, Some("weekend"));
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
    assert_eq!((d.reason, d.retry_after), (Some("dnc"), None));
}

#[test]
fn the_cap_frees_when_enough_attempts_have_left_the_window() {
    let f = fixture("", "");
    let t = f.tenants.by_id("acme").unwrap();
    let now = paris(2026, 11, 17, 11, 0);
    // Six attempts, 20 to 25 October (counted while the cap was only
    // warned): the cap of 4 frees when the third oldest leaves the window,
    // on Saturday 21 November, so Monday 23 November 10:00 (the oldest
    // alone would have said Thursday 19 November).
    let attempts: Vec<_> = (0..6).map(|i| paris(2026, 10, 20 + i, 11, 0)).collect();
    let (_, why, retry) = t
        .cap_failure(numbering("0142000000"), &attempts, now)
        .unwrap();
    assert_eq!(
        retry,
        Some((paris(2026, 11, 23, 10, 0) - now).num_seconds() as u64),
        "{why}"
    );
}

fn numbering(s: &str) -> crate::numbering::E164 {
    crate::numbering::parse(s, Country::FR).unwrap()
}

#[test]
fn every_presented_identity_is_checked() {
    let parse = |s: &'static str| Message::parse(bytes::Bytes::from(s)).unwrap();
    let m = parse(
        "INVITE sip:0142000000@proxy SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\
From: <sip:+33162000001@dialer>;tag=1\r\nP-Asserted-Identity: garbage\r\n\
P-Asserted-Identity: <sip:+33612345678@d>, <tel:+33162000002>\r\n\
To: <sip:0142000000@proxy>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n\r\n",
    );
    let f = facts(&m, "X-Dial-Mode");
    assert_eq!(f.caller, Some("garbage"));
    assert_eq!(
        &f.also_presented[..],
        ["+33612345678", "+33162000002", "+33162000001"]
    );
    assert!(!f.withheld);
    let fx = fixture("", "");
    let d = fx
        .tenants
        .by_id("acme")
        .unwrap()
        .decide(&f, &History::default(), tuesday_11());
    assert_eq!(d.reason, Some("caller_id_category"));
    assert!(d.explanation.contains("`garbage`"), "{}", d.explanation);
    assert!(d.explanation.contains("+33612345678"), "{}", d.explanation);
    // A From that is a name is not a caller ID; Privacy: id withholds it.
    let m = parse(
        "INVITE sip:0142000000@proxy SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\
From: \"Anonymous\" <sip:anonymous@anonymous.invalid>;tag=1\r\n\
P-Asserted-Identity: <sip:+33162000001@d>\r\nPrivacy: header; id\r\n\
To: <sip:0142000000@proxy>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n\r\n",
    );
    let f = facts(&m, "X-Dial-Mode");
    assert_eq!(
        (f.caller, f.also_presented.len(), f.withheld),
        (Some("+33162000001"), 0, true)
    );
    // Remote-Party-ID: the calling party is presented, its privacy obeyed.
    let m2 = parse(
        "INVITE sip:0142000000@proxy SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\
From: <sip:+33162000001@dialer>;tag=1\r\n\
Remote-Party-ID: <sip:+33612345678@d>;party=calling;screen=yes;privacy=off\r\n\
Remote-Party-ID: <sip:+33142000000@d>;party=called\r\n\
To: <sip:0142000000@proxy>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n\r\n",
    );
    let f2 = facts(&m2, "X-Dial-Mode");
    assert_eq!(
        (f2.caller, &f2.also_presented[..], f2.withheld),
        (Some("+33162000001"), &["+33612345678"][..], false)
    );
    let d = fx
        .tenants
        .by_id("acme")
        .unwrap()
        .decide(&f, &History::default(), tuesday_11());
    assert_eq!((d.status, d.reason), (433, Some("anonymous_caller_id")));
}
