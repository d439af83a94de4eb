//! Telephone numbers: parsing to E.164, the French numbering categories
//! that decide which caller IDs an automated dialer may present (ARCEP
//! 2022-1583), and the callee's time zone(s) (libphonenumber data).
//!
//! Numbers are kept as their E.164 digits in a `u64` (at most 15 digits,
//! never a leading zero), which makes list lookups a hash of one integer.

pub mod nanp;
pub mod plan;
mod region;
mod zones;

pub use region::{region_of, subdivisions, Region};
pub use zones::{callee_zones, Zones};

/// Builds the numbering tables now: the first call after start must not
/// pay for them (they took 1–8 ms, enough to trip the slow-decision alert).
pub fn warm() {
    zones::warm();
    nanp::warm();
}

use std::borrow::Cow;
use std::fmt;

/// Country whose national format is used to read numbers without `+`:
/// the countries callguard has rule sets for. A dialer in Sydney writes
/// `0412 345 678`; read as French it would be a number in Lyon, under
/// the wrong law and the wrong clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize)]
pub enum Country {
    FR,
    US,
    /// Canada: NANP, read as the US.
    CA,
    ES,
    AU,
    BR,
    CO,
    ID,
}

impl Country {
    /// Every country, and its name as written in config files and on the
    /// command line, in the same order.
    pub const ALL: [Country; 8] = [
        Country::FR,
        Country::US,
        Country::CA,
        Country::ES,
        Country::AU,
        Country::BR,
        Country::CO,
        Country::ID,
    ];
    pub const NAMES: [&'static str; 8] = ["FR", "US", "CA", "ES", "AU", "BR", "CO", "ID"];

    pub fn calling_code(self) -> u64 {
        match self {
            Country::FR => 33,
            Country::US | Country::CA => 1,
            Country::ES => 34,
            Country::AU => 61,
            Country::BR => 55,
            Country::CO => 57,
            Country::ID => 62,
        }
    }

    /// The digit that opens a national number in national format and is
    /// not part of it (ITU-T E.164 "trunk prefix"), where there is one.
    pub fn trunk_prefix(self) -> Option<char> {
        match self {
            Country::FR | Country::AU | Country::BR | Country::ID => Some('0'),
            Country::US | Country::CA | Country::ES | Country::CO => None,
        }
    }
}

/// A country name that is not one of [`Country::NAMES`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown country `{0}`: one of {names}", names = Country::NAMES.join(", "))]
pub struct UnknownCountry(pub String);

impl std::str::FromStr for Country {
    type Err = UnknownCountry;

    fn from_str(s: &str) -> Result<Country, UnknownCountry> {
        Country::NAMES
            .iter()
            .position(|n| n.eq_ignore_ascii_case(s))
            .map(|i| Country::ALL[i])
            .ok_or_else(|| UnknownCountry(s.to_owned()))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NumberError {
    #[error("no number")]
    Empty,
    #[error("characters other than digits, `+` and separators")]
    BadCharacters,
    #[error("too few digits")]
    TooShort,
    #[error("too many digits")]
    TooLong,
    /// Why the number does not exist in its country's numbering plan.
    #[error("{0}")]
    Invalid(&'static str),
}

/// An E.164 number (digits only, country code first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct E164(u64);

impl E164 {
    pub fn digits(self) -> u64 {
        self.0
    }

    pub fn from_digits(d: u64) -> E164 {
        E164(d)
    }

    fn len(self) -> u32 {
        self.0.checked_ilog10().unwrap_or(0) + 1
    }

    /// True when the number starts with the decimal `prefix` (digits).
    pub fn starts_with(self, prefix: u64, prefix_len: u32) -> bool {
        let len = self.len();
        len >= prefix_len && self.0 / 10u64.pow(len - prefix_len) == prefix
    }

    /// The leading `n` digits.
    pub fn leading(self, n: u32) -> Option<u64> {
        let len = self.len();
        (len >= n).then(|| self.0 / 10u64.pow(len - n))
    }
}

impl fmt::Display for E164 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "+{}", self.0)
    }
}

/// A caller ID: an E.164 number, or a French short number (30xx/31xx)
/// that has no E.164 form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallerNumber {
    E164(E164),
    FrShort(u16),
}

