//! The PostgreSQL engine: one database shared by any number of replicas.
//!
//! A write one replica acknowledged is what the next read on any other
//! replica returns. Every read goes to the database, except the lookup of a
//! named secret, which is served from a cache of sealed rows kept exact by
//! the database's change feed ([`crate::changes`]: each lookup first waits
//! for a round trip on the listening connection that started after it
//! arrived, shared by all lookups waiting at the time). What the single
//! SQLite writer gives for free, row locks give here (the statements, with
//! their lock clauses, are shared: [`crate::sql`]):
//!
//! - a write of a secret locks its row `FOR UPDATE` in its transaction, so
//!   concurrent merges of different keys queue instead of overwriting each
//!   other;
//! - creating a named secret keeps its environment from going (a key share
//!   lock, which writers of other groups hold at once); the unique indexes
//!   of names and of creation times per environment order two creates of
//!   one name: the second waits for the first to commit, collides, and its
//!   group runs again and then sees it (AlreadyExists, or the existing
//!   secret). Creation times are the replica's strictly increasing clock,
//!   past the environment's newest, so they stay unique and paging by
//!   `created_before` is exact while other replicas write (a page holds the
//!   newest rows below its cursor, and no row's time ever changes);
//! - creates, updates and deletes of secrets are committed in groups per
//!   replica, one transaction of a fixed number of statements (and one hold
//!   of each lock, the audit chain's head included) for all that wait:
//!   every write of every replica appends to the one audit chain, whose head
//!   is locked until commit, so per-write transactions would commit one at
//!   a time across all replicas. [`crate::sql::group`] says why grouping
//!   keeps every guarantee;
//! - while the table of secrets grows fast, each replica analyzes it once
//!   its creates add a fifth to what the statistics last counted, so that a
//!   check of a name keeps to the unique index of names (`Statistics`);
//! - the sweeper takes a transaction-scoped advisory lock and skips its turn
//!   when another replica holds it; bootstrap takes one too, so two replicas
//!   starting on an empty database create one workspace.
//!
//! Migrations run under sqlx's advisory lock (`pg_advisory_lock`, keyed by the
//! database name), so replicas that start together apply them once.
//!
//! A request never waits long for a database that is gone: acquiring a
//! connection, every statement (`statement_timeout`) and every operation as
//! a whole are bounded, and such failures are [`ErrorKind::Unavailable`]
//! (gRPC UNAVAILABLE, which clients retry). The pool checks a connection
//! before handing it out (the group commits' pool only when it was idle for
//! a second; a group whose `BEGIN` finds its connection dead starts again on
//! another) and opens new ones as needed, so the store recovers by itself
//! when the database is back.
//!
//! [`ErrorKind::Unavailable`]: latchkey_core::ErrorKind::Unavailable

use std::{
    fmt,
    future::Future,
    str::FromStr,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use latchkey_core::Error;
use sqlx::{
    postgres::{PgConnectOptions, PgPoolOptions},
    PgPool, Postgres,
};

use crate::{
    audit::AuditEntry,
    cache::LookupCache,
    changes::ChangeFeed,
    crypto::Keyring,
    sql::{
        audit_write_failed,
        batch::Written,
        bounded, collided, db_error,
        group::{Commit, Events, Writes},
        queries::Sql,
        verify, Dialect, Engine, Pending,
    },
    OpenError,
};

/// How the PostgreSQL adapter uses its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PgOptions {
    /// Most connections this process opens for requests, `write_groups` of
    /// them for the group commits of writes; one more listens for changes
    /// (two while it reconnects). Every replica has its own, so replicas ×
    /// (pool size + 2) must stay below the server's `max_connections`.
    pub pool_size: u32,
    /// How many groups of writes this replica commits at once, each in a
    /// transaction of its own (at most pool size − 1). One serves best
    /// where the database shares the machine's processors; more keep writes
    /// flowing where each round trip to the database is slow (another
    /// host), while a group waits for its commit to be durable.
    pub write_groups: u32,
    /// How long a request waits for a connection (including opening one)
    /// before it fails with Unavailable.
    pub acquire_timeout: Duration,
    /// The longest one statement may run (PostgreSQL's `statement_timeout`).
    pub statement_timeout: Duration,
}

