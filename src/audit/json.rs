//! JSON text of the lines written once per call (decision, outcome, end),
//! by hand.
//!
//! Why not `serde_json` here: `perf` of the writer thread put 38 % of its
//! time in `serde_json` for a decision line, most of it escaping strings a
//! byte at a time and calling a monomorphized `serialize_entry` per field,
//! and another 5 % in `chrono`'s RFC 3339 formatting into a `String` per
//! timestamp. These lines have a fixed shape, so they are written straight
//! into the batch buffer. The output is the same JSON `serde_json` writes
//! for the same values (a test compares the two on random input); the
//! rarer lines (admin changes, strangers, chain starts) still go through
//! `serde_json`.

use chrono::{DateTime, Datelike, FixedOffset, Offset, TimeZone, Timelike, Utc};
use std::fmt;

use crate::text::Ip;

/// One JSON object being written into `out`.
pub struct Obj<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> Obj<'a> {
    pub fn open(out: &'a mut Vec<u8>) -> Obj<'a> {
        out.push(b'{');
        Obj { out, first: true }
    }

    /// Starts a member. Keys are this module's callers' literals: plain
    /// ASCII that needs no escaping.
    fn key(&mut self, k: &'static str) -> &mut Vec<u8> {
        debug_assert!(k.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\'));
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        self.out.push(b'"');
        self.out.extend_from_slice(k.as_bytes());
        self.out.extend_from_slice(b"\":");
        self.out
    }

    pub fn str(&mut self, k: &'static str, v: &str) -> &mut Self {
        let out = self.key(k);
        quoted(out, v);
        self
    }

    pub fn opt_str(&mut self, k: &'static str, v: Option<&str>) -> &mut Self {
        match v {
            Some(v) => self.str(k, v),
            None => self.null(k),
        }
    }

    /// A string member from a value's `Display`, escaped as it is
    /// formatted (no `String` per field).
    pub fn shown(&mut self, k: &'static str, v: &dyn fmt::Display) -> &mut Self {
        let out = self.key(k);
        out.push(b'"');
        let _ = fmt::Write::write_fmt(&mut Escaping(out), format_args!("{v}"));
        out.push(b'"');
        self
    }

    /// A string member of `prefix` and the decimal digits of `v` (a
    /// number like `+33612345678`), without going through `fmt`.
    pub fn digits(&mut self, k: &'static str, prefix: &'static str, v: u64) -> &mut Self {
        let out = self.key(k);
        out.push(b'"');
        escape(out, prefix);
        push_u64(out, v);
        out.push(b'"');
        self
    }

    /// A socket address as its `Display` writes it; an IPv4 one without
    /// going through `fmt` (`fmt` for the source, caller and callee was
    /// 11 % of the writer thread's time, after the rest of this module).
    pub fn addr(&mut self, k: &'static str, v: std::net::SocketAddr) -> &mut Self {
        let std::net::SocketAddr::V4(a) = v else {
            return self.shown(k, &v);
        };
        let out = self.key(k);
        out.push(b'"');
        out.extend_from_slice(Ip::new((*a.ip()).into()).as_str().as_bytes());
        out.push(b':');
        push_u64(out, u64::from(a.port()));
        out.push(b'"');
        self
    }

    pub fn num(&mut self, k: &'static str, v: u64) -> &mut Self {
        let out = self.key(k);
        push_u64(out, v);
        self
    }

    pub fn opt_num(&mut self, k: &'static str, v: Option<u64>) -> &mut Self {
        match v {
            Some(v) => self.num(k, v),
            None => self.null(k),
        }
    }

    pub fn bool(&mut self, k: &'static str, v: bool) -> &mut Self {
        let out = self.key(k);
        out.extend_from_slice(if v { b"true" } else { b"false" });
        self
    }

    pub fn null(&mut self, k: &'static str) -> &mut Self {
        self.key(k).extend_from_slice(b"null");
        self
    }

    /// An instant in UTC to the millisecond, as `chrono`'s
    /// `to_rfc3339_opts(Millis, true)` writes it.
    pub fn time(&mut self, k: &'static str, t: DateTime<Utc>) -> &mut Self {
        let out = self.key(k);
        out.push(b'"');
        push_rfc3339(out, t.fixed_offset(), true);
        out.push(b'"');
        self
    }

    /// An array of `items`, each written by `each` into the buffer.
    pub fn array<T>(
        &mut self,
        k: &'static str,
        items: impl IntoIterator<Item = T>,
        mut each: impl FnMut(&mut Vec<u8>, T),
    ) -> &mut Self {
        let out = self.key(k);
        out.push(b'[');
        for (i, item) in items.into_iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            each(out, item);
        }
        out.push(b']');
        self
    }

    pub fn close(&mut self) {
        self.out.push(b'}');
    }
}

