//! Who is calling, and what they may do.

use std::{
    collections::HashMap,
    sync::{PoisonError, RwLock},
    time::{Duration, Instant},
};

use latchkey_core::{
    paths::ADMIN_TOKEN_FILE,
    time::{now_micros, Micros, Timestamp},
    Error, ErrorKind,
};
use latchkey_store::{
    crypto::{hash_token_secret, token_hash_matches},
    Role, Token, TokenCredentials, Workspace, LAST_USED_RESOLUTION,
};

use super::Service;

/// An authenticated caller: a valid token and its workspace.
#[derive(Clone)]
pub struct Caller {
    token: Token,
    workspace: Workspace,
    /// Where the current request came from.
    pub(crate) origin: crate::Origin,
    /// SHA-256 of the secret it authenticated with (the stored hash, not the
    /// secret), so that [`Service::recheck`] can tell whether that secret is
    /// still accepted. Not shown by `Debug`.
    secret_hash: [u8; 32],
    /// When the secret it authenticated with stops being accepted: the
    /// token's expiry, or the end of a rotation's grace period when it used
    /// the secret the rotation replaced.
    valid_until: Option<Micros>,
}

impl std::fmt::Debug for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caller")
            .field("token", &self.token)
            .field("workspace", &self.workspace)
            .field("valid_until", &self.valid_until)
            .finish_non_exhaustive()
    }
}

impl Caller {
    /// When the credentials it authenticated with stop being accepted
    /// (`None`: not by time).
    pub fn valid_until(&self) -> Option<Micros> {
        self.valid_until
    }

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
        latchkey_core::rules::check_token_environment(
            &self.token.name,
            self.token.environments.as_deref(),
            name,
        )
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
    /// Failed attempts from `origin`'s client are throttled (see
    /// [`AuthFailureLimit`]): past the limit, its attempts are refused as
    /// ResourceExhausted, naming the wait, before the credentials are looked
    /// at. A failure is recorded in the audit log (with the token id when
    /// one was sent, and `origin`).
    ///
    /// [`AuthFailureLimit`]: crate::AuthFailureLimit
    pub async fn authenticate(
        &self,
        token_id: &str,
        token_secret: &str,
        origin: &crate::Origin,
    ) -> Result<Caller, Error> {
        let result = self.throttled(origin.client, token_id, token_secret).await;
        match result {
            Ok(caller) => Ok(caller.with_origin(origin.clone())),
            Err(e) => {
                // The reason, and its label in latchkey_auth_failures_total.
                let reason = match e.kind() {
                    _ if token_id.is_empty() || token_secret.is_empty() => {
                        Some(("no token was sent", "no_token"))
                    }
                    ErrorKind::Unauthenticated => {
                        Some(("unknown, revoked, expired, or a wrong secret", "invalid"))
                    }
                    ErrorKind::ResourceExhausted => Some((
                        "throttled: too many failed attempts from this address",
                        "throttled",
                    )),
                    _ => None,
                };
                if let Some((reason, label)) = reason {
                    metrics::counter!("latchkey_auth_failures_total", "reason" => label)
                        .increment(1);
                    // Only attempts with a credential are events: a request
                    // without any, or one refused by the throttle before its
                    // credentials were looked at, guesses nothing, and
                    // recording each would let anyone without a token grow
                    // the log at will (those are counted in the metric).
                    let guessed = !token_id.is_empty() || !token_secret.is_empty();
                    if guessed && label != "throttled" {
                        self.record_auth_failure(token_id, origin, reason).await;
                    }
                }
                Err(e)
            }
        }
    }

    /// The caller holding this token id and secret, its client's failures
    /// throttled.
    async fn throttled(
        &self,
        client: Option<crate::ClientAddr>,
        token_id: &str,
        token_secret: &str,
    ) -> Result<Caller, Error> {
        if token_id.is_empty() || token_secret.is_empty() {
            // No credentials guess nothing: not counted, never throttled.
            return Err(denied(token_id, token_secret));
        }
        let attempt = self.throttle.begin(client)?;
        let result = self.check_credentials(token_id, token_secret).await;
        let failed = matches!(&result, Err(e) if e.kind() == ErrorKind::Unauthenticated);
        self.throttle.settle(attempt, failed);
        result
    }

    async fn check_credentials(&self, token_id: &str, token_secret: &str) -> Result<Caller, Error> {
        let now = now_micros();
        let presented = hash_token_secret(token_secret);
        if let Some(caller) = self.tokens.get(token_id, &presented, now) {
            return Ok(caller);
        }
        let Some(found) = self.store.token_for_auth(token_id, now).await? else {
            return Err(denied(token_id, token_secret));
        };
        let Some(valid_until) = accepted(&found, &presented) else {
            return Err(denied(token_id, token_secret));
        };
        // Only a caller holding the secret learns that the token expired.
        if let Some(at) = found.token.expires_at.filter(|at| *at <= now) {
            return Err(expired(token_id, at));
        }
        let mut token = found.token;
        self.note_use(&mut token, now).await;
        let workspace = self.store.workspace(&token.workspace_id).await?;
        let caller = Caller {
            token,
            workspace,
            origin: crate::Origin::server(),
            secret_hash: presented,
            valid_until,
        };
        self.tokens.put(token_id, &caller);
        Ok(caller)
    }

