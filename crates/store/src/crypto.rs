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

use std::{
    fmt,
    sync::{Arc, RwLock},
};

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
///
/// During a master-key rotation the keyring holds two keys: it seals under
/// its current key and opens what either the current or the previous key
/// wrapped, chosen by the row's `key_id`. Clones share their keys, so that
/// [`rotate_to`](Self::rotate_to) on a store's keyring reaches every task of
/// that store at once.
#[derive(Clone)]
pub struct Keyring {
    keys: Arc<RwLock<Arc<Keys>>>,
    audit: Option<AuditKey>,
}

/// The keys of a keyring at one moment.
struct Keys {
    current: MasterKey,
    previous: Option<MasterKey>,
}

impl Keys {
    /// The key whose id is `key_id`, if this keyring holds it.
    fn by_id(&self, key_id: &str) -> Option<&MasterKey> {
        std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|k| k.id() == key_id)
    }

    /// The current key, then the previous one.
    fn all(&self) -> impl Iterator<Item = &MasterKey> {
        std::iter::once(&self.current).chain(&self.previous)
    }
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys = self.keys();
        f.debug_struct("Keyring")
            .field("key_id", &keys.current.id())
            .field(
                "previous_key_id",
                &keys.previous.as_ref().map(MasterKey::id),
            )
            .finish_non_exhaustive()
    }
}

