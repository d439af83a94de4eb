//! End-to-end tests of the proxy core through a real `callguard` process.

mod common;

use callguard::sip::message::HeaderName;
use common::*;
use std::io::Write;
use std::net::TcpListener;
use std::time::Duration;

const T: Duration = Duration::from_secs(3);

fn carrier() -> (Ua, String) {
    let uas = Ua::bind("127.0.0.1:0");
    let spec = format!("udp:{}", uas.addr());
    (uas, spec)
}

/// INVITE → 100 at the dialer, INVITE at the carrier; returns the latter.
fn invite_to_carrier(p: &Proxy, uac: &Ua, uas: &Ua, call_id: &str) -> callguard::sip::Message {
    send_invite(p, uac, "+33162000000", call_id);
    let (trying, _) = uac.recv(T).expect("100 Trying");
    assert_eq!(trying.status(), Some(100));
    let (fwd, _) = uas.recv(T).expect("INVITE at the carrier");
    assert_eq!(fwd.method(), Some(&b"INVITE"[..]));
    fwd
}

#[test]
fn basic_call_with_bye_through_record_route_both_directions() {
    let (uas, spec) = carrier();
    let p = Proxy::start(&[spec]);
    let uac = Ua::bind("127.0.0.1:0");
    let fwd = invite_to_carrier(&p, &uac, &uas, "basic-1");
    assert_eq!(fwd.max_forwards(), Some(Ok(69)));
    assert_eq!(fwd.values(HeaderName::Via).count(), 2);
    let rr = String::from_utf8_lossy(fwd.header(HeaderName::RecordRoute).unwrap()).into_owned();
    assert!(rr.contains(";lr"), "{rr}");

    uas.send(
        p.addr(),
        &reply(&fwd, 180, "Ringing", "uas1", &uas.hostport()),
    );
    assert_eq!(uac.recv_final_or_request(T).status(), Some(180));
    uas.send(p.addr(), &reply(&fwd, 200, "OK", "uas1", &uas.hostport()));
    let ok = uac.recv_final_or_request(T);
    assert_eq!(ok.status(), Some(200));

    uac.send(
        p.addr(),
        &caller_dialog_request(&ok, "ACK", 1, &uac.hostport(), "UDP", "z9hG4bKack1"),
    );
    let (ack, _) = uas.recv(T).expect("ACK relayed");
    assert_eq!(ack.method(), Some(&b"ACK"[..]));
    assert!(ack.header(HeaderName::Route).is_none());

    uac.send(
        p.addr(),
        &caller_dialog_request(&ok, "BYE", 2, &uac.hostport(), "UDP", "z9hG4bKbye1"),
    );
    let (bye, _) = uas.recv(T).expect("BYE relayed");
    assert_eq!(bye.method(), Some(&b"BYE"[..]));
    uas.send(p.addr(), &reply(&bye, 200, "OK", "", ""));
    let bye_ok = uac.recv_final_or_request(T);
    assert_eq!(bye_ok.cseq(), Some((2, &b"BYE"[..])));

    // Second call hung up by the carrier: its BYE follows the Record-Route
    // to the dialer's Contact.
    let fwd = invite_to_carrier(&p, &uac, &uas, "basic-2");
    uas.send(p.addr(), &reply(&fwd, 200, "OK", "uas2", &uas.hostport()));
    let _ok = uac.recv_final_or_request(T);
    let rr = String::from_utf8_lossy(fwd.header(HeaderName::RecordRoute).unwrap()).into_owned();
    let bye = format!(
        "BYE sip:dialer@{} SIP/2.0\r\nVia: SIP/2.0/UDP {};branch=z9hG4bKcbye\r\nRoute: {rr}\r\nMax-Forwards: 70\r\n\
From: <sip:+33162000000@x>;tag=uas2\r\nTo: \"Dialer\" <sip:+33162000001@x>;tag=uac-basic-2\r\nCall-ID: basic-2\r\nCSeq: 9 BYE\r\nContent-Length: 0\r\n\r\n",
        uac.hostport(),
        uas.hostport()
    );
    uas.send(p.addr(), &bye);
    let (bye, _) = uac.recv(T).expect("callee's BYE reaches the dialer");
    assert_eq!(bye.method(), Some(&b"BYE"[..]));
    uac.send(p.addr(), &reply(&bye, 200, "OK", "", ""));
    let (ok, _) = uas.recv(T).expect("200 for BYE reaches the carrier");
    assert_eq!(ok.status(), Some(200));
    assert!(p.metric("callguard_transactions_active") > 0.0);
}

