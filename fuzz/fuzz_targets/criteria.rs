//! Any text through the criteria language: it never panics, an error's offset lies
//! inside the text, and what parses prints back to something that parses the same.
#![no_main]

use fledge_spec::Criterion;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    match Criterion::parse(text) {
        Ok(c) => {
            let shown = c.to_string();
            let again = Criterion::parse(&shown)
                .unwrap_or_else(|e| panic!("`{shown}` (from `{text}`) does not re-parse: {e}"));
            assert_eq!(again.to_string(), shown);
        }
        Err(e) => {
            assert!(e.offset <= text.chars().count(), "offset {} past the end of {text:?}", e.offset);
            assert!(!e.to_string().is_empty());
        }
    }
});
