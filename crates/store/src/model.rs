use std::fmt;

use latchkey_core::{time::Micros, EnvDict};

/// A tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workspace {
    /// `ac-...`
    pub id: String,
    /// Unique name; the first one is `default`.
    pub name: String,
    /// Creation time.
    pub created_at: Micros,
}

/// A namespace of secrets within a workspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Environment {
    /// `en-...`
    pub id: String,
    /// The owning workspace.
    pub workspace_id: String,
    /// Unique within the workspace.
    pub name: String,
    /// Whether an empty environment name in a request means this one.
    pub is_default: bool,
    /// Suffix Modal's client shows for web endpoints; kept, not used.
    pub webhook_suffix: String,
    /// Creation time.
    pub created_at: Micros,
}

/// A change of an environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvironmentUpdate {
    /// The new name, if it changes.
    pub name: Option<String>,
    /// The new webhook suffix, if it changes.
    pub webhook_suffix: Option<String>,
}

pub use latchkey_core::Role;

/// A token as stored, without its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// `ak-...`, public.
    pub id: String,
    /// The workspace it belongs to; it sees nothing of another.
    pub workspace_id: String,
    /// Its name: the `created_by` of what it creates.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// The environments it is limited to; `None` means all.
    pub environments: Option<Vec<String>>,
    /// Creation time.
    pub created_at: Micros,
    /// When it was revoked, if it was.
    pub revoked_at: Option<Micros>,
    /// When it stops being accepted; `None`: never.
    pub expires_at: Option<Micros>,
    /// The last time it authenticated a request, kept to
    /// [`LAST_USED_RESOLUTION`](crate::LAST_USED_RESOLUTION).
    pub last_used_at: Option<Micros>,
    /// After a rotation with a grace period: until when the secret it
    /// replaced is still accepted.
    pub previous_secret_until: Option<Micros>,
}

impl Token {
    /// Whether it has expired at `now`.
    pub fn expired_at(&self, now: Micros) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }
}

/// What authentication needs of a token: the token, the stored hash of its
/// secret and, during a rotation's grace period, the hash of the secret it
/// replaced (accepted until [`Token::previous_secret_until`]). No `Debug`:
/// hashes are not for logs.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenCredentials {
    /// The token.
    pub token: Token,
    /// SHA-256 of its current secret.
    pub secret_hash: Vec<u8>,
    /// SHA-256 of the secret a rotation replaced, while it is accepted.
    pub previous_secret_hash: Option<Vec<u8>>,
}

/// A token to store. `secret_hash` is the SHA-256 of its secret.
#[derive(Clone, PartialEq, Eq)]
pub struct NewToken {
    /// `ak-...`
    pub id: String,
    /// The workspace; for [`Store::bootstrap`](crate::Store::bootstrap) it is
    /// the id the new workspace gets.
    pub workspace_id: String,
    /// Its name.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// The environments it is limited to; `None` means all.
    pub environments: Option<Vec<String>>,
    /// SHA-256 of the secret.
    pub secret_hash: [u8; 32],
    /// When it stops being accepted; `None`: never.
    pub expires_at: Option<Micros>,
}

impl fmt::Debug for NewToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewToken")
            .field("id", &self.id)
            .field("workspace_id", &self.workspace_id)
            .field("name", &self.name)
            .field("role", &self.role)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// How a secret came to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretKind {
    /// Named, listed, kept until deleted.
    Named(String),
    /// Anonymous (`from_dict` and friends), never listed, removed at `expires_at`.
    Anonymous {
        /// The app that owns it, if it was created inside an app.
        app_id: Option<String>,
        /// When the sweeper removes it.
        expires_at: Micros,
    },
}

/// What to do when a named secret's name is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnConflict {
    /// AlreadyExists.
    Fail,
    /// Return the existing secret unchanged.
    ReturnExisting,
    /// Replace the existing secret's contents (a new version, same id).
    Overwrite,
}

/// A secret to create.
#[derive(Clone, PartialEq, Eq)]
pub struct NewSecret {
    /// The owning workspace.
    pub workspace_id: String,
    /// The environment it goes to, as [`Store::environment`](crate::Store::environment)
    /// takes it: its id, its name, or "" for the workspace's default. The
    /// write's own transaction finds it (and keeps it from going until the
    /// write commits).
    pub environment: String,
    /// The environments the creating token may use (`None`: all), checked
    /// against the environment found in the write's own transaction.
    pub environments: Option<Vec<String>>,
    /// Named or anonymous.
    pub kind: SecretKind,
    /// Name of the token that creates it.
    pub created_by: String,
    /// Its contents, already checked against the rules.
    pub contents: EnvDict,
    /// For named secrets whose name exists.
    pub on_conflict: OnConflict,
    /// How many versions an overwrite keeps (see [`Revision::keep_versions`]).
    pub keep_versions: u32,
    /// Who creates it, for the audit log (the store sets the action and
    /// what was created).
    pub audit: crate::audit::AuditEntry,
}

