//! The compact, immutable number set behind DNC lists loaded from files:
//! a national registry (the US one: 250 million numbers) in about one byte
//! a number, looked up without a lock, and written once to a file that
//! `serve` memory-maps (`callguard dnc compile`).
//!
//! Partitioned Elias–Fano: the sorted numbers are cut into chunks of
//! [`CHUNK`]; each chunk keeps its first number in a directory (searched
//! through a second, 256 times smaller level that stays in cache) and
//! encodes the others as offsets from it, each split into `l` low bits
//! stored as they are and high bits in unary. With `l = ⌊log2(U/k)⌋` for a
//! chunk of `k` numbers spanning `U`, the unary part is at most `3k` bits,
//! so a lookup reads at most 7 words of it: the cost of a lookup does not
//! depend on how numbers cluster.
//!
//! Written by hand rather than taken from a crate: the structure must be a
//! flat, versioned, checksummed file that several processes map and share,
//! and that a damaged or hostile file cannot turn into a crash. `sux`/
//! `epserde` map their structures without checking them (an `unsafe`
//! contract on the file), `roaring` and `sucds` deserialize into owned
//! memory (a reload would double it); none records the data's date, which
//! the law's freshness rules need.

use chrono::{Datelike, NaiveDate};
use std::path::Path;

/// Numbers per chunk. 128 keeps the directory at 1/16 byte a number and a
/// chunk's unary part within 7 words.
pub const CHUNK: usize = 128;
/// Chunks per entry of the directory's top level.
const TOP: usize = 256;

const MAGIC: u64 = u64::from_le_bytes(*b"CGDNCIX\x01");
const VERSION: u64 = 1;
/// Header words: magic, version, count, chunks, top length, data words,
/// date, checksum, then reserved.
const HEADER: usize = 16;

/// Why a compiled index cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("cannot read index {path}: {source}")]
    Read {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("index {path} is not a callguard DNC index (compile it with `callguard dnc compile`)")]
    NotAnIndex { path: std::path::PathBuf },
    #[error("index {path} has format version {found}; this callguard reads version {VERSION}: compile it again")]
    Version {
        path: std::path::PathBuf,
        found: u64,
    },
    #[error("index {path} is damaged ({what}): compile it again")]
    Damaged {
        path: std::path::PathBuf,
        what: &'static str,
    },
}

/// The words of an index: built in memory or mapped from a file.
enum Words {
    Owned(Vec<u64>),
    Mapped(memmap2::Mmap),
}

impl Words {
    fn all(&self) -> &[u64] {
        match self {
            Words::Owned(v) => v,
            // Checked at open: the map is page-aligned and a whole number
            // of words long.
            Words::Mapped(m) => bytemuck::cast_slice(&m[..]),
        }
    }
}

/// A set of E.164 numbers (their digits as `u64`), immutable once built.
pub struct CompactSet {
    words: Words,
    count: usize,
    chunks: usize,
    top_len: usize,
    /// Days since 1970-01-01 of the data the set was built from, when known.
    date: Option<i64>,
}

impl std::fmt::Debug for CompactSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompactSet")
            .field("count", &self.count)
            .field("bytes", &self.bytes())
            .field("mapped", &matches!(self.words, Words::Mapped(_)))
            .finish()
    }
}

impl Default for CompactSet {
    fn default() -> Self {
        CompactSet::from_sorted(std::iter::empty(), None)
    }
}

impl CompactSet {
    /// Builds the set of `numbers` (any order, duplicates allowed).
    pub fn build(mut numbers: Vec<u64>, date: Option<NaiveDate>) -> CompactSet {
        numbers.sort_unstable();
        CompactSet::from_sorted(numbers.into_iter(), date)
    }

