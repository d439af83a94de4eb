//! The proxy core driven with simulated time: no sockets, no sleeps.

use super::*;
use crate::proxy::{Carrier, LocalEndpoint, NoObserver};
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
struct OnlyTenNet;
impl Gatekeeper for OnlyTenNet {
    fn check(&self, _m: &Message, source: &Peer) -> Verdict {
        if self.tenant_of(source).is_some() {
            Verdict::Forward {
                tenant: "t1".into(),
                headers: vec![],
                warn: None,
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

fn udp(a: &str) -> Peer {
    Peer {
        transport: Transport::Udp,
        addr: a.parse().unwrap(),
    }
}

struct Net {
    core: Core,
    now: Instant,
}

fn settings(carriers: &[&str]) -> Settings {
    Settings {
        t1: Duration::from_millis(500),
        t2: Duration::from_secs(4),
        t4: Duration::from_secs(5),
        carrier_timeout: Duration::from_secs(5),
        timer_c: Duration::from_secs(180),
        local: vec![LocalEndpoint {
            transport: Transport::Udp,
            ipv6: false,
            host: "192.0.2.10".into(),
            port: 5060,
        }],
        aliases: vec![],
        carriers: carriers
            .iter()
            .enumerate()
            .map(|(i, c)| Carrier {
                name: format!("c{}", i + 1).into(),
                group: format!("c{}", i + 1).into(),
                peer: udp(c),
                priority: i as u32,
                weight: 1,
            })
            .collect(),
        route_key: [7; 16],
        instance: 1,
        status: Arc::new(crate::proxy::CarrierStatus::new(2)),
    }
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

#[test]
fn basic_call_with_record_route_and_bye() {
    let mut net = Net::new(&[C1]);
    let fwd = start_call(&mut net, "call-1");
    assert_eq!(
        fwd.request_uri(),
        Some(&b"sip:+33162000000@192.0.2.20:5060"[..])
    );
    let vias: Vec<_> = fwd.values(HeaderName::Via).filter_map(Via::parse).collect();
    assert_eq!(vias.len(), 2);
    assert!(vias[0].branch.unwrap().starts_with(b"z9hG4bKcg"));
    assert_eq!(vias[0].sent_by, b"192.0.2.10:5060");
    assert_eq!(vias[1].received, Some(&b"10.0.0.5"[..]));
    assert_eq!(vias[1].rport, Some(Some(&b"5062"[..])));
    assert_eq!(fwd.max_forwards(), Some(Ok(69)));
    let rr = fwd.header(HeaderName::RecordRoute).unwrap();
    assert!(
        rr.starts_with(b"<sip:192.0.2.10:5060;lr;cgr="),
        "{}",
        String::from_utf8_lossy(rr)
    );
    assert_eq!(fwd.body(), Ok(&b"v=0\n"[..]));

    let ringing = only(
        net.input(C1, &reply(&fwd, 180, "Ringing", Some("cr1"))),
        UAC,
    );
    assert_eq!(ringing.status(), Some(180));
    assert_eq!(
        ringing.values(HeaderName::Via).count(),
        1,
        "our Via is removed"
    );
    let ok = only(net.input(C1, &reply(&fwd, 200, "OK", Some("cr1"))), UAC);
    assert_eq!(ok.status(), Some(200));
    let rr = String::from_utf8(ok.header(HeaderName::RecordRoute).unwrap().to_vec()).unwrap();

    // ACK and BYE from the dialer follow the route set (our RR).
    let dialog = |method: &str, cseq: u32, branch: &str| {
        format!(
            "{method} sip:carrier@192.0.2.20:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {UAC};branch={branch}\r\n\
Route: {rr}\r\nMax-Forwards: 70\r\nFrom: <sip:+33162000001@10.0.0.5>;tag=uac1\r\n\
To: <sip:+33162000000@{PROXY}>;tag=cr1\r\nCall-ID: call-1\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n"
        )
    };
    let ack = only(net.input(UAC, &dialog("ACK", 1, "z9hG4bKack")), C1);
    assert_eq!(ack.method(), Some(&b"ACK"[..]));
    assert!(
        ack.header(HeaderName::Route).is_none(),
        "our Route is popped"
    );
    let bye = only(net.input(UAC, &dialog("BYE", 2, "z9hG4bKbye")), C1);
    let bye_ok = only(net.input(C1, &reply(&bye, 200, "OK", None)), UAC);
    assert_eq!(bye_ok.cseq(), Some((2, &b"BYE"[..])));
    // A retransmitted BYE is answered from the transaction, not forwarded.
    let again = only(net.input(UAC, &dialog("BYE", 2, "z9hG4bKbye")), UAC);
    assert_eq!(again.status(), Some(200));

    assert!(net.core.active_transactions() > 0);
    net.advance(Duration::from_secs(40));
    assert_eq!(
        net.core.active_transactions(),
        0,
        "all state released after the timers"
    );
}

#[test]
fn retransmissions_are_absorbed_both_ways() {
    let mut net = Net::new(&[C1]);
    let fwd = start_call(&mut net, "call-2");
    // The dialer repeats its INVITE: we repeat 100, we do not forward again.
    let again = only(net.input(UAC, &invite("z9hG4bKa1", "call-2")), UAC);
    assert_eq!(again.status(), Some(100));
    // No answer from the carrier: Timer A doubles from T1.
    let out = net.advance(Duration::from_millis(1600));
    assert_eq!(out.len(), 2, "retransmitted at 0.5 s and 1.5 s");
    assert!(out
        .iter()
        .all(|(to, m)| *to == C1.parse::<SocketAddr>().unwrap()
            && m.method() == Some(&b"INVITE"[..])));
    // A provisional stops Timer A.
    net.input(C1, &reply(&fwd, 100, "Trying", None));
    assert!(net.advance(Duration::from_secs(3)).is_empty());
    // 200 and its retransmissions are all relayed (the UAS repeats until ACK).
    only(net.input(C1, &reply(&fwd, 200, "OK", Some("x"))), UAC);
    only(net.input(C1, &reply(&fwd, 200, "OK", Some("x"))), UAC);
    // A late INVITE retransmission is absorbed after the 2xx (RFC 6026).
    assert!(net.input(UAC, &invite("z9hG4bKa1", "call-2")).is_empty());
}

#[test]
fn silent_carriers_fail_over_then_408() {
    let mut net = Net::new(&[C1, C2]);
    start_call(&mut net, "call-3");
    let out = net.advance(Duration::from_secs(5));
    let to_c2: Vec<_> = out
        .iter()
        .filter(|(to, _)| *to == C2.parse::<SocketAddr>().unwrap())
        .collect();
    assert_eq!(
        to_c2.len(),
        1,
        "the INVITE moves to the second carrier after 5 s"
    );
    let out = net.advance(Duration::from_secs(5));
    let finals: Vec<_> = out
        .iter()
        .filter(|(to, _)| *to == UAC.parse::<SocketAddr>().unwrap())
        .collect();
    assert_eq!(finals.len(), 1);
    assert_eq!(finals[0].1.status(), Some(408));
    assert!(finals[0].1.to_tag().is_some());
}

#[test]
fn carrier_503_fails_over_and_last_503_becomes_500() {
    let mut net = Net::new(&[C1, C2]);
    let fwd = start_call(&mut net, "call-4");
    let out = net.input(C1, &reply(&fwd, 503, "Service Unavailable", Some("c1")));
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].1.method(), Some(&b"ACK"[..]));
    assert_eq!(out[0].0, C1.parse::<SocketAddr>().unwrap());
    assert_eq!(out[1].0, C2.parse::<SocketAddr>().unwrap());
    let fwd2 = out.into_iter().nth(1).unwrap().1;
    assert_eq!(
        fwd2.request_uri(),
        Some(&b"sip:+33162000000@192.0.2.21:5060"[..])
    );
    assert_ne!(
        fwd.top_via().unwrap().branch,
        fwd2.top_via().unwrap().branch
    );
    let out = net.input(C2, &reply(&fwd2, 503, "Service Unavailable", Some("c2")));
    assert_eq!(out.len(), 2);
    assert_eq!(out[1].0, UAC.parse::<SocketAddr>().unwrap());
    assert_eq!(out[1].1.status(), Some(500));
}

#[test]
fn busy_is_relayed_and_ack_absorbed_hop_by_hop() {
    let mut net = Net::new(&[C1, C2]);
    let fwd = start_call(&mut net, "call-5");
    let out = net.input(C1, &reply(&fwd, 486, "Busy Here", Some("c1")));
    assert_eq!(
        out.len(),
        2,
        "ACK to the carrier, 486 to the dialer; no failover on 486"
    );
    let busy = &out[1].1;
    assert_eq!(busy.status(), Some(486));
    // The carrier repeats its 486: we repeat our ACK, the dialer sees nothing new.
    let out = net.input(C1, &reply(&fwd, 486, "Busy Here", Some("c1")));
    assert_eq!(only(out, C1).method(), Some(&b"ACK"[..]));
    // No ACK from the dialer yet: Timer G repeats the 486.
    let out = net.advance(Duration::from_millis(500));
    assert_eq!(only(out, UAC).status(), Some(486));
    let ack = format!(
        "ACK sip:+33162000000@{PROXY} SIP/2.0\r\nVia: SIP/2.0/UDP {UAC};branch=z9hG4bKa1\r\nMax-Forwards: 70\r\n\
From: <sip:+33162000001@10.0.0.5>;tag=uac1\r\nTo: <sip:+33162000000@{PROXY}>;tag=c1\r\nCall-ID: call-5\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"
    );
    assert!(
        net.input(UAC, &ack).is_empty(),
        "ACK absorbed, not forwarded"
    );
    assert!(
        net.advance(Duration::from_secs(10)).is_empty(),
        "no more 486 after the ACK"
    );
}

fn cancel(call_id: &str) -> String {
    format!(
        "CANCEL sip:+33162000000@{PROXY} SIP/2.0\r\nVia: SIP/2.0/UDP {UAC};branch=z9hG4bKa1;rport\r\nMax-Forwards: 70\r\n\
From: <sip:+33162000001@10.0.0.5>;tag=uac1\r\nTo: <sip:+33162000000@{PROXY}>\r\nCall-ID: {call_id}\r\nCSeq: 1 CANCEL\r\nContent-Length: 0\r\n\r\n"
    )
}

#[test]
fn cancel_after_ringing_is_forwarded() {
    let mut net = Net::new(&[C1]);
    let fwd = start_call(&mut net, "call-6");
    only(net.input(C1, &reply(&fwd, 180, "Ringing", Some("c1"))), UAC);
    let out = net.input(UAC, &cancel("call-6"));
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].1.status(), Some(200));
    assert_eq!(out[0].1.cseq(), Some((1, &b"CANCEL"[..])));
    let fcancel = &out[1].1;
    assert_eq!(fcancel.method(), Some(&b"CANCEL"[..]));
    assert_eq!(
        fcancel.top_via().unwrap().branch,
        fwd.top_via().unwrap().branch,
        "same branch as the INVITE"
    );
    assert!(
        net.input(C1, &reply(fcancel, 200, "OK", Some("c1")))
            .is_empty(),
        "200 to our CANCEL absorbed"
    );
    let out = net.input(C1, &reply(&fwd, 487, "Request Terminated", Some("c1")));
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].1.method(), Some(&b"ACK"[..]));
    assert_eq!(out[1].1.status(), Some(487));
    // Unknown transaction: 481.
    let out = net.input(UAC, &cancel("nope").replace("z9hG4bKa1", "z9hG4bKzz"));
    assert_eq!(only(out, UAC).status(), Some(481));
}

