//! Do-not-call and consent lists, loaded from files into immutable
//! snapshots that the call path reads without locks. A reload builds new
//! snapshots and swaps the whole policy (see `policy`).
//!
//! Accepted formats (rules.md: Bloctel and the US registry publish no
//! common format): one number per line with `#` comments; CSV with a
//! header naming the number column; the US registry's `areacode,number`.
//! Files come from spreadsheets and Windows tools as often as from scripts:
//! a UTF-8 byte-order mark, CRLF line ends, quoted cells, `="…"` and `'…`
//! text markers, tab- or semicolon-separated columns and trailing commas are
//! all read. A UTF-16 file is refused with an error that says so, rather
//! than read as nothing. Lines whose number still cannot be read are
//! counted, reported (log, `config check`, `callguard_dnc_unreadable_lines`
//! and its alert) and skipped.

use chrono::NaiveDate;
use rustc_hash::FxHashMap;
use smallvec::SmallVec;
use std::path::{Path, PathBuf};

use crate::numbering::{self, Country, E164};

#[derive(Debug, thiserror::Error)]
pub enum ListError {
    #[error("cannot read list {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("list {path}: no column named number/phone/e164 in the CSV header")]
    NoNumberColumn { path: PathBuf },
    #[error("list {path} is UTF-16 text: save it as UTF-8 (or plain ASCII) and reload")]
    Utf16 { path: PathBuf },
    #[error(transparent)]
    Index(Box<IndexError>),
}

/// What loading a file found, for logs and `config check`.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    pub entries: usize,
    pub invalid: usize,
    /// Line numbers (1-based) of the first unreadable lines.
    pub invalid_lines: Vec<usize>,
}

impl std::fmt::Display for LoadReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let plural = |n: usize| if n == 1 { "" } else { "s" };
        write!(f, "{} number{}", self.entries, plural(self.entries))?;
        if self.invalid > 0 {
            let lines: Vec<String> = self.invalid_lines.iter().map(|l| l.to_string()).collect();
            write!(
                f,
                ", {} unreadable line{} skipped (line{} {})",
                self.invalid,
                plural(self.invalid),
                plural(self.invalid_lines.len()),
                lines.join(", ")
            )?;
        }
        Ok(())
    }
}

pub mod compact;

pub use compact::{CompactSet, IndexError};

/// A list's numbers as loaded from its file: a [`CompactSet`], built from
/// text or mapped from a compiled index, with the registry's change lists
/// applied on top (without rebuilding it).
#[derive(Debug, Default)]
pub struct NumberSet {
    set: CompactSet,
    added: CompactSet,
    removed: CompactSet,
    len: usize,
}

impl NumberSet {
    pub fn contains(&self, n: E164) -> bool {
        self.contains_digits(n.digits())
    }
    pub fn contains_digits(&self, d: u64) -> bool {
        if !self.removed.is_empty() && self.removed.contains(d) {
            return false;
        }
        self.set.contains(d) || (!self.added.is_empty() && self.added.contains(d))
    }
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn from_numbers(it: impl IntoIterator<Item = E164>) -> NumberSet {
        NumberSet::from_set(CompactSet::build(
            it.into_iter().map(E164::digits).collect(),
            None,
        ))
    }
    pub fn from_set(set: CompactSet) -> NumberSet {
        NumberSet {
            len: set.len(),
            set,
            ..NumberSet::default()
        }
    }
    /// The set with `changes` applied (numbers added and removed since the
    /// full list).
    pub fn with_changes(self, changes: &Changes) -> NumberSet {
        let added: Vec<u64> = changes
            .added
            .iter()
            .copied()
            .filter(|&d| !self.set.contains(d))
            .collect();
        let removed: Vec<u64> = changes
            .removed
            .iter()
            .copied()
            .filter(|&d| self.set.contains(d))
            .collect();
        NumberSet {
            len: self.set.len() + added.len() - removed.len(),
            added: CompactSet::from_sorted(added.into_iter(), None),
            removed: CompactSet::from_sorted(removed.into_iter(), None),
            set: self.set,
        }
    }
    /// Every number, in order (the change lists applied).
    pub fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        compact::merge(vec![self.set.iter(), self.added.iter()])
            .filter(|&d| self.removed.is_empty() || !self.removed.contains(d))
    }
    pub fn compact(&self) -> &CompactSet {
        &self.set
    }
    /// The date of the data, as the compiled index records it.
    pub fn date(&self) -> Option<NaiveDate> {
        self.set.date()
    }
}

/// A change list's net effect: numbers added and removed (sorted,
/// disjoint; the last row for a number wins).
#[derive(Debug, Clone, Default)]
pub struct Changes {
    pub added: Vec<u64>,
    pub removed: Vec<u64>,
}

impl Changes {
    /// Folds rows (number, listed) in order.
    fn from_rows(rows: impl IntoIterator<Item = (u64, bool)>) -> Changes {
        let last: FxHashMap<u64, bool> = rows.into_iter().collect();
        let mut c = Changes::default();
        for (d, listed) in last {
            if listed {
                c.added.push(d);
            } else {
                c.removed.push(d);
            }
        }
        c.added.sort_unstable();
        c.removed.sort_unstable();
        c
    }

    /// `later` applied after these.
    pub fn then(self, later: Changes) -> Changes {
        let rows = self
            .added
            .into_iter()
            .map(|d| (d, true))
            .chain(self.removed.into_iter().map(|d| (d, false)))
            .chain(later.added.into_iter().map(|d| (d, true)))
            .chain(later.removed.into_iter().map(|d| (d, false)));
        Changes::from_rows(rows)
    }
}

