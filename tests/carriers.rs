//! Carrier health checks through a real process: OPTIONS pings take a
//! carrier that stops answering out of rotation, so calls go straight to
//! the next one, and bring it back when it answers again.

mod common;

use common::*;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

#[test]
fn a_carrier_that_stops_answering_options_leaves_rotation_and_comes_back() {
    let (primary, secondary) = (TestCarrier::start(), TestCarrier::start());
    let p = Proxy::process_with(
        &[
            format!("udp:{}", primary.addr),
            format!("udp:{}", secondary.addr),
        ],
        "[health]\noptions_interval_ms = 200\ndown_after = 2\n",
        "",
    );
    let uac = Ua::bind("127.0.0.1:0");
    let up = |c: &str| format!("callguard_carrier_up{{carrier=\"{c}\"}}");
    assert_eq!(p.metric(&up("c1")), 1.0);
    assert_eq!(call(&p, &uac, "+33142000001", "h-1").status(), Some(486));
    assert_eq!(primary.invites.load(Ordering::Relaxed), 1);

    // The primary goes silent: two unanswered pings (1 s time-out each)
    // take it out of rotation.
    primary.alive.store(false, Ordering::Relaxed);
    wait_for(&p, &up("c1"), 0.0, Duration::from_secs(5));
    let ready = p.http_get("/readyz").unwrap();
    assert!(ready.contains("carrier c1: down"), "{ready}\n{}", p.log());
    assert!(ready.contains("carrier c2: up"), "{ready}");
    // Calls now go straight to the secondary: no time-out on the primary.
    let started = Instant::now();
    for i in 0..5 {
        let r = call(&p, &uac, &format!("+3314200010{i}"), &format!("h-down-{i}"));
        assert_eq!(r.status(), Some(486));
    }
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "calls waited for the silent primary: {:?}",
        started.elapsed()
    );
    assert_eq!(secondary.invites.load(Ordering::Relaxed), 5);
    assert!(p.log().contains("out of rotation"), "{}", p.log());

    // Back: the next answered ping returns it to rotation.
    primary.alive.store(true, Ordering::Relaxed);
    wait_for(&p, &up("c1"), 1.0, Duration::from_secs(5));
    assert_eq!(call(&p, &uac, "+33142000200", "h-back").status(), Some(486));
    assert_eq!(primary.invites.load(Ordering::Relaxed), 2);

    // Both silent: not ready, and calls still try them (then 408).
    primary.alive.store(false, Ordering::Relaxed);
    secondary.alive.store(false, Ordering::Relaxed);
    wait_for(&p, &up("c2"), 0.0, Duration::from_secs(5));
    wait_for(&p, &up("c1"), 0.0, Duration::from_secs(5));
    let ready = p.http_get("/readyz").unwrap();
    assert!(ready.starts_with("HTTP/1.1 503"), "{ready}");
}

#[test]
fn carriers_of_one_priority_share_the_calls_by_weight() {
    let (heavy, light, backup) = (
        TestCarrier::start(),
        TestCarrier::start(),
        TestCarrier::start(),
    );
    let carriers = format!(
        "[[carrier]]\nname = \"heavy\"\naddress = \"udp:{}\"\npriority = 1\nweight = 3\n\
         [[carrier]]\nname = \"light\"\naddress = \"udp:{}\"\npriority = 1\nweight = 1\n\
         [[carrier]]\nname = \"backup\"\naddress = \"udp:{}\"\npriority = 2\n",
        heavy.addr, light.addr, backup.addr
    );
    let p = Proxy::start_with(&[], &carriers, "");
    let uac = Ua::bind("127.0.0.1:0");
    for i in 0..400 {
        let r = call(&p, &uac, &format!("+331420{i:05}"), &format!("w-{i}"));
        assert_eq!(r.status(), Some(486));
    }
    let (h, l) = (
        heavy.invites.load(Ordering::Relaxed),
        light.invites.load(Ordering::Relaxed),
    );
    // 3:1 of 400 is 300:100 (binomial sd about 8.7).
    assert_eq!(h + l, 400);
    assert!((260..=340).contains(&h), "heavy {h}, light {l}");
    assert_eq!(backup.invites.load(Ordering::Relaxed), 0);
    assert_eq!(
        p.metric(r#"callguard_carrier_responses_total{carrier="heavy",code="486"}"#),
        h as f64
    );
}
