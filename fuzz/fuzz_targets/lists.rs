//! List files as an operator or a registry hands them over: DNC text and
//! XML, consent and change files, compiled indexes (damaged, forged with a
//! valid checksum, or built and then altered). An error or a list, never a
//! panic; a list read back answers lookups without one.
#![no_main]

use callguard::dnc::{self, compact, CompactSet};
use callguard::numbering::{Country, E164};
use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;

/// One file per process, rewritten for each input: the loaders read paths.
fn scratch() -> PathBuf {
    callguard_fuzz::scratch_dir().join(format!("lists-{}", std::process::id()))
}

/// Numbers to look up: the input's words, and what a list of each country
/// usually holds.
fn probes(data: &[u8]) -> impl Iterator<Item = u64> + '_ {
    words(data)
        .take(64)
        .chain([0, 1, 33_612_345_678, 12_025_550_123, u64::MAX])
}

fn words(data: &[u8]) -> impl Iterator<Item = u64> + '_ {
    data.chunks(8).map(|c| {
        let mut w = [0u8; 8];
        w[..c.len()].copy_from_slice(c);
        u64::from_le_bytes(w)
    })
}

fn read_index(set: &CompactSet, data: &[u8]) {
    for p in probes(data) {
        let _ = set.contains(p);
    }
    // Bounded: a forged count must not make the walk the fuzzer's timeout.
    let _ = set.iter().take(1 << 16).count();
    let _ = (set.len(), set.date(), set.bytes());
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    // The low four bits pick the loader, the high four the country whose
    // national format the list's numbers are read in.
    let country = Country::ALL[usize::from(mode >> 4) % Country::ALL.len()];
    let path = scratch();
    let mut bytes = body.to_vec();
    match mode & 0x0f {
        // An index whose words the input gives, past magic and checksum.
        0 => compact::forge(&mut bytes),
        // A real index of the input's numbers (a count, then the numbers),
        // then altered word by word (each alteration: a word's place and a
        // value to xor into it) and forged again.
        1 => {
            let Some((&count, rest)) = body.split_first() else {
                return;
            };
            let cut = (usize::from(count) * 8).min(rest.len());
            let numbers: Vec<u64> = words(&rest[..cut]).collect();
            let set = CompactSet::build(numbers.clone(), None);
            if set.write(&path).is_err() {
                return;
            }
            let Ok(mut built) = std::fs::read(&path) else {
                return;
            };
            let alterations = rest[cut..].chunks_exact(9);
            if alterations.len() == 0 {
                // Unaltered, the index holds exactly its numbers.
                let read = CompactSet::open(&path).expect("an index just built opens");
                let mut want = numbers;
                want.sort_unstable();
                want.dedup();
                for n in &want {
                    assert!(read.contains(*n), "{n} lost");
                }
                assert_eq!(read.iter().collect::<Vec<_>>(), want);
                return;
            }
            for alter in alterations {
                let at = usize::from(alter[0]) % (built.len() / 8) * 8;
                for (b, x) in built[at..at + 8].iter_mut().zip(&alter[1..]) {
                    *b ^= x;
                }
            }
            compact::forge(&mut built);
            bytes = built;
        }
        _ => {}
    }
    if std::fs::write(&path, &bytes).is_err() {
        return;
    }
    match mode & 0x0f {
        0 | 1 => {
            if let Ok(set) = CompactSet::open(&path) {
                read_index(&set, body);
            }
        }
        2 => {
            if let Ok((list, _)) = dnc::load_numbers(&path, country) {
                for p in probes(body) {
                    let _ = list.contains_digits(p);
                }
                read_index(list.compact(), body);
            }
        }
        3 => {
            if let Ok((list, _)) = dnc::load_consent(&path, country) {
                for p in probes(body) {
                    let _ = list.get(E164::from_digits(p));
                }
            }
        }
        _ => {
            if let Ok((changes, _)) = dnc::load_changes(&path, country) {
                let base =
                    dnc::NumberSet::from_numbers(probes(body).take(8).map(E164::from_digits));
                let _ = base.with_changes(&changes).iter().count();
            }
        }
    }
});