#[test]
fn cancel_before_any_provisional_waits_for_one() {
    let mut net = Net::new(&[C1, C2]);
    let fwd = start_call(&mut net, "call-7");
    let out = net.input(UAC, &cancel("call-7"));
    assert_eq!(only(out, UAC).status(), Some(200));
    let out = net.input(C1, &reply(&fwd, 180, "Ringing", Some("c1")));
    assert_eq!(
        out.len(),
        2,
        "180 relayed, and the held CANCEL goes out now"
    );
    assert!(out
        .iter()
        .any(|(to, m)| *to == C1.parse::<SocketAddr>().unwrap()
            && m.method() == Some(&b"CANCEL"[..])));
    // No failover after a CANCEL, even on 503.
    let out = net.input(C1, &reply(&fwd, 503, "Service Unavailable", Some("c1")));
    assert!(out
        .iter()
        .all(|(to, _)| *to != C2.parse::<SocketAddr>().unwrap()));
}

#[test]
fn timer_c_cancels_a_call_that_rings_forever() {
    let mut net = Net::new(&[C1]);
    let fwd = start_call(&mut net, "call-8");
    only(net.input(C1, &reply(&fwd, 180, "Ringing", Some("c1"))), UAC);
    let out = net.advance(Duration::from_secs(180));
    assert!(out.iter().any(|(_, m)| m.method() == Some(&b"CANCEL"[..])));
    assert!(out
        .iter()
        .any(|(to, m)| *to == UAC.parse::<SocketAddr>().unwrap() && m.status() == Some(408)));
    net.advance(Duration::from_secs(100));
    assert_eq!(net.core.active_transactions(), 0);
}

