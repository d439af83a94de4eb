//! The embedded store: refusals (rule 6), attempts per tenant and callee
//! (rule 9) and run-time DNC changes, kept in memory for the call path and
//! in an embedded database (`DATA_DIR/state.redb`) for restarts.
//!
//! Why redb: a pure-Rust, maintained, crash-safe (copy-on-write B-trees,
//! checksummed commits) embedded store with no C dependency and no server,
//! so `serve` still runs on its defaults alone.
//!
//! Durability contract:
//! - What the admin API acknowledges (refusals, DNC changes) is committed
//!   with an `fsync` before the answer: it survives `kill -9`.
//! - What the call path records (attempts counted when an INVITE is
//!   forwarded, refusals signalled on a BYE) is written by a background
//!   thread in batches every `FLUSH_EVERY`, so the call path never waits for
//!   a disk. A crash loses at most that last batch.
//! - A write the disk refuses leaves redb failing every later operation
//!   (`PreviousIo`) until the database is closed. The writer then closes it,
//!   opens it again and writes everything held in memory over it
//!   ([`Inner::reopen`]): memory is what calls are decided on, and a commit
//!   whose fsync said yes may still have missed the disk.
//! - Every page's checksum is checked when the file is opened, so a file a
//!   disk damaged is repaired to its last good commit or refused with a
//!   clear error, where a plain open may panic.
//!
//! The call path reads and counts in memory only: a `DashMap` entry lock
//! makes check-and-count atomic per tenant and callee, so concurrent INVITEs
//! to one callee never exceed the cap.

use chrono::{DateTime, Utc};
use dashmap::DashMap;
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use rustc_hash::FxBuildHasher;
use smallvec::SmallVec;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, PoisonError, RwLock};
use std::time::Duration;

use super::{Attempts, Health};
use crate::clock::Clock;
use crate::dnc::{Consent, ConsentDelta, Delta};
use crate::numbering::E164;
use crate::policy::{Cap, Closure, History};

const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// Longest wait between two tries at reopening the database while the
/// disk keeps failing: each try checks and rewrites the whole file
/// (seconds of a core for millions of entries, `benches/RESULTS.md`), so
/// the tries back off from `FLUSH_EVERY`, doubling, up to this.
const REOPEN_AT_MOST_EVERY: Duration = Duration::from_secs(5);
/// How often expired entries are purged from memory and disk.
const SWEEP_EVERY: Duration = Duration::from_secs(3600);
/// Most attempts kept per callee: past the cap only `warn` tenants add
/// more, and they need no more than this to explain themselves.
const MAX_ATTEMPTS_KEPT: usize = 32;

/// (tenant, callee E.164 digits) -> refusal instant (Unix seconds).
const REFUSALS: TableDefinition<(&str, u64), i64> = TableDefinition::new("refusals");
/// (tenant, callee) -> attempt instants, little-endian i64 Unix seconds.
const ATTEMPTS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("attempts");
/// (list, number) -> 1 added, 0 removed at run time.
const DNC: TableDefinition<(&str, u64), u8> = TableDefinition::new("dnc");
/// (list, number) -> the consent as JSON, `null` when withdrawn at run
/// time (`PUT`/`DELETE /v1/consent/...`).
const CONSENT: TableDefinition<(&str, u64), &str> = TableDefinition::new("consent");
/// closure id -> the closure as JSON (`POST /v1/closures`).
const CLOSURES: TableDefinition<u64, &str> = TableDefinition::new("closures");
/// Counters that must survive a restart: `closure_id`, the last closure id
/// handed out (ids are never reused, so an id in an audit record names one
/// closure even after it is deleted).
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The cause follows in the error's chain (`{:#}`).
    #[error("state database {path}")]
    Open { path: PathBuf, source: redb::Error },
    #[error("state database {path} is used by another process (one callguard per data directory)")]
    InUse { path: PathBuf },
    /// The file fails redb's checks and no commit of it can be proven:
    /// starting without it would count every cap and cool-off from zero,
    /// which is the operator's call, not ours.
    #[error("state database {path} is damaged beyond repair (restore it from a backup, or move it aside to start with no refusals and no counted attempts)")]
    Damaged { path: PathBuf, source: redb::Error },
    #[error("state database: {0}")]
    Db(#[from] redb::Error),
    #[error("state writer thread is gone")]
    WriterGone,
    #[error("state database is being reopened after a failed write")]
    Reopening,
    /// A flush waited for a batch that failed; the batch stays pending and
    /// is retried, the waiters each get the same cause.
    #[error("state batch not written: {0}")]
    NotWritten(Arc<StateError>),
}

fn db_err(e: impl Into<redb::Error>) -> StateError {
    StateError::Db(e.into())
}

/// Opens the database file; tests put a failing disk under the store here.
pub(crate) type Opener = fn(&Path) -> Result<redb::Database, redb::DatabaseError>;

fn open_file(path: &Path) -> Result<redb::Database, redb::DatabaseError> {
    redb::Builder::new()
        .set_check_integrity_on_open(true)
        .create(path)
}

