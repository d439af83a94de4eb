//! The Redis backend through real processes: a `redis-server` started by
//! the test on a loopback port, and one or two callguard instances sharing
//! it. The cap holds across instances, a refusal recorded on one blocks the
//! other, Redis going away fails closed (or open when configured) and the
//! service comes back by itself when Redis returns.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(3);

/// A private `redis-server` (no persistence) on a free loopback port.
struct Redis {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

impl Redis {
    fn start() -> Redis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut r = Redis {
            child: None,
            port,
            dir: tempfile::tempdir().unwrap(),
        };
        r.run();
        r
    }

    fn run(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "redis-server is not installed (Debian package redis-server; .ci/run installs it)",
            );
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.ping() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn ping(&self) -> bool {
        self.try_command("PING").is_some_and(|l| l == "+PONG")
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends one command (inline form) and returns the first line of the
    /// answer.
    fn command(&self, cmd: &str) -> String {
        self.try_command(cmd).expect("redis reachable")
    }

    /// [`Redis::command`], or `None` while the server does not answer.
    fn try_command(&self, cmd: &str) -> Option<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        s.write_all(format!("{cmd}\r\n").as_bytes()).ok()?;
        let mut buf = [0u8; 512];
        let n = s.read(&mut buf).ok()?;
        let answer = String::from_utf8_lossy(&buf[..n]);
        Some(answer.lines().next().unwrap_or("").to_owned())
    }

    /// `[state]` keys pointing a callguard at this server.
    fn state_config(&self, fail_open: bool) -> String {
        self.state_config_waiting(fail_open, 200)
    }

    fn state_config_waiting(&self, fail_open: bool, timeout_ms: u64) -> String {
        format!(
            "backend = \"redis\"\nfail_open = {fail_open}\n[state.redis]\n\
             url = \"redis://127.0.0.1:{}/0\"\ntimeout_ms = {timeout_ms}\n",
            self.port
        )
    }

    /// Freezes (`STOP`) or thaws (`CONT`) the server: its answers wait.
    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &pid])
            .status();
        assert!(ok.is_ok_and(|s| s.success()), "kill -{sig} {pid}");
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

fn proxy_on(redis: &Redis, carrier: &Ua, fail_open: bool) -> Proxy {
    Proxy::process_with(
        &[format!("udp:{}", carrier.addr())],
        &redis.state_config(fail_open),
        "",
    )
}

/// A fail-closed instance on `redis` whose tenant refuses `+33142000099`
/// (DNC, a rule that needs no state).
fn proxy_with_dnc(redis: &Redis, carrier: &Ua) -> Proxy {
    Proxy::process_with(
        &[format!("udp:{}", carrier.addr())],
        &format!(
            "{}[[dnc_list]]\nname = \"d\"\nfile = \"{}\"\n",
            redis.state_config(false),
            write_list("+33142000099\n").display()
        ),
        "dnc_lists = [\"d\"]\n",
    )
}

/// Records that `number` refused tenant `test`'s calls.
fn refuse(p: &Proxy, number: &str) {
    let body = format!(r#"{{"tenant":"test","number":"{number}"}}"#);
    let (status, answer) = p.http("POST", "/v1/refusals", &body);
    assert_eq!(status, 201, "{answer}");
}

#[test]
fn two_instances_share_the_cap_and_refusals() {
    let redis = Redis::start();
    let uas = Ua::bind("127.0.0.1:0");
    let a = proxy_on(&redis, &uas, false);
    let b = proxy_on(&redis, &uas, false);
    // 100 INVITEs at once to one callee, half through each instance.
    race_forwards_exactly_four(&[a.addr(), b.addr()], uas, "+33142000077", "shared");

    // A refusal recorded through one instance blocks calls through the other.
    refuse(&a, "+33142000088");
    let uac = Ua::bind("127.0.0.1:0");
    let r = call(&b, &uac, "+33142000088", "shared-refused");
    assert_eq!(r.status(), Some(603));
    assert_eq!(reason(&r), "refusal_cooloff");
    // And `/v1/check` on either instance sees the shared history.
    let (status, body) = a.http(
        "POST",
        "/v1/check",
        r#"{"tenant":"test","from":"+33162000001","to":"+33142000077"}"#,
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"reason\":\"frequency_cap\""), "{body}");
    // 31 days later the four attempts have left the 30-day window.
    let (status, body) = b.http(
        "POST",
        "/v1/check",
        r#"{"tenant":"test","from":"+33162000001","to":"+33142000077","at":"2026-12-18T11:00:00+01:00"}"#,
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"decision\":\"allow\""), "{body}");
}