/// `v` as a JSON string, escaped as `serde_json` does: `"`, `\` and the
/// control characters below U+0020; everything else (U+007F and beyond
/// included) as it is.
pub fn quoted(out: &mut Vec<u8>, v: &str) {
    out.push(b'"');
    escape(out, v);
    out.push(b'"');
}

fn needs_escape(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

fn escape(out: &mut Vec<u8>, v: &str) {
    let bytes = v.as_bytes();
    // Sixteen bytes at a time: the test over a fixed-size chunk compiles
    // to a few vector instructions, and most text here has nothing to
    // escape. Clean runs are copied whole.
    let mut clean = 0;
    let mut at = 0;
    for chunk in bytes.chunks_exact(16) {
        if chunk.iter().fold(false, |any, &b| any | needs_escape(b)) {
            for (i, &b) in chunk.iter().enumerate() {
                if needs_escape(b) {
                    out.extend_from_slice(&bytes[clean..at + i]);
                    push_escaped(out, b);
                    clean = at + i + 1;
                }
            }
        }
        at += 16;
    }
    for (i, &b) in bytes[at..].iter().enumerate() {
        if needs_escape(b) {
            out.extend_from_slice(&bytes[clean..at + i]);
            push_escaped(out, b);
            clean = at + i + 1;
        }
    }
    out.extend_from_slice(&bytes[clean..]);
}

fn push_escaped(out: &mut Vec<u8>, b: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    match b {
        b'"' => out.extend_from_slice(b"\\\""),
        b'\\' => out.extend_from_slice(b"\\\\"),
        b'\n' => out.extend_from_slice(b"\\n"),
        b'\r' => out.extend_from_slice(b"\\r"),
        b'\t' => out.extend_from_slice(b"\\t"),
        0x08 => out.extend_from_slice(b"\\b"),
        0x0c => out.extend_from_slice(b"\\f"),
        _ => out.extend_from_slice(&[
            b'\\',
            b'u',
            b'0',
            b'0',
            HEX[usize::from(b >> 4)],
            HEX[usize::from(b & 15)],
        ]),
    }
}

/// A `fmt::Write` that escapes what is written to it.
struct Escaping<'a>(&'a mut Vec<u8>);

impl fmt::Write for Escaping<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        escape(self.0, s);
        Ok(())
    }
}

/// `v` in decimal: `itoa`, what `serde_json` itself writes integers with.
fn push_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

fn push_digits(out: &mut Vec<u8>, v: u32, width: usize) {
    let mut digits = [b'0'; 10];
    let mut v = v;
    for d in digits[10 - width..].iter_mut().rev() {
        *d = b'0' + (v % 10) as u8;
        v /= 10;
    }
    out.extend_from_slice(&digits[10 - width..]);
}

