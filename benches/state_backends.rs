//! The decision path with each state backend: refusal read, decision,
//! atomic check-and-count of the frequency cap. Every call goes to a callee
//! not called before, so every call is counted rather than capped.
//!
//!   cargo bench --bench state_backends
//!
//! Criterion gives the median of one decision at a time; the latency
//! distribution (p50/p99/p99.9 over 50,000 sequential decisions) and the
//! rate with 64 decisions in flight are printed after it. The Redis part
//! needs `redis-server` (Debian package) and starts its own on loopback.

use callguard::app::compile;
use callguard::clock::Clock;
use callguard::config::Config;
use callguard::gate::{Gate, GateParts, Tenants};
use callguard::policy::Facts;
use callguard::policy::TenantPolicy;
use callguard::state::{Backend, Health, RedisSettings, Shared, Store};
use chrono::{DateTime, TimeZone, Utc};
use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Distinct French geographic callees, one per call.
static NEXT: AtomicU64 = AtomicU64::new(0);
fn callee() -> String {
    let i = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("+3314{:07}", (i * 7) % 10_000_000)
}

fn open_at() -> DateTime<Utc> {
    // Tuesday 17 Nov 2026, 11:00 in Paris: inside legal hours.
    Utc.with_ymd_and_hms(2026, 11, 17, 10, 0, 0).unwrap()
}

fn tenant(dir: &std::path::Path, state: Option<&Store>) -> (Tenants, Arc<TenantPolicy>) {
    let cfg = Config::parse(
        "[sip]\nlisten = [\"udp:127.0.0.1:5060\"]\n[[tenant]]\nid = \"t\"\nsources = [\"10.0.0.0/8\"]\n",
        &dir.join("c.toml"),
    )
    .unwrap();
    let (tenants, _) = compile::tenants(&cfg, dir, state).unwrap();
    let t = tenants.by_id("t").unwrap().clone();
    (tenants, t)
}

fn percentiles(mut v: Vec<Duration>) -> String {
    v.sort();
    let at = |q: f64| v[((v.len() as f64 * q) as usize).min(v.len() - 1)];
    format!(
        "p50 {:.1} µs, p99 {:.1} µs, p99.9 {:.1} µs, max {:.1} µs",
        at(0.5).as_secs_f64() * 1e6,
        at(0.99).as_secs_f64() * 1e6,
        at(0.999).as_secs_f64() * 1e6,
        v[v.len() - 1].as_secs_f64() * 1e6
    )
}

const SAMPLES: usize = 50_000;
const IN_FLIGHT: usize = 64;

fn embedded(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let (state, _) = Store::open(dir.path(), Clock::System).unwrap();
    let (tenants, t) = tenant(dir.path(), Some(&state));
    let gate: Gate = GateParts {
        state: Some(Backend::new(state, None)),
        ..GateParts::new(tenants)
    }
    .build();
    let decide = |gate: &Gate| {
        let to = callee();
        let f = Facts::new("+33162000000", &to, None);
        gate.decide_and_count_now(&t, black_box(&f), open_at())
    };
    c.bench_function("state_embedded_decide_and_count", |b| {
        b.iter(|| decide(&gate))
    });
    let lat = (0..SAMPLES)
        .map(|_| {
            let s = Instant::now();
            decide(&gate);
            s.elapsed()
        })
        .collect();
    println!("embedded, sequential: {}", percentiles(lat));
    // Two threads (the machine's cores) deciding at once.
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                for _ in 0..SAMPLES {
                    decide(&gate);
                }
            });
        }
    });
    let rate = (2 * SAMPLES) as f64 / started.elapsed().as_secs_f64();
    println!("embedded, 2 threads: {rate:.0} decisions/s");
}

struct RedisServer(std::process::Child);
impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn redis(c: &mut Criterion) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let Ok(child) = std::process::Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir.path())
        .stdout(std::process::Stdio::null())
        .spawn()
    else {
        println!("redis-server not found: the Redis backend is not measured");
        return;
    };
    let _server = RedisServer(child);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        std::thread::sleep(Duration::from_millis(20));
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (tenants, t) = tenant(dir.path(), None);
    let cfg = RedisSettings {
        url: format!("redis://127.0.0.1:{port}/0"),
        key_prefix: "bench".into(),
        connections: 2,
        timeout: Duration::from_millis(1000),
    };
    let (local, _) = Store::open(&dir.path().join("local"), Clock::System).unwrap();
    let policy = Arc::new(rt.block_on(async {
        GateParts {
            state: Some(Backend::new(
                local,
                Some(Shared::connect(&cfg, Health::default()).unwrap()),
            )),
            ..GateParts::new(tenants)
        }
        .build()
    }));
    async fn decide(p: &Gate, t: &TenantPolicy) {
        let to = callee();
        let f = Facts::new("+33162000000", &to, None);
        let d = p.decide_and_count(t, &f, open_at()).await;
        assert_eq!(d.reason, None, "{}", d.explanation);
    }
    c.bench_function("state_redis_decide_and_count", |b| {
        b.iter(|| rt.block_on(decide(&policy, &t)))
    });
    let lat = rt.block_on(async {
        let mut v = Vec::with_capacity(SAMPLES);
        for _ in 0..SAMPLES {
            let s = Instant::now();
            decide(&policy, &t).await;
            v.push(s.elapsed());
        }
        v
    });
    println!("redis, sequential: {}", percentiles(lat));
    let (took, lat) = rt.block_on(async {
        let started = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..IN_FLIGHT {
            let (p, t) = (policy.clone(), t.clone());
            tasks.spawn(async move {
                let mut v = Vec::with_capacity(SAMPLES / IN_FLIGHT);
                for _ in 0..SAMPLES * 4 / IN_FLIGHT {
                    let s = Instant::now();
                    decide(&p, &t).await;
                    v.push(s.elapsed());
                }
                v
            });
        }
        let mut all = Vec::new();
        while let Some(v) = tasks.join_next().await {
            all.extend(v.unwrap());
        }
        (started.elapsed(), all)
    });
    println!(
        "redis, {IN_FLIGHT} in flight: {:.0} decisions/s; {}",
        lat.len() as f64 / took.as_secs_f64(),
        percentiles(lat)
    );
}

criterion_group! {
    name = state_backends;
    config = Criterion::default().sample_size(30).measurement_time(Duration::from_secs(3));
    targets = embedded, redis
}
criterion_main!(state_backends);