#[test]
fn cancel_before_answer() {
    let (uas, spec) = carrier();
    let p = Proxy::start(&[spec]);
    let uac = Ua::bind("127.0.0.1:0");
    let fwd = invite_to_carrier(&p, &uac, &uas, "cancel-1");
    uas.send(p.addr(), &reply(&fwd, 180, "Ringing", "uas1", ""));
    assert_eq!(uac.recv_final_or_request(T).status(), Some(180));
    let cancel = format!(
        "CANCEL sip:+33162000000@{} SIP/2.0\r\nVia: SIP/2.0/UDP {};branch=z9hG4bKcancel-1;rport\r\nMax-Forwards: 70\r\n\
From: \"Dialer\" <sip:+33162000001@x>;tag=uac-cancel-1\r\nTo: <sip:+33162000000@x>\r\nCall-ID: cancel-1\r\nCSeq: 1 CANCEL\r\nContent-Length: 0\r\n\r\n",
        p.addr(),
        uac.hostport()
    );
    uac.send(p.addr(), &cancel);
    let ok = uac.recv_final_or_request(T);
    assert_eq!(
        (ok.status(), ok.cseq().unwrap().1),
        (Some(200), &b"CANCEL"[..])
    );
    let (fcancel, _) = uas.recv(T).expect("CANCEL relayed");
    assert_eq!(fcancel.method(), Some(&b"CANCEL"[..]));
    assert_eq!(
        fcancel.top_via().unwrap().branch,
        fwd.top_via().unwrap().branch
    );
    uas.send(p.addr(), &reply(&fcancel, 200, "OK", "uas1", ""));
    uas.send(
        p.addr(),
        &reply(&fwd, 487, "Request Terminated", "uas1", ""),
    );
    let (ack, _) = uas.recv(T).expect("hop-by-hop ACK for the 487");
    assert_eq!(ack.method(), Some(&b"ACK"[..]));
    assert_eq!(uac.recv_final_or_request(T).status(), Some(487));
    uas.expect_silence(Duration::from_millis(300));
}

#[test]
fn non_2xx_final_is_relayed_and_ack_absorbed() {
    let (uas, spec) = carrier();
    let p = Proxy::start(&[spec]);
    let uac = Ua::bind("127.0.0.1:0");
    let fwd = invite_to_carrier(&p, &uac, &uas, "busy-1");
    uas.send(p.addr(), &reply(&fwd, 486, "Busy Here", "uas1", ""));
    let (ack, _) = uas.recv(T).expect("proxy ACKs the 486 itself");
    assert_eq!(ack.method(), Some(&b"ACK"[..]));
    assert_eq!(ack.cseq(), Some((1, &b"ACK"[..])));
    let busy = uac.recv_final_or_request(T);
    assert_eq!(busy.status(), Some(486));
    let ack = format!(
        "ACK sip:+33162000000@{} SIP/2.0\r\nVia: SIP/2.0/UDP {};branch=z9hG4bKbusy-1;rport\r\nMax-Forwards: 70\r\n\
From: \"Dialer\" <sip:+33162000001@x>;tag=uac-busy-1\r\nTo: {}\r\nCall-ID: busy-1\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
        p.addr(),
        uac.hostport(),
        String::from_utf8_lossy(busy.header(HeaderName::To).unwrap())
    );
    uac.send(p.addr(), &ack);
    uas.expect_silence(Duration::from_millis(700));
    uac.expect_silence(Duration::from_millis(700));
}

#[test]
fn udp_retransmissions_are_absorbed() {
    let (uas, spec) = carrier();
    let p = Proxy::start(&[spec]);
    let uac = Ua::bind("127.0.0.1:0");
    let fwd = invite_to_carrier(&p, &uac, &uas, "rtx-1");
    uas.send(p.addr(), &reply(&fwd, 100, "Trying", "", ""));
    // The dialer repeats its INVITE: answered with 100 again, not forwarded.
    send_invite(&p, &uac, "+33162000000", "rtx-1");
    assert_eq!(uac.recv(T).unwrap().0.status(), Some(100));
    uas.expect_silence(Duration::from_millis(800));
    uas.send(p.addr(), &reply(&fwd, 200, "OK", "uas1", &uas.hostport()));
    let ok = uac.recv_final_or_request(T);
    assert_eq!(ok.status(), Some(200));
    // A retransmitted 200 for the INVITE is relayed (the UAS repeats it until
    // the ACK arrives, §13.3.1.4); an INVITE retransmission now is absorbed.
    uas.send(p.addr(), &reply(&fwd, 200, "OK", "uas1", &uas.hostport()));
    assert_eq!(uac.recv_final_or_request(T).status(), Some(200));
    send_invite(&p, &uac, "+33162000000", "rtx-1");
    uas.expect_silence(Duration::from_millis(300));
    // BYE: a retransmitted 200 for it is absorbed by the client transaction.
    uac.send(
        p.addr(),
        &caller_dialog_request(&ok, "BYE", 2, &uac.hostport(), "UDP", "z9hG4bKrtxbye"),
    );
    let (bye, _) = uas.recv(T).unwrap();
    uas.send(p.addr(), &reply(&bye, 200, "OK", "", ""));
    uas.send(p.addr(), &reply(&bye, 200, "OK", "", ""));
    assert_eq!(uac.recv_final_or_request(T).status(), Some(200));
    uac.expect_silence(Duration::from_millis(300));
}

