//! Any text through the server's config parser and validation: it never panics, and
//! every refusal names the file.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    match fledge_server::config::ServerConfig::parse(text, "fuzz-config.yaml") {
        Ok(config) => {
            let _ = config.validate();
        }
        Err(e) => {
            let message = format!("{e:#}");
            assert!(message.contains("fuzz-config.yaml"), "the error names the file: {message}");
        }
    }
});
