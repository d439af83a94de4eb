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