impl fmt::Display for CallerNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallerNumber::E164(e) => e.fmt(f),
            CallerNumber::FrShort(s) => write!(f, "{s}"),
        }
    }
}

/// The user part of a `sip:`/`sips:`/`tel:` URI, or the text itself.
fn user_part(input: &str) -> &str {
    let s = input.trim();
    let s = s
        .strip_prefix('<')
        .and_then(|x| x.strip_suffix('>'))
        .unwrap_or(s);
    for scheme in ["sip:", "sips:", "tel:", "SIP:", "SIPS:", "TEL:"] {
        if let Some(rest) = s.strip_prefix(scheme) {
            let end = rest.find(['@', ';', '?']).unwrap_or(rest.len());
            return &rest[..end];
        }
    }
    s
}

/// Digits of a dial string, with visual separators removed (RFC 3966:
/// space, `.`, `-`, `(`, `)`; also tabs, no-break and zero-width spaces and
/// byte-order marks, which spreadsheets leave in exported numbers). The
/// trunk-prefix notation `+33 (0)1 …` drops its `(0)`. Returns whether it
/// started with `+`.
fn clean(s: &str) -> Result<(bool, Cow<'_, str>), NumberError> {
    let s = s.trim_matches(|c: char| c.is_whitespace() || is_invisible(c));
    let (plus, body) = match s.strip_prefix('+') {
        Some(b) => (true, b),
        None => (false, s),
    };
    // What dialers send (digits only) is borrowed: the copy was a tenth of
    // a decision.
    if !body.is_empty() && body.bytes().all(|b| b.is_ascii_digit()) {
        return Ok((plus, Cow::Borrowed(body)));
    }
    let mut digits = String::with_capacity(body.len());
    let mut rest = body;
    while let Some(c) = rest.chars().next() {
        if plus && !digits.is_empty() && rest.starts_with("(0)") {
            rest = &rest[3..];
            continue;
        }
        match c {
            '0'..='9' => digits.push(c),
            ' ' | '.' | '-' | '(' | ')' | '\t' => {}
            c if c.is_whitespace() || is_invisible(c) => {}
            _ => return Err(NumberError::BadCharacters),
        }
        rest = &rest[c.len_utf8()..];
    }
    if digits.is_empty() {
        return Err(NumberError::Empty);
    }
    Ok((plus, Cow::Owned(digits)))
}

/// Characters with no glyph that editors and spreadsheets put around text.
fn is_invisible(c: char) -> bool {
    matches!(c, '\u{feff}' | '\u{200b}'..='\u{200d}' | '\u{2060}')
}

/// French national format (`0` + 9 digits) to E.164, including the
/// overseas departments whose national numbers belong to other country
/// codes (rules.md, "Overseas numbers").
fn fr_national(nsn: &str) -> Result<u64, NumberError> {
    // nsn: the 9 digits after the trunk prefix 0
    if nsn.len() != 9 {
        return Err(if nsn.len() < 9 {
            NumberError::TooShort
        } else {
            NumberError::TooLong
        });
    }
    const OVERSEAS: &[(&str, u64)] = &[
        ("262", 262),
        ("263", 262),
        ("692", 262),
        ("693", 262),
        ("269", 262),
        ("639", 262),
        ("590", 590),
        ("690", 590),
        ("691", 590),
        ("594", 594),
        ("694", 594),
        ("596", 596),
        ("696", 596),
        ("697", 596),
        ("7090", 590),
        ("7091", 596),
        ("70920", 262),
        ("70921", 262),
        ("70922", 262),
        ("70923", 262),
        ("70930", 594),
        ("70931", 594),
        ("70932", 594),
        ("70933", 594),
        ("70935", 262),
        ("70936", 262),
        ("70937", 262),
    ];
    let cc = OVERSEAS
        .iter()
        .find(|(p, _)| nsn.starts_with(p))
        .map(|(_, cc)| *cc)
        .unwrap_or(33);
    let n: u64 = nsn.parse().map_err(|_| NumberError::BadCharacters)?;
    let e = cc * 1_000_000_000 + n;
    // The overseas ranges and the metropolitan plan are checked like any
    // E.164 number.
    plan::check(&e.to_string())?;
    Ok(e)
}