/// A change list of the registry: one row per number with its change,
/// `AAA,NNNNNNN,A` (the FTC's area code and number) or `NUMBER,D`; the
/// change is the last cell that reads as one (`A`/`add`/`added`,
/// `D`/`delete`/`deleted`, `R`/`remove`), other cells (dates) are
/// ignored; a header row is skipped.
pub fn load_changes(path: &Path, country: Country) -> Result<(Changes, LoadReport), ListError> {
    let text = read(path)?;
    let mut report = LoadReport::default();
    let mut rows = Vec::new();
    for (i, (ln, line)) in lines(&text).enumerate() {
        let cells: SmallVec<[&str; 4]> = split_row(line)
            .into_iter()
            .filter(|c| !c.is_empty())
            .collect();
        if i == 0 && !line.chars().any(|c| c.is_ascii_digit()) {
            continue;
        }
        let change = cells
            .iter()
            .rev()
            .find_map(|c| match c.to_ascii_lowercase().as_str() {
                "a" | "add" | "added" | "i" | "insert" => Some(true),
                "d" | "del" | "delete" | "deleted" | "r" | "remove" | "removed" => Some(false),
                _ => None,
            });
        let number = match cells.as_slice() {
            [a, b, ..]
                if a.len() == 3
                    && b.len() == 7
                    && a.bytes().chain(b.bytes()).all(|x| x.is_ascii_digit()) =>
            {
                numbering::parse(&format!("{a}{b}"), Country::US).ok()
            }
            [n, ..] => numbering::parse(n, country).ok(),
            [] => None,
        };
        match (number, change) {
            (Some(n), Some(listed)) => rows.push((n.digits(), listed)),
            _ => note_invalid(&mut report, ln),
        }
    }
    let changes = Changes::from_rows(rows);
    report.entries = changes.added.len() + changes.removed.len();
    Ok((changes, report))
}

/// Run-time changes of one list over its file, by number: what the admin
/// API (or another instance) set, persisted by the state store. They
/// outlive reloads: a reload replaces the file's snapshot, not the changes
/// an operator made since. DNC lists keep listed/removed ([`Delta`]),
/// consent lists a consent given or withdrawn ([`ConsentDelta`]).
#[derive(Debug)]
pub struct Overlay<V> {
    map: dashmap::DashMap<u64, V, rustc_hash::FxBuildHasher>,
    /// Lets the call path skip the map while no change was ever made (the
    /// common case), at the cost of one relaxed load.
    used: std::sync::atomic::AtomicBool,
}

impl<V> Default for Overlay<V> {
    fn default() -> Self {
        Overlay {
            map: Default::default(),
            used: Default::default(),
        }
    }
}

impl<V: Clone> Overlay<V> {
    pub fn get(&self, n: u64) -> Option<V> {
        self.read(n, V::clone)
    }
    /// `f` of the change of `n`, if any, without cloning it.
    fn read<T>(&self, n: u64, f: impl FnOnce(&V) -> T) -> Option<T> {
        if !self.used.load(std::sync::atomic::Ordering::Relaxed) {
            return None;
        }
        self.map.get(&n).map(|v| f(&v))
    }
    pub fn set(&self, n: u64, v: V) {
        self.used.store(true, std::sync::atomic::Ordering::Relaxed);
        self.map.insert(n, v);
    }
    pub fn len(&self) -> usize {
        self.map.len()
    }
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
    /// Every change, copied out: the map's shards stay locked only as long
    /// as the copy takes, not as long as whatever the caller does next.
    pub fn entries(&self) -> Vec<(u64, V)> {
        self.map
            .iter()
            .map(|e| (*e.key(), e.value().clone()))
            .collect()
    }
}

/// A DNC list's run-time changes: listed (`true`) or removed.
pub type Delta = Overlay<bool>;

impl Delta {
    /// Net change to the snapshot's size.
    pub fn net(&self, base: &NumberSet) -> i64 {
        self.map
            .iter()
            .map(|e| match (*e.value(), base.contains_digits(*e.key())) {
                (true, false) => 1,
                (false, true) => -1,
                _ => 0,
            })
            .sum()
    }
}

/// A DNC list as the policy reads it: the file's snapshot with the
/// run-time changes on top.
#[derive(Debug, Clone)]
pub struct DncList {
    name: std::sync::Arc<str>,
    base: std::sync::Arc<NumberSet>,
    delta: std::sync::Arc<Delta>,
    /// Lines of the file that held no readable number.
    unreadable: usize,
    freshness: std::sync::Arc<Freshness>,
}

/// How old a list's data is and may be (the law's scrub age), and whose
/// calls it covers.
#[derive(Debug, Clone, Default)]
pub struct Freshness {
    /// The date of the data; unknown with a maximum age, the list counts
    /// as stale (its freshness cannot be shown).
    pub date: Option<NaiveDate>,
    pub max_age_days: Option<u32>,
    /// Callee countries (ISO codes) it covers; empty: every call.
    pub countries: Vec<String>,
}

/// Where a list's answer for a number comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    File,
    Api,
}

