//! Durable call state through a real callguard process: the frequency cap
//! under concurrent INVITEs, refusals and DNC changes through the API (and
//! a refusal on a BYE), all surviving `kill -9`; API errors change nothing.

mod common;

use common::*;
use std::time::Duration;

#[test]
fn hundred_simultaneous_invites_to_one_callee_forward_exactly_four() {
    let uas = Ua::bind("127.0.0.1:0");
    let p = Proxy::start(&[format!("udp:{}", uas.addr())]);
    race_forwards_exactly_four(&[p.addr()], uas, "+33142000077", "cap");
    p.wait_metric(
        "callguard_invites_total{tenant=\"test\",decision=\"reject\",reason=\"frequency_cap\"}",
        96.0,
    );
}

#[test]
fn refusals_and_dnc_changes_survive_kill_9() {
    let uas = Ua::bind("127.0.0.1:0");
    let (mut p, _lists, _) = proxy_with_dnc_file(&uas, "+33142000010\n");
    let uac = Ua::bind("127.0.0.1:0");

    let (status, body) = p.http(
        "POST",
        "/v1/refusals",
        r#"{"tenant":"test","number":"01 42 00 00 01"}"#,
    );
    assert_eq!(status, 201, "{body}");
    assert!(body.contains("\"number\":\"+33142000001\""), "{body}");
    // 17 Nov + 61 days = 17 Jan 2027, midnight in Paris.
    assert!(
        body.contains("\"no_call_before\":\"2027-01-16T23:00:00Z\""),
        "{body}"
    );
    assert_eq!(p.http("PUT", "/v1/dnc/d/+33142000002", "").0, 200);
    assert_eq!(p.http("DELETE", "/v1/dnc/d/+33142000010", "").0, 200);
    let (status, body) = p.http(
        "POST",
        "/v1/dnc/d",
        "# from the CRM\n+33142000003\n0142000004\n",
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"count\":2"), "{body}");
    assert_eq!(p.metric("callguard_dnc_entries{list=\"d\"}"), 3.0);

    // Acknowledged, then killed without a chance to flush anything.
    p.kill9_and_restart();

    let r = call(&p, &uac, "+33142000001", "k-1");
    assert_eq!(
        (r.status(), reason(&r)),
        (Some(603), "refusal_cooloff".into())
    );
    assert!(r.header_by_name("Retry-After").is_some());
    for (i, n) in ["+33142000002", "+33142000003", "+33142000004"]
        .iter()
        .enumerate()
    {
        let r = call(&p, &uac, n, &format!("k-dnc-{i}"));
        assert_eq!((r.status(), reason(&r)), (Some(603), "dnc".into()), "{n}");
    }
    let (status, body) = p.http("GET", "/v1/dnc/d/0142000002", "");
    assert_eq!(status, 200);
    assert!(
        body.contains("\"listed\":true") && body.contains("\"source\":\"api\""),
        "{body}"
    );
    let (_, body) = p.http("GET", "/v1/dnc/d/+33142000010", "");
    assert!(
        body.contains("\"listed\":false") && body.contains("\"source\":\"api\""),
        "removed from the file's list: {body}"
    );
    // Never listed: nothing says so, not "the file".
    let (_, body) = p.http("GET", "/v1/dnc/d/+33142000099", "");
    assert!(
        body.contains("\"listed\":false") && body.contains("\"source\":null"),
        "{body}"
    );
    assert_eq!(p.metric("callguard_dnc_entries{list=\"d\"}"), 3.0);
    // The number removed at run time is callable again.
    let carrier = busy_carrier(uas, 1);
    assert_eq!(call(&p, &uac, "+33142000010", "k-2").status(), Some(486));
    assert_eq!(carrier.join().unwrap(), 1);
}

#[test]
fn a_refusal_signalled_on_a_bye_blocks_the_next_call() {
    let uas = Ua::bind("127.0.0.1:0");
    let p = Proxy::start(&[format!("udp:{}", uas.addr())]);
    refusal_on_a_bye_blocks_the_next_call(&p, &p, uas, "+33142000020", "b");
    // A BYE without the header records nothing: another callee stays callable.
    let (status, body) = p.http(
        "POST",
        "/v1/check",
        r#"{"tenant":"test","from":"+33162000001","to":"+33142000021"}"#,
    );
    assert_eq!(status, 200);
    assert!(body.contains("\"decision\":\"allow\""), "{body}");
}

