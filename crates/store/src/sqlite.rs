//! The embedded SQLite adapter: one file, WAL, durable commits.
//!
//! Writes go through a pool of exactly one connection, so SQLite never has to
//! arbitrate between writers (no `SQLITE_BUSY` upgrades, no lost updates);
//! reads use a separate pool of read-only connections that WAL lets run
//! beside the writer. Every commit is durable (`synchronous = FULL`) before
//! it is acknowledged, and deleted rows are overwritten (`secure_delete`).

use std::{
    future::Future,
    path::PathBuf,
    str::FromStr,
    sync::{Arc, LazyLock},
    time::Duration,
};

use async_trait::async_trait;
use latchkey_core::{ids, time::now_micros, time::Micros, Error};
use sqlx::{
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
    Connection as _, Sqlite, SqliteConnection, SqlitePool, Transaction,
};
use tokio::sync::{mpsc, oneshot};

use crate::{
    cache::LookupCache,
    crypto::{Binding, Keyring},
    rows::{
        environment_not_found, environments_column, secret_not_found, token_not_found,
        EnvironmentRow, SecretInsert, SecretRow, TokenRow, WorkspaceRow, SECRET_COLUMNS,
    },
    Environment, EnvironmentUpdate, NewSecret, NewToken, OnConflict, OpenError, Role, Secret,
    SecretKind, SecretSummary, Store, Token, Workspace,
};

/// The SQLite adapter.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
    keyring: Keyring,
    creates: mpsc::Sender<CreateJob>,
    /// Rows of named lookups. Every write to this database goes through
    /// this store (one server per SQLite file), so the cache is always live.
    cache: Arc<LookupCache>,
    /// Held while the store is open: one server per SQLite database.
    lock: Arc<std::fs::File>,
}

/// A create waiting for the next group commit, and where its answer goes.
struct CreateJob {
    new: NewSecret,
    done: oneshot::Sender<Result<(SecretRow, bool), Error>>,
}

/// Most creates committed together. One fsync then acknowledges them all.
const MAX_GROUP: usize = 128;

const META_KEY_CHECK: &str = "key_check";
const META_KEY_ID: &str = "master_key_id";

