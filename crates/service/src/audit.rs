//! The audit log, as every interface records into it: the one place where
//! events are made from callers (see [`latchkey_store::audit`] for the
//! chain).
//!
//! - A change is recorded by the store, in the change's own transaction,
//!   from the caller's [`Caller::audit`] entry.
//! - A read of values is recorded ([`Service::record_read`]) and committed
//!   before the values are returned; if it cannot be, the read fails as
//!   Unavailable.
//! - A refusal is recorded by [`Service::audited`]: `permission.denied` for
//!   what the caller's token may not do, the attempted action with the
//!   error's code for any other failure.
//! - Metadata reads (listings, lookups, info) are recorded only with
//!   [`ServiceConfig::audit_metadata_reads`](crate::ServiceConfig).

use std::future::Future;

use latchkey_core::{
    time::{now_micros, Micros},
    Error, ErrorKind,
};
use latchkey_store::audit::{
    Actor, AuditEntry, AuditEvent, AuditFilter, AuditHead, Interface, TokenExposure, Verdict,
    VersionExposure, ACTIONS, DENIED, SECRET_READ,
};

use crate::{Caller, ClientAddr, Role, SecretSummary, Service};

/// Where a request came from: the interface and the client's address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The interface.
    pub interface: Interface,
    /// The client's address, when known.
    pub client: Option<ClientAddr>,
}

impl Origin {
    /// A request through `interface` from `client`.
    pub fn new(interface: Interface, client: Option<ClientAddr>) -> Self {
        Origin { interface, client }
    }

    /// The server itself (tests, background work).
    pub fn server() -> Self {
        Origin::new(Interface::Server, None)
    }
}

/// What a refused or failed request was about, for its event.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Target<'a> {
    pub(crate) environment: Option<&'a str>,
    pub(crate) secret_name: Option<&'a str>,
    pub(crate) secret_id: Option<&'a str>,
}

impl<'a> Target<'a> {
    pub(crate) fn secret(environment: &'a str, name: &'a str) -> Self {
        Target {
            environment: Some(environment),
            secret_name: Some(name),
            secret_id: None,
        }
    }

    pub(crate) fn secret_id(id: &'a str) -> Self {
        Target {
            secret_id: Some(id),
            ..Target::default()
        }
    }

    pub(crate) fn environment(name: &'a str) -> Self {
        Target {
            environment: Some(name),
            ..Target::default()
        }
    }
}

/// Whether an action reads metadata only (recorded only when asked).
fn is_metadata_read(action: &str) -> bool {
    matches!(
        action,
        "secret.list" | "secret.info" | "token.list" | "audit.list" | "audit.exposure"
    )
}

impl Caller {
    /// An event by this caller, of `action`, outcome `ok`.
    pub fn audit(&self, action: &str) -> AuditEntry {
        let mut entry = AuditEntry::new(self.origin.interface, action);
        entry.workspace_id = Some(self.workspace_id().to_owned());
        entry.actor = Some(Actor {
            token_id: self.token().id.clone(),
            name: self.token().name.clone(),
            role: self.token().role.as_str().to_owned(),
        });
        entry.client = self.origin.client.map(|c| c.0.to_string());
        entry
    }

    /// Where this caller's current request came from.
    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    /// This caller, for a request from `origin` (a dashboard session's
    /// caller, on each of its requests).
    pub fn with_origin(&self, origin: Origin) -> Caller {
        let mut caller = self.clone();
        caller.origin = origin;
        caller
    }
}

impl Service {
    /// Runs `op`, recording its failure: `permission.denied` when the
    /// caller's token may not do it, else `action` with the error's code.
    /// Successes are recorded where they happen (the store's transaction,
    /// [`record_read`](Self::record_read)). A failure that cannot be
    /// recorded is logged; the caller gets the operation's own error.
    pub(crate) async fn audited<T>(
        &self,
        caller: &Caller,
        action: &str,
        target: Target<'_>,
        op: impl Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        let result = op.await;
        if let Err(e) = &result {
            let denied = e.kind() == ErrorKind::PermissionDenied;
            // Lookups that find nothing are metadata reads: not recorded
            // unless those are.
            if denied || !is_metadata_read(action) || self.config.audit_metadata_reads {
                let mut entry = caller.audit(if denied { "permission.denied" } else { action });
                entry.environment = target.environment.map(str::to_owned);
                entry.secret_name = target.secret_name.map(str::to_owned);
                entry.secret_id = target.secret_id.map(str::to_owned);
                if denied {
                    entry = entry.outcome(DENIED);
                    entry.detail = Some(action.to_owned());
                } else {
                    entry = entry.outcome(e.kind().code());
                }
                if let Err(record) = self.store.record(&[entry]).await {
                    tracing::error!(action, error = %record, "cannot record a refused request in the audit log");
                }
            }
        }
        result
    }

    /// Records that `caller` receives the values of `secret` (the version
    /// it describes), before they are returned: fails, and the values must
    /// not be returned, when the event cannot be committed.
    pub async fn record_read(&self, caller: &Caller, secret: &SecretSummary) -> Result<(), Error> {
        self.store
            .record(&[caller.audit(SECRET_READ).about(secret)])
            .await
            .map(drop)
    }

    /// Records a successful metadata read, when those are recorded.
    pub(crate) async fn record_metadata_read(&self, entry: AuditEntry) -> Result<(), Error> {
        if self.config.audit_metadata_reads {
            self.store.record(&[entry]).await?;
        }
        Ok(())
    }

