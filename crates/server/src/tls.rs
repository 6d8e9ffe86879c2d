//! TLS (`--tls-cert`, `--tls-key`): rustls with ALPN `h2` and `http/1.1`
//! on the one port, and a certificate that can be replaced while serving.
//!
//! The certificate and key are read and checked (both parse, the key is the
//! certificate's) before anything is served. [`Tls::reload`] reads them again
//! (on SIGHUP): new handshakes get the new pair, connections already open
//! keep theirs, and a pair that fails the same checks is refused, leaving the
//! one in use in place.

use std::{
    fmt, fs,
    path::{Path, PathBuf},
    sync::{Arc, PoisonError, RwLock},
};

use anyhow::{bail, Context, Result};
use tokio_rustls::{
    rustls::{
        self,
        crypto::CryptoProvider,
        pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer},
        server::{ClientHello, ResolvesServerCert},
        sign::CertifiedKey,
    },
    TlsAcceptor,
};

/// Where the certificate chain and its private key are (PEM files).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// `--tls-cert`: the server's certificate first, then any intermediates.
    pub cert: PathBuf,
    /// `--tls-key`: the certificate's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// The server's TLS set-up: an acceptor whose certificate can be reloaded.
#[derive(Clone)]
pub struct Tls {
    files: TlsFiles,
    current: Arc<CurrentKey>,
    acceptor: TlsAcceptor,
}

/// Shows the files, never the key.
impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// Reads and checks the certificate and key.
    ///
    /// # Errors
    ///
    /// A file that cannot be read, holds no PEM certificate or key, a key
    /// of a kind rustls cannot use, or a key that is not the certificate's:
    /// each error names the file and what is wrong with it.
    pub fn load(files: TlsFiles) -> Result<Self> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = load_pair(&files, &provider)?;
        let current = Arc::new(CurrentKey(RwLock::new(Arc::new(key))));
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .context("cannot set up TLS")?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(&current) as Arc<dyn ResolvesServerCert>);
        // gRPC needs HTTP/2; the dashboard and the API also serve HTTP/1.1.
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Self {
            files,
            current,
            acceptor: TlsAcceptor::from(Arc::new(config)),
        })
    }

    /// Reads the certificate and key again and serves them to new
    /// connections; on an error the pair in use stays.
    ///
    /// # Errors
    ///
    /// As [`load`](Self::load).
    pub fn reload(&self) -> Result<()> {
        let provider = rustls::crypto::ring::default_provider();
        let key = load_pair(&self.files, &provider)?;
        *self
            .current
            .0
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(key);
        Ok(())
    }

    /// The files it reads.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// What accepts a TCP connection with the current certificate.
    pub fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }
}

/// The certificate and key handed to each new handshake.
struct CurrentKey(RwLock<Arc<CertifiedKey>>);

impl fmt::Debug for CurrentKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CurrentKey")
    }
}

impl ResolvesServerCert for CurrentKey {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            &self.0.read().unwrap_or_else(PoisonError::into_inner),
        ))
    }
}

/// Reads the pair and checks that the key is the certificate's.
fn load_pair(files: &TlsFiles, provider: &CryptoProvider) -> Result<CertifiedKey> {
    let certs = read_certs(&files.cert)?;
    let key = read_key(&files.key)?;
    let signing_key = provider.key_provider.load_private_key(key).map_err(|e| {
        anyhow::anyhow!(
            "--tls-key {}: the private key cannot be used ({e}); use an RSA, ECDSA (P-256, P-384) or Ed25519 key",
            files.key.display()
        )
    })?;
    let pair = CertifiedKey::new(certs, signing_key);
    match pair.keys_match() {
        Ok(()) => Ok(pair),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => bail!(
            "--tls-key {} does not match --tls-cert {}: the private key is not the certificate's",
            files.key.display(),
            files.cert.display()
        ),
        Err(e) => bail!(
            "--tls-cert {}: the first certificate cannot be used ({e})",
            files.cert.display()
        ),
    }
}

fn read_file(path: &Path, flag: &str) -> Result<Vec<u8>> {
    fs::read(path).with_context(|| format!("{flag} {}: cannot read the file", path.display()))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let pem = read_file(path, "--tls-cert")?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            anyhow::anyhow!("--tls-cert {}: not a valid PEM file ({e})", path.display())
        })?;
    if certs.is_empty() {
        bail!(
            "--tls-cert {}: no certificate in it (expected PEM: -----BEGIN CERTIFICATE-----)",
            path.display()
        );
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    let pem = zeroize::Zeroizing::new(read_file(path, "--tls-key")?);
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => anyhow::anyhow!(
            "--tls-key {}: no private key in it (expected PEM: -----BEGIN PRIVATE KEY-----, \
             -----BEGIN RSA PRIVATE KEY----- or -----BEGIN EC PRIVATE KEY-----)",
            path.display()
        ),
        // Never the error's own text: it may quote a line of the key.
        _ => anyhow::anyhow!("--tls-key {}: not a valid PEM private key", path.display()),
    })
}