impl DncList {
    pub fn new(
        name: std::sync::Arc<str>,
        base: std::sync::Arc<NumberSet>,
        delta: std::sync::Arc<Delta>,
    ) -> DncList {
        DncList {
            name,
            base,
            delta,
            unreadable: 0,
            freshness: Default::default(),
        }
    }
    pub fn with_freshness(mut self, f: Freshness) -> DncList {
        self.freshness = std::sync::Arc::new(f);
        self
    }
    pub fn freshness(&self) -> &Freshness {
        &self.freshness
    }
    /// When the list is too old on `today` for a call to `callee`, what
    /// makes it so ("holds data of 2026-09-01, 84 days old; at most 31").
    pub fn stale_for(&self, callee: E164, today: NaiveDate) -> Option<String> {
        let f = &*self.freshness;
        let max = f.max_age_days?;
        if !f.countries.is_empty() {
            let country = numbering::region_of(callee).country;
            if !f.countries.iter().any(|c| c.eq_ignore_ascii_case(country)) {
                return None;
            }
        }
        match f.date {
            None => Some(format!(
                "has no date for its data and may be at most {max} days old"
            )),
            Some(d) => {
                let age = (today - d).num_days();
                (age > i64::from(max)).then(|| {
                    format!("holds data of {d}, {age} days old; at most {max} days are allowed")
                })
            }
        }
    }
    /// Records how many lines of the list's file could not be read.
    pub fn with_unreadable(mut self, lines: usize) -> DncList {
        self.unreadable = lines;
        self
    }
    pub fn unreadable_lines(&self) -> usize {
        self.unreadable
    }
    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn contains(&self, n: E164) -> bool {
        self.lookup(n).0
    }
    /// Whether `n` is listed, and what says so: a run-time change (which
    /// may also be a removal), the file, or nothing (never listed).
    pub fn lookup(&self, n: E164) -> (bool, Option<Source>) {
        match self.delta.get(n.digits()) {
            Some(listed) => (listed, Some(Source::Api)),
            None if self.base.contains(n) => (true, Some(Source::File)),
            None => (false, None),
        }
    }
    pub fn len(&self) -> usize {
        (self.base.len() as i64 + self.delta.net(&self.base)).max(0) as usize
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One consent record (rules.md: date and proof reference; `hours` is the
/// consumer's consent to be called outside the legal hours).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Consent {
    pub date: NaiveDate,
    pub proof: String,
    #[serde(default)]
    pub hours: bool,
}

/// What the policy reads of a consent: no proof text (no allocation on
/// the call path).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsentTerms {
    pub date: NaiveDate,
    pub hours: bool,
}

/// A consent list's run-time changes: a consent given (`Some`) or
/// withdrawn (`None`) through the admin API.
pub type ConsentDelta = Overlay<Option<Consent>>;

/// A consent list as the policy reads it: the file's records with the
/// run-time changes on top.
#[derive(Debug, Default)]
pub struct ConsentList {
    map: FxHashMap<u64, Consent>,
    delta: std::sync::Arc<ConsentDelta>,
}

impl ConsentList {
    pub fn from_entries(entries: impl IntoIterator<Item = (E164, Consent)>) -> ConsentList {
        ConsentList {
            map: entries.into_iter().map(|(n, c)| (n.digits(), c)).collect(),
            delta: Default::default(),
        }
    }

    /// The list with the run-time changes kept by the state store.
    pub fn with_delta(mut self, delta: std::sync::Arc<ConsentDelta>) -> ConsentList {
        self.delta = delta;
        self
    }

    pub fn get(&self, n: E164) -> Option<ConsentTerms> {
        let terms = |c: &Consent| ConsentTerms {
            date: c.date,
            hours: c.hours,
        };
        match self.delta.read(n.digits(), |c| c.as_ref().map(terms)) {
            Some(changed) => changed,
            None => self.map.get(&n.digits()).map(terms),
        }
    }

    /// The record of `n` and where it comes from (admin API).
    pub fn lookup(&self, n: E164) -> (Option<Consent>, Option<Source>) {
        match self.delta.get(n.digits()) {
            Some(changed) => (changed, Some(Source::Api)),
            None => {
                let c = self.map.get(&n.digits()).cloned();
                let source = c.is_some().then_some(Source::File);
                (c, source)
            }
        }
    }

    /// Records in the file; run-time changes are counted apart.
    pub fn len(&self) -> usize {
        self.map.len()
    }
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// The file as text: a UTF-8 byte-order mark is dropped, UTF-16 is
/// refused (read as UTF-8 it would yield no number at all), and bytes that
/// are not UTF-8 become U+FFFD, so only the lines holding them fail.
fn read(path: &Path) -> Result<String, ListError> {
    let bytes = std::fs::read(path).map_err(|source| ListError::Read {
        path: path.to_owned(),
        source,
    })?;
    refuse_utf16(&bytes, path)?;
    let body = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&bytes);
    Ok(String::from_utf8_lossy(body).into_owned())
}

/// A UTF-16 file read as UTF-8 would yield no number at all: refused.
fn refuse_utf16(bytes: &[u8], path: &Path) -> Result<(), ListError> {
    let head = &bytes[..bytes.len().min(64)];
    let utf16 = head.starts_with(&[0xFF, 0xFE])
        || head.starts_with(&[0xFE, 0xFF])
        || head.iter().filter(|&&b| b == 0).count() >= 2;
    if utf16 {
        return Err(ListError::Utf16 {
            path: path.to_owned(),
        });
    }
    Ok(())
}

/// The column separator of a row: comma, else semicolon (European
/// spreadsheets), else tab; `None` for a one-column line.
fn separator(line: &str) -> Option<char> {
    [',', ';', '\t'].into_iter().find(|&c| line.contains(c))
}

fn split_row(line: &str) -> Vec<&str> {
    match separator(line) {
        Some(sep) => line.split(sep).map(cell).collect(),
        None => vec![cell(line)],
    }
}

/// A cell as a spreadsheet shows it: surrounding blanks, quotes, and the
/// `="…"` / leading-apostrophe markers that keep leading zeros, removed.
fn cell(c: &str) -> &str {
    let blank = |ch: char| ch.is_whitespace() || matches!(ch, '\u{feff}' | '\u{200b}');
    let c = c.trim_matches(blank);
    let c = c.strip_prefix('=').unwrap_or(c).trim_matches(blank);
    let c = c
        .strip_prefix('"')
        .map(|x| x.strip_suffix('"').unwrap_or(x))
        .unwrap_or(c)
        .trim_matches(blank);
    c.strip_prefix('\'').unwrap_or(c).trim_matches(blank)
}

const NUMBER_COLUMNS: &[&str] = &[
    "number",
    "numero",
    "numéro",
    "phone",
    "telephone",
    "téléphone",
    "msisdn",
    "e164",
    "tel",
];

/// Content lines with their 1-based line numbers, comments removed (a
/// `#` starts a comment). LF, CRLF and, in a file with no LF at all, CR
/// (old Mac spreadsheets) end a line.
fn lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    let eol = if text.contains('\n') { '\n' } else { '\r' };
    text.split(eol).enumerate().filter_map(|(i, l)| {
        let l = l.split('#').next().unwrap_or("");
        let l = l.trim_matches(|c: char| c.is_whitespace() || c == '\u{feff}');
        (!l.is_empty()).then_some((i + 1, l))
    })
}

