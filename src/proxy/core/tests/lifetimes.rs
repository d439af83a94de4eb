//! Every transaction ends, whatever the peers do.

use super::*;

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

/// When every carrier answers 503, the dialer gets 500 (a 503 would tell
/// it to avoid this proxy) and the call's outcome is the last carrier's
/// answer, reported once.
#[test]
fn a_call_every_carrier_refused_is_settled_once_with_the_carriers_answer() {
    let (mut net, settled) = recorded::<OnlyTenNet>(&[C1, C2]);
    let fwd = start_call(&mut net, "life");
    let out = net.input(C1, &reply(&fwd, 503, "Service Unavailable", Some("c1")));
    let fwd2 = only(
        out.into_iter()
            .filter(|(_, m)| m.method() == Some(&b"INVITE"[..]))
            .collect(),
        C2,
    );
    let mut out = net.input(C2, &reply(&fwd2, 503, "Service Unavailable", Some("c2")));
    out.extend(run(&mut net, Duration::from_secs(40)));
    assert_eq!(finals_to(&out, UAC).first(), Some(&500));
    assert_eq!(settled.reports(), [(b"life".to_vec(), 503)]);
    assert_eq!(net.core.active_transactions(), 0);
}

/// The gatekeeper's ticket comes back with the outcome, unless a challenge
/// (`407`) came from elsewhere than the carrier the INVITE went to: a
/// challenge gives the call's attempt back, and anyone can send a response
/// with a guessed branch.
#[test]
fn a_challenge_returns_the_ticket_only_from_the_carrier() {
    let (mut net, settled) = recorded::<Ticketed>(&[C1]);
    let mut finals = Vec::new();
    for (i, (from, code)) in [(C1, 407), ("192.0.2.99:5060", 407), (C1, 486)]
        .into_iter()
        .enumerate()
    {
        let out = net.input(UAC, &invite(&format!("z9hG4bKch{i}"), &format!("chal-{i}")));
        let fwd = only(
            out.into_iter()
                .filter(|(_, m)| m.method() == Some(&b"INVITE"[..]))
                .collect(),
            C1,
        );
        let out = net.input(from, &reply(&fwd, code, "Refused", Some("c1")));
        finals.extend(finals_to(&out, UAC));
    }
    assert_eq!(finals, [407, 407, 486], "each relayed to the dialer");
    let t = Some(Ticket([7, 8]));
    assert_eq!(*settled.tickets.lock(), [t, None, t]);
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
        let (mut net, settled) = recorded::<OnlyTenNet>(&[C1]);
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
        assert_eq!(
            settled.reports(),
            [(b"life".to_vec(), expected)],
            "{name}: one outcome, the dialer's final"
        );
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
