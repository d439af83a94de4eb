//! The audit trail through a real process: one JSON line per decision,
//! with the contract's fields, on disk within the flush interval, kept
//! across `kill -9`.

mod common;

use common::*;
use std::time::Duration;

const T: Duration = Duration::from_secs(3);

#[test]
fn every_decision_is_on_disk_and_survives_kill_9() {
    let uas = Ua::bind("127.0.0.1:0");
    let (p, _lists, _) = proxy_with_dnc_file(&uas, "+33612345678\n");
    let uac = Ua::bind("127.0.0.1:0");
    // 1: allowed, forwarded
    send_invite(&p, &uac, "+33142000000", "a-allow");
    assert!(uas.recv(T).is_some());
    // 2: DNC
    send_invite(&p, &uac, "0612345678", "a-dnc");
    assert_eq!(uac.recv_final_or_request(T).status(), Some(603));

    // The writer flushes every 100 ms; then the process dies without warning.
    std::thread::sleep(Duration::from_millis(400));
    p.signal("KILL");
    std::thread::sleep(Duration::from_millis(100));

    let file = p.dir.path().join("data/audit/audit-2026-11-17.jsonl");
    let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{text}");
    let by = |id: &str| {
        lines
            .iter()
            .find(|l| l["call_id"] == id)
            .unwrap_or_else(|| panic!("{id} missing: {text}"))
    };

    let a = by("a-allow");
    assert_eq!(a["decision"], "allow");
    assert_eq!(a["tenant"], "test");
    assert_eq!(a["caller"], "+33162000001");
    assert_eq!(a["callee"], "+33142000000");
    assert_eq!(a["mode"], "automated");
    assert_eq!(a["callee_time_zones"], serde_json::json!(["Europe/Paris"]));
    assert!(a["callee_local_time"][0]
        .as_str()
        .unwrap()
        .starts_with("2026-11-17T11:00"));
    assert!(a["time"].as_str().unwrap().starts_with("2026-11-17T10:00"));
    assert!(a["source"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert_eq!(a["config_version"].as_str().unwrap().len(), 16);

    let d = by("a-dnc");
    assert_eq!(
        (
            d["decision"].as_str(),
            d["status"].as_u64(),
            d["reason"].as_str()
        ),
        (Some("reject"), Some(603), Some("dnc"))
    );
    assert_eq!(d["callee"], "+33612345678");
    assert_eq!(d["failed_rules"][0]["rule"], "dnc");
    assert_eq!(d["failed_rules"][0]["enforcement"], "block");
}