#[test]
fn check_reads_state_without_counting() {
    let uas = Ua::bind("127.0.0.1:0");
    let p = Proxy::start(&[format!("udp:{}", uas.addr())]);
    let body = r#"{"tenant":"test","from":"+33162000001","to":"+33142000030","mode":"automated"}"#;
    for _ in 0..6 {
        let (status, b) = p.http("POST", "/v1/check", body);
        assert_eq!(status, 200, "{b}");
        assert!(b.contains("\"decision\":\"allow\""), "{b}");
    }
    assert_eq!(
        p.http(
            "POST",
            "/v1/refusals",
            r#"{"tenant":"test","number":"+33142000030","at":"2026-11-10T10:00:00+01:00"}"#
        )
        .0,
        201
    );
    let (_, b) = p.http("POST", "/v1/check", body);
    assert!(
        b.contains("\"reason\":\"refusal_cooloff\"") && b.contains("\"retry_after\""),
        "{b}"
    );
    // A Saturday asked explicitly: both failures listed, the first reported.
    let (_, b) = p.http(
        "POST",
        "/v1/check",
        r#"{"tenant":"test","from":"+33162000001","to":"+33142000030","at":"2026-11-21T11:00:00+01:00"}"#,
    );
    assert!(
        b.contains("\"reason\":\"refusal_cooloff\"") && b.contains("\"rule\":\"weekend\""),
        "{b}"
    );
}

