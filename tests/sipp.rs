//! Runs the SIPp functional checks (`sipp-scenarios/run.sh`) against the
//! binary built for this test run. SIPp is Debian's `sip-tester`; `.ci/run`
//! installs it.

use std::process::Command;

#[test]
fn sipp_functional_scenarios_pass() {
    assert!(
        Command::new("sipp").arg("-v").output().is_ok(),
        "sipp is not installed: apt-get install -y sip-tester (done by .ci/run)"
    );
    let out = Command::new("bash")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/sipp-scenarios/run.sh"
        ))
        .env("CALLGUARD_BIN", env!("CARGO_BIN_EXE_callguard"))
        .env("SIPP_BASE_PORT", "25060")
        .output()
        .expect("run.sh starts");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "SIPp checks failed:\n{stdout}");
    assert!(stdout.contains("27 passed, 0 failed"), "{stdout}");
}

/// Three reloads (one refused) while SIPp places 200 calls/s for 30 s
/// (`sipp-scenarios/reload-under-load.sh`): no call may fail.
#[test]
fn reload_under_sipp_load_fails_no_call() {
    let out = Command::new("bash")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/sipp-scenarios/reload-under-load.sh"
        ))
        .env("CALLGUARD_BIN", env!("CARGO_BIN_EXE_callguard"))
        // Clear of run.sh's ports (25060..25100, 29060..29074).
        .env("SIPP_BASE_PORT", "26060")
        .output()
        .expect("reload-under-load.sh starts");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "reload under load failed:\n{stdout}");
    assert!(
        stdout.contains("PASS reload under load: 6000 calls"),
        "{stdout}"
    );
}
