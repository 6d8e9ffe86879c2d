//! Envelope encryption of secret contents.
//!
//! Every version of a secret is sealed with AES-256-GCM under its own random
//! data key; the data key is wrapped (also AES-256-GCM) under the master key.
//! Both seals bind associated data naming the workspace, the secret id and the
//! version, so a ciphertext copied onto another row, another secret or an older
//! version fails to open instead of being served. Sealed bytes are laid out as
//! `nonce (12 bytes) ‖ ciphertext ‖ tag (16 bytes)`.
//!
//! The master key never leaves [`MasterKey`]: it is zeroed on drop, redacted
//! in `Debug`, and only its [`id`](MasterKey::id) (a truncated SHA-256) is
//! stored, so that a later key can be told apart during rotation.

use std::fmt;

use aes_gcm::{
    aead::{Aead, KeyInit, Payload},
    Aes256Gcm, Nonce,
};
use base64::{engine::general_purpose::STANDARD, Engine as _};
use latchkey_core::{EnvDict, Error};
use rand::{rngs::OsRng, RngCore};
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, Zeroizing};

const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 12;

/// The master key: 32 random bytes, written as one line of standard base64.
#[derive(Clone)]
pub struct MasterKey {
    bytes: Zeroizing<[u8; KEY_LEN]>,
}

/// Why a master key could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MasterKeyError {
    /// The text is not standard base64.
    #[error("the master key is not valid base64")]
    NotBase64,
    /// The decoded key does not have 32 bytes.
    #[error("the master key must be 32 bytes of base64 (44 characters); it decodes to {0} bytes")]
    WrongLength(usize),
}

impl MasterKey {
    /// A new random key from the operating system's generator.
    pub fn generate() -> Self {
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        OsRng.fill_bytes(bytes.as_mut());
        Self { bytes }
    }

    /// Reads a key from its base64 form; surrounding white space is ignored.
    pub fn from_base64(text: &str) -> Result<Self, MasterKeyError> {
        let decoded = Zeroizing::new(
            STANDARD
                .decode(text.trim())
                .map_err(|_| MasterKeyError::NotBase64)?,
        );
        let array: [u8; KEY_LEN] = decoded
            .as_slice()
            .try_into()
            .map_err(|_| MasterKeyError::WrongLength(decoded.len()))?;
        Ok(Self {
            bytes: Zeroizing::new(array),
        })
    }

    /// The key in base64, for writing to a 0600 file.
    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(STANDARD.encode(self.bytes.as_ref()))
    }

    /// A public identifier of this key: the first 8 bytes of its SHA-256, in hex.
    pub fn id(&self) -> String {
        let digest = Sha256::digest(self.bytes.as_ref());
        digest[..8].iter().map(|b| format!("{b:02x}")).collect()
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(self.bytes.as_ref().into())
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterKey")
            .field("id", &self.id())
            .finish_non_exhaustive()
    }
}

/// What a sealed secret version is bound to.
#[derive(Debug, Clone, Copy)]
pub struct Binding<'a> {
    /// The workspace that owns the secret.
    pub workspace_id: &'a str,
    /// The secret's id.
    pub secret_id: &'a str,
    /// The version sealed.
    pub version: i64,
}

impl Binding<'_> {
    fn aad(&self, purpose: &str) -> Vec<u8> {
        format!(
            "latchkey/v1/{purpose}\0{}\0{}\0{}",
            self.workspace_id, self.secret_id, self.version
        )
        .into_bytes()
    }
}

/// A sealed secret version as stored: the wrapped data key and the ciphertext.
#[derive(Clone, PartialEq, Eq)]
pub struct Sealed {
    /// Id of the master key that wrapped the data key.
    pub key_id: String,
    /// The data key, sealed under the master key.
    pub wrapped_key: Vec<u8>,
    /// The contents, sealed under the data key.
    pub ciphertext: Vec<u8>,
}

impl fmt::Debug for Sealed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealed")
            .field("key_id", &self.key_id)
            .field("ciphertext_len", &self.ciphertext.len())
            .finish_non_exhaustive()
    }
}

fn seal_with(cipher: &Aes256Gcm, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let mut nonce = [0u8; NONCE_LEN];
    OsRng.fill_bytes(&mut nonce);
    let ciphertext = cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .expect("AES-GCM encryption cannot fail for inputs under 64 GiB");
    let mut out = Vec::with_capacity(NONCE_LEN + ciphertext.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ciphertext);
    out
}