impl Default for PgOptions {
    fn default() -> Self {
        Self {
            pool_size: 10,
            write_groups: 1,
            acquire_timeout: Duration::from_secs(3),
            statement_timeout: Duration::from_secs(10),
        }
    }
}

impl PgOptions {
    /// The bound on one whole store operation: a connection, then a few
    /// statements. It also covers a connection that hangs without an error
    /// (a lost network), which no server-side timeout can end.
    fn operation_timeout(&self) -> Duration {
        self.acquire_timeout + self.statement_timeout + Duration::from_secs(1)
    }

    /// Groups of writes in flight: `write_groups`, leaving the requests one
    /// connection at least.
    fn groups_in_flight(&self) -> u32 {
        self.write_groups
            .clamp(1, self.pool_size.saturating_sub(1).max(1))
    }
}

/// The PostgreSQL adapter.
#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
    keyring: Keyring,
    options: PgOptions,
    /// Rows of named lookups, live while `feed` is connected.
    cache: Arc<LookupCache>,
    feed: ChangeFeed,
    writes: Writes,
    /// The one connection of the group commits.
    group_pool: PgPool,
    events: Events,
}

impl fmt::Debug for PgStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgStore")
            .field("pool_size", &self.pool.size())
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl PgStore {
    /// Connects to `url` (`postgres://user@host:port/db`), runs migrations, and
    /// checks that `keyring` is the store's master key.
    ///
    /// A store sealed under another key is refused before anything is written
    /// (no migration runs). Fails if the database cannot be reached within
    /// `options.acquire_timeout`.
    pub async fn open(url: &str, keyring: Keyring, options: PgOptions) -> Result<Self, OpenError> {
        // Connections of the pool's size are the group commits' own.
        let requests = PgOptions {
            pool_size: options.pool_size.saturating_sub(options.groups_in_flight()),
            ..options
        };
        let pool = connect(url, requests).await?;
        let target = describe(url);
        let db_err = |cause| OpenError::Database {
            backend: Postgres::BACKEND,
            target: target.clone(),
            cause,
        };
        let mut conn = pool.acquire().await.map_err(db_err)?;
        let stored = Sql::<Postgres>::read_key_check(&mut conn)
            .await
            .map_err(db_err)?;
        verify(&keyring, stored.as_ref())?;
        Postgres::migrator()
            .run(&mut *conn)
            .await
            .map_err(|e| db_err(e.into()))?;
        let stored = Sql::<Postgres>::ensure_key_check(&mut conn, &keyring)
            .await
            .map_err(db_err)?;
        verify(&keyring, stored.as_ref())?;
        Sql::<Postgres>::fill_key_lists(&mut conn, &keyring)
            .await
            .map_err(db_err)?;
        let audit_key = Sql::<Postgres>::ensure_audit_key(&mut conn, &keyring)
            .await
            .map_err(db_err)?;
        let keyring = keyring
            .with_audit_key(&audit_key)
            .ok_or_else(crate::sql::audit_key_damaged)?;
        drop(conn);
        let cache = Arc::new(LookupCache::new(false));
        // The feed listens on a connection of its own, outside the pool, so
        // that it never takes one a request could use. Two at most: one
        // stuck in being let go (on a hung network) must not keep the feed
        // from connecting again.
        let feed_pool = PgPoolOptions::new()
            .max_connections(2)
            .min_connections(0)
            .acquire_timeout(options.acquire_timeout)
            .connect_lazy_with(connect_options(url, options)?);
        let feed = ChangeFeed::start(
            feed_pool,
            pool.clone(),
            options.acquire_timeout,
            cache.clone(),
        );
        // The group commits run on a thread of their own, over connections
        // of their own (taken from the pool's size): each group is a chain
        // of round trips, and on the request runtime every step would wait
        // its turn behind the requests' tasks.
        let in_flight = options.groups_in_flight();
        let group_pool = group_pool_options(options, in_flight)
            .connect_lazy_with(connect_options(url, options)?);
        let statistics = Statistics::new(pool.clone());
        let commit: Commit<_, _> = {
            let (pool, keyring, cache) = (group_pool.clone(), keyring.clone(), cache.clone());
            let bound = options.operation_timeout();
            Arc::new(move |writes| {
                let (pool, keyring, cache) = (pool.clone(), keyring.clone(), cache.clone());
                let statistics = statistics.clone();
                Box::pin(async move {
                    let mut attempts = 1;
                    loop {
                        // Bounded up to its commit, as every write (see `write`).
                        let attempt = bounded(bound, async {
                            let mut tx = begin_group(&pool, in_flight)
                                .await
                                .map_err(db_error::<Postgres>)?;
                            let outcome =
                                Sql::<Postgres>::write_group(&mut tx, &keyring, &writes).await?;
                            Ok((tx, outcome))
                        })
                        .await;
                        match attempt {
                            Ok((tx, (results, changed))) => {
                                let results =
                                    Pending::new(tx, results, changed).commit(&cache).await?;
                                statistics.inserted(&results);
                                return Ok(results);
                            }
                            // It waited for the group it collided with to
                            // end, and now sees what that one did.
                            Err(e) if collided(&e) && attempts < GROUP_ATTEMPTS => attempts += 1,
                            Err(e) => return Err(e),
                        }
                    }
                })
            })
        };
        let events = Events::events({
            let (pool, keyring) = (pool.clone(), keyring.clone());
            let bound = options.operation_timeout();
            Arc::new(move |jobs: Vec<Vec<AuditEntry>>| {
                let (pool, keyring) = (pool.clone(), keyring.clone());
                Box::pin(async move {
                    let all: Vec<AuditEntry> = jobs.iter().flatten().cloned().collect();
                    let (tx, head) = bounded(bound, async {
                        let mut tx = pool.begin().await.map_err(audit_write_failed::<Postgres>)?;
                        let head = Sql::<Postgres>::append_events(&mut tx, &keyring, &all).await?;
                        Ok((tx, head))
                    })
                    .await?;
                    tx.commit().await.map_err(audit_write_failed::<Postgres>)?;
                    Ok(jobs.iter().map(|_| Ok(head.clone())).collect())
                })
            })
        });
        Ok(Self {
            pool,
            keyring,
            options,
            cache,
            feed,
            writes: Writes::writes_on_thread(commit, in_flight as usize)
                .map_err(|e| db_err(sqlx::Error::Io(e)))?,
            group_pool,
            events,
        })
    }

    /// Whether the database at `url` already holds a latchkey store (its
    /// master key check), without changing anything. The server uses it to
    /// decide whether a missing master key may be generated.
    pub async fn exists(url: &str, options: PgOptions) -> Result<bool, OpenError> {
        let pool = connect(url, options).await?;
        let found = match pool.acquire().await {
            Ok(mut conn) => Sql::<Postgres>::read_key_check(&mut conn).await,
            Err(e) => Err(e),
        };
        pool.close().await;
        found
            .map(|check| check.is_some())
            .map_err(|cause| OpenError::Database {
                backend: Postgres::BACKEND,
                target: describe(url),
                cause,
            })
    }
}

