//! Copying a whole store from one backend to another (`latchkey db copy`).
//!
//! Rows move verbatim: sealed secrets stay sealed (their associated data names
//! the workspace, the secret and the version, never the backend), so no master
//! key is needed and no plaintext exists at any point of a copy.
//!
//! A copy reads the source in one read-only snapshot and writes the destination
//! in one transaction. Before that transaction commits, the destination's rows
//! are read back and compared with what the snapshot held, table by table (row
//! count and a digest of every row); on any failure it rolls back and the
//! destination is left as empty as it was. [`CopyReport`] carries the
//! verification of the committed result.
//!
//! Both backends share one schema ([`TABLES`] lists it, in the order foreign
//! keys need); the tests check that the list matches both migrations, so a
//! table or column added later cannot be silently left behind.

use std::{fmt, marker::PhantomData};

use sha2::{Digest as _, Sha256};
use sqlx::{
    pool::PoolConnection, ColumnIndex, Decode, Encode, Executor, IntoArguments, PgPool, Row,
    SqlitePool, Type,
};
use tokio::sync::mpsc;

use crate::{postgres, sql::Dialect, sqlite, Backend, OpenError, PgOptions};

/// The type of a column, as both schemas declare it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `TEXT`.
    Text,
    /// `INTEGER` / `BIGINT` (times, versions).
    Int,
    /// `INTEGER` 0/1 in SQLite, `BOOLEAN` in PostgreSQL.
    Bool,
    /// `BLOB` / `BYTEA`.
    Bytes,
}

/// One table of the schema.
#[derive(Debug, Clone, Copy)]
pub struct Table {
    /// Its name.
    pub name: &'static str,
    /// Every column, in schema order.
    pub columns: &'static [(&'static str, Kind)],
}

use Kind::{Bool, Bytes, Int, Text};

/// Every table of a latchkey store, parents before children.
pub const TABLES: &[Table] = &[
    Table {
        name: "meta",
        columns: &[("key", Text), ("value", Bytes)],
    },
    Table {
        name: "workspaces",
        columns: &[("id", Text), ("name", Text), ("created_at", Int)],
    },
    Table {
        name: "environments",
        columns: &[
            ("id", Text),
            ("workspace_id", Text),
            ("name", Text),
            ("is_default", Bool),
            ("webhook_suffix", Text),
            ("created_at", Int),
        ],
    },
    Table {
        name: "tokens",
        columns: &[
            ("id", Text),
            ("workspace_id", Text),
            ("name", Text),
            ("secret_hash", Bytes),
            ("role", Text),
            ("environments", Text),
            ("created_at", Int),
            ("revoked_at", Int),
            ("expires_at", Int),
            ("last_used_at", Int),
            ("previous_secret_hash", Bytes),
            ("previous_secret_until", Int),
        ],
    },
    Table {
        name: "secrets",
        columns: &[
            ("id", Text),
            ("workspace_id", Text),
            ("environment_id", Text),
            ("name", Text),
            ("app_id", Text),
            ("expires_at", Int),
            ("created_at", Int),
            ("created_by", Text),
            ("last_used_at", Int),
            ("version", Int),
        ],
    },
    Table {
        name: "secret_versions",
        columns: &[
            ("secret_id", Text),
            ("version", Int),
            ("created_at", Int),
            ("created_by", Text),
            ("action", Text),
            ("source_version", Int),
            ("keys", Text),
            ("changes", Text),
            ("key_id", Text),
            ("wrapped_key", Bytes),
            ("ciphertext", Bytes),
        ],
    },
    Table {
        name: "audit_events",
        columns: &[
            ("seq", Int),
            ("at", Int),
            ("workspace_id", Text),
            ("actor_id", Text),
            ("actor_name", Text),
            ("actor_role", Text),
            ("client", Text),
            ("interface", Text),
            ("action", Text),
            ("environment", Text),
            ("secret_name", Text),
            ("secret_id", Text),
            ("version", Int),
            ("outcome", Text),
            ("detail", Text),
            ("mac", Bytes),
        ],
    },
    Table {
        name: "audit_head",
        columns: &[("id", Int), ("seq", Int), ("mac", Bytes)],
    },
];

