//! The PostgreSQL adapter: one database shared by any number of
//! replicas.
//!
//! A write one replica acknowledged is what the next read on any other
//! replica returns. Every read goes to the database, except the lookup of a
//! named secret, which is served from a cache of sealed rows kept exact by
//! the database's change feed ([`crate::changes`]: each lookup first waits
//! for a round trip on the listening connection that started after it
//! arrived, shared by all lookups waiting at the time). What the single
//! SQLite writer gives for free, row locks give here:
//!
//! - `update_secret` reads the row `FOR UPDATE` in its transaction, so
//!   concurrent merges of different keys queue instead of overwriting each
//!   other;
//! - creating a named secret first locks its environment's row, which orders
//!   creations per environment: a second create of one name waits for the
//!   first and then sees it (AlreadyExists, or the existing secret), and
//!   `MAX(created_at) + 1` stays unique so that paging by `created_before`
//!   is exact while other replicas write (the unique indexes back this up);
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
//! before handing it out and opens new ones as needed, so the store recovers
//! by itself when the database is back.
//!
//! [`ErrorKind::Unavailable`]: latchkey_core::ErrorKind::Unavailable

use std::{
    fmt,
    future::Future,
    str::FromStr,
    sync::{Arc, LazyLock},
    time::Duration,
};

use async_trait::async_trait;
use latchkey_core::{ids, time::now_micros, time::Micros, EnvDict, Error};
use sqlx::{
    postgres::{PgConnectOptions, PgPoolOptions},
    PgPool, Postgres, Transaction,
};

use crate::{
    cache::LookupCache,
    changes::ChangeFeed,
    crypto::{Binding, Keyring, Sealed},
    rows::{
        environment_not_found, environments_column, secret_not_found, token_not_found,
        EnvironmentRow, SecretInsert, SecretRow, TokenRow, WorkspaceRow, SECRET_COLUMNS,
    },
    Environment, EnvironmentUpdate, NewSecret, NewToken, OnConflict, OpenError, Role, Secret,
    SecretKind, SecretSummary, Store, Token, Workspace,
};

/// How the PostgreSQL adapter uses its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PgOptions {
    /// Most connections this process opens for requests; one more listens
    /// for changes (two while it reconnects). Every replica has its own, so
    /// replicas × (pool size + 2) must stay below the server's
    /// `max_connections`.
    pub pool_size: u32,
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
}

impl fmt::Debug for PgStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgStore")
            .field("pool_size", &self.pool.size())
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

const META_KEY_CHECK: &str = "key_check";
const META_KEY_ID: &str = "master_key_id";

/// Advisory lock keys (one namespace per database).
const LOCK_BOOTSTRAP: i64 = 0x6c6b_0001; // "lk" 1
const LOCK_SWEEP: i64 = 0x6c6b_0002;

impl PgStore {
    /// Connects to `url` (`postgres://user@host:port/db`), runs migrations, and
    /// checks that `keyring` is the store's master key.
    ///
    /// A store sealed under another key is refused before anything is written
    /// (no migration runs). Fails if the database cannot be reached within
    /// `options.acquire_timeout`.
    pub async fn open(url: &str, keyring: Keyring, options: PgOptions) -> Result<Self, OpenError> {
        let pool = connect(url, options).await?;
        let target = describe(url);
        let db_err = |source| OpenError::Database {
            backend: "PostgreSQL",
            target: target.clone(),
            cause: source,
        };
        if let Some(stored) = read_key_check(&pool).await.map_err(db_err)? {
            verify(&keyring, &stored)?;
        }
        migrate(&pool).await.map_err(db_err)?;
        // Two replicas starting on a new database race to store their check;
        // the first insert wins and the other key is then refused.
        sqlx::query(
            "INSERT INTO meta (key, value) VALUES ($1, $2), ($3, $4) ON CONFLICT (key) DO NOTHING",
        )
        .bind(META_KEY_CHECK)
        .bind(keyring.key_check())
        .bind(META_KEY_ID)
        .bind(keyring.key_id().into_bytes())
        .execute(&pool)
        .await
        .map_err(db_err)?;
        let stored = read_key_check(&pool)
            .await
            .map_err(db_err)?
            .ok_or_else(|| db_err(sqlx::Error::RowNotFound))?;
        verify(&keyring, &stored)?;
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
        Ok(Self {
            pool,
            keyring,
            options,
            cache,
            feed,
        })
    }

