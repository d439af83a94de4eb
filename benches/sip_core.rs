//! The proxy core with the real gate, in simulated time: the user-space
//! CPU of one call, without the sockets (issue 16: CPU per call against
//! Kamailio; the end-to-end figure is `benches/compare-kamailio.sh`).
//!
//!   cargo bench --bench sip_core
//!
//! `reject_dnc`: INVITE to a listed callee → 603, its ACK, and the
//! transaction's timers run to its end. `accept`: INVITE → 100 and the
//! INVITE to the carrier, the carrier's 180 and 200 relayed, the dialer's
//! ACK and BYE and the carrier's 200 to the BYE relayed, timers run.
//! `cold/…_l2_cold`, `cold/…_l3_cold`: the reject with a buffer the size
//! of the L2, then of the L3, written before each message: what the
//! running proxy meets on a shared box lies between warm and these. The
//! gate has the fr rule set and a DNC list, the proxy's Prometheus metrics
//! are counted, no state backend and no audit trail (the audit writer runs
//! on its own thread: `benches/audit_trail.rs`).

use bytes::Bytes;
use callguard::app::compile;
use callguard::clock::Clock;
use callguard::config::Config;
use callguard::gate::GateParts;
use callguard::metrics::Metrics;
use callguard::proxy::{Carrier, Core, Peer, Settings};
use callguard::sip::Message;
use chrono::TimeZone;
use criterion::{criterion_group, criterion_main, Criterion, SamplingMode};
use std::sync::Arc;
use std::time::{Duration, Instant};

const DIALER: &str = "10.0.0.5:5062";
const CARRIER: &str = "192.0.2.20:5060";

fn peer(a: &str) -> Peer {
    Peer::udp(a.parse().unwrap())
}

struct Net {
    core: Core,
    now: Instant,
    out: Vec<Bytes>,
}

impl Net {
    fn input(&mut self, from: Peer, data: Bytes) {
        self.core.handle_message(self.now, from, data);
        self.out.clear();
        while let Some(t) = self.core.poll_transmit() {
            self.out.push(t.payload);
        }
    }

    /// One millisecond passes; due timers run.
    fn tick(&mut self) {
        self.now += Duration::from_millis(1);
        if self.core.poll_timeout().is_some_and(|t| t <= self.now) {
            self.core.handle_timeout(self.now);
            while self.core.poll_transmit().is_some() {}
        }
    }
}

fn net() -> (Net, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("dnc.txt"), "+33612345678\n").unwrap();
    let cfg = Config::parse(
        "[sip]\nlisten = [\"udp:192.0.2.10:5060\"]\n[[dnc_list]]\nname = \"l\"\nfile = \"dnc.txt\"\n\
         [[tenant]]\nid = \"t\"\nsources = [\"10.0.0.0/8\"]\nrule_set = \"fr\"\ndnc_lists = [\"l\"]\n",
        &dir.path().join("c.toml"),
    )
    .unwrap();
    let (tenants, _) = compile::tenants(&cfg, dir.path(), None).unwrap();
    // A Tuesday at 11:00 in Paris: inside the legal hours.
    let open = chrono_tz::Tz::Europe__Paris
        .with_ymd_and_hms(2026, 11, 17, 11, 0, 0)
        .unwrap()
        .with_timezone(&chrono::Utc);
    let gate = GateParts {
        clock: Clock::starting_at(open),
        ..GateParts::new(tenants)
    }
    .build();
    let settings = Settings::simulated(
        "192.0.2.10",
        5060,
        vec![Carrier::single("c1", peer(CARRIER))],
    );
    let core = Core::new(
        Arc::new(settings),
        Arc::new(gate),
        Arc::new(Metrics::new()),
        0,
    );
    let net = Net {
        core,
        now: Instant::now(),
        out: Vec::new(),
    };
    (net, dir)
}

