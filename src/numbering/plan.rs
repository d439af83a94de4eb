//! Which E.164 numbers exist: the assigned country codes (ITU-T E.164
//! list of assigned codes), the length of the national number in each
//! country where it is fixed or bounded, and the structure of the
//! numbering plans of the jurisdictions callguard has rule sets for.
//!
//! A number that fails here is refused as `invalid_callee` (or as an
//! invalid caller ID): a call to it cannot be placed lawfully anyway, and a
//! caller ID that cannot be called back breaks 47 CFR 64.1601(e) and
//! ARCEP's rules alike. The checks are integer and byte comparisons: they
//! run on every call.

use super::NumberError;

/// Country codes assigned by the ITU (E.164 list of assigned country codes,
/// including the shared codes of global services: 800, 808, 870, 878,
/// 881–883, 888, 979, 991). Spare and withdrawn codes (e.g. 259, 384, 388,
/// 671, 684, 693–699, 801–807, 871–874) are absent.
const CC2: &[u16] = &[
    20, 27, 30, 31, 32, 33, 34, 36, 39, 40, 41, 43, 44, 45, 46, 47, 48, 49, 51, 52, 53, 54, 55, 56,
    57, 58, 60, 61, 62, 63, 64, 65, 66, 81, 82, 84, 86, 90, 91, 92, 93, 94, 95, 98,
];

fn cc3_assigned(cc: u16) -> bool {
    matches!(cc,
        211 | 212 | 213 | 216 | 218 | 220..=258 | 260..=269 | 290 | 291 | 297..=299
        | 350..=359 | 370..=383 | 385..=387 | 389
        | 420 | 421 | 423
        | 500..=509 | 590..=599
        | 670 | 672..=683 | 685..=692
        | 800 | 808 | 850 | 852 | 853 | 855 | 856 | 870 | 878 | 880..=883 | 886 | 888
        | 960..=968 | 970..=977 | 979 | 991..=996 | 998)
}

/// The country code that `digits` (E.164, no `+`) starts with, and its
/// length; `None` when no assigned code matches.
pub fn country_code(digits: &str) -> Option<(u16, usize)> {
    let b = digits.as_bytes();
    let num = |n: usize| -> Option<u16> {
        (b.len() > n).then(|| {
            b[..n]
                .iter()
                .fold(0u16, |a, d| a * 10 + u16::from(d - b'0'))
        })
    };
    match b.first()? {
        b'1' => return Some((1, 1)),
        b'7' => return Some((7, 1)),
        _ => {}
    }
    if let Some(cc) = num(2).filter(|c| CC2.contains(c)) {
        return Some((cc, 2));
    }
    num(3).filter(|c| cc3_assigned(*c)).map(|cc| (cc, 3))
}

/// [`country_code`] of a number held as an integer of `len` digits.
pub fn country_code_of(digits: u64, len: u32) -> Option<u16> {
    let lead = |k: u32| (len > k).then(|| (digits / 10u64.pow(len - k)) as u16);
    match lead(1)? {
        1 => return Some(1),
        7 => return Some(7),
        _ => {}
    }
    if let Some(cc) = lead(2).filter(|c| CC2.contains(c)) {
        return Some(cc);
    }
    lead(3).filter(|c| cc3_assigned(*c))
}

/// Length bounds of the national significant number, where the national
/// plan fixes or bounds it (ITU-T national numbering plans as notified).
/// Countries absent here get the E.164 bounds: 4 digits up to 15 in all.
fn nsn_lengths(cc: u16) -> Option<(usize, usize)> {
    Some(match cc {
        1 | 7 | 52 | 58 | 90 | 91 | 98 => (10, 10),
        20 => (8, 10),
        27 | 40 | 41 | 48 | 56 | 93 | 94 => (9, 9),
        30 => (10, 10),
        31 => (9, 9),
        32 => (8, 9),
        33 | 34 | 262 | 590 | 594 | 596 => (9, 9),
        36 => (8, 9),
        39 => (6, 11),
        43 => (4, 13),
        44 => (7, 10),
        45 | 65 => (8, 8),
        46 => (7, 13),
        47 => (5, 8),
        49 => (6, 13),
        51 => (8, 9),
        53 => (6, 8),
        54 => (10, 11),
        55 => (9, 11),
        57 => (10, 11),
        60 | 63 | 64 | 82 => (8, 10),
        61 => (6, 10),
        62 => (8, 12),
        66 => (8, 9),
        81 | 84 | 92 => (9, 10),
        86 => (10, 11),
        95 => (7, 10),
        508 | 681 | 687 => (6, 6),
        689 => (8, 8),
        _ => return None,
    })
}