#[test]
fn max_forwards_zero_gets_483() {
    let mut net = Net::new(&[C1]);
    let out = net.input(
        UAC,
        &invite("z9hG4bKmf", "call-9").replace("Max-Forwards: 70", "Max-Forwards: 0"),
    );
    assert_eq!(only(out, UAC).status(), Some(483));
}

#[test]
fn unknown_source_gets_403() {
    let mut net = Net::new(&[C1]);
    let text = invite("z9hG4bKx", "call-10").replace(UAC, "198.51.100.7:5060");
    let out = net.input("198.51.100.7:5060", &text);
    let r = only(out, "198.51.100.7:5060");
    assert_eq!(r.status(), Some(403));
    assert_eq!(first_line(&r), "SIP/2.0 403 Source Not Authorized");
    assert_eq!(
        r.header_by_name("X-Callguard-Reason"),
        Some(&b"source_not_authorized"[..])
    );
    let reason = String::from_utf8_lossy(r.header_by_name("Reason").unwrap()).into_owned();
    assert!(
        reason.starts_with("SIP ;cause=403 ;text=\"source 198.51.100.7"),
        "{reason}"
    );
    assert!(r
        .header_by_name("Warning")
        .unwrap()
        .starts_with(b"399 192.0.2.10 \""));
    assert!(r.to_tag().is_some());
}

#[test]
fn options_and_other_methods_out_of_dialog() {
    let mut net = Net::new(&[C1]);
    let req = |m: &str| {
        format!(
            "{m} sip:{PROXY} SIP/2.0\r\nVia: SIP/2.0/UDP {UAC};branch=z9hG4bK{m}\r\nFrom: <sip:a@b>;tag=1\r\n\
To: <sip:{PROXY}>\r\nCall-ID: o-{m}\r\nCSeq: 1 {m}\r\nContent-Length: 0\r\n\r\n"
        )
    };
    let r = only(net.input(UAC, &req("OPTIONS")), UAC);
    assert_eq!(r.status(), Some(200));
    let r = only(net.input(UAC, &req("REGISTER")), UAC);
    assert_eq!(r.status(), Some(405));
    assert!(r
        .header_by_name("Allow")
        .unwrap()
        .starts_with(b"INVITE, ACK"));
}

