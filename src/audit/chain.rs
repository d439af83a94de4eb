//! The hash chain that makes the audit trail tamper-evident.
//!
//! Every line ends with `"hash":"H"`, where H is the SHA-256 (lowercase
//! hex) of the previous line's H (64 ASCII characters; 64 `0`s before the
//! first line ever written) followed by the line as written without its
//! `,"hash":"…"` field. Editing, inserting or deleting a line breaks the
//! hash of every line after it. Each file opens with a `"kind":"chain"`
//! line naming the file the chain continues from and that file's last
//! hash, so a file deleted or cut short shows where the next one begins.
//! What a chain cannot show is its own end cut off: the last hash that
//! `callguard audit verify` prints is what to keep elsewhere (a ticket, a
//! mail) to prove that later.
//!
//! SHA-256 from `ring`, already here for TLS: it is what inspectors'
//! tools recompute (`sha256sum`), and hardware-accelerated.

use std::io::{BufRead, Read, Seek};
use std::path::{Path, PathBuf};

/// A chain value: 64 lowercase hex characters.
pub type Head = [u8; 64];

pub const GENESIS: Head = [b'0'; 64];

/// `,"hash":"` + 64 hex + `"}`.
pub const SUFFIX_LEN: usize = 9 + 64 + 2;

pub fn hex(digest: &[u8], out: &mut Head) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in digest.iter().enumerate().take(32) {
        out[2 * i] = DIGITS[usize::from(b >> 4)];
        out[2 * i + 1] = DIGITS[usize::from(b & 15)];
    }
}

/// The SHA-256 of `bytes` in lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let mut h = GENESIS;
    hex(
        ring::digest::digest(&ring::digest::SHA256, bytes).as_ref(),
        &mut h,
    );
    String::from_utf8_lossy(&h).into_owned()
}

/// The chain value of a line whose body (the JSON object without its hash
/// field) is `body` followed by `}`, after `prev`.
fn link(prev: &Head, body_open: &[u8]) -> Head {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(prev);
    ctx.update(body_open);
    ctx.update(b"}");
    let mut out = GENESIS;
    hex(ctx.finish().as_ref(), &mut out);
    out
}

/// Seals the JSON object in `buf[start..]` (no newline): its hash field
/// and a newline are appended, and the chain moves on to it.
pub fn seal(head: &mut Head, buf: &mut Vec<u8>, start: usize) {
    debug_assert_eq!(buf.last(), Some(&b'}'));
    buf.pop();
    let h = link(head, &buf[start..]);
    buf.extend_from_slice(b",\"hash\":\"");
    buf.extend_from_slice(&h);
    buf.extend_from_slice(b"\"}\n");
    *head = h;
}

/// A sealed line (without its newline) split into its body (without the
/// closing brace) and its hash; `None` when the line carries no hash.
fn split(line: &[u8]) -> Option<(&[u8], &[u8])> {
    let cut = line.len().checked_sub(SUFFIX_LEN)?;
    let (body, suffix) = line.split_at(cut);
    let hash = suffix.strip_prefix(b",\"hash\":\"")?.strip_suffix(b"\"}")?;
    let ok = hash.len() == 64 && hash.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    ok.then_some((body, hash))
}

/// Where a chain stands at the end of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tail {
    /// The hash of the last complete sealed line, if any.
    pub head: Option<Head>,
    /// The file ends with a complete sealed line: appending continues the
    /// chain. False for a line cut short (a crash mid-write) or an
    /// unsealed line (a file from before the chain).
    pub sealed: bool,
}

/// Reads the end of `path` (its last 256 KiB: lines are under 4 KiB).
pub fn tail(path: &Path) -> std::io::Result<Tail> {
    const WINDOW: u64 = 256 << 10;
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    f.seek(std::io::SeekFrom::Start(len.saturating_sub(WINDOW)))?;
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes)?;
    let complete = bytes.last() == Some(&b'\n');
    let mut lines = bytes.split(|&b| b == b'\n').rev();
    if complete {
        lines.next(); // the empty piece after the last newline
    }
    let mut sealed = complete;
    let mut head = None;
    for (i, line) in lines.enumerate() {
        // The first piece of a cut window may be a partial line.
        match split(line) {
            Some((_, h)) => {
                let mut v = GENESIS;
                v.copy_from_slice(h);
                head = Some(v);
                break;
            }
            None if i == 0 => sealed = false,
            None => {}
        }
    }
    if len == 0 {
        sealed = false;
    }
    Ok(Tail { head, sealed })
}

/// Ordering of audit files as the writer creates them: by day, and within
/// a day the rotated parts (`.1`, `.2`, …) before the current file.
pub fn file_key(name: &str) -> Option<(chrono::NaiveDate, u32)> {
    let rest = name.strip_prefix("audit-")?;
    let (day, tail) = (rest.get(..10)?, rest.get(10..)?);
    let tail = tail.strip_prefix('.')?.strip_suffix("jsonl")?;
    let part = if tail.is_empty() {
        u32::MAX
    } else {
        let n = tail.strip_suffix('.')?;
        if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        n.parse().ok()?
    };
    let day = chrono::NaiveDate::parse_from_str(day, "%Y-%m-%d").ok()?;
    Some((day, part))
}