/// Rows per multi-row INSERT: 500 × 16 columns stays far below both
/// backends' limits on bound parameters.
const BATCH_ROWS: usize = 500;

/// Why a copy failed. The destination's transaction is rolled back in every case.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CopyError {
    /// A store could not be opened.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// The URL names no backend latchkey has (the scheme it has is given).
    #[error("unsupported database URL scheme {0:?} (expected sqlite://PATH or postgres://USER@HOST:PORT/DB)")]
    Unsupported(String),
    /// The source is not a latchkey store this version can read as is.
    #[error("the source {target} {problem}")]
    Source {
        /// Which store.
        target: String,
        /// What is wrong with it.
        problem: String,
    },
    /// The destination already holds data.
    #[error(
        "the destination {target} is not empty (table {table} holds {rows} row(s)); \
         copy only into a new, empty store"
    )]
    NotEmpty {
        /// Which store.
        target: String,
        /// The first non-empty table.
        table: &'static str,
        /// Its row count.
        rows: u64,
    },
    /// The destination is a latchkey store at another schema version; it
    /// was left as it was.
    #[error(
        "the destination {target} is a latchkey store at schema version(s) {applied:?}, \
         and this latchkey writes {expected:?}; it was left as it was: copy only into a new, \
         empty store"
    )]
    OtherSchema {
        /// Which store.
        target: String,
        /// Its schema versions.
        applied: Vec<i64>,
        /// This latchkey's.
        expected: Vec<i64>,
    },
    /// The destination holds tables of something other than latchkey.
    #[error(
        "the destination {target} holds a table {table:?} that is not latchkey's; \
         copy only into a new, empty database"
    )]
    Foreign {
        /// Which store.
        target: String,
        /// A table that is not latchkey's.
        table: String,
    },
    /// The rows are committed to a SQLite file, but its write-ahead log
    /// could not be folded into it: the file needs its `-wal` file beside
    /// it, until the store is next opened.
    #[error(
        "the rows are committed to {target}, but its write-ahead log could not be folded \
         into it ({cause}); keep {target}-wal beside it: the next open of the store folds it in"
    )]
    Unfolded {
        /// Which store.
        target: String,
        /// Why the checkpoint failed.
        cause: sqlx::Error,
    },
    /// Reading or writing failed.
    #[error("{during} {target} failed: {cause}")]
    Database {
        /// `reading` or `writing`.
        during: &'static str,
        /// Which store.
        target: String,
        /// What failed.
        cause: sqlx::Error,
    },
    /// What the destination holds differs from what the source held.
    #[error(
        "verification failed: table {table} has {source_rows} row(s) with digest {source_digest} \
         in the source and {destination_rows} row(s) with digest {destination_digest} in the destination"
    )]
    Mismatch {
        /// The first table that differs.
        table: &'static str,
        /// Rows in the source snapshot.
        source_rows: u64,
        /// Digest of the source rows.
        source_digest: String,
        /// Rows in the destination.
        destination_rows: u64,
        /// Digest of the destination rows.
        destination_digest: String,
    },
}

/// A table's row count and the digest of its rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSummary {
    /// The table.
    pub table: &'static str,
    /// How many rows it holds.
    pub rows: u64,
    /// SHA-256 over the sorted SHA-256s of its rows (so independent of the
    /// order a backend returns them in), hex.
    pub digest: String,
}

/// The verified result of a copy: the source snapshot's summary, equal to the
/// committed destination's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyReport {
    /// One entry per table of [`TABLES`].
    pub tables: Vec<TableSummary>,
}

impl CopyReport {
    /// Rows copied in all.
    pub fn total_rows(&self) -> u64 {
        self.tables.iter().map(|t| t.rows).sum()
    }
}

