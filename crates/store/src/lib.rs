//! latchkey's storage.
//!
//! [`Store`] is what the server needs from a database. Every statement is
//! written once, in one SQL layer over two engines ([`SqliteStore`] for one
//! machine, [`PgStore`] for several replicas on one PostgreSQL database),
//! which keep only what differs; [`open`] picks the engine a URL names.
//! [`conformance`] is the one suite of behaviour every engine must pass
//! unchanged. [`copy`] moves a whole store, still sealed, from one backend
//! to another.
//!
//! The store receives and returns plaintext
//! [`EnvDict`](latchkey_core::EnvDict)s and does the sealing itself through
//! a [`crypto::Keyring`], inside the same transaction as the read or write:
//! that is what lets `update()` merge atomically, and it keeps the rows'
//! layout (wrapped data key, ciphertext, version bound into the associated
//! data) in one place.

pub mod audit;
pub mod backup;
mod cache;
mod changes;
pub mod conformance;
pub mod copy;
pub mod crypto;
mod model;
mod postgres;
mod rows;
mod sql;
mod sqlite;

pub use model::*;
pub use postgres::{PgOptions, PgStore};
pub use sqlite::SqliteStore;

use audit::{
    AuditEntry, AuditEvent, AuditFilter, AuditHead, TokenExposure, Verdict, VersionExposure,
};
use crypto::Keyring;

use std::sync::Arc;

use async_trait::async_trait;
use latchkey_core::{time::Micros, Error};

/// How precisely `last_used_at` is kept: one minute, in microseconds.
pub const LAST_USED_RESOLUTION: Micros = 60_000_000;

/// How far a master-key rotation is: data keys rewrapped of those that were
/// wrapped by another key when it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RotationProgress {
    /// Data keys rewrapped so far.
    pub done: u64,
    /// Data keys to rewrap in all.
    pub total: u64,
}

/// Why a store could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The store was sealed under another master key.
    #[error(
        "the master key (id {given}) cannot decrypt this store, which was created with master key id {stored}; \
         start with the key this store was created with (--master-key-file or LATCHKEY_MASTER_KEY)"
    )]
    WrongMasterKey {
        /// Id of the key given.
        given: String,
        /// Id of the key the store was made with.
        stored: String,
    },
    /// Another server has the SQLite database open.
    #[error(
        "the database {target} is in use by another latchkey server; \
         stop it first (several replicas need PostgreSQL: --database postgres://...)"
    )]
    InUse {
        /// The database file.
        target: String,
    },
    /// The store's own records do not hold together (its audit key does
    /// not open with the master key that opens everything else).
    #[error("the store is damaged: {0}")]
    Damaged(String),
    /// The database URL is not one an adapter understands.
    #[error("invalid database URL: {0}")]
    BadUrl(String),
    /// The database could not be reached, opened or migrated.
    // The cause is part of the message rather than a `source()`, so that an
    // error chain printed in full says it once.
    #[error("cannot open the {backend} database {target}: {cause}")]
    Database {
        /// `SQLite` or `PostgreSQL`.
        backend: &'static str,
        /// The file, or the server and database name (never a password).
        target: String,
        /// What failed.
        cause: sqlx::Error,
    },
}

/// The backend a database URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Backend {
    /// `sqlite://PATH`: one file, one server.
    Sqlite,
    /// `postgres://USER@HOST:PORT/DB` (or `postgresql://`): any number of replicas.
    Postgres,
}

impl Backend {
    /// The backend of `url`, if latchkey has one for its scheme (and it is
    /// not an in-memory SQLite database).
    pub fn of(url: &str) -> Option<Self> {
        if url.starts_with("sqlite:") {
            // A store must outlive the process: an in-memory database is
            // none (sqlx would even take its name for a file's).
            let in_memory = url.contains(":memory:") || url.contains("mode=memory");
            (!in_memory).then_some(Backend::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Some(Backend::Postgres)
        } else {
            None
        }
    }
}

/// How stores are opened: the settings of each backend.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options {
    /// Connections and time bounds, for a `postgres://` database.
    pub postgres: PgOptions,
}

/// The scheme of `url` names no backend: an error saying which scheme it
/// has (only the scheme, as the rest may hold a password).
fn unsupported(url: &str) -> OpenError {
    OpenError::BadUrl(format!(
        "unsupported scheme {:?} (expected sqlite://PATH or postgres://USER@HOST:PORT/DB)",
        url.split(':').next().unwrap_or_default()
    ))
}

/// The store at `url` for messages: a SQLite file, or PostgreSQL's
/// `host:port/db` (never a password).
pub fn describe(url: &str) -> String {
    match Backend::of(url) {
        Some(Backend::Sqlite) => sqlite::describe(url),
        Some(Backend::Postgres) => postgres::describe(url),
        None => "an unsupported database".to_owned(),
    }
}

