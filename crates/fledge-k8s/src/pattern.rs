//! The `pattern` keyword of OpenAPI schemas, checked with the `regex` crate.

use std::cell::RefCell;
use std::collections::HashMap;

use regex::Regex;

thread_local! {
    static CACHE: RefCell<HashMap<String, Option<Regex>>> = RefCell::new(HashMap::new());
}

/// Whether `text` matches `pattern` (unanchored, as in ECMA-262); `None` when the
/// pattern uses a feature the `regex` crate lacks (look-around, back-references), so
/// the caller can skip it rather than guess.
pub fn matches(pattern: &str, text: &str) -> Option<bool> {
    CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        let re = cache
            .entry(pattern.to_owned())
            .or_insert_with(|| Regex::new(pattern).ok());
        re.as_ref().map(|re| re.is_match(text))
    })
}