struct Columns {
    number: usize,
    header: bool,
}

fn columns(first: &str, path: &Path) -> Result<Columns, ListError> {
    let cells: Vec<&str> = split_row(first)
        .into_iter()
        .filter(|c| !c.is_empty())
        .collect();
    if cells.len() < 2 {
        // One column: a header only when it names the number column.
        let named = cells
            .first()
            .is_some_and(|c| NUMBER_COLUMNS.contains(&c.to_lowercase().as_str()));
        return Ok(Columns {
            number: 0,
            header: named,
        });
    }
    let looks_like_data = cells[0].chars().any(|c| c.is_ascii_digit());
    if looks_like_data {
        return Ok(Columns {
            number: 0,
            header: false,
        });
    }
    let number = cells
        .iter()
        .position(|c| NUMBER_COLUMNS.contains(&c.to_lowercase().as_str()))
        .ok_or_else(|| ListError::NoNumberColumn {
            path: path.to_owned(),
        })?;
    Ok(Columns {
        number,
        header: true,
    })
}

fn note_invalid(r: &mut LoadReport, line: usize) {
    r.invalid += 1;
    if r.invalid_lines.len() < 5 {
        r.invalid_lines.push(line);
    }
}

/// Reads a number from a row; `areacode,number` rows are joined.
fn row_number(cells: &[&str], col: usize, country: Country) -> Option<E164> {
    let filled: SmallVec<[&str; 4]> = cells.iter().copied().filter(|c| !c.is_empty()).collect();
    if col == 0
        && filled.len() == 2
        && filled[0].len() == 3
        && filled[1].len() == 7
        && filled.iter().all(|c| c.bytes().all(|b| b.is_ascii_digit()))
    {
        return numbering::parse(&format!("{}{}", filled[0], filled[1]), Country::US).ok();
    }
    numbering::parse(cells.get(col)?, country).ok()
}

/// Loads a DNC list: a compiled index (`callguard dnc compile`) is mapped
/// as it is; a text list is parsed on every core and built into a
/// [`CompactSet`] dated `date`.
pub fn load_numbers(path: &Path, country: Country) -> Result<(NumberSet, LoadReport), ListError> {
    load_numbers_dated(path, country, None)
}

