//! Call state shared by several callguard instances behind one trunk, in
//! Redis: refusals (rule 6) and attempt counts (rule 9).
//!
//! Keys (`P` = `state.redis.key_prefix`):
//! - `P:refusal:TENANT:DIGITS`: Unix seconds of the latest refusal, expiring
//!   after the longest cool-off;
//! - `P:attempts:TENANT:DIGITS`: a sorted set of attempts scored by Unix
//!   seconds, expiring after the window.
//!
//! - `P:dnc:LIST`: a hash of run-time DNC changes (digits -> 1 listed,
//!   0 removed); `P:consent:LIST`: a hash of run-time consent changes
//!   (digits -> the consent as JSON, `null` withdrawn); and
//!   `P:dnc-changes`, a stream of both kinds of change (`kind` `consent`
//!   for the latter) that every instance reads to apply them locally (see
//!   `app::sync`).
//!
//! Check-and-count is one Lua script, so it is atomic across instances:
//! concurrent INVITEs to one callee, whichever instance they reach, never
//! exceed the cap. Every operation is bounded by `timeout_ms`; an error or a
//! timeout is reported to the caller, which fails closed (or open) — this
//! module never decides.

use chrono::{DateTime, Utc};
use redis::aio::ConnectionManager;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::{Attempts, Health};
use crate::numbering::E164;
use crate::policy::Cap;

/// Where Redis is and how it is used (`[state.redis]` in the config).
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// `redis://[:password@]host:port/db` (or `rediss://`, `unix://`).
    pub url: String,
    /// Prefix of every key, so several deployments can share a server.
    pub key_prefix: String,
    /// Multiplexed connections, used in turn.
    pub connections: usize,
    /// Bound on one state operation.
    pub timeout: Duration,
}

/// Most attempts kept per callee, as in the embedded store.
const MAX_ATTEMPTS_KEPT: usize = 32;

/// Trims the window, reads the attempts left, and adds this one unless the
/// cap is enforced and reached. Returns the scores before this attempt.
/// KEYS[1] attempts; ARGV: now, since (exclusive), cap, enforce (0/1),
/// member, ttl seconds, most kept.
const COUNT: &str = r"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
local prior = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
local out = {}
for i = 2, #prior, 2 do out[#out + 1] = prior[i] end
if ARGV[4] == '1' and #out >= tonumber(ARGV[3]) then return out end
if #out >= tonumber(ARGV[7]) then redis.call('ZPOPMIN', KEYS[1]) end
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[5])
redis.call('EXPIRE', KEYS[1], ARGV[6])
return out
";

/// Removes one attempt scored `at`, if any. KEYS[1] attempts; ARGV: at.
const UNCOUNT: &str = r"
local m = redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[1], ARGV[1], 'LIMIT', 0, 1)
if #m == 0 then return 0 end
return redis.call('ZREM', KEYS[1], m[1])
";

/// Adds attempts counted elsewhere (this instance's store, while Redis was
/// unavailable), keeps the latest `most kept`, and makes the key live at
/// least `ttl` more. KEYS[1] attempts; ARGV: ttl seconds, most kept, then
/// (score, member) pairs.
const ADD: &str = r"
for i = 3, #ARGV, 2 do redis.call('ZADD', KEYS[1], ARGV[i], ARGV[i + 1]) end
local n = redis.call('ZCARD', KEYS[1])
local most = tonumber(ARGV[2])
if n > most then redis.call('ZREMRANGEBYRANK', KEYS[1], 0, n - most - 1) end
if redis.call('TTL', KEYS[1]) < tonumber(ARGV[1]) then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return n
";

/// Keeps the later of the stored and the given refusal.
/// KEYS[1] refusal; ARGV: at, ttl seconds.
const REFUSE: &str = r"
local cur = tonumber(redis.call('GET', KEYS[1]) or '-1')
if tonumber(ARGV[1]) > cur then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
end
return 1
";

#[derive(Debug, thiserror::Error)]
pub enum SharedError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("unexpected answer from redis: {0}")]
    Parse(#[from] redis::ParsingError),
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    /// The server may drop keys to make room: a cap or a cool-off read
    /// from it could be missing what was counted.
    #[error("{0}")]
    Evicts(Arc<String>),
}

