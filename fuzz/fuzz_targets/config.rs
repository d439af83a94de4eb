//! Config parsing and validation on arbitrary text: an error or a config,
//! never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = callguard::config::Config::parse(text, std::path::Path::new("fuzz.toml"));
});
