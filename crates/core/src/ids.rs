//! Object ids and token parts: a kind prefix plus random base62 characters
//! from the operating system's generator.

use rand::{distributions::Alphanumeric, rngs::OsRng, Rng};

/// Prefix of secret ids.
pub const SECRET: &str = "st-";
/// Prefix of environment ids.
pub const ENVIRONMENT: &str = "en-";
/// Prefix of workspace ids.
pub const WORKSPACE: &str = "ac-";
/// Prefix of token ids (public: may be logged).
pub const TOKEN_ID: &str = "ak-";
/// Prefix of token secrets (never logged, never stored in clear).
pub const TOKEN_SECRET: &str = "as-";
/// Prefix of app ids, as Modal's client forms them.
pub const APP: &str = "ap-";

/// Number of random characters in an id. 22 base62 characters carry about
/// 131 bits, like a UUID.
pub const ID_RANDOM_LEN: usize = 22;

/// Number of random characters in a token secret (about 190 bits): enough
/// that a fast hash is a safe way to store it.
pub const TOKEN_SECRET_RANDOM_LEN: usize = 32;

fn random_base62(len: usize) -> String {
    OsRng
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

/// A new id: `prefix` followed by [`ID_RANDOM_LEN`] random base62 characters.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}{}", random_base62(ID_RANDOM_LEN))
}

/// A new token secret: `as-` followed by [`TOKEN_SECRET_RANDOM_LEN`] characters.
pub fn new_token_secret() -> String {
    format!("{TOKEN_SECRET}{}", random_base62(TOKEN_SECRET_RANDOM_LEN))
}

/// Whether `s` is `prefix` followed by exactly `len` ASCII alphanumerics.
pub fn has_shape(s: &str, prefix: &str, len: usize) -> bool {
    s.strip_prefix(prefix)
        .is_some_and(|rest| rest.len() == len && rest.bytes().all(|b| b.is_ascii_alphanumeric()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_pinned() {
        // Clients and log scanners recognise these: changing one is a breaking change.
        assert_eq!(
            [SECRET, ENVIRONMENT, WORKSPACE, TOKEN_ID, TOKEN_SECRET, APP],
            ["st-", "en-", "ac-", "ak-", "as-", "ap-"]
        );
    }

    #[test]
    fn ids_have_their_shape_and_differ() {
        let a = new_id(SECRET);
        let b = new_id(SECRET);
        assert!(has_shape(&a, SECRET, ID_RANDOM_LEN), "{a}");
        assert_ne!(a, b);
        let s = new_token_secret();
        assert!(has_shape(&s, TOKEN_SECRET, TOKEN_SECRET_RANDOM_LEN));
        assert!(!has_shape("st-abc", SECRET, ID_RANDOM_LEN));
        assert!(!has_shape(
            "st-aaaaaaaaaaaaaaaaaaaaa!",
            SECRET,
            ID_RANDOM_LEN
        ));
    }
}