#[test]
fn in_dialog_requests_need_our_route_with_a_valid_token() {
    let mut net = Net::new(&[C1]);
    let bye = |route: &str| {
        format!(
            "BYE sip:victim@203.0.113.9 SIP/2.0\r\nVia: SIP/2.0/UDP {UAC};branch=z9hG4bKr\r\n{route}From: <sip:a@b>;tag=1\r\n\
To: <sip:c@d>;tag=2\r\nCall-ID: relay-try\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n"
        )
    };
    assert_eq!(only(net.input(UAC, &bye("")), UAC).status(), Some(404));
    let forged = "Route: <sip:192.0.2.10:5060;lr;cgr=0000000000000000>\r\n";
    assert_eq!(only(net.input(UAC, &bye(forged)), UAC).status(), Some(403));
}

#[test]
fn malformed_input_is_dropped_or_answered_400() {
    let mut net = Net::new(&[C1]);
    assert!(net.input(UAC, "garbage\r\n\r\n").is_empty());
    assert!(net
        .input_bytes(UAC, Bytes::from(vec![0xffu8; 2000]))
        .is_empty());
    assert!(
        net.input(UAC, &invite("z9hG4bKt", "t")[..60]).is_empty(),
        "truncated head"
    );
    let no_via = invite("z9hG4bKv", "v").replace(
        &format!("Via: SIP/2.0/UDP {UAC};branch=z9hG4bKv;rport\r\n"),
        "",
    );
    assert!(
        net.input(UAC, &no_via).is_empty(),
        "no Via: nowhere to answer"
    );
    let no_callid = invite("z9hG4bKc", "c").replace("Call-ID: c\r\n", "");
    assert_eq!(only(net.input(UAC, &no_callid), UAC).status(), Some(400));
    let bad_len = invite("z9hG4bKl", "l").replace("Content-Length: 4", "Content-Length: 400");
    assert_eq!(only(net.input(UAC, &bad_len), UAC).status(), Some(400));
    let bad_cseq = invite("z9hG4bKq", "q").replace("CSeq: 1 INVITE", "CSeq: 1 BYE");
    assert_eq!(only(net.input(UAC, &bad_cseq), UAC).status(), Some(400));
    // Garbage responses are dropped too.
    assert!(net
        .input(
            C1,
            "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP x;branch=z9hG4bKcgnope\r\n\r\n"
        )
        .is_empty());
    // And the next call still works.
    start_call(&mut net, "after-garbage");
}

#[test]
fn final_built_from_the_cancel_still_reaches_the_dialer() {
    // Some UAS (SIPp's `[last_Via:]`) answer 487 with the CANCEL's Via,
    // which holds only ours: the stored INVITE's Vias route it upstream.
    let mut net = Net::new(&[C1]);
    let fwd = start_call(&mut net, "call-11");
    only(net.input(C1, &reply(&fwd, 180, "Ringing", Some("c1"))), UAC);
    let out = net.input(UAC, &cancel("call-11"));
    let fcancel = out.into_iter().nth(1).unwrap().1;
    let r487 = reply(&fcancel, 487, "Request Terminated", Some("c1"))
        .replace("CSeq: 1 CANCEL", "CSeq: 1 INVITE");
    let out = net.input(C1, &r487);
    let (to, resp) = &out[1];
    assert_eq!(*to, UAC.parse::<SocketAddr>().unwrap());
    assert_eq!(resp.status(), Some(487));
    assert_eq!(resp.top_via().unwrap().branch, Some(&b"z9hG4bKa1"[..]));
}

#[test]
fn draining_refuses_new_invites_and_finishes_calls_in_progress() {
    let mut net = Net::new(&[C1]);
    let fwd = start_call(&mut net, "call-drain-1");
    let out = net.input(C1, &reply(&fwd, 180, "Ringing", Some("c1")));
    assert_eq!(out.len(), 1);
    assert_eq!(net.core.unfinished_transactions(), 2);

    net.core.drain();
    let out = net.input(UAC, &invite("z9hG4bKd2", "call-drain-2"));
    let r = only(out, UAC);
    assert_eq!(r.status(), Some(503));
    assert_eq!(r.header_by_name("Retry-After"), Some(&b"5"[..]));
    assert_eq!(
        r.header_by_name("X-Callguard-Reason"),
        Some(&b"shutting_down"[..])
    );
    // The refusal waits only for its ACK: it does not hold up the drain.
    assert_eq!(net.core.unfinished_transactions(), 2);

    // The call in progress is answered and relayed as usual.
    let out = net.input(C1, &reply(&fwd, 200, "OK", Some("c1")));
    assert_eq!(only(out, UAC).status(), Some(200));
    assert_eq!(net.core.unfinished_transactions(), 0);
}

/// Defers every decision, as the gate does with a shared state store.
struct Deferring;
impl Gatekeeper for Deferring {
    fn check(&self, _m: &Message, _source: &Peer) -> Verdict {
        Verdict::Pending(Pending(Box::pin(std::future::pending())))
    }
}