    /// The caller as it stands now in the store: `None` once its token is
    /// revoked or expired, or the secret it authenticated with is no longer
    /// accepted (a rotation, past its grace period). For sessions, which
    /// authenticate once and then hold the caller.
    pub async fn recheck(&self, caller: &Caller) -> Result<Option<Caller>, Error> {
        let now = now_micros();
        let Some(found) = self.store.token_for_auth(&caller.token.id, now).await? else {
            return Ok(None);
        };
        let Some(valid_until) = accepted(&found, &caller.secret_hash) else {
            return Ok(None);
        };
        if found.token.expired_at(now) {
            return Ok(None);
        }
        let mut token = found.token;
        self.note_use(&mut token, now).await;
        Ok(Some(Caller {
            token,
            workspace: caller.workspace.clone(),
            origin: caller.origin.clone(),
            secret_hash: caller.secret_hash,
            valid_until,
        }))
    }

    /// Records that `token` was used at `now`, unless a use within
    /// [`LAST_USED_RESOLUTION`] is recorded already (so at most one write a
    /// minute per token).
    async fn note_use(&self, token: &mut Token, now: Micros) {
        if token
            .last_used_at
            .is_some_and(|last| last > now - LAST_USED_RESOLUTION)
        {
            return;
        }
        // Bookkeeping: a failure to record it must not refuse the request
        // (the store logged the cause).
        if self.store.mark_token_used(&token.id, now).await.is_ok() {
            token.last_used_at = Some(now);
        }
    }

    /// Drops the token from this replica's authentication cache, so that a
    /// change of it (revocation, rotation) takes effect here at once.
    pub(crate) fn forget_token(&self, token_id: &str) {
        self.tokens.forget(token_id);
    }
}

/// The one refusal of a token that is unknown, revoked or sent with a wrong
/// secret; it says how to get a token, never echoes the secret, and does not
/// name the server's paths, which a caller without a token has no business
/// knowing.
fn denied(token_id: &str, token_secret: &str) -> Error {
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
}

/// The refusal of an expired token, to a caller that holds its secret.
fn expired(token_id: &str, at: Micros) -> Error {
    Error::unauthenticated(format!(
        "token {token_id} expired at {}; an admin can make a new one with `latchkey token create`",
        Timestamp::from_micros(at)
    ))
}

/// Whether the secret hashing to `presented` is accepted for `found` (its
/// current secret, or the one a rotation replaced, in its grace period),
/// ignoring expiry; if so, until when (`Some(None)`: not limited by time).
fn accepted(found: &TokenCredentials, presented: &[u8; 32]) -> Option<Option<Micros>> {
    let expires = found.token.expires_at;
    if token_hash_matches(&found.secret_hash, presented) {
        return Some(expires);
    }
    let previous = found.previous_secret_hash.as_deref()?;
    let until = found.token.previous_secret_until?;
    token_hash_matches(previous, presented).then(|| Some(expires.map_or(until, |e| e.min(until))))
}

/// Tokens verified in the last [`TOKEN_CACHE_TTL`], so that a client's
/// stream of requests does not read the token and its workspace from the
/// store on every call.
///
/// An entry holds the SHA-256 of the secret that was verified and is used
/// only when the presented secret hashes to the same value (compared in
/// constant time), and only until the caller's
/// [`valid_until`](Caller::valid_until): an expired token, or a rotated-out
/// secret past its grace period, is refused at that instant, not when the
/// entry ages. Revoking or rotating a token through this server drops its
/// entry at once; one made through another replica takes effect here within
/// the TTL. The dashboard re-reads the token from the store on every page.
#[derive(Default)]
pub(crate) struct TokenCache {
    entries: RwLock<HashMap<String, CachedToken>>,
}

struct CachedToken {
    caller: Caller,
    verified_at: Instant,
}

/// How long a verified token is trusted without asking the store again.
pub const TOKEN_CACHE_TTL: Duration = Duration::from_secs(1);

/// Most tokens remembered; past this the cache starts over.
const TOKEN_CACHE_MAX: usize = 10_000;

impl TokenCache {
    fn get(&self, token_id: &str, presented: &[u8; 32], now: Micros) -> Option<Caller> {
        let entries = self.entries.read().unwrap_or_else(PoisonError::into_inner);
        let entry = entries.get(token_id)?;
        (entry.verified_at.elapsed() < TOKEN_CACHE_TTL
            && entry.caller.valid_until.is_none_or(|until| now < until)
            && token_hash_matches(&entry.caller.secret_hash, presented))
        .then(|| entry.caller.clone())
    }

    fn put(&self, token_id: &str, caller: &Caller) {
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= TOKEN_CACHE_MAX {
            entries.clear();
        }
        entries.insert(
            token_id.to_owned(),
            CachedToken {
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