#[test]
fn silent_carrier_gets_retransmissions_then_408() {
    let (uas, spec) = carrier();
    let p = Proxy::start(&[spec]);
    let uac = Ua::bind("127.0.0.1:0");
    invite_to_carrier(&p, &uac, &uas, "silent-1");
    // Timer A: the INVITE is repeated to the carrier after T1 (500 ms).
    let (again, _) = uas
        .recv(Duration::from_millis(800))
        .expect("INVITE retransmission");
    assert_eq!(again.method(), Some(&b"INVITE"[..]));
    let r = uac.recv_final_or_request(Duration::from_secs(3));
    assert_eq!(r.status(), Some(408));
}

#[test]
fn max_forwards_zero_gets_483() {
    let (uas, spec) = carrier();
    let p = Proxy::start(&[spec]);
    let uac = Ua::bind("127.0.0.1:0");
    let inv = invite(
        &uac.hostport(),
        "UDP",
        p.addr(),
        "+33162000000",
        "mf-1",
        "z9hG4bKmf",
    )
    .replace("Max-Forwards: 70", "Max-Forwards: 0");
    uac.send(p.addr(), &inv);
    assert_eq!(uac.recv_final_or_request(T).status(), Some(483));
    uas.expect_silence(Duration::from_millis(300));
}

#[test]
fn unknown_source_gets_403_and_nothing_is_forwarded() {
    let (uas, spec) = carrier();
    let p = Proxy::start(&[spec]);
    let stranger = Ua::bind("127.0.0.2:0");
    send_invite(&p, &stranger, "+33162000000", "relay-1");
    let r = stranger.recv_final_or_request(T);
    assert_eq!(first_line(&r), "SIP/2.0 403 Source Not Authorized");
    assert_eq!(
        r.header_by_name("X-Callguard-Reason"),
        Some(&b"source_not_authorized"[..])
    );
    let reason = String::from_utf8_lossy(r.header_by_name("Reason").unwrap()).into_owned();
    assert!(
        reason.starts_with("SIP ;cause=403 ;text=\"source 127.0.0.2 "),
        "{reason}"
    );
    assert!(r.header_by_name("Warning").unwrap().starts_with(b"399 "));
    uas.expect_silence(Duration::from_millis(500));
    assert_eq!(p.metric("callguard_invites_total{tenant=\"\",decision=\"reject\",reason=\"source_not_authorized\"}"), 1.0);
}

#[test]
fn tcp_call_with_tcp_carrier_and_connection_reuse() {
    let carrier = TcpListener::bind("127.0.0.1:0").unwrap();
    let p = Proxy::start(&[format!("tcp:{}", carrier.local_addr().unwrap())]);
    let mut uac = TcpUa::new(std::net::TcpStream::connect(p.addr()).unwrap());
    let me = uac.stream.local_addr().unwrap().to_string();
    uac.send(&invite(
        &me,
        "TCP",
        p.addr(),
        "+33162000000",
        "tcp-1",
        "z9hG4bKtcp1",
    ));
    let (conn, _) = carrier.accept().unwrap();
    let mut uas = TcpUa::new(conn);
    let fwd = uas.recv(T).expect("INVITE over TCP");
    assert!(fwd
        .top_via()
        .unwrap()
        .transport
        .eq_ignore_ascii_case(b"TCP"));
    let rr = String::from_utf8_lossy(fwd.header(HeaderName::RecordRoute).unwrap()).into_owned();
    assert!(rr.contains("transport=tcp"), "{rr}");
    let contact = uas.stream.local_addr().unwrap().to_string();
    uas.send(&reply(
        &fwd,
        200,
        "OK",
        "uas1",
        &format!("{contact};transport=tcp"),
    ));
    let ok = uac.recv_skip_100(T);
    assert_eq!(ok.status(), Some(200));
    uac.send(&caller_dialog_request(
        &ok,
        "BYE",
        2,
        &me,
        "TCP",
        "z9hG4bKtcpbye",
    ));
    // The BYE goes to the carrier's Contact, which is this same connection.
    let bye = uas.recv(T).expect("BYE over the same TCP connection");
    assert_eq!(bye.method(), Some(&b"BYE"[..]));
    uas.send(&reply(&bye, 200, "OK", "", ""));
    assert_eq!(uac.recv_skip_100(T).cseq(), Some((2, &b"BYE"[..])));
    // A second call reuses the connection to the carrier.
    uac.send(&invite(
        &me,
        "TCP",
        p.addr(),
        "+33162000000",
        "tcp-2",
        "z9hG4bKtcp2",
    ));
    let fwd2 = uas
        .recv(T)
        .expect("second INVITE on the existing connection");
    assert_eq!(fwd2.call_id(), Some(&b"tcp-2"[..]));
}