fn deferring_net() -> Net {
    let mut net = Net::new(&[C1]);
    net.core = Core::new(
        Arc::new(settings(&[C1])),
        Arc::new(Deferring),
        Arc::new(NoObserver),
        0,
    );
    net
}

#[test]
fn pending_decision_answers_100_then_forwards_on_the_verdict() {
    let mut net = deferring_net();
    let out = net.input(UAC, &invite("z9hG4bKp1", "call-p1"));
    assert_eq!(only(out, UAC).status(), Some(100));
    let (id, _job) = net.core.poll_decision().expect("a decision to run");
    assert!(net.core.poll_decision().is_none());
    // A retransmitted INVITE meanwhile gets the 100 again, nothing else.
    let out = net.input(UAC, &invite("z9hG4bKp1", "call-p1"));
    assert_eq!(only(out, UAC).status(), Some(100));
    assert!(net.core.poll_decision().is_none());

    net.core.handle_verdict(
        net.now,
        id,
        Verdict::Forward {
            tenant: "t1".into(),
            headers: vec![("X-Callguard-Warning".into(), "w; why".into())],
            warn: Some(Code::Weekend),
        },
    );
    let fwd = only(net.drain(), C1);
    assert_eq!(fwd.method(), Some(&b"INVITE"[..]));
    assert_eq!(
        fwd.header_by_name("X-Callguard-Warning"),
        Some(&b"w; why"[..])
    );
    // A second verdict for the same transaction changes nothing.
    net.core
        .handle_verdict(net.now, id, Verdict::Reject(stranger(&udp(UAC))));
    assert!(net.drain().is_empty());
}

#[test]
fn pending_decision_rejected_with_explanation() {
    let mut net = deferring_net();
    net.input(UAC, &invite("z9hG4bKp2", "call-p2"));
    let (id, _job) = net.core.poll_decision().unwrap();
    let r = Rejection {
        tenant: Some("t1".into()),
        status: 503,
        phrase: "Service Unavailable".into(),
        code: Code::PolicyUnavailable,
        explanation: "call state unavailable".into(),
        retry_after: Some(60),
    };
    net.core.handle_verdict(net.now, id, Verdict::Reject(r));
    let m = only(net.drain(), UAC);
    assert_eq!(m.status(), Some(503));
    assert_eq!(m.header_by_name("Retry-After"), Some(&b"60"[..]));
    assert_eq!(
        m.header_by_name("X-Callguard-Reason"),
        Some(&b"policy_unavailable"[..])
    );
    // Retransmitted until ACKed (Timer G), as any local rejection.
    let again = net.advance(Duration::from_millis(500));
    assert_eq!(only(again, UAC).status(), Some(503));
}

#[test]
fn cancel_while_deciding_ends_the_call_before_anything_is_forwarded() {
    let mut net = deferring_net();
    net.input(UAC, &invite("z9hG4bKp3", "call-p3"));
    let (id, _job) = net.core.poll_decision().unwrap();
    let out = net.input(UAC, &cancel("call-p3").replace("z9hG4bKa1", "z9hG4bKp3"));
    let codes: Vec<_> = out.iter().map(|(to, m)| (*to, m.status())).collect();
    let uac: SocketAddr = UAC.parse().unwrap();
    assert_eq!(codes, [(uac, Some(200)), (uac, Some(487))]);
    net.core.handle_verdict(
        net.now,
        id,
        Verdict::Forward {
            tenant: "t1".into(),
            headers: vec![],
            warn: None,
        },
    );
    assert!(net.drain().is_empty(), "forwarded after the CANCEL");
}

#[test]
fn options_pings_take_a_silent_carrier_out_of_rotation_and_back() {
    let mut net = Net::new(&[C1, C2]);
    let c1 = net.core.settings.carriers[0].clone();
    let status = net.core.settings.status.clone();
    // Answered: stays up. The ping is an OPTIONS from us, not relayed.
    net.core.ping(net.now, &c1, "ping-1");
    let ping = only(net.drain(), C1);
    assert_eq!(ping.method(), Some(&b"OPTIONS"[..]));
    assert!(ping
        .top_via()
        .unwrap()
        .branch
        .unwrap()
        .starts_with(b"z9hG4bKcg"));
    assert!(net
        .input(C1, &reply(&ping, 200, "OK", Some("p")))
        .is_empty());
    assert!(status.is_up("c1"));

    // Two pings unanswered (down_after = 2): out of rotation.
    for round in 0..2 {
        net.core.ping(net.now, &c1, "ping-1");
        let out = net.drain();
        assert_eq!(out.len(), 1, "round {round}");
        net.advance(Duration::from_secs(6));
    }
    assert!(!status.is_up("c1"));
    // A new call goes to C2 first; C1 stays as the last resort.
    let out = net.input(UAC, &invite("z9hG4bKh1", "call-h1"));
    assert_eq!(out.len(), 2);
    assert_eq!(out[1].0, C2.parse::<SocketAddr>().unwrap());

    // A 503 to a ping counts as no answer; any other answer brings it back.
    net.core.ping(net.now, &c1, "ping-1");
    let ping = only(net.drain(), C1);
    net.input(C1, &reply(&ping, 503, "Busy", Some("p")));
    assert!(!status.is_up("c1"));
    net.core.ping(net.now, &c1, "ping-1");
    let ping = only(net.drain(), C1);
    net.input(C1, &reply(&ping, 404, "Not Found", Some("p")));
    assert!(status.is_up("c1"));
}

