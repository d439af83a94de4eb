//! Which jurisdiction a number belongs to: its country (ISO 3166-1) and,
//! where the number tells, its subdivision (US state and Canadian
//! province from the NANP area code, Brazilian state from the DDD).

use super::{nanp, plan, E164};

/// A number's place, as the rule library matches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    /// ISO 3166-1 alpha-2 (`US`, `FR`), `NANP` for non-geographic NANP
    /// codes, or `+CC` for a country code this table does not name.
    pub country: &'static str,
    /// ISO 3166-2 subdivision(s) (`US-FL`; several joined by `&`).
    pub subdivision: Option<&'static str>,
}

/// Country calling codes → ISO 3166-1, for the countries a rule set may
/// cover (ITU-T E.164 assignments). Codes shared by several countries are
/// named after the first.
const CODES: &[(u16, &str)] = &[
    (7, "RU"),
    (20, "EG"),
    (27, "ZA"),
    (30, "GR"),
    (31, "NL"),
    (32, "BE"),
    (33, "FR"),
    (34, "ES"),
    (36, "HU"),
    (39, "IT"),
    (40, "RO"),
    (41, "CH"),
    (43, "AT"),
    (44, "GB"),
    (45, "DK"),
    (46, "SE"),
    (47, "NO"),
    (48, "PL"),
    (49, "DE"),
    (51, "PE"),
    (52, "MX"),
    (53, "CU"),
    (54, "AR"),
    (55, "BR"),
    (56, "CL"),
    (57, "CO"),
    (58, "VE"),
    (60, "MY"),
    (61, "AU"),
    (62, "ID"),
    (63, "PH"),
    (64, "NZ"),
    (65, "SG"),
    (66, "TH"),
    (81, "JP"),
    (82, "KR"),
    (84, "VN"),
    (86, "CN"),
    (90, "TR"),
    (91, "IN"),
    (92, "PK"),
    (212, "MA"),
    (213, "DZ"),
    (216, "TN"),
    (221, "SN"),
    (225, "CI"),
    (262, "RE"),
    (351, "PT"),
    (352, "LU"),
    (353, "IE"),
    (358, "FI"),
    (377, "MC"),
    (420, "CZ"),
    (502, "GT"),
    (503, "SV"),
    (504, "HN"),
    (505, "NI"),
    (506, "CR"),
    (507, "PA"),
    (508, "PM"),
    (509, "HT"),
    (590, "GP"),
    (591, "BO"),
    (593, "EC"),
    (594, "GF"),
    (595, "PY"),
    (596, "MQ"),
    (598, "UY"),
    (681, "WF"),
    (687, "NC"),
    (689, "PF"),
    (852, "HK"),
    (971, "AE"),
    (972, "IL"),
    (966, "SA"),
];

/// Textual `+CC` for the codes [`CODES`] does not name: built once.
fn unnamed(cc: u16) -> &'static str {
    use std::sync::OnceLock;
    static T: OnceLock<Vec<&'static str>> = OnceLock::new();
    let t = T.get_or_init(|| {
        (0..1000u16)
            .map(|c| &*Box::leak(format!("+{c}").into_boxed_str()))
            .collect()
    });
    t.get(usize::from(cc)).copied().unwrap_or("+?")
}

/// The region of a valid number.
pub fn region_of(n: E164) -> Region {
    let digits = n.digits();
    let len = digits.checked_ilog10().unwrap_or(0) + 1;
    let lead = |k: u32| n.leading(k).unwrap_or(0);
    let cc = match plan::country_code_of(digits, len) {
        Some(cc) => cc,
        None => {
            return Region {
                country: "+?",
                subdivision: None,
            }
        }
    };
    match cc {
        1 => {
            let npa = (lead(4) % 1000) as u16;
            match nanp::region(npa) {
                Some(r) => {
                    let first = r.split('&').next().unwrap_or(r);
                    match first.split_once('-') {
                        Some((c, _)) => Region {
                            // `c` borrows from the static table.
                            country: &first[..c.len()],
                            subdivision: Some(r),
                        },
                        None => Region {
                            country: r,
                            subdivision: None,
                        },
                    }
                }
                None => Region {
                    country: "NANP",
                    subdivision: None,
                },
            }
        }
        55 => Region {
            country: "BR",
            subdivision: super::brazil_ddd_assigned((lead(4) % 100) as u16),
        },
        _ => Region {
            country: CODES
                .iter()
                .find(|(c, _)| *c == cc)
                .map_or_else(|| unnamed(cc), |(_, iso)| *iso),
            subdivision: None,
        },
    }
}

/// Every subdivision string [`region_of`] can return, for compiling each
/// one's rules ahead of the calls.
pub fn subdivisions() -> Vec<&'static str> {
    let mut out: Vec<&'static str> = (200..1000u16).filter_map(nanp::region).collect();
    out.extend((11..100u16).filter_map(super::brazil_ddd_assigned));
    out.retain(|r| r.contains('-'));
    out.sort_unstable();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::numbering::{parse, Country};

    fn r(s: &str) -> (&'static str, Option<&'static str>) {
        let x = region_of(parse(s, Country::US).unwrap());
        (x.country, x.subdivision)
    }

    #[test]
    fn regions_of_numbers() {
        assert_eq!(r("+13055550123"), ("US", Some("US-FL")));
        assert_eq!(r("+14165550123"), ("CA", Some("CA-ON")));
        assert_eq!(r("+18675550123"), ("CA", Some("CA-YT&CA-NT&CA-NU")));
        assert_eq!(r("+18765550123"), ("JM", None));
        assert_eq!(r("+17875550123"), ("US", Some("US-PR")));
        assert_eq!(r("+18005550123"), ("NANP", None));
        assert_eq!(r("+5521987654321"), ("BR", Some("BR-RJ")));
        assert_eq!(r("+5561987654321"), ("BR", Some("BR-DF&BR-GO")));
        assert_eq!(r("+573001234567"), ("CO", None));
        assert_eq!(r("+33142000000"), ("FR", None));
        assert_eq!(r("+68987123456"), ("PF", None));
        assert_eq!(r("+4930123456"), ("DE", None));
        assert_eq!(r("+37212345678"), ("+372", None));
        assert!(subdivisions().contains(&"US-FL"));
        assert!(subdivisions().contains(&"BR-CE"));
    }
}
