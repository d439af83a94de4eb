//! The shipped rule files: they load, and each jurisdiction's values are
//! the research's (tables per jurisdiction live in `tests/jurisdictions.rs`).

use super::*;

#[test]
fn builtin_sets_load() {
    let lib = Library::builtin().unwrap();
    for s in ["fr", "us", "ca", "co", "br", "id", "au", "es"] {
        assert!(lib.sets.contains_key(s), "{s}");
    }
    assert_eq!(lib.sets["us"].overlays.len(), 22);
    assert!(lib.find("US-FL").is_some());
    assert!(lib.find("us-fl").is_some());
    assert!(lib.find("XX").is_none());
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