/// The files a store at `url` keeps on this machine: a SQLite database and
/// its journals, which hold recent writes (none for PostgreSQL). Code the
/// server runs for callers must never see them.
pub fn database_files(url: &str) -> Vec<std::path::PathBuf> {
    if Backend::of(url) != Some(Backend::Sqlite) {
        return Vec::new();
    }
    let file = sqlite::describe(url);
    ["", "-wal", "-shm", "-journal"]
        .iter()
        .map(|suffix| format!("{file}{suffix}").into())
        .collect()
}

/// Whether the database at `url` already holds a latchkey store, without
/// changing anything: a server may generate a master key only for a store
/// that does not exist yet.
pub async fn exists(url: &str, options: &Options) -> Result<bool, OpenError> {
    match Backend::of(url).ok_or_else(|| unsupported(url))? {
        Backend::Sqlite => Ok(std::path::Path::new(&sqlite::describe(url)).exists()),
        Backend::Postgres => PgStore::exists(url, options.postgres).await,
    }
}

/// Opens the store at `url` with the backend its scheme names (creating and
/// migrating it if needed), checking that `keyring` is its master key.
pub async fn open(
    url: &str,
    keyring: Keyring,
    options: &Options,
) -> Result<Arc<dyn Store>, OpenError> {
    Ok(match Backend::of(url).ok_or_else(|| unsupported(url))? {
        Backend::Sqlite => Arc::new(SqliteStore::open(url, keyring).await?),
        Backend::Postgres => Arc::new(PgStore::open(url, keyring, options.postgres).await?),
    })
}

