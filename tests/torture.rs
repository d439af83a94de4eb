//! The project's torture corpora, one message per case and its expected
//! outcome in `expected.txt`, sent through a real `callguard` process over
//! UDP: RFC 4475's cases (`tests/torture/`, over 127.0.0.1) and RFC 5118's
//! IPv6 cases (`tests/torture-ipv6/`, over ::1).

mod common;

use common::*;
use std::time::{Duration, Instant};

#[test]
fn every_torture_message_gets_the_rfc_outcome() {
    let uas = Ua::bind("127.0.0.1:0");
    let p = Proxy::start(&[format!("udp:{}", uas.addr())]);
    let uac = Ua::bind("127.0.0.1:0");
    assert_eq!(run_corpus("torture", p.addr(), &uac, &uas), 49);
    // The process is still there and still routes calls.
    send_invite(&p, &uac, "+33142000099", "after-torture");
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        assert!(Instant::now() < deadline, "no call after the torture run");
        if let Some((m, _)) = uas.recv(Duration::from_millis(100)) {
            if m.call_id() == Some(&b"after-torture"[..]) {
                break;
            }
        }
    }
}

/// The IPv6 cases reach the proxy on its ::1 listener from a sender on ::1;
/// the carrier stays on 127.0.0.1, so a forwarded call also crosses families.
#[test]
fn every_ipv6_torture_message_gets_the_rfc_outcome() {
    let uas = Ua::bind("127.0.0.1:0");
    let p = Proxy::start(&[format!("udp:{}", uas.addr())]);
    let uac = Ua::bind("[::1]:0");
    assert_eq!(run_corpus("torture-ipv6", p.addr6(), &uac, &uas), 11);
}

/// Sends every case of `tests/DIR/` to `proxy` from `uac`; panics with the
/// cases whose outcome differs, returns how many ran.
fn run_corpus(dir: &str, proxy: std::net::SocketAddr, uac: &Ua, uas: &Ua) -> usize {
    let dir = format!("{}/tests/{dir}", env!("CARGO_MANIFEST_DIR"));
    let expected = std::fs::read_to_string(format!("{dir}/expected.txt")).unwrap();
    let mut checked = 0;
    let mut wrong = Vec::new();
    for line in expected.lines() {
        let line = line.split('#').next().unwrap().trim();
        let Some((name, outcome)) = line.split_once(' ') else {
            continue;
        };
        let raw = std::fs::read(format!("{dir}/{name}.sip")).unwrap();
        let text = String::from_utf8(raw)
            .unwrap()
            .replace("$P", &proxy.to_string())
            .replace("$U", &uac.hostport());
        uac.send(proxy, &text);
        let got = outcome_of(name, uac, uas, outcome);
        if got != outcome {
            wrong.push(format!("{name}: expected {outcome}, got {got}"));
        }
        checked += 1;
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    checked
}

/// What happened to case `name`: the status of its first final answer,
/// `forward` when it reached the carrier, `drop` when nothing came.
fn outcome_of(name: &str, uac: &Ua, uas: &Ua, expected: &str) -> String {
    let mine = |m: &callguard::sip::Message| {
        let call_id = String::from_utf8_lossy(m.call_id().unwrap_or_default()).into_owned();
        let branch = m
            .top_via()
            .and_then(|v| v.branch.map(|b| String::from_utf8_lossy(b).into_owned()))
            .unwrap_or_default();
        call_id.starts_with(&format!("{name}.")) || branch.contains(name)
    };
    let window = if expected == "drop" {
        Duration::from_millis(300)
    } else {
        Duration::from_secs(2)
    };
    let deadline = Instant::now() + window;
    while Instant::now() < deadline {
        if let Some((m, _)) = uas.recv(Duration::from_millis(20)) {
            if mine(&m) && m.method() == Some(&b"INVITE"[..]) {
                return "forward".into();
            }
        }
        if let Some((m, _)) = uac.recv(Duration::from_millis(20)) {
            if mine(&m) && m.status().is_some_and(|s| s >= 200) {
                return m.status().unwrap().to_string();
            }
        }
    }
    "drop".into()
}
