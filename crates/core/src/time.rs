//! Timestamps.
//!
//! latchkey stores instants as whole microseconds since the Unix epoch: exact
//! in both SQLite and PostgreSQL integers, fine enough that creation times can
//! be made unique, and exactly representable as the `f64` seconds that Modal's
//! wire protocol uses (2^53 µs is about 285 years).
//!
//! [`Timestamp`] is the one type that carries such an instant across the JSON
//! API, the SDK and the dashboard, so its text form is written once: RFC 3339
//! in UTC with exactly six fractional digits, which a client can send back
//! (as `created_before`) without losing the microsecond it pages on.

use std::{
    fmt,
    str::FromStr,
    time::{SystemTime, UNIX_EPOCH},
};

use crate::Error;

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

/// An instant with microsecond precision, in UTC.
///
/// `Display` and `Serialize` give the wire form, RFC 3339 with six
/// fractional digits (`2025-01-01T12:00:00.000001Z`). Parsing ([`FromStr`],
/// `Deserialize`) accepts what Modal's `created_before` accepts and more:
///
/// - a date: `2025-01-01` (its midnight, UTC);
/// - a date-time: `2025-01-01T12:00:00Z`, `2025-01-01 12:00:00+02:00`, or
///   without offset `2025-01-01T12:00:00` (taken as UTC, not local time, so
///   that a script means the same on every machine);
/// - a Unix timestamp in seconds: `1735732800` or `1735732800.5`.
///
/// ```
/// use latchkey_core::time::Timestamp;
/// let t: Timestamp = "2025-01-01".parse()?;
/// assert_eq!(t, "2025-01-01T00:00:00Z".parse()?);
/// assert_eq!(t, "1735689600".parse()?);
/// assert_eq!(t.to_string(), "2025-01-01T00:00:00.000000Z");
/// # Ok::<(), latchkey_core::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(Micros);

impl Timestamp {
    /// The instant `micros` microseconds after the Unix epoch.
    pub const fn from_micros(micros: Micros) -> Self {
        Self(micros)
    }

    /// Microseconds since the Unix epoch.
    pub const fn as_micros(self) -> Micros {
        self.0
    }

    /// The instant `secs` seconds after the Unix epoch, rounded to the
    /// microsecond; `None` when not finite or out of range.
    pub fn from_unix_seconds(secs: f64) -> Option<Self> {
        let micros = (secs * 1_000_000.0).round();
        (micros.is_finite() && micros.abs() < 9.0e18).then_some(Self(micros as i64))
    }

    /// The current time.
    pub fn now() -> Self {
        Self::from(SystemTime::now())
    }

    /// Parses a date-time or a date, but not a bare number: for inputs where
    /// a number is more likely a mistake than Unix seconds.
    ///
    /// An RFC 3339 date-time (`Z` or an offset), a date-time without offset
    /// (UTC) or a date (its midnight, UTC).
    pub fn parse_date_time(text: &str) -> Option<Self> {
        let text = text.trim();
        let utc = jiff::tz::TimeZone::UTC;
        text.parse::<jiff::Timestamp>()
            .ok()
            .or_else(|| {
                let dt = text.parse::<jiff::civil::DateTime>().ok()?;
                utc.to_timestamp(dt).ok()
            })
            .or_else(|| {
                let d = text.parse::<jiff::civil::Date>().ok()?;
                utc.to_timestamp(d.to_datetime(jiff::civil::Time::midnight()))
                    .ok()
            })
            .map(|ts| Self(ts.as_microsecond()))
    }

    /// The instant in a [`strftime`](https://docs.rs/jiff/1/jiff/fmt/strtime/index.html) `format`, in UTC
    /// (`%Y-%m-%d %H:%M UTC`), for display to people; the wire form when it
    /// is beyond the years 9999.
    pub fn strftime(self, format: &str) -> String {
        match self.jiff() {
            Some(ts) => ts.strftime(format).to_string(),
            None => self.to_string(),
        }
    }

    fn jiff(self) -> Option<jiff::Timestamp> {
        jiff::Timestamp::from_microsecond(self.0).ok()
    }
}

impl From<SystemTime> for Timestamp {
    fn from(t: SystemTime) -> Self {
        let micros = match t.duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
            Err(e) => -i64::try_from(e.duration().as_micros()).unwrap_or(i64::MAX),
        };
        Self(micros)
    }
}

impl From<Timestamp> for SystemTime {
    fn from(t: Timestamp) -> Self {
        let magnitude = std::time::Duration::from_micros(t.0.unsigned_abs());
        if t.0 >= 0 {
            UNIX_EPOCH + magnitude
        } else {
            UNIX_EPOCH - magnitude
        }
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.jiff() {
            Some(ts) => write!(f, "{ts:.6}"),
            // Beyond jiff's years ±9999: never stored in practice; the
            // microseconds still say exactly which instant it is.
            None => write!(f, "{}", self.0),
        }
    }
}

impl FromStr for Timestamp {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let text = s.trim();
        Self::parse_date_time(text)
            .or_else(|| text.parse::<f64>().ok().and_then(Self::from_unix_seconds))
            .ok_or_else(|| {
                Error::invalid(format!(
                    "Invalid time '{}': expected a date (2025-01-01), a date-time \
                     (2025-01-01T12:00:00Z) or a Unix timestamp in seconds",
                    crate::rules::echo(text)
                ))
            })
    }
}

