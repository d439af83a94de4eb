//! The rule library, jurisdiction by jurisdiction: each window's
//! boundaries, Sunday and holiday bans, caps, closures, and the
//! intersection of national and state rules, through the compiled config
//! as `serve` builds it.

use std::sync::Arc;

use callguard::config::Config;
use callguard::policy::{Closure, Facts, History, Outcome, TenantPolicy};
use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;

fn tenant(sets: &str, extra: &str) -> Arc<TenantPolicy> {
    let text = format!(
        "[sip]\nlisten = [\"udp:127.0.0.1:5060\"]\n[[tenant]]\nid = \"t\"\nsources = [\"10.0.0.0/8\"]\ncountry = \"US\"\nrule_sets = [{sets}]\n{extra}\n"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    let cfg = Config::parse(&text, &path).unwrap();
    let (t, _) = callguard::app::compile::tenants(&cfg, dir.path(), None).unwrap();
    t.by_id("t").unwrap().clone()
}

fn local(zone: Tz, y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
    zone.with_ymd_and_hms(y, m, d, h, min, 0)
        .single()
        .unwrap()
        .with_timezone(&Utc)
}

/// (outcome, reason, retry-after, jurisdiction)
fn decide(
    t: &TenantPolicy,
    callee: &str,
    at: DateTime<Utc>,
    h: &History,
) -> (
    Outcome,
    Option<&'static str>,
    Option<u64>,
    Option<String>,
    String,
) {
    let d = t.decide(&Facts::new("+12125550100", callee, Some("manual")), h, at);
    (
        d.decision,
        d.reason_str(),
        d.retry_after,
        d.jurisdiction.as_deref().map(str::to_owned),
        d.explanation.to_string(),
    )
}

const NY: Tz = Tz::America__New_York;

#[test]
fn florida_overlay_intersects_the_federal_window() {
    let t = tenant("\"us\"", "");
    let miami = "+13055550123";
    let (o, _, _, j, _) = decide(
        &t,
        miami,
        local(NY, 2026, 11, 24, 8, 0),
        &History::default(),
    );
    assert_eq!((o, j.as_deref()), (Outcome::Allow, Some("US-FL")));
    let (o, _, _, _, _) = decide(
        &t,
        miami,
        local(NY, 2026, 11, 24, 19, 59),
        &History::default(),
    );
    assert_eq!(o, Outcome::Allow);
    let at = local(NY, 2026, 11, 24, 20, 0);
    let (o, r, retry, _, why) = decide(&t, miami, at, &History::default());
    assert_eq!((o, r), (Outcome::Reject, Some("outside_hours")));
    assert!(
        why.contains("Florida FTSA") && why.contains("08:00–20:00"),
        "{why}"
    );
    assert_eq!(retry, Some(12 * 3600));
    // New York is federal only: 20:00 is fine, 21:00 is not. The call
    // still reports its state.
    let (o, _, _, j, _) = decide(&t, "+12125550123", at, &History::default());
    assert_eq!((o, j.as_deref()), (Outcome::Allow, Some("US-NY")));
    let (o, r, _, _, why) = decide(
        &t,
        "+12125550123",
        local(NY, 2026, 11, 24, 21, 0),
        &History::default(),
    );
    assert_eq!((o, r), (Outcome::Reject, Some("outside_hours")));
    assert!(why.contains("TCPA"), "{why}");
    // Florida's cap: 3 in a rolling 24 h.
    let now = local(NY, 2026, 11, 24, 12, 0);
    let h = History {
        attempts: (1..=3).map(|i| now - chrono::Duration::hours(i)).collect(),
        ..History::default()
    };
    let (o, r, retry, _, why) = decide(&t, miami, now, &h);
    assert_eq!((o, r), (Outcome::Reject, Some("frequency_cap")), "{why}");
    assert_eq!(retry, Some(21 * 3600));
    let (o, _, _, _, _) = decide(&t, "+12125550123", now, &h);
    assert_eq!(o, Outcome::Allow, "no cap in New York");
}

#[test]
fn texas_sunday_noon_and_rhode_island_saturdays() {
    let t = tenant("\"us\"", "");
    let ct = Tz::America__Chicago;
    let dallas = "+12145550123";
    // Sunday 29 November 2026.
    let (o, r, retry, _, _) = decide(
        &t,
        dallas,
        local(ct, 2026, 11, 29, 11, 59),
        &History::default(),
    );
    assert_eq!(
        (o, r, retry),
        (Outcome::Reject, Some("outside_hours"), Some(60))
    );
    let (o, _, _, _, _) = decide(
        &t,
        dallas,
        local(ct, 2026, 11, 29, 12, 0),
        &History::default(),
    );
    assert_eq!(o, Outcome::Allow);
    let ri = "+14015550123";
    let (o, _, _, _, _) = decide(&t, ri, local(NY, 2026, 11, 28, 16, 59), &History::default());
    assert_eq!(o, Outcome::Allow);
    let (o, r, _, _, _) = decide(&t, ri, local(NY, 2026, 11, 28, 17, 0), &History::default());
    assert_eq!((o, r), (Outcome::Reject, Some("outside_hours")));
    let (o, r, retry, _, _) = decide(&t, ri, local(NY, 2026, 11, 29, 12, 0), &History::default());
    assert_eq!((o, r), (Outcome::Reject, Some("weekend")));
    assert_eq!(retry, Some(21 * 3600), "Monday 09:00");
}

/// Pennsylvania's holiday list, 2026–2028, against the dates computed by
/// hand (observed days included).
#[test]
fn pennsylvania_holidays_2026_to_2028() {
    let lib = callguard::rules::Library::builtin().unwrap();
    let (_, pa) = lib.find("US-PA").unwrap();
    let cals: Vec<_> = pa.calendars.iter().map(|c| c.compile(&[])).collect();
    let mut found = Vec::new();
    for y in 2026..=2028 {
        let mut d = NaiveDate::from_ymd_opt(y, 1, 1).unwrap();
        while chrono::Datelike::year(&d) == y {
            if cals.iter().any(|c| c.holiday(d, NY).is_some()) {
                found.push(d.to_string());
            }
            d = d.succ_opt().unwrap();
        }
    }
    let expected = [
        // 2026: Easter 5 April; 4 July a Saturday (observed Fri 3 July)
        "2026-01-01",
        "2026-01-19",
        "2026-02-16",
        "2026-04-03",
        "2026-05-25",
        "2026-06-14",
        "2026-06-19",
        "2026-07-03",
        "2026-07-04",
        "2026-09-07",
        "2026-10-12",
        "2026-11-03",
        "2026-11-11",
        "2026-11-26",
        "2026-12-25",
        // 2027: Easter 28 March; 19 June Sat, 4 July Sun, 25 Dec Sat
        "2027-01-01",
        "2027-01-18",
        "2027-02-15",
        "2027-03-26",
        "2027-05-31",
        "2027-06-14",
        "2027-06-18",
        "2027-06-19",
        "2027-07-04",
        "2027-07-05",
        "2027-09-06",
        "2027-10-11",
        "2027-11-02",
        "2027-11-11",
        "2027-11-25",
        "2027-12-24",
        "2027-12-25",
        "2027-12-31",
        // 2028: Easter 16 April; 1 Jan Sat (observed Fri 31 Dec 2027)
        "2028-01-01",
        "2028-01-17",
        "2028-02-21",
        "2028-04-14",
        "2028-05-29",
        "2028-06-14",
        "2028-06-19",
        "2028-07-04",
        "2028-09-04",
        "2028-10-09",
        "2028-11-07",
        "2028-11-10",
        "2028-11-11",
        "2028-11-23",
        "2028-12-25",
    ];
    assert_eq!(found, expected);
    // Through the decision: Flag Day 2027 is a Monday.
    let t = tenant("\"us\"", "");
    let (o, r, _, _, why) = decide(
        &t,
        "+12155550123",
        local(NY, 2027, 6, 14, 12, 0),
        &History::default(),
    );
    assert_eq!((o, r), (Outcome::Reject, Some("public_holiday")));
    assert!(why.contains("Flag Day"), "{why}");
}

#[test]
fn canada_weekends_and_colombia_with_ley_emiliani() {
    let t = tenant("\"us\", \"ca\", \"co\"", "");
    let toronto = "+14165550123";
    let sat = |h, m| local(Tz::America__Toronto, 2026, 11, 28, h, m);
    assert_eq!(
        decide(&t, toronto, sat(9, 59), &History::default()).1,
        Some("outside_hours")
    );
    assert_eq!(
        decide(&t, toronto, sat(10, 0), &History::default()).0,
        Outcome::Allow
    );
    assert_eq!(
        decide(&t, toronto, sat(18, 0), &History::default()).1,
        Some("outside_hours")
    );
    let wk = local(Tz::America__Toronto, 2026, 11, 24, 21, 29);
    let (o, _, _, j, _) = decide(&t, toronto, wk, &History::default());
    assert_eq!((o, j.as_deref()), (Outcome::Allow, Some("CA-ON")));
    // Where a number may lie in several provinces or territories, the call
    // reports them all.
    let halifax = local(Tz::America__Halifax, 2026, 11, 24, 12, 0);
    let (o, _, _, j, _) = decide(&t, "+19025550123", halifax, &History::default());
    assert_eq!((o, j.as_deref()), (Outcome::Allow, Some("CA-NS&CA-PE")));
    let (_, _, _, j, _) = decide(&t, "+18675550123", halifax, &History::default());
    assert_eq!(j.as_deref(), Some("CA-YT&CA-NT&CA-NU"));
    let bogota = Tz::America__Bogota;
    let co = "+573001234567";
    // Epiphany 2026 (Tue 6 Jan) is moved to Monday 12 January.
    let (o, r, _, _, why) = decide(
        &t,
        co,
        local(bogota, 2026, 1, 12, 10, 0),
        &History::default(),
    );
    assert_eq!((o, r), (Outcome::Reject, Some("public_holiday")), "{why}");
    assert_eq!(
        decide(
            &t,
            co,
            local(bogota, 2026, 1, 6, 10, 0),
            &History::default()
        )
        .0,
        Outcome::Allow
    );
    assert_eq!(
        decide(
            &t,
            co,
            local(bogota, 2026, 11, 29, 10, 0),
            &History::default()
        )
        .1,
        Some("weekend")
    );
    assert_eq!(
        decide(
            &t,
            co,
            local(bogota, 2026, 11, 28, 15, 0),
            &History::default()
        )
        .1,
        Some("outside_hours")
    );
    assert_eq!(
        decide(
            &t,
            co,
            local(bogota, 2026, 11, 24, 7, 0),
            &History::default()
        )
        .0,
        Outcome::Allow
    );
    assert_eq!(
        decide(
            &t,
            co,
            local(bogota, 2026, 11, 24, 19, 0),
            &History::default()
        )
        .1,
        Some("outside_hours")
    );
}

#[test]
fn brazil_state_overlays_by_ddd() {
    let t = tenant("\"br\"", "");
    let sp = Tz::America__Sao_Paulo;
    let sat = local(sp, 2026, 11, 28, 12, 0);
    let (o, r, _, j, _) = decide(&t, "+5521987654321", sat, &History::default());
    assert_eq!(
        (o, r, j.as_deref()),
        (Outcome::Reject, Some("weekend"), Some("BR-RJ"))
    );
    let (o, _, _, j, _) = decide(&t, "+5511987654321", sat, &History::default());
    assert_eq!(
        (o, j.as_deref()),
        (Outcome::Allow, Some("BR-SP")),
        "São Paulo has no state window"
    );
    let (o, _, _, j, _) = decide(&t, "+5561987654321", sat, &History::default());
    assert_eq!(
        (o, j.as_deref()),
        (Outcome::Allow, Some("BR-DF&BR-GO")),
        "DDD 61 serves Brasília and towns of Goiás"
    );
    // Tiradentes (21 April) in Ceará.
    let (_, r, _, _, _) = decide(
        &t,
        "+5585987654321",
        local(sp, 2026, 4, 21, 10, 0),
        &History::default(),
    );
    assert_eq!(r, Some("public_holiday"));
    let (_, r, _, _, _) = decide(
        &t,
        "+5585987654321",
        local(sp, 2026, 4, 22, 18, 0),
        &History::default(),
    );
    assert_eq!(r, Some("outside_hours"));
}

/// Asserts that `t` forwards a call to `callee` at `at`.
fn assert_allowed(t: &TenantPolicy, callee: &str, at: DateTime<Utc>) {
    let (o, _, _, _, why) = decide(t, callee, at, &History::default());
    assert_eq!(o, Outcome::Allow, "{callee}: {why}");
}

/// Asserts that `t` refuses a call to `callee` at `at` for its hour, with
/// `Retry-After` seconds to wait.
fn assert_outside_hours(t: &TenantPolicy, callee: &str, at: DateTime<Utc>, retry: u64) {
    let (o, r, after, _, why) = decide(t, callee, at, &History::default());
    assert_eq!(
        (o, r, after),
        (Outcome::Reject, Some("outside_hours"), Some(retry)),
        "{callee}: {why}"
    );
}

/// The error `rules check` gives for a rule file holding `text`.
fn rule_file_error(text: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, text).unwrap();
    callguard::rules::Library::check_file(&bad)
        .unwrap_err()
        .to_string()
}

