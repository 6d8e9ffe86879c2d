//! Online rotation of the master key, asked for by an admin.
//!
//! The service checks who asks, records the event, gets the new key from
//! the server's [`KeyFiles`] (which keeps it where the next start finds
//! it), then has the store rewrap every data key in the background while it
//! keeps serving, and tells the key files when that is done.

use std::sync::Arc;

use latchkey_core::Error;
use latchkey_store::{crypto::MasterKey, RotationProgress};
use tokio::sync::mpsc::{self, Receiver};

use crate::{Caller, Service};

/// The workspace the server makes at its first start (see `backup`).
const FIRST_WORKSPACE: &str = "default";

/// Data keys rewrapped per transaction.
pub const ROTATION_BATCH: u32 = 500;

/// Where the server keeps its master key, for a rotation: the server
/// supplies this when its key is a file it may replace.
pub trait KeyFiles: Send + Sync {
    /// The new key, written where a restart finds it (beside the current
    /// key) before anything in the store changes; the same key again when
    /// an unfinished rotation is resumed. Fails, changing nothing, when
    /// the key cannot be written.
    fn prepare(&self) -> Result<MasterKey, Error>;

    /// Every data key is under the new key: it replaces the current one.
    fn finish(&self) -> Result<(), Error>;
}

/// What a rotation running in the background reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RotationEvent {
    /// Data keys rewrapped so far, of the total.
    Progress(RotationProgress),
    /// Done: the id of the new master key, now the only one.
    Done {
        /// The new key's id.
        key_id: String,
    },
    /// Stopped; running the rotation again resumes it.
    Failed(String),
}

/// The server's key files, if it may rotate, and whether a rotation runs.
#[derive(Default)]
pub(crate) struct KeyRotation {
    files: Option<Arc<dyn KeyFiles>>,
    running: Arc<tokio::sync::Mutex<()>>,
}

impl Service {
    /// This service, able to rotate its master key through `files`. Without
    /// them (a key given by `LATCHKEY_MASTER_KEY` or `--master-key-file`) a
    /// rotation is refused, naming the offline procedure.
    #[must_use]
    pub fn with_key_files(mut self, files: Arc<dyn KeyFiles>) -> Self {
        self.keys = Arc::new(KeyRotation {
            files: Some(files),
            running: Arc::default(),
        });
        self
    }

    /// Starts rotating the master key (an admin token of the first
    /// workspace, not limited to some environments): the new key is made
    /// and kept, the event recorded, then the store rewraps in the
    /// background; the receiver tells its progress and its end. The
    /// rotation goes on if the receiver is dropped.
    pub async fn rotate_master_key(
        &self,
        caller: &Caller,
    ) -> Result<Receiver<RotationEvent>, Error> {
        self.audited(caller, "key.rotate", crate::audit::Target::default(), async {
            caller.require_workspace_admin("rotate the master key")?;
            if caller.workspace().name != FIRST_WORKSPACE {
                return Err(Error::permission_denied(format!(
                    "The master key protects every workspace of the server: only an admin token of its \
                     first workspace, '{FIRST_WORKSPACE}', may rotate it"
                )));
            }
            let Some(files) = self.keys.files.clone() else {
                return Err(Error::failed_precondition(
                    "This server's master key was given by LATCHKEY_MASTER_KEY or --master-key-file, \
                     which the server cannot replace; rotate it offline: stop the server, run \
                     `latchkey key rotate --new-key-file NEW --master-key-file OLD --database URL`, \
                     then start the server with NEW; PostgreSQL replicas rotate online by restarting \
                     with --previous-master-key-file (see \"Rotating the master key\" in the README)",
                ));
            };
            let guard = self.keys.running.clone().try_lock_owned().map_err(|_| {
                Error::failed_precondition("A rotation of the master key is already running")
            })?;
            let new = files.prepare()?;
            self.record(caller.audit("key.rotate")).await?;
            tracing::info!(token_id = %caller.token().id, key_id = %new.id(), "master key rotation started");
            Ok(spawn_rotation(self.store.clone(), files, new, guard))
        })
        .await
    }
}

impl Service {
    /// Finishes, in the background, a rotation that a previous run of the
    /// server started (its key files hold the new key `new`): the store
    /// rewraps what is left, then the key files make `new` the key.
    /// Returns the receiver of its progress, `None` without key files.
    pub fn resume_key_rotation(&self, new: MasterKey) -> Option<Receiver<RotationEvent>> {
        let files = self.keys.files.clone()?;
        let guard = self.keys.running.clone().try_lock_owned().ok()?;
        tracing::info!(key_id = %new.id(), "resuming an unfinished master key rotation");
        Some(spawn_rotation(self.store.clone(), files, new, guard))
    }
}

/// Rewraps every data key under `new` in the background, then tells
/// `files`; the receiver gets its progress and its end.
fn spawn_rotation(
    store: Arc<dyn latchkey_store::Store>,
    files: Arc<dyn KeyFiles>,
    new: MasterKey,
    guard: tokio::sync::OwnedMutexGuard<()>,
) -> Receiver<RotationEvent> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        let _guard = guard;
        let report = |p| {
            let _ = tx.try_send(RotationEvent::Progress(p));
        };
        let key_id = new.id();
        let result = store.rotate_master_key(new, ROTATION_BATCH, &report).await;
        let end = match result.and_then(|_| files.finish()) {
            Ok(()) => {
                tracing::info!(key_id, "master key rotation done");
                RotationEvent::Done { key_id }
            }
            Err(e) => {
                tracing::error!(error = %e.message(), "master key rotation stopped");
                RotationEvent::Failed(e.message().to_owned())
            }
        };
        let _ = tx.send(end).await;
    });
    rx
}