/// Runs `f` in one write transaction and commits it (with an fsync).
fn commit<T>(
    db: &redb::Database,
    f: impl FnOnce(&redb::WriteTransaction) -> Result<T, StateError>,
) -> Result<T, StateError> {
    let w = db.begin_write().map_err(db_err)?;
    let t = f(&w)?;
    w.commit().map_err(db_err)?;
    Ok(t)
}

type Key = (Arc<str>, u64);

/// Shared handle to the state; cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    /// `None` only while the writer opens it again after a failed write.
    db: RwLock<Option<redb::Database>>,
    path: PathBuf,
    opener: Opener,
    /// Set by a write that failed: the writer reopens the database.
    broken: AtomicBool,
    /// The last closure id handed out: a rewrite after a reopen must not
    /// let an id be handed out twice.
    last_closure_id: AtomicU64,
    refusals: DashMap<Key, i64, FxBuildHasher>,
    any_refusal: std::sync::atomic::AtomicBool,
    attempts: DashMap<Key, SmallVec<[i64; 4]>, FxBuildHasher>,
    any_attempt: AtomicBool,
    dnc: DashMap<String, Arc<Delta>>,
    consent: DashMap<String, Arc<ConsentDelta>>,
    /// Every closure on record; `None` when there is none (the call path
    /// then skips the check).
    closures: arc_swap::ArcSwapOption<Vec<Closure>>,
    /// Held by whoever changes the closures, from reading the list to
    /// publishing the new one: two changes at once would each publish a
    /// list without the other's.
    closure_change: std::sync::Mutex<()>,
    /// Longest attempt window and refusal cool-off of the running rule
    /// sets, in seconds: entries older than that are purged.
    keep_attempts: AtomicI64,
    keep_refusals: AtomicI64,
    writer: mpsc::Sender<Dirty>,
    clock: Clock,
    /// Where failed writes are reported (metrics), once the service sets it.
    health: std::sync::OnceLock<Health>,
}

enum Dirty {
    Attempt(Key),
    Refusal(Key),
    Flush(mpsc::SyncSender<Result<(), Arc<StateError>>>),
}

fn to_utc(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(secs, 0).unwrap_or_default()
}

/// What loading found, for the startup log.
#[derive(Debug, Clone, Copy, Default)]
pub struct Loaded {
    pub refusals: usize,
    pub attempts: usize,
    pub dnc_changes: usize,
    pub consent_changes: usize,
}

impl std::fmt::Display for Loaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} refusals, {} callees with counted attempts, {} run-time DNC changes, {} run-time consent changes",
            self.refusals, self.attempts, self.dnc_changes, self.consent_changes
        )
    }
}

impl Store {
    /// Opens (or creates) `DIR/state.redb`, compacts it and loads it, and
    /// starts the writer thread. Fails if another process holds it.
    pub fn open(dir: &Path, clock: Clock) -> Result<(Store, Loaded), StateError> {
        Store::open_with(dir, clock, open_file)
    }

