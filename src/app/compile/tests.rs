//! Compiling configs: references, schedules and rule sets that do not
//! compile, lists that cannot be read; every error names key and line.

use super::*;

fn parse_and_compile(text: &str, dir: &Path) -> Result<Tenants, ConfigError> {
    let cfg = Config::parse(text, &dir.join("c.toml"))?;
    tenants(&cfg, dir, None).map(|(t, _)| t)
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
        let e = parse_and_compile(&format!("{base}{extra}\n"), dir.path())
            .unwrap_err()
            .to_string();
        assert!(e.contains(needle), "{extra}: {e}");
    }
    let missing =
        format!("[[dnc_list]]\nname = \"x\"\nfile = \"missing.txt\"\n{base}dnc_lists = [\"x\"]\n");
    let cfg = Config::parse(&missing, &dir.path().join("c.toml")).unwrap();
    let e = tenants(&cfg, dir.path(), None).unwrap_err().to_string();
    assert!(e.contains("missing.txt"), "{e}");
    // The error names the list's key and its line, once.
    assert!(e.contains("line 3: `dnc_list[0].file`"), "{e}");
    assert_eq!(e.matches("missing.txt").count(), 1, "{e}");
}

#[test]
fn custom_rule_sets_that_do_not_compile_are_refused() {
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
        let e = parse_and_compile(&text, dir.path())
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains(why) && e.contains("rule_set.x"), "{e}");
    }
}

#[test]
fn a_custom_rule_set_compiles_to_its_cap_and_cooloff() {
    let text = "[sip]\nlisten = [\"udp:127.0.0.1:5060\"]\n[rule_set.strict]\nbase = \"fr\"\nrefusal_cooloff_days = 0\nfrequency_cap = { attempts = 3, window_hours = 24 }\n[[tenant]]\nid = \"a\"\nsources = [\"10.0.0.0/8\"]\nrule_set = \"strict\"\n";
    let dir = tempfile::tempdir().unwrap();
    let t = parse_and_compile(text, dir.path()).unwrap();
    let a = t.by_id("a").unwrap();
    let fr = &a.rules.primary;
    let today = chrono::NaiveDate::from_ymd_opt(2026, 11, 24).unwrap();
    assert!(fr.cooloff(today).is_none());
    assert_eq!(
        fr.counted_cap(crate::policy::Mode::Automated, today),
        Some(crate::policy::Cap {
            attempts: 3,
            window: chrono::Duration::hours(24)
        })
    );
}