/// What of the Redis server's settings decides whether it can keep the
/// state: read from `INFO memory` and `INFO persistence`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerSettings {
    /// `maxmemory` in bytes (0: no limit, nothing is evicted).
    pub maxmemory: u64,
    pub policy: Option<String>,
    /// `appendonly` (None: not reported).
    pub aof: Option<bool>,
    /// Changes at every start of the server (`INFO server`).
    pub run_id: Option<String>,
}

impl ServerSettings {
    /// Reads the fields of `INFO` sections; unknown lines are skipped.
    pub fn parse(info: &str) -> ServerSettings {
        let mut s = ServerSettings::default();
        for line in info.lines() {
            let Some((k, v)) = line.trim_end().split_once(':') else {
                continue;
            };
            match k {
                "maxmemory" => s.maxmemory = v.parse().unwrap_or(0),
                "maxmemory_policy" => s.policy = Some(v.to_owned()),
                "aof_enabled" => s.aof = Some(v == "1"),
                "run_id" => s.run_id = Some(v.to_owned()),
                _ => {}
            }
        }
        s
    }

    /// Why the server may evict callguard's keys, if it may. Every key of
    /// refusals and attempts has a time to live, so the `volatile-*`
    /// policies evict them as readily as the `allkeys-*` ones.
    pub fn evicts(&self) -> Option<String> {
        match self.policy.as_deref() {
            Some(p) if p != "noeviction" && self.maxmemory > 0 => Some(format!(
                "Redis may evict refusals and attempt counts to make room \
                 (maxmemory-policy {p}, maxmemory {} bytes): set maxmemory-policy noeviction",
                self.maxmemory
            )),
            _ => None,
        }
    }
}

/// Handle to the shared state; cheap to clone.
#[derive(Clone)]
pub struct Shared {
    inner: Arc<Inner>,
}

struct Inner {
    conns: Vec<ConnectionManager>,
    next: AtomicUsize,
    prefix: String,
    timeout: Duration,
    count: redis::Script,
    uncount: redis::Script,
    refuse: redis::Script,
    add: redis::Script,
    /// Held while attempts move from this instance's store to Redis: two
    /// moves of the same attempts at once would add them twice.
    moving: tokio::sync::Mutex<()>,
    /// Makes attempt members unique across instances and calls.
    instance: u32,
    seq: AtomicU64,
    /// Last known reachability (the gauge follows it at once).
    up: AtomicBool,
    /// An outage was logged and its end is not yet: the end is logged once.
    logged_down: AtomicBool,
    /// When an outage was last logged (ms since `epoch`): under overload
    /// the state flaps at the timeout, and one line per 10 s is enough; the
    /// error counter has the rest.
    last_down_log: AtomicU64,
    epoch: std::time::Instant,
    health: Health,
    /// Set while the server's settings let it evict keys (`check_server`):
    /// the call state is then unavailable, as when Redis is down.
    evicts: arc_swap::ArcSwapOption<String>,
    /// The server's `run_id` at the last check: another one means it
    /// restarted.
    run_id: std::sync::Mutex<Option<String>>,
}

/// The stream of DNC changes is trimmed to about this many entries; an
/// instance that falls further behind reloads the hashes instead.
const DNC_STREAM_LEN: usize = 100_000;
/// Bound on admin-side operations (bulk DNC changes, full reloads), which
/// may carry many numbers.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

/// One run-time DNC change read from the stream.
#[derive(Debug, Clone)]
pub struct DncChange {
    pub id: String,
    pub list: String,
    pub change: ListChange,
    pub numbers: Vec<u64>,
}

/// What a run-time change does to its list's numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListChange {
    /// Listed (`true`) or removed from a DNC list.
    Dnc(bool),
    /// A consent given, or withdrawn (`None`).
    Consent(Option<crate::dnc::Consent>),
}

/// Least time between two "unavailable" log lines.
const DOWN_LOG_EVERY: Duration = Duration::from_secs(10);

/// A callee's history as read from the shared state.
#[derive(Debug, Default, Clone)]
pub struct Read {
    pub refused_at: Option<DateTime<Utc>>,
    pub attempts: Attempts,
}

