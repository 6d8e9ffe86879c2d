//! Object ids and token parts: a kind prefix plus random base62 characters
//! from the operating system's generator.

use rand::{rngs::OsRng, RngCore};

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

/// The characters of ids and token secrets.
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// `len` random base62 characters from one read of the operating system's
/// generator (another only in the rare case that one falls short).
///
/// Written here rather than with `rand`'s `Alphanumeric`: that draws a
/// `u32` per character, and `OsRng` makes a system call per draw, 23 or so
/// for each id, on the path of every create.
fn random_base62(len: usize) -> String {
    // Bytes below 4 × 62 map evenly onto the alphabet; the others are
    // dropped, so that every character is equally likely.
    const EVEN: u8 = 4 * 62;
    let mut out = String::with_capacity(len);
    let mut bytes = [0u8; 64];
    while out.len() < len {
        OsRng.fill_bytes(&mut bytes);
        let wanted = len - out.len();
        out.extend(
            bytes
                .iter()
                .filter(|&&b| b < EVEN)
                .take(wanted)
                .map(|&b| char::from(BASE62[usize::from(b % 62)])),
        );
    }
    out
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

    /// Every character is about equally likely: dropping no byte (mapping
    /// all 256 onto 62 characters) would make the first eight about a fifth
    /// more likely than the rest, far outside these bounds (each is more
    /// than six standard deviations of an even draw).
    #[test]
    fn every_character_is_equally_likely() {
        let mut counts = [0u32; 62];
        let ids = 20_000;
        for _ in 0..ids {
            for b in random_base62(ID_RANDOM_LEN).bytes() {
                let i = BASE62
                    .iter()
                    .position(|&c| c == b)
                    .expect("a base62 character");
                counts[i] += 1;
            }
        }
        let expected = f64::from(ids * u32::try_from(ID_RANDOM_LEN).unwrap()) / 62.0;
        for (c, n) in BASE62.iter().zip(counts) {
            let ratio = f64::from(n) / expected;
            assert!(
                (0.92..1.08).contains(&ratio),
                "'{}' drawn {n} times, {ratio:.3} × the even share",
                char::from(*c)
            );
        }
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