/// A landline is checked in the zone of its area, a mobile (whose number
/// does not tell where it is) in every zone of its country. Before, every
/// number outside North America and France was checked in all its
/// country's zones: a Sydney landline at 11:00 was refused as 08:00 in
/// Perth, a Madrid one at 09:30 as 08:30 in the Canaries.
#[test]
fn landlines_are_checked_in_their_area_s_zone_mobiles_in_every_zone() {
    let t = tenant("\"au\", \"es\", \"br\", \"id\"", "");
    let at = |zone: Tz, hour: u32, min: u32| local(zone, 2026, 12, 9, hour, min);
    let allowed = |callee: &str, when| assert_allowed(&t, callee, when);
    let refused = |callee: &str, when, retry| assert_outside_hours(&t, callee, when, retry);
    use Tz::*;
    // Australia, Wednesday in summer: weekdays 09:00-20:00.
    allowed("+61299998888", at(Australia__Sydney, 11, 0));
    allowed("+61398765432", at(Australia__Melbourne, 9, 0));
    // Queensland keeps no daylight saving: 08:30 in Brisbane is 09:30 in
    // Sydney, where libphonenumber's rows would place the number.
    refused("+61733334444", at(Australia__Brisbane, 8, 30), 1800);
    allowed("+61733334444", at(Australia__Brisbane, 19, 59));
    refused("+61892221234", at(Australia__Perth, 8, 30), 1800);
    // A mobile: 11:00 in Sydney is 08:00 in Perth.
    refused("+61412345678", at(Australia__Sydney, 11, 0), 9000);
    // Spain: 09:00-21:00, an hour apart between Madrid and the Canaries.
    allowed("+34912345678", at(Europe__Madrid, 9, 30));
    allowed("+34912345678", at(Europe__Madrid, 20, 59));
    refused("+34928123456", at(Atlantic__Canary, 8, 30), 1800);
    allowed("+34928123456", at(Atlantic__Canary, 20, 30));
    refused("+34612345678", at(Europe__Madrid, 9, 30), 1800);
    allowed("+34612345678", at(Europe__Madrid, 20, 59));
    refused("+34612345678", at(Europe__Madrid, 21, 0), 46800);
    // Brazil: Rio de Janeiro and Mato Grosso do Sul, 08:00-18:00 by the
    // state laws, on Brasília time and an hour behind it.
    allowed("+5521987654321", at(America__Sao_Paulo, 8, 30));
    refused("+556733334444", at(America__Sao_Paulo, 8, 30), 1800);
    allowed("+556733334444", at(America__Campo_Grande, 17, 30));
    // Indonesia: 08:00-18:00, WIB, WITA and WIT.
    allowed("+62215551234", at(Asia__Jakarta, 16, 30));
    refused("+62967534567", at(Asia__Jakarta, 16, 30), 48600);
    refused("+6281234567890", at(Asia__Jakarta, 16, 30), 55800);
}