impl fmt::Debug for NewSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewSecret")
            .field("environment", &self.environment)
            .field("kind", &self.kind)
            .field("keys", &self.contents.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// A secret's metadata, as listings show it (no contents, no keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretSummary {
    /// `st-...`
    pub id: String,
    /// Named or anonymous.
    pub kind: SecretKind,
    /// The environment's id.
    pub environment_id: String,
    /// The environment's name.
    pub environment_name: String,
    /// Creation time, unique among the environment's named secrets.
    pub created_at: Micros,
    /// Name of the token that created it.
    pub created_by: String,
    /// Last time its values reached a running process.
    pub last_used_at: Option<Micros>,
    /// Incremented by every change of contents.
    pub version: i64,
    /// Its keys, sorted.
    pub keys: Vec<String>,
}

impl SecretSummary {
    /// The name of a named secret.
    pub fn name(&self) -> Option<&str> {
        match &self.kind {
            SecretKind::Named(name) => Some(name),
            SecretKind::Anonymous { .. } => None,
        }
    }
}

/// A secret with its contents. `Debug` shows the keys, never the values.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    /// Everything but the values.
    pub summary: SecretSummary,
    /// The decrypted contents.
    pub contents: EnvDict,
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secret")
            .field("summary", &self.summary)
            .finish_non_exhaustive()
    }
}

/// How a version of a secret came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionAction {
    /// The secret was created (version 1).
    Created,
    /// `update()` / PATCH merged changes into the version before.
    Updated,
    /// A create with overwrite replaced the contents.
    Overwritten,
    /// A rollback copied the contents of an earlier version.
    RolledBack {
        /// The version whose contents were copied.
        to: i64,
    },
}

impl VersionAction {
    /// The column value (a rollback's source is a column of its own).
    pub fn as_str(self) -> &'static str {
        match self {
            VersionAction::Created => "created",
            VersionAction::Updated => "updated",
            VersionAction::Overwritten => "overwritten",
            VersionAction::RolledBack { .. } => "rolled_back",
        }
    }

    /// The version a rollback copied.
    pub fn source(self) -> Option<i64> {
        match self {
            VersionAction::RolledBack { to } => Some(to),
            _ => None,
        }
    }

    /// Reads the two columns back; `None` for a value this version does not know.
    pub fn from_columns(action: &str, source: Option<i64>) -> Option<Self> {
        Some(match (action, source) {
            ("created", _) => VersionAction::Created,
            ("updated", _) => VersionAction::Updated,
            ("overwritten", _) => VersionAction::Overwritten,
            ("rolled_back", Some(to)) => VersionAction::RolledBack { to },
            _ => return None,
        })
    }
}

impl fmt::Display for VersionAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VersionAction::RolledBack { to } => write!(f, "rolled back to {to}"),
            other => f.write_str(other.as_str()),
        }
    }
}

/// The names of the keys a version added, removed and changed against the
/// version before it (compared inside the server; never a value).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KeyChanges {
    /// Keys that were not there before, sorted.
    pub added: Vec<String>,
    /// Keys that are gone, sorted.
    pub removed: Vec<String>,
    /// Keys whose value differs, sorted.
    pub changed: Vec<String>,
}

impl KeyChanges {
    /// What changed from `before` to `after`.
    pub fn between(before: &EnvDict, after: &EnvDict) -> Self {
        let mut changes = KeyChanges::default();
        for (key, value) in after {
            match before.get(key) {
                None => changes.added.push(key.clone()),
                Some(old) if old != value => changes.changed.push(key.clone()),
                Some(_) => {}
            }
        }
        changes.removed = before
            .keys()
            .filter(|k| !after.contains_key(*k))
            .cloned()
            .collect();
        changes
    }
}

/// One kept version of a secret, without its values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretVersion {
    /// 1, 2, 3... per secret, without gaps.
    pub version: i64,
    /// When it was made.
    pub created_at: Micros,
    /// Name of the token that made it; empty when not known (a version
    /// carried over from a store that kept no history).
    pub created_by: String,
    /// How it was made.
    pub action: VersionAction,
    /// Its keys, sorted.
    pub keys: Vec<String>,
    /// Its key-level changes against the version before; `None` when that
    /// version was never kept.
    pub changes: Option<KeyChanges>,
}

/// How many versions of each secret a server keeps unless told otherwise.
pub const DEFAULT_KEEP_VERSIONS: u32 = 20;

/// Who makes a new version of a secret, and under what conditions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revision {
    /// Name of the token that makes it.
    pub author: String,
    /// How many versions of the secret are kept, this one included (at
    /// least 1); older ones are destroyed with their data keys.
    pub keep_versions: u32,
    /// Compare-and-swap: the write is refused (FailedPrecondition) unless
    /// this is the current version.
    pub expected_version: Option<i64>,
    /// Who writes, for the audit log (the store sets the action and the
    /// version made).
    pub audit: crate::audit::AuditEntry,
    /// The environments `author` may write in (`None`: all). A secret of
    /// another is refused (PermissionDenied) in the write's own
    /// transaction, so no read before the write has to check it.
    pub environments: Option<Vec<String>>,
}

impl Revision {
    /// A write by `author` that keeps [`DEFAULT_KEEP_VERSIONS`] versions
    /// and expects no particular current version.
    pub fn by(author: impl Into<String>) -> Self {
        Revision {
            author: author.into(),
            keep_versions: DEFAULT_KEEP_VERSIONS,
            expected_version: None,
            audit: crate::audit::AuditEntry::server(),
            environments: None,
        }
    }
}