    /// Builds the set of `sorted` (increasing; repeats are dropped), holding
    /// one chunk of it at a time: a registry merged from sorted parts is
    /// never copied whole.
    pub fn from_sorted(sorted: impl Iterator<Item = u64>, date: Option<NaiveDate>) -> CompactSet {
        let date = date.map(|d| i64::from(d.num_days_from_ce() - UNIX_EPOCH_CE));
        let mut firsts = Vec::new();
        let mut metas = Vec::new();
        let mut data: Vec<u64> = Vec::new();
        let mut count = 0usize;
        let mut last = None;
        let mut chunk: Vec<u64> = Vec::with_capacity(CHUNK);
        let mut flush = |chunk: &mut Vec<u64>| {
            firsts.push(chunk[0]);
            metas.push(((data.len() as u64) << 8) | u64::from(encode_chunk(chunk, &mut data)));
            chunk.clear();
        };
        for x in sorted {
            debug_assert!(last.is_none_or(|l| l <= x), "input not sorted");
            if last.is_some_and(|l| l >= x) {
                continue;
            }
            last = Some(x);
            chunk.push(x);
            count += 1;
            if chunk.len() == CHUNK {
                flush(&mut chunk);
            }
        }
        if !chunk.is_empty() {
            flush(&mut chunk);
        }
        let chunks = firsts.len();
        let top_len = chunks.div_ceil(TOP);
        metas.push((data.len() as u64) << 8);
        let mut w = Vec::with_capacity(HEADER + top_len + chunks * 2 + 1 + data.len());
        w.extend_from_slice(&[
            MAGIC,
            VERSION,
            count as u64,
            chunks as u64,
            top_len as u64,
            data.len() as u64,
            date.map_or(u64::MAX, |d| d as u64),
            0,
        ]);
        w.resize(HEADER, 0);
        w.extend(firsts.iter().step_by(TOP));
        w.extend_from_slice(&firsts);
        w.extend_from_slice(&metas);
        w.extend_from_slice(&data);
        w[7] = checksum(&w[HEADER..]);
        CompactSet {
            words: Words::Owned(w),
            count,
            chunks,
            top_len,
            date,
        }
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Size of the index (what it occupies in memory or on disk).
    pub fn bytes(&self) -> usize {
        self.words.all().len() * 8
    }

    /// The date of the data it was built from, when known.
    pub fn date(&self) -> Option<NaiveDate> {
        let d = i32::try_from(self.date?).ok()?;
        NaiveDate::from_num_days_from_ce_opt(d.checked_add(UNIX_EPOCH_CE)?)
    }

    fn top(&self) -> &[u64] {
        &self.words.all()[HEADER..HEADER + self.top_len]
    }
    fn firsts(&self) -> &[u64] {
        let s = HEADER + self.top_len;
        &self.words.all()[s..s + self.chunks]
    }
    fn metas(&self) -> &[u64] {
        let s = HEADER + self.top_len + self.chunks;
        &self.words.all()[s..s + self.chunks + 1]
    }
    fn data(&self) -> &[u64] {
        &self.words.all()[HEADER + self.top_len + 2 * self.chunks + 1..]
    }

    pub fn contains(&self, x: u64) -> bool {
        let top = self.top();
        let t = top.partition_point(|&v| v <= x);
        if t == 0 {
            return false;
        }
        let lo = (t - 1) * TOP;
        let hi = (lo + TOP).min(self.chunks);
        let firsts = self.firsts();
        let c = lo + firsts[lo..hi].partition_point(|&v| v <= x) - 1;
        let Some((words, k, l)) = self.chunk(c) else {
            return false;
        };
        chunk_contains(words, k, l, x - firsts[c])
    }

    /// Every number, in order.
    pub fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        (0..self.chunks).flat_map(move |c| {
            let first = self.firsts()[c];
            let (words, k, l) = self.chunk(c).unwrap_or((&[], 0, 0));
            decode_chunk(words, k, l).map(move |e| first + e)
        })
    }

    /// Chunk `c`'s words, number count and low-bit width.
    fn chunk(&self, c: usize) -> Option<(&[u64], usize, u32)> {
        let metas = self.metas();
        let (start, l) = ((metas[c] >> 8) as usize, (metas[c] & 0xff) as u32);
        let end = (metas[c + 1] >> 8) as usize;
        let k = if c + 1 == self.chunks {
            self.count - c * CHUNK
        } else {
            CHUNK
        };
        Some((self.data().get(start..end)?, k, l))
    }

