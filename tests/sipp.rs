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
    assert!(stdout.contains("21 passed, 0 failed"), "{stdout}");
}