#[test]
fn carriers_of_one_priority_share_calls_by_weight() {
    let mut net = Net::new(&[C1, C2]);
    let mut s = settings(&[C1, C2]);
    for c in &mut s.carriers {
        c.priority = 0;
    }
    s.carriers[0].weight = 3;
    s.carriers[1].weight = 1;
    net.core.reconfigure(Arc::new(s), Arc::new(OnlyTenNet));
    let mut first = [0usize; 2];
    for i in 0..4000 {
        let out = net.input(UAC, &invite(&format!("z9hG4bKw{i}"), &format!("call-w{i}")));
        let to = out[1].0;
        first[usize::from(to != C1.parse::<SocketAddr>().unwrap())] += 1;
        // The other carrier is next, after a 503.
        let fwd = out.into_iter().nth(1).unwrap().1;
        let from = if to == C1.parse().unwrap() { C1 } else { C2 };
        let out = net.input(from, &reply(&fwd, 503, "Busy", Some("x")));
        let next = out
            .iter()
            .find(|(_, m)| m.method() == Some(&b"INVITE"[..]))
            .unwrap();
        assert_ne!(next.0, to);
    }
    // 3:1 of 4000 is 3000:1000; binomial sd is about 27.
    assert!((2850..=3150).contains(&first[0]), "{first:?}");

    // Weight 0: only after the weighted ones.
    let mut s = settings(&[C1, C2]);
    for c in &mut s.carriers {
        c.priority = 0;
    }
    s.carriers[0].weight = 0;
    net.core.reconfigure(Arc::new(s), Arc::new(OnlyTenNet));
    for i in 0..50 {
        let out = net.input(UAC, &invite(&format!("z9hG4bKz{i}"), &format!("call-z{i}")));
        assert_eq!(out[1].0, C2.parse::<SocketAddr>().unwrap());
    }
}

// ------------------------------------------------ issue 12: bounded lifetimes

/// The final responses to INVITEs sent to `to`, retransmissions included.
fn finals_to(out: &[(SocketAddr, Message)], to: &str) -> Vec<u16> {
    let to: SocketAddr = to.parse().unwrap();
    out.iter()
        .filter(|(a, m)| {
            *a == to
                && m.status().is_some_and(|s| s >= 200)
                && m.cseq().is_some_and(|c| c.1 == b"INVITE")
        })
        .map(|(_, m)| m.status().unwrap())
        .collect()
}

/// Runs `net` for `d` and returns everything it sent.
fn run(net: &mut Net, d: Duration) -> Vec<(SocketAddr, Message)> {
    net.advance(d)
}

/// What the callee side (and the dialer, for CANCEL) do after the INVITE.
type Peer_ = Box<dyn Fn(&mut Net, &Message) -> Vec<(SocketAddr, Message)>>;

#[test]
fn every_transaction_ends_whatever_the_peers_do() {
    // The longest any scenario may take: Timer C, its CANCEL's 64×T1, the
    // server's Timer H, and a margin.
    let bound = Duration::from_secs(180 + 32 + 32 + 5);
    let scenarios: Vec<(&str, Peer_, u16)> = vec![
        (
            "silent carrier",
            Box::new(|_: &mut Net, _: &Message| Vec::new()),
            408,
        ),
        (
            "100 Trying only",
            Box::new(|net: &mut Net, fwd: &Message| {
                net.input(C1, &reply(fwd, 100, "Trying", None))
            }),
            408,
        ),
        (
            "ringing forever",
            Box::new(|net: &mut Net, fwd: &Message| {
                net.input(C1, &reply(fwd, 180, "Ringing", Some("c1")))
            }),
            408,
        ),
        (
            "CANCEL before any response, carrier silent",
            Box::new(|net: &mut Net, _: &Message| net.input(UAC, &cancel("life"))),
            487,
        ),
        (
            "CANCEL after 100, carrier silent to it",
            Box::new(|net: &mut Net, fwd: &Message| {
                let mut out = net.input(C1, &reply(fwd, 100, "Trying", None));
                out.extend(net.input(UAC, &cancel("life")));
                assert!(
                    out.iter().any(|(_, m)| m.method() == Some(&b"CANCEL"[..])),
                    "a 100 allows the CANCEL at once (§9.1)"
                );
                out
            }),
            487,
        ),
        (
            "busy, the dialer never ACKs",
            Box::new(|net: &mut Net, fwd: &Message| {
                net.input(C1, &reply(fwd, 486, "Busy Here", Some("c1")))
            }),
            486,
        ),
        (
            "answered, the dialer never ACKs",
            Box::new(|net: &mut Net, fwd: &Message| {
                net.input(C1, &reply(fwd, 200, "OK", Some("c1")))
            }),
            200,
        ),
    ];
    for (name, peer, expected) in scenarios {
        let mut net = Net::new(&[C1]);
        let fwd = start_call(&mut net, "life");
        let mut out = peer(&mut net, &fwd);
        out.extend(run(&mut net, bound));
        let finals = finals_to(&out, UAC);
        assert!(
            !finals.is_empty(),
            "{name}: the dialer got no final response"
        );
        assert!(
            finals.iter().all(|&f| f == expected),
            "{name}: finals {finals:?}, expected {expected}"
        );
        assert_eq!(
            net.core.active_transactions(),
            0,
            "{name}: transactions left"
        );
        assert_eq!(net.core.unfinished_transactions(), 0, "{name}");
    }
}

