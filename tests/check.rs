//! `callguard check` on the exact cases an independent model of the rules
//! found wrong (issue 11), through the real binary: decision, rule code,
//! status and Retry-After.

use std::path::Path;
use std::process::Command;

/// A config with one tenant `t` (fr rules unless `tenant` says otherwise),
/// the given extra tenant keys and top-level tables.
fn config(dir: &Path, tenant: &str, top: &str) -> std::path::PathBuf {
    let path = dir.join("cg.toml");
    std::fs::write(
        &path,
        format!(
            "[sip]\nlisten = [\"udp:127.0.0.1:5060\"]\n{top}\n[[tenant]]\nid = \"t\"\nsources = [\"10.0.0.0/8\"]\n{tenant}\n"
        ),
    )
    .unwrap();
    path
}

/// Runs `callguard check --json`: (exit code, the JSON decision).
fn check(cfg: &Path, args: &[&str]) -> (i32, serde_json::Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_callguard"))
        .args(["check", "--json", "--tenant", "t", "--config"])
        .arg(cfg)
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let v = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), v)
}

#[test]
fn several_zones_each_zone_counts() {
    let dir = tempfile::tempdir().unwrap();
    // Friday 23:30 in Tahiti (outside hours, blocked), Saturday 00:00 and
    // 00:30 in the Marquesas and Gambier (weekend, warned).
    let cfg = config(
        dir.path(),
        "[tenant.enforcement.manual]\nweekend = \"warn\"\npublic_holiday = \"warn\"",
        "",
    );
    let (code, d) = check(
        &cfg,
        &[
            "--mode",
            "manual",
            "--from",
            "+33162000000",
            "--to",
            "+68987123456",
            "--at",
            "2026-11-21T09:30:00Z",
        ],
    );
    assert_eq!(code, 2, "{d}");
    assert_eq!(d["decision"], "reject");
    assert_eq!(d["status"], 480);
    assert_eq!(d["reason"], "outside_hours");
    // Monday 10:00 in Tahiti, the first instant open in all three zones.
    assert_eq!(d["retry_after"], 210_600);
    let failed: Vec<&str> = d["failed_rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["rule"].as_str().unwrap())
        .collect();
    assert_eq!(failed, ["weekend", "outside_hours"]);

    // NANP: +1 208 300 spans Boise and Los Angeles. Sunday 00:30 in Boise
    // (no Sunday calls: warned), Saturday 23:30 in Los Angeles (blocked).
    let cfg = config(
        dir.path(),
        "rule_set = \"nosun\"\ncountry = \"US\"\n[tenant.enforcement.automated]\nweekend = \"warn\"",
        "[rule_set.nosun]\nbase = \"us\"\nhours = { mon = [\"08:00-21:00\"], tue = [\"08:00-21:00\"], wed = [\"08:00-21:00\"], thu = [\"08:00-21:00\"], fri = [\"08:00-21:00\"], sat = [\"08:00-21:00\"] }",
    );
    let (code, d) = check(
        &cfg,
        &[
            "--from",
            "+12025550100",
            "--to",
            "+12083001234",
            "--at",
            "2026-11-22T07:30:00Z",
        ],
    );
    assert_eq!(code, 2, "{d}");
    assert_eq!(d["reason"], "outside_hours");
    // Monday 08:00 in Los Angeles (09:00 in Boise): 2026-11-23T16:00Z.
    assert_eq!(d["retry_after"], 117_000);
}

#[test]
fn retry_after_is_found_three_weeks_ahead() {
    let dir = tempfile::tempdir().unwrap();
    // Fridays only; 1 and 8 May 2026 are Fridays and holidays.
    let cfg = config(
        dir.path(),
        "schedule = { fri = [\"10:00-13:00\", \"14:00-20:00\"] }",
        "",
    );
    let (code, d) = check(
        &cfg,
        &[
            "--from",
            "+33162000000",
            "--to",
            "+33142000000",
            "--at",
            "2026-04-24T20:00:00+02:00",
        ],
    );
    assert_eq!(code, 2, "{d}");
    assert_eq!(d["reason"], "outside_hours");
    assert_eq!(d["retry_after"], 1_778_400, "{d}");
}

#[test]
fn invalid_nanp_numbers_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "rule_set = \"us\"\ncountry = \"US\"", "");
    // Sunday 15:00 in New York: inside the federal window everywhere.
    let at = "2026-11-22T20:00:00Z";
    for callee in ["+11235550123", "+19115550123", "+12121230123"] {
        let (code, d) = check(
            &cfg,
            &["--from", "+12025550100", "--to", callee, "--at", at],
        );
        assert_eq!(code, 2, "{callee}: {d}");
        assert_eq!(d["status"], 484, "{callee}");
        assert_eq!(d["reason"], "invalid_callee", "{callee}");
    }
    let (code, d) = check(
        &cfg,
        &["--from", "+11115550100", "--to", "+12125550123", "--at", at],
    );
    assert_eq!(code, 2, "{d}");
    assert_eq!(d["status"], 403);
    assert_eq!(d["reason"], "caller_id_category");
    let (code, d) = check(
        &cfg,
        &["--from", "+12025550100", "--to", "+12125550123", "--at", at],
    );
    assert_eq!((code, &d["decision"]), (0, &serde_json::json!("allow")));
}

