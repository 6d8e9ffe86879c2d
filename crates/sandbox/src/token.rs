//! Short-lived, JWT-shaped bearer tokens (HS256) that this server issues and
//! checks itself.
//!
//! Modal's client parses the `exp` claim of the tokens it gets (to refresh
//! them in time), so they must be real JWTs; nothing but this server ever
//! verifies them. The signing key is random per server process: sandboxes
//! live in the process's memory, so a token must not outlive it anyway.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use hmac::{Hmac, Mac};
use rand::{rngs::OsRng, RngCore};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use zeroize::Zeroizing;

type HmacSha256 = Hmac<Sha256>;

/// The fixed JOSE header: `{"alg":"HS256","typ":"JWT"}`.
const HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

/// What a token says. Short claim names keep tokens small.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Claims {
    /// What the token is for: [`AUDIENCE_ROUTER`] or [`AUDIENCE_CLIENT`].
    pub(crate) aud: String,
    /// Subject: the task id (router tokens) or the API token id (client tokens).
    pub(crate) sub: String,
    /// Workspace id.
    pub(crate) wsp: String,
    /// Issued at, seconds since the epoch.
    pub(crate) iat: u64,
    /// Expires at, seconds since the epoch.
    pub(crate) exp: u64,
}

/// Audience of the tokens that open a sandbox's command router.
pub(crate) const AUDIENCE_ROUTER: &str = "latchkey:task-command-router";
/// Audience of the tokens `AuthTokenGet` hands out.
pub(crate) const AUDIENCE_CLIENT: &str = "latchkey:client";

/// Signs and verifies tokens with one random key.
pub(crate) struct Signer {
    key: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer { key: <redacted> }")
    }
}

/// Why a token was refused (never shown to the caller in detail).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Invalid {
    Malformed,
    BadSignature,
    Expired,
    WrongAudience,
}

impl Signer {
    /// A signer with a fresh key from the OS generator.
    pub(crate) fn random() -> Self {
        let mut key = Zeroizing::new([0u8; 32]);
        OsRng.fill_bytes(key.as_mut());
        Self { key }
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC accepts keys of any length.
        HmacSha256::new_from_slice(self.key.as_ref()).expect("HMAC takes any key length")
    }

    /// `header.payload.signature`, base64url without padding.
    pub(crate) fn sign(&self, claims: &Claims) -> String {
        let payload = serde_json::to_vec(claims).expect("claims serialize");
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(HEADER),
            URL_SAFE_NO_PAD.encode(payload)
        );
        let mut mac = self.mac();
        mac.update(signing_input.as_bytes());
        let signature = mac.finalize().into_bytes();
        format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature))
    }

    /// The claims of a token this signer made for `audience`, if it has not
    /// expired at `now` (seconds since the epoch).
    pub(crate) fn verify(&self, token: &str, audience: &str, now: u64) -> Result<Claims, Invalid> {
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(Invalid::Malformed);
        };
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| Invalid::Malformed)?;
        let mut mac = self.mac();
        mac.update(header.as_bytes());
        mac.update(b".");
        mac.update(payload.as_bytes());
        // Constant-time comparison.
        mac.verify_slice(&signature)
            .map_err(|_| Invalid::BadSignature)?;
        let payload = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| Invalid::Malformed)?;
        let claims: Claims = serde_json::from_slice(&payload).map_err(|_| Invalid::Malformed)?;
        if claims.aud != audience {
            return Err(Invalid::WrongAudience);
        }
        if claims.exp <= now {
            return Err(Invalid::Expired);
        }
        Ok(claims)
    }
}

/// Seconds since the Unix epoch.
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: u64) -> Claims {
        Claims {
            aud: AUDIENCE_ROUTER.to_owned(),
            sub: "ta-1".to_owned(),
            wsp: "ac-1".to_owned(),
            iat: 100,
            exp,
        }
    }

    #[test]
    fn round_trips_and_is_a_jwt_with_numeric_exp() {
        let signer = Signer::random();
        let token = signer.sign(&claims(2_000));
        assert_eq!(
            signer.verify(&token, AUDIENCE_ROUTER, 1_000),
            Ok(claims(2_000))
        );
        // What Modal's client does: split, base64url-decode the middle, read `exp`.
        let payload = token.split('.').nth(1).unwrap();
        let json: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        assert_eq!(json["exp"], 2_000);
        let header = URL_SAFE_NO_PAD
            .decode(token.split('.').next().unwrap())
            .unwrap();
        assert_eq!(header, HEADER.as_bytes());
    }

    #[test]
    fn refuses_expired_forged_foreign_and_malformed_tokens() {
        let signer = Signer::random();
        let token = signer.sign(&claims(2_000));
        assert_eq!(
            signer.verify(&token, AUDIENCE_ROUTER, 2_000),
            Err(Invalid::Expired)
        );
        assert_eq!(
            signer.verify(&token, AUDIENCE_CLIENT, 1_000),
            Err(Invalid::WrongAudience)
        );
        // Another server's key.
        assert_eq!(
            Signer::random().verify(&token, AUDIENCE_ROUTER, 1_000),
            Err(Invalid::BadSignature)
        );
        // A changed payload with the old signature.
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        let mut forged = claims(9_999);
        forged.sub = "ta-other".to_owned();
        parts[1] = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap());
        assert_eq!(
            signer.verify(&parts.join("."), AUDIENCE_ROUTER, 1_000),
            Err(Invalid::BadSignature)
        );
        for bad in ["", "a.b", "a.b.c.d", "x.y.%%%"] {
            assert!(signer.verify(bad, AUDIENCE_ROUTER, 1_000).is_err(), "{bad}");
        }
    }

    #[test]
    fn debug_hides_the_key() {
        assert_eq!(
            format!("{:?}", Signer::random()),
            "Signer { key: <redacted> }"
        );
    }
}
