//! Mounts: the files the client uploads for a function (its own source file
//! and local packages), content-addressed per workspace, and the manifests
//! that place them in a container's directory.
//!
//! The client asks which contents are missing (`MountBatchedCheckExistence`),
//! uploads those (`MountPutFile`, checked against their SHA-256) and then
//! names the files of a mount (`MountGetOrCreate`). Contents are kept per
//! workspace, so that a caller cannot learn whether another tenant holds
//! some file. The client's own package (`modal-client-mount-*`) is not
//! uploaded: containers run the configured interpreter's `modal`.

use std::{
    collections::HashMap,
    path::{Component, Path, PathBuf},
    sync::Arc,
};

use latchkey_core::{ids, Error};
use latchkey_proto::api::{self, ObjectCreationType};
use latchkey_service::Caller;
use sha2::{Digest, Sha256};

use crate::{echo, Functions};

/// Bytes of uploaded files kept, over all workspaces.
const MAX_FILE_BYTES: usize = 1024 * 1024 * 1024;
/// Largest single file (a larger one comes as a blob, at most this).
pub(crate) const MAX_FILE: usize = crate::MAX_BLOB_BYTES;
/// Most files in one mount.
const MAX_MOUNT_FILES: usize = 10_000;
/// The directory files are mounted under in a container; a container runs
/// there (so `import app` finds `/root/app.py`).
pub(crate) const ROOT: &str = "/root";
/// The name prefix of the client's own package mount.
const CLIENT_MOUNT_PREFIX: &str = "modal-client-mount-";
/// The id answered for the client's package mount: never materialised.
pub(crate) const CLIENT_MOUNT_ID: &str = "mo-latchkeyclientmount0";

#[derive(Default)]
pub(crate) struct Mounts {
    /// (workspace id, sha256 hex) → contents.
    files: HashMap<(String, String), Arc<Vec<u8>>>,
    bytes: usize,
    pub(crate) manifests: HashMap<String, Manifest>,
}

/// The files of one mount.
pub(crate) struct Manifest {
    pub(crate) workspace_id: String,
    /// Path relative to [`ROOT`], content hash, mode.
    pub(crate) files: Vec<(PathBuf, String, u32)>,
}

fn check_sha(sha: &str) -> Result<(), Error> {
    if sha.len() == 64
        && sha
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "'{}' is not a lowercase hex SHA-256",
            echo(sha)
        )))
    }
}

/// A mount's file name as a path under [`ROOT`]: absolute, under it, with
/// no `..` or other tricks.
fn relative_path(filename: &str) -> Result<PathBuf, Error> {
    let bad = || {
        Error::invalid(format!(
            "latchkey places function files under {ROOT}/ only; '{}' is not a plain path there",
            echo(filename)
        ))
    };
    let rest = Path::new(filename).strip_prefix(ROOT).map_err(|_| bad())?;
    let mut out = PathBuf::new();
    for component in rest.components() {
        match component {
            Component::Normal(part) => out.push(part),
            _ => return Err(bad()),
        }
    }
    if out.as_os_str().is_empty() || filename.contains('\0') {
        return Err(bad());
    }
    Ok(out)
}

/// Drops the mounts and files no function of a running app uses (apps that
/// stopped, uploads whose run never created its function): called when the
/// files fill their budget.
fn collect_garbage(state: &mut crate::State) {
    use std::collections::HashSet;
    let live_mounts: HashSet<&String> = state
        .functions
        .values()
        .filter(|f| state.apps.get(&f.app_id).is_some_and(crate::App::running))
        .filter_map(|f| f.definition.as_ref())
        .flat_map(|d| d.mount_ids.iter())
        .collect();
    let mounts = &mut state.mounts;
    mounts.manifests.retain(|id, _| live_mounts.contains(id));
    let live_files: HashSet<(String, String)> = mounts
        .manifests
        .values()
        .flat_map(|m| {
            m.files
                .iter()
                .map(|(_, sha, _)| (m.workspace_id.clone(), sha.clone()))
        })
        .collect();
    let mut freed = 0;
    mounts.files.retain(|key, data| {
        let keep = live_files.contains(key);
        if !keep {
            freed += data.len();
        }
        keep
    });
    mounts.bytes -= freed;
    tracing::info!(
        freed_bytes = freed,
        "dropped function files no running app uses"
    );
}

