//! Timestamps.
//!
//! latchkey stores instants as whole microseconds since the Unix epoch: exact
//! in both SQLite and PostgreSQL integers, fine enough that creation times can
//! be made unique, and exactly representable as the `f64` seconds that Modal's
//! wire protocol uses (2^53 µs is about 285 years).

use std::time::{SystemTime, UNIX_EPOCH};

/// Microseconds since the Unix epoch.
pub type Micros = i64;

/// The current time in microseconds since the Unix epoch.
pub fn now_micros() -> Micros {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since.as_micros()).unwrap_or(i64::MAX)
}

/// Microseconds to the float seconds of Modal's protocol.
pub fn micros_to_secs(micros: Micros) -> f64 {
    micros as f64 / 1_000_000.0
}

/// Float seconds of Modal's protocol to microseconds, rounding to the nearest.
///
/// Non-finite and negative inputs give `None`.
pub fn secs_to_micros(secs: f64) -> Option<Micros> {
    if !secs.is_finite() || secs < 0.0 || secs > (i64::MAX / 1_000_000) as f64 {
        return None;
    }
    Some((secs * 1_000_000.0).round() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_round_trip_exactly() {
        let t = 1_764_331_200_123_456;
        assert_eq!(secs_to_micros(micros_to_secs(t)), Some(t));
        assert_eq!(secs_to_micros(f64::NAN), None);
        assert_eq!(secs_to_micros(-1.0), None);
    }
}