/// North American numbers whose libphonenumber zone was wrong: an overlay
/// of a code that spans two zones, Saskatchewan (no daylight saving), Yukon
/// (UTC-7 all year since 2020). Each of these calls was forwarded before.
#[test]
fn nanp_overlays_and_mended_zones_refuse_what_the_local_hour_forbids() {
    let t = tenant("\"us\", \"ca\"", "");
    let refused = |callee: &str, when, retry| assert_outside_hours(&t, callee, when, retry);
    use Tz::*;
    // Pensacola on the 448 overlay: 08:30 in New York is 07:30 there, and
    // Florida opens at 08:00.
    refused(
        "+14485550123",
        local(America__New_York, 2026, 12, 9, 8, 30),
        1800,
    );
    // Saskatchewan in July: 09:00 in Winnipeg is 08:00 in Regina.
    refused(
        "+14745550123",
        local(America__Winnipeg, 2026, 7, 8, 9, 0),
        3600,
    );
    // Whitehorse in January: 21:00 in Vancouver is 22:00 there; it opens
    // at 09:00, 08:00 in Vancouver.
    let winter_night = local(America__Vancouver, 2027, 1, 13, 21, 0);
    refused("+18676675550", winter_night, 39600);
    // An overlay number in British Columbia may be in the Peace River
    // country, 22:00 there; every zone is open at 09:00 in Vancouver.
    refused("+17785550123", winter_night, 43200);
    // 604 serves the Lower Mainland only.
    assert_allowed(&t, "+16045550123", winter_night);
}

