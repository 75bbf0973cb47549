//! [`Timestamp`]: the one way fledge holds a point in time, in the engine, the
//! store and the API alike.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// A point in time: milliseconds since the Unix epoch, UTC. Serialized as that
/// number; [`Display`](fmt::Display) writes RFC 3339.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(transparent)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// The latest point RFC 3339 can write (its years have four digits):
    /// 9999-12-31T23:59:59.999Z.
    pub const LATEST_WRITABLE: Timestamp = Timestamp(253_402_300_799_999);

    /// The point `ms` milliseconds after the epoch.
    pub const fn from_millis(ms: i64) -> Self {
        Timestamp(ms)
    }

    /// Milliseconds since the epoch.
    pub const fn as_millis(self) -> i64 {
        self.0
    }

    /// The current wall-clock time.
    pub fn now() -> Self {
        Self::from_system_time(SystemTime::now())
    }

    /// Converts a `SystemTime` (times before 1970 become negative).
    pub fn from_system_time(t: SystemTime) -> Self {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => Timestamp(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
            Err(e) => Timestamp(-i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX)),
        }
    }

    /// Converts back to a `SystemTime`.
    pub fn to_system_time(self) -> SystemTime {
        if self.0 >= 0 {
            UNIX_EPOCH + Duration::from_millis(self.0.unsigned_abs())
        } else {
            UNIX_EPOCH - Duration::from_millis(self.0.unsigned_abs())
        }
    }

    /// Milliseconds from `earlier` to `self`; 0 when `earlier` is not earlier (a clock
    /// that stepped back, e.g. after a fail-over to another machine).
    pub fn millis_since(self, earlier: Timestamp) -> u64 {
        u64::try_from(self.0.saturating_sub(earlier.0)).unwrap_or(0)
    }

    /// The point `ms` milliseconds later (saturating).
    pub fn plus_millis(self, ms: u64) -> Timestamp {
        Timestamp(self.0.saturating_add(i64::try_from(ms).unwrap_or(i64::MAX)))
    }

    /// The point `d` later (saturating).
    pub fn saturating_add(self, d: Duration) -> Self {
        self.plus_millis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
}

/// RFC 3339 in UTC with milliseconds, as the API writes every time. A point past
/// [`Timestamp::LATEST_WRITABLE`] (the end of a stage that lasts millennia) is
/// written as that point, and one before 1970 as the epoch: neither can be a real
/// event's time, and writing a time must never fail.
impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.clamp(0, Self::LATEST_WRITABLE.0).unsigned_abs();
        let at = UNIX_EPOCH + Duration::from_millis(ms);
        write!(f, "{}", humantime::format_rfc3339_millis(at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_written_as_rfc3339_and_writing_never_fails() {
        assert_eq!(Timestamp(0).to_string(), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            Timestamp(1_700_000_000_123).to_string(),
            "2023-11-14T22:13:20.123Z"
        );
        // The end of a stage that lasts millennia is as late as RFC 3339 goes.
        assert_eq!(Timestamp(i64::MAX).to_string(), "9999-12-31T23:59:59.999Z");
        assert_eq!(
            Timestamp::LATEST_WRITABLE.to_string(),
            "9999-12-31T23:59:59.999Z"
        );
        assert_eq!(Timestamp(i64::MIN).to_string(), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn system_times_round_trip_and_arithmetic_saturates() {
        let t = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        assert_eq!(Timestamp::from_system_time(t).to_system_time(), t);
        let before = UNIX_EPOCH - Duration::from_millis(5);
        assert_eq!(Timestamp::from_system_time(before), Timestamp(-5));
        assert_eq!(Timestamp(-5).to_system_time(), before);
        assert_eq!(Timestamp(10).millis_since(Timestamp(4)), 6);
        assert_eq!(Timestamp(4).millis_since(Timestamp(10)), 0);
        assert_eq!(Timestamp(i64::MAX - 1).plus_millis(5), Timestamp(i64::MAX));
        assert_eq!(
            Timestamp(1).saturating_add(Duration::MAX),
            Timestamp(i64::MAX)
        );
    }
}
