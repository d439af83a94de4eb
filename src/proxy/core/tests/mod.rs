//! The proxy core driven with simulated time: no sockets, no sleeps.

use super::*;
use crate::proxy::{Carrier, NoObserver};
use std::net::SocketAddr;

const PROXY: &str = "192.0.2.10:5060";
const UAC: &str = "10.0.0.5:5062";
const C1: &str = "192.0.2.20:5060";
const C2: &str = "192.0.2.21:5060";

/// The rejection a gatekeeper gives a source of no tenant.
fn stranger(source: &Peer) -> Rejection {
    Rejection {
        tenant: None,
        status: 403,
        phrase: "Source Not Authorized".into(),
        code: Code::SourceNotAuthorized,
        explanation: format!(
            "source {} is not in any tenant's dialer networks",
            source.addr.ip()
        ),
        retry_after: None,
    }
}

/// Tenant `t1` owns 10.0.0.0/8.
#[derive(Default)]
struct OnlyTenNet;
impl Gatekeeper for OnlyTenNet {
    fn check(&self, _m: &Message, source: &Peer) -> Verdict {
        if self.tenant_of(source).is_some() {
            Verdict::Forward {
                tenant: "t1".into(),
                headers: vec![],
                warn: None,
                ticket: None,
            }
        } else {
            Verdict::Reject(stranger(source))
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

/// The gatekeeper `G`, recording each call's `settled` report (the
/// outcome line of the audit trail): its Call-ID and status.
#[derive(Default)]
struct Settled<G> {
    inner: G,
    reports: parking_lot::Mutex<Vec<(Vec<u8>, u16)>>,
    tickets: parking_lot::Mutex<Vec<Option<Ticket>>>,
}

/// As [`OnlyTenNet`], with a ticket on every call it lets through.
#[derive(Default)]
struct Ticketed;
impl Gatekeeper for Ticketed {
    fn check(&self, m: &Message, source: &Peer) -> Verdict {
        match OnlyTenNet.check(m, source) {
            Verdict::Forward {
                tenant,
                headers,
                warn,
                ..
            } => Verdict::Forward {
                tenant,
                headers,
                warn,
                ticket: Some(Ticket([7, 8])),
            },
            other => other,
        }
    }
    fn tenant_of(&self, peer: &Peer) -> Option<Arc<str>> {
        OnlyTenNet.tenant_of(peer)
    }
}

impl<G> Settled<G> {
    fn reports(&self) -> Vec<(Vec<u8>, u16)> {
        self.reports.lock().clone()
    }
}

impl<G: Gatekeeper> Gatekeeper for Settled<G> {
    fn check(&self, m: &Message, source: &Peer) -> Verdict {
        self.inner.check(m, source)
    }
    fn tenant_of(&self, peer: &Peer) -> Option<Arc<str>> {
        self.inner.tenant_of(peer)
    }
    fn settled(&self, call: Settlement<'_>) {
        self.reports
            .lock()
            .push((call.call_id.to_vec(), call.status));
        self.tickets.lock().push(call.ticket);
    }
}

/// A core on `carriers` whose gatekeeper `G` has its reports recorded.
fn recorded<G: Gatekeeper + Default + 'static>(carriers: &[&str]) -> (Net, Arc<Settled<G>>) {
    let gate = Arc::new(Settled::<G>::default());
    let net = Net {
        core: Core::new(
            Arc::new(settings(carriers)),
            gate.clone(),
            Arc::new(NoObserver),
            0,
        ),
        now: Instant::now(),
    };
    (net, gate)
}

fn udp(a: &str) -> Peer {
    Peer::udp(a.parse().unwrap())
}

struct Net {
    core: Core,
    now: Instant,
}

fn settings(carriers: &[&str]) -> Settings {
    let carriers = carriers
        .iter()
        .enumerate()
        .map(|(i, c)| Carrier {
            name: format!("c{}", i + 1).into(),
            group: format!("c{}", i + 1).into(),
            peer: udp(c),
            priority: i as u32,
            weight: 1,
        })
        .collect();
    Settings::simulated("192.0.2.10", 5060, carriers)
}

impl Net {
    fn new(carriers: &[&str]) -> Net {
        Net {
            core: Core::new(
                Arc::new(settings(carriers)),
                Arc::new(OnlyTenNet),
                Arc::new(NoObserver),
                0,
            ),
            now: Instant::now(),
        }
    }
    fn input(&mut self, from: &str, text: &str) -> Vec<(SocketAddr, Message)> {
        self.core
            .handle_message(self.now, udp(from), Bytes::copy_from_slice(text.as_bytes()));
        self.drain()
    }
    fn input_bytes(&mut self, from: &str, b: Bytes) -> Vec<(SocketAddr, Message)> {
        self.core.handle_message(self.now, udp(from), b);
        self.drain()
    }
    fn advance(&mut self, d: Duration) -> Vec<(SocketAddr, Message)> {
        let end = self.now + d;
        let mut out = Vec::new();
        // Step through every deadline so retransmission sequences are exact.
        while let Some(t) = self.core.poll_timeout().filter(|t| *t <= end) {
            self.now = t.max(self.now);
            self.core.handle_timeout(self.now);
            out.extend(self.drain());
        }
        self.now = end;
        out
    }
    fn drain(&mut self) -> Vec<(SocketAddr, Message)> {
        let mut v = Vec::new();
        while let Some(t) = self.core.poll_transmit() {
            v.push((
                t.to.addr,
                Message::parse(t.payload).expect("we only send parsable messages"),
            ));
        }
        v
    }
}

fn invite(branch: &str, call_id: &str) -> String {
    format!(
        "INVITE sip:+33162000000@{PROXY} SIP/2.0\r\n\
Via: SIP/2.0/UDP {UAC};branch={branch};rport\r\n\
Max-Forwards: 70\r\n\
From: <sip:+33162000001@10.0.0.5>;tag=uac1\r\n\
To: <sip:+33162000000@{PROXY}>\r\n\
Call-ID: {call_id}\r\n\
CSeq: 1 INVITE\r\n\
Contact: <sip:dialer@{UAC}>\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 4\r\n\r\nv=0\n"
    )
}

/// A response from the callee side to a request we forwarded: copies Via,
/// Record-Route, From, To (+tag), Call-ID, CSeq, like a real UAS.
fn reply(req: &Message, code: u16, phrase: &str, to_tag: Option<&str>) -> String {
    let mut s = format!("SIP/2.0 {code} {phrase}\r\n");
    for h in &req.headers {
        let name = std::str::from_utf8(req.slice(h.raw_name)).unwrap();
        let value = std::str::from_utf8(req.slice(h.value)).unwrap();
        match h.name {
            HeaderName::Via
            | HeaderName::RecordRoute
            | HeaderName::From
            | HeaderName::CallId
            | HeaderName::CSeq => s.push_str(&format!("{name}: {value}\r\n")),
            HeaderName::To => match to_tag {
                Some(t) if req.to_tag().is_none() => {
                    s.push_str(&format!("{name}: {value};tag={t}\r\n"))
                }
                _ => s.push_str(&format!("{name}: {value}\r\n")),
            },
            _ => {}
        }
    }
    if (200..300).contains(&code) {
        s.push_str("Contact: <sip:carrier@192.0.2.20:5060>\r\n");
    }
    s.push_str("Content-Length: 0\r\n\r\n");
    s
}

fn only(out: Vec<(SocketAddr, Message)>, to: &str) -> Message {
    assert_eq!(
        out.len(),
        1,
        "expected exactly one message, got {:?}",
        out.iter()
            .map(|o| (o.0, first_line(&o.1)))
            .collect::<Vec<_>>()
    );
    assert_eq!(out[0].0, to.parse::<SocketAddr>().unwrap());
    out.into_iter().next().unwrap().1
}

fn first_line(m: &Message) -> String {
    let b = m.buf();
    let end = memchr::memchr(b'\r', b).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// Sends an INVITE and returns the copy that reached carrier `to`.
fn start_call(net: &mut Net, call_id: &str) -> Message {
    let out = net.input(UAC, &invite("z9hG4bKa1", call_id));
    assert_eq!(out.len(), 2, "100 Trying and the forwarded INVITE");
    assert_eq!(out[0].0, UAC.parse::<SocketAddr>().unwrap());
    assert_eq!(out[0].1.status(), Some(100));
    assert_eq!(out[1].0, C1.parse::<SocketAddr>().unwrap());
    out.into_iter().nth(1).unwrap().1
}

fn cancel(call_id: &str) -> String {
    format!(
        "CANCEL sip:+33162000000@{PROXY} SIP/2.0\r\nVia: SIP/2.0/UDP {UAC};branch=z9hG4bKa1;rport\r\nMax-Forwards: 70\r\n\
From: <sip:+33162000001@10.0.0.5>;tag=uac1\r\nTo: <sip:+33162000000@{PROXY}>\r\nCall-ID: {call_id}\r\nCSeq: 1 CANCEL\r\nContent-Length: 0\r\n\r\n"
    )
}

mod calls;
mod lifetimes;
mod pending;
mod routing;