    /// Whether the database at `url` already holds a latchkey store (its
    /// master key check), without changing anything. The server uses it to
    /// decide whether a missing master key may be generated.
    pub async fn exists(url: &str, options: PgOptions) -> Result<bool, OpenError> {
        let pool = connect(url, options).await?;
        let found = read_key_check(&pool).await;
        pool.close().await;
        found
            .map(|check| check.is_some())
            .map_err(|source| OpenError::Database {
                backend: "PostgreSQL",
                target: describe(url),
                cause: source,
            })
    }

    /// Closes the pool, waiting for connections in use to be returned.
    pub async fn close(&self) {
        self.feed.close().await;
        self.pool.close().await;
    }

    /// Reads the row of a named lookup (workspace id, environment name,
    /// secret name); nothing happens unless the cache misses and awaits it.
    async fn read_named(&self, lookup: (&str, &str, &str)) -> Result<Option<SecretRow>, Error> {
        let (workspace_id, environment_name, name) = lookup;
        sqlx::query_as::<_, SecretRow>(&SECRET_IN_ENVIRONMENT)
            .bind(workspace_id)
            .bind(environment_name)
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)
    }

    async fn begin(&self) -> Result<Transaction<'static, Postgres>, Error> {
        self.pool.begin().await.map_err(db_error)
    }

    fn seal_row(
        &self,
        workspace_id: &str,
        secret_id: &str,
        version: i64,
        contents: &EnvDict,
    ) -> Sealed {
        self.keyring.seal(
            Binding {
                workspace_id,
                secret_id,
                version,
            },
            contents,
        )
    }

    /// Runs one store operation within the operation timeout.
    async fn bounded<T>(&self, op: impl Future<Output = Result<T, Error>>) -> Result<T, Error> {
        bounded(self.options.operation_timeout(), op).await
    }
}

async fn bounded<T>(
    limit: Duration,
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

/// A named secret by its environment's name ('' for the default).
static SECRET_IN_ENVIRONMENT: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {SECRET_COLUMNS} FROM secrets s JOIN environments e ON e.id = s.environment_id \
         WHERE s.workspace_id = $1 AND s.name = $3 \
         AND (CASE WHEN $2 = '' THEN e.is_default ELSE e.name = $2 END)"
    )
});

