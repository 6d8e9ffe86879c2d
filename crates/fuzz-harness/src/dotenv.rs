//! The `.env` parser: no panic on any input, and what it accepts survives a
//! round trip through a rendering in double quotes.

use latchkey_core::dotenv::{self, Entries};
use latchkey_core::rules::check_key;

/// One value in double quotes, escaped so that python-dotenv reads it back
/// as it is (`${` cannot be escaped: callers leave such values out).
fn quoted(value: &str) -> String {
    let mut out = String::from("\"");
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The entries whose key passes latchkey's key rule and whose value holds
/// no `${`, as a `.env` file: `KEY="value"`, or `KEY` for a key without a
/// value.
fn render(entries: &Entries) -> (String, Entries) {
    let kept: Entries = entries
        .iter()
        .filter(|(k, v)| check_key(k).is_ok() && !v.as_deref().unwrap_or("").contains("${"))
        .cloned()
        .collect();
    let mut text = String::new();
    for (key, value) in &kept {
        text.push_str(key);
        if let Some(value) = value {
            text.push('=');
            text.push_str(&quoted(value));
        }
        text.push('\n');
    }
    (text, kept)
}

/// Runs one input, panicking when an invariant does not hold.
pub fn check(data: &[u8]) {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    let outer = |name: &str| (name == "HOME").then(|| "/home/me".to_owned());
    let with_outer = dotenv::parse(input, &outer);
    let Ok(entries) = dotenv::parse_isolated(input) else {
        // Refused with or without an outer environment alike, and the
        // message never shows the file's text.
        let err = dotenv::parse_isolated(input).unwrap_err();
        assert!(with_outer.is_err());
        let _ = (err.to_string(), format!("{err:?}"));
        return;
    };
    let with_outer = with_outer.expect("accepted with an outer environment too");
    assert_eq!(
        entries.iter().map(|(k, _)| k).collect::<Vec<_>>(),
        with_outer.iter().map(|(k, _)| k).collect::<Vec<_>>(),
        "the outer environment changes values, never keys"
    );

    // Keys are non-empty and unique, in the order of their first appearance.
    let mut seen = std::collections::HashSet::new();
    for (key, _) in &entries {
        assert!(!key.is_empty());
        assert!(seen.insert(key.as_str()), "duplicate key");
    }
    assert_eq!(dotenv::into_env_dict(entries.clone()).len(), entries.len());

    let (text, kept) = render(&entries);
    let again = dotenv::parse_isolated(&text).expect("a rendered file parses");
    assert_eq!(again, kept, "round trip of {text:?}");
}
