//! How times and counts are shown.

use latchkey_core::time::Micros;
use maud::{html, Markup};

/// `(year, month, day)` of a day number since 1970-01-01 (proleptic
/// Gregorian; Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// `2025-01-31T09:05:07Z`.
pub(crate) fn iso(micros: Micros) -> String {
    let secs = micros.div_euclid(1_000_000);
    let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}Z",
        s / 3600,
        s % 3600 / 60,
        s % 60
    )
}

/// A `<time>` element showing `2025-01-31 09:05 UTC`.
pub(crate) fn time(micros: Micros) -> Markup {
    let iso = iso(micros);
    let shown = format!("{} {} UTC", &iso[..10], &iso[11..16]);
    html! { time datetime=(iso) title=(iso) { (shown) } }
}

/// A time, or a dash for never.
pub(crate) fn maybe_time(micros: Option<Micros>) -> Markup {
    match micros {
        Some(m) => time(m),
        None => html! { span.muted { "never" } },
    }
}

/// `1 key`, `3 keys`.
pub(crate) fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_dates() {
        assert_eq!(iso(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso(951_782_400_000_000), "2000-02-29T00:00:00Z");
        assert_eq!(iso(1_767_225_599_999_999), "2025-12-31T23:59:59Z");
    }
}
