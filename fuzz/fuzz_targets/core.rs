//! The whole sans-IO proxy core driven by arbitrary events: messages from a
//! tenant's dialer, a carrier and a stranger (raw bytes), carrier answers
//! and in-dialog requests built from what was exchanged, time passing.
//!
//! Input: records `op payload` separated by the bytes `00 FF`. Ops: `T`, `C`,
//! `S` (raw SIP from the dialer, the carrier, a stranger; `$P` is the
//! proxy's address), `A` (advance 250 ms × byte), `R k c` (the carrier
//! answers the k-th request it got with the c-th code), `B k m` / `X k m`
//! (the dialer / a stranger sends an in-dialog request built from the
//! k-th 2xx the dialer got), `K k` (the carrier sends the BYE of that
//! dialog), `U` (the carrier is unreachable).
//!
//! Checked after every event: every message sent parses; an event from a
//! stranger produces nothing but responses to the stranger (no open
//! relay). At the end, once every timer has fired, no transaction is left.
#![no_main]

use bytes::Bytes;
use callguard::proxy::{Carrier, Core, Gatekeeper, NoObserver, Peer, Settings, Verdict};
use callguard::sip::message::HeaderName;
use callguard::sip::Message;
use libfuzzer_sys::fuzz_target;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

const PROXY: &str = "192.0.2.10:5060";
const DIALER: &str = "10.0.0.5:5062";
const CARRIER: &str = "192.0.2.20:5060";
const STRANGER: &str = "198.51.100.7:5060";
const CODES: [u16; 9] = [100, 180, 183, 200, 408, 486, 487, 503, 603];
const METHODS: [&str; 6] = ["ACK", "BYE", "INVITE", "INFO", "UPDATE", "MESSAGE"];

struct TenNet;
impl Gatekeeper for TenNet {
    fn check(&self, _m: &Message, source: &Peer) -> Verdict {
        match self.tenant_of(source) {
            Some(t) => Verdict::Forward {
                tenant: t,
                headers: vec![],
                warn: None,
                ticket: None,
            },
            None => Verdict::Reject(callguard::gate::source_not_authorized(source)),
        }
    }
    fn tenant_of(&self, peer: &Peer) -> Option<Arc<str>> {
        peer.addr
            .ip()
            .to_string()
            .starts_with("10.")
            .then(|| "t1".into())
    }
}

fn udp(a: &str) -> Peer {
    Peer::udp(a.parse().unwrap())
}

fn core() -> Core {
    let settings = Settings::simulated(
        "192.0.2.10",
        5060,
        vec![Carrier::single("c1", udp(CARRIER))],
    );
    Core::new(
        Arc::new(settings),
        Arc::new(TenNet),
        Arc::new(NoObserver),
        0,
    )
}

/// A response to `req` from the carrier, as a UAS writes it.
fn reply(req: &Message, code: u16) -> String {
    let mut s = format!("SIP/2.0 {code} Reason\r\n");
    for h in &req.headers {
        let line = String::from_utf8_lossy(req.slice(h.line));
        match h.name {
            HeaderName::Via
            | HeaderName::RecordRoute
            | HeaderName::From
            | HeaderName::CallId
            | HeaderName::CSeq => {
                s.push_str(&line);
                s.push_str("\r\n");
            }
            HeaderName::To if code > 100 && req.to_tag().is_none() => {
                s.push_str(&format!("{line};tag=callee\r\n"))
            }
            HeaderName::To => {
                s.push_str(&line);
                s.push_str("\r\n");
            }
            _ => {}
        }
    }
    s.push_str(&format!(
        "Contact: <sip:callee@{CARRIER}>\r\nContent-Length: 0\r\n\r\n"
    ));
    s
}

/// An in-dialog request of the dialog a 2xx set up, from the caller side
/// (or, `callee_side`, from the carrier to the dialer).
fn in_dialog(ok: &Message, method: &str, callee_side: bool, via: &str, n: usize) -> String {
    let mut routes: Vec<String> = ok
        .values(HeaderName::RecordRoute)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect();
    let from =
        String::from_utf8_lossy(ok.header(HeaderName::From).unwrap_or_default()).into_owned();
    let to = String::from_utf8_lossy(ok.header(HeaderName::To).unwrap_or_default()).into_owned();
    let call_id = String::from_utf8_lossy(ok.call_id().unwrap_or_default()).into_owned();
    let (ruri, f, t) = if callee_side {
        (format!("sip:dialer@{DIALER}"), to, from)
    } else {
        routes.reverse();
        (format!("sip:callee@{CARRIER}"), from, to)
    };
    format!(
        "{method} {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP {via};branch=z9hG4bKfz{n}\r\nRoute: {}\r\nMax-Forwards: 70\r\n\
From: {f}\r\nTo: {t}\r\nCall-ID: {call_id}\r\nCSeq: {} {method}\r\nContent-Length: 0\r\n\r\n",
        routes.join(", "),
        n + 2
    )
}