#[test]
fn a_carrier_that_rings_every_minute_is_cancelled_at_the_ring_limit() {
    let mut net = Net::new(&[C1]);
    let fwd = start_call(&mut net, "ring-loop");
    let mut finals = Vec::new();
    // A 180 every 60 s resets Timer C (180 s) each time, up to 4 periods.
    for _ in 0..20 {
        let mut out = net.input(C1, &reply(&fwd, 180, "Ringing", Some("c1")));
        out.extend(net.advance(Duration::from_secs(60)));
        finals.extend(finals_to(&out, UAC));
        if !finals.is_empty() {
            break;
        }
    }
    assert_eq!(finals.first(), Some(&408));
    assert!(net.now <= Instant::now() + Duration::from_secs(12 * 60 + 61));
    net.advance(Duration::from_secs(70));
    assert_eq!(net.core.active_transactions(), 0);
}

#[test]
fn ten_thousand_calls_answered_only_by_100_leave_nothing_behind() {
    let mut net = Net::new(&[C1]);
    for i in 0..10_000 {
        let call_id = format!("t100-{i}");
        let out = net.input(UAC, &invite(&format!("z9hG4bKt{i}"), &call_id));
        let fwd = &out[1].1;
        net.input(C1, &reply(fwd, 100, "Trying", None));
    }
    assert_eq!(net.core.active_transactions(), 20_000);
    net.advance(Duration::from_secs(180 + 32 + 32 + 5));
    assert_eq!(net.core.active_transactions(), 0);
}

// ------------------------------------------------------ issue 12: routing

/// A call answered by C1: the INVITE as forwarded and the Record-Route the
/// dialer learns from the 200.
fn answered(net: &mut Net, call_id: &str) -> (Message, String) {
    let fwd = start_call(net, call_id);
    let ok = only(net.input(C1, &reply(&fwd, 200, "OK", Some("cr1"))), UAC);
    let rr = String::from_utf8(ok.header(HeaderName::RecordRoute).unwrap().to_vec()).unwrap();
    (fwd, rr)
}

/// An in-dialog request of call `call_id`.
#[allow(clippy::too_many_arguments)]
fn dialog(
    method: &str,
    ruri: &str,
    via_host: &str,
    route: &str,
    from: &str,
    to: &str,
    call_id: &str,
    branch: &str,
) -> String {
    format!(
        "{method} {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP {via_host};branch={branch}\r\nRoute: {route}\r\n\
Max-Forwards: 70\r\nFrom: {from}\r\nTo: {to}\r\nCall-ID: {call_id}\r\nCSeq: 2 {method}\r\nContent-Length: 0\r\n\r\n"
    )
}

const DIALER_SIDE: (&str, &str) = (
    "<sip:+33162000001@10.0.0.5>;tag=uac1",
    "<sip:+33162000000@192.0.2.10:5060>;tag=cr1",
);

#[test]
fn in_dialog_requests_go_only_between_the_dialogs_two_sides() {
    let mut net = Net::new(&[C1, C2]);
    let (_, rr) = answered(&mut net, "side-1");
    let (from, to) = DIALER_SIDE;
    // The dialer's BYE reaches the carrier.
    let bye = dialog(
        "BYE",
        "sip:carrier@192.0.2.20:5060",
        UAC,
        &rr,
        from,
        to,
        "side-1",
        "z9hG4bKb1",
    );
    assert_eq!(only(net.input(UAC, &bye), C1).method(), Some(&b"BYE"[..]));
    // The carrier's BYE (tags the other way round) reaches the dialer.
    let cbye = dialog(
        "BYE",
        "sip:dialer@10.0.0.5:5062",
        C1,
        &rr,
        to,
        from,
        "side-1",
        "z9hG4bKc1",
    );
    assert_eq!(only(net.input(C1, &cbye), UAC).method(), Some(&b"BYE"[..]));

    // A stranger holding the token: nothing relayed.
    let stranger = "198.51.100.7:5060";
    for (ruri, f, t) in [
        ("sip:carrier@192.0.2.20:5060", from, to),
        ("sip:dialer@10.0.0.5:5062", to, from),
    ] {
        let req = dialog("INVITE", ruri, stranger, &rr, f, t, "side-1", "z9hG4bKs1");
        assert_eq!(
            only(net.input(stranger, &req), stranger).status(),
            Some(403),
            "{ruri}"
        );
    }
    // The dialer sending the dialog elsewhere: an extra Route, or another
    // target (even the other carrier).
    for (n, (route, ruri)) in [
        (
            format!("{rr}, <sip:203.0.113.9;lr>"),
            "sip:carrier@192.0.2.20:5060",
        ),
        (rr.clone(), "sip:victim@203.0.113.9"),
        (rr.clone(), "sip:carrier@192.0.2.21:5060"),
    ]
    .iter()
    .enumerate()
    {
        let req = dialog(
            "MESSAGE",
            ruri,
            UAC,
            route,
            from,
            to,
            "side-1",
            &format!("z9hG4bKm{n}"),
        );
        assert_eq!(
            only(net.input(UAC, &req), UAC).status(),
            Some(403),
            "{route} {ruri}"
        );
    }
    // The carrier's BYE from another address.
    let spoof = "192.0.2.99:5060";
    let req = dialog(
        "BYE",
        "sip:dialer@10.0.0.5:5062",
        spoof,
        &rr,
        to,
        from,
        "side-1",
        "z9hG4bKx1",
    );
    assert_eq!(only(net.input(spoof, &req), spoof).status(), Some(403));
    // The token of this call does not open another call's dialog.
    let req = dialog(
        "BYE",
        "sip:carrier@192.0.2.20:5060",
        UAC,
        &rr,
        from,
        to,
        "side-2",
        "z9hG4bKo1",
    );
    assert_eq!(only(net.input(UAC, &req), UAC).status(), Some(403));
}