/// Checks `digits` (E.164, country code first, no `+`) against the plan of
/// its country. The caller has already checked that it is all digits, does
/// not start with 0 and has at most 15 digits.
pub fn check(digits: &str) -> Result<(), NumberError> {
    let (cc, cc_len) = country_code(digits).ok_or(NumberError::Invalid("no such country code"))?;
    let nsn = &digits[cc_len..];
    let (min, max) = nsn_lengths(cc).unwrap_or((4, 15 - cc_len));
    if nsn.len() < min {
        return Err(NumberError::TooShort);
    }
    if nsn.len() > max {
        return Err(NumberError::TooLong);
    }
    let nsn = nsn.as_bytes();
    match cc {
        1 => nanp(nsn),
        33 => france(nsn),
        262 => overseas(nsn, &["262", "263", "269", "639", "692", "693", "709"]),
        590 => overseas(nsn, &["590", "690", "691", "709"]),
        594 => overseas(nsn, &["594", "694", "709"]),
        596 => overseas(nsn, &["596", "696", "697", "709"]),
        34 => spain(nsn),
        55 => brazil(nsn),
        57 => colombia(nsn),
        61 => australia(nsn),
        62 => indonesia(nsn),
        _ => Ok(()),
    }
}

/// NANP (ATIS-0300051, NANP Numbering Resource Assignment Guidelines): a
/// 3-digit area code (NPA) and a 3-digit exchange (NXX), each starting with
/// 2–9, neither an N11 service code; the area code must be one NANPA has
/// put in service (the geographic codes of the embedded time-zone table,
/// plus the non-geographic codes below).
fn nanp(nsn: &[u8]) -> Result<(), NumberError> {
    let (npa, nxx) = (&nsn[..3], &nsn[3..6]);
    if npa[0] < b'2' {
        return Err(NumberError::Invalid("NANP area codes start with 2-9"));
    }
    if npa[1] == b'1' && npa[2] == b'1' {
        return Err(NumberError::Invalid(
            "N11 codes are service codes (211-911), not area codes",
        ));
    }
    if nxx[0] < b'2' {
        return Err(NumberError::Invalid("NANP exchange codes start with 2-9"));
    }
    if nxx[1] == b'1' && nxx[2] == b'1' {
        return Err(NumberError::Invalid(
            "N11 codes are service codes, not exchange codes",
        ));
    }
    let npa = npa.iter().fold(0u16, |a, d| a * 10 + u16::from(d - b'0'));
    if !super::nanp::area_code_in_service(npa) {
        return Err(NumberError::Invalid("no such NANP area code"));
    }
    Ok(())
}

/// France (ARCEP plan): 9 digits after +33, the first 1–9 (01–05
/// geographic, 06/07 mobile, 08 special, 09 non-geographic).
fn france(nsn: &[u8]) -> Result<(), NumberError> {
    if nsn[0] == b'0' {
        return Err(NumberError::Invalid(
            "after +33 the trunk prefix 0 is dropped",
        ));
    }
    Ok(())
}

/// The overseas departments that have their own country code: 9 digits in
/// one of the ranges ARCEP assigned to them (rules.md, "Overseas numbers").
fn overseas(nsn: &[u8], ranges: &[&str]) -> Result<(), NumberError> {
    if ranges.iter().any(|r| nsn.starts_with(r.as_bytes())) {
        Ok(())
    } else {
        Err(NumberError::Invalid(
            "not in a range assigned to this overseas territory",
        ))
    }
}

/// Spain (CNMC plan): 9 digits starting 5–9 (8/9 fixed, 6/7 mobile, 5
/// corporate; 800/900 freephone).
fn spain(nsn: &[u8]) -> Result<(), NumberError> {
    if !spain_leads(nsn) {
        return Err(NumberError::Invalid(
            "Spanish numbers start with 5-9 or 400",
        ));
    }
    Ok(())
}

/// Whether a Spanish national number opens as an assigned range does:
/// 5–9, or 400, the code the Ministry proposed for commercial calls under
/// Ley 10/2025 (jurisdictions.md E4, E5). Without it, a rule requiring that
/// code (`check = "prefixes"`) could never be met: every caller ID in it
/// would be refused as no number at all.
pub(crate) fn spain_leads(nsn: &[u8]) -> bool {
    nsn.first().is_some_and(|&b| b >= b'5') || nsn.starts_with(b"400")
}