impl SqliteStore {
    /// Opens (creating if needed) the database at `url` (`sqlite://PATH`),
    /// runs migrations, and checks that `keyring` is the store's master key.
    ///
    /// A store sealed under another key is refused before anything is written.
    pub async fn open(url: &str, keyring: Keyring) -> Result<Self, OpenError> {
        let base = SqliteConnectOptions::from_str(url)
            .map_err(|e| OpenError::BadUrl(format!("{url}: {e}")))?;
        let path = base.get_filename().to_path_buf();
        let db_err = |source| OpenError::Database {
            backend: "SQLite",
            target: path.display().to_string(),
            cause: source,
        };
        if path.exists() {
            check_key_without_writing(&path, &keyring).await?;
        } else {
            create_private_file(&path).map_err(|e| db_err(sqlx::Error::Io(e)))?;
        }
        // Beside the file itself: a database reached through a symlink and
        // by its own name is one database, with one lock.
        let real = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
        let lock = lock_database(&real).map_err(|e| match e {
            std::fs::TryLockError::WouldBlock => OpenError::InUse {
                target: path.display().to_string(),
            },
            std::fs::TryLockError::Error(e) => db_err(sqlx::Error::Io(e)),
        })?;
        let options = base
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true)
            .pragma("secure_delete", "ON");
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options.clone())
            .await
            .map_err(db_err)?;
        MIGRATOR.run(&writer).await.map_err(|e| db_err(e.into()))?;
        ensure_key_check(&writer, &keyring).await?;
        // Move the key check (and everything else) from the WAL into the
        // database file, where a later start reads it without writing.
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&writer)
            .await
            .map_err(db_err)?;
        let reader = SqlitePoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options.read_only(true))
            .await
            .map_err(db_err)?;
        let (creates, queue) = mpsc::channel(4 * MAX_GROUP);
        let cache = Arc::new(LookupCache::new(true));
        tokio::spawn(group_commit(
            writer.clone(),
            keyring.clone(),
            cache.clone(),
            queue,
        ));
        Ok(Self {
            writer,
            reader,
            keyring,
            creates,
            cache,
            lock: Arc::new(lock),
        })
    }

    /// Closes both pools, checkpointing the WAL.
    pub async fn close(&self) {
        self.reader.close().await;
        self.writer.close().await;
        if let Err(e) = self.lock.unlock() {
            tracing::warn!(error = %e, "cannot release the database lock");
        }
    }

    /// Reads the row of a named lookup (workspace id, environment name,
    /// secret name); nothing happens unless the cache misses and awaits it.
    async fn read_named(&self, lookup: (&str, &str, &str)) -> Result<Option<SecretRow>, Error> {
        let (workspace_id, environment_name, name) = lookup;
        sqlx::query_as::<_, SecretRow>(&SECRET_IN_ENVIRONMENT)
            .bind(workspace_id)
            .bind(environment_name)
            .bind(name)
            .fetch_optional(&self.reader)
            .await
            .map_err(db_error)
    }

    /// Runs a write that changes what lookups return on a task of its own,
    /// so that it reaches its end (the commit, then the cache's forget) even
    /// when the caller stops waiting: SQLite carries out a statement it was
    /// given whatever the caller does, and a forget skipped after a commit
    /// would leave the cache stale for good.
    async fn to_completion<T, F, Fut>(&self, write: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(SqliteStore) -> Fut,
        Fut: Future<Output = Result<T, Error>> + Send + 'static,
    {
        tokio::spawn(write(self.clone())).await.unwrap_or_else(|e| {
            tracing::error!(error = %e, "a write task failed");
            Err(Error::internal(
                "The secret store failed to complete the request",
            ))
        })
    }

    async fn update_environment_now(
        &self,
        workspace_id: &str,
        current_name: &str,
        update: &EnvironmentUpdate,
    ) -> Result<Environment, Error> {
        let mut tx = self.begin().await?;
        let mut env: Environment = sqlx::query_as::<_, EnvironmentRow>(&format!(
            "{SELECT_ENVIRONMENT} WHERE workspace_id = ? AND name = ?"
        ))
        .bind(workspace_id)
        .bind(current_name)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error)?
        .map(Environment::from)
        .ok_or_else(|| environment_not_found(current_name))?;
        if let Some(name) = &update.name {
            env.name.clone_from(name);
        }
        if let Some(suffix) = &update.webhook_suffix {
            env.webhook_suffix.clone_from(suffix);
        }
        let result =
            sqlx::query("UPDATE environments SET name = ?, webhook_suffix = ? WHERE id = ?")
                .bind(&env.name)
                .bind(&env.webhook_suffix)
                .bind(&env.id)
                .execute(&mut *tx)
                .await;
        match result {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => {
                return Err(Error::already_exists(format!(
                    "Environment '{}' already exists",
                    env.name
                )))
            }
            Err(e) => return Err(db_error(e)),
        }
        tx.commit().await.map_err(db_error)?;
        // Lookups by the old name (and of the default) must miss now.
        self.cache.clear();
        Ok(env)
    }

    async fn delete_environment_now(
        &self,
        workspace_id: &str,
        name: &str,
        with_secrets: bool,
    ) -> Result<(), Error> {
        let mut tx = self.begin().await?;
        let env: Environment = sqlx::query_as::<_, EnvironmentRow>(&format!(
            "{SELECT_ENVIRONMENT} WHERE workspace_id = ? AND name = ?"
        ))
        .bind(workspace_id)
        .bind(name)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error)?
        .map(Environment::from)
        .ok_or_else(|| environment_not_found(name))?;
        let (named,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM secrets WHERE environment_id = ? AND name IS NOT NULL",
        )
        .bind(&env.id)
        .fetch_one(&mut *tx)
        .await
        .map_err(db_error)?;
        crate::check_environment_deletable(&env, named, with_secrets)?;
        for sql in [
            "DELETE FROM secrets WHERE environment_id = ?",
            "DELETE FROM environments WHERE id = ?",
        ] {
            sqlx::query(sql)
                .bind(&env.id)
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
        }
        tx.commit().await.map_err(db_error)?;
        self.cache.clear();
        Ok(())
    }

    async fn update_secret_now(
        &self,
        workspace_id: &str,
        secret_id: &str,
        changes: &[(String, Option<String>)],
    ) -> Result<Secret, Error> {
        let mut tx = self.begin().await?;
        let current = fetch_secret(&mut *tx, workspace_id, "s.id = ?", secret_id, None)
            .await?
            .ok_or_else(|| secret_not_found(secret_id))?
            .open(&self.keyring)?;
        let contents = crate::apply_changes(current.contents, changes)?;
        let version = current.summary.version + 1;
        let sealed = seal_row(&self.keyring, workspace_id, secret_id, version, &contents);
        sqlx::query("UPDATE secrets SET version = ?, key_id = ?, wrapped_key = ?, ciphertext = ? WHERE id = ?")
            .bind(version)
            .bind(&sealed.key_id)
            .bind(&sealed.wrapped_key)
            .bind(&sealed.ciphertext)
            .bind(secret_id)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        self.cache.forget(secret_id);
        let mut summary = current.summary;
        summary.version = version;
        summary.keys = contents.keys().cloned().collect();
        Ok(Secret { summary, contents })
    }

    async fn delete_secret_now(&self, workspace_id: &str, secret_id: &str) -> Result<(), Error> {
        let done = sqlx::query("DELETE FROM secrets WHERE workspace_id = ? AND id = ?")
            .bind(workspace_id)
            .bind(secret_id)
            .execute(&self.writer)
            .await
            .map_err(db_error)?;
        self.cache.forget(secret_id);
        if done.rows_affected() == 0 {
            return Err(secret_not_found(secret_id));
        }
        Ok(())
    }

    async fn mark_used_now(
        &self,
        workspace_id: &str,
        secret_ids: &[String],
        at: Micros,
    ) -> Result<(), Error> {
        if secret_ids.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin().await?;
        let mut changed = Vec::new();
        for id in secret_ids {
            let done = sqlx::query(
                "UPDATE secrets SET last_used_at = ? WHERE workspace_id = ? AND id = ? \
                 AND (last_used_at IS NULL OR last_used_at <= ?)",
            )
            .bind(at)
            .bind(workspace_id)
            .bind(id)
            .bind(at - crate::LAST_USED_RESOLUTION)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
            if done.rows_affected() > 0 {
                changed.push(id);
            }
        }
        tx.commit().await.map_err(db_error)?;
        // `last_used_at` is part of what a lookup returns.
        for id in changed {
            self.cache.forget(id);
        }
        Ok(())
    }

    async fn begin(&self) -> Result<Transaction<'static, Sqlite>, Error> {
        self.writer.begin().await.map_err(db_error)
    }
}