impl Engine for PgStore {
    type DB = Postgres;

    fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    fn cache(&self) -> &LookupCache {
        &self.cache
    }

    fn reader(&self) -> &PgPool {
        &self.pool
    }

    fn raw(&self) -> crate::copy::RawStore {
        crate::copy::RawStore::from_pool(
            crate::copy::Pool::Postgres(self.pool.clone()),
            "the server's PostgreSQL store",
        )
    }

    fn writer(&self) -> &PgPool {
        &self.pool
    }

    fn read<T: Send>(
        &self,
        op: impl Future<Output = Result<T, Error>> + Send,
    ) -> impl Future<Output = Result<T, Error>> + Send {
        bounded(self.options.operation_timeout(), op)
    }

    /// Readiness probes wait about a second: answer within that.
    fn probe(
        &self,
        op: impl Future<Output = Result<(), Error>> + Send,
    ) -> impl Future<Output = Result<(), Error>> + Send {
        bounded(self.options.acquire_timeout.min(Duration::from_secs(2)), op)
    }

    /// The operation is bounded up to its commit, which is not: a bound
    /// that fired while COMMIT was on its way would report as failed a
    /// write that committed. The server's `statement_timeout` bounds it.
    /// (Other replicas' writes reach the cache through the feed; so would
    /// this one's, should a forget be skipped.)
    async fn write<T, F, Fut>(&self, op: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(Self) -> Fut + Send,
        Fut: Future<Output = Result<Pending<Postgres, T>, Error>> + Send + 'static,
    {
        bounded(self.options.operation_timeout(), op(self.clone()))
            .await?
            .commit(&self.cache)
            .await
    }

    async fn lookups_current(&self) -> bool {
        self.feed.sync().await
    }

    fn writes(&self) -> &Writes {
        &self.writes
    }

    fn events(&self) -> &Events {
        &self.events
    }

    /// Stops the change feed and closes the pool, waiting for connections
    /// in use to be returned.
    async fn close(&self) {
        self.feed.close().await;
        self.group_pool.close().await;
        self.pool.close().await;
    }
}

/// The connection options for `url`, with latchkey's session settings.
pub(crate) fn connect_options(
    url: &str,
    options: PgOptions,
) -> Result<PgConnectOptions, OpenError> {
    let statement_ms = options.statement_timeout.as_millis().max(1).to_string();
    PgConnectOptions::from_str(url)
        .map(|o| {
            o.application_name("latchkey")
                .statement_cache_capacity(crate::sql::queries::STATEMENT_CACHE)
                .options([
                    ("statement_timeout", statement_ms.as_str()),
                    // Statements stay prepared, and PostgreSQL may keep one
                    // plan for every run of one (planning each run cost more
                    // than running it: a third of the database's time per
                    // request). Every statement of ours is meant to go
                    // through an index, and each names the columns of the
                    // index it needs in full; but a plan kept while a table
                    // was nearly empty could scan it whole, and go on doing
                    // so as it grows: a scan of a whole table is only
                    // chosen where there is no other way.
                    ("enable_seqscan", "off"),
                    // A replica that stalls inside a transaction must not hold
                    // its row locks (and everyone else) for long.
                    ("idle_in_transaction_session_timeout", "60000"),
                ])
        })
        .map_err(|e| OpenError::BadUrl(format!("{}: {e}", describe(url))))
}

/// A pool on `url`; fails if no connection can be made within the acquire
/// timeout.
pub(crate) async fn connect(url: &str, options: PgOptions) -> Result<PgPool, OpenError> {
    let connect = connect_options(url, options)?;
    pool_options(options, options.pool_size)
        .connect_with(connect)
        .await
        .map_err(|cause| OpenError::Database {
            backend: Postgres::BACKEND,
            target: describe(url),
            cause,
        })
}

/// Keeps PostgreSQL's statistics of `secrets` near its size while it grows
/// fast, so that a query for one name goes through the unique index of
/// names.
///
/// The table has two indexes that start with the environment: the unique
/// index of names, and that of creation times. While the statistics say the
/// table is far smaller than it is (autovacuum analyzes it about a minute
/// later at best; a store that takes thousands of secrets at once lives in
/// that minute), PostgreSQL thinks either index finds one row for
/// `environment_id = $1 AND name = $2`, at the same cost, and may take the
/// narrower one, that of creation times: every check of a name then reads
/// every secret of the environment, milliseconds per group of writes and
/// growing with the environment. So each replica counts the secrets its
/// writes created and, once they are a fifth of what the statistics last
/// counted (or [`Statistics::FIRST`]), analyzes the table in the background.
/// `ANALYZE` reads a sample of at most 30,000 rows and does not hold up
/// writes (it waits only for another analysis of the table, and gives up
/// at the statement timeout, leaving the count for the next try). The
/// queries that need the index of creation times ask for its order, which
/// only it gives.
#[derive(Clone)]
struct Statistics(Arc<StatisticsState>);

struct StatisticsState {
    pool: PgPool,
    /// The request runtime, where the analysis runs (the group commits run
    /// on a thread of their own).
    runtime: tokio::runtime::Handle,
    /// Secrets created since the last analysis.
    created: AtomicU64,
    /// How many more start the next one.
    next: AtomicU64,
    running: AtomicBool,
}

impl Statistics {
    /// The fewest created secrets that start an analysis: a table this
    /// small is read whole in well under a millisecond.
    const FIRST: u64 = 100;