/// A dialer's INVITE as SIPp's `uac` sends it.
fn invite(callee: &str, i: u64) -> Bytes {
    let sdp = "v=0\r\no=user1 53655765 2353687637 IN IP4 10.0.0.5\r\ns=-\r\nc=IN IP4 10.0.0.5\r\n\
t=0 0\r\nm=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";
    Bytes::from(format!(
        "INVITE sip:{callee}@192.0.2.10:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP 10.0.0.5:5062;branch=z9hG4bK-{i}-1-0\r\n\
From: sipp <sip:+33162000001@10.0.0.5:5062>;tag={i}SIPpTag001\r\n\
To: <sip:{callee}@192.0.2.10:5060>\r\n\
Call-ID: {i}-bench@10.0.0.5\r\n\
CSeq: 1 INVITE\r\n\
Contact: sip:sipp@10.0.0.5:5062\r\n\
Max-Forwards: 70\r\n\
X-Dial-Mode: predictive\r\n\
Subject: Performance Test\r\n\
Content-Type: application/sdp\r\n\
Content-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    ))
}

/// The request `method` of the dialog `i` (ACK, BYE) to the carrier's
/// Contact, with the To tag and the route the 200 carried.
fn in_dialog(
    method: &str,
    callee: &str,
    i: u64,
    to_tag: &[u8],
    route: &str,
    branch: &str,
) -> Bytes {
    let cseq = if method == "BYE" { 2 } else { 1 };
    Bytes::from(format!(
        "{method} sip:uas@192.0.2.20:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP 10.0.0.5:5062;branch={branch}\r\n\
{route}\
From: sipp <sip:+33162000001@10.0.0.5:5062>;tag={i}SIPpTag001\r\n\
To: <sip:{callee}@192.0.2.10:5060>;tag={}\r\n\
Call-ID: {i}-bench@10.0.0.5\r\n\
CSeq: {cseq} {method}\r\n\
Contact: sip:sipp@10.0.0.5:5062\r\n\
Max-Forwards: 70\r\n\
Content-Length: 0\r\n\r\n",
        String::from_utf8_lossy(to_tag)
    ))
}

/// The carrier's response `code` to the request it received.
fn answer(req: &Message, code: u16, phrase: &str, to_tag: &str) -> Bytes {
    let mut s = format!("SIP/2.0 {code} {phrase}\r\n");
    for name in ["Via", "Record-Route"] {
        for v in req.headers_by_name(name) {
            s.push_str(&format!("{name}: {}\r\n", String::from_utf8_lossy(v)));
        }
    }
    for name in ["From", "Call-ID", "CSeq"] {
        let v = req.header_by_name(name).unwrap();
        s.push_str(&format!("{name}: {}\r\n", String::from_utf8_lossy(v)));
    }
    let to = String::from_utf8_lossy(req.header_by_name("To").unwrap()).into_owned();
    if to.contains("tag=") {
        s.push_str(&format!("To: {to}\r\n"));
    } else {
        s.push_str(&format!("To: {to};tag={to_tag}\r\n"));
    }
    s.push_str("Contact: <sip:uas@192.0.2.20:5060>\r\nContent-Length: 0\r\n\r\n");
    Bytes::from(s)
}

fn benches(c: &mut Criterion) {
    let (mut net, _dir) = net();
    let dialer = peer(DIALER);

    // Checked once: the reject path answers 603 and forwards nothing.
    net.input(dialer, invite("+33612345678", 0));
    let r = Message::parse(net.out[0].clone()).unwrap();
    assert_eq!((net.out.len(), r.status()), (1, Some(603)));
    let mut i = 1u64;
    c.bench_function("core_reject_dnc_invite_603_ack", |b| {
        b.iter(|| {
            i += 1;
            net.input(dialer, invite("+33612345678", i));
            let tag = Message::parse(net.out[0].clone())
                .ok()
                .and_then(|r| r.to_tag().map(<[u8]>::to_vec))
                .unwrap_or_default();
            let branch = format!("z9hG4bK-{i}-1-0");
            net.input(
                dialer,
                in_dialog("ACK", "+33612345678", i, &tag, "", &branch),
            );
            net.tick();
        })
    });

    // The same reject from cold caches. In the running proxy the two SIPp
    // processes, and the box's other tenants, run between two of its
    // wakeups; here a buffer is written before each message: the size of
    // one core's L2 (the L3 stays warm), then of the L3. Only the proxy's
    // work is timed. Criterion sizes the run by wall time, evictions
    // included: 4 s gives about a thousand calls.
    let mut cold = c.benchmark_group("cold");
    cold.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(4))
        .sampling_mode(SamplingMode::Flat);
    for (name, size) in [("l2", L2), ("l3", L3)] {
        let mut junk = vec![1u8; size];
        cold.bench_function(format!("core_reject_dnc_invite_603_ack_{name}_cold"), |b| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    i += 1;
                    let inv = invite("+33612345678", i);
                    evict(&mut junk);
                    let t = Instant::now();
                    net.input(dialer, inv);
                    spent += t.elapsed();
                    let tag = Message::parse(net.out[0].clone())
                        .ok()
                        .and_then(|r| r.to_tag().map(<[u8]>::to_vec))
                        .unwrap_or_default();
                    let branch = format!("z9hG4bK-{i}-1-0");
                    let ack = in_dialog("ACK", "+33612345678", i, &tag, "", &branch);
                    evict(&mut junk);
                    let t = Instant::now();
                    net.input(dialer, ack);
                    spent += t.elapsed();
                    net.tick();
                }
                spent
            })
        });
    }
    cold.finish();

    i += 1;
    assert!(accept_call(&mut net, i), "an allowed call goes through");
    c.bench_function("core_accept_invite_180_200_ack_bye", |b| {
        b.iter(|| {
            i += 1;
            // Checked every time: a flow that broke midway would be a
            // cheaper, wrong figure.
            assert!(accept_call(&mut net, i));
        })
    });
}