/// The audit files of `dir`, oldest first.
pub fn files_in(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let key = file_key(e.file_name().to_str()?)?;
            Some((key, e.path()))
        })
        .collect();
    files.sort();
    Ok(files.into_iter().map(|(_, p)| p).collect())
}

/// The first line of every file.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct Start {
    pub time: String,
    pub kind: String,
    pub previous_file: Option<String>,
    pub previous_hash: Option<String>,
}

/// What `verify` found in one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileReport {
    pub path: PathBuf,
    pub lines: usize,
    /// The chain value after the last line checked.
    pub last: Option<String>,
    pub link: Link,
    /// The first defect, with its line number (1-based); `None` intact.
    pub defect: Option<(usize, String)>,
}

/// How a file's chain start relates to the file verified before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Link {
    /// The first file ever written: the chain starts here.
    Genesis,
    /// Continues the file verified just before, hash for hash.
    Continues,
    /// Continues a file that was not given (deleted by retention, or not
    /// named on the command line); the link is not checked.
    From(String),
    /// Names the file verified before but not its last hash: lines were
    /// removed from the end of that file, or this one was forged.
    Broken(String),
}

/// Verifies files in the order given; each file's chain start is checked
/// against the one before it when it names that file.
pub fn verify(paths: &[PathBuf]) -> std::io::Result<Vec<FileReport>> {
    let mut reports: Vec<FileReport> = Vec::new();
    for path in paths {
        let before = reports
            .last()
            .map(|r| (file_name(&r.path), r.last.clone(), r.defect.is_none()));
        reports.push(verify_file(path, before)?);
    }
    Ok(reports)
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn verify_file(
    path: &Path,
    before: Option<(String, Option<String>, bool)>,
) -> std::io::Result<FileReport> {
    let mut r = std::io::BufReader::new(std::fs::File::open(path)?);
    let mut report = FileReport {
        path: path.to_owned(),
        lines: 0,
        last: None,
        link: Link::Genesis,
        defect: None,
    };
    let mut head = GENESIS;
    let mut line = Vec::new();
    loop {
        line.clear();
        if r.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        report.lines += 1;
        let n = report.lines;
        if line.pop() != Some(b'\n') {
            report.defect = Some((n, "the last line is cut short (the writer stopped mid-line, or the file was truncated)".into()));
            break;
        }
        let Some((body, hash)) = split(&line) else {
            report.defect = Some((n, "the line carries no hash".into()));
            break;
        };
        if n == 1 {
            match chain_start(&line) {
                Ok((previous_file, previous_hash)) => {
                    head = previous_hash.unwrap_or(GENESIS);
                    report.link = match (previous_file, &before) {
                        (None, _) => Link::Genesis,
                        (Some(p), Some((name, last, _))) if &p == name => {
                            if last.as_deref().map(str::as_bytes) == Some(&head[..]) {
                                Link::Continues
                            } else {
                                Link::Broken(p)
                            }
                        }
                        (Some(p), _) => Link::From(p),
                    };
                }
                Err(why) => {
                    report.defect = Some((n, why));
                    break;
                }
            }
        }
        let expected = link(&head, body);
        if expected[..] != *hash {
            report.defect = Some((
                n,
                "hash mismatch: this line, or one before it, was edited, inserted or deleted"
                    .into(),
            ));
            break;
        }
        head = expected;
        report.last = Some(String::from_utf8_lossy(&head).into_owned());
    }
    if report.lines == 0 {
        report.defect = Some((0, "the file is empty".into()));
    }
    Ok(report)
}

/// The previous file and hash a file's first line names.
fn chain_start(line: &[u8]) -> Result<(Option<String>, Option<Head>), String> {
    let start: Start = serde_json::from_slice(line)
        .map_err(|e| format!("the first line is not a chain start: {e}"))?;
    if start.kind != "chain" {
        return Err(format!(
            "the first line is a \"{}\" record, not a chain start: lines were removed from the beginning",
            start.kind
        ));
    }
    let hash = match start.previous_hash {
        None => None,
        Some(h) => {
            let ok = h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
            if !ok {
                return Err("the chain start's previous_hash is not a SHA-256 in hex".into());
            }
            let mut v = GENESIS;
            v.copy_from_slice(h.as_bytes());
            Some(v)
        }
    };
    Ok((start.previous_file, hash))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_chain(path: &Path, head: &mut Head, previous: Option<(&str, &Head)>, n: usize) {
        let mut buf = Vec::new();
        let start = Start {
            time: "2026-11-17T00:00:00.000Z".into(),
            kind: "chain".into(),
            previous_file: previous.map(|(f, _)| f.to_owned()),
            previous_hash: previous.map(|(_, h)| String::from_utf8_lossy(h).into_owned()),
        };
        serde_json::to_writer(&mut buf, &start).unwrap();
        seal(head, &mut buf, 0);
        for i in 0..n {
            let s = buf.len();
            buf.extend_from_slice(
                format!("{{\"kind\":\"decision\",\"call_id\":\"c{i}\"}}").as_bytes(),
            );
            seal(head, &mut buf, s);
        }
        std::fs::write(path, buf).unwrap();
    }

    #[test]
    fn an_untouched_chain_verifies_and_any_edit_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (
            dir.path().join("audit-2026-11-17.jsonl"),
            dir.path().join("audit-2026-11-18.jsonl"),
        );
        let mut head = GENESIS;
        write_chain(&a, &mut head, None, 5);
        let end_a = head;
        write_chain(&b, &mut head, Some(("audit-2026-11-17.jsonl", &end_a)), 3);
        let r = verify(&[a.clone(), b.clone()]).unwrap();
        assert_eq!(r[0].defect, None);
        assert_eq!(r[0].link, Link::Genesis);
        assert_eq!(r[0].lines, 6);
        assert_eq!(r[1].defect, None);
        assert_eq!(r[1].link, Link::Continues);
        assert_eq!(r[1].last.as_deref().map(str::as_bytes), Some(&head[..]));
        // Alone, the second file names a file not given.
        let r = verify(std::slice::from_ref(&b)).unwrap();
        assert_eq!(r[0].link, Link::From("audit-2026-11-17.jsonl".into()));

        let text = std::fs::read_to_string(&a).unwrap();
        // One character edited on line 3.
        std::fs::write(&a, text.replacen("\"c1\"", "\"c9\"", 1)).unwrap();
        let r = verify(std::slice::from_ref(&a)).unwrap();
        assert_eq!(r[0].defect.as_ref().map(|d| d.0), Some(3), "{r:?}");
        // A line deleted: found at the line that now follows.
        let lines: Vec<&str> = text.lines().collect();
        let without: String = lines
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != 2)
            .map(|(_, l)| format!("{l}\n"))
            .collect();
        std::fs::write(&a, without).unwrap();
        let r = verify(std::slice::from_ref(&a)).unwrap();
        assert_eq!(r[0].defect.as_ref().map(|d| d.0), Some(3));
        // The last line deleted: the file verifies alone, the next file's
        // link shows it.
        let cut: String = lines[..lines.len() - 1]
            .iter()
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(&a, cut).unwrap();
        let r = verify(&[a.clone(), b.clone()]).unwrap();
        assert_eq!(r[0].defect, None);
        assert_eq!(r[1].link, Link::Broken("audit-2026-11-17.jsonl".into()));
        // The first line removed.
        let headless: String = lines[1..].iter().map(|l| format!("{l}\n")).collect();
        std::fs::write(&a, headless).unwrap();
        let r = verify(std::slice::from_ref(&a)).unwrap();
        assert_eq!(r[0].defect.as_ref().map(|d| d.0), Some(1));
        // A line cut short.
        std::fs::write(&a, &text[..text.len() - 10]).unwrap();
        let r = verify(std::slice::from_ref(&a)).unwrap();
        assert!(r[0].defect.as_ref().unwrap().1.contains("cut short"));
    }

    #[test]
    fn the_tail_gives_the_head_to_continue_from() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("audit-2026-11-17.jsonl");
        let mut head = GENESIS;
        write_chain(&a, &mut head, None, 2);
        assert_eq!(
            tail(&a).unwrap(),
            Tail {
                head: Some(head),
                sealed: true
            }
        );
        let text = std::fs::read(&a).unwrap();
        std::fs::write(&a, &text[..text.len() - 5]).unwrap();
        let t = tail(&a).unwrap();
        assert!(!t.sealed);
        assert!(t.head.is_some() && t.head != Some(head));
        std::fs::write(&a, b"{\"old\":1}\n").unwrap();
        assert_eq!(
            tail(&a).unwrap(),
            Tail {
                head: None,
                sealed: false
            }
        );
    }

    #[test]
    fn files_sort_as_written() {
        let mut names = vec![
            "audit-2026-11-18.jsonl",
            "audit-2026-11-17.jsonl",
            "audit-2026-11-17.10.jsonl",
            "audit-2026-11-17.2.jsonl",
        ];
        names.sort_by_key(|n| file_key(n).unwrap());
        assert_eq!(
            names,
            [
                "audit-2026-11-17.2.jsonl",
                "audit-2026-11-17.10.jsonl",
                "audit-2026-11-17.jsonl",
                "audit-2026-11-18.jsonl"
            ]
        );
        for bad in [
            "audit-2026-11-17.json",
            "audit-2026-11-17.x.jsonl",
            "audit-2026-11-17..jsonl",
            "notes.txt",
        ] {
            assert_eq!(file_key(bad), None, "{bad}");
        }
    }
}
