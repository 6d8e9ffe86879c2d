//! How times and counts are shown.

use latchkey_core::time::{Micros, Timestamp};
use maud::{html, Markup};

/// `2025-01-31T09:05:07Z`: to the second, as a `<time>` element's machine
/// form and tooltip.
fn iso(micros: Micros) -> String {
    Timestamp::from_micros(micros).strftime("%Y-%m-%dT%H:%M:%SZ")
}

/// A `<time>` element showing `2025-01-31 09:05 UTC`.
pub(crate) fn time(micros: Micros) -> Markup {
    time_as(micros, "%Y-%m-%d %H:%M UTC")
}

/// A `<time>` element showing `2025-01-31 09:05:07 UTC` (for the audit log).
pub(crate) fn time_to_second(micros: Micros) -> Markup {
    time_as(micros, "%Y-%m-%d %H:%M:%S UTC")
}

/// A `<time>` element showing the instant in `shown`'s format.
fn time_as(micros: Micros, shown: &str) -> Markup {
    let iso = iso(micros);
    let shown = Timestamp::from_micros(micros).strftime(shown);
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
        assert_eq!(iso(-1), "1969-12-31T23:59:59Z");
        let shown = time(1_767_225_599_999_999).into_string();
        assert!(shown.contains(">2025-12-31 23:59 UTC<"), "{shown}");
        let shown = time_to_second(1_767_225_599_999_999).into_string();
        assert!(shown.contains(">2025-12-31 23:59:59 UTC<"), "{shown}");
    }
}