#[test]
fn ipv6_dialer_to_ipv4_carrier() {
    let (uas, spec) = carrier();
    let p = Proxy::start(&[spec]);
    let uac = Ua::bind("[::1]:0");
    uac.send(
        p.addr6(),
        &invite(
            &uac.hostport(),
            "UDP",
            p.addr6(),
            "+33162000000",
            "v6-1",
            "z9hG4bKv6",
        ),
    );
    assert_eq!(uac.recv(T).unwrap().0.status(), Some(100));
    let (fwd, _) = uas.recv(T).unwrap();
    let rrs: Vec<_> = fwd
        .values(HeaderName::RecordRoute)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect();
    assert_eq!(rrs.len(), 2, "one Record-Route per address family: {rrs:?}");
    assert!(
        rrs[0].contains("127.0.0.1") && rrs[1].contains("[::1]"),
        "{rrs:?}"
    );
    uas.send(p.addr(), &reply(&fwd, 200, "OK", "uas1", &uas.hostport()));
    let ok = uac.recv_final_or_request(T);
    assert_eq!(ok.status(), Some(200));
    uac.send(
        p.addr6(),
        &caller_dialog_request(&ok, "BYE", 2, &uac.hostport(), "UDP", "z9hG4bKv6bye"),
    );
    let (bye, _) = uas.recv(T).expect("BYE crosses from IPv6 to IPv4");
    uas.send(p.addr(), &reply(&bye, 200, "OK", "", ""));
    assert_eq!(uac.recv_final_or_request(T).status(), Some(200));
}

#[test]
fn malformed_input_never_stops_the_proxy() {
    let (uas, spec) = carrier();
    let mut p = Proxy::start(&[spec]);
    let uac = Ua::bind("127.0.0.1:0");
    let good = invite(
        &uac.hostport(),
        "UDP",
        p.addr(),
        "+33162000000",
        "bad-0",
        "z9hG4bKbad0",
    );
    uac.send(p.addr(), "\u{1}\u{2}garbage\r\n\r\n");
    uac.sock.send_to(&vec![0xffu8; 60_000], p.addr()).unwrap();
    uac.send(p.addr(), &good[..good.len() / 3]);
    uac.send(
        p.addr(),
        &good.replace("Content-Length: ", "Content-Length: 9"),
    );
    let no_via: String = good
        .lines()
        .filter(|l| !l.starts_with("Via:"))
        .map(|l| format!("{l}\n"))
        .collect();
    uac.send(p.addr(), &no_via);
    // Only the bad Content-Length could be answered (400); the rest is dropped.
    let r = uac.recv_final_or_request(T);
    assert_eq!(r.status(), Some(400));
    uac.expect_silence(Duration::from_millis(300));
    uas.expect_silence(Duration::from_millis(10));

    // 1 MB over TCP: the connection is closed, the process lives on.
    let mut s = std::net::TcpStream::connect(p.addr()).unwrap();
    let mut big = b"INVITE sip:x@y SIP/2.0\r\nX-Pad: ".to_vec();
    big.extend(std::iter::repeat_n(b'a', 1 << 20));
    let _ = s.write_all(&big);
    drop(s);
    // A message declaring an absurd Content-Length over TCP.
    let mut s = std::net::TcpStream::connect(p.addr()).unwrap();
    let _ = s.write_all(b"OPTIONS sip:x@y SIP/2.0\r\nContent-Length: 99999999\r\n\r\n");
    drop(s);

    std::thread::sleep(Duration::from_millis(200));
    assert!(p.alive(), "callguard died:\n{}", p.log());
    let fwd = invite_to_carrier(&p, &uac, &uas, "bad-after");
    assert_eq!(fwd.call_id(), Some(&b"bad-after"[..]));
    assert!(p.metric("callguard_sip_malformed_total") >= 3.0);
}

#[test]
fn options_to_the_proxy_and_405_for_other_methods() {
    let (_uas, spec) = carrier();
    let p = Proxy::start(&[spec]);
    let uac = Ua::bind("127.0.0.1:0");
    for (method, code) in [("OPTIONS", 200), ("REGISTER", 405), ("MESSAGE", 405)] {
        uac.send(
            p.addr(),
            &format!(
                "{method} sip:{} SIP/2.0\r\nVia: SIP/2.0/UDP {};branch=z9hG4bK{method}\r\nMax-Forwards: 70\r\nFrom: <sip:a@b>;tag=1\r\n\
To: <sip:x@y>\r\nCall-ID: m-{method}\r\nCSeq: 1 {method}\r\nContent-Length: 0\r\n\r\n",
                p.addr(),
                uac.hostport()
            ),
        );
        let r = uac.recv_final_or_request(T);
        assert_eq!(r.status(), Some(code), "{method}");
        if code == 405 {
            assert!(r.header_by_name("Allow").is_some());
        }
    }
}

/// An INVITE from `uac` with `extra` header lines inserted after From.
fn invite_with(p: &Proxy, uac: &Ua, call_id: &str, extra: &str) -> String {
    invite(
        &uac.hostport(),
        "UDP",
        p.addr(),
        "+33142000000",
        call_id,
        &format!("z9hG4bK{call_id}"),
    )
    .replacen("\r\nTo:", &format!("\r\n{extra}To:"), 1)
}

