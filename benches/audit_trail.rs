//! The audit writer's CPU per decision line (issue 16: the audit trail is
//! a tenth of a reject's cost in `perf` of the running proxy).
//!
//!   cargo bench --bench audit_trail
//!
//! `audit_writer_cpu_per_dnc_reject_line`: a batch of records of a DNC
//! rejection (the fr rule set's decision, as the gate hands it over) is
//! queued, flushed, and the writer thread's own CPU time (from
//! `/proc/self/task/*/schedstat`: the bench's only other thread) divided
//! by the batch: formatting, the
//! hash chain, the write and the fsync, not the caller's queueing.

use callguard::app::compile;
use callguard::audit::{Audit, Record};
use callguard::config::Config;
use callguard::policy::{Facts, History, Outcome};
use chrono::{TimeZone, Utc};
use criterion::{criterion_group, criterion_main, Criterion};
use std::sync::Arc;
use std::time::Duration;

/// Records per flush: below the writer's queue, and many fsyncs' worth
/// of batches, as under load.
const BATCH: u64 = 20_000;

/// The CPU time so far of every thread but this one (the audit writer is
/// the only other), from the kernel's precise count.
fn writer_cpu() -> Duration {
    let me = std::process::id().to_string();
    let mut ns = 0;
    for t in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        if t.file_name().to_str() == Some(me.as_str()) {
            continue;
        }
        let s = std::fs::read_to_string(t.path().join("schedstat")).unwrap();
        ns += s.split_whitespace().next().unwrap().parse::<u64>().unwrap();
    }
    Duration::from_nanos(ns)
}

fn benches(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("dnc.txt"), "+33612345678\n").unwrap();
    let cfg = Config::parse(
        "[sip]\nlisten = [\"udp:127.0.0.1:5060\"]\n[[dnc_list]]\nname = \"bench\"\nfile = \"dnc.txt\"\n\
         [[tenant]]\nid = \"t\"\nsources = [\"10.0.0.0/8\"]\nrule_set = \"fr\"\ndnc_lists = [\"bench\"]\n",
        &dir.path().join("c.toml"),
    )
    .unwrap();
    let (tenants, _) = compile::tenants(&cfg, dir.path(), None).unwrap();
    let t = tenants.by_id("t").unwrap().clone();
    let at = chrono_tz::Tz::Europe__Paris
        .with_ymd_and_hms(2026, 11, 17, 11, 0, 0)
        .unwrap()
        .with_timezone(&Utc);
    let facts = Facts::new("+33162000999", "+33612345678", None);
    let decision = t.decide(&facts, &History::default(), at);
    assert_eq!(decision.decision, Outcome::Reject);

    let audit = Audit::start(
        &dir.path().join("audit"),
        u64::MAX,
        None,
        Default::default(),
    )
    .unwrap();
    let config_version: Arc<str> = Arc::from("8f5c0bfabe9e98ca");
    let source = "127.0.0.1:5090".parse().unwrap();
    let mut n = 0u64;
    let mut batch = |records: u64| {
        let before = writer_cpu();
        for _ in 0..records {
            n += 1;
            let r = Record {
                call_id: format!("{n}-4242@127.0.0.1"),
                source,
                decision: Some(decision.clone()),
                at: at + chrono::Duration::milliseconds(n as i64),
                config_version: config_version.clone(),
            };
            audit.try_record(r).expect("the queue holds a batch");
        }
        assert!(audit.flush(Duration::from_secs(60)));
        writer_cpu() - before
    };
    batch(BATCH);
    let mut g = c.benchmark_group("audit");
    g.sample_size(10);
    g.bench_function("audit_writer_cpu_per_dnc_reject_line", |b| {
        b.iter_custom(|iters| {
            let mut cpu = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let k = left.min(BATCH);
                cpu += batch(k);
                left -= k;
            }
            cpu
        })
    });
    g.finish();
}

criterion_group!(group, benches);
criterion_main!(group);