/// The key of the audit log's chain: random, stored wrapped by the master key.
#[derive(Clone)]
struct AuditKey(Arc<Zeroizing<[u8; KEY_LEN]>>);

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
            keys: Arc::new(RwLock::new(Arc::new(Keys {
                current: master,
                previous: None,
            }))),
            audit: None,
        }
    }

    /// A keyring that seals under `current` and still opens what `previous`
    /// wrapped: the keys of a rotation from `previous` to `current`.
    pub fn rotating(current: MasterKey, previous: MasterKey) -> Self {
        let ring = Self::new(current);
        ring.set_keys(Keys {
            current: ring.keys().current.clone(),
            previous: Some(previous),
        });
        ring
    }

    fn keys(&self) -> Arc<Keys> {
        // A poisoned lock still holds a whole `Arc`: writers only swap it.
        self.keys
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn set_keys(&self, keys: Keys) {
        *self
            .keys
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(keys);
    }

    /// Starts sealing under `new`, keeping the current key to open what it
    /// wrapped. Nothing changes when `new` is already the current key (a
    /// rotation resumed). Refused while another rotation's previous key is
    /// still held, so that no key still needed is forgotten.
    pub fn rotate_to(&self, new: MasterKey) -> Result<(), Error> {
        let keys = self.keys();
        if keys.current.id() == new.id() {
            return Ok(());
        }
        if let Some(previous) = &keys.previous {
            return Err(Error::failed_precondition(format!(
                "a rotation from master key id {} to {} is not finished; finish it before starting another",
                previous.id(),
                keys.current.id()
            )));
        }
        self.set_keys(Keys {
            current: new,
            previous: Some(keys.current.clone()),
        });
        Ok(())
    }

    /// Forgets the previous key, once nothing in the store is wrapped by it.
    pub fn forget_previous(&self) {
        let current = self.keys().current.clone();
        self.set_keys(Keys {
            current,
            previous: None,
        });
    }

    /// The id of the previous key, during a rotation.
    pub fn previous_key_id(&self) -> Option<String> {
        self.keys().previous.as_ref().map(MasterKey::id)
    }

    /// A new random audit key, wrapped by the master key: what a store keeps.
    pub(crate) fn new_audit_key(&self) -> Vec<u8> {
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        OsRng.fill_bytes(key.as_mut());
        seal_with(&self.keys().current.cipher(), AUDIT_KEY_AAD, key.as_ref())
    }

    /// This keyring with the audit key that `wrapped` holds (wrapped by its
    /// current or its previous key); `None` when neither opens it.
    pub(crate) fn with_audit_key(mut self, wrapped: &[u8]) -> Option<Self> {
        let key = self.keys().all().find_map(|k| {
            open_with(&k.cipher(), AUDIT_KEY_AAD, wrapped).filter(|k| k.len() == KEY_LEN)
        })?;
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        bytes.copy_from_slice(&key);
        self.audit = Some(AuditKey(Arc::new(bytes)));
        Some(self)
    }

    /// The loaded audit key wrapped by the current master key: what the
    /// store keeps once a rotation is done.
    pub(crate) fn wrapped_audit_key(&self) -> Result<Vec<u8>, Error> {
        Ok(seal_with(
            &self.keys().current.cipher(),
            AUDIT_KEY_AAD,
            self.audit_key()?,
        ))
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
        self.keys().current.id()
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
        let keys = self.keys();
        let wrapped_key = seal_with(
            &keys.current.cipher(),
            &binding.aad("data-key"),
            data_key.as_ref(),
        );
        Sealed {
            key_id: keys.current.id(),
            wrapped_key,
            ciphertext,
        }
    }

    /// The data key of `sealed`, unwrapped by the key its `key_id` names.
    fn data_key(&self, binding: Binding<'_>, sealed: &Sealed) -> Option<Zeroizing<Vec<u8>>> {
        let keys = self.keys();
        let master = keys.by_id(&sealed.key_id)?;
        open_with(
            &master.cipher(),
            &binding.aad("data-key"),
            &sealed.wrapped_key,
        )
        .filter(|k| k.len() == KEY_LEN)
    }

    /// Opens what [`seal`](Self::seal) made for the same `binding`, under the
    /// current or the previous key.
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
        let data_key = self.data_key(binding, sealed).ok_or_else(fail)?;
        let data_cipher = Aes256Gcm::new(data_key.as_slice().into());
        let plaintext = open_with(&data_cipher, &binding.aad("contents"), &sealed.ciphertext)
            .ok_or_else(fail)?;
        serde_json::from_slice(&plaintext).map_err(|_| fail())
    }

    /// The data key of `sealed` wrapped anew by the current key: what
    /// `(key_id, wrapped_key)` become in a rotation (the ciphertext is
    /// unchanged). `None` when no key of this keyring opens it.
    pub fn rewrap(&self, binding: Binding<'_>, sealed: &Sealed) -> Option<(String, Vec<u8>)> {
        let data_key = self.data_key(binding, sealed)?;
        let keys = self.keys();
        Some((
            keys.current.id(),
            seal_with(&keys.current.cipher(), &binding.aad("data-key"), &data_key),
        ))
    }

    /// A value that only the current master key opens, stored once per store
    /// so that a start with another key is refused before anything is written.
    pub fn key_check(&self) -> Vec<u8> {
        seal_with(
            &self.keys().current.cipher(),
            KEY_CHECK_AAD,
            KEY_CHECK_PLAINTEXT,
        )
    }

    /// Whether `check` was made by [`key_check`](Self::key_check) with the
    /// current or the previous key (a store whose rotation is unfinished
    /// still holds the previous key's check).
    pub fn verify_key_check(&self, check: &[u8]) -> bool {
        self.keys().all().any(|k| {
            open_with(&k.cipher(), KEY_CHECK_AAD, check)
                .is_some_and(|p| p.as_slice() == KEY_CHECK_PLAINTEXT)
        })
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
    fn a_rotating_keyring_opens_both_keys_and_seals_under_the_new() {
        let old = MasterKey::generate();
        let new = MasterKey::generate();
        let before = Keyring::new(old.clone());
        let sealed_old = before.seal(binding("st-1", 1), &dict());
        let audit = before.new_audit_key();
        let check_old = before.key_check();

        let ring = Keyring::rotating(new.clone(), old.clone());
        let sealed_new = ring.seal(binding("st-1", 2), &dict());
        assert_eq!(sealed_new.key_id, new.id());
        assert_eq!(ring.open(binding("st-1", 1), &sealed_old).unwrap(), dict());
        assert_eq!(ring.open(binding("st-1", 2), &sealed_new).unwrap(), dict());
        assert!(ring.verify_key_check(&check_old));
        // The old key alone cannot open what the new key sealed.
        assert!(before.open(binding("st-1", 2), &sealed_new).is_err());

        // Rewrapping moves the row to the new key, ciphertext unchanged,
        // and only the new key opens it afterwards.
        let (key_id, wrapped_key) = ring.rewrap(binding("st-1", 1), &sealed_old).unwrap();
        assert_eq!(key_id, new.id());
        let moved = Sealed {
            key_id,
            wrapped_key,
            ciphertext: sealed_old.ciphertext.clone(),
        };
        assert_eq!(
            Keyring::new(new.clone())
                .open(binding("st-1", 1), &moved)
                .unwrap(),
            dict()
        );
        assert!(before.open(binding("st-1", 1), &moved).is_err());
        // The binding still holds through a rewrap.
        assert!(ring.rewrap(binding("st-2", 1), &sealed_old).is_none());

        // The audit key opens under either key and rewraps under the new.
        let ring = ring.with_audit_key(&audit).unwrap();
        let rewrapped = ring.wrapped_audit_key().unwrap();
        let only_new = Keyring::new(new).with_audit_key(&rewrapped).unwrap();
        assert_eq!(only_new.audit_key().unwrap(), ring.audit_key().unwrap());
        assert!(Keyring::new(old).with_audit_key(&rewrapped).is_none());

        // Once the previous key is forgotten, its rows no longer open.
        ring.forget_previous();
        assert!(ring.open(binding("st-1", 1), &sealed_old).is_err());
        assert!(!ring.verify_key_check(&check_old));
        assert!(ring.previous_key_id().is_none());
    }

    #[test]
    fn a_row_opens_only_by_the_key_its_key_id_names() {
        let old = MasterKey::generate();
        let new = MasterKey::generate();
        let ring = Keyring::rotating(new.clone(), old.clone());
        let mut sealed = Keyring::new(old).seal(binding("st-1", 1), &dict());
        sealed.key_id = new.id();
        assert!(ring.open(binding("st-1", 1), &sealed).is_err());
    }

    #[test]
    fn rotate_to_is_shared_by_clones_and_refuses_a_second_rotation() {
        let old = MasterKey::generate();
        let ring = Keyring::new(old.clone());
        let clone = ring.clone();
        let sealed_old = ring.seal(binding("st-1", 1), &dict());
        let new = MasterKey::generate();
        ring.rotate_to(new.clone()).unwrap();
        assert_eq!(clone.key_id(), new.id());
        assert_eq!(clone.previous_key_id(), Some(old.id()));
        assert_eq!(clone.open(binding("st-1", 1), &sealed_old).unwrap(), dict());
        // Resuming with the same new key changes nothing.
        ring.rotate_to(new.clone()).unwrap();
        assert_eq!(clone.previous_key_id(), Some(old.id()));
        let err = ring.rotate_to(MasterKey::generate()).unwrap_err();
        assert!(err.message().contains("not finished"), "{}", err.message());
        let debug = format!("{ring:?}");
        assert!(!debug.contains(new.to_base64().as_str()), "{debug}");
        assert!(!debug.contains(old.to_base64().as_str()), "{debug}");
    }

    #[test]
    fn token_hashes_compare() {
        let h = hash_token_secret("as-abc");
        assert!(token_hash_matches(&h, &hash_token_secret("as-abc")));
        assert!(!token_hash_matches(&h, &hash_token_secret("as-abd")));
        assert!(!token_hash_matches(&h[..31], &h));
    }
}