fn check_e164(d: &str) -> Result<E164, NumberError> {
    if d.starts_with('0') {
        return Err(NumberError::Invalid("a country code never starts with 0"));
    }
    if d.len() > 15 {
        return Err(NumberError::TooLong);
    }
    if d.len() < 7 {
        return Err(NumberError::TooShort);
    }
    plan::check(d)?;
    let n: u64 = d.parse().map_err(|_| NumberError::BadCharacters)?;
    Ok(E164(n))
}

/// The state a Brazilian DDD (area code) belongs to, `None` when the DDD
/// is not assigned (Anatel plan; DDD 61 serves the Federal District and the
/// Goiás towns around it).
pub fn brazil_ddd_assigned(ddd: u16) -> Option<&'static str> {
    Some(match ddd {
        11..=19 => "BR-SP",
        21 | 22 | 24 => "BR-RJ",
        27 | 28 => "BR-ES",
        31..=35 | 37 | 38 => "BR-MG",
        41..=46 => "BR-PR",
        47..=49 => "BR-SC",
        51 | 53..=55 => "BR-RS",
        61 => "BR-DF&BR-GO",
        62 | 64 => "BR-GO",
        63 => "BR-TO",
        65 | 66 => "BR-MT",
        67 => "BR-MS",
        68 => "BR-AC",
        69 => "BR-RO",
        71 | 73..=75 | 77 => "BR-BA",
        79 => "BR-SE",
        81 | 87 => "BR-PE",
        82 => "BR-AL",
        83 => "BR-PB",
        84 => "BR-RN",
        85 | 88 => "BR-CE",
        86 | 89 => "BR-PI",
        91 | 93 | 94 => "BR-PA",
        92 | 97 => "BR-AM",
        95 => "BR-RR",
        96 => "BR-AP",
        98 | 99 => "BR-MA",
        _ => return None,
    })
}

/// Parses a number written as E.164 (`+33162000000`), digits with a
/// country code (`33162000000`), an international prefix (`0033…`,
/// `011…`) or national format read with `country` (`01 62 00 00 00`),
/// or a URI whose user part is one of those.
pub fn parse(input: &str, country: Country) -> Result<E164, NumberError> {
    let (plus, d) = clean(user_part(input))?;
    parse_clean(plus, &d, country)
}

