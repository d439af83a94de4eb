//! Decisions that wait (a verdict arrives later), OPTIONS pings and
//! carrier weights.

use super::*;

/// Defers every decision, as the gate does with a shared state store.
#[derive(Default)]
struct Deferring;
impl Gatekeeper for Deferring {
    fn check(&self, _m: &Message, _source: &Peer) -> Verdict {
        Verdict::Pending(Pending(Box::pin(std::future::pending())))
    }
}

fn deferring_net() -> Net {
    recorded::<Deferring>(&[C1]).0
}

/// The verdict of a call allowed for tenant `t1`.
fn allowed() -> Verdict {
    Verdict::Forward {
        tenant: "t1".into(),
        headers: vec![],
        warn: None,
        ticket: None,
    }
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
            ticket: None,
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

/// What an INVITE from the dialer made the core send: each message's
/// status (`None` for a request) and urgency.
fn invite_urgency(net: &mut Net, branch: &str, call_id: &str) -> Vec<(Option<u16>, bool)> {
    let text = invite(branch, call_id);
    net.core
        .handle_message(net.now, udp(UAC), Bytes::from(text));
    drain_urgency(net)
}

fn drain_urgency(net: &mut Net) -> Vec<(Option<u16>, bool)> {
    let mut v = Vec::new();
    while let Some(t) = net.core.poll_transmit() {
        v.push((Message::parse(t.payload).unwrap().status(), t.urgent));
    }
    v
}

/// The 100 of a call whose decision is out, first sent or repeated for a
/// retransmitted INVITE, is urgent: the verdict's final response may leave
/// from another thread, and a 1xx after it breaks the dialer's call. Once
/// the final is sent, nothing else can overtake a repeat of it.
#[test]
fn a_100_sent_while_the_decision_is_out_is_urgent() {
    let mut net = deferring_net();
    let call = ("z9hG4bKu1", "call-u1");
    assert_eq!(
        invite_urgency(&mut net, call.0, call.1),
        [(Some(100), true)]
    );
    let (id, _job) = net.core.poll_decision().unwrap();
    assert_eq!(
        invite_urgency(&mut net, call.0, call.1),
        [(Some(100), true)]
    );

    net.core
        .handle_verdict(net.now, id, Verdict::Reject(stranger(&udp(UAC))));
    assert_eq!(drain_urgency(&mut net), [(Some(403), false)]);
    assert_eq!(
        invite_urgency(&mut net, call.0, call.1),
        [(Some(403), false)]
    );
}

/// A call decided at once sends nothing urgent: the driver may batch it.
#[test]
fn a_call_decided_at_once_sends_nothing_urgent() {
    let mut net = recorded::<OnlyTenNet>(&[C1]).0;
    let call = ("z9hG4bKu2", "call-u2");
    // The 100, and the INVITE forwarded to the carrier.
    assert_eq!(
        invite_urgency(&mut net, call.0, call.1),
        [(Some(100), false), (None, false)]
    );
    assert_eq!(
        invite_urgency(&mut net, call.0, call.1),
        [(Some(100), false)]
    );
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

/// The gate records an allowed call when its verdict is made; a CANCEL
/// that came first means the call was never placed, and its outcome line
/// says so (cancelled, 487), once. A refused call has no outcome line.
#[test]
fn cancel_while_deciding_ends_the_call_before_anything_is_forwarded() {
    let (mut net, gate) = recorded::<Deferring>(&[C1]);
    net.input(UAC, &invite("z9hG4bKp4", "call-p4"));
    let (refused, _job) = net.core.poll_decision().unwrap();
    net.input(UAC, &cancel("call-p4").replace("z9hG4bKa1", "z9hG4bKp4"));
    net.core
        .handle_verdict(net.now, refused, Verdict::Reject(stranger(&udp(UAC))));
    assert!(net.drain().is_empty());
    assert!(gate.reports().is_empty(), "a refused call has no outcome");

    net.input(UAC, &invite("z9hG4bKp3", "call-p3"));
    let (id, _job) = net.core.poll_decision().unwrap();
    let out = net.input(UAC, &cancel("call-p3").replace("z9hG4bKa1", "z9hG4bKp3"));
    let codes: Vec<_> = out.iter().map(|(to, m)| (*to, m.status())).collect();
    let uac: SocketAddr = UAC.parse().unwrap();
    assert_eq!(codes, [(uac, Some(200)), (uac, Some(487))]);
    net.core.handle_verdict(net.now, id, allowed());
    assert!(net.drain().is_empty(), "forwarded after the CANCEL");
    assert_eq!(gate.reports(), [(b"call-p3".to_vec(), 487)]);
    // A second verdict reports nothing more.
    net.core.handle_verdict(net.now, id, allowed());
    assert_eq!(gate.reports().len(), 1);
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
