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
    sync::Arc,
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
    /// A second key for a rotation across replicas
    /// (`--next-master-key-file` or `--previous-master-key-file`).
    pub extra: Option<ExtraKey>,
}

/// What a second key given at start is to the master key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtraKeyRole {
    /// The key a rotation moves to: opened, not sealed under yet (the
    /// first round of restarts of a rotation across replicas).
    Next,
    /// The key a rotation moves from: opened, no longer sealed under (the
    /// second round; the rotation may then be finished on this server).
    Previous,
}

/// A second master key given at start, for a rotation across replicas.
#[derive(Clone)]
pub struct ExtraKey {
    /// What it is to the master key.
    pub role: ExtraKeyRole,
    /// Its base64 text.
    pub text: Zeroizing<String>,
    /// Where it came from (a file name or a variable), for errors.
    pub origin: String,
}

impl std::fmt::Debug for ExtraKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExtraKey")
            .field("role", &self.role)
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
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

/// Name of the new key of an unfinished rotation, beside `master.key`.
pub const NEW_MASTER_KEY_FILE: &str = "master.key.new";
/// Name of the previous key, kept beside `master.key` during a rotation.
pub const OLD_MASTER_KEY_FILE: &str = "master.key.old";

/// The keys a server starts with.
#[derive(Debug)]
pub struct StartKeys {
    /// What the store is opened with: the current key, and during an
    /// unfinished rotation the new key with the current one as previous.
    pub keyring: latchkey_store::crypto::Keyring,
    /// The default key files, when the key is `DIR/master.key` (the server
    /// may then rotate it online).
    pub files: Option<Arc<DataDirKeyFiles>>,
    /// The new key of a rotation to resume.
    pub resume: Option<MasterKey>,
    /// With a previous key given at start (a rotation across replicas):
    /// what lets `latchkey key rotate` finish that rotation on this server.
    pub replica: Option<Arc<ReplicaRotation>>,
}

/// The master key of a start: as [`master_key`], and with the default key
/// file, the new key of an unfinished rotation (`master.key.new`) too.
pub fn start_keys(
    data_dir: &Path,
    sources: &MasterKeySources,
    store_exists: bool,
) -> Result<StartKeys> {
    use latchkey_store::crypto::Keyring;
    if let Some(extra) = &sources.extra {
        return replica_keys(data_dir, sources, extra, store_exists);
    }
    if sources.file.is_some() || sources.env.is_some() {
        return Ok(StartKeys {
            keyring: Keyring::new(master_key(data_dir, sources, store_exists)?),
            files: None,
            resume: None,
            replica: None,
        });
    }
    let files = Arc::new(DataDirKeyFiles {
        dir: data_dir.to_owned(),
    });
    let current = master_key(data_dir, sources, store_exists)?;
    match files.read(NEW_MASTER_KEY_FILE)? {
        Some(new) => Ok(StartKeys {
            keyring: Keyring::rotating(new.clone(), current),
            files: Some(files),
            resume: Some(new),
            replica: None,
        }),
        None => Ok(StartKeys {
            keyring: Keyring::new(current),
            files: Some(files),
            resume: None,
            replica: None,
        }),
    }
}

/// The keys of a replica started with a second key: both open the store;
/// new rows are sealed under the master key. Refused unless the master key
/// is given by `--master-key-file` or `LATCHKEY_MASTER_KEY` (a data dir's
/// `master.key` rotates online on its own), and when both keys are the same.
fn replica_keys(
    data_dir: &Path,
    sources: &MasterKeySources,
    extra: &ExtraKey,
    store_exists: bool,
) -> Result<StartKeys> {
    use latchkey_store::crypto::Keyring;
    let flag = match extra.role {
        ExtraKeyRole::Next => "--next-master-key-file (or LATCHKEY_NEXT_MASTER_KEY)",
        ExtraKeyRole::Previous => "--previous-master-key-file (or LATCHKEY_PREVIOUS_MASTER_KEY)",
    };
    if sources.file.is_none() && sources.env.is_none() {
        bail!(
            "{flag} is for a rotation across replicas whose key is given by --master-key-file or \
             LATCHKEY_MASTER_KEY; a data dir's master.key rotates online with `latchkey key rotate`"
        );
    }
    let current = master_key(data_dir, sources, store_exists)?;
    let other = MasterKey::from_base64(&extra.text)
        .with_context(|| format!("invalid master key in {}", extra.origin))?;
    if other.id() == current.id() {
        bail!(
            "{} holds the same key as the master key (id {}); {flag} takes the other key of the rotation",
            extra.origin,
            current.id()
        );
    }
    tracing::info!(
        key_id = %current.id(),
        other_key_id = %other.id(),
        role = ?extra.role,
        "opening the store with two master keys, sealing under the first"
    );
    Ok(StartKeys {
        keyring: Keyring::rotating(current.clone(), other),
        files: None,
        resume: None,
        replica: Some(Arc::new(ReplicaRotation {
            role: extra.role,
            current,
        })),
    })
}