fn open_with(cipher: &Aes256Gcm, aad: &[u8], sealed: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    if sealed.len() < NONCE_LEN {
        return None;
    }
    let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
    cipher
        .decrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: ciphertext,
                aad,
            },
        )
        .ok()
        .map(Zeroizing::new)
}

/// Seals and opens secret contents under a master key; once a store is
/// open, also holds its audit key (see [`crate::audit`]).
#[derive(Clone, Debug)]
pub struct Keyring {
    master: MasterKey,
    audit: Option<AuditKey>,
}

/// The key of the audit log's chain: random, stored wrapped by the master key.
#[derive(Clone)]
struct AuditKey(std::sync::Arc<Zeroizing<[u8; KEY_LEN]>>);

impl fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuditKey(..)")
    }
}

const AUDIT_KEY_AAD: &[u8] = b"latchkey/v1/audit-key";

impl Keyring {
    /// A keyring that seals under `master`.
    pub fn new(master: MasterKey) -> Self {
        Self {
            master,
            audit: None,
        }
    }

    /// A new random audit key, wrapped by the master key: what a store keeps.
    pub(crate) fn new_audit_key(&self) -> Vec<u8> {
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        OsRng.fill_bytes(key.as_mut());
        seal_with(&self.master.cipher(), AUDIT_KEY_AAD, key.as_ref())
    }

    /// This keyring with the audit key that `wrapped` holds; `None` when
    /// the master key does not open it.
    pub(crate) fn with_audit_key(mut self, wrapped: &[u8]) -> Option<Self> {
        let key = open_with(&self.master.cipher(), AUDIT_KEY_AAD, wrapped)
            .filter(|k| k.len() == KEY_LEN)?;
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        bytes.copy_from_slice(&key);
        self.audit = Some(AuditKey(std::sync::Arc::new(bytes)));
        Some(self)
    }

    /// The audit key, once the store is open.
    pub(crate) fn audit_key(&self) -> Result<&[u8], Error> {
        self.audit
            .as_ref()
            .map(|k| &k.0[..])
            .ok_or_else(|| Error::internal("the audit key is not loaded"))
    }

    /// The id of the master key in use.
    pub fn key_id(&self) -> String {
        self.master.id()
    }

    /// Seals `contents` for `binding` under a fresh data key.
    pub fn seal(&self, binding: Binding<'_>, contents: &EnvDict) -> Sealed {
        let plaintext = Zeroizing::new(
            serde_json::to_vec(contents).expect("a map of strings always serializes"),
        );
        let mut data_key = Zeroizing::new([0u8; KEY_LEN]);
        OsRng.fill_bytes(data_key.as_mut());
        let data_cipher = Aes256Gcm::new(data_key.as_ref().into());
        let ciphertext = seal_with(&data_cipher, &binding.aad("contents"), &plaintext);
        let wrapped_key = seal_with(
            &self.master.cipher(),
            &binding.aad("data-key"),
            data_key.as_ref(),
        );
        Sealed {
            key_id: self.master.id(),
            wrapped_key,
            ciphertext,
        }
    }

    /// Opens what [`seal`](Self::seal) made for the same `binding`.
    ///
    /// Fails with an internal error when the master key differs, the bytes were
    /// altered, or they belong to another secret, workspace or version.
    pub fn open(&self, binding: Binding<'_>, sealed: &Sealed) -> Result<EnvDict, Error> {
        let fail = || {
            tracing::error!(
                secret_id = binding.secret_id,
                version = binding.version,
                key_id = %sealed.key_id,
                "a secret failed to decrypt: wrong master key or altered row"
            );
            Error::internal(format!(
                "Secret '{}' cannot be decrypted with the server's master key",
                binding.secret_id
            ))
        };
        let data_key = open_with(
            &self.master.cipher(),
            &binding.aad("data-key"),
            &sealed.wrapped_key,
        )
        .filter(|k| k.len() == KEY_LEN)
        .ok_or_else(fail)?;
        let data_cipher = Aes256Gcm::new(data_key.as_slice().into());
        let plaintext = open_with(&data_cipher, &binding.aad("contents"), &sealed.ciphertext)
            .ok_or_else(fail)?;
        serde_json::from_slice(&plaintext).map_err(|_| fail())
    }

