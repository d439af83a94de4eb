//! In-dialog routing, Route handling and the RFC 4475 answers.

use super::*;

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

/// A copy of the dialer's INVITE, or of its ACK, from another host
/// matches the dialer's transaction (same branch and sent-by) and does
/// nothing: no 100 repeated to the dialer on a stranger's behalf, and our
/// final's repeats go on until the dialer's own ACK.
#[test]
fn copies_of_a_dialers_requests_from_another_address_do_nothing() {
    let mut net = Net::new(&[C1]);
    let fwd = start_call(&mut net, "cp-1");
    const ELSEWHERE: &str = "10.9.9.9:5062";
    let out = net.input(ELSEWHERE, &invite("z9hG4bKa1", "cp-1"));
    assert!(
        out.is_empty(),
        "INVITE copy: {:?}",
        out.iter()
            .map(|o| (o.0, first_line(&o.1)))
            .collect::<Vec<_>>()
    );
    // The dialer's own retransmission still gets the 100.
    assert_eq!(
        only(net.input(UAC, &invite("z9hG4bKa1", "cp-1")), UAC).status(),
        Some(100)
    );

    let out = net.input(C1, &reply(&fwd, 486, "Busy Here", Some("c1")));
    assert_eq!(out.len(), 2, "ACK to the carrier, 486 to the dialer");
    let ack = format!(
        "ACK sip:+33162000000@{PROXY} SIP/2.0\r\nVia: SIP/2.0/UDP {UAC};branch=z9hG4bKa1;rport\r\nMax-Forwards: 70\r\n\
From: <sip:+33162000001@10.0.0.5>;tag=uac1\r\nTo: <sip:+33162000000@{PROXY}>;tag=c1\r\nCall-ID: cp-1\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"
    );
    assert!(net.input(ELSEWHERE, &ack).is_empty(), "ACK copy");
    let out = net.advance(Duration::from_millis(500));
    assert_eq!(only(out, UAC).status(), Some(486), "Timer G goes on");
    assert!(net.input(UAC, &ack).is_empty(), "the dialer's ACK");
    assert!(
        net.advance(Duration::from_secs(10)).is_empty(),
        "no more 486"
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

/// A call of ours that comes back (a carrier whose address is a tenant's,
/// or one that routes it back) is answered 482 without a second decision;
/// the 482 reaches the dialer as the carrier's answer. A Via that only
/// looks like ours, or one of ours copied into another call, is no loop.
#[test]
fn a_call_relayed_back_to_the_proxy_gets_482_and_no_second_decision() {
    let mut net = Net::new(&[C1]);
    let fwd = start_call(&mut net, "loop-1");
    let back = String::from_utf8(fwd.buf().to_vec()).unwrap();
    const BOUNCER: &str = "10.0.0.9:5060";
    let out = net.input(BOUNCER, &back);
    // A decision would have sent a 100 and the INVITE on to C1.
    let answer = only(out, BOUNCER);
    assert_eq!(answer.status(), Some(482), "{}", first_line(&answer));
    // The same bytes again (the carrier side retransmits): the same answer.
    assert_eq!(only(net.input(BOUNCER, &back), BOUNCER).status(), Some(482));

    let out = net.input(C1, &reply(&fwd, 482, "Loop Detected", Some("c1")));
    assert_eq!(out.len(), 2, "ACK to the carrier, 482 to the dialer");
    assert!(out
        .iter()
        .any(|(to, m)| *to == UAC.parse::<SocketAddr>().unwrap() && m.status() == Some(482)));

    // Our Via copied into another call's INVITE: its branch is bound to
    // loop-1, so loop-2 is decided and forwarded as usual.
    let via = String::from_utf8(fwd.header(HeaderName::Via).unwrap().to_vec()).unwrap();
    let copied = invite("z9hG4bKa2", "loop-2").replacen(
        "Max-Forwards",
        &format!("Via: {via}\r\nMax-Forwards"),
        1,
    );
    let out = net.input(UAC, &copied);
    assert_eq!(out.len(), 2, "100 and the INVITE forwarded");
    assert_eq!(out[1].0, C1.parse::<SocketAddr>().unwrap());
    // Our mark with a made-up tail is no loop either.
    let forged = invite("z9hG4bKa3", "loop-3").replacen(
        "Max-Forwards",
        "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKcg00000000.0.1.0123abcd\r\nMax-Forwards",
        1,
    );
    assert_eq!(net.input(UAC, &forged).len(), 2);
}