    pub(crate) fn open_with(
        dir: &Path,
        clock: Clock,
        opener: Opener,
    ) -> Result<(Store, Loaded), StateError> {
        let path = dir.join("state.redb");
        let open_err = |e: redb::Error| match e {
            redb::Error::DatabaseAlreadyOpen => StateError::InUse { path: path.clone() },
            redb::Error::Corrupted(_) => StateError::Damaged {
                path: path.clone(),
                source: e,
            },
            redb::Error::Io(ref io) if io.kind() == std::io::ErrorKind::InvalidData => {
                StateError::Damaged {
                    path: path.clone(),
                    source: e,
                }
            }
            e => StateError::Open {
                path: path.clone(),
                source: e,
            },
        };
        std::fs::create_dir_all(dir).map_err(|e| open_err(redb::Error::Io(e)))?;
        // The lock may still be held for a moment by a process (or a
        // handle in this one) that is finishing its last batch: a restart
        // waits for it rather than fail.
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        let mut db = loop {
            match opener(&path) {
                Err(redb::DatabaseError::DatabaseAlreadyOpen)
                    if std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(20))
                }
                r => break r.map_err(|e| open_err(e.into()))?,
            }
        };
        {
            let w = db.begin_write().map_err(|e| open_err(e.into()))?;
            w.open_table(REFUSALS).map_err(|e| open_err(e.into()))?;
            w.open_table(ATTEMPTS).map_err(|e| open_err(e.into()))?;
            w.open_table(DNC).map_err(|e| open_err(e.into()))?;
            w.open_table(CONSENT).map_err(|e| open_err(e.into()))?;
            w.open_table(CLOSURES).map_err(|e| open_err(e.into()))?;
            w.open_table(META).map_err(|e| open_err(e.into()))?;
            w.commit().map_err(|e| open_err(e.into()))?;
        }
        // Only here is the database ours alone (compaction needs `&mut`).
        db.compact().map_err(|e| open_err(e.into()))?;

        let (tx, rx) = mpsc::channel();
        let inner = Arc::new(Inner {
            db: RwLock::new(Some(db)),
            path: path.clone(),
            opener,
            broken: AtomicBool::new(false),
            last_closure_id: AtomicU64::new(0),
            refusals: DashMap::default(),
            any_refusal: Default::default(),
            any_attempt: Default::default(),
            attempts: DashMap::default(),
            dnc: DashMap::new(),
            consent: DashMap::new(),
            closures: arc_swap::ArcSwapOption::empty(),
            closure_change: std::sync::Mutex::new(()),
            keep_attempts: AtomicI64::new(chrono::Duration::days(31).num_seconds()),
            keep_refusals: AtomicI64::new(chrono::Duration::days(62).num_seconds()),
            writer: tx,
            clock,
            health: std::sync::OnceLock::new(),
        });
        let loaded = inner.load().map_err(|e| match e {
            StateError::Db(source) => StateError::Open { path, source },
            e => e,
        })?;
        let weak = Arc::downgrade(&inner);
        std::thread::Builder::new()
            .name("state-writer".into())
            .spawn(move || writer(weak, rx))
            .map_err(|e| StateError::Db(redb::Error::Io(e)))?;
        Ok((Store { inner }, loaded))
    }

    /// Sets how long entries are kept: the longest window and cool-off of
    /// the running rule sets (called at start and on reload).
    pub fn retain(&self, attempts: chrono::Duration, refusals: chrono::Duration) {
        // A day of margin: the cool-off ends at a local midnight.
        let day = chrono::Duration::days(1).num_seconds();
        self.inner
            .keep_attempts
            .store(attempts.num_seconds().max(day), Ordering::Relaxed);
        self.inner
            .keep_refusals
            .store(refusals.num_seconds() + 2 * day, Ordering::Relaxed);
    }

    /// When `callee` last refused `tenant` (memory only).
    pub fn refused_at(&self, tenant: &Arc<str>, callee: E164) -> Option<DateTime<Utc>> {
        // `DashMap::is_empty` read-locks every shard: a flag is cheaper
        // for the common case of a store with no refusal yet.
        if !self.inner.any_refusal.load(Ordering::Relaxed) {
            return None;
        }
        let key = (tenant.clone(), callee.digits());
        self.inner.refusals.get(&key).map(|r| to_utc(*r))
    }

    /// The attempts counted for `callee` by `tenant` (memory only).
    pub fn attempts(&self, tenant: &Arc<str>, callee: E164) -> Attempts {
        let key = (tenant.clone(), callee.digits());
        self.inner
            .attempts
            .get(&key)
            .map(|a| a.iter().map(|&s| to_utc(s)).collect())
            .unwrap_or_default()
    }

    /// Everything the state knows of `callee` for `tenant`.
    pub fn history(&self, tenant: &Arc<str>, callee: E164) -> History {
        History {
            refused_at: self.refused_at(tenant, callee),
            attempts: self.attempts(tenant, callee),
            closures: self.closures(),
        }
    }

    /// Counts an attempt at `now`, unless `enforce` and the cap is already
    /// reached in the window; atomic for this tenant and callee. Returns
    /// the attempts in the window before this one (what rule 9 judges).
    pub fn count(
        &self,
        tenant: &Arc<str>,
        callee: E164,
        now: DateTime<Utc>,
        cap: Cap,
        enforce: bool,
    ) -> Attempts {
        let key = (tenant.clone(), callee.digits());
        let now_s = now.timestamp();
        let since = now_s - cap.window.num_seconds();
        let prior: Attempts;
        {
            let mut e = self.inner.attempts.entry(key.clone()).or_default();
            e.retain(|t| *t > since);
            prior = e.iter().map(|&s| to_utc(s)).collect();
            if enforce && e.len() >= cap.attempts as usize {
                return prior;
            }
            if e.len() >= MAX_ATTEMPTS_KEPT {
                e.remove(0);
            }
            e.push(now_s);
        }
        // Read first: a store on every count would bounce the flag's cache
        // line between the cores counting.
        if !self.inner.any_attempt.load(Ordering::Relaxed) {
            self.inner.any_attempt.store(true, Ordering::Relaxed);
        }
        self.dirty(Dirty::Attempt(key));
        prior
    }

    /// Whether `callee` has attempts counted here for `tenant`: one relaxed
    /// load while this store has never counted one (the Redis backend's
    /// case, outside outages).
    pub fn holds_attempts(&self, tenant: &Arc<str>, callee: E164) -> bool {
        self.inner.any_attempt.load(Ordering::Relaxed)
            && self
                .inner
                .attempts
                .contains_key(&(tenant.clone(), callee.digits()))
    }

    /// Every callee's attempts in memory: (tenant, callee, instants).
    pub fn all_attempts(&self) -> Vec<(Arc<str>, E164, Attempts)> {
        self.inner
            .attempts
            .iter()
            .map(|e| {
                (
                    e.key().0.clone(),
                    E164::from_digits(e.key().1),
                    e.value().iter().map(|&s| to_utc(s)).collect(),
                )
            })
            .collect()
    }

    /// Drops the attempts `done` of `callee` (one occurrence each): with the
    /// Redis backend this store holds only the attempts counted while Redis
    /// was unavailable, and they are forgotten once Redis has them. Attempts
    /// counted since stay.
    pub fn forget_attempts(&self, tenant: &Arc<str>, callee: E164, done: &[DateTime<Utc>]) {
        let key = (tenant.clone(), callee.digits());
        let forgot = self.inner.attempts.get_mut(&key).is_some_and(|mut e| {
            let before = e.len();
            for at in done {
                if let Some(i) = e.iter().position(|&t| t == at.timestamp()) {
                    e.remove(i);
                }
            }
            e.len() != before
        });
        if forgot {
            self.inner.attempts.remove_if(&key, |_, e| e.is_empty());
            self.dirty(Dirty::Attempt(key));
        }
    }

    /// How long attempts are kept: the longest window of the running rule
    /// sets (at least a day).
    pub fn attempt_keep(&self) -> chrono::Duration {
        chrono::Duration::seconds(self.inner.keep_attempts.load(Ordering::Relaxed))
    }

    /// Takes back one attempt counted at `at` (the second), if it is
    /// still there; whether it was.
    pub fn uncount(&self, tenant: &Arc<str>, callee: E164, at: DateTime<Utc>) -> bool {
        let key = (tenant.clone(), callee.digits());
        let at_s = at.timestamp();
        let removed = self.inner.attempts.get_mut(&key).is_some_and(|mut e| {
            let i = e.iter().rposition(|&t| t == at_s);
            i.map(|i| e.remove(i)).is_some()
        });
        if removed {
            tracing::debug!(tenant = %tenant, callee = %callee, "a challenged call's attempt given back");
            // An empty entry would still count as a callee with attempts
            // (`sizes`, `holds_attempts`) until the next sweep.
            self.inner.attempts.remove_if(&key, |_, e| e.is_empty());
            self.dirty(Dirty::Attempt(key));
        }
        removed
    }

    fn dirty(&self, d: Dirty) {
        // The writer lives as long as the store; if it died the next
        // `flush` reports it.
        let _ = self.inner.writer.send(d);
    }

    /// Records a refusal durably (fsync) before returning: for the admin API.
    pub fn record_refusal(
        &self,
        tenant: &Arc<str>,
        callee: E164,
        at: DateTime<Utc>,
    ) -> Result<(), StateError> {
        let key = (tenant.clone(), callee.digits());
        let at = self.latest_refusal(&key, at.timestamp());
        self.inner.write(|w| {
            let mut t = w.open_table(REFUSALS).map_err(db_err)?;
            t.insert((&*key.0, key.1), at).map_err(db_err)?;
            Ok(())
        })?;
        self.inner.put_refusal(key, at);
        Ok(())
    }

    /// Records a refusal signalled in SIP: in memory at once, on disk with
    /// the next batch (the call path never waits for a disk).
    pub fn record_refusal_soon(&self, tenant: &Arc<str>, callee: E164, at: DateTime<Utc>) {
        let key = (tenant.clone(), callee.digits());
        let at = self.latest_refusal(&key, at.timestamp());
        self.inner.put_refusal(key.clone(), at);
        self.dirty(Dirty::Refusal(key));
    }

    /// Drops the refusal of `callee` if it is no later than `at`: with the
    /// Redis backend this store holds only the refusals signalled on a BYE
    /// that Redis has not taken yet, and one is forgotten once it has.
    pub fn forget_refusal(&self, tenant: &Arc<str>, callee: E164, at: DateTime<Utc>) {
        let key = (tenant.clone(), callee.digits());
        let at = at.timestamp();
        if self
            .inner
            .refusals
            .remove_if(&key, |_, stored| *stored <= at)
            .is_some()
        {
            self.dirty(Dirty::Refusal(key));
        }
    }

    /// How long a refusal is kept: the longest cool-off of the running rule
    /// sets, with margin.
    pub fn refusal_keep(&self) -> chrono::Duration {
        chrono::Duration::seconds(self.inner.keep_refusals.load(Ordering::Relaxed))
    }

    /// Every refusal in memory: (tenant, callee, instant).
    pub fn refusals(&self) -> Vec<(Arc<str>, E164, DateTime<Utc>)> {
        self.inner
            .refusals
            .iter()
            .map(|e| {
                (
                    e.key().0.clone(),
                    E164::from_digits(e.key().1),
                    to_utc(*e.value()),
                )
            })
            .collect()
    }

    /// A refusal never moves an existing one back in time: the later
    /// refusal is the one the cool-off runs from.
    fn latest_refusal(&self, key: &Key, at: i64) -> i64 {
        self.inner
            .refusals
            .get(key)
            .map(|r| (*r).max(at))
            .unwrap_or(at)
    }

    /// The run-time changes of DNC list `name` (created empty if none).
    pub fn dnc_delta(&self, name: &str) -> Arc<Delta> {
        self.inner.dnc.entry(name.to_owned()).or_default().clone()
    }

    /// Adds (`listed`) or removes numbers of a DNC list, durably (one
    /// fsynced transaction for the whole batch) before returning.
    /// The closures on record.
    pub fn closures(&self) -> Option<Arc<Vec<Closure>>> {
        self.inner.closures.load_full()
    }

    /// Records a closure durably (fsync) and applies it to the next call.
    pub fn add_closure(
        &self,
        jurisdiction: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        reason: &str,
    ) -> Result<Closure, StateError> {
        let _changing = self
            .inner
            .closure_change
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let mut all: Vec<Closure> = self.closures().map(|c| (*c).clone()).unwrap_or_default();
        let c = self.inner.write(|w| {
            let mut meta = w.open_table(META).map_err(db_err)?;
            let last = meta
                .get("closure_id")
                .map_err(db_err)?
                .map_or(0, |v| v.value());
            // Stores written before the counter existed: past their ids.
            let id = last
                .max(self.inner.last_closure_id.load(Ordering::Relaxed))
                .max(all.iter().map(|c| c.id).max().unwrap_or(0))
                + 1;
            meta.insert("closure_id", id).map_err(db_err)?;
            let c = Closure {
                id,
                jurisdiction: jurisdiction.to_owned(),
                from,
                to,
                reason: reason.to_owned(),
            };
            let json = serde_json::to_string(&c).expect("a closure serialises");
            let mut t = w.open_table(CLOSURES).map_err(db_err)?;
            t.insert(c.id, json.as_str()).map_err(db_err)?;
            Ok(c)
        })?;
        self.inner
            .last_closure_id
            .fetch_max(c.id, Ordering::Relaxed);
        all.push(c.clone());
        self.inner.closures.store(Some(Arc::new(all)));
        Ok(c)
    }

    /// Removes closure `id` durably; whether it existed.
    pub fn remove_closure(&self, id: u64) -> Result<bool, StateError> {
        let _changing = self
            .inner
            .closure_change
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let existed = self.inner.write(|w| {
            let mut t = w.open_table(CLOSURES).map_err(db_err)?;
            let removed = t.remove(id).map_err(db_err)?.is_some();
            Ok(removed)
        })?;
        let rest: Vec<Closure> = self
            .closures()
            .map(|c| c.iter().filter(|c| c.id != id).cloned().collect())
            .unwrap_or_default();
        self.inner
            .closures
            .store((!rest.is_empty()).then(|| Arc::new(rest)));
        Ok(existed)
    }

    pub fn dnc_set(&self, list: &str, numbers: &[E164], listed: bool) -> Result<(), StateError> {
        self.inner.write(|w| {
            let mut t = w.open_table(DNC).map_err(db_err)?;
            for n in numbers {
                t.insert((list, n.digits()), listed as u8).map_err(db_err)?;
            }
            Ok(())
        })?;
        let delta = self.dnc_delta(list);
        for n in numbers {
            delta.set(n.digits(), listed);
        }
        Ok(())
    }

    /// The run-time changes of consent list `name` (created empty if none).
    pub fn consent_delta(&self, name: &str) -> Arc<ConsentDelta> {
        self.inner
            .consent
            .entry(name.to_owned())
            .or_default()
            .clone()
    }

    /// Gives (`Some`) or withdraws (`None`) consent, number by number, for
    /// a list: durably (one transaction), then in memory.
    pub fn consent_set(
        &self,
        list: &str,
        changes: &[(u64, Option<Consent>)],
    ) -> Result<(), StateError> {
        self.inner.write(|w| {
            let mut t = w.open_table(CONSENT).map_err(db_err)?;
            for (d, c) in changes {
                let value = serde_json::to_string(c).unwrap_or_else(|_| "null".into());
                t.insert((list, *d), value.as_str()).map_err(db_err)?;
            }
            Ok(())
        })?;
        let delta = self.consent_delta(list);
        for (d, c) in changes {
            delta.set(*d, c.clone());
        }
        Ok(())
    }

    /// Applies consent changes made elsewhere (shared state); only the
    /// numbers whose run-time record differs are written, in one
    /// transaction. Returns how many changed.
    pub fn consent_apply(
        &self,
        list: &str,
        changes: Vec<(u64, Option<Consent>)>,
    ) -> Result<usize, StateError> {
        let delta = self.consent_delta(list);
        let changed: Vec<(u64, Option<Consent>)> = changes
            .into_iter()
            .filter(|(d, c)| delta.get(*d).as_ref() != Some(c))
            .collect();
        if !changed.is_empty() {
            self.consent_set(list, &changed)?;
        }
        Ok(changed.len())
    }

    /// Applies DNC changes made elsewhere (another instance, through the
    /// shared state): only the numbers whose run-time state differs are
    /// written, so an instance's own changes coming back cost nothing.
    /// Returns how many changed.
    pub fn dnc_apply(&self, list: &str, digits: &[u64], listed: bool) -> Result<usize, StateError> {
        let delta = self.dnc_delta(list);
        let changed: Vec<E164> = digits
            .iter()
            .filter(|&&d| delta.get(d) != Some(listed))
            .map(|&d| E164::from_digits(d))
            .collect();
        if !changed.is_empty() {
            self.dnc_set(list, &changed, listed)?;
        }
        Ok(changed.len())
    }

    /// Reports failed background writes to these metrics from now on:
    /// `callguard_state_backend_up` drops to 0 and
    /// `callguard_state_errors_total` counts each failed batch.
    pub fn report_to(&self, health: Health) {
        let _ = self.inner.health.set(health);
    }

    /// Writes every pending batch to disk and waits for it (shutdown, tests).
    pub fn flush(&self) -> Result<(), StateError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.inner
            .writer
            .send(Dirty::Flush(tx))
            .map_err(|_| StateError::WriterGone)?;
        rx.recv()
            .map_err(|_| StateError::WriterGone)?
            .map_err(StateError::NotWritten)
    }

    /// Purges entries that no rule can use any more, from memory and disk.
    pub fn sweep(&self, now: DateTime<Utc>) -> Result<usize, StateError> {
        self.inner.sweep(now.timestamp())
    }

    /// Entries in memory: (refusals, callees with attempts).
    pub fn sizes(&self) -> (usize, usize) {
        (self.inner.refusals.len(), self.inner.attempts.len())
    }
}