    /// Writes the index to `path` (through a temporary file, renamed: a
    /// process mapping the old file keeps reading it).
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        use std::io::Write;
        let tmp = path.with_extension("tmp");
        let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        for w in self.words.all() {
            f.write_all(&w.to_le_bytes())?;
        }
        f.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        std::fs::rename(&tmp, path)
    }

    /// Maps the index at `path`, checked whole (checksum and structure)
    /// before use: a damaged file is refused, never read wrong.
    pub fn open(path: &Path) -> Result<CompactSet, IndexError> {
        let read = |source| IndexError::Read {
            path: path.to_owned(),
            source,
        };
        let damaged = |what| IndexError::Damaged {
            path: path.to_owned(),
            what,
        };
        let file = std::fs::File::open(path).map_err(read)?;
        // SAFETY: the map is read-only; `callguard dnc compile` replaces
        // an index by renaming a new file over it, never by writing into
        // it, so the mapped pages do not change under us. A file truncated
        // by someone else would fault, as any mapped file would.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(read)?;
        if map.len() < HEADER * 8 || map.len() % 8 != 0 {
            return Err(IndexError::NotAnIndex {
                path: path.to_owned(),
            });
        }
        let words = Words::Mapped(map);
        let w = words.all();
        if w[0] != MAGIC {
            return Err(IndexError::NotAnIndex {
                path: path.to_owned(),
            });
        }
        if w[1] != VERSION {
            return Err(IndexError::Version {
                path: path.to_owned(),
                found: w[1],
            });
        }
        let (count, chunks, top_len, data_len) = (w[2], w[3], w[4], w[5]);
        // Counts of words are bounded by the file; the count of numbers
        // by the chunks (checked below).
        let fits = |v: u64| usize::try_from(v).ok().filter(|&v| v <= w.len());
        let (Some(count), Some(chunks), Some(top_len), Some(data_len)) = (
            usize::try_from(count).ok(),
            fits(chunks),
            fits(top_len),
            fits(data_len),
        ) else {
            return Err(damaged("sizes"));
        };
        if chunks != count.div_ceil(CHUNK)
            || top_len != chunks.div_ceil(TOP)
            || w.len() != HEADER + top_len + 2 * chunks + 1 + data_len
        {
            return Err(damaged("sizes"));
        }
        if checksum(&w[HEADER..]) != w[7] {
            return Err(damaged("checksum"));
        }
        let date = (w[6] != u64::MAX).then_some(w[6] as i64);
        let set = CompactSet {
            words,
            count,
            chunks,
            top_len,
            date,
        };
        set.check_structure().map_err(damaged)?;
        Ok(set)
    }

    /// The invariants `contains` relies on, for an index read from disk.
    fn check_structure(&self) -> Result<(), &'static str> {
        let (firsts, metas, data) = (self.firsts(), self.metas(), self.data());
        if !firsts.windows(2).all(|p| p[0] < p[1]) {
            return Err("directory order");
        }
        if !self
            .top()
            .iter()
            .zip(firsts.iter().step_by(TOP))
            .all(|(a, b)| a == b)
        {
            return Err("directory levels");
        }
        for c in 0..self.chunks {
            let (start, l) = (metas[c] >> 8, metas[c] & 0xff);
            let end = metas[c + 1] >> 8;
            if start > end || end as usize > data.len() || l > 63 {
                return Err("chunk bounds");
            }
        }
        Ok(())
    }
}

/// Whether a file starting with `head` is a compiled index.
pub fn is_index(head: &[u8]) -> bool {
    head.get(..8) == Some(&MAGIC.to_le_bytes()[..])
}

/// The numbers of sorted `parts`, merged in order (repeats included).
pub fn merge<I: Iterator<Item = u64>>(parts: Vec<I>) -> impl Iterator<Item = u64> {
    let mut parts: Vec<std::iter::Peekable<I>> =
        parts.into_iter().map(Iterator::peekable).collect();
    std::iter::from_fn(move || {
        // Few parts (one per core): a scan beats a heap.
        let (i, _) = parts
            .iter_mut()
            .enumerate()
            .filter_map(|(i, p)| p.peek().map(|&v| (i, v)))
            .min_by_key(|&(_, v)| v)?;
        parts[i].next()
    })
}

/// xxh3 of the words: a damaged index is refused, not half-read.
fn checksum(words: &[u64]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(bytemuck::cast_slice(words))
}

/// Days from 0001-01-01 (chrono's day 1) to 1970-01-01.
const UNIX_EPOCH_CE: i32 = 719_163;