/// Consent the law asks for prospecting calls: Florida, Oklahoma and
/// Maryland for calls by an automated system, Spain (since 2023-06-29) and
/// Colombia (Ley 2300) for every prospecting call. Contract campaigns and,
/// in the three states, manual calls are not concerned.
#[test]
fn prospecting_calls_need_consent_where_the_law_says() {
    let prospecting = tenant("\"us\", \"es\", \"co\"", "campaign = \"prospecting\"");
    let contract = tenant("\"us\", \"es\", \"co\"", "");
    let h = History::default();
    let at = |zone: Tz| local(zone, 2026, 12, 9, 11, 0);
    let reason = |t: &TenantPolicy, callee: &str, mode: &str, zone: Tz| {
        let d = t.decide(
            &Facts::new("+12125550100", callee, Some(mode)),
            &h,
            at(zone),
        );
        (d.reason_str(), d.explanation.to_string())
    };
    use Tz::*;
    for (callee, zone, law) in [
        ("+13055550123", America__New_York, "501.059(8)(a)"),
        ("+14055550123", America__Chicago, "15 O.S. 775C.4"),
        ("+14105550123", America__New_York, "Stop the Spam Calls Act"),
    ] {
        let (r, why) = reason(&prospecting, callee, "predictive", zone);
        assert_eq!(r, Some("no_consent"), "{callee}: {why}");
        assert!(why.contains(law), "{why}");
        assert_eq!(
            reason(&prospecting, callee, "manual", zone).0,
            None,
            "{callee}"
        );
        assert_eq!(
            reason(&contract, callee, "predictive", zone).0,
            None,
            "{callee}"
        );
    }
    // New York has no such rule.
    assert_eq!(
        reason(
            &prospecting,
            "+12125550123",
            "predictive",
            America__New_York
        )
        .0,
        None
    );
    for (callee, zone, law) in [
        ("+34912345678", Europe__Madrid, "Ley 11/2022"),
        ("+573001234567", America__Bogota, "Ley 2300"),
    ] {
        for mode in ["predictive", "manual"] {
            let (r, why) = reason(&prospecting, callee, mode, zone);
            assert_eq!(r, Some("no_consent"), "{callee} {mode}: {why}");
            assert!(why.contains(law), "{why}");
        }
        assert_eq!(
            reason(&contract, callee, "manual", zone).0,
            None,
            "{callee}"
        );
    }
    // Spain's rule starts on 2023-06-29.
    let before = local(Europe__Madrid, 2023, 6, 28, 11, 0);
    let d = prospecting.decide(
        &Facts::new("+12125550100", "+34912345678", Some("manual")),
        &h,
        before,
    );
    assert_eq!(d.reason_str(), None, "{}", d.explanation);
}

/// A callee's consent to calls outside the contact hours (a consent list's
/// `hours` column) lifts them only where the law makes that exception:
/// France (D.223-9) and Colombia (Ley 2300). Louisiana's and Spain's hours
/// stay; before, the consent lifted every jurisdiction's hours.
#[test]
fn an_hours_consent_lifts_the_hours_only_where_the_law_says() {
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("consent.csv");
    std::fs::write(
        &list,
        "number,date,proof,hours\n+33142000002,2026-01-05,form-1,yes\n\
         +573001234567,2026-01-05,form-2,yes\n+15045550123,2026-01-05,form-3,yes\n\
         +34912345678,2026-01-05,form-4,yes\n",
    )
    .unwrap();
    let t = tenant(
        "\"fr\", \"us\", \"es\", \"co\"",
        &format!(
            "consent_lists = [\"c\"]\n[[consent_list]]\nname = \"c\"\nfile = \"{}\"",
            list.display()
        ),
    );
    use Tz::*;
    // Wednesday 9 December 2026, after each jurisdiction's hours.
    assert_allowed(&t, "+33142000002", local(Europe__Paris, 2026, 12, 9, 21, 0));
    assert_allowed(
        &t,
        "+573001234567",
        local(America__Bogota, 2026, 12, 9, 20, 0),
    );
    let new_orleans = local(America__Chicago, 2026, 12, 9, 20, 30);
    assert_outside_hours(&t, "+15045550123", new_orleans, 41400);
    let madrid = local(Europe__Madrid, 2026, 12, 9, 21, 30);
    assert_outside_hours(&t, "+34912345678", madrid, 41400);
    // The exception is for the hours only: a French Sunday stays closed.
    let (_, r, _, _, _) = decide(
        &t,
        "+33142000002",
        local(Europe__Paris, 2026, 12, 13, 11, 0),
        &History::default(),
    );
    assert_eq!(r, Some("weekend"));
}