#[test]
fn bad_api_calls_get_json_errors_and_change_nothing() {
    let uas = Ua::bind("127.0.0.1:0");
    let (mut p, _lists, _) = proxy_with_dnc_file(&uas, "+33142000010\n");
    for (method, path, body, status, says) in [
        ("POST", "/v1/refusals", "{not json", 400, "bad request body"),
        (
            "POST",
            "/v1/refusals",
            r#"{"tenant":"test"}"#,
            422,
            "number",
        ),
        (
            "POST",
            "/v1/refusals",
            r#"{"tenant":"nope","number":"+33142000001"}"#,
            404,
            "no tenant `nope`",
        ),
        (
            "POST",
            "/v1/refusals",
            r#"{"tenant":"test","number":"12"}"#,
            400,
            "not a valid number",
        ),
        (
            "POST",
            "/v1/refusals",
            r#"{"tenant":"test","number":"+33142000001","at":"yesterday"}"#,
            400,
            "RFC 3339",
        ),
        (
            "POST",
            "/v1/refusals",
            r#"{"tenant":"test","number":"+33142000001","at":"2027-01-01T00:00:00Z"}"#,
            400,
            "future",
        ),
        (
            "POST",
            "/v1/check",
            r#"{"tenant":"test","to":"+33142000001","mode":"robot"}"#,
            400,
            "mode",
        ),
        (
            "POST",
            "/v1/check",
            r#"{"tenant":"test","to":"+33142000001","extra":1}"#,
            422,
            "extra",
        ),
        (
            "PUT",
            "/v1/dnc/nope/+33142000001",
            "",
            404,
            "no DNC list `nope`",
        ),
        ("PUT", "/v1/dnc/d/abc", "", 400, "not a valid number"),
        (
            "POST",
            "/v1/dnc/d",
            "+33142000005\nnot-a-number\n+33142000006\n",
            400,
            "nothing was added",
        ),
        ("POST", "/v1/dnc/d", "# only a comment\n", 400, "no number"),
        ("GET", "/v1/nothing", "", 404, "no such endpoint"),
    ] {
        let (got, b) = p.http(method, path, body);
        assert_eq!(got, status, "{method} {path} {body}: {b}");
        assert!(
            b.contains("\"error\"") && b.contains(says),
            "{method} {path}: {b}"
        );
    }
    // An oversized JSON body is refused before it is read.
    let big = format!(r#"{{"tenant":"test","number":"{}"}}"#, "1".repeat(100_000));
    let (got, b) = p.http("POST", "/v1/refusals", &big);
    assert_eq!(got, 413);
    assert!(b.starts_with("{\"error\":"), "{b}");
    // The JSON limit (64 KiB), not the bulk upload's 16 MiB, bounds what
    // is read of a JSON change.
    assert!(b.contains("over 65536 bytes"), "{b}");
    // What axum rejects by itself is JSON too: bytes that are not UTF-8 in
    // a path or a bulk body, a method the endpoint does not take.
    for (method, path, body, status) in [
        ("GET", "/v1/dnc/d/%FF%FE", &b""[..], 400),
        ("POST", "/v1/dnc/d", &b"+33142000005\n\xFF\xFE\n"[..], 400),
        ("DELETE", "/v1/refusals", &b""[..], 405),
        ("PATCH", "/v1/check", &b"{}"[..], 405),
    ] {
        let (got, b) = p.http_raw(method, path, body, "");
        assert_eq!(got, status, "{method} {path}: {b}");
        let v: serde_json::Value =
            serde_json::from_str(&b).unwrap_or_else(|e| panic!("{method} {path}: {e}: {b}"));
        assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{b}");
    }
    // Nothing changed.
    for n in ["+33142000005", "+33142000006", "+33142000001"] {
        let (_, b) = p.http("GET", &format!("/v1/dnc/d/{n}"), "");
        assert!(b.contains("\"listed\":false"), "{n}: {b}");
    }
    let (_, b) = p.http(
        "POST",
        "/v1/check",
        r#"{"tenant":"test","from":"+33162000001","to":"+33142000001"}"#,
    );
    assert!(b.contains("\"decision\":\"allow\""), "{b}");
    // While a bulk upload past 64 KiB is taken.
    let bulk: String = (0..6000).map(|i| format!("+3314300{i:04}\n")).collect();
    assert!(bulk.len() > 64 << 10);
    let (got, b) = p.http("POST", "/v1/dnc/d", &bulk);
    assert_eq!(got, 200, "{b}");
    let (_, b) = p.http("GET", "/v1/dnc/d/+33143005999", "");
    assert!(b.contains("\"listed\":true"), "{b}");

    // With a token configured, every /v1 endpoint and /metrics need it.
    p.restart_with_admin_token();
    for (method, path) in [
        ("POST", "/v1/refusals"),
        ("POST", "/v1/check"),
        ("PUT", "/v1/dnc/d/+33142000001"),
        ("GET", "/v1/dnc/d/+33142000001"),
        ("POST", "/v1/dnc/d"),
        ("GET", "/metrics"),
    ] {
        let (got, b) = p.http(method, path, "");
        assert_eq!(got, 401, "{method} {path}: {b}");
    }
    let (got, _) = p.http_with(
        "PUT",
        "/v1/dnc/d/+33142000001",
        "",
        "Authorization: Bearer s3cret\r\n",
    );
    assert_eq!(got, 200);
    assert_eq!(p.http("GET", "/readyz", "").0, 200, "probes stay open");
}

/// Closures through the API of a real process: bad requests change
/// nothing, a closure refuses calls to its jurisdiction with `480 closure`
/// and a Retry-After at its end, survives `kill -9`, and its id is never
/// handed out again once deleted.
#[test]
fn closures_through_the_api_refuse_calls_and_survive_kill_9() {
    let uas = Ua::bind("127.0.0.1:0");
    let mut p = Proxy::process(&[format!("udp:{}", uas.addr())]);
    let uac = Ua::bind("127.0.0.1:0");
    // The tenant calls under `fr`; the clock is Tuesday 17 November 2026,
    // 11:00 in Paris.
    let day = r#""from":"2026-11-17T00:00:00+01:00","to":"2026-11-18T00:00:00+01:00""#;
    for (body, says) in [
        (
            format!(r#"{{"jurisdiction":"XX",{day},"reason":"r"}}"#),
            "no jurisdiction",
        ),
        (
            r#"{"jurisdiction":"FR","from":"2026-11-18T00:00:00Z","to":"2026-11-17T00:00:00Z","reason":"r"}"#.into(),
            "after `from`",
        ),
        (
            r#"{"jurisdiction":"FR","from":"2026-11-01T00:00:00Z","to":"2026-11-02T00:00:00Z","reason":"r"}"#.into(),
            "in the past",
        ),
        (
            r#"{"jurisdiction":"FR","from":"yesterday","to":"2026-11-20T00:00:00Z","reason":"r"}"#.into(),
            "`from` must be an RFC 3339 instant",
        ),
        (format!(r#"{{"jurisdiction":"FR",{day},"reason":""}}"#), "`reason`"),
        (
            format!(r#"{{"jurisdiction":"FR",{day},"reason":"r","extra":1}}"#),
            "unknown field `extra`",
        ),
    ] {
        let (status, answer) = p.http("POST", "/v1/closures", &body);
        // 422: a well-formed body of the wrong shape (axum's JSON rejection).
        let want = if says.contains("unknown field") { 422 } else { 400 };
        assert_eq!(status, want, "{body}: {answer}");
        assert!(answer.contains(says), "{body}: {answer}");
    }
    assert_eq!(p.http("DELETE", "/v1/closures/abc", "").0, 400);
    assert_eq!(p.http("DELETE", "/v1/closures/1", "").0, 404);
    let (_, list) = p.http("GET", "/v1/closures", "");
    assert_eq!(list, r#"{"closures":[]}"#);

    let (status, body) = p.http(
        "POST",
        "/v1/closures",
        &format!(r#"{{"jurisdiction":"fr",{day},"reason":"deuil national"}}"#),
    );
    assert_eq!(status, 201, "{body}");
    assert!(
        body.contains(r#""id":1"#) && body.contains(r#""jurisdiction":"FR""#),
        "{body}"
    );
    // Christmas Eve, a closure to delete again.
    let christmas = |p: &Proxy| {
        let (status, body) = p.http(
            "POST",
            "/v1/closures",
            r#"{"jurisdiction":"FR","from":"2026-12-24T00:00:00+01:00","to":"2026-12-25T00:00:00+01:00","reason":"r"}"#,
        );
        assert_eq!(status, 201, "{body}");
        body
    };
    let body = christmas(&p);
    assert!(body.contains(r#""id":2"#), "{body}");
    assert_eq!(p.http("DELETE", "/v1/closures/2", "").0, 204);

    let refused = |p: &Proxy, id: &str| {
        let r = call(p, &uac, "+33142000031", id);
        assert_eq!((r.status(), reason(&r)), (Some(480), "closure".into()));
        // Open again Wednesday 10:00 in Paris: 23 h after the call (the
        // process's clock runs on from `--at`).
        let retry: u64 = String::from_utf8_lossy(r.header_by_name("Retry-After").unwrap())
            .trim()
            .parse()
            .unwrap();
        assert!((82_790..=82_800).contains(&retry), "{retry}");
        let warning =
            String::from_utf8_lossy(r.header_by_name("Warning").unwrap_or_default()).into_owned();
        assert!(warning.contains("deuil national"), "{warning}");
    };
    refused(&p, "cl-1");
    p.kill9_and_restart();
    refused(&p, "cl-2");
    let (_, list) = p.http("GET", "/v1/closures", "");
    assert!(
        list.contains(r#""id":1"#) && !list.contains(r#""id":2"#),
        "{list}"
    );
    let body = christmas(&p);
    assert!(
        body.contains(r#""id":3"#),
        "a deleted id is not reused: {body}"
    );
    // Deleted, the closure no longer holds the call.
    assert_eq!(p.http("DELETE", "/v1/closures/1", "").0, 204);
    let carrier = busy_carrier(uas, 1);
    assert_eq!(call(&p, &uac, "+33142000031", "cl-3").status(), Some(486));
    assert_eq!(carrier.join().unwrap(), 1);
}

/// A carrier that asks for credentials did not place the call: the dialer
/// sends the INVITE again, and only that one counts (counting the
/// challenged INVITEs too refused the third call).
#[test]
fn a_call_challenged_for_credentials_counts_once() {
    let uas = Ua::bind("127.0.0.1:0");
    let p = Proxy::process(&[format!("udp:{}", uas.addr())]);
    challenged_calls_count_once(&p, uas, "+33142000040");
}

/// A state whose law adds nothing to the federal rules is a jurisdiction
/// all the same: a hurricane closes North Carolina through the API, and a
/// call there is refused `480 closure` while Texas keeps its own answer.
/// A province of a set the tenants do not call under is refused.
#[test]
fn a_state_without_rules_of_its_own_can_be_closed() {
    let uas = Ua::bind("127.0.0.1:0");
    let p = Proxy::process_with(
        &[format!("udp:{}", uas.addr())],
        "",
        "rule_sets = [\"fr\", \"us\"]",
    );
    let uac = Ua::bind("127.0.0.1:0");
    let (status, body) = p.http(
        "POST",
        "/v1/closures",
        r#"{"jurisdiction":"us-nc","from":"2026-11-16T00:00:00-05:00","to":"2026-11-20T00:00:00-05:00","reason":"hurricane"}"#,
    );
    assert_eq!(status, 201, "{body}");
    assert!(body.contains(r#""jurisdiction":"US-NC""#), "{body}");
    let r = call(&p, &uac, "+17045550123", "nc-1");
    assert_eq!((r.status(), reason(&r)), (Some(480), "closure".into()));
    // The clock is 05:00 in Charlotte, 04:00 in Dallas: Texas is refused
    // for its hours, not for the closure.
    let r = call(&p, &uac, "+12145550123", "tx-1");
    assert_eq!(
        (r.status(), reason(&r)),
        (Some(480), "outside_hours".into())
    );
    let (status, body) = p.http(
        "POST",
        "/v1/closures",
        r#"{"jurisdiction":"CA-ON","from":"2026-11-16T00:00:00-05:00","to":"2026-11-20T00:00:00-05:00","reason":"r"}"#,
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("no jurisdiction"), "{body}");
}

/// Consent at run time: given with its date and proof, it lets a
/// prospecting call through; withdrawn, the call is refused again; both
/// survive `kill -9`, override the list's file, and bad requests change
/// nothing.
#[test]
fn consent_given_and_withdrawn_through_the_api_survives_kill_9() {
    let uas = Ua::bind("127.0.0.1:0");
    let lists = tempfile::tempdir().unwrap();
    let file = lists.path().join("optin.csv");
    std::fs::write(&file, "number,date,proof\n+33142000020,2026-09-01,form-1\n").unwrap();
    let mut p = Proxy::process_with(
        &[format!("udp:{}", uas.addr())],
        &format!(
            "[[consent_list]]\nname = \"optin\"\nfile = \"{}\"\n",
            file.display()
        ),
        "campaign = \"prospecting\"\nconsent_lists = [\"optin\"]\n",
    );
    let uac = Ua::bind("127.0.0.1:0");
    let refused = |p: &Proxy, id: &str, n: &str| {
        let r = call(p, &uac, n, id);
        assert_eq!(
            (r.status(), reason(&r)),
            (Some(608), "no_consent".into()),
            "{n}"
        );
    };
    refused(&p, "c-0", "+33142000010");

    let body = r#"{"date":"2026-11-02","proof":"call recording 7781","hours":false}"#;
    let (status, b) = p.http("PUT", "/v1/consent/optin/0142000010", body);
    assert_eq!(status, 200, "{b}");
    assert!(
        b.contains("\"number\":\"+33142000010\"")
            && b.contains("\"proof\":\"call recording 7781\""),
        "{b}"
    );
    assert_eq!(
        p.http("DELETE", "/v1/consent/optin/+33142000020", "").0,
        200
    );
    for (method, path, body, status, says) in [
        (
            "PUT",
            "/v1/consent/nope/+33142000011",
            body,
            404,
            "no consent list `nope`",
        ),
        (
            "PUT",
            "/v1/consent/optin/+33142000011",
            r#"{"date":"2026-13-01","proof":"x"}"#,
            400,
            "`date`",
        ),
        (
            "PUT",
            "/v1/consent/optin/+33142000011",
            r#"{"date":"2027-06-01","proof":"x"}"#,
            400,
            "in the future",
        ),
        (
            "PUT",
            "/v1/consent/optin/+33142000011",
            r#"{"date":"2026-11-01","proof":" "}"#,
            400,
            "`proof`",
        ),
        (
            "PUT",
            "/v1/consent/optin/+33142000011",
            r#"{"date":"2026-11-01"}"#,
            422,
            "proof",
        ),
        (
            "PUT",
            "/v1/consent/optin/+33142000011",
            r#"{"date":"2026-11-01","proof":"x","who":1}"#,
            422,
            "who",
        ),
    ] {
        let (got, b) = p.http(method, path, body);
        assert_eq!(got, status, "{method} {path} {body}: {b}");
        assert!(b.contains(says), "{method} {path} {body}: {b}");
    }

    p.kill9_and_restart();

    // Given at run time: forwarded (the carrier answers busy).
    let carrier = busy_carrier(uas, 1);
    assert_eq!(call(&p, &uac, "+33142000010", "c-1").status(), Some(486));
    assert_eq!(carrier.join().unwrap(), 1);
    // Withdrawn at run time, over the file's record: refused.
    refused(&p, "c-2", "+33142000020");
    // Never given: still refused.
    refused(&p, "c-3", "+33142000011");
    let (status, b) = p.http("GET", "/v1/consent/optin/+33142000010", "");
    assert_eq!(status, 200);
    assert!(
        b.contains("\"source\":\"api\"") && b.contains("\"date\":\"2026-11-02\""),
        "{b}"
    );
    let (_, b) = p.http("GET", "/v1/consent/optin/+33142000020", "");
    assert!(
        b.contains("\"consent\":null") && b.contains("\"source\":\"api\""),
        "{b}"
    );
    let (_, b) = p.http("GET", "/v1/consent/optin/+33142000099", "");
    assert!(
        b.contains("\"consent\":null") && b.contains("\"source\":null"),
        "{b}"
    );

    // Withdrawn again after the restart.
    assert_eq!(
        p.http("DELETE", "/v1/consent/optin/+33142000010", "").0,
        200
    );
    refused(&p, "c-4", "+33142000010");

    // Each change is in the audit trail, refused requests too (with their
    // status), and nothing else.
    std::thread::sleep(Duration::from_millis(300));
    let audit =
        std::fs::read_to_string(p.dir.path().join("data/audit/audit-2026-11-17.jsonl")).unwrap();
    let changes: Vec<serde_json::Value> = audit
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|l| l["kind"] == "admin")
        .collect();
    let seen: Vec<(String, String, u64)> = changes
        .iter()
        .map(|c| {
            (
                c["method"].as_str().unwrap().into(),
                c["path"].as_str().unwrap().into(),
                c["status"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(seen.len(), 9, "{seen:?}");
    assert_eq!(
        seen[0],
        ("PUT".into(), "/v1/consent/optin/0142000010".into(), 200)
    );
    assert_eq!(changes[0]["request"]["proof"], "call recording 7781");
    assert_eq!(
        seen[2],
        ("PUT".into(), "/v1/consent/nope/+33142000011".into(), 404)
    );
    assert_eq!(
        seen[8],
        (
            "DELETE".into(),
            "/v1/consent/optin/+33142000010".into(),
            200
        )
    );
}

/// The call state's disk runs full, then has room again. redb refuses
/// every operation after one failed write until the database is opened
/// again: callguard reopens it and writes back what memory holds, so the
/// attempts counted meanwhile (decided in memory all along) are on disk
/// before a `kill -9`, and the cap holds after the restart.
///
/// Needs root with the right to mount a tmpfs, as `.ci/run` has; without
/// it the test says so and checks nothing.
#[test]
fn a_state_disk_that_runs_full_then_has_room_loses_no_attempt() {
    let base = tempfile::tempdir().unwrap();
    let disk = base.path().join("disk");
    std::fs::create_dir_all(&disk).unwrap();
    let Some(_mounts) = mount_tmpfs(&disk, "8m") else {
        return;
    };
    let carrier = TestCarrier::start();
    let link = disk.clone();
    let mut p = Proxy::process_prepared(
        &[format!("udp:{}", carrier.addr)],
        // The audit trail elsewhere: a full disk under it refuses calls,
        // which is another test's subject.
        &format!(
            "[audit]\ndir = \"{}\"\n",
            base.path().join("audit").display()
        ),
        "",
        move |dir| std::os::unix::fs::symlink(&link, dir.join("data")).unwrap(),
    );
    let uac = Ua::bind("127.0.0.1:0");
    let callee = "+33142000031";
    assert_eq!(call(&p, &uac, callee, "full-1").status(), Some(486));
    assert_eq!(p.metric("callguard_state_backend_up"), 1.0);

    // Every free page of the tmpfs taken.
    let filler = disk.join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    let chunk = vec![0x5a_u8; 64 * 1024];
    while std::io::Write::write_all(&mut f, &chunk).is_ok() {}
    drop(f);

    // Decided in memory; on disk nothing more.
    assert_eq!(call(&p, &uac, callee, "full-2").status(), Some(486));
    assert_eq!(call(&p, &uac, callee, "full-3").status(), Some(486));
    for i in 0..40 {
        let other = format!("+331420001{i:02}");
        assert_eq!(
            call(&p, &uac, &other, &format!("full-o{i}")).status(),
            Some(486)
        );
    }
    wait_for(
        &p,
        "callguard_state_backend_up",
        0.0,
        Duration::from_secs(5),
    );
    assert!(p.metric("callguard_state_errors_total") >= 1.0);

    std::fs::remove_file(&filler).unwrap();
    // Within the reopen's back-off (at most 5 s between tries).
    wait_for(
        &p,
        "callguard_state_backend_up",
        1.0,
        Duration::from_secs(15),
    );
    assert_eq!(call(&p, &uac, callee, "full-4").status(), Some(486));
    // One batch interval and more for the fourth attempt.
    std::thread::sleep(Duration::from_millis(500));

    p.kill9_and_restart();
    let r = call(&p, &uac, callee, "full-5");
    assert_eq!(
        (r.status(), reason(&r)),
        (Some(480), "frequency_cap".into()),
        "{}",
        p.log()
    );
    assert_eq!(
        carrier.invites.load(std::sync::atomic::Ordering::Relaxed),
        44
    );
}