#[test]
fn the_route_naming_us_is_removed_from_an_initial_invite() {
    let mut net = Net::new(&[C1]);
    let text = invite("z9hG4bKrt", "route-1").replace(
        "Max-Forwards: 70\r\n",
        "Route: <sip:192.0.2.10:5060;lr>\r\nMax-Forwards: 70\r\n",
    );
    let out = net.input(UAC, &text);
    let fwd = &out[1].1;
    assert_eq!(out[1].0, C1.parse::<SocketAddr>().unwrap());
    assert!(
        fwd.header(HeaderName::Route).is_none(),
        "no Route reaches the carrier"
    );
}

// ------------------------------------------- issue 12: RFC 4475 answers

#[test]
fn torture_answers_in_simulated_time() {
    let mut net = Net::new(&[C1]);
    let base = invite("z9hG4bKtt", "tt-1");
    let answer = |net: &mut Net, text: String| first_line(&only(net.input(UAC, &text), UAC));
    // badvers
    assert_eq!(
        answer(&mut net, base.replacen("SIP/2.0\r\n", "SIP/7.0\r\n", 1)),
        "SIP/2.0 505 Version Not Supported"
    );
    // lwsstart, trws, lwsruri
    for broken in [
        base.replacen("INVITE sip:", "INVITE  sip:", 1),
        base.replacen("SIP/2.0\r\n", "SIP/2.0 \r\n", 1),
        base.replacen("@192.0.2.10:5060 SIP", "@192.0.2.10:5060; lr SIP", 1),
    ] {
        assert_eq!(answer(&mut net, broken), "SIP/2.0 400 Bad Request-Line");
    }
    // unkscm
    let options = |extra: &str, ruri: &str| {
        format!(
            "OPTIONS {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP {UAC};branch=z9hG4bKo{}\r\n{extra}From: <sip:a@b>;tag=1\r\n\
To: <sip:c@d>\r\nCall-ID: opt-{}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
            ruri.len() + extra.len(),
            ruri.len() + extra.len()
        )
    };
    assert_eq!(
        answer(
            &mut net,
            options("", "nobodyKnowsThisScheme:totallyopaquecontent")
        ),
        "SIP/2.0 416 Unsupported URI Scheme"
    );
    // bext01: Proxy-Require and Require are answered 420 with Unsupported.
    let r = only(
        net.input(
            UAC,
            &options(
                "Require: nothingSupportsThis\r\nProxy-Require: noProxiesSupportThis\r\n",
                "sip:a@b",
            ),
        ),
        UAC,
    );
    assert_eq!(r.status(), Some(420));
    assert_eq!(
        r.header_by_name("Unsupported"),
        Some(&b"noProxiesSupportThis"[..])
    );
    let r = only(
        net.input(UAC, &options("Require: nothingSupportsThis\r\n", "sip:b@c")),
        UAC,
    );
    assert_eq!(r.status(), Some(420));
    assert_eq!(
        r.header_by_name("Unsupported"),
        Some(&b"nothingSupportsThis"[..])
    );
}

#[test]
fn a_cancel_from_another_address_cancels_nothing() {
    let mut net = Net::new(&[C1]);
    let fwd = start_call(&mut net, "cx-1");
    only(net.input(C1, &reply(&fwd, 180, "Ringing", Some("c1"))), UAC);
    // Same branch and sent-by as the dialer's INVITE, sent from elsewhere.
    let out = net.input("10.9.9.9:5062", &cancel("cx-1"));
    assert_eq!(only(out, "10.9.9.9:5062").status(), Some(481));
    // The call goes on: the answer reaches the dialer.
    assert_eq!(
        only(net.input(C1, &reply(&fwd, 200, "OK", Some("c1"))), UAC).status(),
        Some(200)
    );
}
