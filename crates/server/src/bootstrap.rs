//! First start and every later start: the data dir, the master key, and the
//! admin token.
//!
//! On the first start of an empty data dir latchkey writes `master.key` (a
//! random key, unless one is given) and `admin-token`, both 0600. A later
//! start reuses both and changes neither; a start whose key cannot decrypt
//! the store is refused by the store before anything is written.

use std::{
    fs,
    io::Write,
    os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
};

use anyhow::{bail, Context, Result};
use latchkey_core::{admin_token::AdminTokenFile, ids, paths};
use latchkey_store::{
    crypto::{hash_token_secret, MasterKey},
    NewToken, Role, Store,
};
use zeroize::Zeroizing;

/// Where the master key comes from. Two sources at once are an error.
#[derive(Debug, Clone, Default)]
pub struct MasterKeySources {
    /// `--master-key-file`.
    pub file: Option<PathBuf>,
    /// `LATCHKEY_MASTER_KEY` (base64). Not `Debug`-printed: see below.
    pub env: Option<Zeroizing<String>>,
}

/// Creates the data dir (0700) if it does not exist.
pub fn ensure_data_dir(dir: &Path) -> Result<()> {
    if !dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create the data dir {}", dir.display()))?;
    }
    Ok(())
}

/// The master key: given by exactly one of a file or the environment, else
/// `DIR/master.key`, generated only when the store does not exist yet (a
/// store without its key is an error, not a reason to make a new key).
pub fn master_key(
    data_dir: &Path,
    sources: &MasterKeySources,
    store_exists: bool,
) -> Result<MasterKey> {
    let parse = |text: &str, origin: &str| {
        MasterKey::from_base64(text).with_context(|| format!("invalid master key in {origin}"))
    };
    match (&sources.file, &sources.env) {
        (Some(_), Some(_)) => bail!(
            "the master key is given twice (--master-key-file and LATCHKEY_MASTER_KEY); give exactly one"
        ),
        (Some(file), None) => {
            let text = Zeroizing::new(
                fs::read_to_string(file)
                    .with_context(|| format!("cannot read the master key file {}", file.display()))?,
            );
            parse(&text, &file.display().to_string())
        }
        (None, Some(text)) => parse(text, "LATCHKEY_MASTER_KEY"),
        (None, None) => {
            let path = data_dir.join(paths::MASTER_KEY_FILE);
            if path.exists() {
                let text = Zeroizing::new(
                    fs::read_to_string(&path)
                        .with_context(|| format!("cannot read {}", path.display()))?,
                );
                return parse(&text, &path.display().to_string());
            }
            if store_exists {
                bail!(
                    "{} is missing and the store already exists; give the key it was created with \
                     (--master-key-file or LATCHKEY_MASTER_KEY)",
                    path.display()
                );
            }
            let key = MasterKey::generate();
            let mut line = key.to_base64();
            line.push('\n');
            write_private_file(&path, line.as_bytes())?;
            tracing::info!(path = %path.display(), key_id = %key.id(), "generated a new master key");
            Ok(key)
        }
    }
}

/// Writes `contents` to `path` with mode 0600, atomically (a temp file in the
/// same directory, synced, then renamed), refusing to replace an existing file.
pub fn write_private_file(path: &Path, contents: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot create {}", tmp.display()))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o600))?;
    if path.exists() {
        let _ = fs::remove_file(&tmp);
        bail!(
            "{} already exists; refusing to overwrite it",
            path.display()
        );
    }
    fs::rename(&tmp, path).with_context(|| format!("cannot create {}", path.display()))?;
    Ok(())
}

/// Creates the workspace, its default environment and the admin token when
/// the store is empty, writing `DIR/admin-token` before the token is stored
/// so that a token never exists without its file. Returns whether it did.
pub async fn bootstrap_store(store: &dyn Store, data_dir: &Path, server_url: &str) -> Result<bool> {
    let token_id = ids::new_id(ids::TOKEN_ID);
    let secret = Zeroizing::new(ids::new_token_secret());
    let admin = NewToken {
        id: token_id.clone(),
        workspace_id: ids::new_id(ids::WORKSPACE),
        name: "admin".to_owned(),
        role: Role::Admin,
        environments: None,
        secret_hash: hash_token_secret(&secret),
        // The bootstrap admin token never expires: it is how the data dir's
        // owner gets back in.
        expires_at: None,
    };
    let path = data_dir.join(paths::ADMIN_TOKEN_FILE);
    let staged = path.with_extension("new");
    let _ = fs::remove_file(&staged);
    let file = AdminTokenFile::new(Some(server_url.to_owned()), &token_id, &secret);
    write_private_file(&staged, file.render().as_bytes())?;
    let created = match store.bootstrap(&admin).await {
        Ok(created) => created,
        Err(e) => {
            let _ = fs::remove_file(&staged);
            bail!("cannot initialise the store: {e}");
        }
    };
    if created {
        if path.exists() {
            // An admin-token from an older store: keep it aside, never silently lose it.
            let aside = path.with_extension("old");
            fs::rename(&path, &aside)?;
            tracing::warn!(path = %aside.display(), "moved a stale admin-token aside");
        }
        fs::rename(&staged, &path).with_context(|| format!("cannot create {}", path.display()))?;
        tracing::info!(path = %path.display(), token_id = %token_id, "created workspace 'default', environment 'main' and the admin token");
    } else {
        fs::remove_file(&staged)?;
    }
    Ok(created)
}