/// The exception is rule data: shown by `rules show`, its entry checked
/// with key and line like every rule's.
#[test]
fn the_hours_consent_exception_is_shown_and_checked() {
    let lib = callguard::rules::Library::builtin().unwrap();
    let fr = callguard::rules::report::show(&lib, "FR", 2026).unwrap();
    assert!(
        fr.contains("consent to calls outside the hours lifts them") && fr.contains("D.223-9"),
        "{fr}"
    );
    let es = callguard::rules::report::show(&lib, "ES", 2026).unwrap();
    assert!(!es.contains("outside the hours lifts them"), "{es}");
    let fl = callguard::rules::report::show(&lib, "US-FL", 2026).unwrap();
    assert!(
        fl.contains("consent needed for: prospecting (automated calls) from 2021-07-01"),
        "{fl}"
    );

    for (entry, line, message) in [
        (
            "from = \"2027-01-01\"\nuntil = \"2026-01-01\"\n",
            17,
            "`jurisdiction[0].hours_consent`: jurisdiction `ES`: until 2026-01-01 is before from",
        ),
        (
            "campaigns = [\"prospecting\"]\n",
            18,
            "unknown field `campaigns`",
        ),
    ] {
        let e = rule_file_error(&es_with_caller_id(&format!(
            "\n[jurisdiction.hours_consent]\n{entry}{CID}"
        )));
        assert!(
            e.contains(message) && e.contains(&format!("line {line}")),
            "{entry}: {e}"
        );
    }
}

/// A Canadian who asked a telemarketer not to call stays on its internal
/// list for three years (CRTC rules, confidence L): a refusal two years
/// old still refuses the call, one of three years and a day does not.
#[test]
fn a_canadian_refusal_holds_three_years() {
    let t = tenant("\"ca\"", "");
    let now = local(Tz::America__Toronto, 2026, 12, 9, 11, 0);
    let refused = |days_ago: i64| History {
        refused_at: Some(now - chrono::Duration::days(days_ago)),
        ..History::default()
    };
    let (o, r, retry, _, why) = decide(&t, "+14165550123", now, &refused(730));
    assert_eq!((o, r), (Outcome::Reject, Some("refusal_cooloff")), "{why}");
    assert!(why.contains("CRTC") && why.contains("1095"), "{why}");
    assert!(retry.is_some_and(|s| s > 360 * 86_400), "{retry:?}");
    let (o, _, _, _, why) = decide(&t, "+14165550123", now, &refused(1097));
    assert_eq!(o, Outcome::Allow, "{why}");
}

#[test]
fn a_callee_no_rule_set_covers() {
    let t = tenant("\"us\"", "");
    let at = local(Tz::Europe__Paris, 2026, 11, 24, 11, 0);
    let (o, r, retry, j, why) = decide(&t, "+33142000000", at, &History::default());
    assert_eq!(
        (o, r, retry, j),
        (Outcome::Reject, Some("no_rule_set"), None, None)
    );
    assert!(why.contains("FR") && why.contains("us"), "{why}");
    let d = t.decide(
        &Facts::new("+12125550100", "+33142000000", None),
        &History::default(),
        at,
    );
    assert_eq!(d.status, 403);
    let allow = tenant("\"us\"", "unknown_jurisdiction = \"allow\"");
    let (o, _, _, j, _) = decide(&allow, "+33142000000", at, &History::default());
    assert_eq!((o, j.as_deref()), (Outcome::Allow, Some("US")));
    // 22:00 in Paris: the US window, in the callee's zone.
    let late = local(Tz::Europe__Paris, 2026, 11, 24, 22, 0);
    assert_eq!(
        decide(&allow, "+33142000000", late, &History::default()).1,
        Some("outside_hours")
    );
}

#[test]
fn a_closure_refuses_until_its_end_then_the_hours() {
    let t = tenant("\"us\"", "");
    let ct = Tz::America__Chicago;
    let from = local(ct, 2026, 11, 24, 0, 0);
    let to = local(ct, 2026, 11, 26, 22, 0);
    let h = History {
        closures: Some(Arc::new(vec![Closure {
            id: 7,
            jurisdiction: "US-LA".into(),
            from,
            to,
            reason: "state of emergency (hurricane)".into(),
        }])),
        ..History::default()
    };
    let nola = "+15045550123";
    let at = local(ct, 2026, 11, 25, 12, 0);
    let (o, r, retry, _, why) = decide(&t, nola, at, &h);
    assert_eq!((o, r), (Outcome::Reject, Some("closure")), "{why}");
    assert!(why.contains("hurricane"), "{why}");
    // Ends Thursday 22:00 (Thanksgiving, a Louisiana holiday), then the day
    // after Thanksgiving is one too, then the weekend (no Sunday calls):
    // Saturday 08:00.
    assert_eq!(
        retry,
        Some((local(ct, 2026, 11, 28, 8, 0) - at).num_seconds() as u64)
    );
    let d = t.decide(&Facts::new("+12125550100", nola, Some("manual")), &h, at);
    assert_eq!(d.status, 480);
    // Dallas is not closed.
    assert_eq!(decide(&t, "+12145550123", at, &h).0, Outcome::Allow);
    // A national closure closes every state.
    let mut all = (*h.closures.clone().unwrap()).clone();
    all[0].jurisdiction = "US".into();
    let h = History {
        closures: Some(Arc::new(all)),
        ..History::default()
    };
    assert_eq!(decide(&t, "+12145550123", at, &h).1, Some("closure"));
    // A state whose law adds nothing to the federal rules can be closed
    // all the same (a hurricane in North Carolina): Charlotte is refused,
    // Dallas is not.
    let mut nc = (*h.closures.clone().unwrap()).clone();
    nc[0].jurisdiction = "US-NC".into();
    let h = History {
        closures: Some(Arc::new(nc)),
        ..History::default()
    };
    let (o, r, _, j, _) = decide(&t, "+17045550123", at, &h);
    assert_eq!(
        (o, r, j.as_deref()),
        (Outcome::Reject, Some("closure"), Some("US-NC"))
    );
    assert_eq!(decide(&t, "+12145550123", at, &h).0, Outcome::Allow);
}

