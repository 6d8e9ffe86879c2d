//! The rules every interface enforces, one place each: names, keys, values,
//! required keys, how an update merges, and which environments and tokens
//! may be deleted.
//!
//! Each check of a caller's input returns an [`Error`] of kind
//! [`ErrorKind::Invalid`](crate::ErrorKind) whose message names the
//! offending name or key. Values are never quoted in
//! a message: only their key, their size or what is wrong with them.

use crate::{EnvDict, Error};

/// Longest secret name.
pub const MAX_SECRET_NAME_LEN: usize = 64;
/// Longest environment name.
pub const MAX_ENVIRONMENT_NAME_LEN: usize = 64;
/// Longest name of a profile in the client's profile file.
pub const MAX_PROFILE_NAME_LEN: usize = 64;
/// Longest key.
pub const MAX_KEY_LEN: usize = 16_384;
/// Largest value, in characters (Modal's documented limit: characters, so
/// that a value in another script than Latin is not held to a quarter of it).
pub const MAX_VALUE_CHARS: usize = 32_768;
/// Most keys in one secret.
pub const MAX_KEYS: usize = 1_000;

/// Longest piece of a user's input that an error message repeats.
pub const ECHO_LEN: usize = 80;

/// `s` for an error message: at most [`ECHO_LEN`] characters, control
/// characters escaped so that a message stays on one line.
pub fn echo(s: &str) -> String {
    let mut out: String = s
        .chars()
        .take(ECHO_LEN)
        .flat_map(char::escape_debug)
        .collect();
    if s.chars().count() > ECHO_LEN {
        out.push('…');
    }
    out
}

/// Whether `name` looks like a Modal app id (`ap-` and 22 alphanumerics),
/// which a secret name may not, so that the two can never be confused.
fn looks_like_app_id(name: &str) -> bool {
    crate::ids::has_shape(name, crate::ids::APP, crate::ids::ID_RANDOM_LEN)
}

/// A version number of a secret: versions are numbered from 1.
pub fn check_version(version: i64) -> Result<(), Error> {
    if version < 1 {
        return Err(Error::invalid(format!(
            "Invalid version {version}: versions are numbered from 1"
        )));
    }
    Ok(())
}

/// Reads a version number as a person or a URL writes it (`3`); the error
/// names what was given.
pub fn parse_version(text: &str) -> Result<i64, Error> {
    let version = text.trim().parse::<i64>().map_err(|_| {
        Error::invalid(format!(
            "Invalid version '{}': expected a whole number from 1",
            echo(text)
        ))
    })?;
    check_version(version)?;
    Ok(version)
}

/// A secret name: 1 to 64 characters of `[A-Za-z0-9._-]`, not an app id,
/// and not `.` or `..`: those are path segments that every URL client
/// resolves away (even percent-encoded, as WHATWG URLs do), so no
/// `/secrets/{name}` route could address such a secret.
pub fn check_secret_name(name: &str) -> Result<(), Error> {
    let reason = if name.is_empty() {
        Some("it is empty".to_owned())
    } else if name.len() > MAX_SECRET_NAME_LEN {
        Some(format!(
            "it is longer than {MAX_SECRET_NAME_LEN} characters"
        ))
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        Some("only letters, digits, '.', '_' and '-' are allowed".to_owned())
    } else if looks_like_app_id(name) {
        Some("it has the form of an app id (ap-...)".to_owned())
    } else if name == "." || name == ".." {
        Some("'.' and '..' name a directory in a URL path, not a secret".to_owned())
    } else {
        None
    };
    match reason {
        None => Ok(()),
        Some(reason) => Err(Error::invalid(format!(
            "Invalid Secret name: '{}': {reason}",
            echo(name)
        ))),
    }
}

