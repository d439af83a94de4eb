//! What ops rely on, through a real process: the metrics move with real SIP
//! traffic and with the right labels, the shipped dashboard and alert rules
//! query only metrics the process exports, and SIGTERM drains instead of
//! dropping calls.

mod common;

use common::*;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(3);

/// One allowed call answered 200 and hung up, and one DNC rejection.
fn traffic(p: &Proxy, uac: &Ua, uas: &Ua) {
    send_invite(p, uac, "+33142000001", "m-ok");
    let (fwd, _) = uas.recv(T).expect("allowed call forwarded");
    uas.send(p.addr(), &reply(&fwd, 200, "OK", "callee", &uas.hostport()));
    let ok = uac.recv_final_or_request(T);
    assert_eq!(ok.status(), Some(200));
    let ack = caller_dialog_request(&ok, "ACK", 1, &uac.hostport(), "UDP", "z9hG4bKm-ack");
    uac.send(p.addr(), &ack);
    let _ = uas.recv(T).expect("ACK relayed");
    let bye = caller_dialog_request(&ok, "BYE", 2, &uac.hostport(), "UDP", "z9hG4bKm-bye");
    uac.send(p.addr(), &bye);
    let (bye_fwd, _) = uas.recv(T).expect("BYE relayed");
    uas.send(p.addr(), &reply(&bye_fwd, 200, "OK", "", ""));
    assert_eq!(uac.recv_final_or_request(T).status(), Some(200));

    assert_eq!(call(p, uac, "0612345678", "m-dnc").status(), Some(603));
}

