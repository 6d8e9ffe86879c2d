//! The SQL layer both backends share.
//!
//! The shape follows a narrow-engine design: everything that is not dialect
//! is written once above a small [`Engine`] trait, and each adapter keeps
//! only what really differs.
//!
//! - [`dialect`]: the few clauses and facts that differ per database (lock
//!   clauses, advisory locks, transient errors, migrations).
//! - [`queries`]: every statement, with `$N` placeholders, run inside the
//!   connection or transaction it is given.
//! - [`store`]: the one [`Store`](crate::Store) implementation, for any
//!   [`Engine`]: transactions, the lookup cache, error mapping.
//! - The engines, [`SqliteStore`](crate::SqliteStore) (one writer, group
//!   commit, writes carried to completion) and [`PgStore`](crate::PgStore)
//!   (row and advisory locks, the change feed, time bounds).

pub(crate) mod batch;
pub(crate) mod dialect;
pub(crate) mod group;
pub(crate) mod queries;
mod store;

use std::future::Future;

use latchkey_core::Error;
use sqlx::{Pool, Transaction};

pub(crate) use dialect::Dialect;

use crate::{cache::LookupCache, crypto::Keyring};

/// What an adapter supplies below the shared SQL: its connections, and the
/// few behaviours that differ per backend. The [`Store`](crate::Store)
/// implementation for every engine is in [`store`].
pub(crate) trait Engine: Clone + Send + Sync + 'static {
    /// The database.
    type DB: Dialect;

    /// The master key's keyring, which seals and opens rows.
    fn keyring(&self) -> &Keyring;

    /// The cache of named lookups.
    fn cache(&self) -> &LookupCache;

    /// Connections for reads outside a write.
    fn reader(&self) -> &Pool<Self::DB>;

    /// Connections for transactions that write.
    fn writer(&self) -> &Pool<Self::DB>;

    /// Runs one read operation, within the backend's time bound.
    fn read<T: Send>(
        &self,
        op: impl Future<Output = Result<T, Error>> + Send,
    ) -> impl Future<Output = Result<T, Error>> + Send;

    /// Runs the readiness probe `op`, within the bound a probe may take.
    fn probe(
        &self,
        op: impl Future<Output = Result<(), Error>> + Send,
    ) -> impl Future<Output = Result<(), Error>> + Send {
        self.read(op)
    }

    /// Runs one write operation (given a handle on the store), then commits
    /// what it left [`Pending`] and forgets in the cache what it changed.
    /// A committed write must reach the cache even when the caller stops
    /// waiting; and a write that committed must not be reported as failed,
    /// so no time bound of the engine's covers the commit.
    fn write<T, F, Fut>(&self, op: F) -> impl Future<Output = Result<T, Error>> + Send
    where
        T: Send + 'static,
        F: FnOnce(Self) -> Fut + Send,
        Fut: Future<Output = Result<Pending<Self::DB, T>, Error>> + Send + 'static;

    /// Whether the lookup cache holds every change committed before this
    /// call; false sends lookups to the database.
    fn lookups_current(&self) -> impl Future<Output = bool> + Send;

    /// The queue of writes of secrets, committed in groups ([`group`]).
    fn writes(&self) -> &group::Writes;

    /// The queue of audit events that record no change of their own,
    /// committed in groups ([`group`]).
    fn events(&self) -> &group::Events;

    /// Closes the connections (and whatever else the engine runs).
    fn close(&self) -> impl Future<Output = ()> + Send;

    /// The store's rows as stored, read through its reader connections
    /// (for backups).
    fn raw(&self) -> crate::copy::RawStore;
}

/// Whether `keyring` is the key of the store whose check is `stored` (a
/// store without a check yet accepts any key).
pub(crate) fn verify(
    keyring: &Keyring,
    stored: Option<&(Vec<u8>, String)>,
) -> Result<(), crate::OpenError> {
    match stored {
        Some((check, stored_id)) if !keyring.verify_key_check(check) => {
            Err(crate::OpenError::WrongMasterKey {
                given: keyring.key_id(),
                stored: stored_id.clone(),
            })
        }
        _ => Ok(()),
    }
}

/// What a write changed that the lookup cache may hold.
pub(crate) enum Changed {
    /// Nothing a lookup returns.
    Nothing,
    /// These secrets.
    Secrets(Vec<String>),
    /// Environments: lookups by name may now find other secrets, or none.
    Environments,
}