#[test]
fn the_decision_names_its_jurisdiction_and_rules_version() {
    let t = tenant("\"us\"", "");
    let d = t.decide(
        &Facts::new("+12125550100", "+13055550123", None),
        &History::default(),
        local(NY, 2026, 11, 24, 12, 0),
    );
    let v = serde_json::to_value(&d).unwrap();
    assert_eq!(v["jurisdiction"], "US-FL");
    assert_eq!(v["rules_version"], "2026-12-06");
}

/// Nebraska lets automated calls through on Sundays and holidays from
/// 13:00 only (Neb. Rev. Stat. 86-236, confidence L): a holiday takes the
/// jurisdiction's holiday hours, intersected with the federal ones, in
/// the callee's every zone; manual calls keep the federal hours. Before,
/// a rule file could only close a holiday, so Nebraska's holidays were
/// ordinary days and an automated call at 10:00 on Thanksgiving went out.
#[test]
fn nebraska_holidays_open_automated_calls_in_the_afternoon_only() {
    let t = tenant("\"us\"", "");
    let ct = Tz::America__Chicago;
    let automated = |callee: &str, at: DateTime<Utc>| {
        let d = t.decide(
            &Facts::new("+12125550100", callee, Some("automated")),
            &History::default(),
            at,
        );
        (
            d.decision,
            d.reason_str(),
            d.retry_after,
            d.explanation.to_string(),
        )
    };
    let omaha = "+14025550123";
    // Thanksgiving, Thursday 26 November 2026.
    let (o, r, retry, why) = automated(omaha, local(ct, 2026, 11, 26, 10, 0));
    assert_eq!(
        (o, r, retry),
        (Outcome::Reject, Some("outside_hours"), Some(3 * 3600)),
        "{why}"
    );
    assert!(
        why.contains("US-NE Neb. Rev. Stat. 86-236 (prerecorded calls): calls 13:00–21:00 callee time on public holidays (Thanksgiving Day)"),
        "{why}"
    );
    assert_eq!(
        automated(omaha, local(ct, 2026, 11, 26, 13, 0)).0,
        Outcome::Allow
    );
    assert_eq!(
        automated(omaha, local(ct, 2026, 11, 26, 20, 59)).0,
        Outcome::Allow
    );
    let (o, r, _, why) = automated(omaha, local(ct, 2026, 11, 26, 21, 0));
    assert_eq!((o, r), (Outcome::Reject, Some("outside_hours")), "{why}");
    assert!(why.contains("TCPA"), "{why}");
    assert_allowed(&t, omaha, local(ct, 2026, 11, 26, 10, 0));
    // The state's own days: the day after Thanksgiving, Arbor Day (the
    // last Friday of April), and an ordinary Friday.
    assert_eq!(
        automated(omaha, local(ct, 2026, 11, 27, 12, 59)).2,
        Some(60)
    );
    assert_eq!(
        automated(omaha, local(ct, 2027, 4, 30, 9, 0)).2,
        Some(4 * 3600)
    );
    assert_eq!(
        automated(omaha, local(ct, 2027, 4, 23, 9, 0)).0,
        Outcome::Allow
    );
    // Independence Day 2026 is a Saturday: the Friday before is observed.
    assert_eq!(
        automated(omaha, local(ct, 2026, 7, 3, 11, 0)).2,
        Some(2 * 3600)
    );
    // 308 spans Central and Mountain time: 13:30 in North Platte is 12:30
    // at a panhandle exchange, open at 13:00 there.
    let (o, _, retry, why) = automated("+13086350123", local(ct, 2026, 11, 26, 13, 30));
    assert_eq!((o, retry), (Outcome::Reject, Some(30 * 60)), "{why}");
    // A Sunday keeps its window; federal-only Iowa keeps its holiday.
    assert_eq!(
        automated(omaha, local(ct, 2026, 11, 29, 12, 0)).2,
        Some(3600)
    );
    assert_eq!(
        automated("+15155550123", local(ct, 2026, 11, 26, 10, 0)).0,
        Outcome::Allow
    );
}