/// `t` as RFC 3339, the way `chrono`'s `to_rfc3339_opts` writes it with
/// milliseconds and `Z` for UTC (`millis_z`), or with whole seconds and a
/// `±HH:MM` offset. What the hand-written digits do not cover (years
/// outside 0000–9999, offsets with seconds, a leap second) goes to
/// `chrono` itself.
fn push_rfc3339(out: &mut Vec<u8>, t: DateTime<FixedOffset>, millis_z: bool) {
    let offset = t.offset().local_minus_utc();
    let nanos = t.nanosecond();
    if !(0..=9999).contains(&t.year()) || offset % 60 != 0 || nanos >= 1_000_000_000 {
        let s = if millis_z {
            t.with_timezone(&Utc)
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        } else {
            t.to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
        };
        out.extend_from_slice(s.as_bytes());
        return;
    }
    push_digits(out, t.year() as u32, 4);
    out.push(b'-');
    push_digits(out, t.month(), 2);
    out.push(b'-');
    push_digits(out, t.day(), 2);
    out.push(b'T');
    push_digits(out, t.hour(), 2);
    out.push(b':');
    push_digits(out, t.minute(), 2);
    out.push(b':');
    push_digits(out, t.second(), 2);
    if millis_z {
        out.push(b'.');
        push_digits(out, nanos / 1_000_000, 3);
    }
    if millis_z && offset == 0 {
        out.push(b'Z');
        return;
    }
    out.push(if offset < 0 { b'-' } else { b'+' });
    let minutes = offset.unsigned_abs() / 60;
    push_digits(out, minutes / 60, 2);
    out.push(b':');
    push_digits(out, minutes % 60, 2);
}

/// The callee's local time at `at` in `zone`, to the second, with its
/// offset (`2026-11-17T11:00:00+01:00`), as a JSON string.
pub fn push_local_time(out: &mut Vec<u8>, at: DateTime<Utc>, zone: &chrono_tz::Tz) {
    let offset = zone.offset_from_utc_datetime(&at.naive_utc()).fix();
    out.push(b'"');
    push_rfc3339(out, at.with_timezone(&offset), false);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn written(f: impl FnOnce(&mut Obj)) -> Vec<u8> {
        let mut out = Vec::new();
        let mut o = Obj::open(&mut out);
        f(&mut o);
        o.close();
        out
    }

    proptest! {
        #[test]
        fn strings_come_out_as_serde_json_writes_them(s in any::<String>(), ctl in "[\\x00-\\x1f\"\\\\\u{7f}é]{0,40}", pad in 0usize..40) {
            // Random text, and text dense in what must be escaped, at every
            // position relative to the 16-byte chunks.
            for v in [s.clone(), format!("{}{ctl}{s}", "a".repeat(pad))] {
                let mut out = Vec::new();
                quoted(&mut out, &v);
                prop_assert_eq!(String::from_utf8(out).unwrap(), serde_json::to_string(&v).unwrap());
                let shown = written(|o| { o.shown("k", &v); });
                prop_assert_eq!(String::from_utf8(shown).unwrap(), serde_json::json!({"k": v}).to_string());
            }
        }

        #[test]
        fn instants_come_out_as_chrono_writes_them(secs in -62_135_596_800i64..300_000_000_000, nanos in 0u32..1_000_000_000, n in 0u64..=u64::MAX) {
            let t = DateTime::<Utc>::from_timestamp(secs, nanos).unwrap();
            let got = written(|o| { o.time("t", t).num("n", n); });
            let want = format!(r#"{{"t":"{}","n":{n}}}"#, t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
            prop_assert_eq!(String::from_utf8(got).unwrap(), want);
            for zone in [chrono_tz::Europe::Paris, chrono_tz::America::St_Johns, chrono_tz::Asia::Kathmandu, chrono_tz::America::Bogota, chrono_tz::UTC] {
                let mut out = Vec::new();
                push_local_time(&mut out, t, &zone);
                let want = format!("\"{}\"", t.with_timezone(&zone).to_rfc3339_opts(chrono::SecondsFormat::Secs, false));
                prop_assert_eq!(String::from_utf8(out).unwrap(), want);
            }
        }
    }

    #[test]
    fn members_are_separated_and_typed() {
        let out = written(|o| {
            o.str("a", "x")
                .opt_str("b", None)
                .opt_num("c", Some(7))
                .bool("d", false)
                .array("e", [1u64, 22], push_u64)
                .shown("f", &1.5)
                .digits("g", "+", 33612345678)
                .addr("h", "10.0.255.1:5060".parse().unwrap())
                .addr("i", "[2001:db8::1]:5061".parse().unwrap());
        });
        assert_eq!(
            String::from_utf8(out).unwrap(),
            concat!(
                r#"{"a":"x","b":null,"c":7,"d":false,"e":[1,22],"f":"1.5","g":"+33612345678","#,
                r#""h":"10.0.255.1:5060","i":"[2001:db8::1]:5061"}"#
            )
        );
    }
}