#[test]
fn what_is_checked_is_what_is_presented() {
    let (uas, spec) = carrier();
    let p = Proxy::start(&[spec]);
    let uac = Ua::bind("127.0.0.1:0");
    for (n, extra, status, code) in [
        // An NPV From, a garbage identity, then a mobile one.
        (
            1,
            "P-Asserted-Identity: garbage\r\nP-Asserted-Identity: <sip:+33612345678@d>\r\n",
            "403",
            "caller_id_category",
        ),
        // The mobile identity in a second value of one header.
        (
            2,
            "P-Asserted-Identity: <sip:+33162000001@d>, <tel:+33612345678>\r\n",
            "403",
            "caller_id_category",
        ),
        // The caller asks the network to withhold its identity.
        (
            3,
            "P-Asserted-Identity: <sip:+33162000001@d>\r\nPrivacy: id\r\n",
            "433",
            "anonymous_caller_id",
        ),
    ] {
        let call_id = format!("pai-{n}");
        uac.send(p.addr(), &invite_with(&p, &uac, &call_id, extra));
        let r = uac.recv_final_or_request(T);
        assert_eq!(
            first_line(&r).split(' ').nth(1),
            Some(status),
            "{extra}: {}",
            first_line(&r)
        );
        assert_eq!(reason(&r), code, "{extra}");
    }
    // Two From headers, and RFC 4475's multi01 shape (two To, two
    // Call-ID, two CSeq): 400, whichever identity was meant.
    for (n, extra) in [
        (4, "From: <sip:+33612345678@d>;tag=x\r\n"),
        (
            5,
            "To: sip:other@example.net\r\nCall-ID: multi01.98asdh@192.0.2.2\r\nCSeq: 59 INVITE\r\n",
        ),
    ] {
        let call_id = format!("dup-{n}");
        uac.send(p.addr(), &invite_with(&p, &uac, &call_id, extra));
        let r = uac.recv_final_or_request(T);
        assert!(
            first_line(&r).starts_with("SIP/2.0 400 Duplicate"),
            "{extra}: {}",
            first_line(&r)
        );
    }
    uas.expect_silence(Duration::from_millis(300));
    // Identities that all pass are forwarded, unchanged.
    uac.send(
        p.addr(),
        &invite_with(
            &p,
            &uac,
            "pai-ok",
            "P-Asserted-Identity: <sip:+33162000001@d>, <tel:+33162000002>\r\n",
        ),
    );
    let (fwd, _) = uas.recv(T).expect("INVITE at the carrier");
    assert_eq!(fwd.headers_by_name("P-Asserted-Identity").count(), 1);
}

#[test]
fn a_carrier_that_answers_only_100_gets_a_cancel_and_the_dialer_a_408() {
    let (uas, spec) = carrier();
    // Timer C 1 s, T1 50 ms (64×T1 = 3.2 s): the whole life in seconds.
    let p = Proxy::start_full(&[spec], "timer_c_s = 1\nt1_ms = 50\nt2_ms = 400\n", "", "");
    let uac = Ua::bind("127.0.0.1:0");
    let fwd = invite_to_carrier(&p, &uac, &uas, "only-100");
    uas.send(p.addr(), &reply(&fwd, 100, "Trying", "", ""));
    let r = uac.recv_final_or_request(Duration::from_secs(3));
    assert_eq!(r.status(), Some(408), "{}", first_line(&r));
    let (cancel, _) = uas.recv(T).expect("the carrier gets a CANCEL");
    assert_eq!(cancel.method(), Some(&b"CANCEL"[..]));
    // The carrier answers neither: every transaction still ends.
    wait_for(
        &p,
        "callguard_transactions_active",
        0.0,
        Duration::from_secs(10),
    );
}

#[test]
fn a_token_relays_nothing_for_a_stranger_and_nothing_elsewhere() {
    let (uas, spec) = carrier();
    let p = Proxy::start(&[spec]);
    let uac = Ua::bind("127.0.0.1:0");
    let fwd = invite_to_carrier(&p, &uac, &uas, "token-1");
    uas.send(p.addr(), &reply(&fwd, 200, "OK", "uas1", &uas.hostport()));
    let ok = uac.recv_final_or_request(T);
    assert_eq!(ok.status(), Some(200));
    // A source of no tenant replays the dialog's Route: a fresh To tag and
    // a re-INVITE to a DNC number, then a BYE.
    let stranger = Ua::bind("127.0.0.2:0");
    for (method, branch) in [("INVITE", "z9hG4bKst1"), ("BYE", "z9hG4bKst2")] {
        let req = caller_dialog_request(&ok, method, 3, &stranger.hostport(), "UDP", branch)
            .replace(";tag=uas1", ";tag=fresh");
        stranger.send(p.addr(), &req);
        let r = stranger.recv_final_or_request(T);
        assert_eq!(r.status(), Some(403), "{method}: {}", first_line(&r));
    }
    // The dialer itself cannot send the dialog elsewhere: an extra Route.
    let elsewhere = Ua::bind("127.0.0.3:0");
    let req = caller_dialog_request(&ok, "MESSAGE", 4, &uac.hostport(), "UDP", "z9hG4bKms1")
        .replacen(
            "\r\nMax-Forwards",
            &format!(", <sip:{};lr>\r\nMax-Forwards", elsewhere.hostport()),
            1,
        );
    uac.send(p.addr(), &req);
    assert_eq!(uac.recv_final_or_request(T).status(), Some(403));
    elsewhere.expect_silence(Duration::from_millis(300));
    uas.expect_silence(Duration::from_millis(100));
}

