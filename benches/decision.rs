//! Decision-path benchmarks (issue targets: a full decision — parse both
//! numbers, zone lookup, schedule, DNC with 10 M entries — median under
//! 1 µs; one DNC lookup under 100 ns).
//!
//!   cargo bench --bench decision

use callguard::app::compile;
use callguard::clock::Clock;
use callguard::config::Config;
use callguard::dnc::NumberSet;
use callguard::gate::{Gate, GateParts};
use callguard::numbering::{self, Country, E164};
use callguard::policy::Facts;
use callguard::state::Backend;
use callguard::state::Store;
use chrono::{TimeZone, Utc};
use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use std::io::Write;

const N: u64 = 10_000_000;

/// 10 M distinct French mobile numbers (+336xxxxxxxx), spread with a
/// multiplicative step so the set is not sequential.
fn dnc_numbers() -> impl Iterator<Item = E164> {
    (0..N).map(|i| E164::from_digits(33_600_000_000 + (i * 7_919) % 100_000_000))
}

fn benches(c: &mut Criterion) {
    let set = NumberSet::from_numbers(dnc_numbers());
    let hit = dnc_numbers().nth(12_345).unwrap();
    let miss = numbering::parse("+33142000000", Country::FR).unwrap();
    assert!(set.contains(hit) && !set.contains(miss));
    c.bench_function("dnc_lookup_10M_hit", |b| {
        b.iter(|| set.contains(black_box(hit)))
    });
    c.bench_function("dnc_lookup_10M_miss", |b| {
        b.iter(|| set.contains(black_box(miss)))
    });
    // The same key every time stays in cache; callees differ call by call,
    // so the realistic figure walks 1 M different numbers (half listed).
    let hits = dnc_numbers().step_by(20).take(500_000);
    let misses = (0..500_000u64).map(|i| E164::from_digits(33_140_000_000 + i * 17));
    let keys: Vec<E164> = hits.zip(misses).flat_map(|(h, m)| [h, m]).collect();
    c.bench_function("dnc_lookup_10M_1M_distinct_keys", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % keys.len();
            set.contains(black_box(keys[i]))
        })
    });

    // A tenant with the fr rule set and a 10 M-entry DNC list from a file.
    let dir = tempfile::tempdir().unwrap();
    let mut f = std::io::BufWriter::new(std::fs::File::create(dir.path().join("dnc.txt")).unwrap());
    for n in dnc_numbers() {
        writeln!(f, "{n}").unwrap();
    }
    drop(f);
    let cfg = Config::parse(
        "[sip]\nlisten = [\"udp:127.0.0.1:5060\"]\n[[dnc_list]]\nname = \"big\"\nfile = \"dnc.txt\"\n\
         [[tenant]]\nid = \"t\"\nsources = [\"10.0.0.0/8\"]\ndnc_lists = [\"big\"]\n",
        &dir.path().join("c.toml"),
    )
    .unwrap();
    let (tenants, lists) = compile::tenants(&cfg, dir.path(), None).unwrap();
    assert_eq!(lists[0].report.entries as u64, N);
    let t = tenants.by_id("t").unwrap().clone();
    let open = chrono_tz::Tz::Europe__Paris
        .with_ymd_and_hms(2026, 11, 17, 11, 0, 0)
        .unwrap()
        .with_timezone(&Utc);
    let closed = chrono_tz::Tz::Europe__Paris
        .with_ymd_and_hms(2026, 11, 20, 20, 30, 0)
        .unwrap()
        .with_timezone(&Utc);
    let facts = Facts::new("+33162000000", "+33142000000", Some("predictive"));
    let none = callguard::policy::History::default();
    assert_eq!(
        t.decide(&facts, &none, open).decision,
        callguard::policy::Outcome::Allow
    );
    c.bench_function("decision_allow_fr_10M_dnc", |b| {
        b.iter(|| t.decide(black_box(&facts), &none, black_box(open)))
    });
    c.bench_function("decision_reject_outside_hours_with_retry_after", |b| {
        b.iter(|| t.decide(black_box(&facts), &none, black_box(closed)))
    });
    let dnc_facts = Facts::new("+33162000000", "+33600098765", None);
    c.bench_function("decision_reject_dnc", |b| {
        b.iter(|| t.decide(black_box(&dnc_facts), &none, black_box(open)))
    });
    let nanp = Facts::new("+33162000000", "+12083005555", None);
    c.bench_function("zone_lookup_nanp", |b| {
        let n = numbering::parse(nanp.callee, Country::FR).unwrap();
        b.iter(|| numbering::callee_zones(black_box(n)))
    });

    // A BPO's tenant with five rule sets of the library: the callee's
    // jurisdiction is found from the number (NANP state, Brazilian DDD) and
    // the national and state windows are intersected.
    let bpo_cfg = Config::parse(
        "[sip]\nlisten = [\"udp:127.0.0.1:5060\"]\n[[tenant]]\nid = \"bpo\"\nsources = [\"10.0.0.0/8\"]\n\
         country = \"US\"\nrule_sets = [\"us\", \"ca\", \"co\", \"br\", \"fr\"]\n",
        &dir.path().join("c.toml"),
    )
    .unwrap();
    let (bpo, _) = compile::tenants(&bpo_cfg, dir.path(), None).unwrap();
    let bpo = bpo.by_id("bpo").unwrap().clone();
    let ny = |d, h, m| {
        chrono_tz::Tz::America__New_York
            .with_ymd_and_hms(2026, 11, d, h, m, 0)
            .unwrap()
            .with_timezone(&Utc)
    };
    let miami = Facts::new("+12125550100", "+13055550123", Some("predictive"));
    let cases = [
        ("rules_decision_allow_us_fl", &miami, ny(24, 12, 0), "allow"),
        (
            "rules_decision_reject_us_fl_outside_hours_with_retry_after",
            &miami,
            ny(24, 20, 30),
            "outside_hours",
        ),
    ];
    let ri = Facts::new("+12125550100", "+14015550123", Some("predictive"));
    let toronto = Facts::new("+12125550100", "+14165550123", Some("predictive"));
    let more = [
        (
            "rules_decision_reject_us_ri_sunday",
            &ri,
            ny(29, 12, 0),
            "weekend",
        ),
        (
            "rules_decision_allow_ca_on",
            &toronto,
            ny(24, 12, 0),
            "allow",
        ),
    ];
    for (name, facts, at, want) in cases.into_iter().chain(more) {
        let d = bpo.decide(facts, &none, at);
        assert_eq!(d.reason_str().unwrap_or("allow"), want, "{}", d.explanation);
        c.bench_function(name, |b| {
            b.iter(|| bpo.decide(black_box(facts), &none, black_box(at)))
        });
    }

    // The gate with the embedded state store: history read, decision, and
    // the atomic check-and-count of the frequency cap (plus the write-behind
    // to redb by the writer thread), over 1 M distinct callees so every
    // call is counted rather than capped.
    let state_dir = tempfile::tempdir().unwrap();
    let (state, _) = Store::open(state_dir.path(), Clock::System).unwrap();
    let (tenants, _) = compile::tenants(&cfg, dir.path(), Some(&state)).unwrap();
    let gate: Gate = GateParts {
        state: Some(Backend::new(state, None)),
        ..GateParts::new(tenants)
    }
    .build();
    let t = gate.tenants.by_id("t").unwrap().clone();
    let callees: Vec<String> = (0..1_000_000u64)
        .map(|i| format!("+3314{:07}", i * 7 % 10_000_000))
        .collect();
    let probe = Facts::new("+33162000000", &callees[0], None);
    // Counted on a copy of the clock far from the measured instants.
    let d = gate
        .decide_and_count_now(&t, &probe, open - chrono::Duration::days(400))
        .unwrap();
    assert_eq!(
        d.decision,
        callguard::policy::Outcome::Allow,
        "{}",
        d.explanation
    );
    let mut i = 0usize;
    // Each pass over the callees moves five weeks on (same weekday and
    // hour, past the 30-day window), so no callee reaches the cap.
    let mut at = open;
    c.bench_function("gate_decide_and_count_embedded_state", |b| {
        b.iter(|| {
            i = (i + 1) % callees.len();
            if i == 0 {
                at += chrono::Duration::weeks(5);
            }
            let f = Facts::new("+33162000000", &callees[i], None);
            gate.decide_and_count_now(&t, black_box(&f), at)
        })
    });
}

criterion_group! {
    name = decision;
    config = Criterion::default().sample_size(50).measurement_time(std::time::Duration::from_secs(3));
    targets = benches
}
criterion_main!(decision);
