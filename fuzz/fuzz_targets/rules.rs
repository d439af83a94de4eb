//! Rule files (`rules/*.toml` and an operator's own): an error that names
//! the file, or a library whose every jurisdiction can be listed and shown
//! for any year the calendars cover, never a panic.
#![no_main]

use callguard::rules::{calendar, report, Library};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&year, text)) = data.split_first() else {
        return;
    };
    let path = callguard_fuzz::scratch_dir().join(format!("rules-{}.toml", std::process::id()));
    if std::fs::write(&path, text).is_err() {
        return;
    }
    let Ok(lib) = Library::check_file(&path) else {
        return;
    };
    let _ = report::list(&lib);
    let span = calendar::LAST_YEAR - calendar::FIRST_YEAR + 1;
    let year = calendar::FIRST_YEAR + i32::from(year) % span;
    let ids: Vec<String> = lib
        .sets
        .values()
        .flat_map(|s| s.jurisdictions())
        .map(|j| j.id.to_string())
        .collect();
    for id in ids {
        assert!(
            report::show(&lib, &id, year).is_some(),
            "{id} listed, not shown"
        );
    }
});