/// [`parse`] of a dial string [`clean`] has read. Without `+`, a number is
/// read in this order: the country's international prefix, then its
/// national format (its trunk prefix, or the national length where it has
/// none), then as digits that start with a country code. The international
/// prefixes and trunk forms are those of the national plans as notified to
/// the ITU (libphonenumber carries the same).
fn parse_clean(plus: bool, d: &str, country: Country) -> Result<E164, NumberError> {
    if plus {
        return check_e164(d);
    }
    let national = |nsn: &str| check_e164(&format!("{}{nsn}", country.calling_code()));
    match country {
        Country::FR => {
            if let Some(intl) = d.strip_prefix("00") {
                check_e164(intl)
            } else if let Some(nsn) = d.strip_prefix('0') {
                Ok(E164(fr_national(nsn)?))
            } else {
                check_e164(d)
            }
        }
        Country::US | Country::CA => {
            if let Some(intl) = d.strip_prefix("011") {
                check_e164(intl)
            } else if d.len() == 10 && !d.starts_with(['0', '1']) {
                national(d)
            } else {
                check_e164(d)
            }
        }
        // No trunk prefix: national numbers are 9 digits starting 5-9
        // (or 400, see `plan::spain_leads`).
        Country::ES => {
            if let Some(intl) = d.strip_prefix("00") {
                check_e164(intl)
            } else if d.len() == 9 && plan::spain_leads(d.as_bytes()) {
                national(d)
            } else {
                check_e164(d)
            }
        }
        // 0011 and the carriers' 0014-0019; 13, 1300, 1800, 1900 numbers
        // are dialled without the trunk prefix.
        Country::AU => {
            if let Some(intl) = strip_any(d, &["0011", "0014", "0015", "0016", "0018", "0019"]) {
                check_e164(intl)
            } else if let Some(nsn) = d.strip_prefix('0') {
                national(nsn)
            } else if (d.starts_with("13") && (d.len() == 6 || d.len() == 10))
                || ((d.starts_with("18") || d.starts_with("19")) && d.len() == 10)
            {
                national(d)
            } else {
                check_e164(d)
            }
        }
        // 00 and 0 are followed by a two-digit carrier selection code for
        // international and long-distance calls: `00 21 …`, `0 21 11 …`.
        // A DDD never starts with 0, so `00` is always international. Ten or
        // eleven digits are a DDD and its subscriber number.
        Country::BR => {
            if let Some(rest) = d.strip_prefix("00") {
                check_e164(rest.get(2..).ok_or(NumberError::TooShort)?)
            } else if let Some(rest) = d.strip_prefix('0') {
                match rest.len() {
                    12 | 13 => national(&rest[2..]),
                    _ => national(rest),
                }
            } else if d.len() == 10 || d.len() == 11 {
                national(d)
            } else {
                check_e164(d)
            }
        }
        // Since 2021 every number has 10 digits (3xx mobile, 60X fixed),
        // dialled as is; 01800/01900 keep a 0; 005, 007, 009 and the
        // 00414/00444/00456 carriers are international.
        Country::CO => {
            if let Some(intl) = strip_any(d, &["00414", "00444", "00456", "005", "007", "009"]) {
                check_e164(intl)
            } else if let Some(nsn) = d.strip_prefix('0').filter(|n| n.starts_with('1')) {
                national(nsn)
            } else if d.len() == 10 && (d.starts_with('3') || d.starts_with("60")) {
                national(d)
            } else {
                check_e164(d)
            }
        }
        // 001, 007, 008, 009 are the carriers' international prefixes.
        Country::ID => {
            if let Some(intl) = strip_any(d, &["001", "007", "008", "009"]) {
                check_e164(intl)
            } else if let Some(nsn) = d.strip_prefix('0') {
                national(nsn)
            } else {
                check_e164(d)
            }
        }
    }
}

/// `d` without the first of `prefixes` it starts with.
fn strip_any<'a>(d: &'a str, prefixes: &[&str]) -> Option<&'a str> {
    prefixes.iter().find_map(|p| d.strip_prefix(p))
}

/// Parses a caller ID: like [`parse`], plus French short numbers.
pub fn parse_caller(input: &str, country: Country) -> Result<CallerNumber, NumberError> {
    let (plus, d) = clean(user_part(input))?;
    if !plus
        && country == Country::FR
        && d.len() == 4
        && (d.starts_with("30") || d.starts_with("31"))
    {
        return Ok(CallerNumber::FrShort(
            d.parse().map_err(|_| NumberError::BadCharacters)?,
        ));
    }
    parse_clean(plus, &d, country).map(CallerNumber::E164)
}

/// Categories of the French plan that matter for caller-ID rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FrCategory {
    /// "Numéros polyvalents vérifiés": the ranges reserved for automated calls.
    Npv,
    /// 08 numbers other than 089.
    Special,
    /// 089 premium-rate numbers.
    Premium,
    /// Short numbers 30xx / 31xx.
    Short,
    /// 01–05 and overseas geographic numbers.
    Geographic,
    /// 09 numbers outside the NPV ranges.
    NonGeographic,
    /// 06 / 07 and overseas mobile ranges: one natural person's terminal.
    Mobile,
    /// Not a French number.
    Foreign,
    /// A French code but no range we know.
    Unassigned,
}