impl Functions {
    /// `MountBatchedCheckExistence`: which of these contents the caller's
    /// workspace lacks.
    pub fn mount_missing(&self, caller: &Caller, hashes: &[String]) -> Result<Vec<String>, Error> {
        caller.require(latchkey_service::Role::Developer, "upload function files")?;
        let state = self.state();
        let mut missing = Vec::new();
        for sha in hashes {
            check_sha(sha)?;
            let key = (caller.workspace_id().to_owned(), sha.clone());
            if !state.mounts.files.contains_key(&key) {
                missing.push(sha.clone());
            }
        }
        Ok(missing)
    }

    /// `MountPutFile`: stores contents under their hash.
    pub fn mount_put_file(
        &self,
        caller: &Caller,
        req: api::MountPutFileRequest,
    ) -> Result<api::MountPutFileResponse, Error> {
        caller.require(latchkey_service::Role::Developer, "upload function files")?;
        check_sha(&req.sha256_hex)?;
        let data = match req.data_oneof {
            Some(api::mount_put_file_request::DataOneof::Data(data)) => data,
            Some(api::mount_put_file_request::DataOneof::DataBlobId(blob)) => {
                self.blob_data(caller.workspace_id(), &blob)?.to_vec()
            }
            // A question: does the file exist?
            None => {
                let key = (caller.workspace_id().to_owned(), req.sha256_hex);
                return Ok(api::MountPutFileResponse {
                    exists: self.state().mounts.files.contains_key(&key),
                    checked_at: None,
                });
            }
        };
        if data.len() > MAX_FILE {
            return Err(Error::invalid(format!(
                "A function file is at most {} MiB",
                MAX_FILE / (1024 * 1024)
            )));
        }
        let actual: String = Sha256::digest(&data)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        if actual != req.sha256_hex {
            return Err(Error::invalid(format!(
                "The file's contents do not match its SHA-256 {}",
                req.sha256_hex
            )));
        }
        let mut state = self.state();
        let key = (caller.workspace_id().to_owned(), actual);
        if !state.mounts.files.contains_key(&key) {
            if state.mounts.bytes + data.len() > MAX_FILE_BYTES {
                collect_garbage(&mut state);
            }
            if state.mounts.bytes + data.len() > MAX_FILE_BYTES {
                return Err(Error::resource_exhausted(format!(
                    "This server holds {} MiB of function files, its limit",
                    MAX_FILE_BYTES / (1024 * 1024)
                )));
            }
            state.mounts.bytes += data.len();
            state.mounts.files.insert(key, Arc::new(data));
        }
        Ok(api::MountPutFileResponse {
            exists: true,
            checked_at: None,
        })
    }

