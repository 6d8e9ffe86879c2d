//! Backups of the whole store, taken online by an admin.

use latchkey_core::Error;
use latchkey_store::copy::CopyError;
use tokio::sync::mpsc::Receiver;

use crate::{Caller, Service};

/// The workspace the server makes at its first start: its admins own the
/// server, and may take what spans every workspace.
const FIRST_WORKSPACE: &str = "default";

impl Service {
    /// Starts a backup of the whole store ([`latchkey_store::backup`]): the
    /// receiver yields its bytes. A backup holds every workspace of the
    /// server (sealed), so it takes an admin token of the server's first
    /// workspace that is not limited to some environments.
    ///
    /// The backup is recorded in the audit log before it starts (it fails
    /// when that cannot be done).
    pub async fn backup(
        &self,
        caller: &Caller,
    ) -> Result<Receiver<Result<Vec<u8>, CopyError>>, Error> {
        self.audited(caller, "backup.create", crate::audit::Target::default(), async {
            caller.require_workspace_admin("back up the store")?;
            if caller.workspace().name != FIRST_WORKSPACE {
                return Err(Error::permission_denied(format!(
                    "A backup holds every workspace of the server: only an admin token of its first \
                     workspace, '{FIRST_WORKSPACE}', may take one"
                )));
            }
            self.record(caller.audit("backup.create")).await?;
            tracing::info!(token_id = %caller.token().id, "backup started");
            Ok(self.store.backup())
        })
        .await
    }
}
