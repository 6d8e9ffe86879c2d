//! `/audit`: the audit log, its head and its verification; and exposure:
//! who read which version of a secret, and what a token has read.

use axum::Json;
use latchkey_core::time::Timestamp;
use latchkey_service::log::{AuditEvent, AuditFilter, AuditHead, Verdict};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{
    error::{ApiError, ErrorBody},
    extract::{Authenticated, Params, PathParams},
    model::{parse_instant, EnvironmentQuery},
    responses::NotAdmin,
    secrets::SecretPath,
};

/// The head of the audit chain: its newest event's number and MAC. A client
/// that remembers the highest head it has seen can tell a log cut short or
/// restored from an older copy.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct AuditHeadInfo {
    /// The newest event's number (0 before any).
    pub(crate) seq: i64,
    /// Its MAC, in hex.
    pub(crate) mac: String,
    /// The caller's workspace: with the head, what a client remembers, so
    /// that the same database is recognised behind another address.
    pub(crate) workspace_id: String,
}

impl AuditHeadInfo {
    pub(crate) fn new(head: &AuditHead, caller: &latchkey_service::Caller) -> Self {
        AuditHeadInfo {
            seq: head.seq,
            mac: head.mac_hex(),
            workspace_id: caller.workspace_id().to_owned(),
        }
    }
}

/// Who acted.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ActorInfo {
    /// The token's id.
    id: String,
    /// Its name.
    name: String,
    /// Its role.
    role: String,
}

/// One event: never a value, a token secret or a request body.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct EventInfo {
    /// Its number in the chain.
    seq: i64,
    /// When it was logged.
    #[schema(value_type = String)]
    time: Timestamp,
    /// Who acted, when known.
    actor: Option<ActorInfo>,
    /// The client's address.
    client: Option<String>,
    /// `grpc`, `api`, `dashboard`, `sandbox` or `server`.
    interface: String,
    /// What was done, e.g. `secret.read`.
    action: String,
    /// The environment's name.
    environment: Option<String>,
    /// The secret's name.
    secret: Option<String>,
    /// The secret's id.
    secret_id: Option<String>,
    /// The secret's version.
    version: Option<i64>,
    /// `ok`, `denied`, or the error's code.
    outcome: String,
    /// More about it (the token made or revoked, a rollback's source...).
    detail: Option<String>,
}

impl From<AuditEvent> for EventInfo {
    fn from(e: AuditEvent) -> Self {
        let entry = e.entry;
        EventInfo {
            seq: e.seq,
            time: Timestamp::from_micros(e.at),
            actor: entry.actor.map(|a| ActorInfo {
                id: a.token_id,
                name: a.name,
                role: a.role,
            }),
            client: entry.client,
            interface: entry.interface,
            action: entry.action,
            environment: entry.environment,
            secret: entry.secret_name,
            secret_id: entry.secret_id,
            version: entry.version,
            outcome: entry.outcome,
            detail: entry.detail,
        }
    }
}

/// Which events `GET /audit` returns.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct AuditQuery {
    /// Logged at or after this instant (RFC 3339 or a date).
    since: Option<String>,
    /// Logged before this instant.
    until: Option<String>,
    /// About the secret of this name.
    secret: Option<String>,
    /// By the token of this id (`ak-...`).
    token: Option<String>,
    /// Of this action (e.g. `secret.read`).
    action: Option<String>,
    /// In the environment of this name.
    environment: Option<String>,
    /// Numbered after this: pass the previous page's `next_after`.
    after: Option<i64>,
    /// At most this many events (1 to 1000; default 1000).
    limit: Option<u32>,
}

/// A page of events, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct EventList {
    /// The events.
    items: Vec<EventInfo>,
    /// When the page is full: the `after` of the next page.
    next_after: Option<i64>,
}

/// The audit log of the caller's workspace, oldest first (admin).
#[utoipa::path(
    get, path = "/audit", tag = "audit",
    params(AuditQuery),
    responses(
        (status = 200, description = "A page of events", body = EventList),
        (status = 400, description = "Bad filter", body = ErrorBody),
        NotAdmin,
    )
)]
pub(crate) async fn list(
    Authenticated { service, caller }: Authenticated,
    Params(q): Params<AuditQuery>,
) -> Result<Json<EventList>, ApiError> {
    let instant = |field, text: Option<String>| {
        text.filter(|t| !t.is_empty())
            .map(|t| parse_instant(field, &t))
            .transpose()
    };
    let filter = AuditFilter {
        since: instant("since", q.since)?,
        until: instant("until", q.until)?,
        secret: q.secret.filter(|s| !s.is_empty()),
        token: q.token.filter(|s| !s.is_empty()),
        action: q.action.filter(|s| !s.is_empty()),
        environment: q.environment.filter(|s| !s.is_empty()),
        after: q.after,
    };
    let limit = match q.limit {
        Some(0) => return Err(ApiError::invalid("limit must be at least 1")),
        other => other.unwrap_or(latchkey_service::MAX_PAGE),
    };
    let events = service.audit_events(&caller, &filter, limit).await?;
    let full = u32::try_from(events.len()).unwrap_or(u32::MAX) >= limit;
    let next_after = events.last().filter(|_| full).map(|e| e.seq);
    Ok(Json(EventList {
        items: events.into_iter().map(EventInfo::from).collect(),
        next_after,
    }))
}