    /// A value that only this master key opens, stored once per store so that
    /// a start with another key is refused before anything is written.
    pub fn key_check(&self) -> Vec<u8> {
        seal_with(&self.master.cipher(), KEY_CHECK_AAD, KEY_CHECK_PLAINTEXT)
    }

    /// Whether `check` was made by [`key_check`](Self::key_check) with this key.
    pub fn verify_key_check(&self, check: &[u8]) -> bool {
        open_with(&self.master.cipher(), KEY_CHECK_AAD, check)
            .is_some_and(|p| p.as_slice() == KEY_CHECK_PLAINTEXT)
    }
}

const KEY_CHECK_AAD: &[u8] = b"latchkey/v1/key-check";
const KEY_CHECK_PLAINTEXT: &[u8] = b"latchkey master key check";

/// SHA-256 of a token secret, the only form in which a token secret is stored.
///
/// Token secrets carry about 190 random bits, so a fast hash is the right
/// choice here: a slow password hash would only slow every request.
pub fn hash_token_secret(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Compares two token hashes in constant time.
pub fn token_hash_matches(stored: &[u8], presented: &[u8; 32]) -> bool {
    use subtle::ConstantTimeEq;
    stored.ct_eq(presented.as_slice()).into()
}

impl Drop for Sealed {
    fn drop(&mut self) {
        // The wrapped key is not secret without the master key, but there is
        // no reason to leave it lying around either.
        self.wrapped_key.zeroize();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dict() -> EnvDict {
        [("API_KEY".to_owned(), "hunter2-value".to_owned())].into()
    }

    fn binding(secret_id: &str, version: i64) -> Binding<'_> {
        Binding {
            workspace_id: "ac-1",
            secret_id,
            version,
        }
    }

    #[test]
    fn round_trip_and_no_plaintext() {
        let ring = Keyring::new(MasterKey::generate());
        let sealed = ring.seal(binding("st-1", 1), &dict());
        assert!(!sealed
            .ciphertext
            .windows(b"hunter2".len())
            .any(|w| w == b"hunter2"));
        assert_eq!(ring.open(binding("st-1", 1), &sealed).unwrap(), dict());
    }

    #[test]
    fn binding_is_enforced() {
        let ring = Keyring::new(MasterKey::generate());
        let sealed = ring.seal(binding("st-1", 1), &dict());
        assert!(ring.open(binding("st-2", 1), &sealed).is_err());
        assert!(ring.open(binding("st-1", 2), &sealed).is_err());
        let other_ws = Binding {
            workspace_id: "ac-2",
            ..binding("st-1", 1)
        };
        assert!(ring.open(other_ws, &sealed).is_err());
        let mut tampered = sealed;
        *tampered.ciphertext.last_mut().unwrap() ^= 1;
        assert!(ring.open(binding("st-1", 1), &tampered).is_err());
    }

    #[test]
    fn another_master_key_fails() {
        let ring = Keyring::new(MasterKey::generate());
        let other = Keyring::new(MasterKey::generate());
        let sealed = ring.seal(binding("st-1", 1), &dict());
        let err = other.open(binding("st-1", 1), &sealed).unwrap_err();
        assert!(!err.message().contains("hunter2"));
        assert!(ring.verify_key_check(&ring.key_check()));
        assert!(!other.verify_key_check(&ring.key_check()));
    }

    #[test]
    fn master_key_text_form() {
        let key = MasterKey::generate();
        let text = key.to_base64();
        assert_eq!(text.len(), 44);
        assert_eq!(
            MasterKey::from_base64(&format!("{}\n", *text))
                .unwrap()
                .id(),
            key.id()
        );
        assert!(matches!(
            MasterKey::from_base64("c2hvcnQ="),
            Err(MasterKeyError::WrongLength(5))
        ));
        assert!(matches!(
            MasterKey::from_base64("!!"),
            Err(MasterKeyError::NotBase64)
        ));
        let debug = format!("{key:?}");
        assert!(!debug.contains(text.as_str()), "{debug}");
    }

    #[test]
    fn token_hashes_compare() {
        let h = hash_token_secret("as-abc");
        assert!(token_hash_matches(&h, &hash_token_secret("as-abc")));
        assert!(!token_hash_matches(&h, &hash_token_secret("as-abd")));
        assert!(!token_hash_matches(&h[..31], &h));
    }
}
