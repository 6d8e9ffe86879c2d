//! The JSON shapes the API answers with, and the conversions from the domain.
//!
//! Instants are [`Timestamp`]s, RFC 3339 strings in UTC with exactly six
//! fractional digits (`2025-01-01T00:00:00.123456Z`): microseconds are what
//! the store keeps, so a `created_at` sent back as `created_before` pages
//! without loss.

use latchkey_core::{
    time::{Micros, Timestamp},
    Error, Role,
};
use latchkey_service::{Caller, Environment, SecretSummary, SecretVersion, Token};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// Parses an instant given by a client: an RFC 3339 date-time (`Z` or an
/// offset), a date-time without offset (UTC) or a date (its midnight, UTC).
/// Not Unix seconds: a bare number in a query is more likely a mistake.
pub(crate) fn parse_instant(field: &str, text: &str) -> Result<Micros, Error> {
    match Timestamp::parse_date_time(text) {
        Some(t) if t.as_micros() >= 0 => Ok(t.as_micros()),
        _ => Err(Error::invalid(format!(
            "Invalid {field}: '{}': expected an RFC 3339 date-time such as \
             2025-01-01T12:00:00Z or a date such as 2025-01-01",
            latchkey_core::rules::echo(text.trim())
        ))),
    }
}

/// The `environment` query parameter of most routes.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct EnvironmentQuery {
    /// The environment; empty or absent means the workspace default.
    #[serde(default)]
    pub(crate) environment: String,
}

/// A named secret's metadata: everything but its values.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct SecretInfo {
    /// `st-...`
    #[schema(example = "st-3kTMd9zK0p1fQx7YbWcR2a")]
    pub(crate) id: String,
    /// The secret's name, unique in its environment.
    #[schema(example = "my-secret")]
    pub(crate) name: String,
    /// The environment it lives in.
    #[schema(example = "main")]
    pub(crate) environment: String,
    /// When it was created (unique within the environment).
    #[schema(value_type = String, example = "2025-01-01T12:00:00.000001Z")]
    pub(crate) created_at: Timestamp,
    /// The name of the token that created it.
    pub(crate) created_by: String,
    /// The last time its values were resolved for a process, if ever.
    #[schema(value_type = Option<String>)]
    pub(crate) last_used_at: Option<Timestamp>,
    /// Its keys, sorted.
    pub(crate) keys: Vec<String>,
    /// Incremented by every change of its contents.
    pub(crate) version: i64,
}

impl From<&SecretSummary> for SecretInfo {
    fn from(s: &SecretSummary) -> Self {
        Self {
            id: s.id.clone(),
            name: s.name().unwrap_or_default().to_owned(),
            environment: s.environment_name.clone(),
            created_at: Timestamp::from_micros(s.created_at),
            created_by: s.created_by.clone(),
            last_used_at: s.last_used_at.map(Timestamp::from_micros),
            keys: s.keys.clone(),
            version: s.version,
        }
    }
}

/// One kept version of a secret: who made it, how, and which keys it
/// added, removed and changed (never a value).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct VersionInfo {
    /// Its number: 1, 2, 3... per secret, without gaps.
    pub(crate) version: i64,
    /// When it was made.
    #[schema(value_type = String, example = "2025-01-01T12:00:00.000001Z")]
    pub(crate) created_at: Timestamp,
    /// The name of the token that made it (empty when not known).
    pub(crate) created_by: String,
    /// `created`, `updated`, `overwritten` or `rolled back to N`.
    #[schema(example = "rolled back to 3")]
    pub(crate) action: String,
    /// For a rollback: the version whose contents it copied.
    pub(crate) rolled_back_to: Option<i64>,
    /// Its keys, sorted.
    pub(crate) keys: Vec<String>,
    /// Keys it added against the version before (`null`: that version was
    /// never kept, so the change is not known).
    pub(crate) keys_added: Option<Vec<String>>,
    /// Keys it removed.
    pub(crate) keys_removed: Option<Vec<String>>,
    /// Keys whose value it changed.
    pub(crate) keys_changed: Option<Vec<String>>,
}

impl From<&SecretVersion> for VersionInfo {
    fn from(v: &SecretVersion) -> Self {
        let changes = v.changes.as_ref();
        Self {
            version: v.version,
            created_at: Timestamp::from_micros(v.created_at),
            created_by: v.created_by.clone(),
            action: v.action.to_string(),
            rolled_back_to: v.action.source(),
            keys: v.keys.clone(),
            keys_added: changes.map(|c| c.added.clone()),
            keys_removed: changes.map(|c| c.removed.clone()),
            keys_changed: changes.map(|c| c.changed.clone()),
        }
    }
}

