//! Row shapes shared by every SQL backend, and their conversion to the model.
//!
//! The columns are the same in every backend's schema, so `sqlx::FromRow`
//! derives one decoder per row shape that each adapter reuses.

use latchkey_core::{time::Micros, Error};

use crate::{
    crypto::{Binding, Keyring, Sealed},
    Environment, KeyChanges, Role, Secret, SecretKind, SecretSummary, SecretVersion, Token,
    VersionAction, Workspace,
};

#[derive(sqlx::FromRow)]
pub(crate) struct WorkspaceRow {
    id: String,
    name: String,
    created_at: i64,
}

impl From<WorkspaceRow> for Workspace {
    fn from(r: WorkspaceRow) -> Self {
        Workspace {
            id: r.id,
            name: r.name,
            created_at: r.created_at,
        }
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct EnvironmentRow {
    id: String,
    workspace_id: String,
    name: String,
    is_default: bool,
    webhook_suffix: String,
    created_at: i64,
}

impl From<EnvironmentRow> for Environment {
    fn from(r: EnvironmentRow) -> Self {
        Environment {
            id: r.id,
            workspace_id: r.workspace_id,
            name: r.name,
            is_default: r.is_default,
            webhook_suffix: r.webhook_suffix,
            created_at: r.created_at,
        }
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct TokenRow {
    id: String,
    workspace_id: String,
    name: String,
    role: String,
    environments: Option<String>,
    created_at: i64,
    revoked_at: Option<i64>,
    expires_at: Option<i64>,
    last_used_at: Option<i64>,
    previous_secret_until: Option<i64>,
    pub(crate) secret_hash: Vec<u8>,
    pub(crate) previous_secret_hash: Option<Vec<u8>>,
}

impl TryFrom<TokenRow> for Token {
    type Error = Error;

    fn try_from(r: TokenRow) -> Result<Self, Error> {
        let role = Role::parse(&r.role).ok_or_else(|| corrupt("token role", &r.id))?;
        let environments = r
            .environments
            .map(|json| serde_json::from_str(&json))
            .transpose()
            .map_err(|_| corrupt("token environments", &r.id))?;
        Ok(Token {
            id: r.id,
            workspace_id: r.workspace_id,
            name: r.name,
            role,
            environments,
            created_at: r.created_at,
            revoked_at: r.revoked_at,
            expires_at: r.expires_at,
            last_used_at: r.last_used_at,
            previous_secret_until: r.previous_secret_until,
        })
    }
}

/// Encodes a token's environment limit for its column.
pub(crate) fn environments_column(environments: &Option<Vec<String>>) -> Option<String> {
    environments
        .as_ref()
        .map(|e| serde_json::to_string(e).expect("strings serialize"))
}

/// A secret row joined with its environment's name. Its contents are still
/// sealed; no `Debug`, so it is never printed.
#[derive(sqlx::FromRow, Clone)]
pub(crate) struct SecretRow {
    pub(crate) id: String,
    pub(crate) workspace_id: String,
    environment_id: String,
    environment_name: String,
    name: Option<String>,
    app_id: Option<String>,
    expires_at: Option<i64>,
    created_at: i64,
    created_by: String,
    last_used_at: Option<i64>,
    pub(crate) version: i64,
    keys: Option<String>,
    key_id: String,
    wrapped_key: Vec<u8>,
    ciphertext: Vec<u8>,
}

/// The select list that decodes into [`SecretRow`]; the query must join
/// `environments e` and `secret_versions v` to `secrets s` (see
/// [`SECRET_FROM`]).
pub(crate) const SECRET_COLUMNS: &str = "s.id, s.workspace_id, s.environment_id, \
     e.name AS environment_name, s.name, s.app_id, s.expires_at, s.created_at, s.created_by, \
     s.last_used_at, s.version, v.keys, v.key_id, v.wrapped_key, v.ciphertext";

/// The tables of [`SECRET_COLUMNS`]: a secret with its environment and its
/// current version.
pub(crate) const SECRET_FROM: &str = "secrets s JOIN environments e ON e.id = s.environment_id \
     JOIN secret_versions v ON v.secret_id = s.id AND v.version = s.version";

impl SecretRow {
    /// Roughly the bytes the row occupies, for the lookup cache's limit.
    pub(crate) fn approximate_size(&self) -> usize {
        let strings = [
            &self.id,
            &self.workspace_id,
            &self.environment_id,
            &self.environment_name,
            &self.created_by,
            &self.key_id,
        ];
        std::mem::size_of::<Self>()
            + strings.iter().map(|s| s.len()).sum::<usize>()
            + self.name.as_ref().map_or(0, String::len)
            + self.app_id.as_ref().map_or(0, String::len)
            + self.keys.as_ref().map_or(0, String::len)
            + self.wrapped_key.len()
            + self.ciphertext.len()
    }

    #[cfg(test)]
    pub(crate) fn for_test(id: &str, name: &str, version: i64) -> Self {
        SecretRow {
            id: id.to_owned(),
            workspace_id: "ws".to_owned(),
            environment_id: "en".to_owned(),
            environment_name: "main".to_owned(),
            name: Some(name.to_owned()),
            app_id: None,
            expires_at: None,
            created_at: 0,
            created_by: "test".to_owned(),
            last_used_at: None,
            version,
            keys: Some("[]".to_owned()),
            key_id: "k".to_owned(),
            wrapped_key: vec![0; 60],
            ciphertext: vec![0; 64],
        }
    }

    /// The secret's metadata, read without decrypting: a damaged
    /// ciphertext does not keep a secret from being listed or deleted.
    pub(crate) fn summary(&self) -> SecretSummary {
        let kind = match &self.name {
            Some(name) => SecretKind::Named(name.clone()),
            None => SecretKind::Anonymous {
                app_id: self.app_id.clone(),
                expires_at: self.expires_at.unwrap_or_default(),
            },
        };
        SecretSummary {
            id: self.id.clone(),
            kind,
            environment_id: self.environment_id.clone(),
            environment_name: self.environment_name.clone(),
            created_at: self.created_at,
            created_by: self.created_by.clone(),
            last_used_at: self.last_used_at,
            version: self.version,
            keys: key_list(self.keys.as_deref(), &self.id),
        }
    }

    /// Decrypts the row into a [`Secret`]. A row that does not open is
    /// reported by the secret's name (or id).
    pub(crate) fn open(self, keyring: &Keyring) -> Result<Secret, Error> {
        let mut summary = self.summary();
        let contents = open_version(
            keyring,
            &self.workspace_id,
            &self.id,
            self.version,
            &Sealed {
                key_id: self.key_id,
                wrapped_key: self.wrapped_key,
                ciphertext: self.ciphertext,
            },
            summary.name().unwrap_or(&summary.id),
        )?;
        // Rows carried over from a store without key lists have none until
        // the first start that can decrypt them fills it in.
        summary.keys = contents.keys().cloned().collect();
        Ok(Secret { summary, contents })
    }
}

/// Opens the sealed contents of version `version` of a secret; an error
/// that names the secret (`label`) and the version when it does not open.
pub(crate) fn open_version(
    keyring: &Keyring,
    workspace_id: &str,
    secret_id: &str,
    version: i64,
    sealed: &Sealed,
    label: &str,
) -> Result<latchkey_core::EnvDict, Error> {
    keyring
        .open(
            Binding {
                workspace_id,
                secret_id,
                version,
            },
            sealed,
        )
        .map_err(|_| {
            tracing::error!(secret_id, version, "a stored secret version does not decrypt");
            // Not Internal: a client retries that, and this answer will not change.
            Error::failed_precondition(format!(
                "Secret '{}' version {version} cannot be decrypted: its stored ciphertext is damaged \
                 or was sealed under another key",
                latchkey_core::rules::echo(label)
            ))
        })
}

/// A key list column (a JSON array of names); empty when not filled in yet.
pub(crate) fn key_list(json: Option<&str>, id: &str) -> Vec<String> {
    json.map_or_else(Vec::new, |json| {
        serde_json::from_str(json).unwrap_or_else(|_| {
            tracing::error!(id, "a stored key list cannot be read");
            Vec::new()
        })
    })
}

/// Encodes a sorted key list for its column.
pub(crate) fn key_list_column<'a>(keys: impl Iterator<Item = &'a String>) -> String {
    serde_json::to_string(&keys.collect::<Vec<_>>()).expect("strings serialize")
}

/// A kept version of a secret, without its sealed contents.
#[derive(sqlx::FromRow)]
pub(crate) struct VersionRow {
    version: i64,
    created_at: i64,
    created_by: String,
    action: String,
    source_version: Option<i64>,
    keys: Option<String>,
    changes: Option<String>,
}

/// The select list of [`VersionRow`].
pub(crate) const VERSION_COLUMNS: &str =
    "version, created_at, created_by, action, source_version, keys, changes";

impl VersionRow {
    pub(crate) fn into_version(self, secret_id: &str) -> Result<SecretVersion, Error> {
        let action = VersionAction::from_columns(&self.action, self.source_version)
            .ok_or_else(|| corrupt("version action", secret_id))?;
        let changes = self
            .changes
            .map(|json| serde_json::from_str::<KeyChanges>(&json))
            .transpose()
            .map_err(|_| corrupt("version changes", secret_id))?;
        Ok(SecretVersion {
            version: self.version,
            created_at: self.created_at,
            created_by: self.created_by,
            action,
            keys: key_list(self.keys.as_deref(), secret_id),
            changes,
        })
    }
}

/// The columns of a new secret row.
pub(crate) struct SecretInsert<'a> {
    pub(crate) name: Option<&'a str>,
    pub(crate) app_id: Option<&'a str>,
    pub(crate) expires_at: Option<Micros>,
}

impl<'a> SecretInsert<'a> {
    pub(crate) fn of(kind: &'a SecretKind) -> Self {
        match kind {
            SecretKind::Named(name) => SecretInsert {
                name: Some(name),
                app_id: None,
                expires_at: None,
            },
            SecretKind::Anonymous { app_id, expires_at } => SecretInsert {
                name: None,
                app_id: app_id.as_deref(),
                expires_at: Some(*expires_at),
            },
        }
    }
}

fn corrupt(what: &str, id: &str) -> Error {
    tracing::error!(what, id, "a row holds a value this version cannot read");
    Error::internal(format!("The stored {what} of '{id}' cannot be read"))
}

/// Messages for objects that are not there. What the caller sent is echoed
/// shortened ([`echo`](latchkey_core::rules::echo)): a 100 KB id in a
/// gRPC status message would exceed what HTTP/2 peers accept in headers and
/// drop the whole connection.
pub(crate) fn secret_not_found(id: &str) -> Error {
    Error::not_found(format!(
        "Secret '{}' not found",
        latchkey_core::rules::echo(id)
    ))
}

pub(crate) fn token_not_found(id: &str) -> Error {
    Error::not_found(format!(
        "Token '{}' not found",
        latchkey_core::rules::echo(id)
    ))
}

pub(crate) fn environment_not_found(name: &str) -> Error {
    Error::not_found(format!(
        "Environment '{}' not found",
        latchkey_core::rules::echo(name)
    ))
}

/// The columns of an audit event, in [`AuditRow`]'s order.
pub(crate) const AUDIT_COLUMNS: &str = "seq, at, workspace_id, actor_id, actor_name, actor_role, \
     client, interface, action, environment, secret_name, secret_id, version, outcome, detail, mac";

#[derive(sqlx::FromRow)]
pub(crate) struct AuditRow {
    seq: i64,
    at: i64,
    workspace_id: Option<String>,
    actor_id: Option<String>,
    actor_name: Option<String>,
    actor_role: Option<String>,
    client: Option<String>,
    interface: String,
    action: String,
    environment: Option<String>,
    secret_name: Option<String>,
    secret_id: Option<String>,
    version: Option<i64>,
    outcome: String,
    detail: Option<String>,
    mac: Vec<u8>,
}

impl From<AuditRow> for crate::audit::AuditEvent {
    fn from(r: AuditRow) -> Self {
        // An actor is all three columns or none; a row written otherwise
        // (by hand) keeps what it has, so that its MAC fails rather than
        // the read.
        let actor = (r.actor_id.is_some() || r.actor_name.is_some() || r.actor_role.is_some())
            .then(|| crate::audit::Actor {
                token_id: r.actor_id.unwrap_or_default(),
                name: r.actor_name.unwrap_or_default(),
                role: r.actor_role.unwrap_or_default(),
            });
        crate::audit::AuditEvent {
            seq: r.seq,
            at: r.at,
            entry: crate::audit::AuditEntry {
                workspace_id: r.workspace_id,
                actor,
                client: r.client,
                interface: r.interface,
                action: r.action,
                environment: r.environment,
                secret_name: r.secret_name,
                secret_id: r.secret_id,
                version: r.version,
                outcome: r.outcome,
                detail: r.detail,
            },
            mac: r.mac,
        }
    }
}