fuzz_target!(|data: &[u8]| {
    let mut core = core();
    let mut now = Instant::now();
    let mut at_carrier: Vec<Message> = Vec::new();
    let mut oks: Vec<Message> = Vec::new();
    let mut n = 0usize;
    for record in data.split_inner(b"\x00\xff") {
        let Some((&op, payload)) = record.split_first() else {
            continue;
        };
        n += 1;
        let text = |p: &[u8]| String::from_utf8_lossy(p).replace("$P", PROXY);
        let mut from_stranger = false;
        match op {
            b'T' => core.handle_message(now, udp(DIALER), Bytes::from(text(payload))),
            b'C' => core.handle_message(now, udp(CARRIER), Bytes::from(text(payload))),
            b'S' => {
                from_stranger = true;
                core.handle_message(now, udp(STRANGER), Bytes::from(text(payload)))
            }
            b'A' => {
                now += Duration::from_millis(250 * u64::from(*payload.first().unwrap_or(&1)));
                core.handle_timeout(now);
            }
            b'R' if payload.len() >= 2 && !at_carrier.is_empty() => {
                let req = &at_carrier[payload[0] as usize % at_carrier.len()];
                let code = CODES[payload[1] as usize % CODES.len()];
                let r = reply(req, code);
                core.handle_message(now, udp(CARRIER), Bytes::from(r));
            }
            b'B' | b'X' if payload.len() >= 2 && !oks.is_empty() => {
                let ok = &oks[payload[0] as usize % oks.len()];
                let method = METHODS[payload[1] as usize % METHODS.len()];
                let (peer, via) = if op == b'X' {
                    (STRANGER, STRANGER)
                } else {
                    (DIALER, DIALER)
                };
                from_stranger = op == b'X';
                let req = in_dialog(ok, method, false, via, n);
                core.handle_message(now, udp(peer), Bytes::from(req));
            }
            b'K' if !payload.is_empty() && !oks.is_empty() => {
                let ok = &oks[payload[0] as usize % oks.len()];
                let req = in_dialog(ok, "BYE", true, CARRIER, n);
                core.handle_message(now, udp(CARRIER), Bytes::from(req));
            }
            b'U' => core.handle_unreachable(now, udp(CARRIER)),
            _ => continue,
        }
        while let Some(t) = core.poll_transmit() {
            let m = Message::parse(t.payload.clone()).expect("every message sent parses");
            if from_stranger {
                // Responses go to the source address, at the Via's port
                // when there is no rport (RFC 3261 §18.2.2).
                let stranger = STRANGER.parse::<SocketAddr>().unwrap().ip();
                assert!(
                    !m.is_request() && t.to.addr.ip() == stranger,
                    "a stranger's message made the proxy send {:?} to {}",
                    String::from_utf8_lossy(&t.payload[..t.payload.len().min(60)]),
                    t.to.addr
                );
            }
            if t.to.addr == CARRIER.parse::<SocketAddr>().unwrap() && m.is_request() {
                at_carrier.push(m);
            } else if t.to.addr == DIALER.parse::<SocketAddr>().unwrap()
                && m.status().is_some_and(|s| (200..300).contains(&s))
                && m.cseq().is_some_and(|c| c.1 == b"INVITE")
            {
                oks.push(m);
            }
        }
        // Decisions are answered at once here (the gate never defers).
        while core.poll_decision().is_some() {}
    }
    // Every transaction ends once its timers have fired.
    for _ in 0..10_000 {
        let Some(t) = core.poll_timeout() else { break };
        now = now.max(t);
        core.handle_timeout(now);
        while core.poll_transmit().is_some() {}
    }
    assert_eq!(
        core.active_transactions(),
        0,
        "transactions left after every timer fired"
    );
});

trait SplitInner {
    fn split_inner<'a>(&'a self, sep: &'a [u8]) -> Box<dyn Iterator<Item = &'a [u8]> + 'a>;
}

impl SplitInner for [u8] {
    fn split_inner<'a>(&'a self, sep: &'a [u8]) -> Box<dyn Iterator<Item = &'a [u8]> + 'a> {
        let mut rest = self;
        Box::new(std::iter::from_fn(move || {
            if rest.is_empty() {
                return None;
            }
            match rest.windows(sep.len()).position(|w| w == sep) {
                Some(i) => {
                    let (head, tail) = rest.split_at(i);
                    rest = &tail[sep.len()..];
                    Some(head)
                }
                None => Some(std::mem::take(&mut rest)),
            }
        }))
    }
}
