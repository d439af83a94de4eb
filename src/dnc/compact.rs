//! The compact, immutable number set behind DNC lists loaded from files:
//! a national registry (the US one: 250 million numbers) in about one byte
//! a number, looked up without a lock, and written once to a file that
//! `serve` memory-maps (`callguard dnc compile`).
//!
//! Partitioned Elias–Fano: the sorted numbers are cut into chunks of
//! [`CHUNK`]; each chunk keeps its first number in a directory and encodes
//! the others as offsets from it, each split into `l` low bits stored as
//! they are and high bits in unary. With `l = ⌊log2(U/k)⌋` for a chunk of
//! `k` numbers spanning `U`, the unary part is at most `3k` bits, so a
//! lookup reads at most 7 words of it: the cost of a lookup does not
//! depend on how numbers cluster.
//!
//! The directory is reached through a table indexed by the number's high
//! bits (as many entries as chunks, 4 bytes each): it names the few chunks
//! that start in that slice of the range, so a lookup touches the table,
//! one line of the directory (a chunk's first number and where its data
//! lies sit side by side) and the chunk: three memory reads where a binary
//! search over the directory made a dozen, most of them cache misses.
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

/// Numbers per chunk. 128 keeps the directory at 1/8 byte a number and a
/// chunk's unary part within 7 words.
pub const CHUNK: usize = 128;

const MAGIC: u64 = u64::from_le_bytes(*b"CGDNCIX\x01");
/// 2: the slice table replaced a two-level binary-searched directory.
const VERSION: u64 = 2;
/// Header words: magic, version, count, chunks, slices, data words, date,
/// checksum, base (the smallest number), shift (a slice spans `2^shift`),
/// then reserved.
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

/// Where the parts of an index lie, in words, and how numbers map to
/// slices.
#[derive(Clone, Copy)]
struct Layout {
    count: usize,
    chunks: usize,
    /// Slices of the range; the table holds `slices + 2` entries.
    slices: usize,
    base: u64,
    shift: u32,
}

impl Layout {
    fn table_words(&self) -> usize {
        (self.slices + 2).div_ceil(2)
    }
    fn dir_at(&self) -> usize {
        HEADER + self.table_words()
    }
    fn data_at(&self) -> usize {
        self.dir_at() + 2 * self.chunks
    }
    /// The slice `x` (≥ base) falls in; past the last, the last + 1.
    fn slice(&self, x: u64) -> usize {
        let s = (x - self.base).checked_shr(self.shift).unwrap_or(0);
        usize::try_from(s).unwrap_or(usize::MAX).min(self.slices)
    }
    /// The slice table for `firsts`: entry `s` counts the chunks whose
    /// first number lies before slice `s`, so the chunks starting in `s`
    /// are `table[s]..table[s + 1]`.
    fn table(&self, firsts: impl Iterator<Item = u64>) -> Vec<u64> {
        let mut starts = vec![0u32; self.slices + 2];
        for f in firsts {
            starts[self.slice(f) + 1] += 1;
        }
        let mut words = vec![0u64; self.table_words()];
        let mut before = 0u64;
        for (s, n) in starts.into_iter().enumerate() {
            before += u64::from(n);
            words[s / 2] |= before << (32 * (s % 2));
        }
        words
    }
}

/// A set of E.164 numbers (their digits as `u64`), immutable once built.
pub struct CompactSet {
    words: Words,
    layout: Layout,
    /// Days since 1970-01-01 of the data the set was built from, when known.
    date: Option<i64>,
}