pub fn load_numbers_dated(
    path: &Path,
    country: Country,
    date: Option<NaiveDate>,
) -> Result<(NumberSet, LoadReport), ListError> {
    let read_err = |source| ListError::Read {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let len = file.metadata().map_err(read_err)?.len();
    if len == 0 {
        return Ok((NumberSet::default(), LoadReport::default()));
    }
    // SAFETY: read-only map of a list file read once, here, and dropped
    // before returning; lists are replaced by writing new files (a file
    // truncated under us would fault, as any mapped read would).
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(read_err)?;
    if compact::is_index(&map) {
        drop(map);
        let set = CompactSet::open(path).map_err(|e| ListError::Index(Box::new(e)))?;
        let report = LoadReport {
            entries: set.len(),
            ..LoadReport::default()
        };
        return Ok((NumberSet::from_set(set), report));
    }
    let (numbers, report) = parse_numbers(&map, path, country)?;
    let set = CompactSet::from_sorted(
        compact::merge(numbers.into_iter().map(Vec::into_iter).collect()),
        date,
    );
    let report = LoadReport {
        entries: set.len(),
        ..report
    };
    Ok((NumberSet::from_set(set), report))
}

/// The numbers of a text list, as sorted parts (one per core), and what
/// could not be read.
fn parse_numbers(
    bytes: &[u8],
    path: &Path,
    country: Country,
) -> Result<(Vec<Vec<u64>>, LoadReport), ListError> {
    refuse_utf16(bytes, path)?;
    let body = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    if body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'<') {
        let (mut numbers, report) = parse_dncl_xml(body);
        numbers.sort_unstable();
        return Ok((vec![numbers], report));
    }
    let eol = if memchr::memchr(b'\n', body).is_some() {
        b'\n'
    } else {
        b'\r'
    };
    // The first content line says whether there is a header and which
    // column holds the number.
    let mut skip_to = 0;
    let mut cols = Columns {
        number: 0,
        header: false,
    };
    for (start, raw) in raw_lines(body, eol, 0) {
        if let Some(line) = content(&String::from_utf8_lossy(raw)) {
            cols = columns(line, path)?;
            if cols.header {
                skip_to = start + raw.len() + 1;
            }
            break;
        }
    }
    // Cut at line ends into one part per core.
    let parts = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 8);
    let mut cuts = vec![0];
    for i in 1..parts {
        let at = (body.len() * i / parts).max(*cuts.last().unwrap_or(&0));
        let cut = memchr::memchr(eol, &body[at..]).map_or(body.len(), |p| at + p + 1);
        cuts.push(cut);
    }
    cuts.push(body.len());
    let results: Vec<(Vec<u64>, LoadReport, usize)> = std::thread::scope(|s| {
        let handles: Vec<_> = cuts
            .windows(2)
            .map(|w| {
                let (a, b) = (w[0], w[1]);
                let cols = &cols;
                s.spawn(move || parse_part(&body[a..b], a, skip_to, eol, cols, country))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    // Line numbers were counted per part: shift each part's by the lines
    // before it.
    let mut report = LoadReport::default();
    let mut lines_before = 0;
    let mut numbers = Vec::with_capacity(results.len());
    for (mut part, r, lines) in results {
        report.invalid += r.invalid;
        for l in r.invalid_lines {
            if report.invalid_lines.len() < 5 {
                report.invalid_lines.push(l + lines_before);
            }
        }
        lines_before += lines;
        part.sort_unstable();
        numbers.push(part);
    }
    Ok((numbers, report))
}

/// Lines of `bytes` with their offsets (`base` + position), without
/// their ends.
fn raw_lines(bytes: &[u8], eol: u8, base: usize) -> impl Iterator<Item = (usize, &[u8])> {
    let mut at = 0;
    std::iter::from_fn(move || {
        if at >= bytes.len() {
            return None;
        }
        let end = memchr::memchr(eol, &bytes[at..]).map_or(bytes.len(), |p| at + p);
        let line = (base + at, &bytes[at..end]);
        at = end + 1;
        Some(line)
    })
}

/// A line without its comment and surrounding blanks; `None` when nothing
/// is left.
fn content(l: &str) -> Option<&str> {
    let l = l.split('#').next().unwrap_or("");
    let l = l.trim_matches(|c: char| c.is_whitespace() || c == '\u{feff}');
    (!l.is_empty()).then_some(l)
}

/// One part of a list: its numbers, unreadable lines (numbered within the
/// part, from 1) and how many lines it has.
fn parse_part(
    part: &[u8],
    base: usize,
    skip_to: usize,
    eol: u8,
    cols: &Columns,
    country: Country,
) -> (Vec<u64>, LoadReport, usize) {
    let mut out = Vec::with_capacity(part.len() / 12);
    let mut report = LoadReport::default();
    let mut lines = 0;
    for (start, raw) in raw_lines(part, eol, base) {
        lines += 1;
        if start < skip_to {
            continue;
        }
        // Most lines of a registry are digits alone, or `areacode,number`:
        // read without building strings.
        if cols.number == 0 {
            if let Some(n) = fast_number(raw, country) {
                out.push(n);
                continue;
            }
        }
        let text = String::from_utf8_lossy(raw);
        let Some(line) = content(&text) else {
            continue;
        };
        match row_number(&split_row(line), cols.number, country) {
            Some(n) => out.push(n.digits()),
            None => note_invalid(&mut report, lines),
        }
    }
    (out, report, lines)
}

/// A line that is a number alone (`+`, digits, a CR) or the US registry's
/// `AAA,NNNNNNN`, read as [`numbering::parse`] would; `None` for anything
/// else (the general path reads it).
fn fast_number(raw: &[u8], country: Country) -> Option<u64> {
    let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
    if let [a0, a1, a2, b',', rest @ ..] = raw {
        if rest.len() == 7 && [a0, a1, a2].iter().all(|b| b.is_ascii_digit()) {
            let mut buf = [0u8; 10];
            buf[..3].copy_from_slice(&raw[..3]);
            buf[3..].copy_from_slice(rest);
            let s = std::str::from_utf8(&buf).ok()?;
            return numbering::parse(s, Country::US).ok().map(E164::digits);
        }
        return None;
    }
    let digits = raw.strip_prefix(b"+").unwrap_or(raw);
    if digits.is_empty() || digits.len() > 15 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    numbering::parse(std::str::from_utf8(raw).ok()?, country)
        .ok()
        .map(E164::digits)
}

/// Canada's National DNCL download in its XML form: `<ac val='416'>`
/// opens an area code, `<ph val='1234567' />` lists a number in it (the
/// flat form, `416,1234567`, reads as the FTC's). Read by hand rather than
/// with an XML crate: two elements with one attribute each, scanned in
/// place over the mapped file without building a tree; anything else in
/// a tag (the `<list>` header, a prolog, comments) is skipped, and a `ph`
/// outside an `ac` or with a value that is not 7 digits counts as an
/// unreadable line.
fn parse_dncl_xml(body: &[u8]) -> (Vec<u64>, LoadReport) {
    let mut out = Vec::with_capacity(body.len() / 20);
    let mut report = LoadReport::default();
    let mut area: Option<&[u8]> = None;
    let (mut line, mut counted) = (1, 0);
    let mut at = 0;
    while let Some(lt) = memchr::memchr(b'<', &body[at..]).map(|p| at + p) {
        line += memchr::memchr_iter(b'\n', &body[counted..lt]).count();
        counted = lt;
        let Some(gt) = memchr::memchr(b'>', &body[lt..]).map(|p| lt + p) else {
            note_invalid(&mut report, line);
            break;
        };
        let tag = &body[lt + 1..gt];
        at = gt + 1;
        let name_end = tag
            .iter()
            .position(|b| b.is_ascii_whitespace() || (*b == b'/' && tag[0] != b'/'))
            .unwrap_or(tag.len());
        let digits = |n: usize| {
            xml_attr(tag, b"val").filter(|v| v.len() == n && v.iter().all(u8::is_ascii_digit))
        };
        match &tag[..name_end] {
            b"ac" => {
                area = digits(3);
                if area.is_none() {
                    note_invalid(&mut report, line);
                }
            }
            b"/ac" => area = None,
            b"ph" => {
                let number = area.zip(digits(7)).and_then(|(a, n)| {
                    let mut buf = [0u8; 10];
                    buf[..3].copy_from_slice(a);
                    buf[3..].copy_from_slice(n);
                    let s = std::str::from_utf8(&buf).ok()?;
                    numbering::parse(s, Country::US).ok()
                });
                match number {
                    Some(n) => out.push(n.digits()),
                    None => note_invalid(&mut report, line),
                }
            }
            _ => {}
        }
    }
    (out, report)
}

/// The value of attribute `name` in a tag's text (`name='v'`, `name="v"`).
fn xml_attr<'a>(tag: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    let mut rest = tag;
    loop {
        let i = memchr::memmem::find(rest, name)?;
        let before_ok = i == 0 || rest[i - 1].is_ascii_whitespace();
        let after = rest[i + name.len()..].trim_ascii_start();
        rest = &rest[i + name.len()..];
        if let (true, Some(value)) = (before_ok, after.strip_prefix(b"=")) {
            let value = value.trim_ascii_start();
            let quote = *value.first()?;
            if quote == b'\'' || quote == b'"' {
                let end = memchr::memchr(quote, &value[1..])?;
                return Some(&value[1..1 + end]);
            }
        }
    }
}

/// Consent CSV: `number,date,proof[,hours]` (header optional; dates
/// `YYYY-MM-DD`; `hours` = yes/true/1).
pub fn load_consent(path: &Path, country: Country) -> Result<(ConsentList, LoadReport), ListError> {
    let text = read(path)?;
    let mut report = LoadReport::default();
    let mut map = FxHashMap::default();
    for (ln, line) in lines(&text) {
        let c = split_row(line);
        let first = map.is_empty() && report.invalid == 0;
        if first
            && c.first()
                .is_some_and(|h| !h.chars().any(|ch| ch.is_ascii_digit()))
        {
            continue; // header row
        }
        let parsed = (|| {
            let n = numbering::parse(c.first()?, country).ok()?;
            let date = NaiveDate::parse_from_str(c.get(1)?, "%Y-%m-%d").ok()?;
            let proof = c.get(2).filter(|p| !p.is_empty())?.to_string();
            let hours = c
                .get(3)
                .is_some_and(|h| matches!(h.to_lowercase().as_str(), "yes" | "true" | "1" | "oui"));
            Some((n, Consent { date, proof, hours }))
        })();
        match parsed {
            Some((n, consent)) => {
                map.insert(n.digits(), consent);
            }
            None => note_invalid(&mut report, ln),
        }
    }
    report.entries = map.len();
    Ok((
        ConsentList {
            map,
            delta: Default::default(),
        },
        report,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    fn n(s: &str) -> E164 {
        numbering::parse(s, Country::FR).unwrap()
    }

    fn us(s: &str) -> E164 {
        numbering::parse(s, Country::US).unwrap()
    }

    #[test]
    fn plain_lists_with_comments_and_bad_lines() {
        let f = file("# Bloctel extract\n+33612345678\n01 42 00 00 99  # a landline\n\nnot-a-number\n0033162000001\n");
        let (set, r) = load_numbers(f.path(), Country::FR).unwrap();
        assert_eq!(r.entries, 3);
        assert_eq!((r.invalid, r.invalid_lines.clone()), (1, vec![5]));
        assert!(set.contains(n("0612345678")));
        assert!(set.contains(n("+33142000099")));
        assert!(set.contains(n("+33162000001")));
        assert!(!set.contains(n("+33162000002")));
    }

    #[test]
    fn csv_with_header_and_us_area_code_rows() {
        let f = file("name,Phone,source\nAlice,+33612345678,web\nBob,0142000099,shop\n");
        let (set, r) = load_numbers(f.path(), Country::FR).unwrap();
        assert_eq!((r.entries, r.invalid), (2, 0));
        assert!(set.contains(n("+33142000099")));
        let f = file("201,5550123\n212,5550199\n");
        let (set, _) = load_numbers(f.path(), Country::US).unwrap();
        assert!(set.contains(numbering::parse("+12015550123", Country::US).unwrap()));
        let f = file("name,city\nAlice,Paris\n");
        assert!(matches!(
            load_numbers(f.path(), Country::FR),
            Err(ListError::NoNumberColumn { .. })
        ));
        assert!(matches!(
            load_numbers(Path::new("/nonexistent/list.txt"), Country::FR),
            Err(ListError::Read { .. })
        ));
    }

    /// Canada's National DNCL download, both forms: the flat file
    /// (`416,1234567`) and the XML one, where numbers sit inside their
    /// area code's element; a number outside one, or not 7 digits, is an
    /// unreadable line, never a guess.
    #[test]
    fn canadas_dncl_download_flat_and_xml() {
        let ca = |s: &str| numbering::parse(s, Country::US).unwrap();
        let f = file("416,5551234\n905,5551235\n");
        let (set, r) = load_numbers(f.path(), Country::US).unwrap();
        assert_eq!((r.entries, r.invalid), (2, 0));
        assert!(set.contains(ca("+14165551234")) && set.contains(ca("+19055551235")));
        let f = file(
            "<?xml version=\"1.0\"?>\n<list type='full' level='all' val='' />\n\
             <ac val='416'>\n<ph val='5551234' /> <ph val=\"5551236\"/>\n<ph val='12345' />\n</ac>\n\
             <!-- comment -->\n<ac val = '905'><ph val='5551235' /></ac>\n<ph val='7654321' />\n",
        );
        let (set, r) = load_numbers(f.path(), Country::US).unwrap();
        assert_eq!(
            (r.entries, r.invalid, r.invalid_lines.clone()),
            (3, 2, vec![5, 9])
        );
        for n in ["+14165551234", "+14165551236", "+19055551235"] {
            assert!(set.contains(ca(n)), "{n}");
        }
        assert!(!set.contains(ca("+14167654321")) && !set.contains(ca("+19057654321")));
        // Cut short inside a tag: what came before is kept, the cut counted.
        let f = file("<ac val='416'><ph val='5551234' /><ph val='55");
        let (set, r) = load_numbers(f.path(), Country::US).unwrap();
        assert_eq!((set.len(), r.invalid), (1, 1));
    }

    /// The FTC's full list (`areacode,number`) with a change list on top:
    /// additions and deletions apply, the last row for a number wins,
    /// unreadable rows are counted.
    #[test]
    fn change_lists_apply_on_top_of_the_full_list() {
        let full = file("201,5550100\r\n201,5550101\r\n212,5550199\r\n");
        let (set, r) = load_numbers(full.path(), Country::US).unwrap();
        assert_eq!((r.entries, set.len()), (3, 3));
        let changes = file(
            "areacode,number,change,date\n201,5550101,D,2026-11-20\n305,5550123,A,2026-11-20\n\
             +12125550177,added\n212,5550188,A\n212,5550188,D\n201,5550199,X\n",
        );
        let (c, r) = load_changes(changes.path(), Country::US).unwrap();
        assert_eq!((r.invalid, r.invalid_lines.clone()), (1, vec![7]));
        let set = set.with_changes(&c);
        assert!(set.contains(us("+12015550100")));
        assert!(!set.contains(us("+12015550101")), "deleted");
        assert!(set.contains(us("+13055550123")) && set.contains(us("+12125550177")));
        assert!(!set.contains(us("+12125550188")), "added then deleted");
        assert_eq!(set.len(), 4);
        let all: Vec<u64> = set.iter().collect();
        assert_eq!(all, [12015550100, 12125550177, 12125550199, 13055550123]);
        // Change lists in order: a later one undoes an earlier one.
        let later = file("305,5550123,D\n");
        let (c2, _) = load_changes(later.path(), Country::US).unwrap();
        let (base, _) = load_numbers(full.path(), Country::US).unwrap();
        let set = base.with_changes(&c.then(c2));
        assert!(!set.contains(us("+13055550123")));
        assert_eq!(set.len(), 3);
    }

    /// A list older than its maximum age, or with no date, is stale for
    /// the calls it covers, and only for those.
    #[test]
    fn staleness_by_age_and_country() {
        let list = |date, countries: &[&str]| {
            DncList::new("us".into(), Default::default(), Default::default()).with_freshness(
                Freshness {
                    date,
                    max_age_days: Some(31),
                    countries: countries.iter().map(|c| c.to_string()).collect(),
                },
            )
        };
        let d = |m, day| NaiveDate::from_ymd_opt(2026, m, day).unwrap();
        let ny = us("+12125550100");
        assert_eq!(
            list(Some(d(10, 24)), &[]).stale_for(ny, d(11, 24)),
            None,
            "31 days"
        );
        let why = list(Some(d(10, 23)), &[]).stale_for(ny, d(11, 24)).unwrap();
        assert!(
            why.contains("2026-10-23") && why.contains("32 days"),
            "{why}"
        );
        assert!(list(None, &[])
            .stale_for(ny, d(11, 24))
            .unwrap()
            .contains("no date"));
        let paris = n("+33142000000");
        assert!(list(Some(d(1, 1)), &["US"])
            .stale_for(paris, d(11, 24))
            .is_none());
        assert!(list(Some(d(1, 1)), &["US"])
            .stale_for(ny, d(11, 24))
            .is_some());
        let unbounded = DncList::new("x".into(), Default::default(), Default::default());
        assert!(unbounded.stale_for(ny, d(11, 24)).is_none());
    }

    #[test]
    fn consent_lists() {
        let f = file("number,date,proof,hours\n+33142000001,2026-09-01,form-123,no\n0142000002,2026-09-02,rec-7,yes\n0142000003,yesterday,x\n");
        let (c, r) = load_consent(f.path(), Country::FR).unwrap();
        assert_eq!((r.entries, r.invalid), (2, 1));
        let (e, source) = c.lookup(n("0142000002"));
        let e = e.unwrap();
        assert_eq!(
            (e.proof.as_str(), e.hours, source),
            ("rec-7", true, Some(Source::File))
        );
        assert!(!c.get(n("0142000001")).unwrap().hours);

        // Run-time changes win over the file: a consent withdrawn, one given.
        let delta = std::sync::Arc::new(ConsentDelta::default());
        let c = c.with_delta(delta.clone());
        delta.set(n("0142000002").digits(), None);
        let given = Consent {
            date: NaiveDate::from_ymd_opt(2026, 11, 2).unwrap(),
            proof: "api-1".into(),
            hours: false,
        };
        delta.set(n("0142000009").digits(), Some(given.clone()));
        assert_eq!(c.get(n("0142000002")), None);
        assert_eq!(c.lookup(n("0142000002")), (None, Some(Source::Api)));
        assert_eq!(
            c.get(n("0142000009")).map(|t| (t.date, t.hours)),
            Some((given.date, false))
        );
        assert_eq!(c.lookup(n("0142000009")), (Some(given), Some(Source::Api)));
        assert!(c.get(n("0142000001")).is_some(), "untouched by the changes");
        assert_eq!(c.lookup(n("0142000005")), (None, None));
    }

    /// Numbers as a spreadsheet or a script might write them, and the
    /// decorations around them: none may cost a number.
    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        fn written() -> impl Strategy<Value = (E164, String)> {
            (1u32..=9, 0u64..100_000_000, 0usize..5).prop_map(|(first, rest, form)| {
                let nsn = format!("{first}{rest:08}");
                let pairs: Vec<&str> = (0..4).map(|i| &nsn[1 + 2 * i..3 + 2 * i]).collect();
                let text = match form {
                    0 => format!("+33{nsn}"),
                    1 => format!("0{nsn}"),
                    2 => format!("0{first} {}", pairs.join(" ")),
                    3 => format!("0{first}.{}", pairs.join(".")),
                    _ => format!("0033{nsn}"),
                };
                // National numbers of the overseas ranges (0639…) belong
                // to their own country codes: the undecorated text says
                // which number a reader means.
                (numbering::parse(&text, Country::FR).unwrap(), text)
            })
        }

        fn decorate(text: &str, quote: usize, pad: usize, trail: usize) -> String {
            let quoted = match quote {
                0 => text.to_owned(),
                1 => format!("\"{text}\""),
                2 => format!("'{text}"),
                _ => format!("=\"{text}\""),
            };
            let padded = match pad {
                0 => quoted,
                1 => format!("  {quoted} "),
                _ => format!("\t{quoted}\t"),
            };
            match trail {
                0 => padded,
                1 => format!("{padded},"),
                2 => format!("{padded};"),
                _ => format!("{padded} # note"),
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

            #[test]
            fn no_number_a_reader_sees_is_lost(
                rows in prop::collection::vec((written(), 0usize..4, 0usize..3, 0usize..4), 1..40),
                bom in any::<bool>(),
                eol in 0usize..3,
                header in any::<bool>(),
                blank_every in 2usize..10,
            ) {
                let eol = ["\n", "\r\n", "\r"][eol];
                let mut text = String::new();
                if bom {
                    text.push('\u{feff}');
                }
                if header {
                    text.push_str("\"Phone\"");
                    text.push_str(eol);
                }
                for (i, ((_, written), quote, pad, trail)) in rows.iter().enumerate() {
                    // With a header the file is a CSV: trailing separators
                    // then make an empty second column.
                    text.push_str(&decorate(written, *quote, *pad, if header { 1 } else { *trail }));
                    text.push_str(eol);
                    if i % blank_every == 0 {
                        text.push_str("# comment");
                        text.push_str(eol);
                        text.push_str(eol);
                    }
                }
                let f = file(&text);
                let (set, report) = load_numbers(f.path(), Country::FR).unwrap();
                prop_assert_eq!(report.invalid, 0, "{:?}", report);
                let distinct: std::collections::HashSet<_> = rows.iter().map(|((e, _), ..)| *e).collect();
                prop_assert_eq!(report.entries, distinct.len());
                for e in distinct {
                    prop_assert!(set.contains(e), "{} lost from {:?}", e, text);
                }
            }
        }
    }

    #[test]
    fn utf16_is_an_error_and_bom_crlf_quotes_are_read() {
        let mut bytes = vec![0xFF, 0xFE];
        bytes.extend(
            "+33612345678\r\n"
                .encode_utf16()
                .flat_map(|u| u.to_le_bytes()),
        );
        let f = file_bytes(&bytes);
        assert!(matches!(
            load_numbers(f.path(), Country::FR),
            Err(ListError::Utf16 { .. })
        ));
        let f = file_bytes(b"\xEF\xBB\xBF+33612345678\r\n\"0142000099\"\r\n");
        let (set, r) = load_numbers(f.path(), Country::FR).unwrap();
        assert_eq!((r.entries, r.invalid), (2, 0));
        assert!(set.contains(n("+33612345678")));
        // Bytes that are not UTF-8 spoil their line only.
        let f = file_bytes(b"+33612345678\n\xE9t\xE9\n0142000099\n");
        let (set, r) = load_numbers(f.path(), Country::FR).unwrap();
        assert_eq!(
            (r.entries, r.invalid, r.invalid_lines.clone()),
            (2, 1, vec![2])
        );
        assert!(set.contains(n("+33142000099")));
        assert_eq!(
            r.to_string(),
            "2 numbers, 1 unreadable line skipped (line 2)"
        );
    }

    fn file_bytes(b: &[u8]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(b).unwrap();
        f
    }
}