/// Appends the Elias–Fano encoding of `chunk` (offsets from its first
/// number): `l`-bit lows, then the unary highs. Returns `l`.
fn encode_chunk(chunk: &[u64], out: &mut Vec<u64>) -> u8 {
    let first = chunk[0];
    let k = chunk.len() as u64;
    let span = chunk[chunk.len() - 1] - first;
    let l = (span / k).checked_ilog2().unwrap_or(0);
    let lows_at = out.len();
    out.resize(lows_at + (chunk.len() * l as usize).div_ceil(64), 0);
    let highs_bits = chunk.len() + (span >> l) as usize + 1;
    let highs_at = out.len();
    out.resize(highs_at + highs_bits.div_ceil(64), 0);
    let mask = (1u64 << l) - 1;
    for (j, &x) in chunk.iter().enumerate() {
        let e = x - first;
        if l > 0 {
            let bit = j * l as usize;
            let (w, b) = (lows_at + bit / 64, bit % 64);
            out[w] |= (e & mask) << b;
            if b + l as usize > 64 {
                out[w + 1] |= (e & mask) >> (64 - b);
            }
        }
        let pos = (e >> l) as usize + j;
        out[highs_at + pos / 64] |= 1 << (pos % 64);
    }
    l as u8
}

fn low(lows: &[u64], j: usize, l: u32) -> u64 {
    if l == 0 {
        return 0;
    }
    let bit = j * l as usize;
    let (w, b) = (bit / 64, bit % 64);
    let mut v = lows.get(w).copied().unwrap_or(0) >> b;
    if b + l as usize > 64 {
        v |= lows.get(w + 1).copied().unwrap_or(0) << (64 - b);
    }
    v & ((1u64 << l) - 1)
}

/// Whether offset `v` is in the chunk encoded in `words` (`k` numbers).
fn chunk_contains(words: &[u64], k: usize, l: u32, v: u64) -> bool {
    let lw = (k * l as usize).div_ceil(64);
    let Some((lows, highs)) = words.split_at_checked(lw) else {
        return false;
    };
    let h = v >> l;
    let want = v & ((1u64 << l) - 1);
    // The position just after the h-th zero: where the numbers whose high
    // part is h start.
    let Some(mut p) = after_zeros(highs, h) else {
        return false;
    };
    let mut j = p - h as usize;
    while j < k {
        let Some(&w) = highs.get(p / 64) else {
            return false;
        };
        if w >> (p % 64) & 1 == 0 {
            return false;
        }
        let lo = low(lows, j, l);
        if lo >= want {
            return lo == want;
        }
        p += 1;
        j += 1;
    }
    false
}

/// The bit position after the `n`-th zero of `bits` (0 for n = 0).
fn after_zeros(bits: &[u64], n: u64) -> Option<usize> {
    if n == 0 {
        return Some(0);
    }
    let mut left = n;
    for (i, &w) in bits.iter().enumerate() {
        let z = u64::from(w.count_zeros());
        if left <= z {
            let mut inv = !w;
            for _ in 1..left {
                inv &= inv - 1;
            }
            return Some(i * 64 + inv.trailing_zeros() as usize + 1);
        }
        left -= z;
    }
    None
}

