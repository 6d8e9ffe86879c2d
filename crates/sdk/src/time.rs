//! Instants, as the server keeps them: whole microseconds since the Unix
//! epoch, written on the wire as RFC 3339 with six fractional digits.
//!
//! The type is core's [`Timestamp`], the one the server answers with, so the
//! two sides cannot disagree on the format; this module adds what callers of
//! the SDK may pass where an instant is expected.

use std::time::SystemTime;

pub use latchkey_core::time::Timestamp;

use crate::Error;

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
        Ok(self.parse()?)
    }
}

impl IntoTimestamp for String {
    fn into_timestamp(self) -> Result<Timestamp, Error> {
        self.as_str().into_timestamp()
    }
}

impl IntoTimestamp for &String {
    fn into_timestamp(self) -> Result<Timestamp, Error> {
        self.as_str().into_timestamp()
    }
}

impl IntoTimestamp for i64 {
    fn into_timestamp(self) -> Result<Timestamp, Error> {
        self.checked_mul(1_000_000)
            .map(Timestamp::from_micros)
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
    fn every_form_gives_the_same_instant() {
        let t = Timestamp::from_micros(1_735_732_800_000_001);
        assert_eq!(t.to_string().into_timestamp().unwrap(), t);
        assert_eq!(
            "2025-01-01T13:00:00.000001+01:00".into_timestamp().unwrap(),
            t
        );
        assert_eq!(
            1_735_732_800_i64.into_timestamp().unwrap().as_micros(),
            1_735_732_800_000_000
        );
        assert_eq!(SystemTime::from(t).into_timestamp().unwrap(), t);
        let e = "soon".into_timestamp().unwrap_err();
        assert!(matches!(&e, Error::Invalid { .. }), "{e:?}");
        assert!(e.to_string().contains("'soon'"));
    }
}