/// An environment name: at most 64 characters, `^[a-zA-Z0-9][a-zA-Z0-9_-]*$`,
/// not starting with `en-` (the prefix of environment ids).
pub fn check_environment_name(name: &str) -> Result<(), Error> {
    let mut bytes = name.bytes();
    let reason = if name.is_empty() {
        Some("it is empty".to_owned())
    } else if name.len() > MAX_ENVIRONMENT_NAME_LEN {
        Some(format!(
            "it is longer than {MAX_ENVIRONMENT_NAME_LEN} characters"
        ))
    } else if !bytes.next().is_some_and(|b| b.is_ascii_alphanumeric())
        || !bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
    {
        Some(
            "it must start with a letter or digit and hold only letters, digits, '_' and '-'"
                .to_owned(),
        )
    } else if name
        .to_ascii_lowercase()
        .starts_with(crate::ids::ENVIRONMENT)
    {
        Some("it may not start with 'en-'".to_owned())
    } else {
        None
    };
    match reason {
        None => Ok(()),
        Some(reason) => Err(Error::invalid(format!(
            "Invalid environment name: '{}': {reason}",
            echo(name)
        ))),
    }
}

/// Where a request names an environment: its name, or its id (`en-...`),
/// as Modal's client resolves references by either. Names never start with
/// `en-`, so the two cannot be confused.
pub fn check_environment_reference(reference: &str) -> Result<(), Error> {
    if is_environment_id(reference) {
        Ok(())
    } else {
        check_environment_name(reference)
    }
}

/// Whether `s` has the shape of an environment id: `en-` and 1 to 64
/// letters and digits.
fn is_environment_id(s: &str) -> bool {
    s.strip_prefix(crate::ids::ENVIRONMENT).is_some_and(|rest| {
        !rest.is_empty() && rest.len() <= 64 && rest.bytes().all(|b| b.is_ascii_alphanumeric())
    })
}

/// Whether `name` is 1 to `max` characters of `[A-Za-z0-9._-]` and the
/// bytes of `extra`: the shape of the names people type (tokens, profiles,
/// apps), which a shell passes, a TOML file takes as a bare key and a log
/// line shows, as they are.
fn is_plain_name(name: &str, max: usize, extra: &[u8]) -> bool {
    !name.is_empty()
        && name.len() <= max
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b) || extra.contains(&b))
}

/// Whether the token `token` may act in the environment `environment`:
/// any, when `allowed` is `None`; else one of those named.
pub fn check_token_environment(
    token: &str,
    allowed: Option<&[String]>,
    environment: &str,
) -> Result<(), Error> {
    match allowed {
        Some(allowed) if !allowed.iter().any(|a| a == environment) => {
            Err(Error::permission_denied(format!(
                "Token '{token}' may not use environment '{environment}'"
            )))
        }
        _ => Ok(()),
    }
}

/// A token name: 1 to 64 characters of `[A-Za-z0-9._@-]`. It is the
/// `created_by` of what the token makes, so `@` lets it be a mail address.
pub fn check_token_name(name: &str) -> Result<(), Error> {
    if is_plain_name(name, 64, b"@") {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "Invalid token name: '{}': use 1 to 64 letters, digits, '.', '_', '@' and '-'",
            echo(name)
        )))
    }
}

/// A profile name (a table of the client's `~/.latchkey.toml`): 1 to 64
/// characters of `[A-Za-z0-9._-]`.
pub fn check_profile_name(name: &str) -> Result<(), Error> {
    if is_plain_name(name, MAX_PROFILE_NAME_LEN, b"") {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "Invalid profile name '{}': use 1 to {MAX_PROFILE_NAME_LEN} letters, digits, '-', '_' and '.'",
            echo(name)
        )))
    }
}

/// A key: `^[A-Za-z_][A-Za-z0-9_]*$`, at most 16,384 characters.
pub fn check_key(key: &str) -> Result<(), Error> {
    let mut bytes = key.bytes();
    let reason = if key.is_empty() {
        Some("it is empty".to_owned())
    } else if key.len() > MAX_KEY_LEN {
        Some(format!("it is longer than {MAX_KEY_LEN} characters"))
    } else if !bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        || !bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        Some("a key must match [A-Za-z_][A-Za-z0-9_]*".to_owned())
    } else {
        None
    };
    match reason {
        None => Ok(()),
        Some(reason) => Err(Error::invalid(format!(
            "Invalid key '{}': {reason}",
            echo(key)
        ))),
    }
}