fn pack(a: &[i64]) -> Vec<u8> {
    a.iter().flat_map(|t| t.to_le_bytes()).collect()
}

fn unpack(b: &[u8]) -> SmallVec<[i64; 4]> {
    b.chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap_or_default()))
        .collect()
}

impl Inner {
    fn put_refusal(&self, key: Key, at: i64) {
        self.refusals.insert(key, at);
        self.any_refusal.store(true, Ordering::Relaxed);
    }

    fn load(&self) -> Result<Loaded, StateError> {
        let db = self.db.read().unwrap_or_else(PoisonError::into_inner);
        let r = db
            .as_ref()
            .ok_or(StateError::Reopening)?
            .begin_read()
            .map_err(db_err)?;
        if let Some(last) = r
            .open_table(META)
            .map_err(db_err)?
            .get("closure_id")
            .map_err(db_err)?
        {
            self.last_closure_id.store(last.value(), Ordering::Relaxed);
        }
        let mut names: rustc_hash::FxHashMap<String, Arc<str>> = Default::default();
        let mut intern = |s: &str| -> Arc<str> {
            names
                .entry(s.to_owned())
                .or_insert_with(|| Arc::from(s))
                .clone()
        };
        let mut loaded = Loaded::default();
        for row in r
            .open_table(REFUSALS)
            .map_err(db_err)?
            .iter()
            .map_err(db_err)?
        {
            let (k, v) = row.map_err(db_err)?;
            let (tenant, callee) = k.value();
            self.put_refusal((intern(tenant), callee), v.value());
            loaded.refusals += 1;
        }
        for row in r
            .open_table(ATTEMPTS)
            .map_err(db_err)?
            .iter()
            .map_err(db_err)?
        {
            let (k, v) = row.map_err(db_err)?;
            let (tenant, callee) = k.value();
            self.attempts
                .insert((intern(tenant), callee), unpack(v.value()));
            self.any_attempt.store(true, Ordering::Relaxed);
            loaded.attempts += 1;
        }
        let mut closures = Vec::new();
        for row in r
            .open_table(CLOSURES)
            .map_err(db_err)?
            .iter()
            .map_err(db_err)?
        {
            let (_, v) = row.map_err(db_err)?;
            match serde_json::from_str::<Closure>(v.value()) {
                Ok(c) => closures.push(c),
                Err(e) => tracing::error!(error = %e, "a stored closure is unreadable; skipped"),
            }
        }
        if !closures.is_empty() {
            self.closures.store(Some(Arc::new(closures)));
        }
        for row in r.open_table(DNC).map_err(db_err)?.iter().map_err(db_err)? {
            let (k, v) = row.map_err(db_err)?;
            let (list, number) = k.value();
            self.dnc
                .entry(list.to_owned())
                .or_default()
                .set(number, v.value() == 1);
            loaded.dnc_changes += 1;
        }
        for row in r
            .open_table(CONSENT)
            .map_err(db_err)?
            .iter()
            .map_err(db_err)?
        {
            let (k, v) = row.map_err(db_err)?;
            let (list, number) = k.value();
            match serde_json::from_str::<Option<Consent>>(v.value()) {
                Ok(c) => {
                    self.consent
                        .entry(list.to_owned())
                        .or_default()
                        .set(number, c);
                    loaded.consent_changes += 1;
                }
                Err(e) => {
                    tracing::error!(list, number, error = %e, "a stored consent change is unreadable; skipped")
                }
            }
        }
        Ok(loaded)
    }