fn sample_names(scrape: &str) -> BTreeSet<String> {
    scrape
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

/// Every `callguard_*` identifier in a text (PromQL in JSON or YAML).
fn referenced_metrics(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("callguard_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        out.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    out
}

#[test]
fn metrics_move_with_sip_traffic_and_dashboards_query_only_exported_names() {
    let uas = Ua::bind("127.0.0.1:0");
    let (p, _lists, _) = proxy_with_dnc_file(&uas, "+33612345678\n");
    let uac = Ua::bind("127.0.0.1:0");
    traffic(&p, &uac, &uas);

    let expect = [
        (
            r#"callguard_invites_total{tenant="test",decision="allow",reason=""}"#,
            1.0,
        ),
        (
            r#"callguard_invites_total{tenant="test",decision="reject",reason="dnc"}"#,
            1.0,
        ),
        (
            r#"callguard_sip_messages_total{direction="in",method="INVITE"}"#,
            2.0,
        ),
        (
            r#"callguard_sip_messages_total{direction="out",method="INVITE"}"#,
            1.0,
        ),
        (
            r#"callguard_sip_messages_total{direction="in",method="BYE"}"#,
            1.0,
        ),
        (
            r#"callguard_sip_messages_total{direction="out",method="BYE"}"#,
            1.0,
        ),
        (
            r#"callguard_sip_responses_total{direction="out",code="603"}"#,
            1.0,
        ),
        (
            r#"callguard_sip_responses_total{direction="in",code="200"}"#,
            2.0,
        ),
        (
            r#"callguard_carrier_responses_total{carrier="c1",code="200"}"#,
            1.0,
        ),
        ("callguard_decision_duration_seconds_count", 2.0),
        (r#"callguard_dnc_entries{list="d"}"#, 1.0),
    ];
    for (sample, value) in expect {
        assert_eq!(p.metric(sample), value, "{sample}");
    }
    let scrape = p.http_get("/metrics").unwrap();
    // No phone number or Call-ID ever becomes a label.
    for needle in ["3314200000", "612345678", "m-ok", "m-dnc"] {
        assert!(!scrape.contains(needle), "{needle} leaked into a label");
    }
    let exported = sample_names(&scrape);
    for name in [
        "callguard_invites_total",
        "callguard_decision_duration_seconds_bucket",
        "callguard_sip_messages_total",
        "callguard_sip_responses_total",
        "callguard_transactions_active",
        "callguard_dnc_entries",
        "callguard_carrier_responses_total",
    ] {
        assert!(exported.contains(name), "{name} missing from the scrape");
    }
    assert!(
        scrape.contains("# TYPE callguard_config_reloads counter"),
        "config reloads not registered"
    );

    // The shipped dashboard: valid JSON, and every query names a metric the
    // process exports (families that may still be empty count by their
    // `# TYPE` line).
    let root = env!("CARGO_MANIFEST_DIR");
    let dash = std::fs::read_to_string(format!("{root}/config/grafana-dashboard.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&dash).expect("dashboard is valid JSON");
    let panels = json["panels"].as_array().expect("dashboard has panels");
    let mut exprs = Vec::new();
    for panel in panels {
        for target in panel["targets"].as_array().into_iter().flatten() {
            exprs.push(target["expr"].as_str().expect("every target has an expr"));
        }
    }
    assert!(exprs.len() >= 8, "{} queries", exprs.len());
    let typed: BTreeSet<String> = scrape
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .map(str::to_owned)
        .collect();
    let known = |m: &str| {
        exported.contains(m)
            || ["", "_total", "_bucket", "_count", "_sum", "_created"]
                .iter()
                .any(|suffix| {
                    m.strip_suffix(suffix)
                        .is_some_and(|base| typed.contains(base))
                })
    };
    // Panel queries, the tenant variable and the descriptions alike.
    let used_by_dashboard = referenced_metrics(&dash);
    assert!(used_by_dashboard.len() >= 7, "{used_by_dashboard:?}");
    for m in &used_by_dashboard {
        assert!(known(m), "dashboard queries {m}, which is not exported");
    }
    let alerts = std::fs::read_to_string(format!("{root}/config/prometheus-alerts.yml")).unwrap();
    let used_by_alerts = referenced_metrics(&alerts);
    for m in &used_by_alerts {
        assert!(known(m), "alert rules query {m}, which is not exported");
    }
    for alert in [
        "CallguardCarrierDown",
        "CallguardRejectRatioSpike",
        "CallguardPolicyUnavailable",
        "CallguardReloadFailed",
        "CallguardStateBackendDown",
        "CallguardAuditDown",
        "CallguardHolidayCalendarRunningOut",
        "CallguardDncListExpiring",
        "CallguardDncListStale",
        "CallguardStrangerFlood",
        "CallguardCallsLooping",
        "CallguardRedisRestarted",
    ] {
        assert!(alerts.contains(&format!("alert: {alert}")), "{alert}");
    }
}

#[test]
fn silent_carrier_is_counted_as_a_carrier_failure() {
    let silent = Ua::bind("127.0.0.1:0");
    let p = Proxy::start(&[format!("udp:{}", silent.addr())]);
    let uac = Ua::bind("127.0.0.1:0");
    // carrier_timeout_ms = 1000 in the harness: then 408.
    let r = call(&p, &uac, "+33142000003", "m-timeout");
    assert_eq!(r.status(), Some(408));
    assert_eq!(
        r.header_by_name("X-Callguard-Reason"),
        Some(&b"carrier_timeout"[..])
    );
    // Every series an alert rule uses is there from the start, at 0.
    let scrape = p.http_get("/metrics").unwrap();
    for series in [
        r#"callguard_config_reloads_total{result="failure"} 0"#,
        r#"callguard_config_reloads_total{result="success"} 0"#,
        r#"callguard_carrier_failovers_total{carrier="c1"} 0"#,
        r#"callguard_carrier_failures_total{carrier="c1",reason="unreachable"} 0"#,
    ] {
        assert!(scrape.contains(series), "{series} missing:\n{scrape}");
    }
    assert_eq!(
        p.metric(r#"callguard_carrier_failures_total{carrier="c1",reason="timeout"}"#),
        1.0
    );
}

#[test]
fn sigterm_refuses_new_calls_finishes_calls_in_progress_and_flushes() {
    let uas = Ua::bind("127.0.0.1:0");
    let mut p = Proxy::process(&[format!("udp:{}", uas.addr())]);
    let uac = Ua::bind("127.0.0.1:0");
    // A call in progress: forwarded, not yet answered.
    send_invite(&p, &uac, "+33142000010", "d-inflight");
    let (fwd, _) = uas.recv(T).expect("forwarded");
    assert_eq!(uac.recv(T).unwrap().0.status(), Some(100));

    p.signal("TERM");
    let deadline = Instant::now() + T;
    while !p
        .http_get("/readyz")
        .is_some_and(|r| r.starts_with("HTTP/1.1 503"))
    {
        assert!(Instant::now() < deadline, "/readyz never turned 503");
        std::thread::sleep(Duration::from_millis(20));
    }
    // A new call is refused with a retry hint; OPTIONS pings see 503 too.
    let r = call(&p, &uac, "+33142000011", "d-new");
    assert_eq!(r.status(), Some(503));
    assert_eq!(r.header_by_name("Retry-After"), Some(&b"5"[..]));
    assert_eq!(
        r.header_by_name("X-Callguard-Reason"),
        Some(&b"shutting_down"[..])
    );
    // Counted under the dialer's tenant, as every other decision.
    assert_eq!(
        p.metric(
            r#"callguard_invites_total{tenant="test",decision="reject",reason="shutting_down"}"#
        ),
        1.0
    );
    uac.send(
        p.addr(),
        &format!(
            "OPTIONS sip:{} SIP/2.0\r\nVia: SIP/2.0/UDP {};branch=z9hG4bKd-opt\r\nMax-Forwards: 70\r\n\
             From: <sip:ping@x>;tag=o\r\nTo: <sip:{}>\r\nCall-ID: d-opt\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
            p.addr(),
            uac.hostport(),
            p.addr()
        ),
    );
    assert_eq!(uac.recv_final_or_request(T).status(), Some(503));
    assert!(p.alive(), "stopped before the call in progress ended");

    // The call in progress still completes, then the process stops cleanly.
    uas.send(p.addr(), &reply(&fwd, 200, "OK", "callee", &uas.hostport()));
    assert_eq!(uac.recv_final_or_request(T).status(), Some(200));
    let status = p
        .wait_exit(Duration::from_secs(5))
        .expect("stopped after the drain");
    assert!(status.success(), "{status:?}\n{}", p.log());
    let log = p.log();
    assert!(log.contains("audit trail and state flushed"), "{log}");
    // The decision is in the audit trail and the attempt in the state.
    let audit = std::fs::read_dir(p.dir.path().join("data/audit"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect::<String>();
    assert!(audit.contains("\"call_id\":\"d-inflight\""), "{audit}");
}

#[test]
fn drain_is_bounded_by_drain_timeout() {
    let uas = Ua::bind("127.0.0.1:0");
    let mut p = Proxy::process_full(
        &[format!("udp:{}", uas.addr())],
        "drain_timeout_s = 1",
        "",
        "",
    );
    let uac = Ua::bind("127.0.0.1:0");
    // Ringing forever: only the drain bound ends it.
    send_invite(&p, &uac, "+33142000020", "d-ringing");
    let (fwd, _) = uas.recv(T).expect("forwarded");
    uas.send(p.addr(), &reply(&fwd, 180, "Ringing", "callee", ""));
    assert_eq!(uac.recv_final_or_request(T).status(), Some(180));

    let started = Instant::now();
    p.signal("TERM");
    let status = p.wait_exit(Duration::from_secs(5)).expect("stopped");
    let took = started.elapsed();
    assert!(status.success(), "{status:?}");
    assert!(took >= Duration::from_millis(900), "did not wait: {took:?}");
    assert!(
        p.log().contains("stopping with transactions still waiting"),
        "{}",
        p.log()
    );
}

/// `promtool check rules FILE` or `promtool test rules FILE` must pass.
fn promtool(verb: &str, file: &std::path::Path) {
    let out = std::process::Command::new("promtool")
        .args([verb, "rules"])
        .arg(file)
        .output()
        .expect("promtool is not installed (Debian package prometheus; .ci/run installs it)");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The alert rules and every dashboard query parse as PromQL, checked by
/// Prometheus's own `promtool` (`.ci/run` installs it).
#[test]
fn shipped_alert_rules_and_dashboard_queries_are_valid_promql() {
    let root = env!("CARGO_MANIFEST_DIR");
    let promtool = |file: &std::path::Path| promtool("check", file);
    promtool(std::path::Path::new(&format!(
        "{root}/config/prometheus-alerts.yml"
    )));

    // Grafana's variables replaced by what they expand to, then each query
    // as a recording rule.
    let dash = std::fs::read_to_string(format!("{root}/config/grafana-dashboard.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&dash).unwrap();
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    let mut n = 0;
    for panel in json["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"]
                .as_str()
                .unwrap()
                .replace("$__rate_interval", "5m")
                .replace("$tenant", ".*");
            n += 1;
            rules.push_str(&format!(
                "      - record: dashboard_query_{n}\n        expr: {}\n",
                serde_json::to_string(&expr).unwrap()
            ));
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dashboard-rules.yml");
    std::fs::write(&file, rules).unwrap();
    promtool(&file);
}

/// The loop alert, by promtool's rule tests: a 482 sent fires it; other
/// refusals, and 482s long gone, do not.
#[test]
fn calls_answered_482_raise_the_loop_alert() {
    let m = "callguard_sip_responses_total";
    alert_fires_then_quiets(
        &[
            (
                format!(r#"{m}{{code="482",direction="out",instance="a",job="callguard"}}"#),
                "0 0 0 1 2 3 3x14",
            ),
            (
                format!(r#"{m}{{code="480",direction="out",instance="b",job="callguard"}}"#),
                "0+50x20",
            ),
            (
                format!(r#"{m}{{code="482",direction="in",instance="b",job="callguard"}}"#),
                "0+1x20",
            ),
        ],
        "CallguardCallsLooping",
        ("5m", "{severity: critical, instance: a}"),
        "calls through a loop back to it and fail 482 Loop Detected: check the carriers' routing",
        "15m",
    );
}

/// The Redis restart alert, by promtool's rule tests: a restart counted
/// fires it for the next half hour; an instance whose Redis did not
/// restart stays quiet.
#[test]
fn a_redis_restart_raises_its_alert() {
    let m = "callguard_state_redis_restarts_total";
    alert_fires_then_quiets(
        &[
            (format!(r#"{m}{{instance="a",job="callguard"}}"#), "0 0 0 1x42"),
            (format!(r#"{m}{{instance="b",job="callguard"}}"#), "0x45"),
        ],
        "CallguardRedisRestarted",
        ("5m", "{severity: warning, instance: a, job: callguard}"),
        "the Redis behind callguard a restarted: without appendonly it lost the refusals and attempts since its last snapshot",
        "40m",
    );
}

/// A promtool rule test of one alert: `series` (name with labels, values
/// per minute) fire `alert` at `fires.0` with exactly the labels `fires.1`
/// and `summary`, and nothing at `quiet_at`.
fn alert_fires_then_quiets(
    series: &[(String, &str)],
    alert: &str,
    fires: (&str, &str),
    summary: &str,
    quiet_at: &str,
) {
    let mut test = String::from("- interval: 1m\n  input_series:\n");
    for (name, values) in series {
        test.push_str(&format!(
            "    - series: '{name}'\n      values: '{values}'\n"
        ));
    }
    test.push_str(&format!(
        "  alert_rule_test:\n\
         \x20   - eval_time: {}\n      alertname: {alert}\n      exp_alerts:\n\
         \x20       - exp_labels: {}\n\
         \x20         exp_annotations:\n            summary: {}\n\
         \x20   - eval_time: {quiet_at}\n      alertname: {alert}\n      exp_alerts: []\n",
        fires.0,
        fires.1,
        serde_json::to_string(summary).unwrap(),
    ));
    alert_rule_test(&test);
}

/// Runs promtool's rule tests (`tests:` entries in `tests`) against the
/// shipped alert rules.
fn alert_rule_test(tests: &str) {
    let root = env!("CARGO_MANIFEST_DIR");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("alert-test.yml");
    std::fs::write(
        &file,
        format!(
            "rule_files: [\"{root}/config/prometheus-alerts.yml\"]\nevaluation_interval: 1m\ntests:\n{tests}"
        ),
    )
    .unwrap();
    promtool("test", &file);
}

/// A tenant calling Indonesia uses a holiday calendar known by its dated
/// decree: its end is exported for the alert that asks for the next one.
#[test]
fn a_dated_holiday_calendar_in_use_exports_its_end() {
    let p = Proxy::start_with(&[], "", r#"rule_sets = ["fr", "id"]"#);
    // dated_until 2027-12-31: the data ends at 2028-01-01T00:00:00Z.
    assert_eq!(
        p.metric(r#"callguard_holiday_calendar_dated_until_timestamp_seconds{calendar="id"}"#),
        1_830_297_600.0
    );
    // The shipped alert, by promtool's rule tests (time() starts at 0):
    // fires for a calendar ending in 50 days, not for one ending in 90.
    let m = "callguard_holiday_calendar_dated_until_timestamp_seconds";
    alert_rule_test(&format!(
        "- interval: 1m\n  input_series:\n\
         \x20   - series: '{m}{{calendar=\"id\",instance=\"cg\",job=\"callguard\"}}'\n      values: '{soon}x10'\n\
         \x20   - series: '{m}{{calendar=\"xx\",instance=\"cg\",job=\"callguard\"}}'\n      values: '{later}x10'\n\
         \x20 alert_rule_test:\n\
         \x20   - eval_time: 5m\n      alertname: CallguardHolidayCalendarRunningOut\n      exp_alerts:\n\
         \x20       - exp_labels: {{severity: warning, calendar: id, instance: cg, job: callguard}}\n\
         \x20         exp_annotations:\n\
         \x20           summary: holiday calendar id on cg has dated holidays for less than 60 more days\n\
         \x20           description: Add the next official holiday dates to a rule file (callguard rules show, callguard rules check) and reload.\n",
        soon = 50 * 86_400,
        later = 90 * 86_400,
    ));
    let fr_only = Proxy::start(&[]);
    assert!(!fr_only
        .http_get("/metrics")
        .unwrap()
        .contains("callguard_holiday_calendar_dated_until_timestamp_seconds{"));
}
