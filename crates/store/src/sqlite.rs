//! The embedded SQLite engine: one file, WAL, durable commits.
//!
//! Writes go through a pool of exactly one connection, so SQLite never has to
//! arbitrate between writers (no `SQLITE_BUSY` upgrades, no lost updates);
//! reads use a separate pool of read-only connections that WAL lets run
//! beside the writer. Every commit is durable (`synchronous = FULL`) before
//! it is acknowledged, and deleted rows are overwritten (`secure_delete`).
//!
//! What only this engine does (the statements are shared, [`crate::sql`]):
//! writes of secrets are committed in groups, one fsync for many; a write runs on a
//! task of its own so that it reaches its end (commit, then the cache's
//! forget) even when its caller stops waiting; and one server at a time
//! holds the database, so the lookup cache is always current.

use std::{future::Future, path::Path, str::FromStr, sync::Arc, time::Duration};

use latchkey_core::Error;
use sqlx::{
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
    Connection as _, Sqlite, SqlitePool,
};

use crate::{
    audit::AuditEntry,
    cache::LookupCache,
    crypto::Keyring,
    sql::{
        audit_write_failed, db_error,
        group::{Commit, Events, Writes},
        queries::Sql,
        verify, Dialect, Engine, Pending,
    },
    OpenError,
};

/// The SQLite adapter.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
    keyring: Keyring,
    writes: Writes,
    events: Events,
    /// Rows of named lookups. Every write to this database goes through
    /// this store (one server per SQLite file), so the cache is always live.
    cache: Arc<LookupCache>,
    /// Held while the store is open: one server per SQLite database.
    lock: Arc<std::fs::File>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `url` (`sqlite://PATH`),
    /// runs migrations, and checks that `keyring` is the store's master key.
    ///
    /// A store sealed under another key is refused before anything is written.
    pub async fn open(url: &str, keyring: Keyring) -> Result<Self, OpenError> {
        let base = SqliteConnectOptions::from_str(url)
            .map_err(|e| OpenError::BadUrl(format!("{url}: {e}")))?;
        let path = base.get_filename().to_path_buf();
        let db_err = |cause| database_error(&path, cause);
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
        let options = durable(base.create_if_missing(true))
            .statement_cache_capacity(crate::sql::queries::STATEMENT_CACHE);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options.clone())
            .await
            .map_err(db_err)?;
        Sqlite::migrator()
            .run(&writer)
            .await
            .map_err(|e| db_err(e.into()))?;
        let stored = {
            let mut tx = writer.begin().await.map_err(db_err)?;
            let stored = Sql::<Sqlite>::ensure_key_check(&mut tx, &keyring)
                .await
                .map_err(db_err)?;
            verify(&keyring, stored.as_ref())?;
            Sql::<Sqlite>::fill_key_lists(&mut tx, &keyring)
                .await
                .map_err(db_err)?;
            let audit_key = Sql::<Sqlite>::ensure_audit_key(&mut tx, &keyring)
                .await
                .map_err(db_err)?;
            tx.commit().await.map_err(db_err)?;
            (stored, audit_key)
        };
        let (stored, audit_key) = stored;
        let keyring = keyring
            .with_audit_key(&audit_key)
            .ok_or_else(crate::sql::audit_key_damaged)?;
        debug_assert!(stored.is_some());
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
        let cache = Arc::new(LookupCache::new(true));
        let commit: Commit<_, _> = {
            let (writer, keyring, cache) = (writer.clone(), keyring.clone(), cache.clone());
            Arc::new(move |writes| {
                let (writer, keyring, cache) = (writer.clone(), keyring.clone(), cache.clone());
                Box::pin(async move {
                    let mut tx = writer.begin().await.map_err(db_error::<Sqlite>)?;
                    let (results, changed) =
                        Sql::<Sqlite>::write_group(&mut tx, &keyring, &writes).await?;
                    Pending::new(tx, results, changed).commit(&cache).await
                })
            })
        };
        let events = Events::events({
            let writer = writer.clone();
            let keyring = keyring.clone();
            Arc::new(move |jobs: Vec<Vec<AuditEntry>>| {
                let (writer, keyring) = (writer.clone(), keyring.clone());
                Box::pin(async move {
                    let mut tx = writer.begin().await.map_err(audit_write_failed::<Sqlite>)?;
                    let all: Vec<AuditEntry> = jobs.iter().flatten().cloned().collect();
                    let head = Sql::<Sqlite>::append_events(&mut tx, &keyring, &all).await?;
                    tx.commit().await.map_err(audit_write_failed::<Sqlite>)?;
                    Ok(jobs.iter().map(|_| Ok(head.clone())).collect())
                })
            })
        });
        Ok(Self {
            writer,
            reader,
            keyring,
            // One writer: a second group in flight would only wait for it.
            writes: Writes::writes_on_thread(commit, 1).map_err(|e| db_err(sqlx::Error::Io(e)))?,
            events,
            cache,
            lock: Arc::new(lock),
        })
    }
}

impl Engine for SqliteStore {
    type DB = Sqlite;

    fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    fn cache(&self) -> &LookupCache {
        &self.cache
    }

