//! Key/value rows: the form fields of create and edit, their client-side
//! constraints, and the server-side check that names the reason for each
//! refused row.

use std::collections::{HashMap, HashSet};

use latchkey_core::rules;
use maud::{html, Markup};

use crate::layout;

/// The HTML `pattern` of a key (anchored by the browser), the same rule as
/// [`rules::check_key`].
pub(crate) const KEY_PATTERN: &str = "[A-Za-z_][A-Za-z0-9_]*";
/// What a refused key should look like, shown by the browser.
pub(crate) const KEY_TITLE: &str =
    "Letters, digits and underscores, not starting with a digit (like DATABASE_URL)";

/// Pairs `keys[i]` with `values[i]`, dropping rows where both are empty.
pub(crate) fn pair(keys: &[&str], values: &[&str]) -> Vec<(String, String)> {
    let n = keys.len().max(values.len());
    (0..n)
        .map(|i| {
            (
                keys.get(i).copied().unwrap_or("").trim().to_owned(),
                values.get(i).copied().unwrap_or("").to_owned(),
            )
        })
        .filter(|(k, v)| !(k.is_empty() && v.is_empty()))
        .collect()
}

/// Merges `entries` into `rows`: a key already there takes the new value,
/// a new key is appended.
pub(crate) fn merge(rows: &mut Vec<(String, String)>, entries: Vec<(String, String)>) {
    for (key, value) in entries {
        match rows.iter_mut().find(|(k, _)| *k == key) {
            Some(row) => row.1 = value,
            None => rows.push((key, value)),
        }
    }
}

/// The reason each refused row is refused, by index: the rules of
/// [`rules::check_key`] and [`rules::check_value`], and keys given twice.
/// `taken` are keys that other parts of the form already set.
pub(crate) fn check(rows: &[(String, String)], taken: &HashSet<&str>) -> HashMap<usize, String> {
    let mut errors = HashMap::new();
    let mut seen: HashSet<&str> = HashSet::new();
    for (i, (key, value)) in rows.iter().enumerate() {
        let checked = rules::check_key(key).and_then(|()| rules::check_value(key, value));
        if let Err(e) = checked {
            errors.insert(i, e.message().to_owned());
        } else if !seen.insert(key) || taken.contains(key.as_str()) {
            errors.insert(
                i,
                format!("Key '{}' is given more than once", rules::echo(key)),
            );
        }
    }
    errors
}

/// One key/value row. `names` are the form field names of key and value,
/// `i` makes the element ids unique.
pub(crate) fn row(
    names: (&str, &str),
    i: usize,
    key: &str,
    value: &str,
    error: Option<&String>,
) -> Markup {
    let key_id = format!("{}-{i}", names.0);
    let value_id = format!("{}-{i}", names.1);
    let error_id = format!("{}-error-{i}", names.0);
    html! {
        div.kv-row.invalid[error.is_some()] {
            div.kv-key {
                label.sr for=(key_id) { "Key " (i + 1) }
                input id=(key_id) type="text" name=(names.0) value=(key) placeholder="KEY"
                    pattern=(KEY_PATTERN) maxlength=(rules::MAX_KEY_LEN) title=(KEY_TITLE)
                    autocomplete="off" spellcheck="false" autocapitalize="off"
                    aria-invalid=[error.map(|_| "true")]
                    aria-describedby=[error.map(|_| error_id.as_str())];
            }
            div.kv-value {
                label.sr for=(value_id) { "Value " (i + 1) }
                textarea id=(value_id) name=(names.1) rows="1" placeholder="value"
                    autocomplete="off" spellcheck="false" autocapitalize="off" { (value) }
            }
            (layout::field_error(&error_id, error))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_paired_and_blank_ones_dropped() {
        let rows = pair(&["A", "", " B "], &["1", "", "2"]);
        assert_eq!(rows, [("A".into(), "1".into()), ("B".into(), "2".into())]);
    }

    #[test]
    fn each_bad_row_names_its_reason() {
        let rows: Vec<(String, String)> = [("1A", "x"), ("OK", "a\0b"), ("D", ""), ("D", "")]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .into();
        let errors = check(&rows, &HashSet::new());
        assert!(errors[&0].starts_with("Invalid key '1A'"));
        assert!(errors[&1].contains("NUL"));
        assert!(!errors.contains_key(&2));
        assert!(errors[&3].contains("more than once"));
    }
}