    fn new(pool: PgPool) -> Self {
        Statistics(Arc::new(StatisticsState {
            pool,
            runtime: tokio::runtime::Handle::current(),
            created: AtomicU64::new(0),
            next: AtomicU64::new(Self::FIRST),
            running: AtomicBool::new(false),
        }))
    }

    /// Counts the secrets a committed group created; starts an analysis
    /// when they are enough and none runs.
    fn inserted(&self, results: &[Result<Written, Error>]) {
        let created = results
            .iter()
            .filter(|r| matches!(r, Ok(Written::Created(_, true))))
            .count() as u64;
        let state = &self.0;
        if created == 0
            || state.created.fetch_add(created, Ordering::Relaxed) + created
                < state.next.load(Ordering::Relaxed)
            || state.running.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let state = self.0.clone();
        self.0.runtime.spawn(async move {
            let counted = state.created.swap(0, Ordering::Relaxed);
            match analyze(&state.pool).await {
                Ok(rows) => {
                    let rows = u64::try_from(rows).unwrap_or(0);
                    state
                        .next
                        .store((rows / 5).max(Self::FIRST), Ordering::Relaxed);
                }
                // The store is closing: nothing to try again.
                Err(_) if state.pool.is_closed() => {}
                Err(e) => {
                    // The next group that creates a secret tries again.
                    state.created.fetch_add(counted, Ordering::Relaxed);
                    tracing::warn!(error = %e, "could not analyze the table of secrets");
                }
            }
            state.running.store(false, Ordering::Release);
        });
    }
}

/// Analyzes `secrets`; answers the rows PostgreSQL now counts.
async fn analyze(pool: &PgPool) -> Result<i64, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    sqlx::query("ANALYZE secrets").execute(&mut *conn).await?;
    sqlx::query_scalar("SELECT reltuples::BIGINT FROM pg_class WHERE oid = 'secrets'::regclass")
        .fetch_one(&mut *conn)
        .await
}