fn decode_chunk(words: &[u64], k: usize, l: u32) -> impl Iterator<Item = u64> + '_ {
    let lw = (k * l as usize).div_ceil(64).min(words.len());
    let (lows, highs) = words.split_at(lw);
    let mut p = 0usize;
    let mut zeros = 0u64;
    (0..k).map_while(move |j| loop {
        let w = *highs.get(p / 64)?;
        let one = w >> (p % 64) & 1 == 1;
        p += 1;
        if one {
            return Some((zeros << l) | low(lows, j, l));
        }
        zeros += 1;
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    /// Numbers as lists hold them: runs of neighbours (whole blocks taken
    /// at once), scattered singles, and the edges of the range.
    fn lists() -> impl Strategy<Value = Vec<u64>> {
        let run =
            (1u64..999_999_999_999_999, 1u64..300, 1u64..40).prop_map(|(start, len, step)| {
                (0..len)
                    .map(move |i| start.saturating_add(i * step))
                    .collect::<Vec<_>>()
            });
        let edges = Just(vec![
            0,
            1,
            2,
            999_999_999_999_999,
            u64::from(u32::MAX),
            12_015_550_123,
        ]);
        proptest::collection::vec(
            prop_oneof![run, edges, proptest::collection::vec(any::<u64>(), 0..50)],
            0..12,
        )
        .prop_map(|parts| parts.concat())
    }

    fn check_same(set: &CompactSet, truth: &HashSet<u64>, probes: &[u64]) {
        assert_eq!(set.len(), truth.len());
        for &x in truth {
            assert!(set.contains(x), "{x} listed but not found");
            for y in [x.wrapping_sub(1), x.wrapping_add(1), x ^ 1, x ^ 64] {
                assert_eq!(set.contains(y), truth.contains(&y), "{y}");
            }
        }
        for &p in probes {
            assert_eq!(set.contains(p), truth.contains(&p), "{p}");
        }
        let mut sorted: Vec<u64> = truth.iter().copied().collect();
        sorted.sort_unstable();
        assert!(set.iter().eq(sorted.into_iter()));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        /// Every number of the list is found and no other, built in memory
        /// and read back from its file.
        #[test]
        fn finds_every_number_and_no_other(numbers in lists(), probes in proptest::collection::vec(any::<u64>(), 0..64)) {
            let truth: HashSet<u64> = numbers.iter().copied().collect();
            let set = CompactSet::build(numbers, None);
            check_same(&set, &truth, &probes);
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("l.cgdnc");
            set.write(&path).unwrap();
            check_same(&CompactSet::open(&path).unwrap(), &truth, &probes);
        }
    }

    /// Enough numbers for several entries of the directory's top level
    /// (one per 32,768 numbers), clustered by NPA-NXX like a registry.
    #[test]
    fn a_registry_like_list_across_the_directory_levels() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut v = Vec::new();
        for _ in 0..60 {
            let exchange = 12_000_000_000 + rng.gen_range(0..800_000u64) * 10_000;
            v.extend((0..rng.gen_range(500..5_000)).map(|_| exchange + rng.gen_range(0..10_000)));
        }
        let truth: HashSet<u64> = v.iter().copied().collect();
        assert!(truth.len() > 4 * TOP * CHUNK, "{}", truth.len());
        let probes: Vec<u64> = (0..100_000)
            .map(|_| 12_000_000_000 + rng.gen_range(0..8_000_000_000u64))
            .collect();
        check_same(&CompactSet::build(v, None), &truth, &probes);
    }

    #[test]
    fn empty_and_dense_and_dated() {
        let empty = CompactSet::default();
        assert!(empty.is_empty() && !empty.contains(0) && !empty.contains(u64::MAX));
        // A whole block of consecutive numbers, and two far apart.
        let mut v: Vec<u64> = (33_142_000_000..33_142_100_000).collect();
        v.extend([1, u64::MAX]);
        let date = NaiveDate::from_ymd_opt(2026, 11, 2);
        let set = CompactSet::build(v, date);
        assert_eq!(set.len(), 100_002);
        assert!(set.contains(33_142_099_999) && !set.contains(33_142_100_000));
        assert!(set.contains(u64::MAX) && set.contains(1) && !set.contains(0));
        assert_eq!(set.date(), date);
        // About 2 bits a number for a solid run.
        assert!(set.bytes() < 100_002 / 2, "{}", set.bytes());
    }

    #[test]
    fn a_damaged_or_foreign_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.cgdnc");
        let set = CompactSet::build(
            (0..10_000u64).map(|i| 33_600_000_000 + i * 37).collect(),
            None,
        );
        set.write(&path).unwrap();
        let good = std::fs::read(&path).unwrap();
        let mut bad = good.clone();
        let last = bad.len() - 3;
        bad[last] ^= 0x10;
        std::fs::write(&path, &bad).unwrap();
        assert!(matches!(
            CompactSet::open(&path),
            Err(IndexError::Damaged {
                what: "checksum",
                ..
            })
        ));
        std::fs::write(&path, &good[..good.len() - 8]).unwrap();
        assert!(matches!(
            CompactSet::open(&path),
            Err(IndexError::Damaged { .. })
        ));
        std::fs::write(&path, &good[..100]).unwrap();
        assert!(matches!(
            CompactSet::open(&path),
            Err(IndexError::NotAnIndex { .. })
        ));
        std::fs::write(&path, b"+33612345678\n").unwrap();
        assert!(matches!(
            CompactSet::open(&path),
            Err(IndexError::NotAnIndex { .. })
        ));
        let mut newer = good.clone();
        newer[8] = 9;
        std::fs::write(&path, &newer).unwrap();
        assert!(matches!(
            CompactSet::open(&path),
            Err(IndexError::Version { found: 9, .. })
        ));
        std::fs::write(&path, &good).unwrap();
        assert_eq!(CompactSet::open(&path).unwrap().len(), 10_000);
    }
}