#[test]
fn the_outbound_proxy_route_is_removed() {
    let (uas, spec) = carrier();
    let p = Proxy::start(&[spec]);
    let uac = Ua::bind("127.0.0.1:0");
    let text = invite(
        &uac.hostport(),
        "UDP",
        p.addr(),
        "+33162000000",
        "obp-1",
        "z9hG4bKobp1",
    )
    .replacen(
        "\r\nMax-Forwards",
        &format!("\r\nRoute: <sip:{};lr>\r\nMax-Forwards", p.addr()),
        1,
    );
    uac.send(p.addr(), &text);
    let (fwd, _) = uas.recv(T).expect("INVITE at the carrier");
    assert!(fwd.header(HeaderName::Route).is_none());
}

/// Dialers write numbers the way their country does: `0412345678` from a
/// Sydney call centre is an Australian mobile, under Australia's hours,
/// where a French tenant's same digits are a number in Lyon.
#[test]
fn national_format_is_read_in_the_tenants_country() {
    let (uas, spec) = carrier();
    let au = Proxy::start_with(
        std::slice::from_ref(&spec),
        "",
        "country = \"AU\"\nrule_sets = [\"fr\", \"au\"]",
    );
    let uac = Ua::bind("127.0.0.1:0");
    // 11:00 on a Tuesday in Paris is 21:00 in Sydney, 18:00 in Perth: an
    // Australian mobile may be in either, and the Standard ends at 20:00.
    let r = call(&au, &uac, "0412345678", "au-national");
    assert_eq!(
        r.header_by_name("X-Callguard-Reason"),
        Some(&b"outside_hours"[..]),
        "{}",
        first_line(&r)
    );
    let warning = String::from_utf8_lossy(r.header_by_name("Warning").unwrap()).into_owned();
    assert!(warning.contains("AU"), "{warning}");
    uas.expect_silence(Duration::from_millis(300));
    drop(au);

    let fr = Proxy::start_with(&[spec], "", "rule_sets = [\"fr\", \"au\"]");
    send_invite(&fr, &uac, "0412345678", "fr-national");
    // Forwarded as dialled: 11:00 in Lyon is inside the French window.
    let (m, _) = uas.recv(T).expect("the French number is called");
    assert_eq!(m.call_id(), Some(&b"fr-national"[..]));
}

/// A landline is held to its area's hours, a mobile to every zone of its
/// country: at 17:00 in Jakarta (19:00 in Jayapura) a Jakarta landline
/// is called and an Indonesian mobile refused. Before, both were refused.
#[test]
fn a_landline_is_called_in_its_area_s_hours() {
    let (uas, spec) = carrier();
    let p = Proxy::process_with(
        std::slice::from_ref(&spec),
        "",
        "country = \"ID\"\nrule_sets = [\"fr\", \"id\"]",
    );
    let uac = Ua::bind("127.0.0.1:0");
    send_invite(&p, &uac, "+62215551234", "id-landline");
    let (m, _) = uas.recv(T).expect("the Jakarta landline is called");
    assert_eq!(m.call_id(), Some(&b"id-landline"[..]));
    let r = call(&p, &uac, "+6281234567890", "id-mobile");
    assert!(
        first_line(&r).starts_with("SIP/2.0 480"),
        "{}",
        first_line(&r)
    );
    assert_eq!(reason(&r), "outside_hours");
    let warning = String::from_utf8_lossy(r.header_by_name("Warning").unwrap()).into_owned();
    assert!(warning.contains("Asia/Jayapura"), "{warning}");
    // The carrier sees the landline's INVITE again (it never answers), and
    // never the mobile's.
    while let Some((m, _)) = uas.recv(Duration::from_millis(300)) {
        assert_eq!(m.call_id(), Some(&b"id-landline"[..]));
    }
}

/// An operator's rule file over the Spanish set: automated calls only from
/// the code for commercial calls (the Ministry's proposed 400), and no
/// call from a mobile, in ranges written as data.
const ES_COMMERCIAL_CODE: &str = r#"set = "es"
title = "Spain"
version = "ops-1"

[[jurisdiction]]
id = "ES"
name = "Spain"
calendars = ["es"]

