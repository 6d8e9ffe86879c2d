//! The name and key rules: no panic, and each check accepts exactly what
//! its documented pattern describes.

use latchkey_core::rules::{self, ECHO_LEN, MAX_KEY_LEN, MAX_VALUE_CHARS};
use latchkey_core::ErrorKind;

fn all(s: &str, allowed: impl Fn(char) -> bool) -> bool {
    s.chars().all(allowed)
}

fn alnum(c: char) -> bool {
    c.is_ascii_alphanumeric()
}

/// `[A-Za-z0-9._<extra>-]{1,max}`
fn plain(s: &str, max: usize, extra: &str) -> bool {
    (1..=max).contains(&s.chars().count())
        && all(s, |c| alnum(c) || "._-".contains(c) || extra.contains(c))
}

/// `ap-` and 22 letters and digits: an app id.
fn app_id(s: &str) -> bool {
    s.strip_prefix("ap-")
        .is_some_and(|r| r.chars().count() == 22 && all(r, alnum))
}

/// `^[a-zA-Z0-9][a-zA-Z0-9_-]*$`, at most 64, not starting with `en-`.
fn environment_name(s: &str) -> bool {
    let mut chars = s.chars();
    s.chars().count() <= 64
        && chars.next().is_some_and(alnum)
        && all(chars.as_str(), |c| alnum(c) || c == '_' || c == '-')
        && !s.to_ascii_lowercase().starts_with("en-")
}

/// `en-[A-Za-z0-9]{1,64}`
fn environment_id(s: &str) -> bool {
    s.strip_prefix("en-")
        .is_some_and(|r| (1..=64).contains(&r.chars().count()) && all(r, alnum))
}

/// `^[A-Za-z_][A-Za-z0-9_]*$`, at most 16,384.
fn key(s: &str) -> bool {
    let mut chars = s.chars();
    s.chars().count() <= MAX_KEY_LEN
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && all(chars.as_str(), |c| alnum(c) || c == '_')
}

fn agrees(what: &str, s: &str, got: Result<(), latchkey_core::Error>, want: bool) {
    match got {
        Ok(()) => assert!(want, "{what} accepted {s:?}"),
        Err(e) => {
            assert!(!want, "{what} refused {s:?}: {e:?}");
            assert_eq!(e.kind(), ErrorKind::Invalid);
            assert!(!e.message().contains('\n'), "{what}: {:?}", e.message());
        }
    }
}

/// Runs one input, panicking when an invariant does not hold.
pub fn check(data: &[u8]) {
    let s = String::from_utf8_lossy(data);
    let s = s.as_ref();
    agrees(
        "secret name",
        s,
        rules::check_secret_name(s),
        plain(s, 64, "") && !app_id(s) && s != "." && s != "..",
    );
    agrees(
        "environment name",
        s,
        rules::check_environment_name(s),
        environment_name(s),
    );
    agrees(
        "environment reference",
        s,
        rules::check_environment_reference(s),
        environment_name(s) || environment_id(s),
    );
    agrees(
        "token name",
        s,
        rules::check_token_name(s),
        plain(s, 64, "@"),
    );
    agrees(
        "profile name",
        s,
        rules::check_profile_name(s),
        plain(s, 64, ""),
    );
    agrees("app name", s, rules::check_app_name(s), plain(s, 64, ""));
    agrees("key", s, rules::check_key(s), key(s));
    agrees(
        "value",
        s,
        rules::check_value("K", s),
        s.chars().count() <= MAX_VALUE_CHARS && !s.contains('\0'),
    );
    if let Err(e) = rules::check_value("K", s) {
        // A value is a secret: a message never repeats it.
        if s.len() >= 4 {
            assert!(!e.message().contains(s));
        }
    }

    let echoed = rules::echo(s);
    assert!(!echoed.contains(['\n', '\r', '\0']));
    if s.chars().count() <= ECHO_LEN && all(s, |c| !c.is_control() && c != '\\') {
        // Plain short input is echoed as it is.
        if s.chars().all(|c| c.escape_debug().count() == 1) {
            assert_eq!(echoed, s);
        }
    }
}