/// The head of the audit chain (any token).
#[utoipa::path(
    get, path = "/audit/head", tag = "audit",
    responses(
        (status = 200, description = "The head", body = AuditHeadInfo),
        (status = 401, description = "No valid token", body = ErrorBody),
    )
)]
pub(crate) async fn head(
    Authenticated { service, caller }: Authenticated,
) -> Result<Json<AuditHeadInfo>, ApiError> {
    let head = service.audit_head(&caller).await?;
    Ok(Json(AuditHeadInfo::new(&head, &caller)))
}

/// What `POST /audit/verify` found.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct VerifyReport {
    /// Whether every event checks and the head is the last one.
    intact: bool,
    /// How many events were checked (when intact).
    count: Option<u64>,
    /// The first kept event (when intact; above 1 after retention).
    first: Option<i64>,
    /// The last event (when intact).
    last: Option<i64>,
    /// The first event that does not check (when not intact).
    broken_at: Option<i64>,
    /// Why (when not intact).
    reason: Option<String>,
}

/// Check the whole audit chain against the server's audit key (admin).
#[utoipa::path(
    post, path = "/audit/verify", tag = "audit",
    responses((status = 200, description = "The verdict", body = VerifyReport), NotAdmin)
)]
pub(crate) async fn verify(
    Authenticated { service, caller }: Authenticated,
) -> Result<Json<VerifyReport>, ApiError> {
    Ok(Json(match service.audit_verify(&caller).await? {
        Verdict::Intact { count, first, last } => VerifyReport {
            intact: true,
            count: Some(count),
            first: Some(first),
            last: Some(last),
            broken_at: None,
            reason: None,
        },
        Verdict::Broken { seq, reason } => VerifyReport {
            intact: false,
            count: None,
            first: None,
            last: None,
            broken_at: Some(seq),
            reason: Some(reason),
        },
    }))
}

/// The tokens that read one version of a secret.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct VersionReaders {
    /// The version.
    version: i64,
    /// The token's id.
    token_id: String,
    /// Its name.
    token_name: String,
    /// How many reads.
    count: i64,
    /// The first.
    #[schema(value_type = String)]
    first: Timestamp,
    /// The last.
    #[schema(value_type = String)]
    last: Timestamp,
    /// Through which interfaces.
    interfaces: Vec<String>,
}

/// Who read a secret's values, per version.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SecretExposure {
    /// The secret's name.
    secret: String,
    /// Its environment.
    environment: String,
    /// Its current version.
    current_version: i64,
    /// Per version (newest first) and token.
    items: Vec<VersionReaders>,
}

/// Who read each version of a secret (admin).
#[utoipa::path(
    get, path = "/secrets/{name}/exposure", tag = "audit",
    params(SecretPath, EnvironmentQuery),
    responses(
        (status = 200, description = "The readers", body = SecretExposure),
        (status = 404, description = "No such secret", body = ErrorBody),
        NotAdmin,
    )
)]
pub(crate) async fn secret_exposure(
    Authenticated { service, caller }: Authenticated,
    PathParams(SecretPath { name }): PathParams<SecretPath>,
    Params(q): Params<EnvironmentQuery>,
) -> Result<Json<SecretExposure>, ApiError> {
    let (summary, readers) = service
        .secret_exposure(&caller, &q.environment, &name)
        .await?;
    Ok(Json(SecretExposure {
        secret: name,
        environment: summary.environment_name,
        current_version: summary.version,
        items: readers
            .into_iter()
            .map(|r| VersionReaders {
                version: r.version,
                token_id: r.token_id,
                token_name: r.token_name,
                count: r.count,
                first: Timestamp::from_micros(r.first_at),
                last: Timestamp::from_micros(r.last_at),
                interfaces: r.interfaces,
            })
            .collect(),
    }))
}

/// A secret whose current version a token has read.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ReadSecret {
    /// The secret's name.
    secret: String,
    /// Its id.
    secret_id: String,
    /// Its environment.
    environment: String,
    /// Its current version, which the token read.
    version: i64,
    /// How many reads of it.
    count: i64,
    /// The last one.
    #[schema(value_type = String)]
    last: Timestamp,
}

/// What to rotate if a token is revoked.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct TokenExposure {
    /// The secrets whose current version the token read.
    items: Vec<ReadSecret>,
}

/// The secrets whose current version a token has read: what to rotate when
/// it is revoked (admin).
#[utoipa::path(
    get, path = "/tokens/{id}/exposure", tag = "audit",
    params(("id" = String, Path, description = "The token's id (`ak-...`)")),
    responses(
        (status = 200, description = "The secrets", body = TokenExposure),
        (status = 404, description = "No such token", body = ErrorBody),
        NotAdmin,
    )
)]
pub(crate) async fn token_exposure(
    Authenticated { service, caller }: Authenticated,
    PathParams(id): PathParams<String>,
) -> Result<Json<TokenExposure>, ApiError> {
    let read = service.token_exposure(&caller, &id).await?;
    Ok(Json(TokenExposure {
        items: read
            .into_iter()
            .map(|r| ReadSecret {
                secret: r.secret_name,
                secret_id: r.secret_id,
                environment: r.environment,
                version: r.version,
                count: r.count,
                last: Timestamp::from_micros(r.last_at),
            })
            .collect(),
    }))
}