/// Australia's Christmas and Boxing Day on a weekend are observed two
/// days later, as every state does: Christmas on a Sunday on Tuesday 27
/// (Boxing Day has Monday 26), both on a weekend on Monday 27 and Tuesday
/// 28. Before, each moved to the Monday only, and Tuesday 28 December 2027,
/// a public holiday in every state, was open for calls.
#[test]
fn australian_christmas_on_a_weekend_is_observed_two_days_later() {
    let t = tenant("\"au\"", "");
    let sydney = Tz::Australia__Sydney;
    let landline = "+61291234567";
    let holiday = |y, m, d| {
        let (o, r, _, _, why) = decide(
            &t,
            landline,
            local(sydney, y, m, d, 11, 0),
            &History::default(),
        );
        assert_eq!(
            (o, r),
            (Outcome::Reject, Some("public_holiday")),
            "{y}-{m}-{d}: {why}"
        );
        why
    };
    // 2027: Christmas on Saturday, Boxing Day on Sunday.
    assert!(holiday(2027, 12, 27).contains("Christmas Day"));
    assert!(holiday(2027, 12, 28).contains("Boxing Day"));
    assert_allowed(&t, landline, local(sydney, 2027, 12, 29, 11, 0));
    // 2022: Christmas on Sunday.
    assert!(holiday(2022, 12, 26).contains("Boxing Day"));
    assert!(holiday(2022, 12, 27).contains("Christmas Day"));
    assert_allowed(&t, landline, local(sydney, 2022, 12, 28, 11, 0));
    // 2026: Boxing Day on Saturday, observed on Monday 28.
    assert!(holiday(2026, 12, 28).contains("Boxing Day"));
    assert_allowed(&t, landline, local(sydney, 2026, 12, 29, 11, 0));
    // New Year's Day 2028 on a Saturday: the Monday.
    assert!(holiday(2028, 1, 3).contains("New Year's Day"));
}

/// Holiday hours (`hol`) are rule data: shown by `rules show`, refused
/// with key and line in a jurisdiction that has no calendar.
#[test]
fn holiday_hours_are_shown_and_need_a_calendar() {
    let lib = callguard::rules::Library::builtin().unwrap();
    let ne = callguard::rules::report::show(&lib, "US-NE", 2026).unwrap();
    assert!(
        ne.contains("hours (automated calls): Sun Hol 13:00–21:00")
            && ne.contains("(ne: Nebraska holidays")
            && ne.contains("2026-04-24 Fri Arbor Day")
            && ne.contains("the Hol hours:"),
        "{ne}"
    );
    let pa = callguard::rules::report::show(&lib, "US-PA", 2026).unwrap();
    assert!(pa.contains("Flag Day") && pa.contains("no calls:"), "{pa}");
    let e = rule_file_error(&us_xx_hours("[\"hol\"]", "13:00-21:00"));
    assert!(
        e.contains("line 10")
            && e.contains("`hol` (holiday hours) needs the jurisdiction's `calendars`"),
        "{e}"
    );
    let e = rule_file_error(&us_xx_hours("[\"holiday\"]", "13:00-21:00"));
    assert!(
        e.contains("unknown variant `holiday`") && e.contains("hol"),
        "{e}"
    );
    let e = rule_file_error(
        "set = \"us\"\ntitle = \"x\"\nversion = \"1\"\n\n[[calendar]]\nid = \"xx\"\nname = \"X\"\n\n[[calendar.holiday]]\nname = \"Y\"\nnth = 1\nweekday = \"hol\"\nmonth = 5\nsource = \"x\"\nconfidence = \"H\"\n",
    );
    assert!(
        e.contains("`hol` is not a weekday") && e.contains("line 12"),
        "{e}"
    );
}

/// A US overlay `US-XX` with one hours entry (line 10).
fn us_xx_hours(days: &str, block: &str) -> String {
    format!(
        "set = \"us\"\ntitle = \"x\"\nversion = \"1\"\n\n[[jurisdiction]]\nid = \"US-XX\"\nname = \"X\"\nparent = \"US\"\n\n[[jurisdiction.hours]]\ndays = {days}\nblocks = [\"{block}\"]\nlaw = \"x\"\nsource = \"x\"\nconfidence = \"H\"\n"
    )
}

#[test]
fn operator_rule_files_are_checked_with_key_and_line() {
    let e = rule_file_error(&us_xx_hours("[\"mon\"]", "20:00-08:00"));
    let dir = tempfile::tempdir().unwrap();
    assert!(
        e.contains("line 10") && e.contains("hours") && e.contains("end after"),
        "{e}"
    );
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        "set = \"us\"\ntitle = \"x\"\nversion = \"ops-1\"\n\n[[jurisdiction]]\nid = \"US-FL\"\nname = \"Florida\"\nparent = \"US\"\n\n[[jurisdiction.hours]]\ndays = [\"mon\", \"tue\", \"wed\", \"thu\", \"fri\"]\nblocks = [\"09:00-17:00\"]\nlaw = \"house rule\"\nsource = \"ops\"\nconfidence = \"H\"\n",
    )
    .unwrap();
    let lib = callguard::rules::Library::check_file(&good).unwrap();
    assert_eq!(lib.sets["us"].version, "2026-12-06+ops-1");
    assert!(lib.find("US-TX").is_some(), "the other overlays stay");
}

#[test]
fn a_dated_calendar_near_its_end_is_reported() {
    let t = tenant("\"id\"", "");
    let soon = NaiveDate::from_ymd_opt(2027, 11, 24).unwrap();
    assert_eq!(
        callguard::app::compile::warn_stale_calendars("t", &t.rules, soon),
        ["id"]
    );
    let early = NaiveDate::from_ymd_opt(2027, 6, 1).unwrap();
    assert!(callguard::app::compile::warn_stale_calendars("t", &t.rules, early).is_empty());
    // Indonesia: Idul Fitri 2026 closes the day; Sundays are closed.
    let jkt = Tz::Asia__Jakarta;
    assert_eq!(
        decide(
            &t,
            "+6281234567890",
            local(jkt, 2026, 3, 20, 10, 0),
            &History::default()
        )
        .1,
        Some("public_holiday")
    );
    assert_eq!(
        decide(
            &t,
            "+6281234567890",
            local(jkt, 2026, 11, 29, 10, 0),
            &History::default()
        )
        .1,
        Some("weekend")
    );
    // 2027's lunar holidays are shipped ahead of the decree, every
    // candidate day closed: Isra Mi'raj 1448 (5-6 January), the Chinese
    // New Year (a Saturday, a day with open hours), Nyepi (8-9 March),
    // Idul Fitri (9-11 March), Idul Adha and Maulid Nabi on their weekday
    // candidates.
    for (m, d) in [
        (1, 5),
        (1, 6),
        (2, 6),
        (3, 8),
        (3, 9),
        (3, 10),
        (3, 11),
        (5, 17),
        (8, 16),
    ] {
        assert_eq!(
            decide(
                &t,
                "+6281234567890",
                local(jkt, 2027, m, d, 10, 0),
                &History::default()
            )
            .1,
            Some("public_holiday"),
            "2027-{m:02}-{d:02}"
        );
    }
    // An ordinary weekday of 2027 stays open.
    assert_eq!(
        decide(
            &t,
            "+6281234567890",
            local(jkt, 2027, 3, 12, 10, 0),
            &History::default()
        )
        .0,
        Outcome::Allow
    );
}