impl std::fmt::Debug for CompactSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompactSet")
            .field("count", &self.layout.count)
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
        let mut dir = Vec::new();
        let mut data: Vec<u64> = Vec::new();
        let mut count = 0usize;
        let mut last = None;
        let mut chunk: Vec<u64> = Vec::with_capacity(CHUNK);
        let mut flush = |chunk: &mut Vec<u64>| {
            dir.push(chunk[0]);
            dir.push(((data.len() as u64) << 8) | u64::from(encode_chunk(chunk, &mut data)));
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
        let chunks = dir.len() / 2;
        let base = dir.first().copied().unwrap_or(0);
        // As many slices as chunks: one chunk starts in a slice on average.
        let span = last.map_or(0, |l| l - base);
        let shift = (0..=64)
            .find(|&s| span.checked_shr(s).unwrap_or(0) < chunks.max(1) as u64)
            .unwrap_or(64);
        let slices = span.checked_shr(shift).unwrap_or(0) as usize + 1;
        let layout = Layout {
            count,
            chunks,
            slices,
            base,
            shift,
        };
        let table = layout.table(dir.iter().step_by(2).copied());
        let mut w = Vec::with_capacity(layout.data_at() + data.len());
        w.extend_from_slice(&[
            MAGIC,
            VERSION,
            count as u64,
            chunks as u64,
            slices as u64,
            data.len() as u64,
            date.map_or(u64::MAX, |d| d as u64),
            0,
            base,
            u64::from(shift),
        ]);
        w.resize(HEADER, 0);
        w.extend_from_slice(&table);
        w.extend_from_slice(&dir);
        w.extend_from_slice(&data);
        w[7] = checksum(&w[HEADER..]);
        CompactSet {
            words: Words::Owned(w),
            layout,
            date,
        }
    }

    pub fn len(&self) -> usize {
        self.layout.count
    }

    pub fn is_empty(&self) -> bool {
        self.layout.count == 0
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

    /// Entry `s` of the slice table.
    fn table_entry(&self, s: usize) -> usize {
        let w = self.words.all()[HEADER + s / 2];
        (w >> (32 * (s % 2))) as u32 as usize
    }
    /// The directory: chunk `c`'s first number at `2c`, its data's start
    /// and low-bit width at `2c + 1`.
    fn dir(&self) -> &[u64] {
        &self.words.all()[self.layout.dir_at()..self.layout.data_at()]
    }
    fn data(&self) -> &[u64] {
        &self.words.all()[self.layout.data_at()..]
    }

    pub fn contains(&self, x: u64) -> bool {
        let layout = &self.layout;
        if x < layout.base || layout.chunks == 0 {
            return false;
        }
        let s = layout.slice(x);
        let (lo, hi) = (self.table_entry(s), self.table_entry(s + 1));
        // The chunk holding x is the last one starting at or before it:
        // one of those starting in x's slice, or the one before them.
        let dir = self.dir();
        let c = match hi - lo {
            0..=8 => (lo..hi).take_while(|&c| dir[2 * c] <= x).count(),
            _ => {
                let (mut a, mut b) = (lo, hi);
                while a < b {
                    let m = (a + b) / 2;
                    if dir[2 * m] <= x {
                        a = m + 1;
                    } else {
                        b = m;
                    }
                }
                a - lo
            }
        } + lo;
        let Some(c) = c.checked_sub(1) else {
            return false;
        };
        let Some((words, k, l)) = self.chunk(c) else {
            return false;
        };
        chunk_contains(words, k, l, x - dir[2 * c])
    }

    /// Every number, in order.
    pub fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        (0..self.layout.chunks).flat_map(move |c| {
            let first = self.dir()[2 * c];
            let (words, k, l) = self.chunk(c).unwrap_or((&[], 0, 0));
            // Checked: an index forged past its checksum may hold offsets
            // that overflow; its walk ends there rather than wrap.
            decode_chunk(words, k, l).map_while(move |e| first.checked_add(e))
        })
    }

    /// Chunk `c`'s words, number count and low-bit width.
    fn chunk(&self, c: usize) -> Option<(&[u64], usize, u32)> {
        let (dir, data) = (self.dir(), self.data());
        let meta = dir[2 * c + 1];
        let (start, l) = ((meta >> 8) as usize, (meta & 0xff) as u32);
        let (end, k) = match dir.get(2 * c + 3) {
            Some(next) => ((next >> 8) as usize, CHUNK),
            None => (data.len(), self.layout.count - c * CHUNK),
        };
        Some((data.get(start..end)?, k, l))
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
        // Counts of words are bounded by the file; the count of numbers
        // by the chunks (checked below).
        let fits = |v: u64| usize::try_from(v).ok().filter(|&v| v <= w.len());
        let (Some(count), Some(chunks), Some(slices), Some(data_len)) = (
            usize::try_from(w[2]).ok(),
            fits(w[3]),
            fits(w[4]),
            fits(w[5]),
        ) else {
            return Err(damaged("sizes"));
        };
        let layout = Layout {
            count,
            chunks,
            slices,
            base: w[8],
            shift: u32::try_from(w[9]).unwrap_or(u32::MAX),
        };
        if chunks != count.div_ceil(CHUNK)
            || u32::try_from(chunks).is_err()
            || slices == 0
            || layout.shift > 64
            || w.len() != layout.data_at() + data_len
        {
            return Err(damaged("sizes"));
        }
        if checksum(&w[HEADER..]) != w[7] {
            return Err(damaged("checksum"));
        }
        let date = (w[6] != u64::MAX).then_some(w[6] as i64);
        let set = CompactSet {
            words,
            layout,
            date,
        };
        set.check_structure().map_err(damaged)?;
        Ok(set)
    }

    /// The invariants `contains` relies on, for an index read from disk.
    fn check_structure(&self) -> Result<(), &'static str> {
        let (dir, data) = (self.dir(), self.data());
        let firsts = || dir.iter().step_by(2).copied();
        if !firsts().zip(firsts().skip(1)).all(|(a, b)| a < b) {
            return Err("directory order");
        }
        if dir.first().is_some_and(|&f| f != self.layout.base) {
            return Err("directory base");
        }
        let table = &self.words.all()[HEADER..self.layout.dir_at()];
        if firsts().any(|f| self.layout.slice(f) >= self.layout.slices)
            || table != self.layout.table(firsts())
        {
            return Err("slice table");
        }
        let mut before = 0;
        for c in 0..self.layout.chunks {
            let (start, l) = (dir[2 * c + 1] >> 8, dir[2 * c + 1] & 0xff);
            if start < before || start as usize > data.len() || l > 63 {
                return Err("chunk bounds");
            }
            before = start;
        }
        Ok(())
    }
}
/// Whether a file starting with `head` is a compiled index.
pub fn is_index(head: &[u8]) -> bool {
    head.get(..8) == Some(&MAGIC.to_le_bytes()[..])
}

