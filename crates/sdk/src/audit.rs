//! The audit log: who did what, who read which version of a secret, and
//! whether the log is intact. From [`Client::audit`]; reading the log needs
//! an admin token, its head any token.

use reqwest::Method;
use serde::{Deserialize, Serialize};

use crate::{time::Timestamp, Client, Result};

/// The head of the server's audit chain: its newest event's number and MAC.
/// Remember the highest one seen: a server that later shows a lower number,
/// or another MAC at the same number, had its log cut short or its database
/// restored from an older copy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct AuditHead {
    /// The newest event's number (0 before any).
    pub seq: i64,
    /// Its MAC, in hex.
    pub mac: String,
    /// The caller's workspace, which names the database behind the server
    /// (absent from older servers).
    #[serde(default)]
    pub workspace_id: Option<String>,
}

/// Who acted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct AuditActor {
    /// The token's id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its role.
    pub role: String,
}

/// One event of the log: never a value, a token secret or a request body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct AuditEvent {
    /// Its number in the chain.
    pub seq: i64,
    /// When it was logged.
    pub time: Timestamp,
    /// Who acted, when known.
    pub actor: Option<AuditActor>,
    /// The client's address.
    pub client: Option<String>,
    /// `grpc`, `api`, `dashboard`, `sandbox` or `server`.
    pub interface: String,
    /// What was done, e.g. `secret.read`.
    pub action: String,
    /// The environment's name.
    pub environment: Option<String>,
    /// The secret's name.
    pub secret: Option<String>,
    /// The secret's version.
    pub version: Option<i64>,
    /// `ok`, `denied`, or the error's code.
    pub outcome: String,
    /// More about it.
    pub detail: Option<String>,
}

/// Which events [`Audit::list`] returns: every condition given must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct AuditQuery {
    /// Logged at or after this instant (RFC 3339 or a date).
    pub since: Option<String>,
    /// Logged before this instant.
    pub until: Option<String>,
    /// About the secret of this name.
    pub secret: Option<String>,
    /// By the token of this id.
    pub token: Option<String>,
    /// Of this action.
    pub action: Option<String>,
    /// In this environment.
    pub environment: Option<String>,
    /// Numbered after this.
    pub after: Option<i64>,
    /// At most this many (the server answers at most 1,000 a page).
    pub limit: Option<u32>,
}

/// One page of events, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct AuditPage {
    /// The events.
    pub items: Vec<AuditEvent>,
    /// When the page is full: the `after` of the next one.
    pub next_after: Option<i64>,
}

/// What verifying the chain found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct AuditVerdict {
    /// Every event checks, and the head is the last one.
    pub intact: bool,
    /// How many events were checked (when intact).
    pub count: Option<u64>,
    /// The first kept event (when intact).
    pub first: Option<i64>,
    /// The last event (when intact).
    pub last: Option<i64>,
    /// The first event that does not check (when not intact).
    pub broken_at: Option<i64>,
    /// Why.
    pub reason: Option<String>,
}

/// The tokens that read one version of a secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct VersionReaders {
    /// The version.
    pub version: i64,
    /// The token's id.
    pub token_id: String,
    /// Its name.
    pub token_name: String,
    /// How many reads.
    pub count: i64,
    /// The first.
    pub first: Timestamp,
    /// The last.
    pub last: Timestamp,
    /// Through which interfaces.
    pub interfaces: Vec<String>,
}

/// Who read a secret's values, per version: [`Audit::secret_exposure`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SecretExposure {
    /// The secret's name.
    pub secret: String,
    /// Its environment.
    pub environment: String,
    /// Its current version.
    pub current_version: i64,
    /// Per version (newest first) and token.
    pub items: Vec<VersionReaders>,
}

/// A secret whose current version a token has read: [`Audit::token_exposure`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ReadSecret {
    /// The secret's name.
    pub secret: String,
    /// Its environment.
    pub environment: String,
    /// Its current version, which the token read.
    pub version: i64,
    /// How many reads of it.
    pub count: i64,
    /// The last one.
    pub last: Timestamp,
}

/// The audit log, from [`Client::audit`].
#[derive(Debug, Clone)]
pub struct Audit {
    client: Client,
}

impl Audit {
    pub(crate) fn new(client: Client) -> Self {
        Self { client }
    }

    /// One page of events that `query` selects, oldest first (admin).
    pub async fn list(&self, query: &AuditQuery) -> Result<AuditPage> {
        let text = |v: &Option<String>| v.clone().unwrap_or_default();
        let params = [
            ("since", text(&query.since)),
            ("until", text(&query.until)),
            ("secret", text(&query.secret)),
            ("token", text(&query.token)),
            ("action", text(&query.action)),
            ("environment", text(&query.environment)),
            (
                "after",
                query.after.map(|a| a.to_string()).unwrap_or_default(),
            ),
            (
                "limit",
                query.limit.map(|l| l.to_string()).unwrap_or_default(),
            ),
        ];
        self.client
            .call(Method::GET, &["audit"], &params, None::<&()>)
            .await
    }

    /// The head of the chain (any token).
    pub async fn head(&self) -> Result<AuditHead> {
        self.client
            .call(Method::GET, &["audit", "head"], &[], None::<&()>)
            .await
    }

    /// Checks the whole chain against the server's audit key (admin).
    pub async fn verify(&self) -> Result<AuditVerdict> {
        self.client
            .call(Method::POST, &["audit", "verify"], &[], None::<&()>)
            .await
    }

    /// Who read each version of the secret `name` (admin); `environment`
    /// overrides the client's.
    pub async fn secret_exposure(
        &self,
        name: &str,
        environment: Option<&str>,
    ) -> Result<SecretExposure> {
        let env = self.client.environment_or_default(environment);
        self.client
            .call(
                Method::GET,
                &["secrets", name, "exposure"],
                &[("environment", env)],
                None::<&()>,
            )
            .await
    }

    /// The secrets whose current version the token `id` has read: what to
    /// rotate when it is revoked (admin).
    pub async fn token_exposure(&self, id: &str) -> Result<Vec<ReadSecret>> {
        #[derive(Deserialize)]
        struct List {
            items: Vec<ReadSecret>,
        }
        let list: List = self
            .client
            .call(Method::GET, &["tokens", id, "exposure"], &[], None::<&()>)
            .await?;
        Ok(list.items)
    }
}