/// A Spanish rule file whose caller-ID entries are `entries`.
fn es_with_caller_id(entries: &str) -> String {
    format!(
        "set = \"es\"\ntitle = \"Spain\"\nversion = \"ops-1\"\n\n[[jurisdiction]]\nid = \"ES\"\nname = \"Spain\"\ncalendars = [\"es\"]\n\n[[jurisdiction.hours]]\ndays = [\"mon\", \"tue\", \"wed\", \"thu\", \"fri\"]\nblocks = [\"09:00-21:00\"]\nlaw = \"TRLGDCU art. 96.2\"\nsource = \"E3\"\nconfidence = \"H\"\n{entries}"
    )
}

const CID: &str = "law = \"Ley 10/2025\"\nsource = \"E4\"\nconfidence = \"M\"\n";

#[test]
fn caller_id_ranges_are_rules_with_modes_dates_and_checked_files() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("es.toml");
    std::fs::write(
        &file,
        es_with_caller_id(&format!(
            "\n[[jurisdiction.caller_id]]\ncheck = \"prefixes\"\nallow = [\"+34400\"]\nmodes = [\"automated\"]\nfrom = \"2026-12-28\"\n{CID}\n[[jurisdiction.caller_id]]\ncheck = \"prefixes\"\ndeny = [\"+346\", \"+347\"]\n{CID}"
        )),
    )
    .unwrap();
    let t = tenant(
        "\"es\"",
        &format!("[rules]\nfiles = [\"{}\"]", file.display()),
    );
    let madrid = Tz::Europe__Madrid;
    let decide_from = |caller: &str, mode: &str, at: DateTime<Utc>| {
        let d = t.decide(
            &Facts::new(caller, "+34912345678", Some(mode)),
            &History::default(),
            at,
        );
        (d.reason_str(), d.explanation.to_string())
    };
    let before = local(madrid, 2026, 12, 22, 11, 0);
    let after = local(madrid, 2026, 12, 29, 11, 0);
    // The code is required from its date, in automated calls only.
    assert_eq!(decide_from("+34912345678", "predictive", before).0, None);
    let (r, why) = decide_from("+34912345678", "predictive", after);
    assert_eq!(r, Some("caller_id_category"), "{why}");
    assert!(
        why.contains("Ley 10/2025") && why.contains("+34400"),
        "{why}"
    );
    assert_eq!(decide_from("+34400123456", "predictive", after).0, None);
    assert_eq!(decide_from("+34912345678", "manual", after).0, None);
    // A denied range, in every mode and at any date.
    let (r, why) = decide_from("+34712345678", "manual", before);
    assert_eq!(r, Some("caller_id_category"), "{why}");
    assert!(why.contains("+347"), "{why}");

    let lib = callguard::rules::Library::check_file(&file).unwrap();
    let shown = callguard::rules::report::show(&lib, "ES", 2027).unwrap();
    assert!(
        shown.contains("caller ID: prefixes, only from +34400 (automated calls) from 2026-12-28")
            && shown.contains("never from +346 +347"),
        "{shown}"
    );

    for (entry, line, message) in [
        (
            "check = \"fr-arcep\"\nallow = [\"+34400\"]\n",
            17,
            "takes no `allow` or `deny`",
        ),
        ("check = \"prefixes\"\n", 17, "needs the ranges"),
        (
            "check = \"prefixes\"\nallow = [\"34400\"]\n",
            17,
            "E.164 prefix",
        ),
        (
            "check = \"prefixes\"\nallow = [\"+34 400\"]\n",
            17,
            "1 to 15 digits",
        ),
        (
            "check = \"prefixes\"\nallow = [\"+34400\"]\ndeny = [\"+34400\"]\n",
            17,
            "both allowed and denied",
        ),
        // Dates in the wrong order name the entry, not the jurisdiction.
        (
            "check = \"prefixes\"\ndeny = [\"+346\"]\nfrom = \"2027-01-01\"\nuntil = \"2026-01-01\"\n",
            17,
            "`jurisdiction[0].caller_id[0]`: jurisdiction `ES`: until 2026-01-01 is before from",
        ),
        // A misspelt key in one of several entries is named.
        (
            "check = \"prefixes\"\nalow = [\"+34400\"]\n",
            19,
            "unknown field `alow`",
        ),
    ] {
        let e = rule_file_error(&es_with_caller_id(&format!("\n[[jurisdiction.caller_id]]\n{entry}{CID}")));
        assert!(
            e.contains(message) && e.contains(&format!("line {line}")),
            "{entry}: {e}"
        );
    }
}