/// The SQLite schema's migrations.
pub(crate) static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

/// The file of a `sqlite://` URL, for messages.
pub(crate) fn describe(url: &str) -> String {
    SqliteConnectOptions::from_str(url)
        .map(|o| o.get_filename().display().to_string())
        .unwrap_or_else(|_| url.to_owned())
}

/// A one-connection pool on the store at `url` for `latchkey db copy`, which
/// needs no master key: to read (`write == false`: the file must exist and is
/// opened read-only), or to write (created 0600 and migrated if needed, with
/// the same durability settings as the server's).
pub(crate) async fn open_raw(url: &str, write: bool) -> Result<SqlitePool, OpenError> {
    let base = SqliteConnectOptions::from_str(url)
        .map_err(|e| OpenError::BadUrl(format!("{url}: {e}")))?;
    let path = base.get_filename().to_path_buf();
    let db_err = |source| OpenError::Database {
        backend: "SQLite",
        target: path.display().to_string(),
        cause: source,
    };
    let options = if write {
        if !path.exists() {
            create_private_file(&path).map_err(|e| db_err(sqlx::Error::Io(e)))?;
        }
        base.journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true)
            .pragma("secure_delete", "ON")
    } else {
        if !path.exists() {
            return Err(db_err(sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no such file",
            ))));
        }
        base.read_only(true).busy_timeout(Duration::from_secs(10))
    };
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .map_err(db_err)?;
    if write {
        MIGRATOR.run(&pool).await.map_err(|e| db_err(e.into()))?;
    }
    Ok(pool)
}

/// Creates an empty database file readable by its owner only; SQLite gives
/// the `-wal` and `-shm` files it makes the same permissions.
fn create_private_file(path: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map(drop)
}

/// Takes the exclusive lock on the database at `path` (on `PATH.lock`
/// beside it, so that SQLite's own locks on the file are left alone). The
/// lookup cache and the single writer both rest on every write to the
/// database going through one store, so a second server is refused.
fn lock_database(path: &std::path::Path) -> Result<std::fs::File, std::fs::TryLockError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(name)
        .map_err(std::fs::TryLockError::Error)?;
    file.try_lock()?;
    Ok(file)
}

