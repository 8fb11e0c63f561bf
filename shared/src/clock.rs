//! Injectable wall clock, so token ages and expiries are testable without sleeping.

use std::sync::{Arc, Mutex, PoisonError};

use chrono::{DateTime, Utc};

/// Source of the current time.
///
/// Code that checks token ages or expiries takes a `Clock` instead of calling `Utc::now()`
/// directly, so tests can drive time forward deterministically (boundary cases such as
/// "age == max age" cannot be tested reliably with a real clock).
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// The current time in UTC.
    fn now(&self) -> DateTime<Utc>;

    /// The current time as whole seconds since the Unix epoch (the unit of token timestamps).
    fn unix_secs(&self) -> i64 {
        self.now().timestamp()
    }
}

/// The real system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(
        clippy::disallowed_methods,
        reason = "the one place that reads the wall clock"
    )]
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that only moves when told to; clones share the same time.
///
/// For tests: hand one clone to the code under test and keep another to `set`/`advance` it.
#[derive(Debug, Clone)]
pub struct ManualClock {
    now: Arc<Mutex<DateTime<Utc>>>,
}

impl ManualClock {
    /// A clock stopped at `at`.
    pub fn new(at: DateTime<Utc>) -> Self {
        Self {
            now: Arc::new(Mutex::new(at)),
        }
    }

    /// Move the clock to `at` (may go backwards, to test future-dated input).
    pub fn set(&self, at: DateTime<Utc>) {
        *self.now.lock().unwrap_or_else(PoisonError::into_inner) = at;
    }

    /// Move the clock by `by` (negative durations move it backwards).
    pub fn advance(&self, by: chrono::Duration) {
        let mut now = self.now.lock().unwrap_or_else(PoisonError::into_inner);
        *now += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        // A poisoned lock only means a test panicked while holding it; the stored time is
        // still a valid value, so keep going rather than cascading the panic.
        *self.now.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
#[allow(
    clippy::disallowed_methods,
    reason = "tests compare with the wall clock"
)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn manual_clock_clones_share_time_and_advance_without_sleeping() {
        let start = Utc
            .timestamp_opt(1_700_000_000, 0)
            .single()
            .expect("valid time");
        let clock = ManualClock::new(start);
        let other = clock.clone();
        other.advance(chrono::Duration::seconds(3600));
        assert_eq!(clock.unix_secs(), 1_700_003_600);
        clock.set(start);
        assert_eq!(other.now(), start);
    }

    #[test]
    fn system_clock_is_close_to_now() {
        let diff = (SystemClock.unix_secs() - Utc::now().timestamp()).abs();
        assert!(diff <= 1);
    }

    #[test]
    fn clocks_are_usable_as_trait_objects() {
        let clocks: Vec<Box<dyn Clock>> = vec![
            Box::new(SystemClock),
            Box::new(ManualClock::new(DateTime::<Utc>::UNIX_EPOCH)),
        ];
        assert_eq!(clocks[1].unix_secs(), 0);
    }
}