impl Shared {
    /// Connections are made lazily and re-made after a failure (with
    /// backoff), so the proxy starts, and recovers, while Redis is down.
    pub fn connect(cfg: &RedisSettings, health: Health) -> Result<Shared, SharedError> {
        let client = redis::Client::open(cfg.url.as_str())?;
        let timeout = cfg.timeout;
        let conn_cfg = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout.max(Duration::from_millis(500))))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(1));
        let conns = (0..cfg.connections.max(1))
            .map(|_| ConnectionManager::new_lazy_with_config(client.clone(), conn_cfg.clone()))
            .collect::<Result<Vec<_>, _>>()?;
        health.up.set(1);
        Ok(Shared {
            inner: Arc::new(Inner {
                conns,
                next: AtomicUsize::new(0),
                prefix: cfg.key_prefix.clone(),
                timeout,
                count: redis::Script::new(COUNT),
                uncount: redis::Script::new(UNCOUNT),
                refuse: redis::Script::new(REFUSE),
                add: redis::Script::new(ADD),
                moving: tokio::sync::Mutex::new(()),
                instance: rand::random(),
                seq: AtomicU64::new(0),
                up: AtomicBool::new(true),
                logged_down: AtomicBool::new(false),
                last_down_log: AtomicU64::new(0),
                epoch: std::time::Instant::now(),
                health,
                evicts: Default::default(),
                run_id: Default::default(),
            }),
        })
    }

    fn conn(&self) -> ConnectionManager {
        let i = self.inner.next.fetch_add(1, Ordering::Relaxed) % self.inner.conns.len();
        self.inner.conns[i].clone()
    }

    fn key(&self, kind: &str, tenant: &str, callee: E164) -> String {
        format!("{}:{kind}:{tenant}:{}", self.inner.prefix, callee.digits())
    }

    /// Runs one operation under the timeout and keeps the health up to
    /// date. The gauge follows every switch; the log gets the start of an
    /// outage (at most one line per `DOWN_LOG_EVERY`) and its end.
    async fn run<T>(
        &self,
        op: impl std::future::Future<Output = Result<T, redis::RedisError>>,
    ) -> Result<T, SharedError> {
        self.run_within(self.inner.timeout, op).await
    }

    async fn run_within<T>(
        &self,
        timeout: Duration,
        op: impl std::future::Future<Output = Result<T, redis::RedisError>>,
    ) -> Result<T, SharedError> {
        let r = match tokio::time::timeout(timeout, op).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(SharedError::Redis(e)),
            Err(_) => Err(SharedError::Timeout(timeout)),
        };
        self.note(&r);
        r
    }

    /// Runs an operation on refusals or attempts: refused at once while the
    /// server may evict them.
    async fn run_state<T>(
        &self,
        op: impl std::future::Future<Output = Result<T, redis::RedisError>>,
    ) -> Result<T, SharedError> {
        if let Some(why) = self.inner.evicts.load_full() {
            let r = Err(SharedError::Evicts(why));
            self.note(&r);
            return r;
        }
        self.run(op).await
    }

    /// Keeps the health up to date after an operation.
    fn note<T>(&self, r: &Result<T, SharedError>) {
        let inner = &self.inner;
        match r {
            // Reachable, but not fit to keep the state while it may evict.
            Ok(_) if inner.evicts.load().is_some() => {}
            Ok(_) => {
                if !inner.up.swap(true, Ordering::Relaxed) {
                    inner.health.up.set(1);
                }
                if inner.logged_down.swap(false, Ordering::Relaxed) {
                    tracing::warn!("shared call state (Redis) reachable again");
                }
            }
            Err(e) => {
                inner.health.errors.inc();
                if inner.up.swap(false, Ordering::Relaxed) {
                    inner.health.up.set(0);
                }
                let now = inner.epoch.elapsed().as_millis() as u64 + 1;
                let last = inner.last_down_log.load(Ordering::Relaxed);
                let due =
                    last == 0 || now.saturating_sub(last) >= DOWN_LOG_EVERY.as_millis() as u64;
                if due
                    && !inner.logged_down.load(Ordering::Relaxed)
                    && inner
                        .last_down_log
                        .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                        .is_ok()
                {
                    inner.logged_down.store(true, Ordering::Relaxed);
                    tracing::error!(
                        error = %e,
                        errors_so_far = inner.health.errors.get(),
                        "shared call state (Redis) unavailable"
                    );
                }
            }
        }
    }

    /// Reads the server's settings, and makes the call state unavailable
    /// while they let it evict keys (and available again once they do
    /// not); says when the server has restarted since the last check.
    /// Called at start and every few seconds after.
    pub async fn check_server(&self) -> Result<ServerSettings, SharedError> {
        let mut pipe = redis::pipe();
        // One section per INFO: several in one arrived with Redis 7.
        for section in ["server", "memory", "persistence"] {
            pipe.cmd("INFO").arg(section);
        }
        let mut conn = self.conn();
        // Outside `run`: a server that refuses INFO (some managed services
        // rename it) is reported by the caller, not taken for an outage.
        let (server, memory, persistence): (String, String, String) =
            tokio::time::timeout(self.inner.timeout, pipe.query_async(&mut conn))
                .await
                .map_err(|_| SharedError::Timeout(self.inner.timeout))??;
        let settings = ServerSettings::parse(&format!("{server}\n{memory}\n{persistence}"));
        self.note_restart(&settings);
        let evicts = settings.evicts().map(Arc::new);
        match (self.inner.evicts.swap(evicts.clone()), evicts) {
            (None, Some(why)) => {
                tracing::error!("shared call state (Redis) unavailable: {why}");
                self.inner.health.errors.inc();
                self.inner.up.store(false, Ordering::Relaxed);
                self.inner.health.up.set(0);
            }
            (Some(_), None) => {
                tracing::warn!("Redis no longer evicts keys: the shared call state is used again");
            }
            _ => {}
        }
        Ok(settings)
    }

    /// A server that restarted without an append-only file has lost what
    /// was written since its last snapshot (with none, everything): the
    /// callees it forgot may be called again before the law allows. Nothing
    /// here can restore it, so it is said loudly and counted for the alert.
    fn note_restart(&self, settings: &ServerSettings) {
        let Some(now) = &settings.run_id else {
            return;
        };
        let before = self
            .inner
            .run_id
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .replace(now.clone());
        if before.is_none_or(|b| b == *now) {
            return;
        }
        self.inner.health.restarts.inc();
        if settings.aof == Some(true) {
            tracing::warn!(
                "Redis restarted (its run_id changed: a restart, or another server at its address, such as a replica after a failover); it runs with appendonly, so a restart reloaded the refusals and attempts from its append-only file (up to its last fsync)"
            );
        } else {
            tracing::error!(
                "Redis restarted without appendonly (its run_id changed: a restart, or another server at its address, such as a replica after a failover): the refusals and attempts written since its last snapshot (all, without one) or not yet replicated are lost, and those callees may be called again too soon (README, \"Several instances\")"
            );
        }
    }

    /// Whether the last operation succeeded.
    pub fn is_up(&self) -> bool {
        self.inner.up.load(Ordering::Relaxed)
    }

    /// The callee's refusal and attempts in the window, in one round trip.
    /// `refusals`/`window`: what the tenant's rules use (None: not read).
    pub async fn read(
        &self,
        tenant: &str,
        callee: E164,
        refusals: bool,
        window: Option<chrono::Duration>,
        now: DateTime<Utc>,
    ) -> Result<Read, SharedError> {
        let mut pipe = redis::pipe();
        if refusals {
            pipe.get(self.key("refusal", tenant, callee));
        }
        if let Some(w) = window {
            pipe.cmd("ZRANGEBYSCORE")
                .arg(self.key("attempts", tenant, callee))
                .arg(format!("({}", now.timestamp() - w.num_seconds()))
                .arg("+inf")
                .arg("WITHSCORES");
        }
        let mut conn = self.conn();
        let values: Vec<redis::Value> = self.run_state(pipe.query_async(&mut conn)).await?;
        let mut it = values.into_iter();
        let mut read = Read::default();
        if refusals {
            let v: Option<i64> = redis::from_redis_value(it.next().unwrap_or(redis::Value::Nil))?;
            read.refused_at = v.and_then(|s| DateTime::from_timestamp(s, 0));
        }
        if window.is_some() {
            let v: Vec<(String, f64)> =
                redis::from_redis_value(it.next().unwrap_or(redis::Value::Nil))?;
            read.attempts = v
                .into_iter()
                .filter_map(|(_, s)| DateTime::from_timestamp(s as i64, 0))
                .collect();
        }
        Ok(read)
    }

    /// Counts an attempt at `now` unless `enforce` and the cap is reached;
    /// atomic across every instance. Returns the attempts before this one.
    pub async fn count(
        &self,
        tenant: &str,
        callee: E164,
        now: DateTime<Utc>,
        cap: Cap,
        enforce: bool,
    ) -> Result<Attempts, SharedError> {
        let now_s = now.timestamp();
        let seq = self.inner.seq.fetch_add(1, Ordering::Relaxed);
        let member = format!("{now_s}:{:08x}:{seq}", self.inner.instance);
        let key = self.key("attempts", tenant, callee);
        let mut inv = self.inner.count.prepare_invoke();
        inv.key(&key)
            .arg(now_s)
            .arg(now_s - cap.window.num_seconds())
            .arg(cap.attempts)
            .arg(u8::from(enforce))
            .arg(&member)
            .arg(cap.window.num_seconds().max(1))
            .arg(MAX_ATTEMPTS_KEPT);
        let mut conn = self.conn();
        let r = self.run_state(inv.invoke_async(&mut conn)).await;
        if timed_out(&r) {
            take_back(conn, key, vec![member]);
        }
        let prior: Vec<f64> = r?;
        Ok(prior
            .into_iter()
            .filter_map(|s| DateTime::from_timestamp(s as i64, 0))
            .collect())
    }

    /// To hold while moving attempts from this instance's store to Redis
    /// (see [`Shared::add_attempts`]): waits for a move under way when
    /// `wait`, else `None` while one is.
    pub async fn moving_attempts(&self, wait: bool) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        if wait {
            Some(self.inner.moving.lock().await)
        } else {
            self.inner.moving.try_lock().ok()
        }
    }

    /// Adds attempts this instance counted while Redis was unavailable,
    /// each as its own member (attempts of one second from several
    /// instances all count); the key then lives at least `keep`.
    pub async fn add_attempts(
        &self,
        tenant: &str,
        callee: E164,
        attempts: &[DateTime<Utc>],
        keep: chrono::Duration,
    ) -> Result<(), SharedError> {
        let key = self.key("attempts", tenant, callee);
        let mut inv = self.inner.add.prepare_invoke();
        inv.key(&key)
            .arg(keep.num_seconds().max(1))
            .arg(MAX_ATTEMPTS_KEPT);
        let mut members = Vec::with_capacity(attempts.len());
        for at in attempts {
            let seq = self.inner.seq.fetch_add(1, Ordering::Relaxed);
            let at = at.timestamp();
            let member = format!("{at}:{:08x}:{seq}", self.inner.instance);
            inv.arg(at).arg(&member);
            members.push(member);
        }
        let mut conn = self.conn();
        let r = self.run_state(inv.invoke_async::<i64>(&mut conn)).await;
        if timed_out(&r) {
            take_back(conn, key, members);
        }
        r.map(drop)
    }

    /// Takes back one attempt counted at `at` (any instance's: attempts of
    /// the same second count alike).
    pub async fn uncount(
        &self,
        tenant: &str,
        callee: E164,
        at: DateTime<Utc>,
    ) -> Result<(), SharedError> {
        let mut inv = self.inner.uncount.prepare_invoke();
        inv.key(self.key("attempts", tenant, callee))
            .arg(at.timestamp());
        let mut conn = self.conn();
        let _: i64 = self.run(inv.invoke_async(&mut conn)).await?;
        Ok(())
    }

    /// Records a refusal (the later one wins), kept for `keep`.
    pub async fn record_refusal(
        &self,
        tenant: &str,
        callee: E164,
        at: DateTime<Utc>,
        keep: chrono::Duration,
    ) -> Result<(), SharedError> {
        let mut inv = self.inner.refuse.prepare_invoke();
        inv.key(self.key("refusal", tenant, callee))
            .arg(at.timestamp())
            .arg(keep.num_seconds().max(1));
        let mut conn = self.conn();
        let _: i64 = self.run_state(inv.invoke_async(&mut conn)).await?;
        Ok(())
    }

    fn dnc_stream(&self) -> String {
        format!("{}:dnc-changes", self.inner.prefix)
    }

    /// Publishes a run-time DNC change to every instance: the list's hash
    /// and the change stream, in one transaction.
    pub async fn dnc_publish(
        &self,
        list: &str,
        numbers: &[E164],
        listed: bool,
    ) -> Result<(), SharedError> {
        let flag = if listed { "1" } else { "0" };
        let hash = format!("{}:dnc:{list}", self.inner.prefix);
        self.publish(&hash, numbers, flag, &[("list", list), ("listed", flag)])
            .await
    }

    /// Publishes a run-time consent change to every instance, as
    /// [`Shared::dnc_publish`] does for DNC lists.
    pub async fn consent_publish(
        &self,
        list: &str,
        numbers: &[E164],
        consent: Option<&crate::dnc::Consent>,
    ) -> Result<(), SharedError> {
        let value = serde_json::to_string(&consent).unwrap_or_else(|_| "null".into());
        let hash = format!("{}:consent:{list}", self.inner.prefix);
        let fields = [("kind", "consent"), ("list", list), ("consent", &value)];
        self.publish(&hash, numbers, &value, &fields).await
    }

    /// One transaction: `value` for every number in the list's `hash`, and
    /// a stream entry with `fields` and the numbers.
    async fn publish(
        &self,
        hash: &str,
        numbers: &[E164],
        value: &str,
        fields: &[(&str, &str)],
    ) -> Result<(), SharedError> {
        let mut pipe = redis::pipe();
        pipe.atomic();
        for chunk in numbers.chunks(10_000) {
            let pairs: Vec<(u64, &str)> = chunk.iter().map(|n| (n.digits(), value)).collect();
            pipe.hset_multiple(hash, &pairs).ignore();
        }
        let joined = numbers
            .iter()
            .map(|n| n.digits().to_string())
            .collect::<Vec<_>>()
            .join(",");
        let xadd = pipe
            .cmd("XADD")
            .arg(self.dnc_stream())
            .arg("MAXLEN")
            .arg("~")
            .arg(DNC_STREAM_LEN)
            .arg("*");
        for (k, v) in fields {
            xadd.arg(*k).arg(*v);
        }
        xadd.arg("numbers").arg(joined).ignore();
        let mut conn = self.conn();
        let () = self
            .run_within(ADMIN_TIMEOUT, pipe.query_async(&mut conn))
            .await?;
        Ok(())
    }

    /// Every run-time consent change of a list; unreadable values skipped.
    pub async fn consent_all(
        &self,
        list: &str,
    ) -> Result<Vec<(u64, Option<crate::dnc::Consent>)>, SharedError> {
        let mut conn = self.conn();
        let hash = format!("{}:consent:{list}", self.inner.prefix);
        let all: Vec<(u64, String)> = self
            .run_within(
                ADMIN_TIMEOUT,
                redis::cmd("HGETALL").arg(hash).query_async(&mut conn),
            )
            .await?;
        Ok(all
            .into_iter()
            .filter_map(|(n, v)| Some((n, serde_json::from_str(&v).ok()?)))
            .collect())
    }

    /// Every run-time change of a list: (digits, listed).
    pub async fn dnc_all(&self, list: &str) -> Result<Vec<(u64, bool)>, SharedError> {
        let mut conn = self.conn();
        let hash = format!("{}:dnc:{list}", self.inner.prefix);
        let all: Vec<(u64, u8)> = self
            .run_within(
                ADMIN_TIMEOUT,
                redis::cmd("HGETALL").arg(hash).query_async(&mut conn),
            )
            .await?;
        Ok(all.into_iter().map(|(n, v)| (n, v == 1)).collect())
    }

    /// The id of the latest change in the stream (`0-0` when empty).
    pub async fn dnc_latest(&self) -> Result<String, SharedError> {
        let mut conn = self.conn();
        let last: Vec<(String, Vec<(String, String)>)> = self
            .run(
                redis::cmd("XREVRANGE")
                    .arg(self.dnc_stream())
                    .arg("+")
                    .arg("-")
                    .arg("COUNT")
                    .arg(1)
                    .query_async(&mut conn),
            )
            .await?;
        Ok(last
            .into_iter()
            .next()
            .map(|(id, _)| id)
            .unwrap_or_else(|| "0-0".into()))
    }

    /// Changes after `after`, oldest first, at most 1000.
    pub async fn dnc_changes(&self, after: &str) -> Result<Vec<DncChange>, SharedError> {
        let mut conn = self.conn();
        let entries: Vec<(String, Vec<(String, String)>)> = self
            .run_within(
                ADMIN_TIMEOUT,
                redis::cmd("XRANGE")
                    .arg(self.dnc_stream())
                    .arg(format!("({after}"))
                    .arg("+")
                    .arg("COUNT")
                    .arg(1000)
                    .query_async(&mut conn),
            )
            .await?;
        Ok(entries
            .into_iter()
            .map(|(id, fields)| {
                let mut c = DncChange {
                    id,
                    list: String::new(),
                    change: ListChange::Dnc(false),
                    numbers: Vec::new(),
                };
                let mut consent = None;
                for (k, v) in fields {
                    match k.as_str() {
                        "list" => c.list = v,
                        "listed" => c.change = ListChange::Dnc(v == "1"),
                        "consent" => consent = Some(v),
                        "numbers" => {
                            c.numbers = v.split(',').filter_map(|n| n.parse().ok()).collect()
                        }
                        _ => {}
                    }
                }
                if let Some(v) = consent {
                    match serde_json::from_str(&v) {
                        Ok(value) => c.change = ListChange::Consent(value),
                        Err(e) => {
                            // Applied as nothing rather than as a withdrawal.
                            tracing::error!(list = %c.list, error = %e, "an unreadable consent change in the shared stream; skipped");
                            c.numbers.clear();
                        }
                    }
                }
                c
            })
            .collect())
    }
}