/// Reads the key check from an existing file opened immutable and read-only,
/// so that a wrong key is refused without touching the data dir.
async fn check_key_without_writing(path: &PathBuf, keyring: &Keyring) -> Result<(), OpenError> {
    let options = SqliteConnectOptions::new()
        .filename(path)
        .read_only(true)
        .immutable(true);
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .map_err(|source| OpenError::Database {
            backend: "SQLite",
            target: path.display().to_string(),
            cause: source,
        })?;
    // A missing table means a new or half-created store: the normal path checks it.
    let check: Option<(Vec<u8>,)> = sqlx::query_as("SELECT value FROM meta WHERE key = ?")
        .bind(META_KEY_CHECK)
        .fetch_optional(&pool)
        .await
        .unwrap_or(None);
    let stored_id: Option<(Vec<u8>,)> = sqlx::query_as("SELECT value FROM meta WHERE key = ?")
        .bind(META_KEY_ID)
        .fetch_optional(&pool)
        .await
        .unwrap_or(None);
    pool.close().await;
    match check {
        Some((check,)) if !keyring.verify_key_check(&check) => Err(OpenError::WrongMasterKey {
            given: keyring.key_id(),
            stored: stored_id
                .map(|(id,)| String::from_utf8_lossy(&id).into_owned())
                .unwrap_or_default(),
        }),
        _ => Ok(()),
    }
}

async fn ensure_key_check(writer: &SqlitePool, keyring: &Keyring) -> Result<(), OpenError> {
    let db = |source| OpenError::Database {
        backend: "SQLite",
        target: String::from("(store)"),
        cause: source,
    };
    let mut tx = writer.begin().await.map_err(db)?;
    let existing: Option<(Vec<u8>,)> = sqlx::query_as("SELECT value FROM meta WHERE key = ?")
        .bind(META_KEY_CHECK)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?;
    match existing {
        Some((check,)) if keyring.verify_key_check(&check) => {}
        Some(_) => {
            let stored: Option<(Vec<u8>,)> = sqlx::query_as("SELECT value FROM meta WHERE key = ?")
                .bind(META_KEY_ID)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db)?;
            return Err(OpenError::WrongMasterKey {
                given: keyring.key_id(),
                stored: stored
                    .map(|(id,)| String::from_utf8_lossy(&id).into_owned())
                    .unwrap_or_default(),
            });
        }
        None => {
            sqlx::query("INSERT INTO meta (key, value) VALUES (?, ?), (?, ?)")
                .bind(META_KEY_CHECK)
                .bind(keyring.key_check())
                .bind(META_KEY_ID)
                .bind(keyring.key_id().into_bytes())
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        }
    }
    tx.commit().await.map_err(db)
}

/// Maps a database error: unreachable → Unavailable, anything else → Internal
/// with the cause in the log only.
fn db_error(e: sqlx::Error) -> Error {
    match e {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
            tracing::warn!(error = %e, "storage unavailable");
            Error::unavailable("The secret store is unavailable; try again shortly")
        }
        other => {
            tracing::error!(error = %other, "storage error");
            Error::internal("The secret store failed to complete the request")
        }
    }
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

/// A named secret by its environment's name ('' for the default).
static SECRET_IN_ENVIRONMENT: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {SECRET_COLUMNS} FROM secrets s JOIN environments e ON e.id = s.environment_id \
         WHERE s.workspace_id = ?1 AND s.name = ?3 \
         AND (CASE WHEN ?2 = '' THEN e.is_default = 1 ELSE e.name = ?2 END)"
    )
});

const SELECT_ENVIRONMENT: &str =
    "SELECT id, workspace_id, name, is_default, webhook_suffix, created_at FROM environments";

async fn fetch_secret<'e, E>(
    executor: E,
    workspace_id: &str,
    clause: &str,
    arg: &str,
    arg2: Option<&str>,
) -> Result<Option<SecretRow>, Error>
where
    E: sqlx::Executor<'e, Database = Sqlite>,
{
    let sql = format!(
        "SELECT {SECRET_COLUMNS} FROM secrets s JOIN environments e ON e.id = s.environment_id \
         WHERE s.workspace_id = ? AND {clause}"
    );
    let mut q = sqlx::query_as::<_, SecretRow>(&sql)
        .bind(workspace_id)
        .bind(arg);
    if let Some(arg2) = arg2 {
        q = q.bind(arg2);
    }
    q.fetch_optional(executor).await.map_err(db_error)
}

/// The next creation time for a named secret of `environment_id`: now, or
/// one microsecond after the newest, so that creation times stay unique.
async fn next_created_at(tx: &mut SqliteConnection, environment_id: &str) -> Result<Micros, Error> {
    let (newest,): (Option<i64>,) = sqlx::query_as(
        "SELECT MAX(created_at) FROM secrets WHERE environment_id = ? AND name IS NOT NULL",
    )
    .bind(environment_id)
    .fetch_one(&mut *tx)
    .await
    .map_err(db_error)?;
    Ok(newest.map_or(now_micros(), |n| now_micros().max(n + 1)))
}