/// A value of one column, as both backends decode and encode it.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Cell {
    Text(Option<String>),
    Int(Option<i64>),
    Bool(bool),
    Bytes(Option<Vec<u8>>),
}

impl fmt::Debug for Cell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Sealed bytes and token hashes are not for logs.
        f.write_str("Cell")
    }
}

impl Cell {
    /// An unambiguous encoding for the digest.
    pub(crate) fn hash_into(&self, h: &mut Sha256) {
        fn bytes(h: &mut Sha256, tag: u8, b: &[u8]) {
            h.update([tag]);
            h.update((b.len() as u64).to_le_bytes());
            h.update(b);
        }
        match self {
            Cell::Text(None) | Cell::Int(None) | Cell::Bytes(None) => h.update([0]),
            Cell::Text(Some(s)) => bytes(h, 1, s.as_bytes()),
            Cell::Int(Some(i)) => {
                h.update([2]);
                h.update(i.to_le_bytes());
            }
            Cell::Bool(b) => h.update([3, u8::from(*b)]),
            Cell::Bytes(Some(b)) => bytes(h, 4, b),
        }
    }
}

/// The SHA-256 of one row, as the table digests hash it.
pub(crate) fn row_hash(cells: &[Cell]) -> [u8; 32] {
    let mut h = Sha256::new();
    for cell in cells {
        cell.hash_into(&mut h);
    }
    h.finalize().into()
}