[[jurisdiction.hours]]
days = ["mon", "tue", "wed", "thu", "fri"]
blocks = ["09:00-21:00"]
law = "TRLGDCU art. 96.2"
source = "E3"
confidence = "H"

[[jurisdiction.caller_id]]
check = "prefixes"
allow = ["+34400"]
modes = ["automated"]
law = "Ley 10/2025"
source = "E4"
confidence = "M"

[[jurisdiction.caller_id]]
check = "prefixes"
deny = ["+346", "+347"]
law = "house rule"
source = "ops"
confidence = "H"
"#;

#[test]
fn caller_id_ranges_of_an_operator_rule_file_are_enforced() {
    let rules = tempfile::tempdir().unwrap();
    let file = rules.path().join("es-ops.toml");
    std::fs::write(&file, ES_COMMERCIAL_CODE).unwrap();
    let (uas, spec) = carrier();
    let p = Proxy::process_with(
        std::slice::from_ref(&spec),
        &format!("[rules]\nfiles = [\"{}\"]", file.display()),
        "country = \"ES\"\nrule_sets = [\"es\"]",
    );
    let uac = Ua::bind("127.0.0.1:0");
    // 11:00 on a Tuesday in Madrid: inside the hours, so only the caller
    // ID decides.
    for (n, identity, mode, refused) in [
        (1, "+34912345678", "predictive", Some("+34400")),
        (2, "+34400123456", "predictive", None),
        // National format, read in the tenant's country.
        (3, "400123456", "predictive", None),
        (4, "+34912345678", "manual", None),
        (5, "+34612345678", "manual", Some("+346")),
    ] {
        let call_id = format!("es-cid-{n}");
        let msg = invite(
            &uac.hostport(),
            "UDP",
            p.addr(),
            "+34912345678",
            &call_id,
            &format!("z9hG4bK{call_id}"),
        )
        .replacen("<sip:+33162000001@", &format!("<sip:{identity}@"), 1)
        .replacen("\r\nTo:", &format!("\r\nX-Dial-Mode: {mode}\r\nTo:"), 1);
        uac.send(p.addr(), &msg);
        // This call's answer: an earlier refusal, never ACKed here, is
        // retransmitted meanwhile.
        let answer = || loop {
            let r = uac.recv_final_or_request(T);
            if r.call_id() == Some(call_id.as_bytes()) {
                return r;
            }
        };
        match refused {
            Some(range) => {
                let r = answer();
                assert_eq!(reason(&r), "caller_id_category", "{n}: {}", first_line(&r));
                assert!(first_line(&r).starts_with("SIP/2.0 403"), "{n}");
                let warning =
                    String::from_utf8_lossy(r.header_by_name("Warning").unwrap()).into_owned();
                assert!(warning.contains(range), "{n}: {warning}");
            }
            None => {
                let Some((m, _)) = uas.recv(T) else {
                    let r = answer();
                    panic!(
                        "{n} was not forwarded: {} {:?}",
                        first_line(&r),
                        r.header_by_name("Warning").map(String::from_utf8_lossy)
                    );
                };
                assert_eq!(m.call_id(), Some(call_id.as_bytes()), "{n}");
            }
        }
    }
}

/// A stranger who saw a dialer's INVITE sends copies of it, then of the
/// ACK of its final response. They match the dialer's transaction (same
/// branch and sent-by), and the proxy sends nothing on their behalf: no
/// 100 Trying repeated to the dialer, no end to the repeats of the final
/// the dialer has not acknowledged.
#[test]
fn a_strangers_copies_of_a_dialers_requests_make_the_proxy_send_nothing() {
    let (uas, spec) = carrier();
    let p = Proxy::start(&[spec]);
    let uac = Ua::bind("127.0.0.1:0");
    let fwd = invite_to_carrier(&p, &uac, &uas, "copy-1");
    let stranger = Ua::bind("127.0.0.2:0");
    let copy = invite(
        &uac.hostport(),
        "UDP",
        p.addr(),
        "+33162000000",
        "copy-1",
        "z9hG4bKcopy-1",
    );
    stranger.send(p.addr(), &copy);
    uac.expect_silence(Duration::from_millis(300));
    // The dialer's own retransmission is answered.
    uac.send(p.addr(), &copy);
    assert_eq!(uac.recv(T).unwrap().0.status(), Some(100));

    uas.send(p.addr(), &reply(&fwd, 486, "Busy Here", "uas1", ""));
    assert_eq!(uas.recv(T).unwrap().0.method(), Some(&b"ACK"[..]));
    let busy = uac.recv_final_or_request(T);
    assert_eq!(busy.status(), Some(486));
    // The stranger's copy of the ACK the dialer would send: the 486 is
    // repeated to the dialer all the same (Timer G, 500 ms).
    let hp = uac.hostport();
    let to = String::from_utf8_lossy(busy.header(HeaderName::To).unwrap()).into_owned();
    stranger.send(
        p.addr(),
        &format!(
            "ACK sip:+33162000000@{} SIP/2.0\r\nVia: SIP/2.0/UDP {hp};branch=z9hG4bKcopy-1;rport\r\n\
             Max-Forwards: 70\r\nFrom: \"Dialer\" <sip:+33162000001@{hp}>;tag=uac-copy-1\r\n\
             To: {to}\r\nCall-ID: copy-1\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
            p.addr()
        ),
    );
    let again = uac.recv_final_or_request(Duration::from_secs(2));
    assert_eq!(again.status(), Some(486), "{}", first_line(&again));
    stranger.expect_silence(Duration::from_millis(100));
}

