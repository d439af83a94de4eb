//! Calls end to end: forwarding, retransmissions, failover, CANCEL, Timer C,
//! local answers and draining.

use super::*;

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
    // Said like every refusal: the carrier failed, not the policy.
    assert_eq!(
        finals[0].1.header_by_name("X-Callguard-Reason"),
        Some(&b"carrier_timeout"[..])
    );
    let reason = finals[0].1.header_by_name("Reason").unwrap();
    assert!(
        reason.starts_with(b"SIP ;cause=408 ;text=\"no carrier answered"),
        "{}",
        String::from_utf8_lossy(reason)
    );
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

/// A final response of our own (no carrier to try: 503) is repeated until
/// its ACK. The ACK ends in the transaction even when its headers would
/// fail the request checks (here a Max-Forwards above 255): the dialer has
/// our answer, and nothing is relayed. The same ACK on another branch names
/// no transaction of ours: it fails the checks, is dropped, and the 503
/// goes on.
#[test]
fn the_ack_of_our_own_final_ends_its_repeats_even_when_malformed() {
    let mut net = Net::new(&[]);
    let out = net.input(UAC, &invite("z9hG4bKr1", "call-r1"));
    let rejected = only(out, UAC);
    assert_eq!(rejected.status(), Some(503));
    let tag = String::from_utf8(rejected.to_tag().unwrap().to_vec()).unwrap();
    let out = net.advance(Duration::from_millis(500));
    assert_eq!(only(out, UAC).status(), Some(503), "Timer G repeats it");

    let ack = |branch: &str| {
        format!(
            "ACK sip:+33162000000@{PROXY} SIP/2.0\r\nVia: SIP/2.0/UDP {UAC};branch={branch};rport\r\nMax-Forwards: 300\r\n\
From: <sip:+33162000001@10.0.0.5>;tag=uac1\r\nTo: <sip:+33162000000@{PROXY}>;tag={tag}\r\nCall-ID: call-r1\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"
        )
    };
    assert!(net.input(UAC, &ack("z9hG4bKother")).is_empty());
    let out = net.advance(Duration::from_millis(1000));
    assert_eq!(
        only(out, UAC).status(),
        Some(503),
        "an ACK of another branch does not end the transaction"
    );
    assert!(net.input(UAC, &ack("z9hG4bKr1")).is_empty());
    // Confirmed (§17.2.1): a late copy of the INVITE is absorbed, neither
    // answered nor decided again.
    assert!(
        net.input(UAC, &invite("z9hG4bKr1", "call-r1")).is_empty(),
        "the INVITE again after the ACK"
    );
    assert!(
        net.advance(Duration::from_secs(40)).is_empty(),
        "no more 503 after its ACK"
    );
    assert_eq!(net.core.active_transactions(), 0);
}

/// Once a call has its final response and its ACK, the retransmission and
/// failure timers it armed (A, B, C, G, H) are cancelled: the next
/// deadline is an end timer's, not Timer G's 500 ms, and no stale entry
/// waits in the queue for Timer C's three minutes.
#[test]
fn a_finished_call_leaves_only_its_end_timers() {
    let mut net = Net::new(&[C1]);
    let fwd = start_call(&mut net, "call-12");
    net.input(C1, &reply(&fwd, 486, "Busy Here", Some("c1")));
    let ack = format!(
        "ACK sip:+33162000000@{PROXY} SIP/2.0\r\nVia: SIP/2.0/UDP {UAC};branch=z9hG4bKa1\r\nMax-Forwards: 70\r\n\
From: <sip:+33162000001@10.0.0.5>;tag=uac1\r\nTo: <sip:+33162000000@{PROXY}>;tag=c1\r\nCall-ID: call-12\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"
    );
    assert!(net.input(UAC, &ack).is_empty());
    let next = net.core.poll_timeout().expect("the end timers");
    assert!(
        next >= net.now + Duration::from_secs(5),
        "Timer I (T4) first, not Timer G: {:?}",
        next - net.now
    );
    assert_eq!(
        net.core.pending_timers(),
        2,
        "Timer I of the server transaction, Timer D of the client one"
    );
    assert!(net.advance(Duration::from_secs(40)).is_empty());
    assert_eq!(net.core.active_transactions(), 0);
    assert_eq!(net.core.pending_timers(), 0);
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
    // Answered statelessly: nothing is kept, nothing is scheduled.
    assert_eq!(net.core.active_transactions(), 0);
    assert_eq!(net.core.pending_timers(), 0);
    // A retransmission gets the same answer, To tag included; its ACK
    // (no route of ours) goes nowhere.
    let again = only(net.input("198.51.100.7:5060", &text), "198.51.100.7:5060");
    assert_eq!(again.to_tag(), r.to_tag());
    let ack = format!(
        "ACK sip:+33142000000@{PROXY} SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bKx\r\n\
         From: <sip:+33162000001@198.51.100.7>;tag=uac-call-10\r\nTo: <sip:+33142000000@{PROXY}>;tag={}\r\n\
         Call-ID: call-10\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
        String::from_utf8_lossy(r.to_tag().unwrap())
    );
    assert!(net.input("198.51.100.7:5060", &ack).is_empty());
    assert_eq!(net.core.active_transactions(), 0);
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

/// A 2xx that outlives every transaction (a carrier still retransmitting
/// after Timer M) is relayed by its Vias (§16.7), but only along the way
/// its request came: the branch is bound to the call and to the address
/// below our Via. The same branch under another Via, another Call-ID or a
/// changed tail relays nothing.
#[test]
fn a_late_response_is_relayed_only_where_its_request_came_from() {
    let mut net = Net::new(&[C1]);
    let fwd = start_call(&mut net, "late-1");
    let ok = reply(&fwd, 200, "OK", Some("c1"));
    assert_eq!(only(net.input(C1, &ok), UAC).status(), Some(200));
    net.advance(Duration::from_secs(40));
    assert_eq!(net.core.active_transactions(), 0);

    let late = only(net.input(C1, &ok), UAC);
    assert_eq!(late.status(), Some(200));
    assert_eq!(
        late.values(HeaderName::Via).count(),
        1,
        "our Via is removed"
    );

    let elsewhere = ok
        .replace(&format!("UDP {UAC}"), "UDP 203.0.113.9:5062")
        .replace("received=10.0.0.5", "received=203.0.113.9");
    assert_ne!(elsewhere, ok);
    assert!(net.input(C1, &elsewhere).is_empty(), "another next hop");
    let other_call = ok.replace("Call-ID: late-1", "Call-ID: late-2");
    assert!(net.input(C1, &other_call).is_empty(), "another call");
    let ours = fwd.top_via().unwrap().branch.unwrap().to_vec();
    let mut forged = String::from_utf8(ours.clone()).unwrap();
    let last = forged.pop().unwrap();
    forged.push(if last == '0' { '1' } else { '0' });
    let tampered = ok.replace(std::str::from_utf8(&ours).unwrap(), &forged);
    assert!(net.input(C1, &tampered).is_empty(), "a changed tail");
}