/// Gives `bytes` an index's magic, version and checksum (padding it to
/// whole words and at least a header), keeping every other word. For the
/// fuzz target and the tests: the checksum stops damage, not a forger (xxh3 is no
/// signature), so the structure checks and the reads behind it must hold
/// on their own, and a fuzzer reaches them only through this.
#[doc(hidden)]
pub fn forge(bytes: &mut Vec<u8>) {
    bytes.resize(bytes.len().div_ceil(8).max(HEADER) * 8, 0);
    bytes[..8].copy_from_slice(&MAGIC.to_le_bytes());
    bytes[8..16].copy_from_slice(&VERSION.to_le_bytes());
    let sum = checksum_of_bytes(&bytes[HEADER * 8..]);
    bytes[7 * 8..8 * 8].copy_from_slice(&sum.to_le_bytes());
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
    checksum_of_bytes(bytemuck::cast_slice(words))
}

/// The same over the words' little-endian bytes (a file's, unaligned).
fn checksum_of_bytes(bytes: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(bytes)
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
            return Some(i * 64 + select_in_word(!w, left as u32 - 1) as usize + 1);
        }
        left -= z;
    }
    None
}

/// The position of the `k`-th (from 0) set bit of `w`, which has more
/// than `k`: bytes' running counts side by side in one word (Vigna,
/// "Broadword implementation of rank/select queries", 2008) find the
/// byte, a few steps the bit. `pdep` would do it in one instruction, but
/// only where the build targets BMI2.
fn select_in_word(w: u64, k: u32) -> u32 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let mut s = w - ((w >> 1) & 0x5555_5555_5555_5555);
    s = (s & 0x3333_3333_3333_3333) + ((s >> 2) & 0x3333_3333_3333_3333);
    s = ((s + (s >> 4)) & 0x0f0f_0f0f_0f0f_0f0f).wrapping_mul(ONES);
    // Bytes whose running count is at most k: the bit lies past them.
    let past = (((u64::from(k) * ONES) | HIGHS) - s) & HIGHS;
    let at = past.count_ones() * 8;
    let before = ((s << 8) >> at) as u32 & 0xff;
    let mut byte = (w >> at) & 0xff;
    for _ in before..k {
        byte &= byte - 1;
    }
    at + byte.trailing_zeros()
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

    /// Thousands of chunks clustered by NPA-NXX like a registry: slices
    /// with no chunk starting in them, with one, and with many.
    #[test]
    fn a_registry_like_list_across_many_slices() {
        use rand::{RngExt, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut v = Vec::new();
        for _ in 0..60 {
            let exchange = 12_000_000_000 + rng.random_range(0..800_000u64) * 10_000;
            v.extend(
                (0..rng.random_range(500..5_000)).map(|_| exchange + rng.random_range(0..10_000)),
            );
        }
        let truth: HashSet<u64> = v.iter().copied().collect();
        assert!(truth.len() > 1_000 * CHUNK, "{}", truth.len());
        let probes: Vec<u64> = (0..100_000)
            .map(|_| 12_000_000_000 + rng.random_range(0..8_000_000_000u64))
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
        // A consistent checksum over an inconsistent structure (a file
        // made by hand): refused before any lookup trusts it.
        let mut forged = good.clone();
        forged[HEADER * 8] ^= 1;
        forge(&mut forged);
        std::fs::write(&path, &forged).unwrap();
        assert!(matches!(
            CompactSet::open(&path),
            Err(IndexError::Damaged {
                what: "slice table",
                ..
            })
        ));
        std::fs::write(&path, &good).unwrap();
        assert_eq!(CompactSet::open(&path).unwrap().len(), 10_000);
    }

    /// An index forged past its checksum (`forge`) whose chunk starts so
    /// high that its offsets pass `u64::MAX` (found by the `lists` fuzz
    /// target): the walk stops at the last number that fits instead of
    /// wrapping round to small numbers, and lookups answer.
    #[test]
    fn a_forged_chunk_past_the_top_of_the_range_ends_the_walk() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.cgdnc");
        let top = u64::MAX - 100;
        let set = CompactSet::build(vec![1_000, 1_299], None);
        set.write(&path).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        // The base and the chunk's first number move up together, so the
        // structure checks hold; the second offset (299) no longer fits.
        for at in [8, set.layout.dir_at()] {
            bytes[at * 8..at * 8 + 8].copy_from_slice(&top.to_le_bytes());
        }
        forge(&mut bytes);
        std::fs::write(&path, &bytes).unwrap();
        let read = CompactSet::open(&path).unwrap();
        assert_eq!(read.iter().collect::<Vec<_>>(), vec![top]);
        assert!(read.contains(top));
        assert!(!read.contains(1_299) && !read.contains(198));
    }

    proptest! {
        #[test]
        fn select_in_word_finds_the_kth_set_bit(w in any::<u64>(), k in 0u32..64) {
            prop_assume!(k < w.count_ones());
            let naive = (0..64).filter(|b| w >> b & 1 == 1).nth(k as usize).unwrap();
            prop_assert_eq!(select_in_word(w, k), naive);
        }
    }
}
