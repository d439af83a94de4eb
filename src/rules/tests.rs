//! The shipped rule files: they load, and each jurisdiction's values are
//! the research's (tables per jurisdiction live in `tests/jurisdictions.rs`).

use super::*;

#[test]
fn builtin_sets_load() {
    let lib = Library::builtin().unwrap();
    for s in ["fr", "us", "ca", "co", "br", "id", "au", "es"] {
        assert!(lib.sets.contains_key(s), "{s}");
    }
    // 50 states, DC and five territories; 13 provinces and territories;
    // 26 states and the Federal District.
    assert_eq!(lib.sets["us"].overlays.len(), 56);
    assert_eq!(lib.sets["ca"].overlays.len(), 13);
    assert_eq!(lib.sets["br"].overlays.len(), 27);
    assert!(lib.find("US-FL").is_some());
    assert!(lib.find("us-fl").is_some());
    assert!(lib.find("XX").is_none());
}

/// A callee's state or province is a jurisdiction of the set that covers
/// its country, whether its law adds rules or not: calls report it, and a
/// closure can name it. A region the numbering plan gains fails here, not
/// in a call.
#[test]
fn every_subdivision_a_number_can_have_is_a_jurisdiction_of_its_set() {
    let lib = Library::builtin().unwrap();
    for region in crate::numbering::subdivisions() {
        for id in region.split('&') {
            let country = id.split('-').next().unwrap();
            let set = lib
                .sets
                .values()
                .find(|s| s.covers(country))
                .unwrap_or_else(|| panic!("{id}: no set covers {country}"));
            let j = set
                .overlays
                .get(id)
                .unwrap_or_else(|| panic!("{id} is no overlay of `{}`", set.name));
            assert_eq!(j.parent.as_deref(), Some(&*set.national.id), "{id}");
        }
    }
    let ny = report::show(&lib, "US-NY", 2027).unwrap();
    assert!(
        ny.contains("no rule of its own: US's rules apply")
            && ny.contains("TCPA, 47 CFR 64.1200(c)(1)"),
        "{ny}"
    );
    assert!(
        !report::show(&lib, "US-FL", 2027)
            .unwrap()
            .contains("no rule of its own"),
        "an overlay with rules shows them"
    );
}

#[test]
fn caller_id_checks_are_named_as_files_write_them() {
    #[derive(serde::Deserialize)]
    struct One {
        check: CallerIdCheck,
    }
    for c in [CallerIdCheck::FrArcep, CallerIdCheck::Prefixes] {
        let read: One = toml::from_str(&format!("check = \"{}\"", c.name())).unwrap();
        assert_eq!(read.check, c);
    }
    let fr = report::show(&Library::builtin().unwrap(), "FR", 2027).unwrap();
    assert!(
        fr.contains("caller ID: fr-arcep — ARCEP décision 2022-1583"),
        "{fr}"
    );
}

#[test]
fn number_prefixes_read_and_print_as_written() {
    for ok in ["+34400", "+1", "+123456789012345"] {
        assert_eq!(ok.parse::<NumberPrefix>().unwrap().to_string(), ok);
    }
    assert_eq!(
        "34400".parse::<NumberPrefix>(),
        Err(BadPrefix::NoPlus("34400".into()))
    );
    for bad in ["+", "+0", "+34 400", "+1234567890123456", "+34a"] {
        assert_eq!(
            bad.parse::<NumberPrefix>(),
            Err(BadPrefix::Digits(bad.into())),
            "{bad}"
        );
    }
    let p: NumberPrefix = "+346".parse().unwrap();
    assert!(p.matches(crate::numbering::E164::from_digits(34_612_345_678)));
    assert!(!p.matches(crate::numbering::E164::from_digits(34_912_345_678)));
}
