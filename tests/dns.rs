//! Carriers published as a SIP domain (RFC 3263), against a real DNS
//! server: `dnsmasq` on a loopback port with NAPTR, SRV and A records, and
//! test carriers behind the SRV targets.

mod common;

use common::*;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// A private dnsmasq answering only for `carrier.test`, TTL 1 s.
struct Dns {
    child: Child,
    port: u16,
}

impl Dns {
    /// `srv`: (target host, port, priority, weight) under
    /// `_sip._udp.carrier.test`, every host at 127.0.0.1.
    fn start(port: u16, srv: &[(&str, u16, u16, u16)]) -> Dns {
        let mut cmd = Command::new("dnsmasq");
        cmd.args([
            "--keep-in-foreground",
            "--bind-interfaces",
            "--no-resolv",
            "--no-hosts",
        ])
        .args([
            "--listen-address=127.0.0.1",
            "--pid-file=",
            "--user=root",
            "--local-ttl=1",
        ])
        .arg(format!("--port={port}"))
        .arg("--naptr-record=carrier.test,10,10,S,SIP+D2U,,_sip._udp.carrier.test");
        for (host, p, prio, weight) in srv {
            cmd.arg(format!(
                "--srv-host=_sip._udp.carrier.test,{host}.carrier.test,{p},{prio},{weight}"
            ))
            .arg(format!("--host-record={host}.carrier.test,127.0.0.1"));
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dnsmasq is not installed (Debian package dnsmasq-base; .ci/run installs it)");
        // Up once it holds the port.
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            assert!(Instant::now() < deadline, "dnsmasq did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Dns { child, port }
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn proxy_for_domain(dns: &Dns, health: &str) -> Proxy {
    Proxy::process_with(
        &[],
        &format!(
            "[[carrier]]\nname = \"trunk\"\ndomain = \"carrier.test\"\n\
             [dns]\nservers = [\"127.0.0.1:{}\"]\n{health}",
            dns.port
        ),
        "",
    )
}

#[test]
fn srv_weights_are_honoured_and_a_dead_target_is_skipped() {
    let (a, b) = (TestCarrier::start(), TestCarrier::start());
    let dns = Dns::start(
        free_udp_port(),
        &[("a", a.addr.port(), 0, 3), ("b", b.addr.port(), 0, 1)],
    );
    let p = proxy_for_domain(
        &dns,
        "[health]\noptions_interval_ms = 200\ndown_after = 2\n",
    );
    let uac = Ua::bind("127.0.0.1:0");
    for i in 0..400 {
        let r = call(&p, &uac, &format!("+331420{i:05}"), &format!("d-{i}"));
        assert_eq!(r.status(), Some(486));
    }
    let (na, nb) = (
        a.invites.load(Ordering::Relaxed),
        b.invites.load(Ordering::Relaxed),
    );
    // SRV weights 3:1 of 400 (binomial sd about 8.7).
    assert_eq!(na + nb, 400);
    assert!((260..=340).contains(&na), "a {na}, b {nb}");

    // Target a stops answering: out of rotation, every call reaches b
    // without waiting on a.
    a.alive.store(false, Ordering::Relaxed);
    // Until its health check takes it out, a call sent to a fails over to
    // b after `carrier_timeout_ms`: slower, never failed.
    for i in 0..6 {
        let r = call(&p, &uac, &format!("+331423{i:05}"), &format!("d-dying-{i}"));
        assert_eq!(r.status(), Some(486), "call {i} while a was going down");
    }
    let a_up = format!(
        "callguard_carrier_up{{carrier=\"trunk/127.0.0.1:{}\"}}",
        a.addr.port()
    );
    wait_for(&p, &a_up, 0.0, Duration::from_secs(5));
    let before = b.invites.load(Ordering::Relaxed);
    let started = Instant::now();
    for i in 0..20 {
        let r = call(&p, &uac, &format!("+331421{i:05}"), &format!("d-down-{i}"));
        assert_eq!(r.status(), Some(486));
    }
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(b.invites.load(Ordering::Relaxed) - before, 20);

    // Back: its share returns.
    a.alive.store(true, Ordering::Relaxed);
    wait_for(&p, &a_up, 1.0, Duration::from_secs(5));
    let before = a.invites.load(Ordering::Relaxed);
    for i in 0..40 {
        call(&p, &uac, &format!("+331422{i:05}"), &format!("d-back-{i}"));
    }
    assert!(a.invites.load(Ordering::Relaxed) - before >= 15);
}

#[test]
fn a_dns_outage_keeps_the_last_answer_and_a_change_is_followed() {
    let (a, b) = (TestCarrier::start(), TestCarrier::start());
    let port = free_udp_port();
    let mut dns = Dns::start(port, &[("a", a.addr.port(), 0, 1)]);
    let p = proxy_for_domain(&dns, "");
    let uac = Ua::bind("127.0.0.1:0");
    assert_eq!(call(&p, &uac, "+33142000001", "o-1").status(), Some(486));
    assert_eq!(a.invites.load(Ordering::Relaxed), 1);

    // The DNS server goes away for longer than the answer's life: calls
    // keep going to the last answer.
    dns.stop();
    let deadline = Instant::now() + Duration::from_secs(15);
    while !p.log().contains("the last answer stays") {
        assert!(Instant::now() < deadline, "no failed refresh logged");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(call(&p, &uac, "+33142000002", "o-2").status(), Some(486));
    assert_eq!(a.invites.load(Ordering::Relaxed), 2);

    // It returns with the trunk moved to b: followed at the next refresh.
    let _dns = Dns::start(port, &[("b", b.addr.port(), 0, 1)]);
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut i = 0;
    while b.invites.load(Ordering::Relaxed) == 0 {
        assert!(Instant::now() < deadline, "the new answer was never used");
        i += 1;
        assert_eq!(
            call(&p, &uac, &format!("+331420300{i:02}"), &format!("o-n-{i}")).status(),
            Some(486)
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}
