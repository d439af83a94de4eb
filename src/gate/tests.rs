//! The gate: facts from SIP, the one decision flow with the embedded
//! state and a stalled audit trail, and the gate with the proxy core in
//! simulated time.

use super::*;
use crate::proxy::{Carrier, CarrierStatus, Core, NoObserver, Settings};
use crate::testing::{acme, tuesday_11};
use bytes::Bytes;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

fn gate(state: Option<Backend>, audit: Option<Audit>) -> Gate {
    let mut tenants = Tenants::default();
    tenants.add(
        Arc::new(acme(|_| {})),
        &["10.0.0.0/8".parse().unwrap()],
        &[],
    );
    GateParts {
        clock: Clock::starting_at(tuesday_11()),
        state,
        audit,
        refusal: RefusalSignal::new("X-Disposition", &["refused".into()]),
        ..GateParts::new(tenants)
    }
    .build()
}

fn embedded(dir: &std::path::Path) -> Backend {
    let (store, _) = crate::state::Store::open(dir, Clock::starting_at(tuesday_11())).unwrap();
    Backend::new(store, None)
}

fn peer(a: &str) -> Peer {
    Peer::udp(a.parse().unwrap())
}

fn invite(callee: &str, call_id: &str) -> Message {
    Message::parse(Bytes::from(format!(
        "INVITE sip:{callee}@192.0.2.10 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.5:5062;branch=z9hG4bK{call_id};rport\r\n\
Max-Forwards: 70\r\nFrom: <sip:+33162000001@10.0.0.5>;tag=f{call_id}\r\nTo: <sip:{callee}@192.0.2.10>\r\n\
Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    )))
    .unwrap()
}

fn code(v: &Verdict) -> &'static str {
    match v {
        Verdict::Forward { .. } => "forward",
        Verdict::Reject(r) => r.code.as_str(),
        Verdict::Pending(_) => "pending",
    }
}

#[test]
fn the_flow_runs_inline_counts_atomically_and_refuses_unrecorded_calls() {
    let dir = tempfile::tempdir().unwrap();
    let g = gate(Some(embedded(dir.path())), None);
    let dialer = peer("10.0.0.5:5062");
    let codes: Vec<&str> = (0..5)
        .map(|i| code(&g.check(&invite("+33142000000", &format!("c{i}")), &dialer)))
        .collect();
    assert_eq!(
        codes,
        ["forward", "forward", "forward", "forward", "frequency_cap"]
    );

    // A stalled audit trail: the call is refused, not placed unrecorded,
    // and not counted.
    let (audit, _keep) = Audit::stalled(1);
    let g = gate(
        Some(embedded(tempfile::tempdir().unwrap().path())),
        Some(audit.clone()),
    );
    assert_eq!(
        code(&g.check(&invite("+33142000001", "a1"), &dialer)),
        "forward"
    );
    let v = g.check(&invite("+33142000001", "a2"), &dialer);
    assert_eq!(code(&v), "audit_unavailable");
    let Verdict::Reject(r) = v else {
        unreachable!()
    };
    assert_eq!((r.status, r.retry_after), (503, Some(5)));
    assert_eq!(audit.overflowed(), 1);
    // A stranger is still refused (and its record dropped, counted).
    assert_eq!(
        code(&g.check(&invite("+33142000001", "s1"), &peer("198.51.100.7:5060"))),
        "source_not_authorized"
    );
}

/// The real gate behind the proxy core, in simulated time.
struct Net {
    core: Core,
    now: Instant,
}

const PROXY: &str = "192.0.2.10:5060";
const UAC: &str = "10.0.0.5:5062";
const C1: &str = "192.0.2.20:5060";

impl Net {
    fn new(g: Gate) -> Net {
        let settings = Settings {
            status: Arc::new(CarrierStatus::new(3)),
            ..Settings::simulated("192.0.2.10", 5060, vec![Carrier::single("c1", peer(C1))])
        };
        Net {
            core: Core::new(Arc::new(settings), Arc::new(g), Arc::new(NoObserver), 0),
            now: Instant::now(),
        }
    }

    fn input(&mut self, from: &str, text: &str) -> Vec<(SocketAddr, Message)> {
        self.core.handle_message(
            self.now,
            peer(from),
            Bytes::copy_from_slice(text.as_bytes()),
        );
        let mut out = Vec::new();
        while let Some(t) = self.core.poll_transmit() {
            out.push((t.to.addr, Message::parse(t.payload).unwrap()));
        }
        out
    }
}

fn text(m: &Message) -> String {
    String::from_utf8_lossy(m.buf()).into_owned()
}

#[test]
fn gate_and_core_in_simulated_time() {
    let dir = tempfile::tempdir().unwrap();
    let mut net = Net::new(gate(Some(embedded(dir.path())), None));
    let call = |net: &mut Net, callee: &str, id: &str| net.input(UAC, &text(&invite(callee, id)));
    // Allowed: 100 Trying to the dialer, the INVITE to the carrier.
    let out = call(&mut net, "+33142000000", "g1");
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].1.status(), Some(100));
    assert_eq!(out[1].0, C1.parse::<SocketAddr>().unwrap());
    let fwd = out[1].1.clone();
    // A DNC callee: 603 with the contract's headers, nothing forwarded.
    let out = call(&mut net, "+33612345678", "g2");
    assert_eq!(out.len(), 1);
    let r = &out[0].1;
    assert_eq!(r.status(), Some(603));
    assert_eq!(r.header_by_name("X-Callguard-Reason"), Some(&b"dnc"[..]));
    assert!(r
        .header_by_name("Reason")
        .unwrap()
        .starts_with(b"SIP ;cause=603"));
    // The answered call ends with a BYE that signals a refusal: the next
    // call to that callee is refused for the cool-off.
    let ok = format!(
        "SIP/2.0 200 OK\r\n{}Contact: <sip:callee@{C1}>\r\nContent-Length: 0\r\n\r\n",
        fwd.headers
            .iter()
            .filter(|h| !matches!(
                h.name,
                HeaderName::MaxForwards | HeaderName::ContentLength | HeaderName::Other
            ))
            .map(|h| {
                let line = String::from_utf8_lossy(fwd.slice(h.line)).into_owned();
                if h.name == HeaderName::To {
                    format!("{line};tag=cr1\r\n")
                } else {
                    format!("{line}\r\n")
                }
            })
            .collect::<String>()
    );
    let out = net.input(C1, &ok);
    let ok = out
        .iter()
        .find(|(to, _)| *to == UAC.parse::<SocketAddr>().unwrap())
        .unwrap()
        .1
        .clone();
    let rr = String::from_utf8_lossy(ok.header(HeaderName::RecordRoute).unwrap()).into_owned();
    let bye = format!(
        "BYE sip:callee@{C1} SIP/2.0\r\nVia: SIP/2.0/UDP {UAC};branch=z9hG4bKbye\r\nRoute: {rr}\r\nMax-Forwards: 70\r\n\
From: <sip:+33162000001@10.0.0.5>;tag=fg1\r\nTo: <sip:+33142000000@192.0.2.10>;tag=cr1\r\nCall-ID: g1\r\nCSeq: 2 BYE\r\n\
X-Disposition: refused\r\nContent-Length: 0\r\n\r\n"
    );
    let out = net.input(UAC, &bye);
    assert!(
        out.iter()
            .any(|(to, m)| *to == C1.parse::<SocketAddr>().unwrap()
                && m.method() == Some(&b"BYE"[..]))
    );
    let out = call(&mut net, "+33142000000", "g3");
    assert_eq!(out[0].1.status(), Some(603));
    assert_eq!(
        out[0].1.header_by_name("X-Callguard-Reason"),
        Some(&b"refusal_cooloff"[..])
    );
    let _ = PROXY;
}

