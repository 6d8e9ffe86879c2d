//! Who is calling, and what they may do.

use std::{
    collections::HashMap,
    sync::{PoisonError, RwLock},
    time::{Duration, Instant},
};

use latchkey_core::{paths::ADMIN_TOKEN_FILE, Error};
use latchkey_store::{
    crypto::{hash_token_secret, token_hash_matches},
    Role, Token, Workspace,
};

use super::Service;

/// An authenticated caller: a valid token and its workspace.
#[derive(Debug, Clone)]
pub struct Caller {
    token: Token,
    workspace: Workspace,
    /// Where the current request came from.
    pub(crate) origin: crate::Origin,
}

impl Caller {
    /// The caller's token (never its secret).
    pub fn token(&self) -> &Token {
        &self.token
    }

    /// The caller's workspace.
    pub fn workspace(&self) -> &Workspace {
        &self.workspace
    }

    /// The caller's workspace id.
    pub fn workspace_id(&self) -> &str {
        &self.workspace.id
    }

    /// Whether the token may act in the environment `name`.
    pub fn check_environment(&self, name: &str) -> Result<(), Error> {
        match &self.token.environments {
            Some(allowed) if !allowed.iter().any(|a| a == name) => {
                Err(Error::permission_denied(format!(
                    "Token '{}' may not use environment '{name}'",
                    self.token.name
                )))
            }
            _ => Ok(()),
        }
    }

    /// Admin work that spans the workspace (environments, tokens): an admin
    /// token that is not limited to some environments. A limited token could
    /// otherwise widen its own reach, e.g. by minting an unlimited token.
    pub fn require_workspace_admin(&self, what: &str) -> Result<(), Error> {
        self.require(Role::Admin, what)?;
        if self.token.environments.is_some() {
            return Err(Error::permission_denied(format!(
                "Token '{}' is limited to some environments and may not {what}",
                self.token.name
            )));
        }
        Ok(())
    }

    /// Whether the token's role is at least `role`; `what` completes
    /// "Token 'x' may not ...".
    pub fn require(&self, role: Role, what: &str) -> Result<(), Error> {
        if self.token.role.includes(role) {
            Ok(())
        } else {
            Err(Error::permission_denied(format!(
                "Token '{}' (role {}) may not {what}",
                self.token.name,
                self.token.role.as_str()
            )))
        }
    }
}

impl Service {
    /// The caller holding this token id and secret.
    ///
    /// Every failure gives the same Unauthenticated error, which says how to
    /// get a token and never echoes the secret; nor does it name the
    /// server's paths, which a caller without a token has no business
    /// knowing.
    ///
    /// A failure is recorded in the audit log (with the token id when one
    /// was sent, and `origin`).
    pub async fn authenticate(
        &self,
        token_id: &str,
        token_secret: &str,
        origin: &crate::Origin,
    ) -> Result<Caller, Error> {
        let result = self.verify_token(token_id, token_secret).await;
        match result {
            Ok(caller) => Ok(caller.with_origin(origin.clone())),
            Err(e) => {
                if e.kind() == latchkey_core::ErrorKind::Unauthenticated {
                    let reason = if token_id.is_empty() || token_secret.is_empty() {
                        "no token was sent"
                    } else {
                        "unknown, revoked, or a wrong secret"
                    };
                    self.record_auth_failure(token_id, origin, reason).await;
                }
                Err(e)
            }
        }
    }

    /// The caller holding this token id and secret, from wherever.
    async fn verify_token(&self, token_id: &str, token_secret: &str) -> Result<Caller, Error> {
        let denied = || {
            metrics::counter!("latchkey_auth_failures_total").increment(1);
            let what = if token_id.is_empty() || token_secret.is_empty() {
                "No token was sent"
            } else {
                "The token is not valid on this server (unknown, revoked, or a wrong secret)"
            };
            Error::unauthenticated(format!(
                "{what}. Set MODAL_TOKEN_ID and MODAL_TOKEN_SECRET (or LATCHKEY_TOKEN_ID and \
                 LATCHKEY_TOKEN_SECRET) to a token of this server: the admin token is in the file \
                 {ADMIN_TOKEN_FILE} of the server's data dir, and `latchkey token create` makes more."
            ))
        };
        if token_id.is_empty() || token_secret.is_empty() {
            return Err(denied());
        }
        let presented = hash_token_secret(token_secret);
        if let Some(caller) = self.tokens.get(token_id, &presented) {
            return Ok(caller);
        }
        let Some((token, hash)) = self.store.token_for_auth(token_id).await? else {
            return Err(denied());
        };
        if !token_hash_matches(&hash, &presented) {
            return Err(denied());
        }
        let workspace = self.store.workspace(&token.workspace_id).await?;
        let caller = Caller {
            token,
            workspace,
            origin: crate::Origin::server(),
        };
        self.tokens.put(token_id, presented, &caller);
        Ok(caller)
    }
}

/// Tokens verified in the last [`TOKEN_CACHE_TTL`], so that a client's
/// stream of requests does not read the token and its workspace from the
/// store on every call.
///
/// An entry holds the SHA-256 of the secret that was verified and is used
/// only when the presented secret hashes to the same value (compared in
/// constant time). Revoking a token through this server drops its entry at
/// once; a revocation made through another replica takes effect here within
/// the TTL. The dashboard re-reads the token from the store on every page.
#[derive(Default)]
pub(crate) struct TokenCache {
    entries: RwLock<HashMap<String, CachedToken>>,
}

struct CachedToken {
    secret_hash: [u8; 32],
    caller: Caller,
    verified_at: Instant,
}

/// How long a verified token is trusted without asking the store again.
pub const TOKEN_CACHE_TTL: Duration = Duration::from_secs(1);

/// Most tokens remembered; past this the cache starts over.
const TOKEN_CACHE_MAX: usize = 10_000;

impl TokenCache {
    fn get(&self, token_id: &str, presented: &[u8; 32]) -> Option<Caller> {
        let entries = self.entries.read().unwrap_or_else(PoisonError::into_inner);
        let entry = entries.get(token_id)?;
        (entry.verified_at.elapsed() < TOKEN_CACHE_TTL
            && token_hash_matches(&entry.secret_hash, presented))
        .then(|| entry.caller.clone())
    }

    fn put(&self, token_id: &str, secret_hash: [u8; 32], caller: &Caller) {
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= TOKEN_CACHE_MAX {
            entries.clear();
        }
        entries.insert(
            token_id.to_owned(),
            CachedToken {
                secret_hash,
                caller: caller.clone(),
                verified_at: Instant::now(),
            },
        );
    }

    pub(crate) fn forget(&self, token_id: &str) {
        self.entries
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(token_id);
    }
}