    /// Writes the in-memory value of every dirty key in one transaction.
    fn write_batch(
        &self,
        attempts: &rustc_hash::FxHashSet<Key>,
        refusals: &rustc_hash::FxHashSet<Key>,
    ) -> Result<(), StateError> {
        self.write(|w| {
            let mut t = w.open_table(ATTEMPTS).map_err(db_err)?;
            for key in attempts {
                let value = self.attempts.get(key).map(|a| pack(&a));
                match value {
                    Some(v) if !v.is_empty() => {
                        t.insert((&*key.0, key.1), &v[..]).map_err(db_err)?;
                    }
                    _ => {
                        t.remove((&*key.0, key.1)).map_err(db_err)?;
                    }
                }
            }
            let mut t = w.open_table(REFUSALS).map_err(db_err)?;
            for key in refusals {
                match self.refusals.get(key).map(|r| *r) {
                    Some(at) => t.insert((&*key.0, key.1), at).map_err(db_err)?,
                    // Forgotten once shared (`forget_refusal`).
                    None => t.remove((&*key.0, key.1)).map_err(db_err)?,
                };
            }
            Ok(())
        })
    }

    /// Runs `f` in one committed write transaction. A failure marks the
    /// database for the writer to reopen, and shows in the metrics at once.
    fn write<T>(
        &self,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<T, StateError>,
    ) -> Result<T, StateError> {
        let db = match self.db.try_read() {
            Ok(db) => db,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            // The writer holds it to rewrite the file (seconds for
            // millions of entries): refused now, not held that long.
            Err(std::sync::TryLockError::WouldBlock) => return Err(StateError::Reopening),
        };
        let r = match db.as_ref() {
            Some(db) => commit(db, f),
            None => Err(StateError::Reopening),
        };
        if r.is_err() {
            self.broken.store(true, Ordering::Release);
            if let Some(h) = self.health.get() {
                h.errors.inc();
                h.up.set(0);
            }
        }
        r
    }

