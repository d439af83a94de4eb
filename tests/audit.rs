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
    // A chain start, then the two decisions.
    assert_eq!(lines.len(), 3, "{text}");
    assert_eq!(lines[0]["kind"], "chain");
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

/// A compliance officer's view through a real process: an answered call's
/// outcome and duration, a busy one, an admin change with its token id;
/// every line chained; `audit verify` finds an edit; `audit search` joins
/// decisions with outcomes (JSON and CSV); the chain goes on across a
/// restart.
#[test]
fn outcomes_admin_changes_chain_verify_and_search() {
    let uas = Ua::bind("127.0.0.1:0");
    let (mut p, _lists, _) = proxy_with_dnc_file(&uas, "+33612345678\n");
    // With an admin token, so that its id is recorded.
    p.restart_with_admin_token();
    let uac = Ua::bind("127.0.0.1:0");

    // Answered, then hung up by the dialer.
    send_invite(&p, &uac, "+33142000000", "o-answered");
    let (fwd, _) = uas.recv(T).expect("INVITE at the carrier");
    uas.send(p.addr(), &reply(&fwd, 200, "OK", "c1", &uas.hostport()));
    let ok = loop {
        let m = uac.recv_final_or_request(T);
        if m.status() == Some(200) {
            break m;
        }
    };
    uac.send(
        p.addr(),
        &caller_dialog_request(&ok, "ACK", 1, &uac.hostport(), "UDP", "z9hG4bKoack"),
    );
    assert!(uas.recv(T).is_some(), "ACK relayed");
    std::thread::sleep(Duration::from_millis(30));
    uac.send(
        p.addr(),
        &caller_dialog_request(&ok, "BYE", 2, &uac.hostport(), "UDP", "z9hG4bKobye"),
    );
    let (bye, _) = uas.recv(T).expect("BYE relayed");
    uas.send(p.addr(), &reply(&bye, 200, "OK", "", ""));
    assert_eq!(uac.recv_final_or_request(T).cseq(), Some((2, &b"BYE"[..])));

    // Busy at the carrier.
    send_invite(&p, &uac, "+33142000001", "o-busy");
    let (fwd, _) = uas.recv(T).expect("INVITE at the carrier");
    uas.send(
        p.addr(),
        &reply(&fwd, 486, "Busy Here", "c2", &uas.hostport()),
    );
    let busy = loop {
        let m = uac.recv_final_or_request(T);
        if m.status() == Some(486) {
            break m;
        }
    };
    assert_eq!(busy.call_id(), Some(&b"o-busy"[..]));
    let _ = uas.recv(Duration::from_millis(300)); // the proxy's ACK of the 486

    // An admin change, with the token the test proxy is given.
    let (status, _) = p.http("PUT", "/v1/dnc/d/+33142000000", "");
    assert_eq!(
        status, 401,
        "refused for its token: not a change, not recorded"
    );
    let (status, _) = p.http_with(
        "PUT",
        "/v1/dnc/d/+33142000000",
        "",
        "Authorization: Bearer s3cret\r\n",
    );
    assert_eq!(status, 200);

    let dir = p.dir.path().join("data/audit");
    let file = dir.join("audit-2026-11-17.jsonl");
    let lines = wait_lines(&file, 7);
    let kinds: Vec<&str> = lines.iter().map(|l| l["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        ["chain", "decision", "outcome", "end", "decision", "outcome", "admin"],
        "{lines:#?}"
    );
    assert_eq!(lines[1]["jurisdiction"], "FR");
    assert!(lines[1]["rules_version"].is_string());
    assert_eq!(
        (lines[2]["status"].as_u64(), lines[2]["outcome"].as_str()),
        (Some(200), Some("answered"))
    );
    assert_eq!(lines[3]["by"], "dialer");
    assert_eq!(
        (lines[5]["status"].as_u64(), lines[5]["outcome"].as_str()),
        (Some(486), Some("busy"))
    );
    assert_eq!(lines[6]["method"], "PUT");
    assert_eq!(lines[6]["path"], "/v1/dnc/d/+33142000000");
    assert_eq!(lines[6]["status"], 200);
    assert!(
        lines[6]["token"]
            .as_str()
            .is_some_and(|t| t.starts_with("sha256:") && t.len() == 23),
        "{}",
        lines[6]
    );
    for l in &lines {
        assert_eq!(l["hash"].as_str().map(str::len), Some(64), "{l}");
    }

    let d = dir.to_str().unwrap();
    let (code, out, err) = cli(&["audit", "verify", d]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("intact, 7 lines"), "{out}");

    let (code, out, err) = cli(&[
        "audit",
        "search",
        "--dir",
        d,
        "--number",
        "+33 1 42 00 00 00",
        "--from",
        "2026-11-17",
        "--to",
        "2026-11-17",
    ]);
    assert_eq!(code, Some(0), "{err}");
    let found: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(found.len(), 1, "{out}");
    assert_eq!(found[0]["call_id"], "o-answered");
    assert_eq!(found[0]["outcome"], "answered");
    assert_eq!(found[0]["ended_by"], "dialer");
    let duration = found[0]["duration_s"].as_f64().unwrap();
    assert!((0.0..5.0).contains(&duration), "{duration}");
    let (_, out, _) = cli(&[
        "audit",
        "search",
        "--dir",
        d,
        "--number",
        "+33162000001",
        "--csv",
    ]);
    let rows: Vec<&str> = out.lines().collect();
    assert_eq!(rows.len(), 3, "{out}");
    assert!(rows[0].starts_with("time,call_id,tenant,caller,callee"));
    assert!(
        rows[2].contains(",o-busy,") && rows[2].contains(",busy,486,"),
        "{}",
        rows[2]
    );
    let (code, _, err) = cli(&["audit", "search", "--dir", d, "--number", "nope"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("E.164"), "{err}");

    // The chain goes on across a restart: no new chain start in the file.
    p.kill9_and_restart();
    send_invite(&p, &uac, "+33612345678", "o-after");
    assert_eq!(uac.recv_final_or_request(T).status(), Some(603));
    let lines = wait_lines(&file, 8);
    assert_eq!(lines[7]["call_id"], "o-after");
    let (code, out, _) = cli(&["audit", "verify", d]);
    assert_eq!(code, Some(0), "{out}");

    // One edited character is found, with its line.
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, text.replacen("\"status\":486", "\"status\":200", 1)).unwrap();
    let (code, out, _) = cli(&["audit", "verify", d]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("line 6: hash mismatch"), "{out}");
}

/// `callguard ARGS`: (exit code, stdout, stderr).
fn cli(args: &[&str]) -> (Option<i32>, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_callguard"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The lines of `file` once it holds `n` (the writer flushes every 100 ms).
fn wait_lines(file: &std::path::Path, n: usize) -> Vec<serde_json::Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        if lines.len() >= n || std::time::Instant::now() > deadline {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A disk that refuses the audit writer's lines (here a file size limit:
/// `EFBIG`, the way a full disk gives `ENOSPC`) loses none of them: the
/// writer tries again until the disk takes them, and the file, once
/// written, is whole and verifies intact. Meanwhile no call is placed
/// whose line could not be written: from the first refused write, new
/// calls are answered `503 audit_unavailable`, and the trail's gap line
/// counts them. The process lives on, with its log (a file past the limit
/// too) failing on every line.
#[test]
fn lines_the_disk_refused_are_written_once_it_takes_them() {
    let uas = Ua::bind("127.0.0.1:0");
    let (p, _lists, _) = proxy_with_dnc_file(&uas, "+33612345678\n");
    let uac = Ua::bind("127.0.0.1:0");
    let file = p.dir.path().join("data/audit/audit-2026-11-17.jsonl");
    assert_eq!(call(&p, &uac, "0612345678", "f-0").status(), Some(603));
    assert_eq!(wait_lines(&file, 2).len(), 2, "chain start and f-0");

    // Room for the start of the next line only (a DNC decision is ~700
    // bytes): a short write, then EFBIG.
    let size = std::fs::metadata(&file).unwrap().len();
    let prlimit = |fsize: &str| {
        let ok = std::process::Command::new("prlimit")
            // The soft limit only (`N:`): raising a hard limit again takes
            // CAP_SYS_RESOURCE.
            .args(["--pid", &p.pid().to_string(), &format!("--fsize={fsize}:")])
            .status()
            .unwrap()
            .success();
        assert!(ok, "prlimit --fsize={fsize}");
    };
    prlimit(&(size + 100).to_string());
    // Decided before the writer meets the limit: its line is the one the
    // disk refuses.
    assert_eq!(call(&p, &uac, "0612345678", "f-1").status(), Some(603));
    // The writer reports the refusal (a scrape that fails reads as no
    // line, not as 0).
    let up_is = |v: &str| {
        let scrape = p.http_get("/metrics").unwrap_or_default();
        scrape
            .lines()
            .any(|l| l == format!("callguard_audit_up {v}"))
    };
    let wait_up = |v: &str| {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !up_is(v) {
            assert!(
                std::time::Instant::now() < deadline,
                "callguard_audit_up never {v}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait_up("0");
    assert!(p.metric("callguard_audit_write_errors_total") >= 1.0);
    // An admin change that could not be recorded is not applied either.
    let (code, body) = p.http("PUT", "/v1/dnc/d/+33611111111", "");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("not applied"), "{body}");
    let (code, body) = p.http("GET", "/v1/dnc/d/+33611111111", "");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"listed\":false"), "{body}");
    // Refused at once, not once 65,536 records have queued.
    for i in 2..=4 {
        let r = call(&p, &uac, "0612345678", &format!("f-{i}"));
        assert_eq!(r.status(), Some(503), "f-{i}");
        assert_eq!(reason(&r), "audit_unavailable", "f-{i}");
        assert!(r.header_by_name("Retry-After").is_some(), "f-{i}");
    }
    assert_eq!(p.metric("callguard_audit_overflow_total"), 3.0);
    let stuck = std::fs::metadata(&file).unwrap().len();
    assert!(
        stuck > size && stuck <= size + 100,
        "{size} → {stuck}: the limit held"
    );

    prlimit("unlimited");
    let lines = wait_lines(&file, 4);
    let ids: Vec<&str> = lines.iter().filter_map(|l| l["call_id"].as_str()).collect();
    assert_eq!(ids, ["f-0", "f-1"]);
    let gap = lines
        .iter()
        .find(|l| l["kind"] == "gap")
        .expect("a gap line for the refused calls");
    assert_eq!(gap["calls_refused"], 3, "{gap}");
    assert_eq!(gap["decisions_lost"], 0, "{gap}");
    let (code, text, _) = cli(&["audit", "verify", file.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("intact, 4 lines"), "{text}");

    // Deciding as before.
    wait_up("1");
    assert_eq!(call(&p, &uac, "0612345678", "f-5").status(), Some(603));
    assert_eq!(wait_lines(&file, 5)[4]["call_id"], "f-5");
}

/// A real disk whose writeback fails: an ext4 file system on a loop device
/// whose backing file lives on a tmpfs with no room left (a
/// thin-provisioned volume out of space), so the kernel cannot write the
/// audit's new blocks. Measured here: the `fdatasync` covering the first
/// lost block succeeds, the next one fails (`ENOSPC` from the device), and
/// Linux marks the lost pages clean: a writer that trusts the first, or
/// tries the second again once the device has room, is told its lines are
/// on disk, and after a remount a block of them reads as zeros. Here, from
/// the first failed check, new calls are answered `503
/// audit_unavailable`; once the device has room the writer writes the
/// lines again; and after the file system is unmounted and mounted again
/// (what is read is what is on disk), every call answered has its line,
/// once, and the directory verifies intact.
///
/// Needs root with the right to mount (loop devices, tmpfs), as `.ci/run`
/// has; without it the test says so and checks nothing.
#[test]
fn a_failed_fsync_on_a_real_disk_loses_no_decision() {
    let base = tempfile::tempdir().unwrap();
    let (backing, fs) = (base.path().join("backing"), base.path().join("fs"));
    std::fs::create_dir_all(&backing).unwrap();
    std::fs::create_dir_all(&fs).unwrap();
    let b = backing.to_str().unwrap();
    let f = fs.to_str().unwrap();
    let Some(mut mounts) = mount_tmpfs(&backing, "64m") else {
        return;
    };
    let image = backing.join("disk.img");
    let img = image.to_str().unwrap();
    run("truncate", &["-s", "32m", img]).unwrap();
    // No journal: mkfs leaves its blocks unallocated on the tmpfs, and a
    // journal write refused there aborts the journal and turns the file
    // system read-only for good (callguard then refuses calls until it is
    // repaired: right, but not what this test is about). Without it, the
    // blocks the file system rewrites (the audit file's inode, the block
    // bitmap) have their room already; only the audit's new data needs
    // more.
    run("mkfs.ext4", &["-q", "-F", "-O", "^has_journal", img]).unwrap();
    run("mount", &["-o", "loop", img, f]).unwrap();
    mounts.0.push(fs.clone());
    let audit_dir = fs.join("audit");

    let uas = Ua::bind("127.0.0.1:0");
    let (mut p, _lists, _) = proxy_with_dnc_file_and(
        &uas,
        "+33612345678\n",
        &format!("[audit]\ndir = \"{}\"\n", audit_dir.display()),
    );
    let uac = Ua::bind("127.0.0.1:0");
    let file = audit_dir.join("audit-2026-11-17.jsonl");
    assert_eq!(call(&p, &uac, "0612345678", "s-0").status(), Some(603));
    assert_eq!(wait_lines(&file, 2).len(), 2, "chain start and s-0");

    // No room left for a page more on the device's backing store (what
    // the file system holds written back first).
    run("sync", &["-f", f]).unwrap();
    let used = std::process::Command::new("df")
        .args(["--output=used", "-B1", b])
        .output()
        .unwrap();
    let used: u64 = String::from_utf8_lossy(&used.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .expect("df --output=used");
    let kib = used.div_ceil(4096) * 4;
    run("mount", &["-o", &format!("remount,size={kib}k"), b]).unwrap();

    // Decided and answered while their lines are written; from the fsync
    // that fails, refused.
    let mut decided = vec!["s-0".to_owned()];
    let mut refused = 0;
    for i in 1..=200 {
        let id = format!("s-{i}");
        let r = call(&p, &uac, "0612345678", &id);
        match r.status() {
            Some(603) if refused == 0 => decided.push(id),
            Some(503) => {
                assert_eq!(reason(&r), "audit_unavailable", "{id}");
                refused += 1;
                if refused == 3 {
                    break;
                }
            }
            other => panic!("{id}: {other:?} after {refused} refused"),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(refused, 3, "no call refused: the failed fsync went unseen");
    assert!(decided.len() >= 2, "{decided:?}");
    assert_eq!(p.metric("callguard_audit_up"), 0.0);

    // The device has room again.
    run("mount", &["-o", "remount,size=64m", b]).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while p.metric("callguard_audit_up") != 1.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the writer never recovered: {}",
            p.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let id = "s-after".to_owned();
    assert_eq!(call(&p, &uac, "0612345678", &id).status(), Some(603));
    decided.push(id);
    p.signal("TERM");
    assert!(p.wait_exit(Duration::from_secs(10)).is_some());

    // What the disk holds, not what the page cache still had.
    run("umount", &[f]).unwrap();
    run("mount", &["-o", "loop", img, f]).unwrap();
    let (code, text, _) = cli(&["audit", "verify", audit_dir.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{text}");
    let lines = wait_lines(&file, 0);
    for id in &decided {
        let n = lines.iter().filter(|l| l["call_id"] == id.as_str()).count();
        assert_eq!(n, 1, "{id}: {n} lines in {lines:?}");
    }
    let gap = lines
        .iter()
        .find(|l| l["kind"] == "gap")
        .expect("a gap line");
    assert_eq!(gap["calls_refused"], 3, "{gap}");
}
