//! Any bytes through the spec parser: it never panics, and every refusal names the
//! origin and says what was wrong.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match fledge_spec::parse_spec_bytes(data, "fuzz.yaml") {
        Ok(spec) => {
            // An accepted spec survives its own JSON form.
            let json = serde_json::to_string(&spec).expect("a parsed spec serializes");
            fledge_spec::parse_spec(&json, "fuzz.json").expect("a parsed spec re-parses from JSON");
        }
        Err(e) => {
            assert!(!e.issues.is_empty(), "a refusal without an issue");
            let text = e.to_string();
            assert!(text.contains("fuzz.yaml"), "the message names the origin: {text}");
        }
    }
});
