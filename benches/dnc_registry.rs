//! A national registry in the compact DNC index (issue 15 targets: ≤ 2
//! bytes a number at registry density, built from text in ≤ 60 s for 250 M
//! numbers, started from the compiled index in milliseconds, lookup median
//! ≤ 100 ns).
//!
//!   cargo bench --bench dnc_registry                 # 250 M numbers
//!   REGISTRY_NUMBERS=20000000 cargo bench --bench dnc_registry
//!
//! The list is generated like the US registry: registrations cluster by
//! exchange (NPA-NXX), so numbers are drawn from a subset of exchanges,
//! each holding between a few hundred and most of its 10,000 lines.

use callguard::dnc::{self, CompactSet};
use callguard::numbering::Country;
use criterion::{criterion_group, criterion_main, Criterion};
use rand::{RngExt, SeedableRng};
use std::hint::black_box;
use std::io::Write;
use std::time::Instant;

fn rss_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Sorted, distinct NANP numbers (`1NPANXXXXXX`), clustered by exchange.
fn registry(n: usize, rng: &mut impl RngExt) -> Vec<u64> {
    let mut out = Vec::with_capacity(n + 10_000);
    let mut exchange: u64 = 201_000; // NPA-NXX 201-000
    while out.len() < n {
        exchange += rng.random_range(1..4);
        let (npa, nxx) = (exchange / 1000, exchange % 1000);
        assert!(npa <= 999, "the NANP holds fewer numbers than asked for");
        // Only exchanges of area codes in service (as the registry holds).
        if nxx < 200
            || callguard::numbering::parse(&format!("+1{exchange}0000"), Country::US).is_err()
        {
            continue;
        }
        let density = rng.random_range(0.05..0.9);
        for line in 0..10_000u64 {
            if rng.random_bool(density) {
                out.push(10_000_000_000 + exchange * 10_000 + line);
            }
        }
    }
    out.truncate(n);
    out
}

fn benches(c: &mut Criterion) {
    let n: usize = std::env::var("REGISTRY_NUMBERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(250_000_000);
    let mut rng = rand::rngs::StdRng::seed_from_u64(15);
    let dir = tempfile::tempdir_in(std::env::var("REGISTRY_DIR").unwrap_or_else(|_| "/tmp".into()))
        .unwrap();
    let text = dir.path().join("registry.txt");
    let t = Instant::now();
    let numbers = registry(n, &mut rng);
    {
        // The FTC's flat full list: `areacode,number`, one a line.
        let mut f =
            std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&text).unwrap());
        for &x in &numbers {
            let d = x - 10_000_000_000;
            writeln!(f, "{:03},{:07}", d / 10_000_000, d % 10_000_000).unwrap();
        }
    }
    let probes_in: Vec<u64> = (0..500_000)
        .map(|_| numbers[rng.random_range(0..numbers.len())])
        .collect();
    let span = (numbers[0], numbers[numbers.len() - 1]);
    drop(numbers);
    eprintln!(
        "generated {n} numbers ({:.1} GB of text) in {:.1} s",
        std::fs::metadata(&text).unwrap().len() as f64 / 1e9,
        t.elapsed().as_secs_f64()
    );

    let rss0 = rss_kib("VmRSS:");
    let t = Instant::now();
    let (set, report) = dnc::load_numbers(&text, Country::US).unwrap();
    let build = t.elapsed();
    assert_eq!(report.entries, n);
    eprintln!(
        "built from text: {:.1} s; {} bytes = {:.3} bytes a number; peak RSS while building {:.2} GB",
        build.as_secs_f64(),
        set.compact().bytes(),
        set.compact().bytes() as f64 / n as f64,
        rss_kib("VmHWM:") as f64 / 1e6
    );
    let index = dir.path().join("registry.cgdnc");
    set.compact().write(&index).unwrap();
    drop(set);
    std::fs::remove_file(&text).unwrap();

    let rss1 = rss_kib("VmRSS:");
    let t = Instant::now();
    let mapped = CompactSet::open(&index).unwrap();
    let open = t.elapsed();
    let rss2 = rss_kib("VmRSS:");
    // A reload maps the new index while the old one still serves.
    let t = Instant::now();
    let reloaded = CompactSet::open(&index).unwrap();
    let reopen = t.elapsed();
    let rss3 = rss_kib("VmRSS:");
    eprintln!(
        "start from the compiled index: {:.1} ms (checksum and structure checked), RSS +{:.0} MB; \
         a reload's second map: {:.1} ms, RSS +{:.0} MB (page-cache pages, shared); RSS before {:.0} MB, base {:.0} MB",
        open.as_secs_f64() * 1e3,
        (rss2.saturating_sub(rss1)) as f64 / 1e3,
        reopen.as_secs_f64() * 1e3,
        (rss3.saturating_sub(rss2)) as f64 / 1e3,
        rss1 as f64 / 1e3,
        rss0 as f64 / 1e3,
    );
    drop(reloaded);

    // Per-lookup latency, half listed and half random numbers of the span:
    // each timed alone, the timer's own cost subtracted.
    let probes: Vec<u64> = probes_in
        .iter()
        .copied()
        .zip((0..).map(|_| rng.random_range(span.0..span.1)))
        .flat_map(|(a, b)| [a, b])
        .collect();
    let mut empty: Vec<u64> = (0..100_000)
        .map(|_| {
            let t = Instant::now();
            black_box(());
            t.elapsed().as_nanos() as u64
        })
        .collect();
    empty.sort_unstable();
    let timer = empty[empty.len() / 2];
    let mut lat: Vec<u64> = probes
        .iter()
        .map(|&x| {
            let t = Instant::now();
            black_box(mapped.contains(black_box(x)));
            (t.elapsed().as_nanos() as u64).saturating_sub(timer)
        })
        .collect();
    lat.sort_unstable();
    eprintln!(
        "lookup, 1 M probes each timed alone: median {} ns, p99 {} ns, p99.9 {} ns (timer {} ns subtracted)",
        lat[lat.len() / 2],
        lat[lat.len() * 99 / 100],
        lat[lat.len() * 999 / 1000],
        timer
    );
    assert!(probes_in.iter().all(|&x| mapped.contains(x)));

    c.bench_function("registry_lookup_mapped_distinct_keys", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % probes.len();
            mapped.contains(black_box(probes[i]))
        })
    });
}

criterion_group! {
    name = registry_bench;
    config = Criterion::default().sample_size(50).measurement_time(std::time::Duration::from_secs(3));
    targets = benches
}
criterion_main!(registry_bench);
