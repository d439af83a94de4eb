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
use rustc_hash::{FxHashMap, FxHashSet};
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
    /// Lines of the file that held no readable number.
    unreadable: usize,
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
    pub fn from_entries(entries: impl IntoIterator<Item = (E164, Consent)>) -> ConsentList {
        ConsentList {
            map: entries.into_iter().map(|(n, c)| (n.digits(), c)).collect(),
        }
    }

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

/// The file as text: a UTF-8 byte-order mark is dropped, UTF-16 is
/// refused (read as UTF-8 it would yield no number at all), and bytes that
/// are not UTF-8 become U+FFFD, so only the lines holding them fail.
fn read(path: &Path) -> Result<String, ListError> {
    let bytes = std::fs::read(path).map_err(|source| ListError::Read {
        path: path.to_owned(),
        source,
    })?;
    let head = &bytes[..bytes.len().min(64)];
    let utf16 = head.starts_with(&[0xFF, 0xFE])
        || head.starts_with(&[0xFE, 0xFF])
        || head.iter().filter(|&&b| b == 0).count() >= 2;
    if utf16 {
        return Err(ListError::Utf16 {
            path: path.to_owned(),
        });
    }
    let body = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&bytes);
    Ok(String::from_utf8_lossy(body).into_owned())
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