/// NPV ranges (ARCEP 2022-1583), as national significant number prefixes.
const NPV: &[u64] = &[
    162, 163, 270, 271, 377, 378, 424, 425, 568, 569, 948, 949, 9475, 9476, 9477, 9478, 9479,
];

pub fn fr_category(n: CallerNumber) -> FrCategory {
    let e = match n {
        CallerNumber::FrShort(_) => return FrCategory::Short,
        CallerNumber::E164(e) => e,
    };
    let d = e.digits();
    if e.starts_with(33, 2) {
        let nsn = d - 33 * 1_000_000_000; // 9 digits
        let first = nsn / 100_000_000;
        let p3 = nsn / 1_000_000;
        let p4 = nsn / 100_000;
        if NPV.contains(&p3) || NPV.contains(&p4) {
            return FrCategory::Npv;
        }
        return match first {
            1..=5 => FrCategory::Geographic,
            6 | 7 => FrCategory::Mobile,
            8 if nsn / 10_000_000 == 89 => FrCategory::Premium,
            8 => FrCategory::Special,
            9 => FrCategory::NonGeographic,
            _ => FrCategory::Unassigned,
        };
    }
    for cc in [262u64, 590, 594, 596] {
        if e.starts_with(cc, 3) {
            let nsn = d - cc * 1_000_000_000;
            let p3 = nsn / 1_000_000;
            return match p3 {
                692 | 693 | 639 | 690 | 691 | 694 | 696 | 697 => FrCategory::Mobile,
                700..=799 => FrCategory::Mobile,
                262 | 263 | 269 | 590 | 594 | 596 => FrCategory::Geographic,
                _ => FrCategory::Unassigned,
            };
        }
    }
    FrCategory::Foreign
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<String, NumberError> {
        parse(s, Country::FR).map(|e| e.to_string())
    }

    /// Each country's national format, its international prefixes and the
    /// forms that are not its numbers: (country, dialled, E.164 or None).
    #[test]
    fn national_formats_of_every_rule_set_country() {
        let cases: &[(Country, &str, Option<&str>)] = &[
            // Canada: NANP like the US.
            (Country::CA, "416 555 0123", Some("+14165550123")),
            (Country::CA, "1 416 555 0123", Some("+14165550123")),
            (Country::CA, "011 33 1 62 00 00 00", Some("+33162000000")),
            // Spain: 9 digits, no trunk prefix.
            (Country::ES, "912 345 678", Some("+34912345678")),
            (Country::ES, "612345678", Some("+34612345678")),
            (Country::ES, "0033162000000", Some("+33162000000")),
            (Country::ES, "34912345678", Some("+34912345678")),
            (Country::ES, "412345678", None),
            (Country::ES, "400123456", Some("+34400123456")),
            // Australia: trunk 0, 13/1300/1800 without it, 0011 abroad.
            (Country::AU, "0412 345 678", Some("+61412345678")),
            (Country::AU, "(02) 9876 5432", Some("+61298765432")),
            (Country::AU, "1300 123 456", Some("+611300123456")),
            (Country::AU, "131 450", Some("+61131450")),
            (Country::AU, "0011 33 1 62 00 00 00", Some("+33162000000")),
            (Country::AU, "61412345678", Some("+61412345678")),
            (Country::AU, "0512345678", None),
            (Country::AU, "041234567", None),
            // Brazil: DDD + number, with trunk 0 and a carrier code or not.
            (Country::BR, "(11) 91234-5678", Some("+5511912345678")),
            (Country::BR, "21 2345-6789", Some("+552123456789")),
            (Country::BR, "011 91234 5678", Some("+5511912345678")),
            (Country::BR, "0 21 11 91234 5678", Some("+5511912345678")),
            (Country::BR, "0800 123 4567", Some("+558001234567")),
            (Country::BR, "00 21 33 1 62 00 00 00", Some("+33162000000")),
            (Country::BR, "5511912345678", Some("+5511912345678")),
            (Country::BR, "(20) 91234-5678", None),
            // Colombia: 10 digits as dialled, 01800 with its 0.
            (Country::CO, "301 234 5678", Some("+573012345678")),
            (Country::CO, "601 234 5678", Some("+576012345678")),
            (Country::CO, "01 8000 123 456", Some("+5718000123456")),
            (Country::CO, "009 33 1 62 00 00 00", Some("+33162000000")),
            (Country::CO, "00444 33 1 62 00 00 00", Some("+33162000000")),
            (Country::CO, "573012345678", Some("+573012345678")),
            (Country::CO, "0301234567", None),
            // Indonesia: trunk 0, 001/007/008/009 abroad.
            (Country::ID, "0812-3456-7890", Some("+6281234567890")),
            (Country::ID, "(021) 5550 1234", Some("+622155501234")),
            (Country::ID, "001 33 1 62 00 00 00", Some("+33162000000")),
            (Country::ID, "6281234567890", Some("+6281234567890")),
            (Country::ID, "0112345678", None),
        ];
        for (c, s, want) in cases {
            let got = parse(s, *c).map(|e| e.to_string()).ok();
            assert_eq!(got.as_deref(), *want, "{c:?} {s}");
        }
        for (name, c) in Country::NAMES.into_iter().zip(Country::ALL) {
            assert_eq!(name.parse::<Country>(), Ok(c));
            assert_eq!(name.to_ascii_lowercase().parse::<Country>(), Ok(c));
            // The config reads the same names.
            let v: Country = serde_json::from_str(&format!("\"{name}\"")).unwrap();
            assert_eq!(v, c);
        }
        let e = "XX".parse::<Country>().unwrap_err().to_string();
        assert_eq!(
            e,
            "unknown country `XX`: one of FR, US, CA, ES, AU, BR, CO, ID"
        );
    }

    #[test]
    fn parses_the_accepted_forms() {
        for s in [
            "+33162000000",
            "33162000000",
            "0162000000",
            "01 62 00 00 00",
            "01.62.00.00.00",
            "01-62-00-00-00",
            "0033162000000",
            "sip:+33162000000@carrier;user=phone",
            "sips:0162000000@x",
            "tel:+33-1-62-00-00-00;phone-context=x",
            "<sip:+33162000000@h>",
        ] {
            assert_eq!(p(s).as_deref(), Ok("+33162000000"), "{s}");
        }
        assert_eq!(
            parse("2015550123", Country::US).unwrap().to_string(),
            "+12015550123"
        );
        assert_eq!(
            parse("(201) 555-0123", Country::US).unwrap().to_string(),
            "+12015550123"
        );
        assert_eq!(
            parse("+1 201 555 0123", Country::FR).unwrap().to_string(),
            "+12015550123"
        );
        assert_eq!(
            parse("01133162000000", Country::US).unwrap().to_string(),
            "+33162000000"
        );
    }

    #[test]
    fn overseas_national_numbers_get_their_country_code() {
        for (nat, e164) in [
            ("0262123456", "+262262123456"),
            ("0692123456", "+262692123456"),
            ("0269123456", "+262269123456"),
            ("0639123456", "+262639123456"),
            ("0590123456", "+590590123456"),
            ("0691123456", "+590691123456"),
            ("0594123456", "+594594123456"),
            ("0694123456", "+594694123456"),
            ("0596123456", "+596596123456"),
            ("0697123456", "+596697123456"),
            ("0709012345", "+590709012345"),
            ("0709112345", "+596709112345"),
            ("0709212345", "+262709212345"),
            ("0709312345", "+594709312345"),
            ("0709352345", "+262709352345"),
            ("0612345678", "+33612345678"),
        ] {
            assert_eq!(p(nat).as_deref(), Ok(e164), "{nat}");
        }
    }

    #[test]
    fn rejects_malformed_numbers() {
        assert_eq!(p(""), Err(NumberError::Empty));
        assert_eq!(p("sip:@host"), Err(NumberError::Empty));
        assert_eq!(p("anonymous"), Err(NumberError::BadCharacters));
        assert_eq!(p("01620000"), Err(NumberError::TooShort));
        assert_eq!(p("016200000000"), Err(NumberError::TooLong));
        assert_eq!(p("+3316200000"), Err(NumberError::TooShort));
        assert_eq!(p("+1234567890123456"), Err(NumberError::TooLong));
        assert!(matches!(p("+0162000000"), Err(NumberError::Invalid(_))));
        // BOMs, no-break spaces and the (0) trunk notation are read.
        assert_eq!(p("\u{feff}+33612345678").as_deref(), Ok("+33612345678"));
        assert_eq!(
            p("06\u{a0}12\u{a0}34\u{a0}56\u{a0}78").as_deref(),
            Ok("+33612345678")
        );
        assert_eq!(p("+33 (0)6 12 34 56 78").as_deref(), Ok("+33612345678"));
        assert_eq!(p("12345"), Err(NumberError::TooShort));
        assert_eq!(p("+33 1 62 00 00 0x"), Err(NumberError::BadCharacters));
    }

    fn cat(s: &str) -> FrCategory {
        fr_category(parse_caller(s, Country::FR).unwrap())
    }

    #[test]
    fn every_npv_range_is_npv() {
        for prefix in [
            "0162", "0163", "0270", "0271", "0377", "0378", "0424", "0425", "0568", "0569", "0948",
            "0949",
        ] {
            assert_eq!(cat(&format!("{prefix}000000")), FrCategory::Npv, "{prefix}");
            assert_eq!(cat(&format!("{prefix}999999")), FrCategory::Npv, "{prefix}");
        }
        for prefix in ["09475", "09476", "09477", "09478", "09479"] {
            assert_eq!(cat(&format!("{prefix}00000")), FrCategory::Npv, "{prefix}");
        }
        // Neighbours of the NPV ranges are ordinary numbers.
        assert_eq!(cat("0161999999"), FrCategory::Geographic);
        assert_eq!(cat("0164000000"), FrCategory::Geographic);
        assert_eq!(cat("0947499999"), FrCategory::NonGeographic);
        assert_eq!(cat("0950000000"), FrCategory::NonGeographic);
    }

    #[test]
    fn categories_of_the_french_plan() {
        assert_eq!(cat("0142000099"), FrCategory::Geographic);
        assert_eq!(cat("0512345678"), FrCategory::Geographic);
        assert_eq!(cat("0612345678"), FrCategory::Mobile);
        assert_eq!(cat("0712345678"), FrCategory::Mobile);
        assert_eq!(cat("0692123456"), FrCategory::Mobile);
        assert_eq!(cat("0639123456"), FrCategory::Mobile);
        assert_eq!(cat("0690123456"), FrCategory::Mobile);
        assert_eq!(cat("0694123456"), FrCategory::Mobile);
        assert_eq!(cat("0696123456"), FrCategory::Mobile);
        assert_eq!(cat("0709012345"), FrCategory::Mobile);
        assert_eq!(cat("0262123456"), FrCategory::Geographic);
        assert_eq!(cat("0800123456"), FrCategory::Special);
        assert_eq!(cat("0899123456"), FrCategory::Premium);
        assert_eq!(cat("0890123456"), FrCategory::Premium);
        assert_eq!(cat("0912345678"), FrCategory::NonGeographic);
        assert_eq!(cat("3010"), FrCategory::Short);
        assert_eq!(cat("3199"), FrCategory::Short);
        assert_eq!(cat("+12015550123"), FrCategory::Foreign);
        assert_eq!(
            parse_caller("3210", Country::FR),
            Err(NumberError::TooShort)
        );
    }
}