    /// Closes the database and opens it again (redb recovers the file),
    /// then replaces its content with what memory holds, in one
    /// transaction. Memory is what the calls were decided on, and a commit
    /// whose fsync said yes may still have missed the disk: only a full
    /// rewrite puts the file back in step. Admin changes are refused
    /// meanwhile (3,000,000 callees: about 8 s, `benches/RESULTS.md`).
    /// Returns how many entries were written.
    fn reopen(&self) -> Result<usize, StateError> {
        let mut db = self.db.write().unwrap_or_else(PoisonError::into_inner);
        // Closed first: the file lock is ours until then.
        drop(db.take());
        let fresh = (self.opener)(&self.path).map_err(db_err)?;
        let written = commit(&fresh, |w| self.rewrite(w))?;
        *db = Some(fresh);
        self.broken.store(false, Ordering::Release);
        Ok(written)
    }

    fn rewrite(&self, w: &redb::WriteTransaction) -> Result<usize, StateError> {
        // Copied out before writing: a map shard stays locked for a copy,
        // never for a disk write, so the call path barely waits.
        let refusals: Vec<(Key, i64)> = self
            .refusals
            .iter()
            .map(|e| (e.key().clone(), *e.value()))
            .collect();
        let attempts: Vec<(Key, Vec<u8>)> = self
            .attempts
            .iter()
            .filter(|e| !e.value().is_empty())
            .map(|e| (e.key().clone(), pack(e.value())))
            .collect();
        let dnc: Vec<(String, Arc<Delta>)> = self
            .dnc
            .iter()
            .map(|e| (e.key().clone(), e.value().clone()))
            .collect();
        let consent: Vec<(String, Arc<ConsentDelta>)> = self
            .consent
            .iter()
            .map(|e| (e.key().clone(), e.value().clone()))
            .collect();
        // In key order: redb then fills each leaf once, where keys in hash
        // order would touch a random leaf each.
        let mut refusals = refusals;
        refusals.sort_unstable_by(|a, b| (&*a.0 .0, a.0 .1).cmp(&(&*b.0 .0, b.0 .1)));
        let mut attempts = attempts;
        attempts.sort_unstable_by(|a, b| (&*a.0 .0, a.0 .1).cmp(&(&*b.0 .0, b.0 .1)));
        let closures = self.closures.load_full();
        let mut written = 0;
        w.delete_table(REFUSALS).map_err(db_err)?;
        let mut t = w.open_table(REFUSALS).map_err(db_err)?;
        for ((tenant, callee), at) in &refusals {
            t.insert((&**tenant, *callee), *at).map_err(db_err)?;
        }
        written += refusals.len();
        w.delete_table(ATTEMPTS).map_err(db_err)?;
        let mut t = w.open_table(ATTEMPTS).map_err(db_err)?;
        for ((tenant, callee), a) in &attempts {
            t.insert((&**tenant, *callee), &a[..]).map_err(db_err)?;
        }
        written += attempts.len();
        w.delete_table(DNC).map_err(db_err)?;
        let mut t = w.open_table(DNC).map_err(db_err)?;
        for (list, delta) in &dnc {
            let changes = delta.entries();
            for (n, listed) in &changes {
                t.insert((list.as_str(), *n), *listed as u8)
                    .map_err(db_err)?;
            }
            written += changes.len();
        }
        w.delete_table(CONSENT).map_err(db_err)?;
        let mut t = w.open_table(CONSENT).map_err(db_err)?;
        for (list, delta) in &consent {
            let changes = delta.entries();
            for (n, c) in &changes {
                let value = serde_json::to_string(c).unwrap_or_else(|_| "null".into());
                t.insert((list.as_str(), *n), value.as_str())
                    .map_err(db_err)?;
            }
            written += changes.len();
        }
        w.delete_table(CLOSURES).map_err(db_err)?;
        let mut t = w.open_table(CLOSURES).map_err(db_err)?;
        for c in closures.iter().flat_map(|c| c.iter()) {
            let json = serde_json::to_string(c).expect("a closure serialises");
            t.insert(c.id, json.as_str()).map_err(db_err)?;
            written += 1;
        }
        let mut meta = w.open_table(META).map_err(db_err)?;
        let last = meta
            .get("closure_id")
            .map_err(db_err)?
            .map_or(0, |v| v.value())
            .max(self.last_closure_id.load(Ordering::Relaxed));
        meta.insert("closure_id", last).map_err(db_err)?;
        Ok(written)
    }