/// An environment.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct EnvironmentInfo {
    /// `en-...`
    pub(crate) id: String,
    /// Its name.
    #[schema(example = "dev")]
    pub(crate) name: String,
    /// Whether an empty environment name means this one.
    pub(crate) is_default: bool,
    /// The suffix Modal's client shows for web endpoints.
    pub(crate) webhook_suffix: String,
    /// When it was created.
    #[schema(value_type = String)]
    pub(crate) created_at: Timestamp,
}

impl From<&Environment> for EnvironmentInfo {
    fn from(e: &Environment) -> Self {
        Self {
            id: e.id.clone(),
            name: e.name.clone(),
            is_default: e.is_default,
            webhook_suffix: e.webhook_suffix.clone(),
            created_at: Timestamp::from_micros(e.created_at),
        }
    }
}

/// A token, without its secret.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct TokenInfo {
    /// `ak-...`, public.
    #[schema(example = "ak-3kTMd9zK0p1fQx7YbWcR2a")]
    pub(crate) id: String,
    /// Its name: the `created_by` of what it creates.
    pub(crate) name: String,
    /// What it may do.
    pub(crate) role: Role,
    /// The environments it is limited to; `null` means all.
    pub(crate) environments: Option<Vec<String>>,
    /// When it was created.
    #[schema(value_type = String)]
    pub(crate) created_at: Timestamp,
    /// When it was revoked, if it was.
    #[schema(value_type = Option<String>)]
    pub(crate) revoked_at: Option<Timestamp>,
    /// When it stops being accepted; `null`: never.
    #[schema(value_type = Option<String>)]
    pub(crate) expires_at: Option<Timestamp>,
    /// The last time it authenticated a request, to the minute.
    #[schema(value_type = Option<String>)]
    pub(crate) last_used_at: Option<Timestamp>,
    /// After a rotation with a grace period: until when the secret it
    /// replaced is still accepted.
    #[schema(value_type = Option<String>)]
    pub(crate) previous_secret_until: Option<Timestamp>,
}

impl From<&Token> for TokenInfo {
    fn from(t: &Token) -> Self {
        Self {
            id: t.id.clone(),
            name: t.name.clone(),
            role: t.role,
            environments: t.environments.clone(),
            created_at: Timestamp::from_micros(t.created_at),
            revoked_at: t.revoked_at.map(Timestamp::from_micros),
            expires_at: t.expires_at.map(Timestamp::from_micros),
            last_used_at: t.last_used_at.map(Timestamp::from_micros),
            previous_secret_until: t.previous_secret_until.map(Timestamp::from_micros),
        }
    }
}

/// The caller: its token and workspace.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct WhoAmI {
    /// The workspace's id (`ac-...`).
    pub(crate) workspace_id: String,
    /// The workspace's name.
    pub(crate) workspace_name: String,
    /// The token making the request.
    pub(crate) token: TokenInfo,
    /// The head of the audit chain, for clients that watch for a log cut
    /// short or restored from an older copy.
    pub(crate) audit_head: Option<super::audit::AuditHeadInfo>,
}

impl From<&Caller> for WhoAmI {
    fn from(caller: &Caller) -> Self {
        Self {
            workspace_id: caller.workspace().id.clone(),
            workspace_name: caller.workspace().name.clone(),
            token: caller.token().into(),
            audit_head: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_round_trip_to_the_microsecond() {
        let t = 1_735_732_800_000_001;
        let wire = |m| Timestamp::from_micros(m).to_string();
        assert_eq!(wire(t), "2025-01-01T12:00:00.000001Z");
        assert_eq!(parse_instant("x", &wire(t)).unwrap(), t);
        assert_eq!(parse_instant("x", &wire(0)).unwrap(), 0);
    }

    #[test]
    fn instants_accept_dates_offsets_and_naive_times() {
        let midnight = 1_735_689_600_000_000;
        assert_eq!(parse_instant("x", "2025-01-01").unwrap(), midnight);
        assert_eq!(parse_instant("x", "2025-01-01T00:00:00").unwrap(), midnight);
        assert_eq!(
            parse_instant("x", "2025-01-01T01:00:00+01:00").unwrap(),
            midnight
        );
        let e = parse_instant("created_before", "yesterday").unwrap_err();
        assert_eq!(e.kind(), latchkey_core::ErrorKind::Invalid);
        assert!(e.message().contains("created_before"), "{e}");
    }
}