/// A value: at most 32,768 characters, no NUL. The message names the key, never the value.
pub fn check_value(key: &str, value: &str) -> Result<(), Error> {
    // No more characters than bytes: only a long value needs counting.
    if value.len() > MAX_VALUE_CHARS {
        let chars = value.chars().count();
        if chars > MAX_VALUE_CHARS {
            return Err(Error::invalid(format!(
                "Value of key '{}' is {chars} characters; the limit is {MAX_VALUE_CHARS} characters",
                echo(key)
            )));
        }
    }
    if value.contains('\0') {
        return Err(Error::invalid(format!(
            "Value of key '{}' contains a NUL character, which an environment variable cannot hold",
            echo(key)
        )));
    }
    Ok(())
}

/// Every key and value of `dict`, and their number.
pub fn check_env_dict(dict: &EnvDict) -> Result<(), Error> {
    check_key_count(dict.len())?;
    for (key, value) in dict {
        check_key(key)?;
        check_value(key, value)?;
    }
    Ok(())
}

/// At most [`MAX_KEYS`] keys.
pub fn check_key_count(count: usize) -> Result<(), Error> {
    if count > MAX_KEYS {
        return Err(Error::invalid(format!(
            "A secret may hold at most {MAX_KEYS} keys; this one would hold {count}"
        )));
    }
    Ok(())
}

/// The keys of `required` that `dict` lacks, as a `FailedPrecondition` error
/// `Secret is missing key(s): A, B` (in the order they were required) that
/// carries them as [`Error::missing_keys`].
pub fn check_required_keys<'a>(
    dict: &EnvDict,
    required: impl IntoIterator<Item = &'a str>,
) -> Result<(), Error> {
    check_required(|key| dict.contains_key(key), required)
}

/// [`check_required_keys`] against a secret's sorted list of keys (its
/// metadata), without its values.
pub fn check_required_keys_in_sorted<'a>(
    keys: &[String],
    required: impl IntoIterator<Item = &'a str>,
) -> Result<(), Error> {
    check_required(
        |key| keys.binary_search_by(|k| k.as_str().cmp(key)).is_ok(),
        required,
    )
}