/// Brazil (Anatel plan): a 2-digit DDD area code from the assigned list,
/// then 9 digits starting with 9 (mobile) or 8 digits starting 2–5
/// (fixed); 0800/0300-style numbers are 800/300 + 6–7 digits.
fn brazil(nsn: &[u8]) -> Result<(), NumberError> {
    if matches!(&nsn[..3], b"800" | b"300" | b"303" | b"400") && (9..=10).contains(&nsn.len()) {
        return Ok(());
    }
    let ddd = u16::from(nsn[0] - b'0') * 10 + u16::from(nsn[1] - b'0');
    if super::brazil_ddd_assigned(ddd).is_none() {
        return Err(NumberError::Invalid("no such Brazilian area code (DDD)"));
    }
    match (nsn.len(), nsn[2]) {
        (11, b'9') => Ok(()),
        (10, b'2'..=b'5') => Ok(()),
        (11, _) => Err(NumberError::Invalid(
            "Brazilian 9-digit subscriber numbers are mobiles and start with 9",
        )),
        _ => Err(NumberError::Invalid(
            "Brazilian fixed numbers have 8 digits starting 2-5 after the DDD",
        )),
    }
}

/// Colombia (CRC plan since 2021): 10 digits, mobile 3xx or fixed 60X
/// (X the region, 1–8); 01800/01900 numbers are 1800/1900 + 7 digits.
fn colombia(nsn: &[u8]) -> Result<(), NumberError> {
    match nsn.len() {
        10 if nsn[0] == b'3' => Ok(()),
        10 if nsn[0] == b'6' && nsn[1] == b'0' && (b'1'..=b'8').contains(&nsn[2]) => Ok(()),
        11 if nsn.starts_with(b"1800") || nsn.starts_with(b"1900") => Ok(()),
        _ => Err(NumberError::Invalid(
            "Colombian numbers are 3xx (mobile) or 60X (fixed) with 10 digits",
        )),
    }
}

/// Australia (ACMA plan): 9 digits after +61 starting 2, 3, 7, 8
/// (geographic) or 4 (mobile); 1300/1800/1900 + 6 digits; 13 + 4 digits.
fn australia(nsn: &[u8]) -> Result<(), NumberError> {
    match nsn.len() {
        9 if matches!(nsn[0], b'2' | b'3' | b'4' | b'7' | b'8') => Ok(()),
        10 if matches!(&nsn[..4], b"1300" | b"1800" | b"1900") => Ok(()),
        6 if nsn.starts_with(b"13") => Ok(()),
        _ => Err(NumberError::Invalid(
            "Australian numbers have 9 digits starting 2, 3, 4, 7 or 8",
        )),
    }
}

/// Indonesia (Kominfo plan): a national number starting 2–9 (8 mobile,
/// the others fixed area codes), 8 to 12 digits.
fn indonesia(nsn: &[u8]) -> Result<(), NumberError> {
    if nsn[0] < b'2' {
        return Err(NumberError::Invalid("Indonesian numbers start with 2-9"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn country_codes() {
        assert_eq!(country_code("12015550123"), Some((1, 1)));
        assert_eq!(country_code("33162000000"), Some((33, 2)));
        assert_eq!(country_code("262262123456"), Some((262, 3)));
        assert_eq!(country_code("68987123456"), Some((689, 3)));
        assert_eq!(country_code("2591234567"), None, "259 is spare");
        assert_eq!(country_code("3841234567"), None, "384 is spare");
        assert_eq!(country_code("28012345678"), None);
    }

    #[test]
    fn nanp_structure() {
        for (n, ok) in [
            ("12015550123", true),
            ("11235550123", false), // area code starting with 1
            ("10235550123", false), // area code starting with 0
            ("19115550123", false), // N11 area code
            ("12121230123", false), // exchange starting with 1
            ("12120230123", false), // exchange starting with 0
            ("12124110123", false), // N11 exchange
            ("12222220123", false), // 222 is not in service
            ("18005550123", true),  // toll free
            ("14165550123", true),  // Toronto
            ("18095550123", true),  // Dominican Republic
        ] {
            assert_eq!(check(n).is_ok(), ok, "{n}: {:?}", check(n));
        }
    }

    #[test]
    fn national_plans() {
        for (n, ok) in [
            ("33162000000", true),
            ("33062000000", false),
            ("262692123456", true),
            ("262123456789", false),
            ("590690123456", true),
            ("34612345678", true),
            ("34412345678", false),
            ("34400123456", true), // the proposed commercial code (Ley 10/2025)
            ("5511987654321", true), // São Paulo mobile
            ("551133334444", true), // São Paulo fixed
            ("552033334444", false), // DDD 20 does not exist
            ("5511887654321", false), // 9-digit number not starting with 9
            ("573001234567", true),
            ("576011234567", true),
            ("575011234567", false),
            ("61212345678", true),
            ("61412345678", true),
            ("61612345678", false),
            ("6281234567890", true),
            ("6212345678", false),
            ("491701234567", true),
        ] {
            assert_eq!(check(n).is_ok(), ok, "{n}: {:?}", check(n));
        }
    }
}
