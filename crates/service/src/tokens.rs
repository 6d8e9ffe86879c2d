//! Tokens: minted and revoked by a workspace admin.
//!
//! A token's secret leaves this module once, in [`Service::create_token`]'s
//! answer (and [`Service::rotate_token`]'s); only its hash is stored.
//! Revoking or rotating also drops the token from this replica's
//! authentication cache, so the change takes effect here at once.

use std::time::Duration;

use latchkey_core::{
    ids, rules,
    time::{add_duration, now_micros, MAX_DURATION_SECS},
    Error,
};
use latchkey_store::{crypto::hash_token_secret, NewToken};
use zeroize::Zeroizing;

use crate::{audit::Target, Caller, Role, Service, Token};

impl Service {
    /// Creates a token in the caller's workspace, valid for `ttl` if given
    /// (for ever otherwise). The returned secret is shown once and never
    /// stored.
    pub async fn create_token(
        &self,
        caller: &Caller,
        name: &str,
        role: Role,
        environments: Option<Vec<String>>,
        ttl: Option<Duration>,
    ) -> Result<(Token, Zeroizing<String>), Error> {
        self.audited(caller, "token.create", Target::default(), async {
            caller.require_workspace_admin("create tokens")?;
            rules::check_token_name(name)?;
            let expires_at = ttl
                .map(|ttl| check_duration("ttl", ttl).map(|ttl| add_duration(now_micros(), ttl)))
                .transpose()?;
            if let Some(envs) = &environments {
                if envs.is_empty() {
                    return Err(Error::invalid(
                        "A token limited to environments needs at least one environment",
                    ));
                }
                for env in envs {
                    self.environment(caller, env).await?;
                }
            }
            let secret = Zeroizing::new(ids::new_token_secret());
            let token = self
                .store
                .create_token(
                    &NewToken {
                        id: ids::new_id(ids::TOKEN_ID),
                        workspace_id: caller.workspace_id().to_owned(),
                        name: name.to_owned(),
                        role,
                        environments,
                        secret_hash: hash_token_secret(&secret),
                        expires_at,
                    },
                    &caller.audit(""),
                )
                .await?;
            Ok((token, secret))
        })
        .await
    }

    /// Gives token `token_id` a new secret, returned this once. The secret
    /// it replaces stays accepted for `grace` (not at all when `None`), so
    /// that its users can switch without failing. The token keeps its id,
    /// name, role, environments and expiry.
    pub async fn rotate_token(
        &self,
        caller: &Caller,
        token_id: &str,
        grace: Option<Duration>,
    ) -> Result<(Token, Zeroizing<String>), Error> {
        self.audited(caller, "token.rotate", Target::default(), async {
            caller.require_workspace_admin("rotate tokens")?;
            let grace = grace.map(|g| check_duration("grace", g)).transpose()?;
            let secret = Zeroizing::new(ids::new_token_secret());
            let grace_until = grace.map(|g| add_duration(now_micros(), g));
            let token = self
                .store
                .rotate_token(
                    caller.workspace_id(),
                    token_id,
                    &hash_token_secret(&secret),
                    grace_until,
                    &caller.audit(""),
                )
                .await?;
            self.forget_token(token_id);
            Ok((token, secret))
        })
        .await
    }

    /// The tokens of the caller's workspace.
    pub async fn list_tokens(&self, caller: &Caller) -> Result<Vec<Token>, Error> {
        self.audited(caller, "token.list", Target::default(), async {
            caller.require_workspace_admin("list tokens")?;
            self.store.list_tokens(caller.workspace_id()).await
        })
        .await
    }

    /// Revokes a token. The workspace's last active admin token cannot be
    /// revoked, so that a workspace is never left without one.
    pub async fn revoke_token(&self, caller: &Caller, token_id: &str) -> Result<(), Error> {
        self.audited(caller, "token.revoke", Target::default(), async {
            caller.require_workspace_admin("revoke tokens")?;
            // The store refuses the workspace's last admin token, in the same
            // transaction as the revocation.
            self.store
                .revoke_token(caller.workspace_id(), token_id, &caller.audit(""))
                .await?;
            self.forget_token(token_id);
            Ok(())
        })
        .await
    }
}

/// A duration given through an interface that takes it as a number (the
/// parsers of text refuse the same): more than zero, and within
/// [`MAX_DURATION_SECS`].
fn check_duration(what: &str, d: Duration) -> Result<Duration, Error> {
    if d.is_zero() {
        return Err(Error::invalid(format!(
            "Invalid {what}: it must be greater than zero"
        )));
    }
    if d.as_secs() > MAX_DURATION_SECS {
        return Err(Error::invalid(format!(
            "Invalid {what}: at most {} days",
            MAX_DURATION_SECS / 86_400
        )));
    }
    Ok(d)
}