/// Everything the server reads and writes. Every method is one transaction.
///
/// Errors are [`latchkey_core::Error`]s with user-facing messages: NotFound,
/// AlreadyExists and Invalid for the caller's mistakes, Unavailable when the
/// database cannot be reached, Internal (details only in the log) otherwise.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Checks that the database answers (for `/readyz`).
    async fn ping(&self) -> Result<(), Error>;

    /// Closes the store's connections cleanly (SQLite checkpoints its WAL
    /// and removes it). Called once, after the last request.
    async fn close(&self) {}

    /// Creates the workspace `default`, its environment `main` and the first
    /// admin token when the store holds no workspace; does nothing otherwise.
    /// Returns whether it created them.
    async fn bootstrap(&self, admin: &NewToken) -> Result<bool, Error>;

    /// The workspace with this id.
    async fn workspace(&self, id: &str) -> Result<Workspace, Error>;

    /// The environments of a workspace, the default first, then by creation.
    async fn list_environments(&self, workspace_id: &str) -> Result<Vec<Environment>, Error>;

    /// The environment named `name`, or the workspace default when `name` is
    /// empty; an environment id (`en-...`) is taken too.
    async fn environment(&self, workspace_id: &str, name: &str) -> Result<Environment, Error>;

    /// A new environment. AlreadyExists when the name is taken.
    async fn create_environment(
        &self,
        workspace_id: &str,
        name: &str,
        audit: &AuditEntry,
    ) -> Result<Environment, Error>;

    /// Renames an environment and/or changes its webhook suffix.
    async fn update_environment(
        &self,
        workspace_id: &str,
        current_name: &str,
        update: &EnvironmentUpdate,
        audit: &AuditEntry,
    ) -> Result<Environment, Error>;

    /// Deletes an environment and, when `with_secrets`, every secret in it.
    /// Refuses the workspace default, and an environment holding named
    /// secrets unless `with_secrets`.
    async fn delete_environment(
        &self,
        workspace_id: &str,
        name: &str,
        with_secrets: bool,
        audit: &AuditEntry,
    ) -> Result<(), Error>;

    /// Stores a new token (only the hash of its secret).
    async fn create_token(&self, token: &NewToken, audit: &AuditEntry) -> Result<Token, Error>;

    /// The token with this id, with the stored hash of its secret (and of
    /// the secret a rotation replaced, while its grace period runs at
    /// `now`), if any and not revoked. An expired token is returned too
    /// (authentication says when it expired). Never fails for an unknown
    /// id: authentication decides.
    async fn token_for_auth(
        &self,
        token_id: &str,
        now: Micros,
    ) -> Result<Option<TokenCredentials>, Error>;

    /// Records that the token authenticated a request at `at`, at most once
    /// per [`LAST_USED_RESOLUTION`] (a use within that time of the recorded
    /// one changes nothing), like [`mark_used`](Self::mark_used) for secrets.
    async fn mark_token_used(&self, token_id: &str, at: Micros) -> Result<(), Error>;

    /// Gives the workspace's active, unexpired token `token_id` a new secret
    /// (`secret_hash`). The secret it replaces stays accepted until
    /// `grace_until` if that is in the future, and is forgotten otherwise.
    /// NotFound if the workspace has no such active token,
    /// FailedPrecondition if it has expired.
    async fn rotate_token(
        &self,
        workspace_id: &str,
        token_id: &str,
        secret_hash: &[u8; 32],
        grace_until: Option<Micros>,
        audit: &AuditEntry,
    ) -> Result<Token, Error>;

    /// The tokens of a workspace (revoked ones included), oldest first.
    async fn list_tokens(&self, workspace_id: &str) -> Result<Vec<Token>, Error>;

    /// Revokes a token; NotFound if the workspace has no such active token,
    /// FailedPrecondition if it is the workspace's last active admin token
    /// not limited to some environments.
    /// The check and the revocation are one transaction, ordered with every
    /// other revocation in the workspace, so that concurrent revocations
    /// (through any replica) never leave a workspace without an admin.
    async fn revoke_token(
        &self,
        workspace_id: &str,
        token_id: &str,
        audit: &AuditEntry,
    ) -> Result<(), Error>;

    /// Creates a secret, or, for a named one whose name exists, acts as
    /// `secret.on_conflict` says. Returns the secret and whether it was created.
    /// NotFound when its environment is not there (as
    /// [`environment`](Store::environment) would answer), PermissionDenied
    /// when it is not among `secret.environments`; both are decided in the
    /// create's own transaction.
    async fn create_secret(&self, secret: &NewSecret) -> Result<(Secret, bool), Error>;

    /// A named secret, with its contents.
    async fn secret_by_name(
        &self,
        workspace_id: &str,
        environment_id: &str,
        name: &str,
    ) -> Result<Secret, Error>;

    /// A named secret, with its values, found by its environment's name
    /// (empty: the workspace default; an id, `en-...`, is taken too) rather
    /// than its id alone: what a process that starts with the secret reads. `None` when the environment or the
    /// secret is missing ([`environment`](Self::environment) tells which).
    /// Adapters may answer from a cache of sealed rows, kept exact.
    async fn secret_in_environment(
        &self,
        workspace_id: &str,
        environment_name: &str,
        name: &str,
    ) -> Result<Option<Secret>, Error>;

    /// The metadata (keys included, never values) of a named secret found
    /// like [`secret_in_environment`](Self::secret_in_environment): the
    /// lookup on every container start. Adapters may answer from cache
    /// without decrypting.
    async fn secret_summary_in_environment(
        &self,
        workspace_id: &str,
        environment_name: &str,
        name: &str,
    ) -> Result<Option<SecretSummary>, Error>;

    /// The metadata of any secret of the workspace, by id, read without
    /// decrypting.
    async fn secret_summary_by_id(
        &self,
        workspace_id: &str,
        secret_id: &str,
    ) -> Result<SecretSummary, Error>;

    /// Any secret of the workspace, by id, with its contents.
    async fn secret_by_id(&self, workspace_id: &str, secret_id: &str) -> Result<Secret, Error>;

    /// Applies `changes` in order (a value sets the key, `None` removes it) in
    /// one transaction, as one new version, so that concurrent updates of
    /// different keys all survive. Returns the new state.
    async fn update_secret(
        &self,
        workspace_id: &str,
        secret_id: &str,
        changes: &[(String, Option<String>)],
        revision: &Revision,
    ) -> Result<Secret, Error>;

    /// Makes a new version of a secret whose contents are those of its kept
    /// version `to`. FailedPrecondition when `to` is the current version,
    /// NotFound (naming the kept versions) when it is not kept.
    async fn rollback_secret(
        &self,
        workspace_id: &str,
        secret_id: &str,
        to: i64,
        revision: &Revision,
    ) -> Result<Secret, Error>;

    /// Version `version` of a secret: its metadata as of that version (the
    /// version's number and keys), its contents, and the version's record.
    /// NotFound (naming the kept versions) when it is not kept.
    async fn secret_version(
        &self,
        workspace_id: &str,
        secret_id: &str,
        version: i64,
    ) -> Result<(Secret, SecretVersion), Error>;

    /// The kept versions of a secret, newest first, numbered below `before`
    /// when given, at most `limit`; never a value.
    async fn secret_history(
        &self,
        workspace_id: &str,
        secret_id: &str,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<SecretVersion>, Error>;

    /// Deletes a secret and every version of it, with their data keys.
    /// NotFound if there is none; PermissionDenied if it is not in one of
    /// `environments` (when given: those of the deleting token, named by
    /// `audit`'s actor), checked in the delete's own transaction.
    async fn delete_secret(
        &self,
        workspace_id: &str,
        secret_id: &str,
        audit: &AuditEntry,
        environments: Option<&[String]>,
    ) -> Result<(), Error>;

    /// Named secrets of an environment, newest first, created strictly before
    /// `created_before` when given, at most `limit`.
    async fn list_secrets(
        &self,
        workspace_id: &str,
        environment_id: &str,
        created_before: Option<Micros>,
        limit: u32,
    ) -> Result<Vec<SecretSummary>, Error>;

    /// Records that these secrets were delivered to a running process, at
    /// most once per [`LAST_USED_RESOLUTION`]: a use within that time of the
    /// recorded one changes nothing, so that a secret every container start
    /// reads is not rewritten (and, on PostgreSQL, announced) each time.
    async fn mark_used(
        &self,
        workspace_id: &str,
        secret_ids: &[String],
        at: Micros,
    ) -> Result<(), Error>;

    /// Deletes anonymous secrets whose time to live ended before `now`.
    /// Returns how many it deleted.
    async fn sweep_expired(&self, now: Micros) -> Result<u64, Error>;

    // --- the audit log ([`audit`]) ----------------------------------------
    //
    // Every write above appends its own event, in its own transaction,
    // completed from `audit` (who, where from, through which interface)
    // with its action and what it changed; a write whose event cannot be
    // appended fails as Unavailable and changes nothing.

    /// Appends events that record no change of their own (reads of values,
    /// refusals), committed before this returns; appends from concurrent
    /// callers share one commit. Returns the head after them.
    async fn record(&self, entries: &[AuditEntry]) -> Result<AuditHead, Error>;

    /// The head of the chain: the newest event's number and MAC.
    async fn audit_head(&self) -> Result<AuditHead, Error>;

    /// Events of a workspace (and those of none: failed authentications of
    /// unknown tokens), oldest first, that `filter` selects; at most `limit`.
    async fn audit_events(
        &self,
        workspace_id: &str,
        filter: &AuditFilter,
        limit: u32,
    ) -> Result<Vec<AuditEvent>, Error>;

    /// Checks the whole chain against the audit key and the head.
    async fn audit_verify(&self) -> Result<Verdict, Error>;

    /// Removes the events logged before `before`, after appending a
    /// checkpoint (by `audit`) from which the chain is verified on.
    /// Returns how many it removed.
    async fn audit_retain(&self, before: Micros, audit: &AuditEntry) -> Result<u64, Error>;

    /// Who read the values of each version of a secret, newest first.
    async fn secret_exposure(
        &self,
        workspace_id: &str,
        secret_id: &str,
    ) -> Result<Vec<VersionExposure>, Error>;

    /// The secrets whose current version the token `token_id` has read.
    async fn token_exposure(
        &self,
        workspace_id: &str,
        token_id: &str,
    ) -> Result<Vec<TokenExposure>, Error>;
    /// Rotates the master key online: from now on this store seals under
    /// `new` (while still opening what its previous key wrapped), rewraps
    /// every data key wrapped by another key in batches of `batch`, each
    /// its own short transaction so that reads and writes go on, then
    /// replaces the key check, the master key id and the wrapped audit key
    /// with `new`'s and forgets the previous key. `progress` is told after
    /// each batch.
    ///
    /// Resumable: run again with the same `new` key on a store opened with
    /// both keys ([`Keyring::rotating`]), it rewraps what is left. Refused
    /// while another rotation is unfinished. Several replicas of one
    /// database may run it at once with the same `new` key: a version is
    /// rewrapped (and counted) by one of them, and the end is the same.
    async fn rotate_master_key(
        &self,
        new: crypto::MasterKey,
        batch: u32,
        progress: &(dyn Fn(RotationProgress) + Send + Sync),
    ) -> Result<RotationProgress, Error>;

    /// Starts a backup of the whole store ([`backup::take`]): one
    /// consistent snapshot read while the store serves, its bytes yielded
    /// in chunks.
    fn backup(&self) -> tokio::sync::mpsc::Receiver<Result<Vec<u8>, copy::CopyError>>;
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::database_files;

    #[test]
    fn a_sqlite_store_keeps_its_file_and_journals() {
        assert_eq!(
            database_files("sqlite:///var/db/lk.db?mode=rwc"),
            [
                "/var/db/lk.db",
                "/var/db/lk.db-wal",
                "/var/db/lk.db-shm",
                "/var/db/lk.db-journal"
            ]
            .map(PathBuf::from)
        );
        assert_eq!(database_files("sqlite:lk.db")[0], PathBuf::from("lk.db"));
        assert!(database_files("postgres://u@h/db").is_empty());
    }
}
