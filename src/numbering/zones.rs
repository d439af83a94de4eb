//! Callee time zones by longest E.164 prefix.

use chrono_tz::Tz;
use rustc_hash::FxHashMap;
use std::sync::OnceLock;

use super::E164;

/// The zones a number may be in. The call must be allowed in every one.
pub type Zones = &'static [Tz];

/// libphonenumber's rows: every NANP prefix, one row per other country.
const TIMEZONES: &str = include_str!("timezones.txt");
/// Geographic areas of the rule-set countries, curated from their
/// numbering plans (see the file's head for why not libphonenumber's).
const AREAS: &str = include_str!("areas.txt");

/// The `prefix|zones` rows of a table file.
fn rows_of(text: &'static str) -> impl Iterator<Item = (&'static str, &'static str)> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('|'))
}

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
        // The curated areas after libphonenumber's rows: a prefix both
        // name is the curated one.
        for (p, z) in rows_of(TIMEZONES).chain(rows_of(AREAS)) {
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

    /// A zone name the time-zone database does not know would be dropped
    /// from its row, and the call checked in fewer zones than the number
    /// may be in: every name of both files must parse.
    #[test]
    fn every_row_of_both_files_reads_whole() {
        let mut n = 0;
        for (prefix, zones) in rows_of(TIMEZONES).chain(rows_of(AREAS)) {
            assert!(
                !prefix.is_empty() && prefix.bytes().all(|b| b.is_ascii_digit()),
                "{prefix}"
            );
            for z in zones.split('&') {
                assert!(z.parse::<Tz>().is_ok(), "{prefix}: unknown zone {z}");
            }
            n += 1;
        }
        assert!(n > 2300, "{n} rows");
    }

    /// Landlines are in their area's zone; a mobile, whose number does not
    /// tell where it is, in every zone of its country.
    #[test]
    fn geographic_areas_of_the_rule_set_countries() {
        let all_au = zones("+61412345678");
        assert_eq!(all_au.len(), 8, "{all_au:?}");
        assert_eq!(zones("+61299998888"), ["Australia/Sydney"]);
        assert_eq!(
            zones("+61398765432"),
            ["Australia/Melbourne", "Australia/Hobart"]
        );
        // Queensland keeps no daylight saving: Brisbane, not Sydney.
        assert_eq!(zones("+61733334444"), ["Australia/Brisbane"]);
        assert_eq!(
            zones("+61755361234"),
            ["Australia/Brisbane", "Australia/Sydney"]
        );
        assert!(zones("+61892221234").contains(&"Australia/Perth".to_owned()));
        assert!(zones("+61891641234").contains(&"Indian/Christmas".to_owned()));
        assert!(zones("+61265998123").contains(&"Australia/Lord_Howe".to_owned()));
        assert_eq!(zones("+61385001234").len(), 2, "03 8 is Victoria");
        assert_eq!(zones("+61851234567").len(), 8, "08 5: every zone");

        assert_eq!(zones("+34912345678"), ["Europe/Madrid"]);
        assert_eq!(zones("+34971123456"), ["Europe/Madrid"]);
        assert_eq!(zones("+34928123456"), ["Atlantic/Canary"]);
        assert_eq!(zones("+34822123456"), ["Atlantic/Canary"]);
        assert_eq!(zones("+34925123456"), ["Europe/Madrid"]);
        assert_eq!(zones("+34612345678"), ["Atlantic/Canary", "Europe/Madrid"]);
        assert_eq!(zones("+34900123456"), ["Atlantic/Canary", "Europe/Madrid"]);

        assert_eq!(zones("+5521987654321"), ["America/Sao_Paulo"]);
        assert_eq!(zones("+558532223333"), ["America/Fortaleza"]);
        assert_eq!(zones("+556733334444"), ["America/Campo_Grande"]);
        assert_eq!(zones("+559133334444"), ["America/Belem"]);
        assert_eq!(zones("+5568999998888"), ["America/Rio_Branco"]);
        assert_eq!(
            zones("+558133334444"),
            ["America/Noronha", "America/Recife"]
        );

        assert_eq!(zones("+62215551234"), ["Asia/Jakarta"]);
        assert_eq!(zones("+62361234567"), ["Asia/Makassar"]);
        assert_eq!(zones("+62411234567"), ["Asia/Makassar"]);
        assert_eq!(zones("+62561734567"), ["Asia/Pontianak"]);
        assert_eq!(zones("+62967534567"), ["Asia/Jayapura"]);
        assert_eq!(zones("+6281234567890").len(), 3, "a mobile: every zone");

        assert_eq!(zones("+573001234567"), ["America/Bogota"]);
    }

    /// North American overlays carry every zone of the code they overlay,
    /// and the zones libphonenumber's rows get wrong are mended.
    #[test]
    fn nanp_overlays_and_mended_zones() {
        assert_eq!(
            zones("+14485550123"),
            ["America/New_York", "America/Chicago"]
        );
        assert_eq!(
            zones("+14585550123"),
            ["America/Los_Angeles", "America/Denver"]
        );
        assert_eq!(
            zones("+17785550123"),
            [
                "America/Vancouver",
                "America/Edmonton",
                "America/Dawson_Creek"
            ]
        );
        assert_eq!(zones("+16045550123"), ["America/Vancouver"]);
        // Saskatchewan keeps no daylight saving: Regina, not Winnipeg.
        assert_eq!(zones("+14745550123"), ["America/Regina"]);
        assert_eq!(zones("+13065550123"), ["America/Regina"]);
        assert_eq!(
            zones("+12507825550"),
            ["America/Edmonton", "America/Dawson_Creek"]
        );
        assert_eq!(zones("+18676675550"), ["America/Whitehorse"]);
        assert_eq!(zones("+18679795550"), ["America/Toronto"]);
        assert_eq!(zones("+18672225550").len(), 4);
        assert_eq!(zones("+19075815550"), ["America/Adak", "America/Anchorage"]);
        assert_eq!(zones("+18505550123"), ["America/New_York"]);
        assert_eq!(zones("+18502005550"), ["America/Chicago"]);
    }
}