    fn reader(&self) -> &SqlitePool {
        &self.reader
    }

    fn raw(&self) -> crate::copy::RawStore {
        crate::copy::RawStore::from_pool(
            crate::copy::Pool::Sqlite(self.reader.clone()),
            "the server's SQLite store",
        )
    }

    fn writer(&self) -> &SqlitePool {
        &self.writer
    }

    fn read<T: Send>(
        &self,
        op: impl Future<Output = Result<T, Error>> + Send,
    ) -> impl Future<Output = Result<T, Error>> + Send {
        op
    }

    /// On a task of its own: SQLite carries out a statement it was given
    /// whatever the caller does, and a forget skipped after a commit would
    /// leave the cache stale for good.
    async fn write<T, F, Fut>(&self, op: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(Self) -> Fut + Send,
        Fut: Future<Output = Result<Pending<Sqlite, T>, Error>> + Send + 'static,
    {
        let written = op(self.clone());
        let cache = self.cache.clone();
        let write = async move { written.await?.commit(&cache).await };
        tokio::spawn(write).await.unwrap_or_else(|e| {
            tracing::error!(error = %e, "a write task failed");
            Err(Error::internal(
                "The secret store failed to complete the request",
            ))
        })
    }

    /// Every write goes through this store: the cache is always current.
    async fn lookups_current(&self) -> bool {
        true
    }

    fn writes(&self) -> &Writes {
        &self.writes
    }

    fn events(&self) -> &Events {
        &self.events
    }

    /// Closes both pools, folding the WAL into the database file, and lets
    /// go of the database.
    async fn close(&self) {
        self.reader.close().await;
        if let Err(e) = checkpoint_and_close(&self.writer).await {
            tracing::warn!(
                error = %e,
                "cannot fold the write-ahead log into the database file; \
                 the last writes stay in the -wal file beside it"
            );
        }
        if let Err(e) = self.lock.unlock() {
            tracing::warn!(error = %e, "cannot release the database lock");
        }
    }
}

/// SQLite's settings for every connection that may write.
fn durable(options: SqliteConnectOptions) -> SqliteConnectOptions {
    options
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(Duration::from_secs(10))
        .foreign_keys(true)
        .pragma("secure_delete", "ON")
}

/// Folds the write-ahead log into the database file and truncates it, then
/// closes `pool` (of a connection that may write): afterwards the database
/// file alone holds every committed write, whether or not the process
/// lives on.
///
/// SQLite does the same when the last connection to a file closes, but
/// `Pool::close` (sqlx 0.8) can return with a connection still open: one
/// handed back while `close` waits is put among the idle ones after
/// `close` has looked there. The process then ends with the last writes in
/// the `-wal` file only, and a copy of the database file alone misses them.
/// So the checkpoint is asked for here, and the connection that ran it is
/// closed by hand before the pool.
pub(crate) async fn checkpoint_and_close(pool: &SqlitePool) -> Result<(), sqlx::Error> {
    if pool.is_closed() {
        // A second close: the first did the folding.
        return Ok(());
    }
    let folded = async {
        let mut conn = pool.acquire().await?;
        // (busy, frames in the log, frames moved): busy is 1 when another
        // connection's read kept the checkpoint from finishing.
        let (busy, _, _): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(TRUNCATE)")
            .fetch_one(&mut *conn)
            .await?;
        conn.close().await?;
        if busy != 0 {
            return Err(sqlx::Error::Io(std::io::Error::other(
                "another connection was reading the write-ahead log",
            )));
        }
        Ok(())
    }
    .await;
    pool.close().await;
    folded
}

fn database_error(path: &Path, cause: sqlx::Error) -> OpenError {
    OpenError::Database {
        backend: Sqlite::BACKEND,
        target: path.display().to_string(),
        cause,
    }
}

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
    let db_err = |cause| database_error(&path, cause);
    let options = if write {
        if !path.exists() {
            create_private_file(&path).map_err(|e| db_err(sqlx::Error::Io(e)))?;
        }
        durable(base)
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
        Sqlite::migrator()
            .run(&pool)
            .await
            .map_err(|e| db_err(e.into()))?;
    }
    Ok(pool)
}

/// Creates an empty database file readable by its owner only; SQLite gives
/// the `-wal` and `-shm` files it makes the same permissions.
fn create_private_file(path: &Path) -> std::io::Result<()> {
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
fn lock_database(path: &Path) -> Result<std::fs::File, std::fs::TryLockError> {
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
async fn check_key_without_writing(path: &Path, keyring: &Keyring) -> Result<(), OpenError> {
    let options = SqliteConnectOptions::new()
        .filename(path)
        .read_only(true)
        .immutable(true);
    let mut conn = sqlx::SqliteConnection::connect_with(&options)
        .await
        .map_err(|cause| database_error(path, cause))?;
    // A file that cannot be read as a store here is new or half created:
    // the normal path checks it.
    let stored = Sql::<Sqlite>::read_key_check(&mut conn)
        .await
        .unwrap_or(None);
    conn.close().await.ok();
    verify(keyring, stored.as_ref())
}