/// This box's caches: 2 MiB of L2 per core (written twice over), 32 MiB
/// of L3 shared.
const L2: usize = 4 << 20;
const L3: usize = 32 << 20;

/// Writes a byte of every cache line of `junk`: what was cached before is
/// pushed out of the levels `junk` fills.
fn evict(junk: &mut [u8]) {
    for b in junk.iter_mut().step_by(64) {
        *b = b.wrapping_add(1);
    }
    std::hint::black_box(junk);
}

/// One allowed call from INVITE to the 200 to its BYE; whether every
/// message reached the other side.
fn accept_call(net: &mut Net, i: u64) -> bool {
    let (dialer, carrier) = (peer(DIALER), peer(CARRIER));
    // Each call to its own callee: the fr cap counts calls per callee.
    let to = format!("+3314{:07}", i % 10_000_000);
    net.input(dialer, invite(&to, i));
    let Some(fwd) = net.out.get(1).and_then(|m| Message::parse(m.clone()).ok()) else {
        return false;
    };
    net.input(carrier, answer(&fwd, 180, "Ringing", "uas1"));
    let ringing = net.out.len() == 1;
    net.input(carrier, answer(&fwd, 200, "OK", "uas1"));
    let Some(ok) = net.out.first().and_then(|m| Message::parse(m.clone()).ok()) else {
        return false;
    };
    let route: String = ok
        .headers_by_name("Record-Route")
        .map(|v| format!("Route: {}\r\n", String::from_utf8_lossy(v)))
        .collect();
    let tag = ok.to_tag().unwrap_or_default().to_vec();
    let ack = in_dialog("ACK", &to, i, &tag, &route, &format!("z9hG4bK-{i}-ack"));
    net.input(dialer, ack);
    let acked = net.out.len() == 1;
    let bye = in_dialog("BYE", &to, i, &tag, &route, &format!("z9hG4bK-{i}-bye"));
    net.input(dialer, bye);
    let Some(bye) = net.out.first().and_then(|m| Message::parse(m.clone()).ok()) else {
        return false;
    };
    net.input(carrier, answer(&bye, 200, "OK", "uas1"));
    let done = net.out.len() == 1;
    net.tick();
    ringing && acked && done
}

criterion_group! {
    name = core;
    config = Criterion::default().sample_size(30).measurement_time(Duration::from_secs(8));
    targets = benches
}
criterion_main!(core);