/// Responses are matched by their branch alone (RFC 3261 §17.1.3), and a
/// dialer sees our branches in the Via of what we relay: a branch must not
/// tell the next one. Another dialer of the trunk (a source the stranger
/// budget does not slow down) who saw one call's branch tries every
/// neighbour of it (the shard and the sequence, with and without the seen
/// branch's tail) against a second call in progress; the call is not ended,
/// every guess is counted as forged, and the carrier's own answer still gets
/// through.
#[test]
fn a_response_forged_for_a_guessed_branch_ends_no_call() {
    let (uas, spec) = carrier();
    let p = Proxy::start(&[spec]);
    let uac = Ua::bind("127.0.0.1:0");
    let first = invite_to_carrier(&p, &uac, &uas, "guess-1");
    let seen = String::from_utf8_lossy(first.top_via().unwrap().branch.unwrap()).into_owned();
    uas.send(p.addr(), &reply(&first, 486, "Busy Here", "uas1", ""));
    assert_eq!(uas.recv(T).unwrap().0.method(), Some(&b"ACK"[..]));
    let busy = uac.recv_final_or_request(T);
    assert_eq!(busy.status(), Some(486));
    ack_final(&p, &uac, "+33162000000", &busy, "z9hG4bKguess-1");

    let second = invite_to_carrier(&p, &uac, &uas, "guess-2");
    let real = String::from_utf8_lossy(second.top_via().unwrap().branch.unwrap()).into_owned();
    // z9hG4bKcg<instance>.<shard>.<sequence>[.<tail>]
    let parts: Vec<&str> = seen.split('.').collect();
    assert!(parts.len() >= 3, "branch {seen}");
    let seq = u64::from_str_radix(parts[2], 16).unwrap();
    let tails = [
        "".to_string(),
        parts[3..].iter().map(|t| format!(".{t}")).collect(),
    ];
    let forger = Ua::bind("127.0.0.1:0");
    let mut tried = 0;
    for shard in 0..16u16 {
        for s in seq.saturating_sub(2)..=seq + 4 {
            for tail in &tails {
                let guess = format!("{}.{shard:x}.{s:x}{tail}", parts[0]);
                let forged = reply(&second, 486, "Busy Here", "forged", "").replace(&real, &guess);
                forger.send(p.addr(), &forged);
                tried += 1;
            }
        }
    }
    assert!(tried > 100, "{tried} guesses");
    uac.expect_silence(Duration::from_millis(500));
    wait_for(&p, "callguard_sip_forged_responses_total", tried as f64, T);
    uas.send(
        p.addr(),
        &reply(&second, 200, "OK", "uas2", &uas.hostport()),
    );
    let ok = uac.recv_final_or_request(T);
    assert_eq!(ok.status(), Some(200), "{}", first_line(&ok));
}

/// A carrier that routes a call back to callguard (or a carrier address
/// that is callguard's own) must not have it decided a second time: one
/// call would count as two attempts against the callee's cap, and be
/// answered by the second decision. The call comes back from 127.0.0.1,
/// a tenant's address, as it would from a carrier on the tenant's network.
#[test]
fn a_call_routed_back_to_the_proxy_gets_482_and_is_decided_once() {
    let (uas, spec) = carrier();
    let p = Proxy::start(&[spec]);
    let uac = Ua::bind("127.0.0.1:0");
    let fwd = invite_to_carrier(&p, &uac, &uas, "loop-1");
    // Its 100 first, so that callguard does not repeat the INVITE here.
    uas.send(p.addr(), &reply(&fwd, 100, "Trying", "", ""));
    uas.send(p.addr(), std::str::from_utf8(fwd.buf()).unwrap());
    let (answer, _) = uas.recv(T).expect("an answer to the call sent back");
    assert_eq!(first_line(&answer), "SIP/2.0 482 Loop Detected");
    uas.expect_silence(Duration::from_millis(300));

    uas.send(
        p.addr(),
        &reply(&fwd, 482, "Loop Detected", "c1", &uas.hostport()),
    );
    let fin = uac.recv_final_or_request(T);
    assert_eq!(fin.status(), Some(482), "{}", first_line(&fin));
    let allowed = "callguard_invites_total{tenant=\"test\",decision=\"allow\",reason=\"\"}";
    assert_eq!(p.metric(allowed), 1.0);
    assert!(
        !p.http_get("/metrics")
            .unwrap_or_default()
            .contains("decision=\"reject\""),
        "the call sent back was decided again"
    );
}
