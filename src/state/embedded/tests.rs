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

/// With Redis, this store keeps a refusal only until Redis has it: a
/// forgotten refusal is gone from the disk too, and forgetting an earlier
/// instant leaves a later refusal in place.
#[test]
fn a_forgotten_refusal_stays_forgotten_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let t: Arc<str> = "acme".into();
    let (shared, kept) = (n("0142000000"), n("0142000001"));
    let (early, late) = (at("2026-11-17T10:00:00Z"), at("2026-11-17T11:00:00Z"));
    {
        let (s, _) = Store::open(dir.path(), Clock::System).unwrap();
        s.record_refusal_soon(&t, shared, early);
        s.record_refusal_soon(&t, kept, late);
        s.flush().unwrap();
        assert_eq!(s.refusals().len(), 2);
        s.forget_refusal(&t, shared, early);
        s.forget_refusal(&t, kept, early);
        s.flush().unwrap();
        assert_eq!(s.refusals(), vec![(t.clone(), kept, late)]);
    }
    let (s, loaded) = Store::open(dir.path(), Clock::System).unwrap();
    assert_eq!(loaded.refusals, 1);
    assert_eq!(s.refused_at(&t, shared), None);
    assert_eq!(s.refused_at(&t, kept), Some(late));
}

/// With Redis, this store keeps the attempts of calls forwarded during an
/// outage only until Redis has them: the shared ones are gone from the
/// disk too, and one counted after the snapshot stays.
#[test]
fn forgotten_attempts_stay_forgotten_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let t: Arc<str> = "acme".into();
    let (shared, partly) = (n("0142000000"), n("0142000001"));
    let (first, second) = (at("2026-11-17T10:00:00Z"), at("2026-11-17T10:00:05Z"));
    {
        let (s, _) = Store::open(dir.path(), Clock::System).unwrap();
        assert!(!s.holds_attempts(&t, shared), "nothing counted yet");
        s.count(&t, shared, first, CAP, true);
        s.count(&t, partly, first, CAP, true);
        assert!(s.holds_attempts(&t, shared));
        let snapshot = s.all_attempts();
        assert_eq!(snapshot.len(), 2);
        // Counted after the snapshot was taken, before it was shared.
        s.count(&t, partly, second, CAP, true);
        for (tenant, callee, done) in &snapshot {
            s.forget_attempts(tenant, *callee, done);
        }
        assert!(!s.holds_attempts(&t, shared));
        assert_eq!(s.attempts(&t, partly).as_slice(), &[second]);
        s.flush().unwrap();
    }
    let (s, loaded) = Store::open(dir.path(), Clock::System).unwrap();
    assert_eq!(loaded.attempts, 1);
    assert!(s.attempts(&t, shared).is_empty());
    assert_eq!(s.attempts(&t, partly).as_slice(), &[second]);
    assert!(s.holds_attempts(&t, partly), "known again after a restart");
}

/// A challenged call's attempt given back leaves no empty entry: the
/// callee no longer counts as one with attempts (the Redis backend would
/// otherwise keep trying to share nothing, and show it in its gauge).
#[test]
fn an_attempt_given_back_leaves_no_callee_behind() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = Store::open(dir.path(), Clock::System).unwrap();
    let t: Arc<str> = "acme".into();
    let (callee, when) = (n("0142000000"), at("2026-11-17T10:00:00Z"));
    s.count(&t, callee, when, CAP, true);
    s.count(&t, callee, when, CAP, true);
    assert!(
        !s.uncount(&t, callee, at("2026-11-17T10:00:01Z")),
        "no such attempt"
    );
    assert!(s.uncount(&t, callee, when));
    assert_eq!((s.attempts(&t, callee).len(), s.sizes()), (1, (0, 1)));
    assert!(s.uncount(&t, callee, when));
    assert_eq!(s.sizes(), (0, 0));
    assert!(!s.holds_attempts(&t, callee));
    assert!(s.all_attempts().is_empty());
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
    assert!(matches!(e, StateError::InUse { .. }), "{e}");
    assert!(
        e.to_string().contains("state.redb is used by another"),
        "{e}"
    );
}

/// A disk that refuses every write and sync while `DISK_FAILS` is set.
#[derive(Debug)]
struct FailingDisk(redb::backends::FileBackend);

static DISK_FAILS: AtomicBool = AtomicBool::new(false);

fn refused() -> std::io::Result<()> {
    if DISK_FAILS.load(Ordering::SeqCst) {
        return Err(std::io::Error::other("no space left on the device (test)"));
    }
    Ok(())
}

type Bound = std::ops::Bound<u64>;

impl redb::StorageBackend for FailingDisk {
    fn len(&self) -> std::io::Result<u64> {
        self.0.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        self.0.read(offset, out)
    }
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        refused()?;
        self.0.set_len(len)
    }
    fn sync_data(&self) -> std::io::Result<()> {
        refused()?;
        self.0.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        refused()?;
        self.0.write(offset, data)
    }
    fn close(&self) -> std::io::Result<()> {
        self.0.close()
    }
    fn try_lock_range(&self, s: Bound, e: Bound) -> Result<bool, redb::BackendError> {
        self.0.try_lock_range(s, e)
    }
    fn try_lock_shared_range(&self, s: Bound, e: Bound) -> Result<bool, redb::BackendError> {
        self.0.try_lock_shared_range(s, e)
    }
    fn lock_range(&self, s: Bound, e: Bound) -> Result<(), redb::BackendError> {
        self.0.lock_range(s, e)
    }
    fn lock_shared_range(&self, s: Bound, e: Bound) -> Result<(), redb::BackendError> {
        self.0.lock_shared_range(s, e)
    }
    fn unlock_range(&self, s: Bound, e: Bound) -> Result<(), redb::BackendError> {
        self.0.unlock_range(s, e)
    }
    fn query_lock_range(&self, s: Bound, e: Bound) -> Result<bool, redb::BackendError> {
        self.0.query_lock_range(s, e)
    }
}