fn check_required<'a>(
    has: impl Fn(&str) -> bool,
    required: impl IntoIterator<Item = &'a str>,
) -> Result<(), Error> {
    let mut missing: Vec<String> = Vec::new();
    for key in required {
        if !has(key) && !missing.iter().any(|m| m == key) {
            missing.push(key.to_owned());
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        let message = format!(
            "Secret is missing key(s): {}",
            missing
                .iter()
                .map(|k| echo(k))
                .collect::<Vec<_>>()
                .join(", ")
        );
        Err(Error::failed_precondition(message).with_missing_keys(missing))
    }
}

/// A secret's contents after the changes of an `update()`: in order, a value
/// sets its key and `None` removes it (keys not named stay, as
/// `dict.update` leaves them); the result is checked against [`MAX_KEYS`].
pub fn apply_changes(
    mut contents: EnvDict,
    changes: &[(String, Option<String>)],
) -> Result<EnvDict, Error> {
    for (key, value) in changes {
        match value {
            Some(value) => {
                contents.insert(key.clone(), value.clone());
            }
            None => {
                contents.remove(key);
            }
        }
    }
    check_key_count(contents.len())?;
    Ok(contents)
}

/// Whether the environment `name` (the workspace default when `is_default`)
/// may be deleted while it holds `named` named secrets: never the default,
/// and not with secrets in it unless `with_secrets` confirms deleting them.
pub fn check_environment_deletable(
    name: &str,
    is_default: bool,
    named: i64,
    with_secrets: bool,
) -> Result<(), Error> {
    if is_default {
        return Err(Error::failed_precondition(format!(
            "Environment '{name}' is the workspace's default and cannot be deleted"
        )));
    }
    if named > 0 && !with_secrets {
        return Err(Error::failed_precondition(format!(
            "Environment '{name}' holds {named} secret(s); delete them first or confirm deleting them with the environment"
        )));
    }
    Ok(())
}

/// Whether the active token `name` may be revoked. A workspace always keeps
/// one active admin token that is not limited to some environments (only
/// such a token may create and revoke tokens): `unlimited_admin` says
/// whether `name` is one, `other_unlimited_admins` how many others there are.
pub fn check_token_revocable(
    name: &str,
    unlimited_admin: bool,
    other_unlimited_admins: i64,
) -> Result<(), Error> {
    if unlimited_admin && other_unlimited_admins == 0 {
        return Err(Error::failed_precondition(format!(
            "Token '{name}' is the workspace's last admin token not limited to some environments; \
             create another such admin token first"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    fn msg(r: Result<(), Error>) -> String {
        let e = r.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Invalid);
        e.message().to_owned()
    }

    #[test]
    fn environments_are_named_by_name_or_id() {
        check_environment_reference("prod").unwrap();
        check_environment_reference("en-4fJ9x2Kq").unwrap();
        for bad in ["en-", "en-a b", "en-a_b", "bad name", ""] {
            assert!(
                msg(check_environment_reference(bad)).starts_with("Invalid environment name"),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn updates_merge_and_remove_keys_within_the_limit() {
        let contents: EnvDict = [("A".into(), "1".into()), ("B".into(), "2".into())].into();
        let changes = [
            ("A".into(), Some("9".into())),
            ("B".into(), None),
            ("C".into(), Some("3".into())),
        ];
        let merged = apply_changes(contents, &changes).unwrap();
        assert_eq!(
            merged,
            [("A".into(), "9".into()), ("C".into(), "3".into())].into()
        );
        let many: Vec<_> = (0..=MAX_KEYS)
            .map(|i| (format!("K{i}"), Some(String::new())))
            .collect();
        let err = apply_changes(EnvDict::new(), &many).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Invalid, "{err:?}");
    }

    #[test]
    fn environments_are_deleted_only_when_allowed() {
        let refused = |r: Result<(), Error>| {
            let e = r.unwrap_err();
            assert_eq!(e.kind(), ErrorKind::FailedPrecondition);
            e.message().to_owned()
        };
        assert!(refused(check_environment_deletable("main", true, 0, true)).contains("default"));
        assert!(refused(check_environment_deletable("dev", false, 3, false))
            .contains("holds 3 secret(s)"));
        check_environment_deletable("dev", false, 3, true).unwrap();
        check_environment_deletable("dev", false, 0, false).unwrap();
    }

    #[test]
    fn the_last_unlimited_admin_token_stays() {
        let e = check_token_revocable("admin", true, 0).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::FailedPrecondition);
        assert!(e.message().contains("last admin token"), "{}", e.message());
        check_token_revocable("admin", true, 1).unwrap();
        check_token_revocable("ci", false, 0).unwrap();
    }

    #[test]
    fn secret_names() {
        for ok in [
            "a",
            "my-secret",
            "A.b_c-9",
            &"x".repeat(64),
            "ap-short",
            "...",
            ".env",
        ] {
            check_secret_name(ok).unwrap();
        }
        for dots in [".", ".."] {
            assert_eq!(
                msg(check_secret_name(dots)),
                format!(
                    "Invalid Secret name: '{dots}': '.' and '..' name a directory in a URL path, \
                     not a secret"
                )
            );
        }
        assert!(msg(check_secret_name("")).contains("empty"));
        assert!(msg(check_secret_name(&"x".repeat(65))).contains("longer than 64"));
        assert!(msg(check_secret_name("a b")).starts_with("Invalid Secret name: 'a b'"));
        assert!(msg(check_secret_name("ap-0123456789abcdefghijkl")).contains("app id"));
    }

    #[test]
    fn environment_names() {
        for ok in ["main", "dev", "Prod_2", "a-b", &"e".repeat(64)] {
            check_environment_name(ok).unwrap();
        }
        for bad in [
            "",
            "-dev",
            "_x",
            "a.b",
            "en-prod",
            "EN-prod",
            &"e".repeat(65),
            "a b",
        ] {
            assert!(msg(check_environment_name(bad)).starts_with("Invalid environment name"));
        }
    }

    #[test]
    fn token_names() {
        for ok in ["ci", "alice@example.com", "deploy-bot_2.x", &"t".repeat(64)] {
            check_token_name(ok).unwrap();
        }
        for bad in ["", "a b", "a/b", "é", &"t".repeat(65)] {
            assert!(msg(check_token_name(bad)).starts_with("Invalid token name"));
        }
    }

    #[test]
    fn profile_names() {
        for ok in ["default", "prod", "a.b_c-9", &"p".repeat(64)] {
            check_profile_name(ok).unwrap();
        }
        for bad in ["", "a b", "a/b", "[x]", &"p".repeat(65)] {
            assert!(msg(check_profile_name(bad)).starts_with("Invalid profile name"));
        }
        assert_eq!(
            msg(check_profile_name("a b")),
            "Invalid profile name 'a b': use 1 to 64 letters, digits, '-', '_' and '.'"
        );
    }

    #[test]
    fn keys_and_values() {
        for ok in ["A", "_", "a_1", "PATH", &"K".repeat(MAX_KEY_LEN)] {
            check_key(ok).unwrap();
        }
        for bad in ["", "1A", "A-B", "A B", "É", &"K".repeat(MAX_KEY_LEN + 1)] {
            assert!(msg(check_key(bad)).starts_with("Invalid key"));
        }
        check_value("K", &"v".repeat(MAX_VALUE_CHARS)).unwrap();
        let big = msg(check_value("K", &"v".repeat(MAX_VALUE_CHARS + 1)));
        assert!(big.contains("'K'") && big.contains("32769"), "{big}");
        // Characters, not bytes: 32,768 two-byte characters are within it.
        check_value("K", &"é".repeat(MAX_VALUE_CHARS)).unwrap();
        let wide = msg(check_value("K", &"é".repeat(MAX_VALUE_CHARS + 1)));
        assert!(wide.contains("32769 characters"), "{wide}");
        let nul = msg(check_value("K", "se\0cret"));
        assert!(nul.contains("NUL") && !nul.contains("cret"), "{nul}");
    }

    #[test]
    fn key_count() {
        let dict: EnvDict = (0..=MAX_KEYS)
            .map(|i| (format!("K{i}"), String::new()))
            .collect();
        assert!(msg(check_env_dict(&dict)).contains("at most 1000 keys"));
    }

    #[test]
    fn required_keys_name_every_missing_one_in_order() {
        let dict: EnvDict = [("A".to_owned(), "1".to_owned())].into();
        check_required_keys(&dict, ["A"]).unwrap();
        let e = check_required_keys(&dict, ["C", "A", "B", "C"]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::FailedPrecondition);
        assert_eq!(e.message(), "Secret is missing key(s): C, B");
        assert_eq!(e.missing_keys(), ["C", "B"]);

        let keys = ["A".to_owned(), "D".to_owned(), "M".to_owned()];
        check_required_keys_in_sorted(&keys, ["M", "A", "D"]).unwrap();
        let e = check_required_keys_in_sorted(&keys, ["C", "A", "B", "C", "Z"]).unwrap_err();
        assert_eq!(e.message(), "Secret is missing key(s): C, B, Z");
        assert_eq!(e.missing_keys(), ["C", "B", "Z"]);
    }

    #[test]
    fn echo_truncates_and_escapes() {
        assert_eq!(echo("a\nb"), "a\\nb");
        assert_eq!(echo(&"x".repeat(100)).chars().count(), ECHO_LEN + 1);
    }
}

/// Checks an app name (Modal's `App.lookup(name)`): 1 to 64 letters, digits,
/// `.`, `_` and `-`, the characters of a secret name, so that an app's name
/// is safe in every message and id derived from it.
pub fn check_app_name(name: &str) -> Result<(), Error> {
    if is_plain_name(name, 64, b"") {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "Invalid App name: '{}': use 1 to 64 letters, digits, '.', '_' and '-'",
            echo(name)
        )))
    }
}

#[cfg(test)]
mod app_name_tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn app_names() {
        for ok in ["a", "my-app_1.0", &"x".repeat(64)] {
            check_app_name(ok).unwrap();
        }
        for bad in ["", "a b", "é", &"x".repeat(65)] {
            let e = check_app_name(bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Invalid);
            assert!(e.message().starts_with("Invalid App name"), "{e:?}");
        }
    }
}
