//! Number parsing: no panic; a parsed number is valid E.164 that parses
//! back to itself.
#![no_main]

use callguard::numbering::{self, Country};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    for country in Country::ALL {
        if let Ok(n) = numbering::parse(s, country) {
            let text = n.to_string();
            assert!(text.len() <= 16, "{text}");
            assert_eq!(numbering::parse(&text, country), Ok(n), "{s:?}");
            let _ = numbering::callee_zones(n);
        }
        let _ = numbering::parse_caller(s, country);
    }
});
