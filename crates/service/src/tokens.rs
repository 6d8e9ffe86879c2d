//! Tokens: minted and revoked by a workspace admin.
//!
//! A token's secret leaves this module once, in [`Service::create_token`]'s
//! answer; only its hash is stored. Revoking also drops the token from this
//! replica's authentication cache, so it stops working here at once.

use latchkey_core::{ids, rules, Error};
use latchkey_store::{crypto::hash_token_secret, NewToken};
use zeroize::Zeroizing;

use crate::{audit::Target, Caller, Role, Service, Token};

impl Service {
    /// Creates a token in the caller's workspace. The returned secret is
    /// shown once and never stored.
    pub async fn create_token(
        &self,
        caller: &Caller,
        name: &str,
        role: Role,
        environments: Option<Vec<String>>,
    ) -> Result<(Token, Zeroizing<String>), Error> {
        self.audited(caller, "token.create", Target::default(), async {
            caller.require_workspace_admin("create tokens")?;
            rules::check_token_name(name)?;
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
                    },
                    &caller.audit(""),
                )
                .await?;
            Ok((token, secret))
        })
        .await
    }

    /// The tokens of the caller's workspace.
    pub async fn list_tokens(&self, caller: &Caller) -> Result<Vec<Token>, Error> {
        caller.require_workspace_admin("list tokens")?;
        self.store.list_tokens(caller.workspace_id()).await
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
            self.tokens.forget(token_id);
            Ok(())
        })
        .await
    }
}
