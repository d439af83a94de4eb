//! Do-not-call and consent lists, loaded from files into immutable
//! snapshots that the call path reads without locks. A reload builds new
//! snapshots and swaps the whole policy (see `policy`).
//!
//! Accepted formats (rules.md: Bloctel and the US registry publish no
//! common format): one number per line with `#` comments; CSV with a
//! header naming the number column; the US registry's `areacode,number`.
//! Lines whose number cannot be read are counted and reported, and skipped:
//! an unreadable entry can never equal a valid callee, so skipping it
//! cannot let a listed number through.

use chrono::NaiveDate;
use rustc_hash::{FxHashMap, FxHashSet};
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
        write!(f, "{} numbers", self.entries)?;
        if self.invalid > 0 {
            write!(
                f,
                ", {} unreadable lines skipped (first: {:?})",
                self.invalid, self.invalid_lines
            )?;
        }
        Ok(())
    }
}

/// A set of numbers (E.164 digits).
#[derive(Debug, Default)]
pub struct NumberSet {
    set: FxHashSet<u64>,
}

impl NumberSet {
    pub fn contains(&self, n: E164) -> bool {
        self.set.contains(&n.digits())
    }
    pub fn len(&self) -> usize {
        self.set.len()
    }
    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }
    pub fn from_numbers(it: impl IntoIterator<Item = E164>) -> NumberSet {
        NumberSet {
            set: it.into_iter().map(E164::digits).collect(),
        }
    }
}

/// Run-time additions (`true`) and removals (`false`) of one DNC list,
/// made through the admin API and persisted by the state store. They
/// outlive reloads: a reload replaces the file's snapshot, not the
/// changes an operator made since.
#[derive(Debug, Default)]
pub struct Delta {
    map: dashmap::DashMap<u64, bool, rustc_hash::FxBuildHasher>,
    /// Lets the call path skip the map while no change was ever made (the
    /// common case), at the cost of one relaxed load.
    used: std::sync::atomic::AtomicBool,
}

impl Delta {
    pub fn get(&self, n: u64) -> Option<bool> {
        if !self.used.load(std::sync::atomic::Ordering::Relaxed) {
            return None;
        }
        self.map.get(&n).map(|v| *v)
    }
    pub fn set(&self, n: u64, listed: bool) {
        self.used.store(true, std::sync::atomic::Ordering::Relaxed);
        self.map.insert(n, listed);
    }
    pub fn len(&self) -> usize {
        self.map.len()
    }
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
    /// Net change to the snapshot's size.
    pub fn net(&self, base: &NumberSet) -> i64 {
        self.map
            .iter()
            .map(|e| match (*e.value(), base.set.contains(e.key())) {
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
        DncList { name, base, delta }
    }
    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn contains(&self, n: E164) -> bool {
        self.lookup(n).0
    }
    /// Whether `n` is listed, and whether the file or a run-time change says so.
    pub fn lookup(&self, n: E164) -> (bool, Source) {
        match self.delta.get(n.digits()) {
            Some(listed) => (listed, Source::Api),
            None => (self.base.contains(n), Source::File),
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consent {
    pub date: NaiveDate,
    pub proof: String,
    pub hours: bool,
}

#[derive(Debug, Default)]
pub struct ConsentList {
    map: FxHashMap<u64, Consent>,
}

impl ConsentList {
    pub fn get(&self, n: E164) -> Option<&Consent> {
        self.map.get(&n.digits())
    }
    pub fn len(&self) -> usize {
        self.map.len()
    }
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

fn read(path: &Path) -> Result<String, ListError> {
    std::fs::read_to_string(path).map_err(|source| ListError::Read {
        path: path.to_owned(),
        source,
    })
}

fn split_row(line: &str) -> Vec<&str> {
    let sep = if line.contains(';') && !line.contains(',') {
        ';'
    } else {
        ','
    };
    line.split(sep)
        .map(|c| c.trim().trim_matches('"').trim())
        .collect()
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

/// Content lines with their 1-based line numbers, comments removed.
fn lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines().enumerate().filter_map(|(i, l)| {
        let l = l.split('#').next().unwrap_or("").trim();
        (!l.is_empty()).then_some((i + 1, l))
    })
}

struct Columns {
    number: usize,
    header: bool,
}

fn columns(first: &str, path: &Path) -> Result<Columns, ListError> {
    let cells = split_row(first);
    if cells.len() < 2 {
        return Ok(Columns {
            number: 0,
            header: false,
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
    if col == 0
        && cells.len() == 2
        && cells[0].len() == 3
        && cells[1].len() == 7
        && cells.iter().all(|c| c.bytes().all(|b| b.is_ascii_digit()))
    {
        return numbering::parse(&format!("{}{}", cells[0], cells[1]), Country::US).ok();
    }
    numbering::parse(cells.get(col)?, country).ok()
}

pub fn load_numbers(path: &Path, country: Country) -> Result<(NumberSet, LoadReport), ListError> {
    let text = read(path)?;
    let mut report = LoadReport::default();
    let mut set = FxHashSet::default();
    let mut it = lines(&text).peekable();
    let cols = match it.peek() {
        Some((_, first)) => columns(first, path)?,
        None => Columns {
            number: 0,
            header: false,
        },
    };
    if cols.header {
        it.next();
    }
    for (ln, line) in it {
        match row_number(&split_row(line), cols.number, country) {
            Some(n) => {
                set.insert(n.digits());
            }
            None => note_invalid(&mut report, ln),
        }
    }
    report.entries = set.len();
    Ok((NumberSet { set }, report))
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
    Ok((ConsentList { map }, report))
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

    #[test]
    fn consent_lists() {
        let f = file("number,date,proof,hours\n+33142000001,2026-09-01,form-123,no\n0142000002,2026-09-02,rec-7,yes\n0142000003,yesterday,x\n");
        let (c, r) = load_consent(f.path(), Country::FR).unwrap();
        assert_eq!((r.entries, r.invalid), (2, 1));
        let e = c.get(n("0142000002")).unwrap();
        assert_eq!((e.proof.as_str(), e.hours), ("rec-7", true));
        assert!(!c.get(n("0142000001")).unwrap().hours);
    }
}