/// Whether an operation failed on a time-out (the connection's response
/// time-out, or ours around it): it may still have been sent, and run.
fn timed_out<T>(r: &Result<T, SharedError>) -> bool {
    match r {
        Err(SharedError::Timeout(_)) => true,
        Err(SharedError::Redis(e)) => e.is_timeout(),
        _ => false,
    }
}

/// A write of attempts that timed out was still sent: a slow or frozen
/// Redis runs it when it gets to it, and the attempts it adds would then
/// count on top of what the caller did instead (a call refused `503`
/// counted all the same; an attempt counted here, then moved, counted
/// twice). A `ZREM` of exactly `members`, queued behind it on the same
/// connection, runs after it and takes them back. Between the two the
/// callee's count is too high: the safe side.
fn take_back(mut conn: ConnectionManager, key: String, members: Vec<String>) {
    super::in_background("attempts of a write that timed out", async move {
        let mut zrem = redis::cmd("ZREM");
        zrem.arg(&key).arg(&members);
        // Once queued it runs in its turn, whether or not its answer is
        // still awaited (the connection's response time-out bounds this
        // task): a late answer is the usual case here.
        match zrem.query_async::<i64>(&mut conn).await {
            Ok(n) => tracing::debug!(key, taken_back = n, "attempts of a write that timed out"),
            Err(e) => tracing::debug!(key, error = %e, "take-back of a write that timed out sent"),
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_memory_limit_with_an_evicting_policy_may_evict() {
        let info = |maxmemory: u64, policy: &str| {
            ServerSettings::parse(&format!(
                "# Memory\r\nused_memory:1024\r\nmaxmemory:{maxmemory}\r\n\
                 maxmemory_human:0B\r\nmaxmemory_policy:{policy}\r\n\
                 # Persistence\r\nloading:0\r\naof_enabled:1\r\n"
            ))
        };
        let s = info(104_857_600, "volatile-lru");
        assert_eq!(s.policy.as_deref(), Some("volatile-lru"));
        assert_eq!(s.aof, Some(true));
        let why = s.evicts().expect("volatile-lru with a limit evicts");
        assert!(why.contains("maxmemory-policy volatile-lru, maxmemory 104857600 bytes"));
        assert!(info(104_857_600, "allkeys-lfu").evicts().is_some());
        assert_eq!(info(104_857_600, "noeviction").evicts(), None);
        // No limit: nothing is evicted, whatever the policy.
        assert_eq!(info(0, "allkeys-lru").evicts(), None);
        // A server that does not say (an old one, or a proxy in front).
        let unknown = ServerSettings::parse("# Server\r\nredis_version:3.0.0\r\n");
        assert_eq!(unknown, ServerSettings::default());
        assert_eq!(unknown.evicts(), None);
        // `INFO server`'s run_id, which a restart changes.
        let server = ServerSettings::parse(
            "# Server\r\nredis_version:7.0.15\r\nrun_id:5d3a1c0e9b\r\ntcp_port:6379\r\n",
        );
        assert_eq!(server.run_id.as_deref(), Some("5d3a1c0e9b"));
    }
}