impl Changed {
    /// One secret.
    pub(crate) fn secret(id: &str) -> Self {
        Changed::Secrets(vec![id.to_owned()])
    }
}

/// A write done in a transaction that is not committed yet: its answer, and
/// what the lookup cache must forget once it is.
pub(crate) struct Pending<DB: Dialect, T> {
    tx: Transaction<'static, DB>,
    value: T,
    changed: Changed,
}

impl<DB: Dialect, T> Pending<DB, T> {
    pub(crate) fn new(tx: Transaction<'static, DB>, value: T, changed: Changed) -> Self {
        Pending { tx, value, changed }
    }

    /// Commits, then forgets in `cache` what changed.
    pub(crate) async fn commit(self, cache: &LookupCache) -> Result<T, Error> {
        self.tx.commit().await.map_err(db_error::<DB>)?;
        match self.changed {
            Changed::Nothing => {}
            Changed::Secrets(ids) => {
                for id in ids {
                    cache.forget(&id);
                }
            }
            Changed::Environments => cache.clear(),
        }
        Ok(self.value)
    }
}

fn unavailable() -> Error {
    metrics::counter!("latchkey_store_unavailable_total").increment(1);
    Error::unavailable("The secret store is unavailable; try again shortly")
}

/// Maps a database error: transient → Unavailable (clients retry), anything
/// else → Internal with the cause in the log only.
#[allow(clippy::needless_pass_by_value)] // by value to read as `.map_err(db_error::<DB>)`
pub(crate) fn db_error<DB: Dialect>(e: sqlx::Error) -> Error {
    if DB::is_transient(&e) {
        tracing::warn!(error = %e, backend = DB::BACKEND, "storage unavailable");
        unavailable()
    } else {
        tracing::error!(error = %e, backend = DB::BACKEND, "storage error");
        metrics::counter!("latchkey_store_errors_total").increment(1);
        Error::internal("The secret store failed to complete the request")
    }
}

/// What a group of writes answers when it collided with a group of another
/// transaction (see [`Dialect::is_collision`]); the group runs again.
const COLLIDED: &str = "Writes to the same secrets at the same time collided; try again";

/// Maps an error of a statement of a group of writes: a collision with
/// another transaction is [`collided`] (the group runs again), anything
/// else as [`db_error`].
#[allow(clippy::needless_pass_by_value)] // by value to read as `.map_err(group_error::<DB>)`
pub(crate) fn group_error<DB: Dialect>(e: sqlx::Error) -> Error {
    if DB::is_collision(&e) {
        tracing::debug!(error = %e, backend = DB::BACKEND, "a group of writes collided");
        metrics::counter!("latchkey_store_write_collisions_total").increment(1);
        Error::unavailable(COLLIDED)
    } else {
        db_error::<DB>(e)
    }
}

/// Whether `e` is what [`group_error`] answers for a collision.
pub(crate) fn collided(e: &Error) -> bool {
    e.kind() == latchkey_core::ErrorKind::Unavailable && e.message() == COLLIDED
}

/// An audit event could not be written: the operation it records fails
/// closed, as unavailable, and returns nothing.
#[allow(clippy::needless_pass_by_value)] // by value to read as `.map_err(audit_write_failed::<DB>)`
pub(crate) fn audit_write_failed<DB: Dialect>(e: sqlx::Error) -> Error {
    tracing::error!(error = %e, backend = DB::BACKEND, "cannot write to the audit log; the operation is refused");
    metrics::counter!("latchkey_audit_write_failures_total").increment(1);
    Error::unavailable(
        "The audit log cannot be written, so the request was refused and nothing was changed or returned; try again shortly",
    )
}

/// The store's audit key does not open with its master key.
pub(crate) fn audit_key_damaged() -> crate::OpenError {
    crate::OpenError::Damaged(
        "its audit key does not open with the master key, which opens its key check: \
         the meta table was altered"
            .to_owned(),
    )
}

pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

/// Runs `op` for at most `limit`; past it, Unavailable. This also covers a
/// connection that hangs without an error (a lost network), which no
/// server-side timeout can end.
pub(crate) async fn bounded<T>(
    limit: std::time::Duration,
    op: impl Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    match tokio::time::timeout(limit, op).await {
        Ok(result) => result,
        Err(_) => {
            tracing::warn!(?limit, "a storage operation timed out");
            Err(unavailable())
        }
    }
}