/// The connection options for `url`, with latchkey's session settings.
pub(crate) fn connect_options(
    url: &str,
    options: PgOptions,
) -> Result<PgConnectOptions, OpenError> {
    let statement_ms = options.statement_timeout.as_millis().max(1).to_string();
    PgConnectOptions::from_str(url)
        .map(|o| {
            o.application_name("latchkey").options([
                ("statement_timeout", statement_ms.as_str()),
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
    PgPoolOptions::new()
        .max_connections(options.pool_size.max(1))
        .min_connections(0)
        .acquire_timeout(options.acquire_timeout)
        .idle_timeout(Duration::from_secs(300))
        .test_before_acquire(true)
        .connect_with(connect)
        .await
        .map_err(|source| OpenError::Database {
            backend: "PostgreSQL",
            target: describe(url),
            cause: source,
        })
}

/// The PostgreSQL schema's migrations.
pub(crate) static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

/// Runs the embedded migrations (under sqlx's advisory lock).
pub(crate) async fn migrate(pool: &PgPool) -> Result<(), sqlx::Error> {
    MIGRATOR.run(pool).await.map_err(Into::into)
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

/// The stored key check, or `None` when the schema or the check is not there yet.
async fn read_key_check(pool: &PgPool) -> Result<Option<(Vec<u8>, String)>, sqlx::Error> {
    let (has_meta,): (bool,) = sqlx::query_as("SELECT to_regclass('meta') IS NOT NULL")
        .fetch_one(pool)
        .await?;
    if !has_meta {
        return Ok(None);
    }
    let rows: Vec<(String, Vec<u8>)> =
        sqlx::query_as("SELECT key, value FROM meta WHERE key IN ($1, $2)")
            .bind(META_KEY_CHECK)
            .bind(META_KEY_ID)
            .fetch_all(pool)
            .await?;
    let get = |k: &str| {
        rows.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
    };
    Ok(get(META_KEY_CHECK).map(|check| {
        let id = get(META_KEY_ID)
            .map(|id| String::from_utf8_lossy(&id).into_owned())
            .unwrap_or_default();
        (check, id)
    }))
}

fn verify(keyring: &Keyring, (check, stored_id): &(Vec<u8>, String)) -> Result<(), OpenError> {
    if keyring.verify_key_check(check) {
        Ok(())
    } else {
        Err(OpenError::WrongMasterKey {
            given: keyring.key_id(),
            stored: stored_id.clone(),
        })
    }
}

fn unavailable() -> Error {
    Error::unavailable("The secret store is unavailable; try again shortly")
}

/// Whether an error means "the database cannot serve right now" rather than
/// "this request is wrong": the connection is gone or refused, the server is
/// shutting down or starting, out of connections, or a statement was
/// cancelled by its timeout. Retrying later may succeed.
pub(crate) fn is_transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(d) => d.code().is_some_and(|code| {
            // 08: connection exception; 53: insufficient resources (too many
            // connections); 57: operator intervention (admin shutdown,
            // cannot connect now, query cancelled by statement_timeout);
            // 40001/40P01: serialization failure, deadlock; 55P03: lock
            // timeout; 25006: read-only transaction (a standby, mid-failover).
            code.starts_with("08")
                || code.starts_with("53")
                || code.starts_with("57")
                || matches!(code.as_ref(), "40001" | "40P01" | "55P03" | "25006")
        }),
        _ => false,
    }
}

/// Maps a database error: unreachable → Unavailable, anything else → Internal
/// with the cause in the log only.
#[allow(clippy::needless_pass_by_value)] // by value to read as `.map_err(db_error)`
fn db_error(e: sqlx::Error) -> Error {
    if is_transient(&e) {
        tracing::warn!(error = %e, "storage unavailable");
        unavailable()
    } else {
        tracing::error!(error = %e, "storage error");
        Error::internal("The secret store failed to complete the request")
    }
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

const SELECT_ENVIRONMENT: &str =
    "SELECT id, workspace_id, name, is_default, webhook_suffix, created_at FROM environments";

/// How a secret is looked up within a workspace.
#[derive(Clone, Copy)]
enum SecretKey<'a> {
    Id(&'a str),
    Name {
        environment_id: &'a str,
        name: &'a str,
    },
}

/// One secret row; with `lock`, the secret's row is locked until the end of
/// the transaction.
async fn fetch_secret<'e, E>(
    executor: E,
    workspace_id: &str,
    key: SecretKey<'_>,
    lock: bool,
) -> Result<Option<SecretRow>, Error>
where
    E: sqlx::Executor<'e, Database = Postgres>,
{
    let clause = match key {
        SecretKey::Id(_) => "s.id = $2",
        SecretKey::Name { .. } => "s.environment_id = $2 AND s.name = $3",
    };
    let lock = if lock { " FOR UPDATE OF s" } else { "" };
    let sql = format!(
        "SELECT {SECRET_COLUMNS} FROM secrets s JOIN environments e ON e.id = s.environment_id \
         WHERE s.workspace_id = $1 AND {clause}{lock}"
    );
    let q = sqlx::query_as::<_, SecretRow>(&sql).bind(workspace_id);
    let q = match key {
        SecretKey::Id(id) => q.bind(id),
        SecretKey::Name {
            environment_id,
            name,
        } => q.bind(environment_id).bind(name),
    };
    q.fetch_optional(executor).await.map_err(db_error)
}

#[async_trait]
impl Store for PgStore {
    async fn close(&self) {
        self.pool.close().await;
    }

    async fn ping(&self) -> Result<(), Error> {
        // Readiness probes wait about a second: answer within that.
        let limit = self.options.acquire_timeout.min(Duration::from_secs(2));
        bounded(limit, async {
            sqlx::query("SELECT 1")
                .execute(&self.pool)
                .await
                .map(|_| ())
                .map_err(db_error)
        })
        .await
    }

    async fn bootstrap(&self, admin: &NewToken) -> Result<bool, Error> {
        self.bounded(async {
            let mut tx = self.begin().await?;
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(LOCK_BOOTSTRAP)
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
            let (count,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM workspaces")
                .fetch_one(&mut *tx)
                .await
                .map_err(db_error)?;
            if count > 0 {
                return Ok(false);
            }
            let now = now_micros();
            sqlx::query("INSERT INTO workspaces (id, name, created_at) VALUES ($1, 'default', $2)")
                .bind(&admin.workspace_id)
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
            sqlx::query(
                "INSERT INTO environments (id, workspace_id, name, is_default, created_at) \
                 VALUES ($1, $2, 'main', TRUE, $3)",
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
        })
        .await
    }

    async fn workspace(&self, id: &str) -> Result<Workspace, Error> {
        self.bounded(async {
            sqlx::query_as::<_, WorkspaceRow>(
                "SELECT id, name, created_at FROM workspaces WHERE id = $1",
            )
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)?
            .map(Workspace::from)
            .ok_or_else(|| Error::not_found(format!("Workspace '{id}' not found")))
        })
        .await
    }

    async fn list_environments(&self, workspace_id: &str) -> Result<Vec<Environment>, Error> {
        self.bounded(async {
            let rows = sqlx::query_as::<_, EnvironmentRow>(&format!(
                "{SELECT_ENVIRONMENT} WHERE workspace_id = $1 ORDER BY is_default DESC, created_at, name"
            ))
            .bind(workspace_id)
            .fetch_all(&self.pool)
            .await
            .map_err(db_error)?;
            Ok(rows.into_iter().map(Environment::from).collect())
        })
        .await
    }

    async fn environment(&self, workspace_id: &str, name: &str) -> Result<Environment, Error> {
        self.bounded(async {
            let row = if name.is_empty() {
                sqlx::query_as::<_, EnvironmentRow>(&format!(
                    "{SELECT_ENVIRONMENT} WHERE workspace_id = $1 AND is_default"
                ))
                .bind(workspace_id)
                .fetch_optional(&self.pool)
                .await
            } else {
                sqlx::query_as::<_, EnvironmentRow>(&format!(
                    "{SELECT_ENVIRONMENT} WHERE workspace_id = $1 AND name = $2"
                ))
                .bind(workspace_id)
                .bind(name)
                .fetch_optional(&self.pool)
                .await
            };
            row.map_err(db_error)?
                .map(Environment::from)
                .ok_or_else(|| environment_not_found(name))
        })
        .await
    }

    async fn create_environment(
        &self,
        workspace_id: &str,
        name: &str,
    ) -> Result<Environment, Error> {
        self.bounded(async {
            let env = Environment {
                id: ids::new_id(ids::ENVIRONMENT),
                workspace_id: workspace_id.to_owned(),
                name: name.to_owned(),
                is_default: false,
                webhook_suffix: String::new(),
                created_at: now_micros(),
            };
            let result = sqlx::query(
                "INSERT INTO environments (id, workspace_id, name, is_default, created_at) \
                 VALUES ($1, $2, $3, FALSE, $4)",
            )
            .bind(&env.id)
            .bind(workspace_id)
            .bind(name)
            .bind(env.created_at)
            .execute(&self.pool)
            .await;
            match result {
                Ok(_) => Ok(env),
                Err(e) if is_unique_violation(&e) => Err(Error::already_exists(format!(
                    "Environment '{name}' already exists"
                ))),
                Err(e) => Err(db_error(e)),
            }
        })
        .await
    }

    async fn update_environment(
        &self,
        workspace_id: &str,
        current_name: &str,
        update: &EnvironmentUpdate,
    ) -> Result<Environment, Error> {
        self.bounded(async {
            let mut tx = self.begin().await?;
            let mut env: Environment = sqlx::query_as::<_, EnvironmentRow>(&format!(
                "{SELECT_ENVIRONMENT} WHERE workspace_id = $1 AND name = $2 FOR UPDATE"
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
                sqlx::query("UPDATE environments SET name = $1, webhook_suffix = $2 WHERE id = $3")
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
            // The feed announces it too; this replica forgets at once.
            self.cache.clear();
            Ok(env)
        })
        .await
    }

    async fn delete_environment(
        &self,
        workspace_id: &str,
        name: &str,
        with_secrets: bool,
    ) -> Result<(), Error> {
        self.bounded(async {
            let mut tx = self.begin().await?;
            // The lock orders this after (and before) creations in the environment.
            let env: Environment = sqlx::query_as::<_, EnvironmentRow>(&format!(
                "{SELECT_ENVIRONMENT} WHERE workspace_id = $1 AND name = $2 FOR UPDATE"
            ))
            .bind(workspace_id)
            .bind(name)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_error)?
            .map(Environment::from)
            .ok_or_else(|| environment_not_found(name))?;
            let (named,): (i64,) = sqlx::query_as(
                "SELECT COUNT(*) FROM secrets WHERE environment_id = $1 AND name IS NOT NULL",
            )
            .bind(&env.id)
            .fetch_one(&mut *tx)
            .await
            .map_err(db_error)?;
            crate::check_environment_deletable(&env, named, with_secrets)?;
            for sql in [
                "DELETE FROM secrets WHERE environment_id = $1",
                "DELETE FROM environments WHERE id = $1",
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
        })
        .await
    }

    async fn create_token(&self, token: &NewToken) -> Result<Token, Error> {
        self.bounded(async {
            let mut tx = self.begin().await?;
            let created = insert_token(&mut tx, token, now_micros()).await?;
            tx.commit().await.map_err(db_error)?;
            Ok(created)
        })
        .await
    }

    async fn token_for_auth(&self, token_id: &str) -> Result<Option<(Token, Vec<u8>)>, Error> {
        self.bounded(async {
            let row = sqlx::query_as::<_, TokenRow>(
                "SELECT id, workspace_id, name, role, environments, created_at, revoked_at, secret_hash \
                 FROM tokens WHERE id = $1 AND revoked_at IS NULL",
            )
            .bind(token_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)?;
            match row {
                None => Ok(None),
                Some(mut row) => {
                    let hash = std::mem::take(&mut row.secret_hash);
                    Ok(Some((Token::try_from(row)?, hash)))
                }
            }
        })
        .await
    }

    async fn list_tokens(&self, workspace_id: &str) -> Result<Vec<Token>, Error> {
        self.bounded(async {
            sqlx::query_as::<_, TokenRow>(
                "SELECT id, workspace_id, name, role, environments, created_at, revoked_at, secret_hash \
                 FROM tokens WHERE workspace_id = $1 ORDER BY created_at, id",
            )
            .bind(workspace_id)
            .fetch_all(&self.pool)
            .await
            .map_err(db_error)?
            .into_iter()
            .map(Token::try_from)
            .collect()
        })
        .await
    }

    async fn revoke_token(&self, workspace_id: &str, token_id: &str) -> Result<(), Error> {
        self.bounded(async {
            let mut tx = self.begin().await?;
            // The workspace's row lock (NO KEY: inserts that reference the
            // workspace are not held up) orders revocations in the workspace,
            // on every replica: the count below cannot go stale before the
            // update commits.
            sqlx::query("SELECT id FROM workspaces WHERE id = $1 FOR NO KEY UPDATE")
                .bind(workspace_id)
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
            let (name, role, environments): (String, String, Option<String>) = sqlx::query_as(
                "SELECT name, role, environments FROM tokens WHERE workspace_id = $1 AND id = $2 AND revoked_at IS NULL",
            )
            .bind(workspace_id)
            .bind(token_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_error)?
            .ok_or_else(|| token_not_found(token_id))?;
            let (other_admins,): (i64,) = sqlx::query_as(
                "SELECT COUNT(*) FROM tokens WHERE workspace_id = $1 AND role = $2 AND environments IS NULL \
                 AND revoked_at IS NULL AND id <> $3",
            )
            .bind(workspace_id)
            .bind(Role::Admin.as_str())
            .bind(token_id)
            .fetch_one(&mut *tx)
            .await
            .map_err(db_error)?;
            crate::check_token_revocable(&name, &role, environments.is_some(), other_admins)?;
            sqlx::query("UPDATE tokens SET revoked_at = $1 WHERE id = $2")
                .bind(now_micros())
                .bind(token_id)
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
            tx.commit().await.map_err(db_error)
        })
        .await
    }

    async fn create_secret(&self, new: &NewSecret) -> Result<(Secret, bool), Error> {
        self.bounded(async {
            let mut tx = self.begin().await?;
            let cols = SecretInsert::of(&new.kind);
            let created_at = match &new.kind {
                SecretKind::Named(name) => {
                    lock_environment(&mut tx, &new.workspace_id, &new.environment_id).await?;
                    let key = SecretKey::Name {
                        environment_id: &new.environment_id,
                        name,
                    };
                    let existing = fetch_secret(&mut *tx, &new.workspace_id, key, true).await?;
                    if let Some(existing) = existing {
                        return self.on_conflict(tx, new, name, existing).await;
                    }
                    next_created_at(&mut tx, &new.environment_id).await?
                }
                SecretKind::Anonymous { .. } => now_micros(),
            };
            let id = ids::new_id(ids::SECRET);
            let sealed = self.seal_row(&new.workspace_id, &id, 1, &new.contents);
            let inserted = sqlx::query(
                "INSERT INTO secrets (id, workspace_id, environment_id, name, app_id, expires_at, created_at, \
                 created_by, last_used_at, version, key_id, wrapped_key, ciphertext) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, NULL, 1, $9, $10, $11)",
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
            .await;
            match inserted {
                Ok(_) => {}
                // The environment lock makes this unreachable for names; the
                // unique index stays the last word all the same.
                Err(e) if is_unique_violation(&e) => {
                    return Err(Error::already_exists(format!(
                        "Secret '{}' already exists",
                        cols.name.unwrap_or_default()
                    )))
                }
                Err(e) => return Err(db_error(e)),
            }
            let row = fetch_secret(&mut *tx, &new.workspace_id, SecretKey::Id(&id), false)
                .await?
                .ok_or_else(|| secret_not_found(&id))?;
            tx.commit().await.map_err(db_error)?;
            Ok((row.open(&self.keyring)?, true))
        })
        .await
    }

    async fn secret_by_name(
        &self,
        workspace_id: &str,
        environment_id: &str,
        name: &str,
    ) -> Result<Secret, Error> {
        self.bounded(async {
            let key = SecretKey::Name {
                environment_id,
                name,
            };
            fetch_secret(&self.pool, workspace_id, key, false)
                .await?
                .ok_or_else(|| Error::not_found(format!("Secret '{name}' not found")))?
                .open(&self.keyring)
        })
        .await
    }

    async fn secret_in_environment(
        &self,
        workspace_id: &str,
        environment_name: &str,
        name: &str,
    ) -> Result<Option<Secret>, Error> {
        let lookup = (workspace_id, environment_name, name);
        self.bounded(async {
            let current = self.feed.sync().await;
            let read = self.read_named(lookup);
            self.cache
                .secret(&self.keyring, lookup, current, read)
                .await
        })
        .await
    }

    async fn secret_summary_in_environment(
        &self,
        workspace_id: &str,
        environment_name: &str,
        name: &str,
    ) -> Result<Option<SecretSummary>, Error> {
        let lookup = (workspace_id, environment_name, name);
        self.bounded(async {
            let current = self.feed.sync().await;
            let read = self.read_named(lookup);
            self.cache
                .summary(&self.keyring, lookup, current, read)
                .await
        })
        .await
    }

    async fn secret_by_id(&self, workspace_id: &str, secret_id: &str) -> Result<Secret, Error> {
        self.bounded(async {
            fetch_secret(&self.pool, workspace_id, SecretKey::Id(secret_id), false)
                .await?
                .ok_or_else(|| secret_not_found(secret_id))?
                .open(&self.keyring)
        })
        .await
    }

    async fn update_secret(
        &self,
        workspace_id: &str,
        secret_id: &str,
        changes: &[(String, Option<String>)],
    ) -> Result<Secret, Error> {
        self.bounded(async {
            let mut tx = self.begin().await?;
            // FOR UPDATE: a concurrent update of this secret, on any replica,
            // waits here until this one commits, then merges into its result.
            let current = fetch_secret(&mut *tx, workspace_id, SecretKey::Id(secret_id), true)
                .await?
                .ok_or_else(|| secret_not_found(secret_id))?
                .open(&self.keyring)?;
            let contents = crate::apply_changes(current.contents, changes)?;
            let version = current.summary.version + 1;
            let sealed = self.seal_row(workspace_id, secret_id, version, &contents);
            sqlx::query(
                "UPDATE secrets SET version = $1, key_id = $2, wrapped_key = $3, ciphertext = $4 WHERE id = $5",
            )
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
        })
        .await
    }

    async fn delete_secret(&self, workspace_id: &str, secret_id: &str) -> Result<(), Error> {
        self.bounded(async {
            let done = sqlx::query("DELETE FROM secrets WHERE workspace_id = $1 AND id = $2")
                .bind(workspace_id)
                .bind(secret_id)
                .execute(&self.pool)
                .await
                .map_err(db_error)?;
            self.cache.forget(secret_id);
            if done.rows_affected() == 0 {
                return Err(secret_not_found(secret_id));
            }
            Ok(())
        })
        .await
    }

    async fn list_secrets(
        &self,
        workspace_id: &str,
        environment_id: &str,
        created_before: Option<Micros>,
        limit: u32,
    ) -> Result<Vec<SecretSummary>, Error> {
        self.bounded(async {
            let sql = format!(
                "SELECT {SECRET_COLUMNS} FROM secrets s JOIN environments e ON e.id = s.environment_id \
                 WHERE s.workspace_id = $1 AND s.environment_id = $2 AND s.name IS NOT NULL \
                 AND s.created_at < $3 ORDER BY s.created_at DESC LIMIT $4"
            );
            let rows = sqlx::query_as::<_, SecretRow>(&sql)
                .bind(workspace_id)
                .bind(environment_id)
                .bind(created_before.unwrap_or(i64::MAX))
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await
                .map_err(db_error)?;
            rows.into_iter()
                .map(|row| row.open(&self.keyring).map(|s| s.summary))
                .collect()
        })
        .await
    }

    async fn mark_used(
        &self,
        workspace_id: &str,
        secret_ids: &[String],
        at: Micros,
    ) -> Result<(), Error> {
        if secret_ids.is_empty() {
            return Ok(());
        }
        // Rows are locked in one order (sorted ids) by every caller, so two
        // concurrent calls cannot deadlock.
        let mut ids = secret_ids.to_vec();
        ids.sort();
        ids.dedup();
        self.bounded(async {
            let mut tx = self.begin().await?;
            let mut changed = Vec::new();
            for id in &ids {
                let done = sqlx::query(
                    "UPDATE secrets SET last_used_at = $1 WHERE workspace_id = $2 AND id = $3 \
                     AND (last_used_at IS NULL OR last_used_at <= $4)",
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
        })
        .await
    }

    async fn sweep_expired(&self, now: Micros) -> Result<u64, Error> {
        self.bounded(async {
            let mut tx = self.begin().await?;
            let (ours,): (bool,) = sqlx::query_as("SELECT pg_try_advisory_xact_lock($1)")
                .bind(LOCK_SWEEP)
                .fetch_one(&mut *tx)
                .await
                .map_err(db_error)?;
            if !ours {
                tracing::debug!("another replica is sweeping; skipping this turn");
                return Ok(0);
            }
            let removed =
                sqlx::query("DELETE FROM secrets WHERE expires_at IS NOT NULL AND expires_at < $1")
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_error)?
                    .rows_affected();
            tx.commit().await.map_err(db_error)?;
            Ok(removed)
        })
        .await
    }
}

impl PgStore {
    /// A named secret's name is taken: fail, return it, or overwrite it.
    async fn on_conflict(
        &self,
        mut tx: Transaction<'static, Postgres>,
        new: &NewSecret,
        name: &str,
        existing: SecretRow,
    ) -> Result<(Secret, bool), Error> {
        match new.on_conflict {
            OnConflict::Fail => Err(Error::already_exists(format!(
                "Secret '{name}' already exists"
            ))),
            OnConflict::ReturnExisting => Ok((existing.open(&self.keyring)?, false)),
            OnConflict::Overwrite => {
                let version = existing.version + 1;
                let sealed = self.seal_row(&new.workspace_id, &existing.id, version, &new.contents);
                sqlx::query(
                    "UPDATE secrets SET version = $1, key_id = $2, wrapped_key = $3, ciphertext = $4 WHERE id = $5",
                )
                .bind(version)
                .bind(&sealed.key_id)
                .bind(&sealed.wrapped_key)
                .bind(&sealed.ciphertext)
                .bind(&existing.id)
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
                let row = fetch_secret(
                    &mut *tx,
                    &new.workspace_id,
                    SecretKey::Id(&existing.id),
                    false,
                )
                .await?
                .ok_or_else(|| secret_not_found(&existing.id))?;
                tx.commit().await.map_err(db_error)?;
                self.cache.forget(&existing.id);
                Ok((row.open(&self.keyring)?, false))
            }
        }
    }
}

/// Locks an environment's row until the end of the transaction: creations of
/// named secrets in one environment then happen one after another, on every
/// replica. NotFound if the workspace has no such environment.
async fn lock_environment(
    tx: &mut Transaction<'static, Postgres>,
    workspace_id: &str,
    environment_id: &str,
) -> Result<(), Error> {
    sqlx::query("SELECT id FROM environments WHERE id = $1 AND workspace_id = $2 FOR NO KEY UPDATE")
        .bind(environment_id)
        .bind(workspace_id)
        .fetch_optional(&mut **tx)
        .await
        .map_err(db_error)?
        .map(drop)
        .ok_or_else(|| Error::not_found(format!("Environment '{environment_id}' not found")))
}

/// The next creation time for a named secret of `environment_id`: now, or
/// one microsecond after the newest, so that creation times stay unique even
/// when replicas' clocks disagree. The caller holds the environment's lock.
async fn next_created_at(
    tx: &mut Transaction<'static, Postgres>,
    environment_id: &str,
) -> Result<Micros, Error> {
    let (newest,): (Option<i64>,) = sqlx::query_as(
        "SELECT MAX(created_at) FROM secrets WHERE environment_id = $1 AND name IS NOT NULL",
    )
    .bind(environment_id)
    .fetch_one(&mut **tx)
    .await
    .map_err(db_error)?;
    Ok(newest.map_or(now_micros(), |n| now_micros().max(n + 1)))
}

async fn insert_token(
    tx: &mut Transaction<'static, Postgres>,
    token: &NewToken,
    now: Micros,
) -> Result<Token, Error> {
    let result = sqlx::query(
        "INSERT INTO tokens (id, workspace_id, name, secret_hash, role, environments, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
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
