//! National-scale DNC lists through the real binary: `callguard dnc
//! compile` builds an index from the registry's formats (full list and
//! change list), `serve` maps it, API changes sit on top of it and
//! survive a kill -9, and a list older than the law allows refuses the
//! calls it covers.

mod common;

use common::*;
use std::process::Command;

fn cg(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_callguard"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn a_compiled_registry_is_mapped_and_a_stale_list_refuses_its_calls() {
    let dir = tempfile::tempdir().unwrap();
    let p = |f: &str| dir.path().join(f).display().to_string();
    // The FTC's flat full list (`areacode,number`) and a change list.
    std::fs::write(p("full.txt"), "201,5550100\n201,5550101\n212,5550199\n").unwrap();
    std::fs::write(
        p("changes.csv"),
        "201,5550101,D,2026-11-09\n305,5550123,A,2026-11-09\n",
    )
    .unwrap();
    let (ok, out) = cg(&[
        "dnc",
        "compile",
        &p("full.txt"),
        "--changes",
        &p("changes.csv"),
        "--country",
        "US",
        "--date",
        "2026-11-10",
        "-o",
        &p("us.cgdnc"),
    ]);
    assert!(
        ok && out.contains("3 numbers") && out.contains("data of 2026-11-10"),
        "{out}"
    );
    let (ok, out) = cg(&["dnc", "info", &p("us.cgdnc")]);
    assert!(
        ok && out.contains("3 numbers") && out.contains("checksum ok"),
        "{out}"
    );
    // Not an index, and a damaged one: clear errors.
    let (ok, out) = cg(&["dnc", "info", &p("full.txt")]);
    assert!(!ok && out.contains("not a callguard DNC index"), "{out}");
    let mut bytes = std::fs::read(p("us.cgdnc")).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(p("bad.cgdnc"), &bytes).unwrap();
    let (ok, out) = cg(&["dnc", "info", &p("bad.cgdnc")]);
    assert!(!ok && out.contains("damaged"), "{out}");

    // A list from October with a 31-day limit, covering US callees only.
    std::fs::write(p("old.txt"), "+12125550111\n").unwrap();
    let top = format!(
        "[[dnc_list]]\nname = \"us\"\nfile = \"{}\"\ncountry = \"US\"\nmax_age_days = 31\n\
         [[dnc_list]]\nname = \"old\"\nfile = \"{}\"\ndate = \"2026-10-01\"\nmax_age_days = 31\ncountries = [\"US\"]\n",
        p("us.cgdnc"),
        p("old.txt")
    );
    let tenant = "rule_sets = [\"fr\", \"us\"]\ndnc_lists = [\"us\"]\n";
    let uas = Ua::bind("127.0.0.1:0");
    let proxy = Proxy::process_with(&[format!("udp:{}", uas.addr())], &top, tenant);
    let uac = Ua::bind("127.0.0.1:0");
    let r = call(&proxy, &uac, "+12015550100", "d-1");
    assert_eq!((r.status(), reason(&r)), (Some(603), "dnc".into()));
    let r = call(&proxy, &uac, "+13055550123", "d-2");
    assert_eq!(
        (r.status(), reason(&r)),
        (Some(603), "dnc".into()),
        "added by the change list"
    );
    // Deleted by the change list: on to the next rule (05:00 in New York).
    let r = call(&proxy, &uac, "+12015550101", "d-3");
    assert_eq!(
        (r.status(), reason(&r)),
        (Some(480), "outside_hours".into())
    );
    assert_eq!(proxy.metric("callguard_dnc_entries{list=\"us\"}"), 3.0);
    // 2026-11-17T10:00Z is 7 days and 10 hours after the data's date.
    let age = proxy.metric("callguard_dnc_list_age_seconds{list=\"us\"}");
    assert!((640_800.0..640_900.0).contains(&age), "{age}");
    assert_eq!(
        proxy.metric("callguard_dnc_list_max_age_seconds{list=\"us\"}"),
        31.0 * 86_400.0
    );
    // Changes through the API sit on top of the mapped index and outlive
    // a kill -9; the index file is never written.
    let mut proxy = proxy;
    let before = std::fs::read(p("us.cgdnc")).unwrap();
    assert_eq!(proxy.http("PUT", "/v1/dnc/us/+12125550142", "").0, 200);
    assert_eq!(proxy.http("DELETE", "/v1/dnc/us/+12015550100", "").0, 200);
    proxy.kill9_and_restart();
    let r = call(&proxy, &uac, "+12125550142", "d-4");
    assert_eq!((r.status(), reason(&r)), (Some(603), "dnc".into()));
    let r = call(&proxy, &uac, "+12015550100", "d-5");
    assert_eq!(
        (r.status(), reason(&r)),
        (Some(480), "outside_hours".into()),
        "removed at run time"
    );
    assert_eq!(proxy.metric("callguard_dnc_entries{list=\"us\"}"), 3.0);
    assert_eq!(std::fs::read(p("us.cgdnc")).unwrap(), before);
    drop(proxy);

    let tenant = "rule_sets = [\"fr\", \"us\"]\ndnc_lists = [\"us\", \"old\"]\n";
    let proxy = Proxy::process_with(&[format!("udp:{}", uas.addr())], &top, tenant);
    let r = call(&proxy, &uac, "+12015550101", "s-1");
    assert_eq!(
        (r.status(), reason(&r)),
        (Some(503), "dnc_list_stale".into())
    );
    let why = String::from_utf8_lossy(r.header_by_name("Warning").unwrap_or_default()).into_owned();
    assert!(why.contains("`old`") && why.contains("2026-10-01"), "{why}");
    // Listed on the fresh list: still 603 (the first failing rule).
    let r = call(&proxy, &uac, "+12015550100", "s-2");
    assert_eq!((r.status(), reason(&r)), (Some(603), "dnc".into()));
    // A French callee: the stale list does not cover it.
    let carrier = busy_carrier(uas, 1);
    assert_eq!(
        call(&proxy, &uac, "+33142000001", "s-3").status(),
        Some(486)
    );
    assert_eq!(carrier.join().unwrap(), 1);
}

/// A list with a bad date or country in the config is refused with the
/// key that is wrong.
#[test]
fn list_freshness_settings_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("l.txt"), "+33142000001\n").unwrap();
    for (extra, says) in [
        ("date = \"01/10/2026\"", "date"),
        ("countries = [\"USA\"]", "countries"),
    ] {
        let cfg = dir.path().join("c.toml");
        std::fs::write(
            &cfg,
            format!(
                "[sip]\nlisten = [\"udp:127.0.0.1:5060\"]\n[[dnc_list]]\nname = \"l\"\nfile = \"l.txt\"\n{extra}\n\
                 [[tenant]]\nid = \"t\"\nsources = [\"10.0.0.0/8\"]\ndnc_lists = [\"l\"]\n"
            ),
        )
        .unwrap();
        let (ok, out) = cg(&["config", "check", "--config", &cfg.display().to_string()]);
        assert!(!ok && out.contains(says), "{extra}: {out}");
    }
}