/// How `latchkey key rotate` finishes a rotation across replicas on a
/// server started with a previous key: its master key is the new key, so
/// the store rewraps under it; there is no file to replace (the operator
/// restarts the replicas without the previous key afterwards).
pub struct ReplicaRotation {
    role: ExtraKeyRole,
    current: MasterKey,
}

impl std::fmt::Debug for ReplicaRotation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicaRotation")
            .field("role", &self.role)
            .field("key_id", &self.current.id())
            .finish_non_exhaustive()
    }
}

impl latchkey_service::KeyFiles for ReplicaRotation {
    fn prepare(&self) -> Result<MasterKey, latchkey_core::Error> {
        match self.role {
            ExtraKeyRole::Previous => Ok(self.current.clone()),
            ExtraKeyRole::Next => Err(latchkey_core::Error::failed_precondition(
                "This server still seals under its master key and only opens the next key \
                 (--next-master-key-file): restart every replica with --master-key-file NEW \
                 --previous-master-key-file OLD, then run `latchkey key rotate` against one of them \
                 (see \"Rotating the master key\" in the README)",
            )),
        }
    }

    fn finish(&self) -> Result<(), latchkey_core::Error> {
        Ok(())
    }
}

/// The default key files in the data dir: `master.key`, and during a
/// rotation `master.key.new` (the new key) and `master.key.old` (a copy of
/// the previous key). A crash at any point leaves files a start resumes
/// from: while `master.key.new` exists, `master.key` is still the previous
/// key and the store opens with both.
#[derive(Debug)]
pub struct DataDirKeyFiles {
    dir: PathBuf,
}

impl DataDirKeyFiles {
    /// The key in the file `name` of the data dir, if there is one.
    fn read(&self, name: &str) -> Result<Option<MasterKey>> {
        let path = self.dir.join(name);
        if !path.exists() {
            return Ok(None);
        }
        let text = Zeroizing::new(
            fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?,
        );
        MasterKey::from_base64(&text)
            .with_context(|| format!("invalid master key in {}", path.display()))
            .map(Some)
    }

    fn prepare_files(&self) -> Result<MasterKey> {
        if let Some(new) = self.read(NEW_MASTER_KEY_FILE)? {
            return Ok(new);
        }
        let current = self.dir.join(paths::MASTER_KEY_FILE);
        let text = Zeroizing::new(
            fs::read(&current).with_context(|| format!("cannot read {}", current.display()))?,
        );
        // A copy left by a finished rotation names the key before it.
        let old = self.dir.join(OLD_MASTER_KEY_FILE);
        let _ = fs::remove_file(&old);
        write_private_file(&old, &text)?;
        let new = MasterKey::generate();
        let mut line = new.to_base64();
        line.push('\n');
        if let Err(e) = write_private_file(&self.dir.join(NEW_MASTER_KEY_FILE), line.as_bytes()) {
            let _ = fs::remove_file(&old);
            return Err(e);
        }
        sync_dir(&self.dir)?;
        Ok(new)
    }

    fn finish_files(&self) -> Result<()> {
        let new = self.dir.join(NEW_MASTER_KEY_FILE);
        let current = self.dir.join(paths::MASTER_KEY_FILE);
        fs::rename(&new, &current).with_context(|| {
            format!("cannot rename {} over {}", new.display(), current.display())
        })?;
        sync_dir(&self.dir)?;
        let _ = fs::remove_file(self.dir.join(OLD_MASTER_KEY_FILE));
        Ok(())
    }

    /// Removes the copy of the previous key that a finished rotation left
    /// when it stopped before removing it (the store opened without it).
    pub fn tidy(&self) {
        if !self.dir.join(NEW_MASTER_KEY_FILE).exists() {
            let _ = fs::remove_file(self.dir.join(OLD_MASTER_KEY_FILE));
        }
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot sync the data dir {}", dir.display()))
}

impl latchkey_service::KeyFiles for DataDirKeyFiles {
    fn prepare(&self) -> Result<MasterKey, latchkey_core::Error> {
        self.prepare_files().map_err(|e| {
            latchkey_core::Error::failed_precondition(format!(
                "cannot write the new master key in the data dir {}: {e:#}; nothing was changed",
                self.dir.display()
            ))
        })
    }

    fn finish(&self) -> Result<(), latchkey_core::Error> {
        self.finish_files().map_err(|e| {
            latchkey_core::Error::internal(format!(
                "every data key is under the new master key, but it could not replace master.key: {e:#}; \
                 {NEW_MASTER_KEY_FILE} holds it and the next start finishes the rotation"
            ))
        })
    }
}