fn on_failing_disk(path: &Path) -> Result<redb::Database, redb::DatabaseError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    redb::Builder::new()
        .set_check_integrity_on_open(true)
        .create_with_backend(FailingDisk(redb::backends::FileBackend::new(file)?))
}

/// redb refuses every operation after one failed write until it is opened
/// again: without a reopen, one full disk would keep the state off the
/// disk until a restart, and that restart would lose it all.
#[test]
fn a_disk_that_fails_then_recovers_loses_no_state() {
    let dir = tempfile::tempdir().unwrap();
    let t: Arc<str> = "acme".into();
    let now = at("2026-11-17T10:00:00Z");
    let health = Health::default();
    {
        let (s, _) = Store::open_with(dir.path(), Clock::System, on_failing_disk).unwrap();
        s.report_to(health.clone());
        health.up.set(1);
        s.count(&t, n("0142000000"), now, CAP, true);
        s.flush().unwrap();

        DISK_FAILS.store(true, Ordering::SeqCst);
        // The call path goes on in memory; the disk gets nothing.
        s.count(&t, n("0142000001"), now, CAP, true);
        s.count(&t, n("0142000001"), now, CAP, true);
        s.record_refusal_soon(&t, n("0142000002"), now);
        assert!(s.flush().is_err());
        assert_eq!(health.up.get(), 0);
        let errors = health.errors.get();
        assert!(errors >= 1);
        // What the admin API asks is refused, and not applied.
        assert!(s.dnc_set("demo", &[n("0142000003")], true).is_err());
        assert_eq!(s.dnc_delta("demo").get(n("0142000003").digits()), None);
        assert!(s.record_refusal(&t, n("0142000004"), now).is_err());
        assert!(s.add_closure("FR", now, now, "storm").is_err());
        assert!(s.flush().is_err(), "still failing while the disk is");
        assert!(health.errors.get() > errors);

        // Each try reads and rewrites the whole file: they back off
        // (100, 200, 400, 800 ms... apart) rather than run every tick.
        let before = health.errors.get();
        std::thread::sleep(Duration::from_secs(2));
        let tries = health.errors.get() - before;
        assert!((1..=6).contains(&tries), "{tries} tries to reopen in 2 s");

        DISK_FAILS.store(false, Ordering::SeqCst);
        // Inside the back-off's wait (the next try is 3 s after the
        // outage began), a flush, as at shutdown, tries at once.
        s.flush().unwrap();
        assert_eq!(health.up.get(), 1);
        s.dnc_set("demo", &[n("0142000003")], true).unwrap();
        s.count(&t, n("0142000001"), now, CAP, true);
        assert_eq!(s.add_closure("FR", now, now, "storm").unwrap().id, 1);
        s.flush().unwrap();
    }
    let (s, loaded) = Store::open(dir.path(), Clock::System).unwrap();
    assert_eq!(
        (loaded.refusals, loaded.attempts, loaded.dnc_changes),
        (1, 2, 1)
    );
    assert_eq!(s.attempts(&t, n("0142000000")).len(), 1);
    assert_eq!(s.attempts(&t, n("0142000001")).len(), 3);
    assert_eq!(s.refused_at(&t, n("0142000002")), Some(now));
    assert_eq!(s.refused_at(&t, n("0142000004")), None);
    assert_eq!(
        s.dnc_delta("demo").get(n("0142000003").digits()),
        Some(true)
    );
    let closures = s.closures().unwrap();
    assert_eq!(closures.len(), 1);
    assert_eq!(s.add_closure("FR", now, now, "flood").unwrap().id, 2);
}

/// A state file a disk damaged is refused with an error naming it, or
/// repaired to a commit redb can prove, never trusted into a panic.
#[test]
fn a_damaged_state_file_is_refused_or_repaired_never_a_panic() {
    let t: Arc<str> = "acme".into();
    let now = at("2026-11-17T10:00:00Z");
    for (offset, len) in [(4096_u64, 4096_usize), (8192, 65536), (0, 1 << 20)] {
        let dir = tempfile::tempdir().unwrap();
        {
            let (s, _) = Store::open(dir.path(), Clock::System).unwrap();
            for i in 0..2000 {
                s.count(&t, E164::from_digits(33_142_000_000 + i), now, CAP, true);
            }
            s.flush().unwrap();
        }
        let path = dir.path().join("state.redb");
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        let junk: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
        std::os::unix::fs::FileExt::write_all_at(&file, &junk, offset).unwrap();
        drop(file);
        let opened = std::panic::catch_unwind(|| Store::open(dir.path(), Clock::System));
        match opened {
            Err(_) => panic!("a damaged file at {offset}+{len} panicked"),
            Ok(Err(e)) => {
                assert!(matches!(e, StateError::Damaged { .. }), "{e}");
                assert!(e.to_string().contains("state.redb is damaged"), "{e}");
            }
            Ok(Ok((_, loaded))) => assert!(loaded.attempts <= 2000, "{loaded}"),
        }
    }
}
