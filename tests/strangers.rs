//! Strangers (sources of no tenant and no carrier) through a real process:
//! a flood is answered within its budget and dropped past it while the
//! tenant's calls go through, is written to the audit trail as one line
//! per source instead of one per message, and a stranger's TCP
//! connections are capped and idle out.

mod common;

use common::*;
use std::io::Read;
use std::time::{Duration, Instant};

#[test]
fn a_flood_is_answered_within_budget_and_accounted_per_source() {
    let carrier = TestCarrier::start();
    let p = Proxy::process_with(
        &[format!("udp:{}", carrier.addr)],
        "[audit]\nstranger_interval_s = 1\n",
        "",
    );
    let stranger = Ua::bind("127.0.0.2:0");
    let target = p.addr();
    let from = stranger.hostport();
    let flood = std::thread::spawn({
        let sock = stranger.sock.try_clone().unwrap();
        move || {
            let started = Instant::now();
            let mut sent = 0;
            while started.elapsed() < Duration::from_millis(1500) {
                let id = format!("flood-{sent}");
                let text = invite(
                    &from,
                    "UDP",
                    target,
                    "+33142000000",
                    &id,
                    &format!("z9hG4bK{id}"),
                );
                let _ = sock.send_to(text.as_bytes(), target);
                sent += 1;
            }
            sent
        }
    });
    // The tenant's calls during the flood (each to its own callee, under
    // the frequency cap): every one forwarded.
    let uac = Ua::bind("127.0.0.1:0");
    for i in 0..20 {
        let r = call(
            &p,
            &uac,
            &format!("+3314200{:04}", 100 + i),
            &format!("t-{i}"),
        );
        assert_eq!(r.status(), Some(486), "tenant call {i}: {r:?}");
    }
    let sent = flood.join().unwrap();
    let mut answered = 0;
    while let Some((m, _)) = stranger.recv(Duration::from_millis(300)) {
        assert_eq!(m.status(), Some(403));
        answered += 1;
    }
    // The burst (40) and 20 a second for about two seconds, not thousands.
    assert!(sent > 5_000, "the flood sent only {sent}");
    assert!(
        (40..=120).contains(&answered),
        "{answered} answers to {sent}"
    );
    let dropped = p.metric("callguard_stranger_messages_total{outcome=\"dropped\"}");
    assert!(dropped > 1_000.0, "{dropped}");
    assert_eq!(
        p.metric("callguard_stranger_messages_total{outcome=\"answered\"}"),
        answered as f64
    );
    assert_eq!(
        carrier.invites.load(std::sync::atomic::Ordering::Relaxed),
        20
    );

    // One line for the source, none per message.
    let file = p.dir.path().join("data/audit/audit-2026-11-17.jsonl");
    let deadline = Instant::now() + Duration::from_secs(5);
    let lines = loop {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let seen: u64 = lines
            .iter()
            .filter(|l| l["kind"] == "strangers")
            .map(|l| l["answered"].as_u64().unwrap() + l["dropped"].as_u64().unwrap())
            .sum();
        if seen as f64 >= dropped + answered as f64 || Instant::now() > deadline {
            break lines;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let accounts: Vec<&serde_json::Value> =
        lines.iter().filter(|l| l["kind"] == "strangers").collect();
    assert!(!accounts.is_empty() && accounts.len() <= 4, "{accounts:?}");
    for a in &accounts {
        assert_eq!(a["source"], "127.0.0.2");
        assert_eq!(
            (a["status"].as_u64(), a["reason"].as_str()),
            (Some(403), Some("source_not_authorized"))
        );
        assert!(a["since"].as_str().unwrap() < a["time"].as_str().unwrap());
    }
    let total_answered: u64 = accounts
        .iter()
        .map(|a| a["answered"].as_u64().unwrap())
        .sum();
    assert_eq!(total_answered, answered);
    assert!(!lines.iter().any(|l| l["call_id"]
        .as_str()
        .is_some_and(|c| c.starts_with("flood-"))));
    assert_eq!(
        lines
            .iter()
            .filter(|l| l["tenant"] == "test" && l["kind"] == "decision")
            .count(),
        20,
        "one decision line per tenant call"
    );
}

#[test]
fn a_strangers_connections_are_capped_and_idle_out() {
    let carrier = TestCarrier::start();
    let p = Proxy::process_full(
        &[format!("udp:{}", carrier.addr)],
        "stranger_connections_per_source = 4\nstranger_idle_timeout_s = 1\n",
        "",
        "",
    );
    let connect_from = |ip: &str| {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        s.bind(
            &format!("{ip}:0")
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
        )
        .unwrap();
        s.connect(&p.addr().into()).unwrap();
        let s: std::net::TcpStream = s.into();
        // Long enough for a loaded machine to accept and close it.
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        s
    };
    // Closed by the proxy: a read sees the end (or a reset), not a timeout.
    let closed = |s: &mut std::net::TcpStream| match s.read(&mut [0u8; 16]) {
        Ok(0) => true,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
        Ok(_) => false,
    };
    let mut kept: Vec<std::net::TcpStream> = (0..4).map(|_| connect_from("127.0.0.2")).collect();
    wait_for(
        &p,
        "callguard_stranger_connections",
        4.0,
        Duration::from_secs(3),
    );
    for _ in 0..6 {
        let mut s = connect_from("127.0.0.2");
        assert!(
            closed(&mut s),
            "a fifth connection from one stranger is closed"
        );
    }
    assert_eq!(
        p.metric("callguard_stranger_connections_refused_total"),
        6.0
    );
    // Another stranger address has its own cap; a tenant none.
    let _other = connect_from("127.0.0.3");
    let tenant: Vec<std::net::TcpStream> = (0..8).map(|_| connect_from("127.0.0.1")).collect();
    wait_for(
        &p,
        "callguard_stranger_connections",
        5.0,
        Duration::from_secs(3),
    );
    // A second later the strangers' idle connections are gone; the
    // tenant's stay open.
    wait_for(
        &p,
        "callguard_stranger_connections",
        0.0,
        Duration::from_secs(4),
    );
    for s in &mut kept {
        assert!(closed(s), "a stranger's idle connection is closed");
    }
    for mut s in tenant {
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        assert!(!closed(&mut s), "a tenant's idle connection stays open");
    }
}