#[test]
fn a_bom_does_not_hide_the_first_number() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("dnc.csv"),
        b"\xEF\xBB\xBF+33142000011\r\n\"+33142000012\"\r\n  0142000013 ,\r\n",
    )
    .unwrap();
    let cfg = config(
        dir.path(),
        "dnc_lists = [\"l\"]",
        "[[dnc_list]]\nname = \"l\"\nfile = \"dnc.csv\"",
    );
    for callee in ["+33142000011", "+33142000012", "+33142000013"] {
        let (code, d) = check(
            &cfg,
            &[
                "--from",
                "+33162000000",
                "--to",
                callee,
                "--at",
                "2026-11-17T11:00:00+01:00",
            ],
        );
        assert_eq!(
            (code, &d["reason"]),
            (2, &serde_json::json!("dnc")),
            "{callee}"
        );
    }
    // A UTF-16 file is an error that says so, not an empty list.
    let utf16: Vec<u8> = [0xFF, 0xFE]
        .into_iter()
        .chain(
            "+33142000011\r\n"
                .encode_utf16()
                .flat_map(|u| u.to_le_bytes()),
        )
        .collect();
    std::fs::write(dir.path().join("dnc.csv"), utf16).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_callguard"))
        .args(["config", "check", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("UTF-16"), "{err}");
}

#[test]
fn configs_that_refuse_every_call_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for (tenant, top, expect) in [
        (
            "schedule = { quiet_hours = \"00:00-00:00\" }",
            "",
            "quiet_hours",
        ),
        (
            "schedule = { quiet_hours = \"00:00-24:00\" }",
            "",
            "quiet_hours",
        ),
        // Saturdays only, under a rule set closed on Saturdays.
        (
            "schedule = { sat = [\"10:00-12:00\"] }",
            "",
            "never overlap",
        ),
        (
            "rule_set = \"x\"",
            "\n\n[rule_set.x]\nbase = \"fr\"\nhours = { quiet_hours = \"08:00-08:00\" }",
            "line 7",
        ),
    ] {
        let cfg = config(dir.path(), tenant, top);
        let out = Command::new(env!("CARGO_BIN_EXE_callguard"))
            .args(["config", "check", "--config"])
            .arg(&cfg)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{tenant}: {err}");
        assert!(err.contains(expect), "{tenant}: {err}");
        assert!(!err.contains("line 0"), "{err}");
    }
}

/// Runs callguard with `args`: (exit code, stderr).
fn run(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_callguard"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn usage_errors_exit_64_never_the_rejected_status() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "", "");
    let cfg = cfg.to_str().unwrap();
    let base = ["check", "--tenant", "t", "--from", "+33162000000"];
    // A bad --mode, a missing argument, a bad --log-format: 64, with the
    // values that would have been accepted.
    let (code, err) = run(&[&base[..], &["--to", "+33142000000", "--mode", "robot"]].concat());
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("predictive"), "{err}");
    let (code, err) = run(&base);
    assert_eq!(code, 64, "{err}");
    let (code, err) = run(&["--log-format", "xml", "config", "check", "--config", cfg]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("json"), "{err}");
    // Every mode the X-Dial-Mode header takes is taken here too: a
    // predictive call presenting a geographic number at 11:00 in Paris.
    let (code, d) = check(
        Path::new(cfg),
        &[
            "--from",
            "+33162000000",
            "--to",
            "+33142000000",
            "--at",
            "2026-11-17T11:00:00+01:00",
            "--mode",
            "predictive",
        ],
    );
    assert_eq!((code, d["decision"].as_str()), (0, Some("allow")), "{d}");
    assert_eq!(d["mode"], "automated");
}