/// A refused call costs the heap little and its ACK nothing: in the
/// running proxy a reject's cost is mostly cache misses, and every
/// allocation touches the allocator's state (issue 16). The INVITE's are
/// the Call-ID of the audit record, the explanation (formatted, then
/// copied into the failed rules and into the rejection), the response's
/// header text, and its buffer (two: the buffer, then its shared handle).
#[test]
fn a_dnc_refusal_allocates_seven_times_and_its_ack_never() {
    let dir = tempfile::tempdir().unwrap();
    let audit = Audit::start(&dir.path().join("audit"), 1 << 30, None, Default::default()).unwrap();
    let settings = Settings::simulated("192.0.2.10", 5060, vec![Carrier::single("c1", peer(C1))]);
    let mut core = Core::new(
        Arc::new(settings),
        Arc::new(gate(None, Some(audit.clone()))),
        Arc::new(crate::metrics::Metrics::new()),
        0,
    );
    let start = Instant::now();
    // One call at a time, each transaction over before the next call: the
    // first calls create the metric series and size the tables.
    for i in 0..20 {
        let now = start + Duration::from_secs(40 * i);
        let invite = Bytes::from(text(&invite("+33612345678", &format!("d{i}"))));
        let ((), at_invite) =
            crate::testing::allocations(|| core.handle_message(now, peer(UAC), invite));
        let t = core.poll_transmit().expect("a response to the INVITE");
        assert!(core.poll_transmit().is_none(), "nothing is forwarded");
        let r = Message::parse(t.payload).unwrap();
        assert_eq!(r.status(), Some(603));
        let ack = format!(
            "ACK sip:+33612345678@192.0.2.10 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.5:5062;branch=z9hG4bKd{i};rport\r\n\
Max-Forwards: 70\r\nFrom: <sip:+33162000001@10.0.0.5>;tag=fd{i}\r\nTo: {}\r\n\
Call-ID: d{i}\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
            String::from_utf8_lossy(r.header_by_name("To").unwrap())
        );
        let ack = Bytes::from(ack);
        let ((), at_ack) = crate::testing::allocations(|| core.handle_message(now, peer(UAC), ack));
        assert!(
            core.poll_transmit().is_none(),
            "an ACK is answered by nothing"
        );
        // It matched the transaction: Timer G does not repeat the 603.
        core.handle_timeout(now + Duration::from_secs(2));
        assert!(
            core.poll_transmit().is_none(),
            "call {i}: the 603 was repeated"
        );
        core.handle_timeout(now + Duration::from_secs(39));
        if i >= 10 {
            assert_eq!((at_invite, at_ack), (7, 0), "call {i}");
        }
    }
    // Every refusal is on the audit trail.
    assert!(audit.flush(Duration::from_secs(10)));
    let lines = std::fs::read_dir(dir.path().join("audit"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect::<String>();
    assert_eq!(lines.matches("\"reason\":\"dnc\"").count(), 20);
}

#[test]
fn facts_from_the_invite() {
    let m = Message::parse(bytes::Bytes::from_static(
        b"INVITE sip:0142000000@proxy;user=phone SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\
From: \"Agent\" <sip:+33142999999@dialer>;tag=1\r\nP-Asserted-Identity: <sip:+33162000000@dialer>\r\n\
To: <sip:0142000000@proxy>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nX-Dial-Mode: preview\r\n\r\n",
    ))
    .unwrap();
    let f = facts(&m, "X-Dial-Mode");
    assert_eq!(
        (f.caller, f.callee, f.mode),
        (Some("+33162000000"), "0142000000", Some("preview"))
    );
    let m = Message::parse(bytes::Bytes::from_static(
        b"INVITE tel:+33142000000 SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\
From: \"Anonymous\" <sip:anonymous@anonymous.invalid>;tag=1\r\nTo: <sip:x@y>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n\r\n",
    ))
    .unwrap();
    let f = facts(&m, "X-Dial-Mode");
    assert_eq!(
        (f.caller, f.callee, f.mode),
        (Some("anonymous"), "+33142000000", None)
    );
}

#[test]
fn every_presented_identity_is_checked() {
    let parse = |s: &'static str| Message::parse(bytes::Bytes::from(s)).unwrap();
    let m = parse(
        "INVITE sip:0142000000@proxy SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\
From: <sip:+33162000001@dialer>;tag=1\r\nP-Asserted-Identity: garbage\r\n\
P-Asserted-Identity: <sip:+33612345678@d>, <tel:+33162000002>\r\n\
To: <sip:0142000000@proxy>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n\r\n",
    );
    let f = facts(&m, "X-Dial-Mode");
    assert_eq!(f.caller, Some("garbage"));
    assert_eq!(
        &f.also_presented[..],
        ["+33612345678", "+33162000002", "+33162000001"]
    );
    assert!(!f.withheld);
    let fx = acme(|_| {});
    let d = fx.decide(&f, &History::default(), tuesday_11());
    assert_eq!(d.reason_str(), Some("caller_id_category"));
    assert!(d.explanation.contains("`garbage`"), "{}", d.explanation);
    assert!(d.explanation.contains("+33612345678"), "{}", d.explanation);
    // A From that is a name is not a caller ID; Privacy: id withholds it.
    let m = parse(
        "INVITE sip:0142000000@proxy SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\
From: \"Anonymous\" <sip:anonymous@anonymous.invalid>;tag=1\r\n\
P-Asserted-Identity: <sip:+33162000001@d>\r\nPrivacy: header; id\r\n\
To: <sip:0142000000@proxy>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n\r\n",
    );
    let f = facts(&m, "X-Dial-Mode");
    assert_eq!(
        (f.caller, f.also_presented.len(), f.withheld),
        (Some("+33162000001"), 0, true)
    );
    // Remote-Party-ID: the calling party is presented, its privacy obeyed.
    let m2 = parse(
        "INVITE sip:0142000000@proxy SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\
From: <sip:+33162000001@dialer>;tag=1\r\n\
Remote-Party-ID: <sip:+33612345678@d>;party=calling;screen=yes;privacy=off\r\n\
Remote-Party-ID: <sip:+33142000000@d>;party=called\r\n\
To: <sip:0142000000@proxy>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n\r\n",
    );
    let f2 = facts(&m2, "X-Dial-Mode");
    assert_eq!(
        (f2.caller, &f2.also_presented[..], f2.withheld),
        (Some("+33162000001"), &["+33612345678"][..], false)
    );
    let d = fx.decide(&f, &History::default(), tuesday_11());
    assert_eq!(
        (d.status, d.reason_str()),
        (433, Some("anonymous_caller_id"))
    );
}
