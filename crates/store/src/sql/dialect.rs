//! What really differs between the SQL backends' statements: lock clauses,
//! advisory locks, how to ask whether a table exists, which errors are
//! transient, and the migrations. Everything else is written once, with
//! `$N` placeholders, which sqlx accepts on SQLite too.

use sqlx::{Postgres, Sqlite};

/// A database latchkey stores into. Implemented by [`Sqlite`] and
/// [`Postgres`]; crate-private.
pub(crate) trait Dialect: sqlx::Database + sqlx::database::HasStatementCache {
    /// `SQLite` or `PostgreSQL`, for messages.
    const BACKEND: &'static str;

    /// Appended to a `SELECT` from one table: the rows read stay locked
    /// until the transaction ends. Empty where one writer already orders
    /// every write (SQLite).
    const FOR_UPDATE: &'static str;

    /// Appended to a `SELECT` from one table: locks the rows read against
    /// changes and deletion, but lets rows that reference them be inserted
    /// (PostgreSQL's `FOR NO KEY UPDATE`).
    const FOR_NO_KEY_UPDATE: &'static str;

    /// Appended to a `SELECT` from one table: keeps the rows read from
    /// being deleted (or their key changed), and nothing else; any number
    /// of transactions hold it at once (PostgreSQL's `FOR KEY SHARE`, what
    /// a foreign key check takes).
    const FOR_KEY_SHARE: &'static str;

    /// Whether a statement may change another table in its `WITH` clause
    /// (PostgreSQL's data-modifying common table expressions): two writes
    /// then take one round trip instead of two.
    const WRITES_IN_WITH: bool;

    /// Takes the transaction-scoped advisory lock `$1`, waiting for it
    /// (`None` where the one writer already serialises every transaction).
    const ADVISORY_LOCK: Option<&'static str>;

    /// Tries to take the transaction-scoped advisory lock `$1`; answers
    /// whether it did.
    const TRY_ADVISORY_LOCK: Option<&'static str>;

    /// Begins a read-only transaction that sees one snapshot throughout
    /// (`None` where every transaction already does: SQLite's WAL).
    const SNAPSHOT: Option<&'static str>;

    /// Lifts the statement time limit for the rest of the transaction
    /// (`None` where there is none: SQLite).
    const NO_STATEMENT_TIMEOUT: Option<&'static str>;

    /// Moves what the log of committed writes holds into the database file
    /// (`None` where there is no such step: PostgreSQL). SQLite's start
    /// reads the key check from the file alone, without writing: a new
    /// key check must be in the file, not only in the WAL.
    const CHECKPOINT: Option<&'static str>;

    /// Brings the planner's statistics of every table up to date, after
    /// many rows came at once (`None` where the planner keeps none that a
    /// bulk load leaves behind: SQLite, which reads the indexes' shapes).
    /// Until autovacuum gets to it, PostgreSQL plans for tables as small as
    /// they were when last analyzed (see `postgres::Statistics`).
    const ANALYZE: Option<&'static str>;

    /// Answers whether the table named `$1` exists.
    const TABLE_EXISTS: &'static str;

    /// The schema's migrations.
    fn migrator() -> &'static sqlx::migrate::Migrator;

    /// How many rows a statement changed.
    fn rows_affected(result: &Self::QueryResult) -> u64;

    /// Whether an error means "the database cannot serve right now" rather
    /// than "this request is wrong": retrying later may succeed.
    fn is_transient(e: &sqlx::Error) -> bool;

    /// Whether an error means that the transaction collided with another
    /// that ran at the same time (a unique key one of them took first, a
    /// deadlock): the same work, done again, may succeed.
    fn is_collision(e: &sqlx::Error) -> bool;
}

/// Errors that say the pool or the connection is gone, on any backend.
fn is_connection_lost(e: &sqlx::Error) -> bool {
    matches!(
        e,
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_)
    )
}