#[test]
fn config_check_reads_the_default_config_and_says_each_error_once() {
    // From the repository root, as the README runs it.
    let (code, err) = run(&["config", "check"]);
    assert_eq!(code, 0, "{err}");

    let (code, err) = run(&["config", "check", "--config", "/nonexistent/cg.toml"]);
    assert_eq!(code, 1);
    assert_eq!(err.matches("No such file").count(), 1, "{err}");

    let dir = tempfile::tempdir().unwrap();
    let missing_list = config(
        dir.path(),
        "dnc_lists = [\"d\"]",
        "[[dnc_list]]\nname = \"d\"\nfile = \"absent.txt\"\n",
    );
    let (code, err) = run(&[
        "config",
        "check",
        "--config",
        missing_list.to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert_eq!(err.matches("No such file").count(), 1, "{err}");
    assert!(err.contains("dnc_list[0].file"), "{err}");
}

#[test]
fn tenant_sources_take_single_addresses_and_explain_bad_networks() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cg.toml");
    let write = |sources: &str| {
        std::fs::write(
            &path,
            format!("[sip]\nlisten = [\"udp:127.0.0.1:5060\"]\n[[tenant]]\nid = \"t\"\nsources = [{sources}]\n"),
        )
        .unwrap();
    };
    write("\"192.0.2.10\", \"2001:db8::1\"");
    let (code, err) = run(&["config", "check", "--config", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    write("\"127.0.0.0/33\"");
    let (code, err) = run(&["config", "check", "--config", path.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("`127.0.0.0/33` is not a network"), "{err}");
    assert!(err.contains("line 5"), "{err}");
}

/// The man pages and completions the package ships come from the CLI
/// itself: every subcommand is in them.
#[test]
fn man_pages_and_completions_name_every_subcommand() {
    let out = |args: &[&str]| {
        let o = Command::new(env!("CARGO_BIN_EXE_callguard"))
            .args(args)
            .output()
            .unwrap();
        assert!(o.status.success(), "{args:?}");
        String::from_utf8(o.stdout).unwrap()
    };
    let page = out(&["man"]);
    assert!(
        page.starts_with(".ie") || page.contains(".TH callguard"),
        "{page}"
    );
    let bash = out(&["completions", "bash"]);
    for sub in ["serve", "check", "audit", "dnc", "rules", "config"] {
        assert!(page.contains(sub), "man page lacks {sub}");
        assert!(bash.contains(sub), "bash completion lacks {sub}");
    }
    assert!(bash.contains("--number"), "audit search's options");
    let dir = tempfile::tempdir().unwrap();
    out(&["man", "--out-dir", dir.path().to_str().unwrap()]);
    let verify = std::fs::read_to_string(dir.path().join("callguard-audit-verify.1")).unwrap();
    assert!(verify.contains("hash chain"), "{verify}");
    let (code, err) = run(&["completions", "tcsh"]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("bash"), "{err}");
}

/// Nebraska's holiday hours through the binary: an automated call at 10:00
/// on Thanksgiving waits for 13:00, a manual one goes out.
#[test]
fn a_nebraska_holiday_morning_waits_for_the_afternoon() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "country = \"US\"\nrule_sets = [\"us\"]", "");
    let at = ["--at", "2026-11-26T10:00:00-06:00"];
    let call = |mode: &str| {
        let mut args = vec![
            "--mode",
            mode,
            "--from",
            "+12125550100",
            "--to",
            "+14025550123",
        ];
        args.extend(at);
        check(&cfg, &args)
    };
    let (code, d) = call("automated");
    assert_eq!(code, 2, "{d}");
    assert_eq!(d["reason"], "outside_hours", "{d}");
    assert_eq!(d["status"], 480, "{d}");
    assert_eq!(d["retry_after"], 3 * 3600, "{d}");
    assert_eq!(d["jurisdiction"], "US-NE", "{d}");
    let why = d["explanation"].as_str().unwrap();
    assert!(
        why.contains("on public holidays (Thanksgiving Day)"),
        "{why}"
    );
    let (code, d) = call("manual");
    assert_eq!(
        (code, &d["decision"]),
        (0, &serde_json::json!("allow")),
        "{d}"
    );
}