/// A refusal signalled on a BYE over UDP is written to Redis (from the
/// receive thread, which is not the runtime's): the next call, through
/// the other instance, is refused.
#[test]
fn a_refusal_signalled_on_a_bye_reaches_the_other_instance() {
    let redis = Redis::start();
    let uas = Ua::bind("127.0.0.1:0");
    let a = proxy_on(&redis, &uas, false);
    let b = proxy_on(&redis, &uas, false);
    refusal_on_a_bye_blocks_the_next_call(&a, &b, uas, "+33142000042", "rb");
}

/// A refusal signalled on a BYE while Redis is unreachable is not lost:
/// the instance keeps it (on its disk too, so a `kill -9` meanwhile loses
/// nothing), refuses the callee on it meanwhile, and shares it once Redis
/// is back, even a Redis that lost everything: the other instance then
/// refuses the callee.
#[test]
fn a_refusal_signalled_while_redis_is_down_is_shared_when_it_returns() {
    let mut redis = Redis::start();
    let uas = Ua::bind("127.0.0.1:0");
    let mut a = proxy_on(&redis, &uas, false);
    let b = proxy_on(&redis, &uas, false);
    let uac = Ua::bind("127.0.0.1:0");
    let callee = "+33142000043";
    let ok = answered_call(&a, &uas, &uac, callee, "rd");
    redis.stop();
    hang_up_refused(&a, &uas, &uac, &ok, "rd");
    let deadline = Instant::now() + T;
    while !a.log().contains("refusal signalled on BYE not yet shared") {
        assert!(Instant::now() < deadline, "{}", a.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    // Past the 100 ms batch: on A's disk, and nowhere else.
    std::thread::sleep(Duration::from_millis(400));
    a.kill9_and_restart();
    // While Redis is still down, A refuses the callee on its own view, for
    // the refusal (not `503`: it knows why, and until when).
    let r = call(&a, &uac, callee, "rd-a");
    assert_eq!(
        (r.status(), reason(&r)),
        (Some(603), "refusal_cooloff".into())
    );
    // Redis comes back empty (it keeps nothing on disk).
    redis.run();
    wait_refused(&b, callee, Duration::from_secs(10));
    let r = call(&b, &uac, callee, "rd-2");
    assert_eq!(
        (r.status(), reason(&r)),
        (Some(603), "refusal_cooloff".into())
    );
    assert!(a.log().contains("now shared through Redis"), "{}", a.log());
    uas.expect_silence(Duration::from_millis(100));
}

/// A Redis that may evict keys to make room could drop a refusal or an
/// attempt and let a call through that the law forbids: while its
/// settings allow that, at start or later, calls that need the state are
/// refused `503 policy_unavailable` with the reason, and served again once
/// the settings are fixed, without a restart.
#[test]
fn a_redis_that_may_evict_keys_is_not_trusted_with_the_state() {
    let redis = Redis::start();
    assert_eq!(redis.command("CONFIG SET maxmemory 100mb"), "+OK");
    assert_eq!(
        redis.command("CONFIG SET maxmemory-policy volatile-lru"),
        "+OK"
    );
    let uas = Ua::bind("127.0.0.1:0");
    let p = proxy_with_dnc(&redis, &uas);
    let uac = Ua::bind("127.0.0.1:0");
    // From the first call on.
    let r = call(&p, &uac, "+33142000001", "ev-1");
    assert_eq!(r.status(), Some(503), "{}", first_line(&r));
    assert_eq!(reason(&r), "policy_unavailable");
    let warning = String::from_utf8_lossy(r.header_by_name("Warning").unwrap()).into_owned();
    assert!(
        warning.contains("maxmemory-policy volatile-lru"),
        "{warning}"
    );
    assert_eq!(p.metric("callguard_state_backend_up"), 0.0);
    assert!(p.log().contains("Redis may evict"), "{}", p.log());
    // The rules that need no state still answer first.
    let r = call(&p, &uac, "+33142000099", "ev-dnc");
    assert_eq!((r.status(), reason(&r)), (Some(603), "dnc".to_owned()));
    uas.expect_silence(Duration::from_millis(100));

    // Fixed: served again within the 10 s between checks.
    assert_eq!(
        redis.command("CONFIG SET maxmemory-policy noeviction"),
        "+OK"
    );
    until_answered(&p, &uac, &uas, "ev-fixed", 486, Duration::from_secs(15));
    assert_eq!(p.metric("callguard_state_backend_up"), 1.0);
    assert!(p.log().contains("Redis no longer evicts keys"));

    // Changed back while running: refused again.
    assert_eq!(
        redis.command("CONFIG SET maxmemory-policy allkeys-lru"),
        "+OK"
    );
    until_answered(&p, &uac, &uas, "ev-again", 503, Duration::from_secs(15));
}

/// Sends calls through `p`, one every 250 ms, until one gets `want`
/// (`486` from `uas` when forwarded, or `503` from `p`), bounded by
/// `within`; every call before it must get the other one.
fn until_answered(p: &Proxy, uac: &Ua, uas: &Ua, tag: &str, want: u16, within: Duration) {
    let deadline = Instant::now() + within;
    for n in 0.. {
        let id = format!("{tag}-{n}");
        send_invite(p, uac, &format!("+3314201{n:04}"), &id);
        let forwarded = uas.recv(Duration::from_millis(500));
        if let Some((fwd, from)) = &forwarded {
            assert_eq!(fwd.method(), Some(&b"INVITE"[..]));
            uas.send(*from, &reply(fwd, 486, "Busy Here", "c", ""));
        }
        let r = loop {
            let r = uac.recv_final_or_request(T);
            if r.call_id() == Some(id.as_bytes()) {
                break r;
            }
        };
        if forwarded.is_some() {
            let (ack, _) = uas.recv(T).expect("hop-by-hop ACK of the 486");
            assert_eq!(ack.method(), Some(&b"ACK"[..]));
        }
        if r.status() == Some(want) {
            if want == 503 {
                assert_eq!(reason(&r), "policy_unavailable");
            }
            return;
        }
        let other = if want == 503 { 486 } else { 503 };
        assert_eq!(r.status(), Some(other), "{}", first_line(&r));
        assert!(Instant::now() < deadline, "no {want} within {within:?}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// A call the carrier challenged for credentials gives its attempt back
/// to the shared count: the INVITE sent again with them is the one counted.
#[test]
fn a_challenged_call_gives_its_attempt_back_to_the_shared_count() {
    let redis = Redis::start();
    let uas = Ua::bind("127.0.0.1:0");
    let p = proxy_on(&redis, &uas, false);
    challenged_calls_count_once(&p, uas, "+33142000041");
}

#[test]
fn redis_down_fails_closed_then_service_resumes_by_itself() {
    let mut redis = Redis::start();
    let uas = Ua::bind("127.0.0.1:0");
    let p = proxy_with_dnc(&redis, &uas);
    let uac = Ua::bind("127.0.0.1:0");
    let answer = |callee: &str, id: &str| call(&p, &uac, callee, id);
    // Up: forwarded (the carrier sees it).
    let first = Ua::bind("127.0.0.1:0");
    send_invite(&p, &first, "+33142000001", "down-1");
    let (fwd, _) = uas.recv(T).expect("forwarded while Redis is up");
    uas.send(p.addr(), &reply(&fwd, 486, "Busy Here", "c", ""));
    assert_eq!(first.recv_final_or_request(T).status(), Some(486));
    let (ack, _) = uas.recv(T).expect("hop-by-hop ACK of the 486");
    assert_eq!(ack.method(), Some(&b"ACK"[..]));

    redis.stop();
    let r = answer("+33142000002", "down-2");
    assert_eq!(r.status(), Some(503), "{}", first_line(&r));
    assert_eq!(reason(&r), "policy_unavailable");
    assert_eq!(r.header_by_name("Retry-After"), Some(&b"60"[..]));
    uas.expect_silence(Duration::from_millis(200));
    // A call the stateless rules refuse keeps its own answer.
    let r = answer("+33142000099", "down-dnc");
    assert_eq!((r.status(), reason(&r)), (Some(603), "dnc".to_owned()));
    assert_eq!(p.metric("callguard_state_backend_up"), 0.0);
    assert!(p.metric("callguard_state_errors_total") >= 1.0);
    assert_eq!(
        p.metric(r#"callguard_invites_total{tenant="test",decision="reject",reason="policy_unavailable"}"#),
        1.0
    );
    assert!(p.log().contains("shared call state (Redis) unavailable"));
    assert!(p.log().contains("shared call state (Redis) unavailable"));

    // An outage of a few seconds, long enough for the client's reconnect
    // attempts to run out: every call meanwhile is refused, none forwarded.
    let outage = Instant::now();
    let mut i = 0;
    while outage.elapsed() < Duration::from_secs(4) {
        i += 1;
        let r = answer(&format!("+3314202{i:04}"), &format!("outage-{i}"));
        assert_eq!(r.status(), Some(503));
        std::thread::sleep(Duration::from_millis(400));
    }
    uas.expect_silence(Duration::from_millis(100));

    // Redis returns on the same port: calls go through again, with no
    // restart or reload of callguard.
    redis.run();
    until_answered(&p, &uac, &uas, "back", 486, Duration::from_secs(15));
    assert_eq!(p.metric("callguard_state_backend_up"), 1.0);
    assert!(p.log().contains("reachable again"));
}

/// A call the dialer cancels while its decision waits on Redis: answered
/// 487 at once, never forwarded, and when Redis answers and the call is
/// allowed, the audit trail has its decision and its outcome (cancelled).
#[test]
fn a_call_cancelled_while_redis_decides_has_its_outcome_in_the_audit_trail() {
    let redis = Redis::start();
    let uas = Ua::bind("127.0.0.1:0");
    let p = Proxy::process_with(
        &[format!("udp:{}", uas.addr())],
        &redis.state_config_waiting(false, 10_000),
        "",
    );
    let uac = Ua::bind("127.0.0.1:0");
    // While Redis answers, a call is decided and forwarded.
    let first = Ua::bind("127.0.0.1:0");
    send_invite(&p, &first, "+33142000061", "warm");
    let (fwd, _) = uas.recv(T).expect("the first call forwarded");
    assert_eq!(fwd.call_id(), Some(&b"warm"[..]));
    uas.send(p.addr(), &reply(&fwd, 486, "Busy Here", "c", ""));
    let (ack, _) = uas.recv(T).expect("hop-by-hop ACK of the 486");
    assert_eq!(ack.method(), Some(&b"ACK"[..]));

    redis.signal("STOP");
    let hp = uac.hostport();
    send_invite(&p, &uac, "+33142000062", "while-deciding");
    let (trying, _) = uac.recv(T).expect("100 Trying while the decision waits");
    assert_eq!(trying.status(), Some(100), "{}", first_line(&trying));
    uac.send(
        p.addr(),
        &format!(
            "CANCEL sip:+33142000062@{0} SIP/2.0\r\nVia: SIP/2.0/UDP {hp};branch=z9hG4bKwhile-deciding;rport\r\n\
             Max-Forwards: 70\r\nFrom: \"Dialer\" <sip:+33162000001@{hp}>;tag=uac-while-deciding\r\n\
             To: <sip:+33142000062@{0}>\r\nCall-ID: while-deciding\r\nCSeq: 1 CANCEL\r\nContent-Length: 0\r\n\r\n",
            p.addr()
        ),
    );
    let mut got = Vec::new();
    while got.len() < 2 {
        let (m, _) = uac.recv(T).expect("the CANCEL's 200 and the INVITE's 487");
        got.push((m.status(), m.cseq().map(|c| c.1.to_vec())));
    }
    got.sort();
    assert_eq!(
        got,
        [
            (Some(200), Some(b"CANCEL".to_vec())),
            (Some(487), Some(b"INVITE".to_vec()))
        ]
    );
    redis.signal("CONT");
    uas.expect_silence(Duration::from_millis(500));

    let audit = p.dir.path().join("data/audit");
    let deadline = Instant::now() + Duration::from_secs(5);
    let lines = loop {
        let mut lines: Vec<serde_json::Value> = Vec::new();
        for f in std::fs::read_dir(&audit).unwrap() {
            let text = std::fs::read_to_string(f.unwrap().path()).unwrap();
            lines.extend(text.lines().filter_map(|l| serde_json::from_str(l).ok()));
        }
        lines.retain(|l| l["call_id"] == "while-deciding");
        if lines.len() >= 2 || Instant::now() > deadline {
            break lines;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let kinds: Vec<_> = lines.iter().map(|l| l["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["decision", "outcome"], "{lines:?}");
    assert_eq!(lines[0]["decision"], "allow");
    assert_eq!(lines[1]["status"], 487);
    assert_eq!(lines[1]["outcome"], "cancelled");
}

#[test]
fn fail_open_forwards_with_a_warning_when_redis_is_down() {
    let mut redis = Redis::start();
    let uas = Ua::bind("127.0.0.1:0");
    let p = proxy_on(&redis, &uas, true);
    redis.stop();
    let uac = Ua::bind("127.0.0.1:0");
    send_invite(&p, &uac, "+33142000003", "open-1");
    let (fwd, _) = uas.recv(T).expect("forwarded unchecked (fail_open)");
    let warning = String::from_utf8_lossy(fwd.header_by_name("X-Callguard-Warning").unwrap());
    assert!(warning.starts_with("policy_unavailable;"), "{warning}");
    assert_eq!(
        p.metric(
            r#"callguard_invites_total{tenant="test",decision="warn",reason="policy_unavailable"}"#
        ),
        1.0
    );
}

/// Under `fail_open`, the calls forwarded while Redis is down are counted
/// by the instance: its own count still caps the callee meanwhile, and it
/// reaches Redis when Redis is back (even empty), so the other instance
/// caps the callee too.
#[test]
fn fail_open_counts_what_it_forwards_and_shares_it_when_redis_returns() {
    let mut redis = Redis::start();
    let (uas_a, uas_b) = (Ua::bind("127.0.0.1:0"), Ua::bind("127.0.0.1:0"));
    let a = proxy_on(&redis, &uas_a, true);
    let b = proxy_on(&redis, &uas_b, false);
    redis.stop();
    let uac = Ua::bind("127.0.0.1:0");
    let callee = "+33142000056";
    // The fifth within the 30 days: refused on the instance's own count.
    four_forwarded_then_capped(&a, uas_a, &uac, callee, "open-count");
    assert_eq!(
        a.metric(
            r#"callguard_invites_total{tenant="test",decision="warn",reason="policy_unavailable"}"#
        ),
        4.0
    );
    let unshared = r#"callguard_state_unshared{kind="attempts"} "#;
    a.wait_metric(unshared, 1.0);

    // Redis comes back empty: A's four attempts reach it, and B, which
    // never saw them, refuses the callee.
    redis.run();
    let check = format!(r#"{{"tenant":"test","from":"+33162000001","to":"{callee}"}}"#);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = b.http("POST", "/v1/check", &check);
        assert_eq!(status, 200, "{body}");
        if body.contains("\"reason\":\"frequency_cap\"") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "A's attempts never reached Redis: {body}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let r = call(&b, &uac, callee, "open-count-b");
    assert_eq!(
        (r.status(), reason(&r)),
        (Some(480), "frequency_cap".to_owned())
    );
    uas_b.expect_silence(Duration::from_millis(300));
    // A says so, and keeps nothing more.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !(a.log().contains("now shared through Redis")
        && a.http_get("/metrics")
            .is_some_and(|m| m.contains(&format!("{unshared}0\n"))))
    {
        assert!(Instant::now() < deadline, "{}", a.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Four calls to `callee` through `p` reach the carrier (which answers
/// `486`), and the fifth is refused `480 frequency_cap` (the French cap of
/// 4 in 30 days) without reaching it.
fn four_forwarded_then_capped(p: &Proxy, carrier: Ua, uac: &Ua, callee: &str, tag: &str) {
    let carrier = busy_carrier(carrier, 4);
    for i in 0..4 {
        let r = call(p, uac, callee, &format!("{tag}-{i}"));
        assert_eq!(r.status(), Some(486), "call {i} ({tag}) forwarded");
    }
    let r = call(p, uac, callee, &format!("{tag}-4"));
    assert_eq!(
        (r.status(), reason(&r)),
        (Some(480), "frequency_cap".to_owned())
    );
    assert_eq!(
        carrier.join().unwrap(),
        4,
        "INVITEs that reached the carrier"
    );
}

/// An instance whose tenant calls under the French cap without the
/// cool-off: a call's first round trip to Redis is its count.
fn capped_only(redis: &Redis, carrier: &Ua, fail_open: bool, timeout_ms: u64) -> Proxy {
    Proxy::process_with(
        &[format!("udp:{}", carrier.addr())],
        &format!(
            "{}[rule_set.capped]\nbase = \"fr\"\nrefusal_cooloff_days = 0\n",
            redis.state_config_waiting(fail_open, timeout_ms)
        ),
        "rule_sets = [\"capped\"]\n",
    )
}

/// Attempts Redis holds for tenant `test`'s `callee` (digits, no `+`).
fn attempts_in_redis(redis: &Redis, callee: &str) -> String {
    redis.command(&format!(
        "ZCARD callguard:attempts:test:{}",
        callee.trim_start_matches('+')
    ))
}

/// Waits until a thawed Redis has run what its clients queued while it
/// was frozen (its own connection's PING is answered after its turn).
fn caught_up(redis: &Redis) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !redis.ping() {
        assert!(Instant::now() < deadline, "redis never answered again");
    }
    std::thread::sleep(Duration::from_millis(300));
}

/// Waits until `p` holds no attempts of its own (all moved to Redis).
fn all_shared(p: &Proxy) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while p.metric(r#"callguard_state_unshared{kind="attempts"} "#) != 0.0 {
        assert!(Instant::now() < deadline, "{}", p.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A count that times out is still sent: a slow or frozen Redis runs it
/// when it gets to it. A call refused `503` meanwhile (fail-closed) must
/// not count against the callee, who keeps the four calls of the French
/// cap.
#[test]
fn a_call_refused_while_redis_hangs_is_not_counted_when_redis_catches_up() {
    let redis = Redis::start();
    let uas = Ua::bind("127.0.0.1:0");
    let p = capped_only(&redis, &uas, false, 200);
    let uac = Ua::bind("127.0.0.1:0");
    let callee = "+33142000070";
    // Redis knows the count script, as it does once calls have run: a
    // late EVALSHA of an unknown script would fail and count nothing.
    let carrier = busy_carrier(uas.try_clone(), 1);
    assert_eq!(call(&p, &uac, "+33142000071", "warm").status(), Some(486));
    assert_eq!(carrier.join().unwrap(), 1);
    redis.signal("STOP");
    for i in 0..2 {
        let r = call(&p, &uac, callee, &format!("hung-{i}"));
        assert_eq!(
            (r.status(), reason(&r)),
            (Some(503), "policy_unavailable".to_owned())
        );
    }
    redis.signal("CONT");
    caught_up(&redis);
    assert_eq!(attempts_in_redis(&redis, callee), ":0", "{}", p.log());

    four_forwarded_then_capped(&p, uas, &uac, callee, "after");
}

/// Under `fail_open`, while Redis is up but hangs: calls to callees whose
/// attempts this instance holds do not queue behind one another's move of
/// them to Redis (each would wait out the time-out of the one before);
/// they are decided on the instance's own view at once. When Redis
/// catches up, each forwarded call is counted there exactly once: the
/// counts and moves that timed out, which it runs late, are taken back.
#[test]
fn while_redis_hangs_calls_do_not_queue_and_each_is_counted_once() {
    const K: usize = 12;
    let redis = Redis::start();
    let uas = Ua::bind("127.0.0.1:0");
    let p = capped_only(&redis, &uas, true, 1000);
    let uac = Ua::bind("127.0.0.1:0");
    let callees: Vec<String> = (0..K).map(|i| format!("+331420001{i:02}")).collect();
    // Sends one call to each callee at once; returns how long until the
    // carrier had them all, and their warnings.
    let round = |tag: &str| {
        let started = Instant::now();
        for (i, c) in callees.iter().enumerate() {
            send_invite(&p, &uac, c, &format!("{tag}-{i}"));
        }
        let mut warnings = std::collections::HashMap::new();
        while warnings.len() < K {
            let (m, from) = uas.recv(Duration::from_secs(30)).expect("forwarded");
            if m.method() != Some(&b"INVITE"[..]) {
                continue;
            }
            uas.send(from, &reply(&m, 486, "Busy Here", "c", ""));
            let w = m.header_by_name("X-Callguard-Warning").unwrap_or_default();
            warnings.insert(
                m.call_id().unwrap_or_default().to_vec(),
                String::from_utf8_lossy(w).into_owned(),
            );
        }
        (
            started.elapsed(),
            warnings.into_values().collect::<Vec<_>>(),
        )
    };
    // Redis knows the count and move scripts, as it does once calls and
    // an outage have run: a late EVALSHA of an unknown script would fail
    // and count nothing.
    let carrier = busy_carrier(uas.try_clone(), 2);
    assert_eq!(call(&p, &uac, "+33142000199", "warm").status(), Some(486));
    redis.signal("STOP");
    assert_eq!(call(&p, &uac, "+33142000199", "warm-1").status(), Some(486));
    assert_eq!(carrier.join().unwrap(), 2);
    redis.signal("CONT");
    all_shared(&p);

    redis.signal("STOP");
    // Each count waits out the second's time-out, and is counted here.
    let (_, first) = round("first");
    assert!(
        first.iter().all(|w| w.starts_with("policy_unavailable;")),
        "{first:?}"
    );
    // Now every callee has an attempt held here: one call moves it, or the
    // share task does, and the others do not wait for that move.
    let (took, second) = round("second");
    let moving = second
        .iter()
        .filter(|w| w.contains("being moved to Redis"))
        .count();
    assert!(moving >= K - 1, "{second:?}");
    assert!(
        took < Duration::from_secs(5),
        "{K} calls took {took:?}: they queued behind a move to a hung Redis"
    );

    redis.signal("CONT");
    caught_up(&redis);
    all_shared(&p);
    for c in &callees {
        assert_eq!(attempts_in_redis(&redis, c), ":2", "{c}");
    }
}

/// A Redis that restarts (here without persistence, so empty) is noticed
/// by the 10 s check of its settings: logged as the loss it is, and
/// counted for the alert.
#[test]
fn a_redis_restart_is_logged_and_counted() {
    let mut redis = Redis::start();
    let uas = Ua::bind("127.0.0.1:0");
    let p = proxy_on(&redis, &uas, false);
    let restarts = "callguard_state_redis_restarts_total";
    assert_eq!(p.metric(restarts), 0.0);
    redis.stop();
    redis.run();
    let deadline = Instant::now() + Duration::from_secs(15);
    while p.metric(restarts) < 1.0 {
        assert!(Instant::now() < deadline, "{}", p.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        p.log().contains("Redis restarted without appendonly"),
        "{}",
        p.log()
    );
    // Once: the next checks see the same server.
    std::thread::sleep(Duration::from_secs(11));
    assert_eq!(p.metric(restarts), 1.0);
}

/// A list file that lives as long as the test process.
fn write_list(text: &str) -> std::path::PathBuf {
    let dir = tempfile::tempdir().unwrap().keep();
    let path = dir.join("dnc.txt");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn dnc_changes_through_one_instance_reach_the_others() {
    let redis = Redis::start();
    let uas = Ua::bind("127.0.0.1:0");
    let list = write_list("# empty\n");
    let start = || {
        Proxy::process_with(
            &[format!("udp:{}", uas.addr())],
            &format!(
                "{}[[dnc_list]]\nname = \"d\"\nfile = \"{}\"\n",
                redis.state_config(false),
                list.display()
            ),
            "dnc_lists = [\"d\"]\n",
        )
    };
    let a = start();
    let mut b = start();
    let uac = Ua::bind("127.0.0.1:0");
    let listed_on = |p: &Proxy, n: &str, want: bool| {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let (status, body) = p.http("GET", &format!("/v1/dnc/d/{n}"), "");
            assert_eq!(status, 200, "{body}");
            if body.contains(&format!("\"listed\":{want}")) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{n} listed={want} never seen: {body}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };

    // Added on A: B refuses calls to it.
    let (status, body) = a.http("PUT", "/v1/dnc/d/+33142000055", "");
    assert_eq!(status, 200, "{body}");
    listed_on(&b, "+33142000055", true);
    let r = call(&b, &uac, "+33142000055", "dnc-b-1");
    assert_eq!((r.status(), reason(&r)), (Some(603), "dnc".to_owned()));
    assert_eq!(b.metric(r#"callguard_dnc_entries{list="d"}"#), 1.0);

    // A bulk addition on B reaches A.
    let (status, body) = b.http("POST", "/v1/dnc/d", "+33142000056\n+33142000057\n");
    assert_eq!(status, 200, "{body}");
    listed_on(&a, "+33142000057", true);

    // Removed on B: A lets it through again.
    let (status, body) = b.http("DELETE", "/v1/dnc/d/+33142000055", "");
    assert_eq!(status, 200, "{body}");
    listed_on(&a, "+33142000055", false);

    // Changes made while B is down reach it when it starts again, before
    // its first call.
    b.kill9_and_restart_after(|| {
        let (status, body) = a.http("PUT", "/v1/dnc/d/+33142000058", "");
        assert_eq!(status, 200, "{body}");
    });
    // Loaded before the instance is ready: no wait.
    let (_, body) = b.http("GET", "/v1/dnc/d/+33142000058", "");
    assert!(body.contains("\"listed\":true"), "{body}");
    listed_on(&b, "+33142000057", true);
    listed_on(&b, "+33142000055", false);
}

#[test]
fn consent_changes_through_one_instance_reach_the_others() {
    let redis = Redis::start();
    let uas = Ua::bind("127.0.0.1:0");
    let list = write_list("number,date,proof\n");
    let start = || {
        Proxy::process_with(
            &[format!("udp:{}", uas.addr())],
            &format!(
                "{}[[consent_list]]\nname = \"optin\"\nfile = \"{}\"\n",
                redis.state_config(false),
                list.display()
            ),
            "campaign = \"prospecting\"\nconsent_lists = [\"optin\"]\n",
        )
    };
    let a = start();
    let mut b = start();
    let uac = Ua::bind("127.0.0.1:0");
    let given_on = |p: &Proxy, n: &str, want: bool| {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let (status, body) = p.http("GET", &format!("/v1/consent/optin/{n}"), "");
            assert_eq!(status, 200, "{body}");
            if body.contains("\"consent\":null") != want {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "{n} given={want} never seen: {body}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let consent = r#"{"date":"2026-11-10","proof":"web form 12","hours":true}"#;

    // Given on A: B forwards the prospecting call.
    let (status, body) = a.http("PUT", "/v1/consent/optin/+33142000065", consent);
    assert_eq!(status, 200, "{body}");
    let seen = given_on(&b, "+33142000065", true);
    assert!(
        seen.contains("\"proof\":\"web form 12\"") && seen.contains("\"hours\":true"),
        "{seen}"
    );
    let carrier = busy_carrier(uas, 1);
    assert_eq!(
        call(&b, &uac, "+33142000065", "consent-b-1").status(),
        Some(486)
    );
    assert_eq!(carrier.join().unwrap(), 1);

    // Withdrawn on B: A refuses it.
    let (status, body) = b.http("DELETE", "/v1/consent/optin/+33142000065", "");
    assert_eq!(status, 200, "{body}");
    given_on(&a, "+33142000065", false);
    let r = call(&a, &uac, "+33142000065", "consent-a-1");
    assert_eq!(
        (r.status(), reason(&r)),
        (Some(608), "no_consent".to_owned())
    );

    // Given while B is down: loaded before it is ready.
    b.kill9_and_restart_after(|| {
        let (status, body) = a.http("PUT", "/v1/consent/optin/+33142000066", consent);
        assert_eq!(status, 200, "{body}");
    });
    let (_, body) = b.http("GET", "/v1/consent/optin/+33142000066", "");
    assert!(
        body.contains("\"source\":\"api\"") && body.contains("web form 12"),
        "{body}"
    );
}

/// A decision that waits for Redis is answered on another thread, which
/// sends at once, while the receive thread holds what it sends for the end
/// of its batch. The 100 Trying of a call waiting for its decision must
/// still reach the dialer before the final response: a UAC in Completed
/// takes a 1xx as an error (SIPp aborted a call on a 100 after its 480).
#[test]
fn the_100_of_a_call_decided_through_redis_comes_before_its_final() {
    let redis = Redis::start();
    let uas = Ua::bind("127.0.0.1:0");
    let p = proxy_on(&redis, &uas, false);
    refuse(&p, "+33142000099");
    let uac = Ua::bind("127.0.0.1:0");
    // Waves of INVITEs sent at once, each read by the proxy's receive
    // thread in one batch, while Redis answers the first of the wave: one
    // chance per wave for a final to overtake a held 100. The answers are
    // read between waves, so that none is lost to a full socket buffer.
    let (waves, per_wave) = (40, 16);
    let n = waves * per_wave;
    let mut finals = std::collections::HashMap::new();
    let mut trying = 0;
    let mut late = Vec::new();
    let mut read_until = |until: Instant, finals: &mut std::collections::HashMap<String, u16>| {
        while finals.len() < n && Instant::now() < until {
            let Some((m, _)) = uac.recv(Duration::from_millis(5)) else {
                continue;
            };
            let call_id = String::from_utf8_lossy(m.call_id().unwrap_or_default()).into_owned();
            match m.status() {
                Some(100) if finals.contains_key(&call_id) => late.push(call_id),
                Some(100) => trying += 1,
                Some(s) if s >= 200 => {
                    finals.insert(call_id, s);
                }
                _ => {}
            }
        }
    };
    for w in 0..waves {
        for i in w * per_wave..(w + 1) * per_wave {
            let call_id = format!("order-{i}");
            let branch = format!("z9hG4bKorder{i}");
            let msg = invite(
                &uac.hostport(),
                "UDP",
                p.addr(),
                "+33142000099",
                &call_id,
                &branch,
            );
            uac.send(p.addr(), &msg);
        }
        read_until(Instant::now() + Duration::from_millis(20), &mut finals);
    }
    read_until(Instant::now() + Duration::from_secs(10), &mut finals);
    assert_eq!(finals.len(), n, "every call gets its final response");
    assert!(finals.values().all(|&s| s == 603), "refused: {finals:?}");
    assert!(
        trying > 0,
        "the decisions waited for Redis, with a 100 each"
    );
    assert!(late.is_empty(), "100 Trying after the final for {late:?}");
    uas.expect_silence(Duration::from_millis(100));
}
