//! Callee time zones by longest E.164 prefix.

use chrono_tz::Tz;
use rustc_hash::FxHashMap;
use std::sync::OnceLock;

use super::E164;

/// The zones a number may be in. The call must be allowed in every one.
pub type Zones = &'static [Tz];

/// French overseas ranges sharing a country code (rules.md): the
/// libphonenumber rows give both Mayotte and Réunion for +262.
const FR_OVERRIDES: &[(&str, &str)] = &[
    ("262262", "Indian/Reunion"),
    ("262263", "Indian/Reunion"),
    ("262692", "Indian/Reunion"),
    ("262693", "Indian/Reunion"),
    ("26270920", "Indian/Reunion"),
    ("26270921", "Indian/Reunion"),
    ("26270922", "Indian/Reunion"),
    ("26270923", "Indian/Reunion"),
    ("262269", "Indian/Mayotte"),
    ("262639", "Indian/Mayotte"),
    ("26270935", "Indian/Mayotte"),
    ("26270936", "Indian/Mayotte"),
    ("26270937", "Indian/Mayotte"),
];

/// Area codes NANPA put in service after the libphonenumber data was cut:
/// the zone of the codes they overlay (`nanp.txt`).
const NANP_OVERRIDES: &[(&str, &str)] = &[
    ("1436", "America/New_York"), // Ohio, overlay of 440
    ("1679", "America/Detroit"),  // Michigan, overlay of 313
    ("1861", "America/Chicago"),  // Illinois, overlay of 815/779
];

struct Table {
    /// (prefix length, prefix) → zones
    rows: FxHashMap<(u32, u64), Zones>,
    max_len: u32,
}

fn table() -> &'static Table {
    static T: OnceLock<Table> = OnceLock::new();
    T.get_or_init(|| {
        let mut rows: FxHashMap<(u32, u64), Zones> = FxHashMap::default();
        let mut max_len = 0;
        let mut add = |prefix: &str, zones: &str| {
            let tzs: Vec<Tz> = zones.split('&').filter_map(|z| z.parse().ok()).collect();
            if tzs.is_empty() || prefix.is_empty() {
                return;
            }
            let Ok(p) = prefix.parse::<u64>() else { return };
            max_len = max_len.max(prefix.len() as u32);
            rows.insert((prefix.len() as u32, p), Box::leak(tzs.into_boxed_slice()));
        };
        for line in include_str!("timezones.txt").lines() {
            if line.starts_with('#') {
                continue;
            }
            if let Some((p, z)) = line.split_once('|') {
                add(p, z);
            }
        }
        for (p, z) in FR_OVERRIDES.iter().chain(NANP_OVERRIDES) {
            add(p, z);
        }
        Table { rows, max_len }
    })
}

/// Builds the table (start-up, so that the first call does not pay for it).
pub(crate) fn warm() {
    let _ = table();
}

/// Zones of a callee, longest prefix first; UTC when nothing is known
/// (every country code in the table has a row, so that is rare).
pub fn callee_zones(n: E164) -> Zones {
    let t = table();
    let len = n.digits().checked_ilog10().unwrap_or(0) + 1;
    for l in (1..=t.max_len.min(len)).rev() {
        if let Some(z) = n.leading(l).and_then(|p| t.rows.get(&(l, p))) {
            return z;
        }
    }
    &[Tz::UTC]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::numbering::{parse, Country};

    fn zones(s: &str) -> Vec<String> {
        callee_zones(parse(s, Country::FR).unwrap())
            .iter()
            .map(|z| z.name().to_owned())
            .collect()
    }

    #[test]
    fn french_zones() {
        assert_eq!(zones("0142000000"), ["Europe/Paris"]);
        assert_eq!(zones("0612345678"), ["Europe/Paris"]);
        assert_eq!(zones("0262123456"), ["Indian/Reunion"]);
        assert_eq!(zones("0692123456"), ["Indian/Reunion"]);
        assert_eq!(zones("0269123456"), ["Indian/Mayotte"]);
        assert_eq!(zones("0639123456"), ["Indian/Mayotte"]);
        assert_eq!(zones("0590123456"), ["America/Guadeloupe"]);
        assert_eq!(zones("0594123456"), ["America/Cayenne"]);
        assert_eq!(zones("0596123456"), ["America/Martinique"]);
        assert_eq!(zones("+508412345"), ["America/Miquelon"]);
        assert_eq!(zones("+687123456"), ["Pacific/Noumea"]);
        assert_eq!(zones("+681721234"), ["Pacific/Wallis"]);
        assert_eq!(
            zones("+68987123456"),
            ["Pacific/Gambier", "Pacific/Marquesas", "Pacific/Tahiti"]
        );
    }

    #[test]
    fn nanp_longest_prefix_and_split_prefixes() {
        assert_eq!(zones("+12015550123"), ["America/New_York"]);
        assert_eq!(zones("+13105550123"), ["America/Los_Angeles"]);
        // 120830 (Idaho) is split between Mountain and Pacific time, while
        // the longer 1208304 is Pacific only and 1208321 Mountain only.
        assert_eq!(zones("+12083045555"), ["America/Los_Angeles"]);
        assert_eq!(zones("+12083215555"), ["America/Denver"]);
        let z = zones("+12083005555");
        assert_eq!(z, ["America/Boise", "America/Los_Angeles"]);
    }
}
