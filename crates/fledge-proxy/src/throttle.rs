//! [`Throttle`]: a warning that may repeat on every request (an upstream whose TLS
//! certificate is wrong fails every connection) is logged at most once per interval
//! and key, with the count of those held back, so a bad endpoint cannot flood the
//! log.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most keys remembered; beyond it the memory starts afresh (a key then speaks at
/// once again, which only costs one more line).
const MAX_KEYS: usize = 1024;

/// Which repeated warnings may be logged now.
#[derive(Debug)]
pub(crate) struct Throttle {
    every: Duration,
    /// Per key: when it was last let through, and how many were held back since.
    seen: Mutex<HashMap<String, (Instant, u64)>>,
}

impl Throttle {
    /// Lets each key through at most once per `every`.
    pub(crate) fn new(every: Duration) -> Self {
        Self {
            every,
            seen: Mutex::default(),
        }
    }

    /// `Some(held_back)` when the warning for `key` is to be logged now (with how
    /// many were not since the last one), `None` when it is held back.
    pub(crate) fn allow(&self, key: &str) -> Option<u64> {
        let now = Instant::now();
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        match seen.get_mut(key) {
            Some((last, held)) if now.duration_since(*last) < self.every => {
                *held += 1;
                None
            }
            Some((last, held)) => {
                *last = now;
                Some(std::mem::take(held))
            }
            None => {
                if seen.len() >= MAX_KEYS {
                    seen.clear();
                }
                seen.insert(key.to_owned(), (now, 0));
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_speaks_once_per_interval_and_says_how_many_were_held_back() {
        let throttle = Throttle::new(Duration::from_secs(3600));
        assert_eq!(throttle.allow("a:443"), Some(0));
        assert_eq!(throttle.allow("a:443"), None);
        assert_eq!(throttle.allow("a:443"), None);
        assert_eq!(throttle.allow("b:443"), Some(0), "keys are apart");
        let always = Throttle::new(Duration::ZERO);
        assert_eq!(always.allow("a"), Some(0));
        assert_eq!(always.allow("a"), Some(0));
        let throttle = Throttle {
            every: Duration::from_millis(20),
            seen: Mutex::default(),
        };
        throttle.allow("a");
        throttle.allow("a");
        throttle.allow("a");
        std::thread::sleep(Duration::from_millis(25));
        assert_eq!(throttle.allow("a"), Some(2));
    }

    #[test]
    fn the_memory_is_bounded() {
        let throttle = Throttle::new(Duration::from_secs(3600));
        for i in 0..=MAX_KEYS {
            throttle.allow(&i.to_string());
        }
        assert!(throttle.seen.lock().unwrap().len() <= MAX_KEYS);
    }
}