#[async_trait]
impl Store for SqliteStore {
    async fn close(&self) {
        SqliteStore::close(self).await;
    }

    async fn ping(&self) -> Result<(), Error> {
        sqlx::query("SELECT 1")
            .execute(&self.reader)
            .await
            .map(|_| ())
            .map_err(db_error)
    }

    async fn bootstrap(&self, admin: &NewToken) -> Result<bool, Error> {
        let mut tx = self.begin().await?;
        let (count,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM workspaces")
            .fetch_one(&mut *tx)
            .await
            .map_err(db_error)?;
        if count > 0 {
            return Ok(false);
        }
        let now = now_micros();
        sqlx::query("INSERT INTO workspaces (id, name, created_at) VALUES (?, 'default', ?)")
            .bind(&admin.workspace_id)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        sqlx::query(
            "INSERT INTO environments (id, workspace_id, name, is_default, created_at) VALUES (?, ?, 'main', 1, ?)",
        )
        .bind(ids::new_id(ids::ENVIRONMENT))
        .bind(&admin.workspace_id)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        insert_token(&mut tx, admin, now).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(true)
    }

    async fn workspace(&self, id: &str) -> Result<Workspace, Error> {
        sqlx::query_as::<_, WorkspaceRow>(
            "SELECT id, name, created_at FROM workspaces WHERE id = ?",
        )
        .bind(id)
        .fetch_optional(&self.reader)
        .await
        .map_err(db_error)?
        .map(Workspace::from)
        .ok_or_else(|| Error::not_found(format!("Workspace '{id}' not found")))
    }

    async fn list_environments(&self, workspace_id: &str) -> Result<Vec<Environment>, Error> {
        let rows = sqlx::query_as::<_, EnvironmentRow>(&format!(
            "{SELECT_ENVIRONMENT} WHERE workspace_id = ? ORDER BY is_default DESC, created_at, name"
        ))
        .bind(workspace_id)
        .fetch_all(&self.reader)
        .await
        .map_err(db_error)?;
        Ok(rows.into_iter().map(Environment::from).collect())
    }

    async fn environment(&self, workspace_id: &str, name: &str) -> Result<Environment, Error> {
        let row = if name.is_empty() {
            sqlx::query_as::<_, EnvironmentRow>(&format!(
                "{SELECT_ENVIRONMENT} WHERE workspace_id = ? AND is_default = 1"
            ))
            .bind(workspace_id)
            .fetch_optional(&self.reader)
            .await
        } else {
            sqlx::query_as::<_, EnvironmentRow>(&format!(
                "{SELECT_ENVIRONMENT} WHERE workspace_id = ? AND name = ?"
            ))
            .bind(workspace_id)
            .bind(name)
            .fetch_optional(&self.reader)
            .await
        };
        row.map_err(db_error)?
            .map(Environment::from)
            .ok_or_else(|| environment_not_found(name))
    }

    async fn create_environment(
        &self,
        workspace_id: &str,
        name: &str,
    ) -> Result<Environment, Error> {
        let env = Environment {
            id: ids::new_id(ids::ENVIRONMENT),
            workspace_id: workspace_id.to_owned(),
            name: name.to_owned(),
            is_default: false,
            webhook_suffix: String::new(),
            created_at: now_micros(),
        };
        let result = sqlx::query(
            "INSERT INTO environments (id, workspace_id, name, is_default, created_at) VALUES (?, ?, ?, 0, ?)",
        )
        .bind(&env.id)
        .bind(workspace_id)
        .bind(name)
        .bind(env.created_at)
        .execute(&self.writer)
        .await;
        match result {
            Ok(_) => Ok(env),
            Err(e) if is_unique_violation(&e) => Err(Error::already_exists(format!(
                "Environment '{name}' already exists"
            ))),
            Err(e) => Err(db_error(e)),
        }
    }

    async fn update_environment(
        &self,
        workspace_id: &str,
        current_name: &str,
        update: &EnvironmentUpdate,
    ) -> Result<Environment, Error> {
        let (workspace_id, current_name, update) = (
            workspace_id.to_owned(),
            current_name.to_owned(),
            update.clone(),
        );
        self.to_completion(|this| async move {
            this.update_environment_now(&workspace_id, &current_name, &update)
                .await
        })
        .await
    }

    async fn delete_environment(
        &self,
        workspace_id: &str,
        name: &str,
        with_secrets: bool,
    ) -> Result<(), Error> {
        let (workspace_id, name, with_secrets) =
            (workspace_id.to_owned(), name.to_owned(), with_secrets);
        self.to_completion(|this| async move {
            this.delete_environment_now(&workspace_id, &name, with_secrets)
                .await
        })
        .await
    }

    async fn create_token(&self, token: &NewToken) -> Result<Token, Error> {
        let mut tx = self.begin().await?;
        let created = insert_token(&mut tx, token, now_micros()).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(created)
    }

    async fn token_for_auth(&self, token_id: &str) -> Result<Option<(Token, Vec<u8>)>, Error> {
        let row = sqlx::query_as::<_, TokenRow>(
            "SELECT id, workspace_id, name, role, environments, created_at, revoked_at, secret_hash \
             FROM tokens WHERE id = ? AND revoked_at IS NULL",
        )
        .bind(token_id)
        .fetch_optional(&self.reader)
        .await
        .map_err(db_error)?;
        match row {
            None => Ok(None),
            Some(mut row) => {
                let hash = std::mem::take(&mut row.secret_hash);
                Ok(Some((Token::try_from(row)?, hash)))
            }
        }
    }

    async fn list_tokens(&self, workspace_id: &str) -> Result<Vec<Token>, Error> {
        sqlx::query_as::<_, TokenRow>(
            "SELECT id, workspace_id, name, role, environments, created_at, revoked_at, secret_hash \
             FROM tokens WHERE workspace_id = ? ORDER BY created_at, id",
        )
        .bind(workspace_id)
        .fetch_all(&self.reader)
        .await
        .map_err(db_error)?
        .into_iter()
        .map(Token::try_from)
        .collect()
    }

    async fn revoke_token(&self, workspace_id: &str, token_id: &str) -> Result<(), Error> {
        // The single writer orders this transaction with every other write.
        let mut tx = self.begin().await?;
        let (name, role, environments): (String, String, Option<String>) = sqlx::query_as(
            "SELECT name, role, environments FROM tokens WHERE workspace_id = ? AND id = ? AND revoked_at IS NULL",
        )
        .bind(workspace_id)
        .bind(token_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error)?
        .ok_or_else(|| token_not_found(token_id))?;
        let (other_admins,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM tokens WHERE workspace_id = ? AND role = ? AND environments IS NULL \
             AND revoked_at IS NULL AND id <> ?",
        )
        .bind(workspace_id)
        .bind(Role::Admin.as_str())
        .bind(token_id)
        .fetch_one(&mut *tx)
        .await
        .map_err(db_error)?;
        crate::check_token_revocable(&name, &role, environments.is_some(), other_admins)?;
        sqlx::query("UPDATE tokens SET revoked_at = ? WHERE id = ?")
            .bind(now_micros())
            .bind(token_id)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        tx.commit().await.map_err(db_error)
    }

    async fn create_secret(&self, new: &NewSecret) -> Result<(Secret, bool), Error> {
        let (done, answer) = oneshot::channel();
        let job = CreateJob {
            new: new.clone(),
            done,
        };
        let closed = || Error::unavailable("The secret store is closing; try again shortly");
        self.creates.send(job).await.map_err(|_| closed())?;
        let (row, created) = answer.await.map_err(|_| closed())??;
        Ok((row.open(&self.keyring)?, created))
    }

    async fn secret_by_name(
        &self,
        workspace_id: &str,
        environment_id: &str,
        name: &str,
    ) -> Result<Secret, Error> {
        fetch_secret(
            &self.reader,
            workspace_id,
            "s.environment_id = ? AND s.name = ?",
            environment_id,
            Some(name),
        )
        .await?
        .ok_or_else(|| Error::not_found(format!("Secret '{name}' not found")))?
        .open(&self.keyring)
    }

    async fn secret_in_environment(
        &self,
        workspace_id: &str,
        environment_name: &str,
        name: &str,
    ) -> Result<Option<Secret>, Error> {
        let lookup = (workspace_id, environment_name, name);
        let read = self.read_named(lookup);
        // Every write goes through this store: the cache is always current.
        self.cache.secret(&self.keyring, lookup, true, read).await
    }

    async fn secret_summary_in_environment(
        &self,
        workspace_id: &str,
        environment_name: &str,
        name: &str,
    ) -> Result<Option<SecretSummary>, Error> {
        let lookup = (workspace_id, environment_name, name);
        let read = self.read_named(lookup);
        self.cache.summary(&self.keyring, lookup, true, read).await
    }

    async fn secret_by_id(&self, workspace_id: &str, secret_id: &str) -> Result<Secret, Error> {
        fetch_secret(&self.reader, workspace_id, "s.id = ?", secret_id, None)
            .await?
            .ok_or_else(|| secret_not_found(secret_id))?
            .open(&self.keyring)
    }

    async fn update_secret(
        &self,
        workspace_id: &str,
        secret_id: &str,
        changes: &[(String, Option<String>)],
    ) -> Result<Secret, Error> {
        let (workspace_id, secret_id, changes) = (
            workspace_id.to_owned(),
            secret_id.to_owned(),
            changes.to_vec(),
        );
        self.to_completion(|this| async move {
            this.update_secret_now(&workspace_id, &secret_id, &changes)
                .await
        })
        .await
    }

    async fn delete_secret(&self, workspace_id: &str, secret_id: &str) -> Result<(), Error> {
        let (workspace_id, secret_id) = (workspace_id.to_owned(), secret_id.to_owned());
        self.to_completion(
            |this| async move { this.delete_secret_now(&workspace_id, &secret_id).await },
        )
        .await
    }

    async fn list_secrets(
        &self,
        workspace_id: &str,
        environment_id: &str,
        created_before: Option<Micros>,
        limit: u32,
    ) -> Result<Vec<SecretSummary>, Error> {
        let sql = format!(
            "SELECT {SECRET_COLUMNS} FROM secrets s JOIN environments e ON e.id = s.environment_id \
             WHERE s.workspace_id = ? AND s.environment_id = ? AND s.name IS NOT NULL \
             AND s.created_at < ? ORDER BY s.created_at DESC LIMIT ?"
        );
        let rows = sqlx::query_as::<_, SecretRow>(&sql)
            .bind(workspace_id)
            .bind(environment_id)
            .bind(created_before.unwrap_or(i64::MAX))
            .bind(i64::from(limit))
            .fetch_all(&self.reader)
            .await
            .map_err(db_error)?;
        rows.into_iter()
            .map(|row| row.open(&self.keyring).map(|s| s.summary))
            .collect()
    }

    async fn mark_used(
        &self,
        workspace_id: &str,
        secret_ids: &[String],
        at: Micros,
    ) -> Result<(), Error> {
        let (workspace_id, secret_ids, at) = (workspace_id.to_owned(), secret_ids.to_vec(), at);
        self.to_completion(|this| async move {
            this.mark_used_now(&workspace_id, &secret_ids, at).await
        })
        .await
    }

    async fn sweep_expired(&self, now: Micros) -> Result<u64, Error> {
        sqlx::query("DELETE FROM secrets WHERE expires_at IS NOT NULL AND expires_at < ?")
            .bind(now)
            .execute(&self.writer)
            .await
            .map(|done| done.rows_affected())
            .map_err(db_error)
    }
}

async fn insert_token(
    tx: &mut Transaction<'static, Sqlite>,
    token: &NewToken,
    now: Micros,
) -> Result<Token, Error> {
    let result = sqlx::query(
        "INSERT INTO tokens (id, workspace_id, name, secret_hash, role, environments, created_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&token.id)
    .bind(&token.workspace_id)
    .bind(&token.name)
    .bind(token.secret_hash.as_slice())
    .bind(token.role.as_str())
    .bind(environments_column(&token.environments))
    .bind(now)
    .execute(&mut **tx)
    .await;
    match result {
        Ok(_) => Ok(Token {
            id: token.id.clone(),
            workspace_id: token.workspace_id.clone(),
            name: token.name.clone(),
            role: token.role,
            environments: token.environments.clone(),
            created_at: now,
            revoked_at: None,
        }),
        Err(e) if is_unique_violation(&e) => Err(Error::already_exists(format!(
            "Token '{}' already exists",
            token.id
        ))),
        Err(e) => Err(db_error(e)),
    }
}

/// Creates a secret inside the caller's transaction (a savepoint of a group
/// commit). Returns the row, not yet decrypted, and whether it is new.
async fn create_in(
    tx: &mut SqliteConnection,
    keyring: &Keyring,
    new: &NewSecret,
) -> Result<(SecretRow, bool), Error> {
    if let SecretKind::Named(name) = &new.kind {
        let existing = fetch_secret(
            &mut *tx,
            &new.workspace_id,
            "s.environment_id = ? AND s.name = ?",
            &new.environment_id,
            Some(name),
        )
        .await?;
        if let Some(existing) = existing {
            return match new.on_conflict {
                OnConflict::Fail => Err(Error::already_exists(format!(
                    "Secret '{name}' already exists"
                ))),
                OnConflict::ReturnExisting => Ok((existing, false)),
                OnConflict::Overwrite => {
                    let version = existing.version + 1;
                    let sealed = seal_row(
                        keyring,
                        &new.workspace_id,
                        &existing.id,
                        version,
                        &new.contents,
                    );
                    sqlx::query(
                        "UPDATE secrets SET version = ?, key_id = ?, wrapped_key = ?, ciphertext = ? WHERE id = ?",
                    )
                    .bind(version)
                    .bind(&sealed.key_id)
                    .bind(&sealed.wrapped_key)
                    .bind(&sealed.ciphertext)
                    .bind(&existing.id)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_error)?;
                    let row =
                        fetch_secret(&mut *tx, &new.workspace_id, "s.id = ?", &existing.id, None)
                            .await?
                            .ok_or_else(|| secret_not_found(&existing.id))?;
                    Ok((row, false))
                }
            };
        }
    }
    let id = ids::new_id(ids::SECRET);
    let cols = SecretInsert::of(&new.kind);
    let created_at = if cols.name.is_some() {
        next_created_at(tx, &new.environment_id).await?
    } else {
        now_micros()
    };
    let sealed = seal_row(keyring, &new.workspace_id, &id, 1, &new.contents);
    sqlx::query(
        "INSERT INTO secrets (id, workspace_id, environment_id, name, app_id, expires_at, created_at, \
         created_by, last_used_at, version, key_id, wrapped_key, ciphertext) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL, 1, ?, ?, ?)",
    )
    .bind(&id)
    .bind(&new.workspace_id)
    .bind(&new.environment_id)
    .bind(cols.name)
    .bind(cols.app_id)
    .bind(cols.expires_at)
    .bind(created_at)
    .bind(&new.created_by)
    .bind(&sealed.key_id)
    .bind(&sealed.wrapped_key)
    .bind(&sealed.ciphertext)
    .execute(&mut *tx)
    .await
    .map_err(db_error)?;
    let row = fetch_secret(&mut *tx, &new.workspace_id, "s.id = ?", &id, None)
        .await?
        .ok_or_else(|| secret_not_found(&id))?;
    Ok((row, true))
}

/// Commits creates in groups: each waits in the queue while the previous
/// group's fsync runs, then the next transaction takes everything waiting
/// (each create in its own savepoint, so one refusal does not undo the
/// others) and one fsync makes the whole group durable before any of them is
/// acknowledged. Under load this turns one fsync per create into one per
/// group; alone, a create costs what it did.
async fn group_commit(
    writer: SqlitePool,
    keyring: Keyring,
    cache: Arc<LookupCache>,
    mut queue: mpsc::Receiver<CreateJob>,
) {
    while let Some(first) = queue.recv().await {
        let mut jobs = vec![first];
        while jobs.len() < MAX_GROUP {
            match queue.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        match commit_group(&writer, &keyring, &jobs).await {
            Ok(results) => {
                // Here, not in the caller, which may have stopped waiting:
                // the cache must hear of every overwrite that committed.
                for (row, created) in results.iter().flatten() {
                    if !created {
                        cache.forget(&row.id);
                    }
                }
                for (job, result) in jobs.into_iter().zip(results) {
                    let _ = job.done.send(result);
                }
            }
            Err(e) => {
                for job in jobs {
                    let _ = job.done.send(Err(e.clone()));
                }
            }
        }
    }
}

async fn commit_group(
    writer: &SqlitePool,
    keyring: &Keyring,
    jobs: &[CreateJob],
) -> Result<Vec<Result<(SecretRow, bool), Error>>, Error> {
    let mut tx = writer.begin().await.map_err(db_error)?;
    let mut results = Vec::with_capacity(jobs.len());
    for job in jobs {
        let mut savepoint = tx.begin().await.map_err(db_error)?;
        let result = create_in(&mut savepoint, keyring, &job.new).await;
        if result.is_ok() {
            savepoint.commit().await.map_err(db_error)?;
        } else {
            savepoint.rollback().await.map_err(db_error)?;
        }
        results.push(result);
    }
    tx.commit().await.map_err(db_error)?;
    Ok(results)
}

fn seal_row(
    keyring: &Keyring,
    workspace_id: &str,
    secret_id: &str,
    version: i64,
    contents: &latchkey_core::EnvDict,
) -> crate::crypto::Sealed {
    keyring.seal(
        Binding {
            workspace_id,
            secret_id,
            version,
        },
        contents,
    )
}