    /// Records an event an adapter makes (dashboard sign-in and sign-out).
    pub async fn record(&self, entry: AuditEntry) -> Result<(), Error> {
        self.store.record(&[entry]).await.map(drop)
    }

    /// Records a failed authentication: the token id when one was sent
    /// (never the secret), and where from.
    pub(crate) async fn record_auth_failure(&self, token_id: &str, origin: &Origin, reason: &str) {
        let mut entry = AuditEntry::new(origin.interface, "auth.failure")
            .outcome(ErrorKind::Unauthenticated.code());
        entry.client = origin.client.map(|c| c.0.to_string());
        if !token_id.is_empty() {
            entry.detail = Some(format!(
                "token {}: {reason}",
                latchkey_core::rules::echo(token_id)
            ));
            // The token's workspace, when it exists: its admins see the event.
            if let Ok(Some(found)) = self.store.token_for_auth(token_id, now_micros()).await {
                entry.workspace_id = Some(found.token.workspace_id);
            }
        } else {
            entry.detail = Some(reason.to_owned());
        }
        if let Err(e) = self.store.record(&[entry]).await {
            tracing::error!(error = %e, "cannot record a failed authentication in the audit log");
        }
    }

    /// The head of the audit chain: any authenticated caller may see it
    /// (`whoami`), so that clients can tell a log cut short.
    pub async fn audit_head(&self, _caller: &Caller) -> Result<AuditHead, Error> {
        self.store.audit_head().await
    }

    /// Events of the caller's workspace, oldest first: admins only.
    pub async fn audit_events(
        &self,
        caller: &Caller,
        filter: &AuditFilter,
        limit: u32,
    ) -> Result<Vec<AuditEvent>, Error> {
        self.audited(caller, "audit.list", Target::default(), async {
            caller.require_workspace_admin("read the audit log")?;
            check_filter(filter)?;
            self.store
                .audit_events(
                    caller.workspace_id(),
                    filter,
                    limit.clamp(1, crate::MAX_PAGE),
                )
                .await
        })
        .await
    }

    /// Checks the whole audit chain: admins only.
    pub async fn audit_verify(&self, caller: &Caller) -> Result<Verdict, Error> {
        self.audited(caller, "audit.verify", Target::default(), async {
            caller.require_workspace_admin("verify the audit log")?;
            self.store.audit_verify().await
        })
        .await
    }

    /// Removes events older than `before` (the server's retention).
    pub async fn audit_retain(&self, before: Micros) -> Result<u64, Error> {
        self.store.audit_retain(before, &AuditEntry::server()).await
    }

    /// Who read each version of the named secret: admins only.
    pub async fn secret_exposure(
        &self,
        caller: &Caller,
        environment_name: &str,
        name: &str,
    ) -> Result<(SecretSummary, Vec<VersionExposure>), Error> {
        self.audited(
            caller,
            "audit.exposure",
            Target::secret(environment_name, name),
            async {
                caller.require(Role::Admin, "read who read secrets")?;
                let summary = self
                    .find_secret(caller, environment_name, name, &[])
                    .await?;
                let exposure = self
                    .store
                    .secret_exposure(caller.workspace_id(), &summary.id)
                    .await?;
                Ok((summary, exposure))
            },
        )
        .await
    }

    /// The secrets whose current version the token `token_id` has read:
    /// what to rotate when it is revoked. Admins only.
    pub async fn token_exposure(
        &self,
        caller: &Caller,
        token_id: &str,
    ) -> Result<Vec<TokenExposure>, Error> {
        self.audited(caller, "audit.exposure", Target::default(), async {
            caller.require_workspace_admin("read what tokens have read")?;
            let tokens = self.store.list_tokens(caller.workspace_id()).await?;
            if !tokens.iter().any(|t| t.id == token_id) {
                return Err(Error::not_found(format!(
                    "Token '{}' not found",
                    latchkey_core::rules::echo(token_id)
                )));
            }
            self.store
                .token_exposure(caller.workspace_id(), token_id)
                .await
        })
        .await
    }
}

/// Refuses a filter that names no known action or a window that ends
/// before it starts.
fn check_filter(filter: &AuditFilter) -> Result<(), Error> {
    if let Some(action) = &filter.action {
        if !ACTIONS.contains(&action.as_str()) {
            return Err(Error::invalid(format!(
                "Unknown audit action '{}'; known actions: {}",
                latchkey_core::rules::echo(action),
                ACTIONS.join(", ")
            )));
        }
    }
    if let (Some(since), Some(until)) = (filter.since, filter.until) {
        if since > until {
            return Err(Error::invalid(
                "The window is empty: 'since' is later than 'until'",
            ));
        }
    }
    if let Some(token) = &filter.token {
        if !token.starts_with(latchkey_core::ids::TOKEN_ID) {
            return Err(Error::invalid(format!(
                "Invalid token id '{}': token ids start with {}",
                latchkey_core::rules::echo(token),
                latchkey_core::ids::TOKEN_ID
            )));
        }
    }
    Ok(())
}

/// The time `retention` before now, from which events are kept.
pub fn retention_cutoff(retention: std::time::Duration) -> Micros {
    now_micros().saturating_sub(i64::try_from(retention.as_micros()).unwrap_or(i64::MAX))
}