/// How many times a group of writes runs before its collisions (see
/// [`crate::sql::collided`]) are answered as such.
const GROUP_ATTEMPTS: u32 = 8;

/// A pool of at most `size` connections (one at least), each checked
/// before it is handed out.
fn pool_options(options: PgOptions, size: u32) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(size.max(1))
        .min_connections(0)
        .acquire_timeout(options.acquire_timeout)
        .idle_timeout(Duration::from_secs(300))
        .test_before_acquire(true)
}

/// How long a connection of the group commits' pool may have been idle and
/// still be handed out without a ping.
const FRESH: Duration = Duration::from_secs(1);

/// The group commits' pool: as [`pool_options`], except that a connection
/// used within [`FRESH`] is handed out without its ping. Under load that is
/// every group's, and the ping is a round trip of six (`BEGIN`, three
/// statements, `COMMIT`). One that died meanwhile (the database restarted,
/// the network cut) fails the group's `BEGIN`, before anything of the group
/// was sent, and [`begin_group`] takes another.
fn group_pool_options(options: PgOptions, size: u32) -> PgPoolOptions {
    pool_options(options, size)
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= FRESH {
                    sqlx::Connection::ping(conn).await?;
                }
                Ok(true)
            })
        })
}

/// A group's transaction. A connection whose `BEGIN` fails is let go (the
/// pool closes it when its check on release fails too) and the next one
/// tried: up to one more than the pool's `size`, so that a pool of dead
/// connections ends with a new one. Nothing of the group was sent.
async fn begin_group(
    pool: &PgPool,
    size: u32,
) -> Result<sqlx::Transaction<'static, Postgres>, sqlx::Error> {
    let mut tries = 0;
    loop {
        match pool.begin().await {
            Err(e) if tries < size && !matches!(e, sqlx::Error::PoolTimedOut) => {
                tracing::debug!(error = %e, "a group's BEGIN failed; trying another connection");
                tries += 1;
            }
            begun => return begun,
        }
    }
}

/// `host:port/db` of a URL, for messages: never the user's password.
pub(crate) fn describe(url: &str) -> String {
    match PgConnectOptions::from_str(url) {
        Ok(o) => format!(
            "{}:{}/{}",
            o.get_host(),
            o.get_port(),
            o.get_database().unwrap_or("")
        ),
        Err(_) => "(unparsable PostgreSQL URL)".to_owned(),
    }
}