    fn sweep(&self, now: i64) -> Result<usize, StateError> {
        let attempts_since = now - self.keep_attempts.load(Ordering::Relaxed);
        let refusals_since = now - self.keep_refusals.load(Ordering::Relaxed);
        let before = self.attempts.len() + self.refusals.len();
        self.attempts.retain(|_, a| {
            a.retain(|t| *t > attempts_since);
            !a.is_empty()
        });
        self.refusals.retain(|_, at| *at > refusals_since);
        self.write(|w| {
            let mut t = w.open_table(ATTEMPTS).map_err(db_err)?;
            t.retain(|_, v| unpack(v).iter().any(|t| *t > attempts_since))
                .map_err(db_err)?;
            let mut t = w.open_table(REFUSALS).map_err(db_err)?;
            t.retain(|_, at| at > refusals_since).map_err(db_err)?;
            Ok(())
        })?;
        Ok(before - (self.attempts.len() + self.refusals.len()))
    }
}

/// The background writer: collects dirty keys, writes them every
/// `FLUSH_EVERY`, sweeps every `SWEEP_EVERY`. Holds only a weak reference so
/// the store (and its database file lock) goes when its last user does.
fn writer(inner: std::sync::Weak<Inner>, rx: mpsc::Receiver<Dirty>) {
    let mut attempts = rustc_hash::FxHashSet::default();
    let mut refusals = rustc_hash::FxHashSet::default();
    let mut waiting: Vec<mpsc::SyncSender<Result<(), Arc<StateError>>>> = Vec::new();
    let mut next_flush = std::time::Instant::now() + FLUSH_EVERY;
    let mut next_sweep = std::time::Instant::now() + SWEEP_EVERY;
    let mut failing = false;
    let mut reopen_wait = FLUSH_EVERY;
    let mut next_reopen = std::time::Instant::now();
    loop {
        // Asleep until the batch is due, then everything queued is taken
        // at once: a thread waiting on the channel instead would be woken
        // by every call forwarded.
        std::thread::sleep(next_flush.saturating_duration_since(std::time::Instant::now()));
        let mut gone = false;
        loop {
            match rx.try_recv() {
                Ok(Dirty::Attempt(k)) => {
                    attempts.insert(k);
                }
                Ok(Dirty::Refusal(k)) => {
                    refusals.insert(k);
                }
                Ok(Dirty::Flush(tx)) => waiting.push(tx),
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => {
                    gone = true;
                    break;
                }
            }
        }
        let now = std::time::Instant::now();
        next_flush = now + FLUSH_EVERY;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let health = inner.health.get();
        let mut result = Ok(());
        // A flush (the shutdown's last step) tries at once: waiting out
        // the back-off there would leave the state behind.
        if inner.broken.load(Ordering::Acquire) && now < next_reopen && waiting.is_empty() {
            result = Err(StateError::Reopening);
        } else if inner.broken.load(Ordering::Acquire) {
            // redb fails every operation after a failed write until the
            // database is opened again: retrying the batch alone would
            // fail for as long as the process lives.
            result = inner.reopen().map(|written| {
                // The rewrite holds every dirty key's value, and newer.
                attempts.clear();
                refusals.clear();
                tracing::warn!(written, "state database reopened and rewritten from memory");
                if let Some(h) = health {
                    h.up.set(1);
                }
            });
            if result.is_err() {
                if let Some(h) = health {
                    h.errors.inc();
                    h.up.set(0);
                }
                reopen_wait = (reopen_wait * 2).min(REOPEN_AT_MOST_EVERY);
            } else {
                reopen_wait = FLUSH_EVERY;
            }
            next_reopen = now + reopen_wait;
        }
        if result.is_ok() && (!attempts.is_empty() || !refusals.is_empty()) {
            // A failure marks the database broken (`Inner::write`): the
            // keys stay dirty, and the next tick reopens it.
            result = inner.write_batch(&attempts, &refusals);
            if result.is_ok() {
                attempts.clear();
                refusals.clear();
                if failing {
                    if let Some(h) = health {
                        h.up.set(1);
                    }
                }
            }
        }
        // Logged once per outage, counted each time.
        match &result {
            Ok(()) if std::mem::take(&mut failing) => {
                tracing::warn!("state batches are written again")
            }
            Ok(()) => {}
            Err(e) if !std::mem::replace(&mut failing, true) => {
                tracing::error!("state not written, retrying (every 100 ms, backing off to 5 s while the database cannot be reopened): {e}")
            }
            Err(_) => {}
        }
        let result = result.map_err(Arc::new);
        for tx in waiting.drain(..) {
            let _ = tx.send(result.clone());
        }
        if now >= next_sweep {
            next_sweep = now + SWEEP_EVERY;
            match inner.sweep(inner.clock.now().timestamp()) {
                Ok(n) => tracing::debug!(purged = n, "state swept"),
                Err(e) => tracing::error!("state sweep failed: {e}"),
            }
        }
        if gone {
            return;
        }
    }
}

#[cfg(test)]
mod tests;