/// A table's digest from its rows' hashes (in any order), hex.
pub(crate) fn table_digest(mut hashes: Vec<[u8; 32]>) -> String {
    hashes.sort_unstable();
    let mut h = Sha256::new();
    for row in &hashes {
        h.update(row);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Rows of one table, on their way from source to destination.
pub(crate) enum Message {
    /// A backup's snapshot was summarised (before its rows are sent): the
    /// summary and the id of the master key the store was made with.
    Begin {
        summary: Vec<TableSummary>,
        master_key_id: String,
    },
    Rows {
        table: &'static Table,
        rows: Vec<Vec<Cell>>,
    },
    /// The source snapshot was read completely; this is its summary.
    End(Vec<TableSummary>),
}

#[derive(Clone)]
pub(crate) enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// One end of a copy: a store opened for reading or writing its rows as they
/// are stored, without its master key.
#[derive(Clone)]
pub struct RawStore {
    pool: Pool,
    target: String,
    /// Opened to be written: [`RawStore::close`] then leaves a SQLite
    /// file that holds everything by itself.
    destination: bool,
}

impl fmt::Debug for RawStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawStore")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

/// PostgreSQL settings for a copy: a whole table is streamed by one statement.
fn copy_pg_options() -> PgOptions {
    PgOptions {
        pool_size: 2,
        write_groups: 1,
        acquire_timeout: std::time::Duration::from_secs(10),
        statement_timeout: std::time::Duration::from_secs(3600),
    }
}

fn unsupported(url: &str) -> CopyError {
    // Only the scheme: the rest may hold a password.
    CopyError::Unsupported(url.split(':').next().unwrap_or_default().to_owned())
}

impl RawStore {
    /// A store read through a pool of a running server's (for backups).
    pub(crate) fn from_pool(pool: Pool, target: &str) -> Self {
        Self {
            pool,
            target: target.to_owned(),
            destination: false,
        }
    }

    /// Sends a backup of the store to `out`: one consistent snapshot,
    /// summarised first ([`Message::Begin`]), then its rows, then
    /// [`Message::End`]. Unlike a copy's, the snapshot is read while the
    /// server serves; no statement time limit applies to it.
    pub(crate) async fn export_backup(&self, out: &mpsc::Sender<Message>) -> Result<(), CopyError> {
        match &self.pool {
            Pool::Sqlite(p) => Rows::export_backup(p, out).await,
            Pool::Postgres(p) => Rows::export_backup(p, out).await,
        }
        .map_err(|e| self.db_err("reading", e))
    }

    /// Writes the rows arriving on `rows` in one transaction (see
    /// [`copy`]), then checks what is committed against the summary that
    /// ended them.
    pub(crate) async fn import(
        &self,
        rows: mpsc::Receiver<Message>,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<CopyReport, CopyError> {
        let imported = match &self.pool {
            Pool::Sqlite(p) => Rows::import(p, rows, progress).await,
            Pool::Postgres(p) => Rows::import(p, rows, progress).await,
        };
        match imported {
            Err(ImportError::Database(e)) => return Err(self.db_err("writing", e)),
            Err(ImportError::Mismatch(e)) => return Err(e),
            Ok(()) => {}
        }
        Ok(CopyReport {
            tables: self.summary().await?,
        })
    }

    /// Opens an existing store to read, changing nothing in it.
    pub async fn open_source(url: &str) -> Result<Self, CopyError> {
        let (pool, target) = match Backend::of(url) {
            Some(Backend::Sqlite) => {
                let target = sqlite::describe(url);
                if !std::path::Path::new(&target).exists() {
                    return Err(CopyError::Source {
                        target,
                        problem: "does not exist".to_owned(),
                    });
                }
                (Pool::Sqlite(sqlite::open_raw(url, false).await?), target)
            }
            Some(Backend::Postgres) => {
                let pool = postgres::connect(url, copy_pg_options()).await?;
                (Pool::Postgres(pool), postgres::describe(url))
            }
            None => return Err(unsupported(url)),
        };
        let store = Self {
            pool,
            target,
            destination: false,
        };
        store.check_source_schema().await?;
        Ok(store)
    }

    /// Opens (creating and migrating if needed) a store to write; refuses one
    /// that holds any row, and, before migrating anything, a latchkey store
    /// at another schema version ([`CopyError::OtherSchema`]).
    pub async fn open_destination(url: &str) -> Result<Self, CopyError> {
        let store = match Backend::of(url) {
            Some(Backend::Sqlite) => {
                let target = sqlite::describe(url);
                if std::path::Path::new(&target).exists() {
                    let pool = sqlite::open_raw(url, false).await?;
                    let checked = check_destination(&pool, &target, SQLITE_TABLES).await;
                    pool.close().await;
                    checked?;
                }
                let pool = sqlite::open_raw(url, true).await?;
                Self {
                    pool: Pool::Sqlite(pool),
                    target,
                    destination: true,
                }
            }
            Some(Backend::Postgres) => {
                let target = postgres::describe(url);
                let pool = postgres::connect(url, copy_pg_options()).await?;
                check_destination(&pool, &target, PG_TABLES).await?;
                <sqlx::Postgres as crate::sql::Dialect>::migrator()
                    .run(&pool)
                    .await
                    .map_err(sqlx::Error::from)
                    .map_err(|source| OpenError::Database {
                        backend: "PostgreSQL",
                        target: target.clone(),
                        cause: source,
                    })?;
                Self {
                    pool: Pool::Postgres(pool),
                    target,
                    destination: true,
                }
            }
            None => return Err(unsupported(url)),
        };
        if let Err(e) = store.check_empty().await {
            // Nothing was written: the connections only close.
            store.close_pool().await;
            return Err(e);
        }
        Ok(store)
    }

    /// The store, for messages (a path, or `host:port/db`; never a password).
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Row counts per table, for a progress bar's length.
    pub async fn counts(&self) -> Result<Vec<(&'static str, u64)>, CopyError> {
        let mut out = Vec::new();
        for table in TABLES {
            let sql = format!("SELECT COUNT(*) FROM {}", table.name);
            let (n,): (i64,) = match &self.pool {
                Pool::Sqlite(p) => sqlx::query_as(&sql).fetch_one(p).await,
                Pool::Postgres(p) => sqlx::query_as(&sql).fetch_one(p).await,
            }
            .map_err(|e| self.db_err("reading", e))?;
            out.push((table.name, u64::try_from(n).unwrap_or_default()));
        }
        Ok(out)
    }

    /// Every table's row count and digest, from one consistent snapshot.
    pub async fn summary(&self) -> Result<Vec<TableSummary>, CopyError> {
        match &self.pool {
            Pool::Sqlite(p) => Rows::export(p, None).await,
            Pool::Postgres(p) => Rows::export(p, None).await,
        }
        .map_err(|e| self.db_err("reading", e))
    }

    /// Closes the connections. A SQLite destination's write-ahead log is
    /// first folded into its database file, so that the file alone holds
    /// what was written; when that fails, what was committed stays in the
    /// `-wal` file beside it ([`CopyError::Unfolded`]).
    pub async fn close(&self) -> Result<(), CopyError> {
        match &self.pool {
            Pool::Sqlite(p) if self.destination => {
                sqlite::checkpoint_and_close(p)
                    .await
                    .map_err(|cause| CopyError::Unfolded {
                        target: self.target.clone(),
                        cause,
                    })
            }
            _ => {
                self.close_pool().await;
                Ok(())
            }
        }
    }

    async fn close_pool(&self) {
        match &self.pool {
            Pool::Sqlite(p) => p.close().await,
            Pool::Postgres(p) => p.close().await,
        }
    }

    fn db_err(&self, during: &'static str, source: sqlx::Error) -> CopyError {
        CopyError::Database {
            during,
            target: self.target.clone(),
            cause: source,
        }
    }

    async fn check_empty(&self) -> Result<(), CopyError> {
        for (table, rows) in self.counts().await? {
            if rows > 0 {
                return Err(CopyError::NotEmpty {
                    target: self.target.clone(),
                    table,
                    rows,
                });
            }
        }
        Ok(())
    }

    /// The source must be a store at exactly this version's schema: an older
    /// one is migrated by starting `latchkey serve` on it once, a newer one
    /// needs a newer latchkey.
    async fn check_source_schema(&self) -> Result<(), CopyError> {
        let (applied, expected): (Result<Vec<(i64,)>, _>, Vec<i64>) = match &self.pool {
            Pool::Sqlite(p) => (
                sqlx::query_as(APPLIED_MIGRATIONS).fetch_all(p).await,
                schema_versions::<sqlx::Sqlite>(),
            ),
            Pool::Postgres(p) => (
                sqlx::query_as(APPLIED_MIGRATIONS).fetch_all(p).await,
                schema_versions::<sqlx::Postgres>(),
            ),
        };
        let problem = |problem: String| CopyError::Source {
            target: self.target.clone(),
            problem,
        };
        let applied: Vec<i64> = applied
            .map_err(|_| problem("is not a latchkey store (it has no migration history)".into()))?
            .into_iter()
            .map(|(v,)| v)
            .collect();
        if applied != expected {
            return Err(problem(format!(
                "has schema version(s) {applied:?} but this latchkey copies {expected:?}; \
                 start the matching `latchkey serve` on it once to migrate it"
            )));
        }
        Ok(())
    }
}

/// The tables of a database, to tell a latchkey store from anything else
/// before creating tables in it.
const SQLITE_TABLES: &str =
    "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'";
const PG_TABLES: &str = "SELECT table_name::text FROM information_schema.tables \
     WHERE table_schema = current_schema()";

/// Refuses, before anything is created or migrated in it, a destination
/// holding tables that are not a latchkey store's ([`CopyError::Foreign`]),
/// or that is a latchkey store at another schema version
/// ([`CopyError::OtherSchema`]): one that holds rows would be upgraded and
/// only then refused, and the latchkey that wrote it could no longer open
/// it. `tables_sql` lists the database's tables.
async fn check_destination<DB>(
    pool: &sqlx::Pool<DB>,
    target: &str,
    tables_sql: &'static str,
) -> Result<(), CopyError>
where
    DB: crate::sql::Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'r> (String,): sqlx::FromRow<'r, DB::Row>,
    for<'r> (i64,): sqlx::FromRow<'r, DB::Row>,
{
    let reading = |cause| CopyError::Database {
        during: "reading",
        target: target.to_owned(),
        cause,
    };
    let tables: Vec<(String,)> = sqlx::query_as(tables_sql)
        .fetch_all(pool)
        .await
        .map_err(reading)?;
    let ours = |name: &str| name == "_sqlx_migrations" || TABLES.iter().any(|t| t.name == name);
    if let Some((table,)) = tables.iter().find(|(name,)| !ours(name)) {
        return Err(CopyError::Foreign {
            target: target.to_owned(),
            table: table.clone(),
        });
    }
    if !tables.iter().any(|(name,)| name == "_sqlx_migrations") {
        return Ok(());
    }
    let applied: Vec<i64> = sqlx::query_as::<_, (i64,)>(APPLIED_MIGRATIONS)
        .fetch_all(pool)
        .await
        .map_err(reading)?
        .into_iter()
        .map(|(v,)| v)
        .collect();
    let expected = schema_versions::<DB>();
    if applied.is_empty() || applied == expected {
        return Ok(());
    }
    Err(CopyError::OtherSchema {
        target: target.to_owned(),
        applied,
        expected,
    })
}

/// The schema versions of this latchkey's stores on `DB`.
fn schema_versions<DB: crate::sql::Dialect>() -> Vec<i64> {
    DB::migrator().iter().map(|m| m.version).collect()
}

const APPLIED_MIGRATIONS: &str =
    "SELECT version FROM _sqlx_migrations WHERE success ORDER BY version";

/// Copies every row of `from` into `to` (which [`RawStore::open_destination`]
/// found empty), calling `progress` with the number of rows written so far.
///
/// Stop the servers on both stores first: rows a server writes to the source
/// after the copy's snapshot are not copied.
pub async fn copy(
    from: &RawStore,
    to: &RawStore,
    progress: &(dyn Fn(u64) + Send + Sync),
) -> Result<CopyReport, CopyError> {
    let (sender, receiver) = mpsc::channel(4);
    let export = async {
        let result = match &from.pool {
            Pool::Sqlite(p) => Rows::export(p, Some(&sender)).await,
            Pool::Postgres(p) => Rows::export(p, Some(&sender)).await,
        };
        drop(sender);
        result
    };
    let import = async {
        match &to.pool {
            Pool::Sqlite(p) => Rows::import(p, receiver, progress).await,
            Pool::Postgres(p) => Rows::import(p, receiver, progress).await,
        }
    };
    let (exported, imported) = tokio::join!(export, import);
    // A failed import drops the receiver, which makes the export fail too:
    // report the import's cause first.
    let source = match (exported, imported) {
        (_, Err(ImportError::Database(e))) => return Err(to.db_err("writing", e)),
        (_, Err(ImportError::Mismatch(e))) => return Err(e),
        (Err(e), _) => return Err(from.db_err("reading", e)),
        (Ok(source), Ok(())) => source,
    };
    // What is committed, read afresh.
    let committed = to.summary().await?;
    compare(&source, &committed)?;
    Ok(CopyReport { tables: committed })
}

enum ImportError {
    Database(sqlx::Error),
    Mismatch(CopyError),
}

impl CopyError {
    /// Whether the rows are committed all the same ([`CopyError::Unfolded`]):
    /// what was written must then be kept, not removed.
    pub fn committed(&self) -> bool {
        matches!(self, Self::Unfolded { .. })
    }
}

impl From<sqlx::Error> for ImportError {
    fn from(e: sqlx::Error) -> Self {
        ImportError::Database(e)
    }
}

fn compare(source: &[TableSummary], destination: &[TableSummary]) -> Result<(), CopyError> {
    for (s, d) in source.iter().zip(destination) {
        if s != d {
            return Err(CopyError::Mismatch {
                table: s.table,
                source_rows: s.rows,
                source_digest: s.digest.clone(),
                destination_rows: d.rows,
                destination_digest: d.digest.clone(),
            });
        }
    }
    Ok(())
}

/// The generic row mover. A namespace, never built: its `where` clause is
/// what moving rows of every column type needs of a database (sqlx states it
/// per type), written once here rather than on each function.
struct Rows<DB>(PhantomData<DB>);

impl<DB> Rows<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'r> Option<String>: Decode<'r, DB>,
    for<'r> Option<i64>: Decode<'r, DB>,
    for<'r> Option<Vec<u8>>: Decode<'r, DB>,
    for<'r> bool: Decode<'r, DB>,
    for<'q> Option<String>: Encode<'q, DB>,
    for<'q> Option<i64>: Encode<'q, DB>,
    for<'q> Option<Vec<u8>>: Encode<'q, DB>,
    for<'q> bool: Encode<'q, DB>,
    String: Type<DB>,
    i64: Type<DB>,
    Vec<u8>: Type<DB>,
    bool: Type<DB>,
    usize: ColumnIndex<DB::Row>,
{
    /// Reads every table of `pool` in one transaction (one consistent
    /// snapshot), sending the rows to `out` when given, and returns their summary. A
    /// send to `out` fails only when the importer gave up.
    async fn export(
        pool: &sqlx::Pool<DB>,
        out: Option<&mpsc::Sender<Message>>,
    ) -> Result<Vec<TableSummary>, sqlx::Error> {
        let mut tx = pool.begin().await?;
        if let Some(sql) = DB::SNAPSHOT {
            sqlx::query(sql).execute(&mut *tx).await?;
        }
        let mut summary = Vec::new();
        for table in TABLES {
            summary.push(Self::read_table(&mut tx, table, out).await?);
        }
        tx.commit().await?;
        if let Some(out) = out {
            out.send(Message::End(summary.clone()))
                .await
                .map_err(|_| sqlx::Error::PoolClosed)?;
        }
        Ok(summary)
    }

    async fn export_backup(
        pool: &sqlx::Pool<DB>,
        out: &mpsc::Sender<Message>,
    ) -> Result<(), sqlx::Error> {
        let gone = |_| sqlx::Error::PoolClosed;
        let mut tx = pool.begin().await?;
        if let Some(sql) = DB::SNAPSHOT {
            sqlx::query(sql).execute(&mut *tx).await?;
        }
        if let Some(sql) = DB::NO_STATEMENT_TIMEOUT {
            sqlx::query(sql).execute(&mut *tx).await?;
        }
        let mut summary = Vec::new();
        for table in TABLES {
            summary.push(Self::read_table(&mut tx, table, None).await?);
        }
        let key_id: Option<(Option<Vec<u8>>,)> =
            sqlx::query_as("SELECT value FROM meta WHERE key = 'master_key_id'")
                .fetch_optional(&mut *tx)
                .await?;
        let master_key_id = key_id
            .and_then(|(v,)| v)
            .map(|v| String::from_utf8_lossy(&v).into_owned())
            .unwrap_or_default();
        out.send(Message::Begin {
            summary: summary.clone(),
            master_key_id,
        })
        .await
        .map_err(gone)?;
        for table in TABLES {
            Self::read_table(&mut tx, table, Some(out)).await?;
        }
        tx.commit().await?;
        out.send(Message::End(summary)).await.map_err(gone)
    }

    async fn read_table(
        conn: &mut DB::Connection,
        table: &'static Table,
        out: Option<&mpsc::Sender<Message>>,
    ) -> Result<TableSummary, sqlx::Error> {
        use futures::TryStreamExt;

        let columns: Vec<&str> = table.columns.iter().map(|(c, _)| *c).collect();
        let sql = format!("SELECT {} FROM {}", columns.join(", "), table.name);
        let mut rows = sqlx::query(&sql).fetch(&mut *conn);
        let mut hashes: Vec<[u8; 32]> = Vec::new();
        let mut batch = Vec::with_capacity(BATCH_ROWS);
        while let Some(row) = rows.try_next().await? {
            let mut cells = Vec::with_capacity(table.columns.len());
            for (i, (_, kind)) in table.columns.iter().enumerate() {
                cells.push(match kind {
                    Kind::Text => Cell::Text(row.try_get(i)?),
                    Kind::Int => Cell::Int(row.try_get(i)?),
                    Kind::Bool => Cell::Bool(row.try_get(i)?),
                    Kind::Bytes => Cell::Bytes(row.try_get(i)?),
                });
            }
            hashes.push(row_hash(&cells));
            if let Some(out) = out {
                batch.push(cells);
                if batch.len() == BATCH_ROWS {
                    let rows = std::mem::replace(&mut batch, Vec::with_capacity(BATCH_ROWS));
                    out.send(Message::Rows { table, rows })
                        .await
                        .map_err(|_| sqlx::Error::PoolClosed)?;
                }
            }
        }
        if let Some(out) = out {
            if !batch.is_empty() {
                out.send(Message::Rows { table, rows: batch })
                    .await
                    .map_err(|_| sqlx::Error::PoolClosed)?;
            }
        }
        Ok(TableSummary {
            table: table.name,
            rows: hashes.len() as u64,
            digest: table_digest(hashes),
        })
    }

    /// Writes what arrives on `rows` in one transaction, which commits only after
    /// the source's end-of-snapshot summary arrived and the rows read back within
    /// the transaction match it.
    async fn import(
        pool: &sqlx::Pool<DB>,
        mut rows: mpsc::Receiver<Message>,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<(), ImportError> {
        let mut conn: PoolConnection<DB> = pool.acquire().await?;
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        let mut written = 0u64;
        let source = loop {
            match rows.recv().await {
                Some(Message::Rows { table, rows }) => {
                    written += rows.len() as u64;
                    Self::insert(&mut tx, table, rows).await?;
                    progress(written);
                }
                Some(Message::End(summary)) => break summary,
                Some(Message::Begin { .. }) => {}
                // The export failed: nothing is committed.
                None => return Err(ImportError::Database(sqlx::Error::PoolClosed)),
            }
        };
        let mut written = Vec::new();
        for table in TABLES {
            written.push(Self::read_table(&mut tx, table, None).await?);
        }
        compare(&source, &written).map_err(ImportError::Mismatch)?;
        tx.commit().await?;
        // The server that opens the copy plans for the tables as they are,
        // not as empty as they were. The copy is whole without it (and
        // autovacuum gets there later), so a failure here is only told.
        if let Some(analyze) = DB::ANALYZE {
            if let Err(e) = sqlx::query(analyze).execute(&mut *conn).await {
                tracing::warn!(error = %e, "the copy could not be analyzed; autovacuum will");
            }
        }
        Ok(())
    }

    async fn insert(
        conn: &mut DB::Connection,
        table: &Table,
        rows: Vec<Vec<Cell>>,
    ) -> Result<(), sqlx::Error> {
        use sqlx::Arguments as _;

        let columns: Vec<&str> = table.columns.iter().map(|(c, _)| *c).collect();
        let mut sql = format!(
            "INSERT INTO {} ({}) VALUES ",
            table.name,
            columns.join(", ")
        );
        let mut args = DB::Arguments::default();
        let bad = |e| sqlx::Error::Encode(e);
        for (r, row) in rows.into_iter().enumerate() {
            sql.push_str(if r == 0 { "(" } else { ", (" });
            for (c, cell) in row.into_iter().enumerate() {
                if c > 0 {
                    sql.push_str(", ");
                }
                match cell {
                    Cell::Text(v) => args.add(v),
                    Cell::Int(v) => args.add(v),
                    Cell::Bool(v) => args.add(v),
                    Cell::Bytes(v) => args.add(v),
                }
                .map_err(bad)?;
                args.format_placeholder(&mut sql)
                    .map_err(|e| sqlx::Error::Encode(e.into()))?;
            }
            sql.push(')');
        }
        sqlx::query_with(&sql, args).execute(&mut *conn).await?;
        Ok(())
    }
}
