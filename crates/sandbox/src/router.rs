//! Who may use a sandbox's stdio: the holder of a command router token.
//!
//! In Modal the `TaskCommandRouter` service runs on the worker that hosts
//! the sandbox; here it is served on the server's one port. Modal's client
//! calls it with only `authorization: Bearer <jwt>`, the short-lived token it
//! got from `SandboxCreateV2` or `SandboxGetCommandRouterAccess` (both of
//! which check the caller's API token and role). A token is signed by this
//! server process, names one task and one workspace, and expires after
//! minutes; an expired or unknown token is refused as unauthenticated, on
//! which the client fetches a fresh one and retries.

use std::sync::Arc;

use latchkey_core::Error;

use super::{token, Sandbox, Sandboxes};

impl Sandboxes {
    /// Whether `bearer` is a valid command router token at all, for whatever
    /// task: the server checks it from the headers, before reading a body.
    pub fn check_router_token(&self, bearer: Option<&str>) -> Result<(), Error> {
        self.router_claims(bearer).map(drop)
    }

    fn router_claims(&self, bearer: Option<&str>) -> Result<token::Claims, Error> {
        let bearer = bearer.ok_or_else(|| {
            Error::unauthenticated(
                "No command router token was sent (get one with SandboxGetCommandRouterAccess)",
            )
        })?;
        self.inner
            .signer
            .verify(bearer.trim(), token::AUDIENCE_ROUTER, token::unix_now())
            .map_err(|reason| {
                tracing::debug!(?reason, "command router token refused");
                Error::unauthenticated(
                    "The command router token is expired or not valid on this server",
                )
            })
    }

    /// The sandbox of `task_id`, if `bearer` (the router token the request
    /// carries, if any) is valid for it.
    pub fn router_sandbox(
        &self,
        bearer: Option<&str>,
        task_id: &str,
    ) -> Result<Arc<Sandbox>, Error> {
        let claims = self.router_claims(bearer)?;
        if claims.sub != task_id {
            return Err(Error::permission_denied(
                "The command router token is for another task",
            ));
        }
        self.by_task(task_id)
            .filter(|s| s.workspace_id == claims.wsp)
            .ok_or_else(|| {
                Error::not_found(format!(
                    "Task '{}' not found (finished sandboxes are kept for a while only)",
                    latchkey_core::rules::echo(task_id)
                ))
            })
    }
}