    /// `MountGetOrCreate`: a mount of uploaded files, owned by an app; the
    /// client's package mount is answered with a placeholder.
    pub fn mount_get_or_create(
        &self,
        caller: &Caller,
        req: &api::MountGetOrCreateRequest,
    ) -> Result<api::MountGetOrCreateResponse, Error> {
        caller.require(latchkey_service::Role::Developer, "create mounts")?;
        if req.deployment_name.starts_with(CLIENT_MOUNT_PREFIX) {
            return Ok(api::MountGetOrCreateResponse {
                mount_id: CLIENT_MOUNT_ID.to_owned(),
                handle_metadata: Some(api::MountHandleMetadata::default()),
            });
        }
        let kind = ObjectCreationType::try_from(req.object_creation_type)
            .unwrap_or(ObjectCreationType::Unspecified);
        if !req.deployment_name.is_empty()
            || !matches!(
                kind,
                ObjectCreationType::AnonymousOwnedByApp | ObjectCreationType::Ephemeral
            )
        {
            return Err(Error::invalid(format!(
                "latchkey does not support named mounts ('{}'): add local files to the image \
                 (image.add_local_file / add_local_python_source)",
                echo(&req.deployment_name)
            )));
        }
        if req.files.len() > MAX_MOUNT_FILES {
            return Err(Error::invalid(format!(
                "A mount holds at most {MAX_MOUNT_FILES} files"
            )));
        }
        let mut state = self.state();
        if !req.app_id.is_empty() {
            Self::app_of(&state, caller, &req.app_id)?;
        }
        let mut files = Vec::with_capacity(req.files.len());
        let mut summary = Sha256::new();
        for file in &req.files {
            check_sha(&file.sha256_hex)?;
            let path = relative_path(&file.filename)?;
            let key = (caller.workspace_id().to_owned(), file.sha256_hex.clone());
            if !state.mounts.files.contains_key(&key) {
                return Err(Error::failed_precondition(format!(
                    "The contents of {} were not uploaded (MountPutFile)",
                    echo(&file.filename)
                )));
            }
            summary.update(file.filename.as_bytes());
            summary.update(file.sha256_hex.as_bytes());
            files.push((path, file.sha256_hex.clone(), file.mode.unwrap_or(0o644)));
        }
        let id = ids::new_id("mo-");
        state.mounts.manifests.insert(
            id.clone(),
            Manifest {
                workspace_id: caller.workspace_id().to_owned(),
                files,
            },
        );
        Ok(api::MountGetOrCreateResponse {
            mount_id: id,
            handle_metadata: Some(api::MountHandleMetadata {
                content_checksum_sha256_hex: summary
                    .finalize()
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect(),
            }),
        })
    }

    /// Writes the files of `mount_ids` under `root` (the container's
    /// [`ROOT`]). Mounts of another workspace are not found.
    pub(crate) fn materialise(
        &self,
        workspace_id: &str,
        mount_ids: &[String],
        root: &Path,
    ) -> Result<(), Error> {
        use std::os::unix::fs::PermissionsExt;
        let files: Vec<(PathBuf, Arc<Vec<u8>>, u32)> = {
            let state = self.state();
            let mut out = Vec::new();
            for id in mount_ids {
                if id == CLIENT_MOUNT_ID {
                    continue;
                }
                let manifest = state
                    .mounts
                    .manifests
                    .get(id)
                    .filter(|m| m.workspace_id == workspace_id)
                    .ok_or_else(|| Error::not_found(format!("Mount '{}' not found", echo(id))))?;
                for (path, sha, mode) in &manifest.files {
                    let data = state
                        .mounts
                        .files
                        .get(&(workspace_id.to_owned(), sha.clone()))
                        .cloned()
                        .ok_or_else(|| {
                            Error::not_found(format!(
                                "The contents of {ROOT}/{} are gone",
                                path.display()
                            ))
                        })?;
                    out.push((path.clone(), data, *mode));
                }
            }
            out
        };
        let io = |e: std::io::Error| {
            tracing::error!(error = %e, "cannot write a container's files");
            Error::internal("Cannot prepare the container's files on the server")
        };
        for (path, data, mode) in files {
            let target = root.join(&path);
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent).map_err(io)?;
            }
            std::fs::write(&target, data.as_slice()).map_err(io)?;
            std::fs::set_permissions(
                &target,
                std::fs::Permissions::from_mode(mode & 0o755 | 0o400),
            )
            .map_err(io)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_paths_stay_under_root() {
        assert_eq!(
            relative_path("/root/app.py").unwrap(),
            PathBuf::from("app.py")
        );
        assert_eq!(
            relative_path("/root/pkg/mod.py").unwrap(),
            PathBuf::from("pkg/mod.py")
        );
        for bad in [
            "/root/../etc/passwd",
            "/etc/passwd",
            "root/app.py",
            "/root",
            "/rootx/a",
        ] {
            assert!(relative_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn hashes_are_lowercase_hex_sha256() {
        assert!(check_sha(&"a".repeat(64)).is_ok());
        assert!(check_sha(&"A".repeat(64)).is_err());
        assert!(check_sha("abc").is_err());
        assert!(check_sha(&"g".repeat(64)).is_err());
    }
}
