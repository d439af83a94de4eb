use super::*;
use crate::numbering::{self, Country};

fn n(s: &str) -> E164 {
    numbering::parse(s, Country::FR).unwrap()
}

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

const CAP: Cap = Cap {
    attempts: 4,
    window: chrono::Duration::days(30),
};

#[test]
fn counts_up_to_the_cap_in_a_rolling_window() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = Store::open(dir.path(), Clock::System).unwrap();
    let t: Arc<str> = "acme".into();
    let callee = n("0142000000");
    let day1 = at("2026-11-02T10:00:00Z");
    for d in 0..4 {
        let when = day1 + chrono::Duration::days(d);
        assert_eq!(s.count(&t, callee, when, CAP, true).len(), d as usize);
    }
    let full = s.count(&t, callee, at("2026-11-20T10:00:00Z"), CAP, true);
    assert_eq!(full.len(), 4);
    assert_eq!(s.attempts(&t, callee).len(), 4, "not counted when capped");
    // Another tenant and another callee have their own counts.
    assert!(s.count(&"other".into(), callee, day1, CAP, true).is_empty());
    assert!(s.count(&t, n("0142000001"), day1, CAP, true).is_empty());
    // 30 days after the first attempt it leaves the window: one more fits.
    let day31 = day1 + chrono::Duration::days(30);
    assert_eq!(s.count(&t, callee, day31, CAP, true).len(), 3);
    assert_eq!(s.count(&t, callee, day31, CAP, true).len(), 4);
    assert_eq!(s.attempts(&t, callee).len(), 4);
    // Unenforced (warn) counting goes past the cap.
    assert_eq!(s.count(&t, callee, day31, CAP, false).len(), 4);
    assert_eq!(s.history(&t, callee).attempts.len(), 5);
}

#[test]
fn concurrent_counts_never_exceed_the_cap() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = Store::open(dir.path(), Clock::System).unwrap();
    let t: Arc<str> = "acme".into();
    let callee = n("0142000000");
    let now = at("2026-11-17T10:00:00Z");
    let counted = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|sc| {
        for _ in 0..8 {
            sc.spawn(|| {
                for _ in 0..100 {
                    if s.count(&t, callee, now, CAP, true).len() < 4 {
                        counted.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    assert_eq!(counted.into_inner(), 4);
}

#[test]
fn state_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let t: Arc<str> = "acme".into();
    let now = at("2026-11-17T10:00:00Z");
    {
        let (s, loaded) = Store::open(dir.path(), Clock::System).unwrap();
        assert_eq!(loaded.refusals + loaded.attempts + loaded.dnc_changes, 0);
        s.record_refusal(&t, n("0142000000"), now).unwrap();
        s.record_refusal_soon(&t, n("0142000001"), now);
        s.count(&t, n("0142000002"), now, CAP, true);
        s.count(&t, n("0142000002"), now, CAP, true);
        s.dnc_set("demo", &[n("0142000003"), n("0142000004")], true)
            .unwrap();
        s.dnc_set("demo", &[n("0142000004")], false).unwrap();
        s.flush().unwrap();
    }
    let (s, loaded) = Store::open(dir.path(), Clock::System).unwrap();
    assert_eq!(
        (loaded.refusals, loaded.attempts, loaded.dnc_changes),
        (2, 1, 2)
    );
    assert_eq!(s.history(&t, n("0142000000")).refused_at, Some(now));
    assert_eq!(s.history(&t, n("0142000001")).refused_at, Some(now));
    assert_eq!(s.history(&t, n("0142000002")).attempts.len(), 2);
    let delta = s.dnc_delta("demo");
    assert_eq!(delta.get(n("0142000003").digits()), Some(true));
    assert_eq!(delta.get(n("0142000004").digits()), Some(false));
    assert_eq!(delta.get(n("0142000005").digits()), None);
}

#[test]
fn a_later_refusal_wins_and_an_earlier_one_does_not_shorten_it() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = Store::open(dir.path(), Clock::System).unwrap();
    let t: Arc<str> = "acme".into();
    let late = at("2026-11-17T10:00:00Z");
    s.record_refusal(&t, n("0142000000"), late).unwrap();
    s.record_refusal(&t, n("0142000000"), at("2026-10-01T10:00:00Z"))
        .unwrap();
    assert_eq!(s.history(&t, n("0142000000")).refused_at, Some(late));
}

#[test]
fn sweep_purges_what_no_rule_can_use() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = Store::open(dir.path(), Clock::System).unwrap();
    s.retain(chrono::Duration::days(30), chrono::Duration::days(60));
    let t: Arc<str> = "acme".into();
    let old = at("2026-01-01T10:00:00Z");
    let now = at("2026-11-17T10:00:00Z");
    s.count(&t, n("0142000000"), old, CAP, true);
    s.count(&t, n("0142000001"), now, CAP, true);
    s.record_refusal(&t, n("0142000000"), old).unwrap();
    s.record_refusal(&t, n("0142000001"), now).unwrap();
    s.flush().unwrap();
    assert_eq!(s.sweep(now).unwrap(), 2);
    assert_eq!(s.sizes(), (1, 1));
    drop(s);
    let (_, loaded) = Store::open(dir.path(), Clock::System).unwrap();
    assert_eq!((loaded.refusals, loaded.attempts), (1, 1));
}

#[test]
fn a_second_process_cannot_open_the_same_state() {
    let dir = tempfile::tempdir().unwrap();
    let _first = Store::open(dir.path(), Clock::System).unwrap();
    let e = Store::open(dir.path(), Clock::System).err().unwrap();
    assert!(e.to_string().contains("state.redb"), "{e}");
}