/// Parses a positive duration given by a person: bare seconds (`90`) or
/// with units (`90s`, `10m`, `24h`, `30d`, `1h30m`). `what` names the
/// setting in the error (`--ttl`), which refuses zero, negative and
/// unparseable durations.
///
/// ```
/// use latchkey_core::time::parse_duration;
/// use std::time::Duration;
/// assert_eq!(parse_duration("ttl", "30d")?, Duration::from_secs(30 * 86_400));
/// assert_eq!(parse_duration("ttl", "90")?, Duration::from_secs(90));
/// assert!(parse_duration("ttl", "0").is_err());
/// assert!(parse_duration("ttl", "-5m").is_err());
/// # Ok::<(), latchkey_core::Error>(())
/// ```
pub fn parse_duration(what: &str, text: &str) -> Result<std::time::Duration, Error> {
    let text = text.trim();
    let parsed = match text.parse::<u64>() {
        Ok(secs) => Ok(std::time::Duration::from_secs(secs)),
        Err(_) => humantime::parse_duration(text).map_err(|e| e.to_string()),
    };
    let shown = crate::rules::echo(text);
    match parsed {
        Ok(d) if d.is_zero() => Err(Error::invalid(format!(
            "Invalid {what} '{shown}': it must be greater than zero"
        ))),
        // Far beyond any useful duration, and beyond what an instant in
        // microseconds can hold once added to now.
        Ok(d) if d.as_secs() > MAX_DURATION_SECS => Err(Error::invalid(format!(
            "Invalid {what} '{shown}': at most {} days",
            MAX_DURATION_SECS / 86_400
        ))),
        Ok(d) => Ok(d),
        Err(_) if text.starts_with('-') => Err(Error::invalid(format!(
            "Invalid {what} '{shown}': it must be greater than zero"
        ))),
        Err(cause) => Err(Error::invalid(format!(
            "Invalid {what} '{shown}': {cause} (e.g. 90s, 10m, 24h, 30d)"
        ))),
    }
}

/// Longest duration [`parse_duration`] accepts: 100 years.
pub const MAX_DURATION_SECS: u64 = 100 * 365 * 86_400;

/// The instant `d` after `from`, saturating.
pub fn add_duration(from: Micros, d: std::time::Duration) -> Micros {
    from.saturating_add(i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

impl serde::Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
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

    #[test]
    fn the_wire_form_has_six_fractional_digits_and_round_trips() {
        let t = Timestamp::from_micros(1_735_732_800_000_001);
        assert_eq!(t.to_string(), "2025-01-01T12:00:00.000001Z");
        assert_eq!(
            Timestamp::from_micros(0).to_string(),
            "1970-01-01T00:00:00.000000Z"
        );
        assert_eq!(t.to_string().parse::<Timestamp>().unwrap(), t);
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(json, "\"2025-01-01T12:00:00.000001Z\"");
        assert_eq!(serde_json::from_str::<Timestamp>(&json).unwrap(), t);
        assert_eq!(
            SystemTime::from(t),
            UNIX_EPOCH + std::time::Duration::from_micros(1_735_732_800_000_001)
        );
        assert_eq!(Timestamp::from(SystemTime::from(t)), t);
    }

    #[test]
    fn forms_agree() {
        let t = Timestamp::from_micros(1_735_732_800_000_001);
        for text in [
            "2025-01-01T13:00:00.000001+01:00",
            "2025-01-01T12:00:00.000001",
            " 2025-01-01 12:00:00.000001Z ",
        ] {
            assert_eq!(text.parse::<Timestamp>().unwrap(), t, "{text}");
        }
        let midnight = Timestamp::from_micros(1_735_689_600_000_000);
        assert_eq!(Timestamp::parse_date_time("2025-01-01"), Some(midnight));
        assert_eq!("1735689600".parse::<Timestamp>().unwrap(), midnight);
        assert_eq!(Timestamp::parse_date_time("1735689600"), None);
        let e = "soon".parse::<Timestamp>().unwrap_err();
        assert!(e.message().contains("'soon'"), "{e}");
    }

    #[test]
    fn durations_are_positive_and_named_in_errors() {
        use std::time::Duration;
        assert_eq!(
            parse_duration("--ttl", "1h30m").unwrap(),
            Duration::from_secs(5400)
        );
        assert_eq!(
            parse_duration("--ttl", " 10m ").unwrap(),
            Duration::from_secs(600)
        );
        for (text, needle) in [
            ("0", "greater than zero"),
            ("0s", "greater than zero"),
            ("-1", "greater than zero"),
            ("-10m", "greater than zero"),
            ("soon", "e.g. 90s"),
            ("", "--ttl"),
            ("1000y", "at most"),
        ] {
            let e = parse_duration("--ttl", text).unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::Invalid);
            assert!(e.message().contains(needle), "{text}: {e}");
            assert!(e.message().contains("--ttl"), "{text}: {e}");
        }
    }

    #[test]
    fn people_read_it_to_the_second_or_minute() {
        let t = Timestamp::from_micros(1_767_225_599_999_999);
        assert_eq!(t.strftime("%Y-%m-%dT%H:%M:%SZ"), "2025-12-31T23:59:59Z");
        assert_eq!(t.strftime("%Y-%m-%d %H:%M UTC"), "2025-12-31 23:59 UTC");
        let far = Timestamp::from_micros(i64::MAX);
        assert_eq!(far.strftime("%Y"), i64::MAX.to_string());
    }
}
