//! Instants, as the server keeps them: whole microseconds since the Unix epoch.

use std::{fmt, str::FromStr, time::SystemTime};

use crate::Error;

/// An instant with microsecond precision, in UTC.
///
/// `Display` gives RFC 3339 with six fractional digits
/// (`2025-01-01T12:00:00.000001Z`), the form the server uses; parsing
/// ([`FromStr`]) accepts what Modal's `created_before` accepts and more:
///
/// - a date: `2025-01-01` (its midnight, UTC);
/// - a date-time: `2025-01-01T12:00:00Z`, `2025-01-01 12:00:00+02:00`, or
///   without offset `2025-01-01T12:00:00` (taken as UTC, not local time, so
///   that a script means the same on every machine);
/// - a Unix timestamp in seconds: `1735732800` or `1735732800.5`.
///
/// ```
/// use latchkey::Timestamp;
/// let t: Timestamp = "2025-01-01".parse()?;
/// assert_eq!(t, "2025-01-01T00:00:00Z".parse()?);
/// assert_eq!(t, "1735689600".parse()?);
/// assert_eq!(t.to_string(), "2025-01-01T00:00:00.000000Z");
/// # Ok::<(), latchkey::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The instant `micros` microseconds after the Unix epoch.
    pub fn from_micros(micros: i64) -> Self {
        Self(micros)
    }

    /// Microseconds since the Unix epoch.
    pub fn as_micros(self) -> i64 {
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

    fn jiff(self) -> Option<jiff::Timestamp> {
        jiff::Timestamp::from_microsecond(self.0).ok()
    }
}

impl From<SystemTime> for Timestamp {
    fn from(t: SystemTime) -> Self {
        let micros = match t.duration_since(SystemTime::UNIX_EPOCH) {
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
            SystemTime::UNIX_EPOCH + magnitude
        } else {
            SystemTime::UNIX_EPOCH - magnitude
        }
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.jiff() {
            Some(ts) => write!(f, "{ts:.6}"),
            None => write!(f, "@{}us", self.0),
        }
    }
}

impl FromStr for Timestamp {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let text = s.trim();
        let utc = jiff::tz::TimeZone::UTC;
        let parsed = text
            .parse::<jiff::Timestamp>()
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
            .or_else(|| text.parse::<f64>().ok().and_then(Self::from_unix_seconds));
        parsed.ok_or_else(|| {
            Error::invalid(format!(
                "Invalid time '{text}': expected a date (2025-01-01), a date-time \
                 (2025-01-01T12:00:00Z) or a Unix timestamp in seconds"
            ))
        })
    }
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

/// Anything [`ListSecrets::created_before`](crate::ListSecrets::created_before)
/// accepts: a [`Timestamp`], a [`SystemTime`], a string ([`Timestamp`]'s
/// forms) or Unix seconds as `i64`/`f64`.
pub trait IntoTimestamp {
    /// The instant, or [`Error::Invalid`] naming the input.
    fn into_timestamp(self) -> Result<Timestamp, Error>;
}

impl IntoTimestamp for Timestamp {
    fn into_timestamp(self) -> Result<Timestamp, Error> {
        Ok(self)
    }
}

impl IntoTimestamp for SystemTime {
    fn into_timestamp(self) -> Result<Timestamp, Error> {
        Ok(self.into())
    }
}

impl IntoTimestamp for &str {
    fn into_timestamp(self) -> Result<Timestamp, Error> {
        self.parse()
    }
}

impl IntoTimestamp for String {
    fn into_timestamp(self) -> Result<Timestamp, Error> {
        self.parse()
    }
}

impl IntoTimestamp for &String {
    fn into_timestamp(self) -> Result<Timestamp, Error> {
        self.parse()
    }
}

impl IntoTimestamp for i64 {
    fn into_timestamp(self) -> Result<Timestamp, Error> {
        self.checked_mul(1_000_000)
            .map(Timestamp)
            .ok_or_else(|| Error::invalid(format!("Invalid Unix timestamp {self}")))
    }
}

impl IntoTimestamp for f64 {
    fn into_timestamp(self) -> Result<Timestamp, Error> {
        Timestamp::from_unix_seconds(self)
            .ok_or_else(|| Error::invalid(format!("Invalid Unix timestamp {self}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_agree() {
        let t = Timestamp::from_micros(1_735_732_800_000_001);
        assert_eq!(t.to_string(), "2025-01-01T12:00:00.000001Z");
        assert_eq!(t.to_string().parse::<Timestamp>().unwrap(), t);
        assert_eq!(
            "2025-01-01T13:00:00.000001+01:00"
                .parse::<Timestamp>()
                .unwrap(),
            t
        );
        assert_eq!(
            "2025-01-01T12:00:00.000001".parse::<Timestamp>().unwrap(),
            t
        );
        assert_eq!(
            1_735_732_800_i64.into_timestamp().unwrap().as_micros(),
            1_735_732_800_000_000
        );
        assert_eq!(SystemTime::from(t).into_timestamp().unwrap(), t);
        let e = "soon".parse::<Timestamp>().unwrap_err();
        assert!(e.to_string().contains("'soon'"));
    }
}
