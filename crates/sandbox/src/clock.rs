//! The sandbox's notion of "now": wall-clock time plus an offset that tests can move forward,
//! so that expiry rules (an Axle authCode dies after 10 minutes, a Canopy interval must be at
//! least 30 days, …) can be exercised without waiting.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, Utc};

/// Shared, cheaply clonable clock. Every simulator reads time through it, never `Utc::now()`.
#[derive(Clone, Debug, Default)]
pub struct SandboxClock {
    offset: Arc<Mutex<Duration>>,
}

impl SandboxClock {
    pub fn new() -> Self {
        Self::default()
    }

    /// Real time plus the current offset.
    pub fn now(&self) -> DateTime<Utc> {
        Utc::now() + self.offset()
    }

    /// Unix seconds of [`SandboxClock::now`] (what Canopy puts in `canopy-signature: t=`).
    pub fn unix_seconds(&self) -> i64 {
        self.now().timestamp()
    }

    /// `now()` as the ISO 8601 string with milliseconds and `Z` that both vendors use.
    pub fn now_rfc3339(&self) -> String {
        format_ts(self.now())
    }

    pub fn offset(&self) -> Duration {
        *self.offset.lock().expect("clock lock poisoned")
    }

    /// Moves "now" forward (or backward, with a negative duration) for every simulator at once.
    pub fn advance(&self, by: Duration) {
        let mut offset = self.offset.lock().expect("clock lock poisoned");
        *offset += by;
    }

    pub fn set_offset(&self, offset: Duration) {
        *self.offset.lock().expect("clock lock poisoned") = offset;
    }

    pub fn reset(&self) {
        self.set_offset(Duration::zero());
    }
}

/// `2022-10-05T14:48:00.000Z`: the shape Axle's examples use for every timestamp.
pub fn format_ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advance_moves_now_forward() {
        let clock = SandboxClock::new();
        let before = clock.now();
        clock.advance(Duration::minutes(11));
        let after = clock.now();
        assert!(after - before >= Duration::minutes(11));
        clock.reset();
        assert!(clock.now() - before < Duration::minutes(1));
    }

    #[test]
    fn timestamps_use_millis_and_z() {
        let t = DateTime::parse_from_rfc3339("2022-10-05T14:48:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(format_ts(t), "2022-10-05T14:48:00.000Z");
    }
}