impl Dialect for Sqlite {
    const BACKEND: &'static str = "SQLite";
    const FOR_UPDATE: &'static str = "";
    const FOR_NO_KEY_UPDATE: &'static str = "";
    const FOR_KEY_SHARE: &'static str = "";
    const WRITES_IN_WITH: bool = false;
    const ADVISORY_LOCK: Option<&'static str> = None;
    const TRY_ADVISORY_LOCK: Option<&'static str> = None;
    const SNAPSHOT: Option<&'static str> = None;
    const CHECKPOINT: Option<&'static str> = Some("PRAGMA wal_checkpoint(TRUNCATE)");
    const NO_STATEMENT_TIMEOUT: Option<&'static str> = None;
    const ANALYZE: Option<&'static str> = None;
    const TABLE_EXISTS: &'static str =
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = $1)";

    fn rows_affected(result: &sqlx::sqlite::SqliteQueryResult) -> u64 {
        result.rows_affected()
    }

    fn migrator() -> &'static sqlx::migrate::Migrator {
        static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");
        &MIGRATOR
    }

    /// A busy database is waited for (`busy_timeout`) rather than reported,
    /// so only a lost pool or file counts.
    fn is_transient(e: &sqlx::Error) -> bool {
        is_connection_lost(e)
    }

    /// One writer at a time: nothing runs beside a transaction.
    fn is_collision(_: &sqlx::Error) -> bool {
        false
    }
}

impl Dialect for Postgres {
    const BACKEND: &'static str = "PostgreSQL";
    const FOR_UPDATE: &'static str = " FOR UPDATE";
    const FOR_NO_KEY_UPDATE: &'static str = " FOR NO KEY UPDATE";
    const FOR_KEY_SHARE: &'static str = " FOR KEY SHARE";
    const WRITES_IN_WITH: bool = true;
    const ADVISORY_LOCK: Option<&'static str> = Some("SELECT pg_advisory_xact_lock($1)");
    const TRY_ADVISORY_LOCK: Option<&'static str> = Some("SELECT pg_try_advisory_xact_lock($1)");
    const CHECKPOINT: Option<&'static str> = None;
    const SNAPSHOT: Option<&'static str> =
        Some("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY");
    const NO_STATEMENT_TIMEOUT: Option<&'static str> = Some("SET LOCAL statement_timeout = 0");
    const ANALYZE: Option<&'static str> = Some("ANALYZE");
    const TABLE_EXISTS: &'static str = "SELECT to_regclass($1) IS NOT NULL";

    fn rows_affected(result: &sqlx::postgres::PgQueryResult) -> u64 {
        result.rows_affected()
    }

    fn migrator() -> &'static sqlx::migrate::Migrator {
        // Run under sqlx's advisory lock, so replicas that start together
        // apply them once.
        static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");
        &MIGRATOR
    }

    /// The connection is gone or refused, the server is shutting down or
    /// starting, out of connections, or a statement was cancelled by its
    /// timeout.
    fn is_transient(e: &sqlx::Error) -> bool {
        match e {
            sqlx::Error::Tls(_) | sqlx::Error::Protocol(_) | sqlx::Error::WorkerCrashed => true,
            sqlx::Error::Database(d) => d.code().is_some_and(|code| {
                // 08: connection exception; 53: insufficient resources (too
                // many connections); 57: operator intervention (admin
                // shutdown, cannot connect now, query cancelled by
                // statement_timeout); 40001/40P01: serialization failure,
                // deadlock; 55P03: lock timeout; 25006: read-only
                // transaction (a standby, mid-failover).
                code.starts_with("08")
                    || code.starts_with("53")
                    || code.starts_with("57")
                    || matches!(code.as_ref(), "40001" | "40P01" | "55P03" | "25006")
            }),
            e => is_connection_lost(e),
        }
    }

    /// 23505: a unique key another transaction took first (it committed
    /// while this one waited for it); 40001/40P01: serialization failure,
    /// deadlock.
    fn is_collision(e: &sqlx::Error) -> bool {
        super::is_unique_violation(e)
            || matches!(e, sqlx::Error::Database(d)
                if d.code().is_some_and(|code| matches!(code.as_ref(), "40001" | "40P01")))
    }
}
