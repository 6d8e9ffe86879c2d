//! Every statement the store runs, written once for every backend.
//!
//! Each function runs inside the connection or transaction it is given;
//! beginning, committing and the cache's forgets belong to the caller
//! ([`super::store`], and SQLite's group commit). Where the backends differ
//! the statement takes its clause from the [`Dialect`].

use std::marker::PhantomData;

use latchkey_core::{ids, rules, time::now_micros, time::Micros, EnvDict, Error};
use sqlx::{ColumnIndex, Decode, Encode, Executor, FromRow, IntoArguments, Type};

use super::{
    audit_write_failed,
    batch::{
        unique_micros, EnvironmentLock, EnvironmentRef, NameFound, Plan, SecretInsertRow,
        VersionInsertRow, Write, Written,
    },
    db_error, group_error, is_unique_violation, Changed, Dialect,
};
use crate::{
    audit::{
        chain_mac, AuditEntry, AuditEvent, AuditFilter, AuditHead, Checkpoint, TokenExposure,
        Verdict, Verifier, VersionExposure, CHECKPOINT, SECRET_READ,
    },
    crypto::{Binding, Keyring, Sealed},
    rows::{
        environment_not_found, environments_column, key_list_column, open_version,
        secret_not_found, token_not_found, AuditRow, EnvironmentRow, SecretRow, TokenRow,
        VersionRow, WorkspaceRow, AUDIT_COLUMNS, SECRET_COLUMNS, SECRET_FROM, VERSION_COLUMNS,
    },
    Environment, EnvironmentUpdate, KeyChanges, NewToken, Revision, Role, Secret, SecretSummary,
    SecretVersion, Token, TokenCredentials, VersionAction, Workspace,
};

/// `meta` keys of the master key check.
const META_KEY_CHECK: &str = "key_check";
const META_KEY_ID: &str = "master_key_id";
/// `meta` key of the audit key, wrapped by the master key.
const META_AUDIT_KEY: &str = "audit_key";

const SELECT_ENVIRONMENT: &str =
    "SELECT id, workspace_id, name, is_default, webhook_suffix, created_at FROM environments";

const SELECT_TOKEN: &str = "SELECT id, workspace_id, name, role, environments, created_at, revoked_at, \
     expires_at, last_used_at, previous_secret_until, secret_hash, previous_secret_hash FROM tokens";

/// How a secret is looked up within a workspace.
#[derive(Clone, Copy)]
pub(crate) enum SecretKey<'a> {
    Id(&'a str),
    Name {
        environment_id: &'a str,
        name: &'a str,
    },
}

/// A named lookup: (workspace id, environment name or "" for the default,
/// secret name).
pub(crate) type Lookup<'a> = (&'a str, &'a str, &'a str);

/// Advisory lock keys (one namespace per database).
pub(crate) const LOCK_BOOTSTRAP: i64 = 0x6c6b_0001; // "lk" 1
pub(crate) const LOCK_SWEEP: i64 = 0x6c6b_0002;

/// The statements of the backend `DB`. A namespace, never built: its
/// `where` clause is what every generic query needs of a database (sqlx
/// states it per type), written once here rather than on each function.
pub(crate) struct Sql<DB>(PhantomData<DB>);

impl<DB> Sql<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> &'q [u8]: Encode<'q, DB> + Type<DB>,
    for<'q> Vec<u8>: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> bool: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> Option<&'q str>: Encode<'q, DB> + Type<DB>,
    for<'q> Option<String>: Encode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Encode<'q, DB> + Type<DB>,
    for<'q> Option<Vec<u8>>: Encode<'q, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
    for<'r> WorkspaceRow: FromRow<'r, DB::Row>,
    for<'r> EnvironmentRow: FromRow<'r, DB::Row>,
    for<'r> TokenRow: FromRow<'r, DB::Row>,
    for<'r> SecretRow: FromRow<'r, DB::Row>,
    for<'r> VersionRow: FromRow<'r, DB::Row>,
    for<'r> AuditRow: FromRow<'r, DB::Row>,
{
    // --- the master key check -------------------------------------------

    /// The stored key check and the id of the key that made it; `None`
    /// when the schema or the check is not there yet.
    pub(crate) async fn read_key_check(
        conn: &mut DB::Connection,
    ) -> Result<Option<(Vec<u8>, String)>, sqlx::Error> {
        let (has_meta,): (bool,) = sqlx::query_as(DB::TABLE_EXISTS)
            .bind("meta")
            .fetch_one(&mut *conn)
            .await?;
        if !has_meta {
            return Ok(None);
        }
        let rows: Vec<(String, Vec<u8>)> =
            sqlx::query_as("SELECT key, value FROM meta WHERE key IN ($1, $2)")
                .bind(META_KEY_CHECK)
                .bind(META_KEY_ID)
                .fetch_all(&mut *conn)
                .await?;
        let get = |k: &str| rows.iter().find(|(key, _)| key == k).map(|(_, v)| v);
        Ok(get(META_KEY_CHECK).map(|check| {
            let id = get(META_KEY_ID)
                .map(|id| String::from_utf8_lossy(id).into_owned())
                .unwrap_or_default();
            (check.clone(), id)
        }))
    }

    /// Stores `keyring`'s check unless the store has one. Two replicas
    /// starting on a new database race here: the first insert wins, and
    /// the other key is then refused by the check read after it.
    async fn store_key_check(
        conn: &mut DB::Connection,
        keyring: &Keyring,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO meta (key, value) VALUES ($1, $2), ($3, $4) ON CONFLICT (key) DO NOTHING",
        )
        .bind(META_KEY_CHECK)
        .bind(keyring.key_check())
        .bind(META_KEY_ID)
        .bind(keyring.key_id().into_bytes())
        .execute(&mut *conn)
        .await
        .map(drop)
    }

    /// Stores `keyring`'s check unless there is one, then reads the check
    /// the store holds, which [`verify`](super::verify) compares.
    pub(crate) async fn ensure_key_check(
        conn: &mut DB::Connection,
        keyring: &Keyring,
    ) -> Result<Option<(Vec<u8>, String)>, sqlx::Error> {
        Self::store_key_check(conn, keyring).await?;
        Self::read_key_check(conn).await
    }

    // --- master-key rotation ---------------------------------------------

    /// How many secret versions have their data key wrapped by a master key
    /// other than `keyring`'s current one.
    pub(crate) async fn count_not_rewrapped(
        conn: &mut DB::Connection,
        keyring: &Keyring,
    ) -> Result<u64, Error> {
        let (count,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM secret_versions WHERE key_id <> $1")
                .bind(keyring.key_id())
                .fetch_one(&mut *conn)
                .await
                .map_err(db_error::<DB>)?;
        Ok(u64::try_from(count).unwrap_or_default())
    }

    /// Rewraps under `keyring`'s current key the data keys of at most
    /// `limit` versions still wrapped by another key. Returns how many
    /// versions it found still wrapped by another key (none once every
    /// version is under the current key) and the ids of the secrets whose
    /// versions it rewrapped (one per version). A version that another
    /// server rewrapped meanwhile (two replicas finishing one rotation) is
    /// left as that server wrote it and not counted.
    pub(crate) async fn rewrap_batch(
        conn: &mut DB::Connection,
        keyring: &Keyring,
        limit: u32,
    ) -> Result<(usize, Vec<String>), Error> {
        // (workspace id, secret id, version, key id, wrapped key)
        type Wrapped = (String, String, i64, String, Vec<u8>);
        let current = keyring.key_id();
        let rows: Vec<Wrapped> = sqlx::query_as(
            "SELECT s.workspace_id, v.secret_id, v.version, v.key_id, v.wrapped_key \
             FROM secret_versions v JOIN secrets s ON s.id = v.secret_id \
             WHERE v.key_id <> $1 ORDER BY v.secret_id, v.version LIMIT $2",
        )
        .bind(current.as_str())
        .bind(i64::from(limit))
        .fetch_all(&mut *conn)
        .await
        .map_err(db_error::<DB>)?;
        let found = rows.len();
        let mut done = Vec::with_capacity(rows.len());
        for (workspace_id, secret_id, version, key_id, wrapped_key) in rows {
            let binding = Binding {
                workspace_id: &workspace_id,
                secret_id: &secret_id,
                version,
            };
            let sealed = Sealed {
                key_id,
                wrapped_key,
                ciphertext: Vec::new(),
            };
            let Some((new_id, new_wrapped)) = keyring.rewrap(binding, &sealed) else {
                tracing::error!(
                    secret_id,
                    version,
                    key_id = %sealed.key_id,
                    "a data key does not open with the current or the previous master key"
                );
                return Err(Error::internal(format!(
                    "version {version} of secret '{secret_id}' is wrapped by master key id {}, \
                     which this server does not hold (or the row was altered); the rotation stopped",
                    sealed.key_id
                )));
            };
            let updated = sqlx::query(
                "UPDATE secret_versions SET key_id = $1, wrapped_key = $2 \
                 WHERE secret_id = $3 AND version = $4 AND key_id = $5",
            )
            .bind(new_id.as_str())
            .bind(new_wrapped)
            .bind(secret_id.as_str())
            .bind(version)
            .bind(sealed.key_id.as_str())
            .execute(&mut *conn)
            .await
            .map_err(db_error::<DB>)?;
            if DB::rows_affected(&updated) > 0 {
                done.push(secret_id);
            }
        }
        Ok((found, done))
    }

    /// Replaces the key check, the master key id and the wrapped audit key
    /// with those of `keyring`'s current key: the end of a rotation.
    pub(crate) async fn replace_key_meta(
        conn: &mut DB::Connection,
        keyring: &Keyring,
    ) -> Result<(), Error> {
        let entries = [
            (META_KEY_CHECK, keyring.key_check()),
            (META_KEY_ID, keyring.key_id().into_bytes()),
            (META_AUDIT_KEY, keyring.wrapped_audit_key()?),
        ];
        for (key, value) in entries {
            sqlx::query("UPDATE meta SET value = $1 WHERE key = $2")
                .bind(value)
                .bind(key)
                .execute(&mut *conn)
                .await
                .map_err(db_error::<DB>)?;
        }
        Ok(())
    }

    // --- workspaces and environments --------------------------------------

    /// Creates the workspace `default`, its environment `main` and the first
    /// admin token when there is no workspace. Returns whether it did.
    pub(crate) async fn bootstrap(
        conn: &mut DB::Connection,
        admin: &NewToken,
    ) -> Result<bool, Error> {
        // Two replicas starting on an empty database create one workspace.
        Self::advisory_lock(conn, LOCK_BOOTSTRAP).await?;
        let (count,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM workspaces")
            .fetch_one(&mut *conn)
            .await
            .map_err(db_error::<DB>)?;
        if count > 0 {
            return Ok(false);
        }
        let now = now_micros();
        sqlx::query("INSERT INTO workspaces (id, name, created_at) VALUES ($1, 'default', $2)")
            .bind(admin.workspace_id.as_str())
            .bind(now)
            .execute(&mut *conn)
            .await
            .map_err(db_error::<DB>)?;
        sqlx::query(
            "INSERT INTO environments (id, workspace_id, name, is_default, created_at) \
             VALUES ($1, $2, 'main', TRUE, $3)",
        )
        .bind(ids::new_id(ids::ENVIRONMENT))
        .bind(admin.workspace_id.as_str())
        .bind(now)
        .execute(&mut *conn)
        .await
        .map_err(db_error::<DB>)?;
        Self::insert_token(conn, admin, now).await?;
        Ok(true)
    }

    pub(crate) async fn workspace(conn: &mut DB::Connection, id: &str) -> Result<Workspace, Error> {
        sqlx::query_as::<_, WorkspaceRow>(
            "SELECT id, name, created_at FROM workspaces WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&mut *conn)
        .await
        .map_err(db_error::<DB>)?
        .map(Workspace::from)
        .ok_or_else(|| Error::not_found(format!("Workspace '{id}' not found")))
    }

    pub(crate) async fn list_environments(
        conn: &mut DB::Connection,
        workspace_id: &str,
    ) -> Result<Vec<Environment>, Error> {
        let rows = sqlx::query_as::<_, EnvironmentRow>(&format!(
            "{SELECT_ENVIRONMENT} WHERE workspace_id = $1 ORDER BY is_default DESC, created_at, name"
        ))
        .bind(workspace_id)
        .fetch_all(&mut *conn)
        .await
        .map_err(db_error::<DB>)?;
        Ok(rows.into_iter().map(Environment::from).collect())
    }

    /// The environment `name` ("" for the default; an id is taken too, which
    /// no name can be mistaken for); with `lock`, its row stays locked until
    /// the transaction ends.
    pub(crate) async fn environment(
        conn: &mut DB::Connection,
        workspace_id: &str,
        name: &str,
        lock: bool,
    ) -> Result<Environment, Error> {
        let lock = if lock { DB::FOR_UPDATE } else { "" };
        let sql = format!(
            "{SELECT_ENVIRONMENT} WHERE {}{lock}",
            environment_named("", 1)
        );
        sqlx::query_as::<_, EnvironmentRow>(&sql)
            .bind(workspace_id)
            .bind(name)
            .fetch_optional(&mut *conn)
            .await
            .map_err(db_error::<DB>)?
            .map(Environment::from)
            .ok_or_else(|| environment_not_found(name))
    }

    pub(crate) async fn create_environment(
        conn: &mut DB::Connection,
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
        sqlx::query(
            "INSERT INTO environments (id, workspace_id, name, is_default, created_at) \
             VALUES ($1, $2, $3, FALSE, $4)",
        )
        .bind(env.id.as_str())
        .bind(workspace_id)
        .bind(name)
        .bind(env.created_at)
        .execute(&mut *conn)
        .await
        .map_err(|e| Self::name_taken(e, "Environment", name))?;
        Ok(env)
    }

    pub(crate) async fn update_environment(
        conn: &mut DB::Connection,
        workspace_id: &str,
        current_name: &str,
        update: &EnvironmentUpdate,
    ) -> Result<Environment, Error> {
        if current_name.is_empty() {
            return Err(environment_not_found(current_name));
        }
        let mut env = Self::environment(conn, workspace_id, current_name, true).await?;
        if let Some(name) = &update.name {
            env.name.clone_from(name);
        }
        if let Some(suffix) = &update.webhook_suffix {
            env.webhook_suffix.clone_from(suffix);
        }
        sqlx::query("UPDATE environments SET name = $1, webhook_suffix = $2 WHERE id = $3")
            .bind(env.name.as_str())
            .bind(env.webhook_suffix.as_str())
            .bind(env.id.as_str())
            .execute(&mut *conn)
            .await
            .map_err(|e| Self::name_taken(e, "Environment", &env.name))?;
        Ok(env)
    }

    pub(crate) async fn delete_environment(
        conn: &mut DB::Connection,
        workspace_id: &str,
        name: &str,
        with_secrets: bool,
    ) -> Result<Environment, Error> {
        if name.is_empty() {
            return Err(environment_not_found(name));
        }
        // The lock orders this after (and before) creations in the environment.
        let env = Self::environment(conn, workspace_id, name, true).await?;
        let (named,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM secrets WHERE environment_id = $1 AND name IS NOT NULL",
        )
        .bind(env.id.as_str())
        .fetch_one(&mut *conn)
        .await
        .map_err(db_error::<DB>)?;
        rules::check_environment_deletable(&env.name, env.is_default, named, with_secrets)?;
        for sql in [
            "DELETE FROM secrets WHERE environment_id = $1",
            "DELETE FROM environments WHERE id = $1",
        ] {
            sqlx::query(sql)
                .bind(env.id.as_str())
                .execute(&mut *conn)
                .await
                .map_err(db_error::<DB>)?;
        }
        Ok(env)
    }

    // --- tokens -------------------------------------------------------------

    pub(crate) async fn insert_token(
        conn: &mut DB::Connection,
        token: &NewToken,
        now: Micros,
    ) -> Result<Token, Error> {
        sqlx::query(
            "INSERT INTO tokens (id, workspace_id, name, secret_hash, role, environments, created_at, \
             expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(token.id.as_str())
        .bind(token.workspace_id.as_str())
        .bind(token.name.as_str())
        .bind(token.secret_hash.as_slice())
        .bind(token.role.as_str())
        .bind(environments_column(&token.environments))
        .bind(now)
        .bind(token.expires_at)
        .execute(&mut *conn)
        .await
        .map_err(|e| Self::name_taken(e, "Token", &token.id))?;
        Ok(Token {
            id: token.id.clone(),
            workspace_id: token.workspace_id.clone(),
            name: token.name.clone(),
            role: token.role,
            environments: token.environments.clone(),
            created_at: now,
            revoked_at: None,
            expires_at: token.expires_at,
            last_used_at: None,
            previous_secret_until: None,
        })
    }

    /// The active token `token_id` with its secret's hashes; the previous
    /// secret's only while its grace period runs at `now`. With `lock`, the
    /// row stays locked until the transaction ends.
    pub(crate) async fn token_for_auth(
        conn: &mut DB::Connection,
        token_id: &str,
        now: Micros,
        lock: bool,
    ) -> Result<Option<TokenCredentials>, Error> {
        let row = sqlx::query_as::<_, TokenRow>(&format!(
            "{SELECT_TOKEN} WHERE id = $1 AND revoked_at IS NULL{}",
            if lock { DB::FOR_UPDATE } else { "" }
        ))
        .bind(token_id)
        .fetch_optional(&mut *conn)
        .await
        .map_err(db_error::<DB>)?;
        let Some(mut row) = row else {
            return Ok(None);
        };
        let secret_hash = std::mem::take(&mut row.secret_hash);
        let previous = row.previous_secret_hash.take();
        let mut token = Token::try_from(row)?;
        let previous_secret_hash = match token.previous_secret_until {
            Some(until) if until > now => previous,
            _ => {
                token.previous_secret_until = None;
                None
            }
        };
        Ok(Some(TokenCredentials {
            token,
            secret_hash,
            previous_secret_hash,
        }))
    }

    /// Records that `token_id` authenticated at `at`, unless a use within
    /// [`LAST_USED_RESOLUTION`](crate::LAST_USED_RESOLUTION) before is
    /// recorded already. Returns whether it wrote.
    pub(crate) async fn mark_token_used(
        conn: &mut DB::Connection,
        token_id: &str,
        at: Micros,
    ) -> Result<bool, Error> {
        let done = sqlx::query(
            "UPDATE tokens SET last_used_at = $1 WHERE id = $2 \
             AND (last_used_at IS NULL OR last_used_at <= $3)",
        )
        .bind(at)
        .bind(token_id)
        .bind(at - crate::LAST_USED_RESOLUTION)
        .execute(&mut *conn)
        .await
        .map_err(db_error::<DB>)?;
        Ok(DB::rows_affected(&done) > 0)
    }

    /// Gives the active, unexpired token `token_id` of the workspace a new
    /// secret; the one it replaces stays accepted until `grace_until` when
    /// that is after `now`, and is forgotten otherwise.
    pub(crate) async fn rotate_token(
        conn: &mut DB::Connection,
        workspace_id: &str,
        token_id: &str,
        secret_hash: &[u8; 32],
        grace_until: Option<Micros>,
        now: Micros,
    ) -> Result<Token, Error> {
        let current = Self::token_for_auth(conn, token_id, now, true)
            .await?
            .filter(|c| c.token.workspace_id == workspace_id)
            .ok_or_else(|| token_not_found(token_id))?;
        if let Some(at) = current.token.expires_at.filter(|at| *at <= now) {
            return Err(Error::failed_precondition(format!(
                "Token {token_id} expired at {}; it cannot be rotated (create a new one)",
                latchkey_core::time::Timestamp::from_micros(at)
            )));
        }
        let grace_until = grace_until.filter(|until| *until > now);
        let previous = grace_until.map(|_| current.secret_hash);
        sqlx::query(
            "UPDATE tokens SET secret_hash = $1, previous_secret_hash = $2, \
             previous_secret_until = $3 WHERE id = $4",
        )
        .bind(secret_hash.as_slice())
        .bind(previous)
        .bind(grace_until)
        .bind(token_id)
        .execute(&mut *conn)
        .await
        .map_err(db_error::<DB>)?;
        Ok(Token {
            previous_secret_until: grace_until,
            ..current.token
        })
    }

    pub(crate) async fn list_tokens(
        conn: &mut DB::Connection,
        workspace_id: &str,
    ) -> Result<Vec<Token>, Error> {
        sqlx::query_as::<_, TokenRow>(&format!(
            "{SELECT_TOKEN} WHERE workspace_id = $1 ORDER BY created_at, id"
        ))
        .bind(workspace_id)
        .fetch_all(&mut *conn)
        .await
        .map_err(db_error::<DB>)?
        .into_iter()
        .map(Token::try_from)
        .collect()
    }

    pub(crate) async fn revoke_token(
        conn: &mut DB::Connection,
        workspace_id: &str,
        token_id: &str,
    ) -> Result<(), Error> {
        // The workspace's row lock (NO KEY: inserts that reference the
        // workspace are not held up) orders revocations in the workspace, on
        // every replica: the count below cannot go stale before the update
        // commits. SQLite's one writer orders them already.
        sqlx::query(&format!(
            "SELECT id FROM workspaces WHERE id = $1{}",
            DB::FOR_NO_KEY_UPDATE
        ))
        .bind(workspace_id)
        .execute(&mut *conn)
        .await
        .map_err(db_error::<DB>)?;
        let (name, role, environments): (String, String, Option<String>) = sqlx::query_as(
            "SELECT name, role, environments FROM tokens \
             WHERE workspace_id = $1 AND id = $2 AND revoked_at IS NULL",
        )
        .bind(workspace_id)
        .bind(token_id)
        .fetch_optional(&mut *conn)
        .await
        .map_err(db_error::<DB>)?
        .ok_or_else(|| token_not_found(token_id))?;
        let (other_admins,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM tokens WHERE workspace_id = $1 AND role = $2 \
             AND environments IS NULL AND revoked_at IS NULL AND id <> $3",
        )
        .bind(workspace_id)
        .bind(Role::Admin.as_str())
        .bind(token_id)
        .fetch_one(&mut *conn)
        .await
        .map_err(db_error::<DB>)?;
        let unlimited_admin = Role::parse(&role) == Some(Role::Admin) && environments.is_none();
        rules::check_token_revocable(&name, unlimited_admin, other_admins)?;
        sqlx::query("UPDATE tokens SET revoked_at = $1 WHERE id = $2")
            .bind(now_micros())
            .bind(token_id)
            .execute(&mut *conn)
            .await
            .map_err(db_error::<DB>)?;
        Ok(())
    }

    // --- secrets ------------------------------------------------------------

    /// One secret row; with `lock`, the secret's row stays locked until the
    /// end of the transaction.
    ///
    /// The lock is taken by a statement of its own, on `secrets` alone, and
    /// the row is read after it: a statement that locks while it joins the
    /// current version would, once a concurrent writer commits, recheck the
    /// new version number against the old version's row and find nothing.
    pub(crate) async fn fetch_secret(
        conn: &mut DB::Connection,
        workspace_id: &str,
        key: SecretKey<'_>,
        lock: bool,
    ) -> Result<Option<SecretRow>, Error> {
        let clause = match key {
            SecretKey::Id(_) => "s.id = $2",
            SecretKey::Name { .. } => "s.environment_id = $2 AND s.name = $3",
        };
        let bind = |sql| {
            let q = sqlx::query(sql).bind(workspace_id);
            match key {
                SecretKey::Id(id) => q.bind(id),
                SecretKey::Name {
                    environment_id,
                    name,
                } => q.bind(environment_id).bind(name),
            }
        };
        if lock && !DB::FOR_UPDATE.is_empty() {
            let sql = format!(
                "SELECT s.id FROM secrets s WHERE s.workspace_id = $1 AND {clause}{}",
                DB::FOR_UPDATE
            );
            let locked = bind(&sql)
                .fetch_optional(&mut *conn)
                .await
                .map_err(db_error::<DB>)?;
            if locked.is_none() {
                // Nothing to lock is nothing to read (a create's name check).
                return Ok(None);
            }
        }
        let sql = format!(
            "SELECT {SECRET_COLUMNS} FROM {SECRET_FROM} WHERE s.workspace_id = $1 AND {clause}"
        );
        let q = sqlx::query_as::<_, SecretRow>(&sql).bind(workspace_id);
        let q = match key {
            SecretKey::Id(id) => q.bind(id),
            SecretKey::Name {
                environment_id,
                name,
            } => q.bind(environment_id).bind(name),
        };
        q.fetch_optional(&mut *conn).await.map_err(db_error::<DB>)
    }

    /// The row of a named lookup, found by its environment's name.
    pub(crate) async fn read_named(
        conn: &mut DB::Connection,
        (workspace_id, environment_name, name): Lookup<'_>,
    ) -> Result<Option<SecretRow>, Error> {
        sqlx::query_as::<_, SecretRow>(&format!(
            "SELECT {SECRET_COLUMNS} FROM {SECRET_FROM} WHERE s.workspace_id = $1 AND s.name = $3 \
             AND (CASE WHEN $2 = '' THEN e.is_default ELSE (e.name = $2 OR e.id = $2) END)"
        ))
        .bind(workspace_id)
        .bind(environment_name)
        .bind(name)
        .fetch_optional(&mut *conn)
        .await
        .map_err(db_error::<DB>)
    }

    /// Runs one group of writes in the transaction `conn` is in: the same
    /// few statements whatever the group's size (see
    /// [`batch`](super::batch)). On PostgreSQL a group of creates is three
    /// round trips between its `BEGIN` and `COMMIT`: the environments and
    /// names, the rows and the lock on the audit chain's head
    /// ([`Sql::write_parts`]), the events. Answers each write, in the order
    /// given, and what the lookup cache must forget once the group commits.
    ///
    /// Locks are taken in one order by every transaction, so that none
    /// waits on another that waits on it: the environments the creates go
    /// to (sorted by id, in one statement), then the secrets the group
    /// changes (sorted by id, in one statement), then the audit chain's
    /// head, last of all. The environment locks (key share) only keep the
    /// environments from going; the unique indexes order creations of
    /// named secrets: a second create of one name, in another group on any
    /// replica, waits for the first to commit and then collides (the
    /// caller runs the group again, and it sees the first), and the
    /// creation times ([`unique_micros`], one past the newest at least)
    /// stay unique, so that paging by `created_before` is exact. On SQLite
    /// the one writer orders everything.
    pub(crate) async fn write_group(
        conn: &mut DB::Connection,
        keyring: &Keyring,
        writes: &[Write],
    ) -> Result<(Vec<Result<Written, Error>>, Changed), Error> {
        let plan = Plan::new(writes);
        let (environments, found) =
            Self::lock_environments(conn, &plan.environments(), &plan.names()).await?;
        let locked = plan.locked_ids(&environments, &found);
        let mut read: Vec<&str> = locked
            .iter()
            .map(String::as_str)
            .chain(found.iter().map(|(id, _, _)| id.as_str()))
            .collect();
        read.sort_unstable();
        read.dedup();
        let rows = Self::lock_and_read(conn, &locked, &read).await?;
        let mut outcome = plan.run(keyring, unique_micros, &environments, found, rows);
        // Names in one order in every group: two groups in flight that
        // insert the same names wait on each other in that order.
        outcome
            .secrets
            .sort_by(|a, b| (&a.environment_id, &a.name).cmp(&(&b.environment_id, &b.name)));
        Self::delete_secrets(conn, &outcome.deletes).await?;
        let head = Self::write_parts(
            conn,
            &[
                Part::Secrets(&outcome.secrets),
                Part::Versions(&outcome.versions),
                Part::CurrentVersions(&outcome.current),
                Part::DestroyedVersions(&outcome.destroyed),
            ],
            !outcome.events.is_empty(),
        )
        .await?;
        if let Some(head) = head {
            Self::append_after(conn, keyring, head, &outcome.events).await?;
        }
        Ok((outcome.results, Changed::Secrets(outcome.changed)))
    }

    /// Finds the environments the creates of a group go to (`references`,
    /// each as a create names it) and keeps them from going until the
    /// transaction ends, without holding up anything else (a key share
    /// lock, as the foreign keys of the rows inserted take anyway; taken in
    /// the order of their ids); and looks up the named secrets of `names`.
    /// Answers the environments found, with the newest creation time of
    /// each one's named secrets, and the named secrets that exist.
    ///
    /// The newest time is one step down the index of creation times per
    /// environment (a `GROUP BY` would read every row), asked for in that
    /// index's order (`ORDER BY ... LIMIT 1`, not `MAX`), which only that
    /// index gives: with statistics that think the environment small, a
    /// `MAX` may be planned as a read of every row on another index. Each
    /// name is a query of its own, joined by `UNION ALL`: an equality on
    /// both columns of the unique index of names, the plainest plan there
    /// is (pairs joined by `OR` are folded by PostgreSQL into one equality
    /// on the environment and a list of names, which statistics that lag
    /// behind a table growing fast let it plan as a read of the whole
    /// environment; see `postgres::Statistics`). Both go in one statement,
    /// one round trip on a path that runs one group at a time; names past
    /// [`NAMES_PER_STATEMENT`] take statements of their own.
    async fn lock_environments(
        conn: &mut DB::Connection,
        references: &[EnvironmentRef<'_>],
        names: &[(EnvironmentRef<'_>, &str)],
    ) -> Result<(Vec<EnvironmentLock>, Vec<NameFound>), Error> {
        let (with_environments, rest) = names.split_at(if references.is_empty() {
            0
        } else {
            names.len().min(NAMES_PER_STATEMENT)
        });
        let mut environments = Vec::with_capacity(references.len());
        let mut found = Vec::new();
        if !references.is_empty() {
            let which: Vec<String> = (0..references.len())
                .map(|i| format!("({})", environment_named("e.", 2 * i + 1)))
                .collect();
            let locked = format!(
                "SELECT e.id, e.workspace_id, e.name, e.is_default, (SELECT s.created_at \
                 FROM secrets s WHERE s.environment_id = e.id AND s.name IS NOT NULL \
                 ORDER BY s.created_at DESC LIMIT 1) AS newest \
                 FROM environments e WHERE {} ORDER BY e.id{}",
                which.join(" OR "),
                DB::FOR_KEY_SHARE
            );
            // Rows of both kinds in one shape ([`LockedRow`]).
            let mut sql = format!(
                "WITH e AS ({locked}) SELECT 'e', id, workspace_id, name, is_default, newest FROM e"
            );
            if !with_environments.is_empty() {
                sql.push_str(" UNION ALL ");
                sql.push_str(&named_arms(
                    2 * references.len() + 1,
                    with_environments.len(),
                    "'n', ",
                    ", NULL, NULL",
                ));
            }
            let mut query = sqlx::query_as(&sql)
                .persistent(prepared(references.len()) && prepared(with_environments.len()));
            for (workspace_id, reference) in references {
                query = query.bind(*workspace_id).bind(*reference);
            }
            for ((workspace_id, reference), name) in with_environments {
                query = query.bind(*workspace_id).bind(*reference).bind(*name);
            }
            let rows: Vec<LockedRow> = query
                .fetch_all(&mut *conn)
                .await
                .map_err(group_error::<DB>)?;
            for (kind, id, parent, name, is_default, newest) in rows {
                if kind == "e" {
                    environments.push((id, parent, name, is_default.unwrap_or(false), newest));
                } else {
                    found.push((id, parent, name));
                }
            }
        }
        for chunk in rest.chunks(NAMES_PER_STATEMENT) {
            let sql = named_arms(1, chunk.len(), "", "");
            let mut query = sqlx::query_as(&sql).persistent(prepared(chunk.len()));
            for ((workspace_id, reference), name) in chunk {
                query = query.bind(*workspace_id).bind(*reference).bind(*name);
            }
            found.extend(
                query
                    .fetch_all(&mut *conn)
                    .await
                    .map_err(group_error::<DB>)?,
            );
        }
        Ok((environments, found))
    }

    /// Locks the secrets `locked` (sorted) until the transaction ends, then
    /// reads those of `read` that exist. The lock is taken by a statement
    /// of its own (see [`Sql::fetch_secret`]).
    async fn lock_and_read(
        conn: &mut DB::Connection,
        locked: &[String],
        read: &[&str],
    ) -> Result<Vec<SecretRow>, Error> {
        if !locked.is_empty() && !DB::FOR_UPDATE.is_empty() {
            let sql = format!(
                "SELECT id FROM secrets WHERE id IN ({}) ORDER BY id{}",
                placeholders(1, locked.len()),
                DB::FOR_UPDATE
            );
            let mut query = sqlx::query(&sql).persistent(prepared(locked.len()));
            for id in locked {
                query = query.bind(id.as_str());
            }
            query.execute(&mut *conn).await.map_err(group_error::<DB>)?;
        }
        if read.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT {SECRET_COLUMNS} FROM {SECRET_FROM} WHERE s.id IN ({})",
            placeholders(1, read.len())
        );
        let mut query = sqlx::query_as(&sql).persistent(prepared(read.len()));
        for id in read {
            query = query.bind(*id);
        }
        query.fetch_all(&mut *conn).await.map_err(group_error::<DB>)
    }

    async fn delete_secrets(conn: &mut DB::Connection, ids: &[String]) -> Result<(), Error> {
        if ids.is_empty() {
            return Ok(());
        }
        let sql = format!(
            "DELETE FROM secrets WHERE id IN ({})",
            placeholders(1, ids.len())
        );
        let mut query = sqlx::query(&sql).persistent(prepared(ids.len()));
        for id in ids {
            query = query.bind(id.as_str());
        }
        query
            .execute(&mut *conn)
            .await
            .map(drop)
            .map_err(group_error::<DB>)
    }

    /// Writes the rows a group made, `parts` in order, in the transaction
    /// `conn` is in ([`Part`]); then, when `lock_head`, locks the audit
    /// chain's head and answers it. Where the database allows writes in
    /// `WITH` all of it is one statement, each part one `WITH` of it: one
    /// round trip on a path that runs one group at a time (the parts touch
    /// different rows, so their order within the statement does not
    /// matter; foreign keys are checked at its end). Elsewhere each part is
    /// a statement of its own, split where it would bind too many
    /// parameters, and the head's lock one more.
    ///
    /// The head is locked after the rows are written, in the one statement
    /// too: its `SELECT ... FOR UPDATE` counts what each part returned in a
    /// condition that names no column of the head, which PostgreSQL checks
    /// once, before it reads the head's row, so every part runs to its end
    /// before the lock is asked for. Locked first, a group would hold the
    /// head while an insert of it waits for another transaction's name or
    /// creation time, and that transaction (another replica's group) could
    /// be waiting for the head: a deadlock.
    async fn write_parts(
        conn: &mut DB::Connection,
        parts: &[Part<'_>],
        lock_head: bool,
    ) -> Result<Option<AuditHead>, Error> {
        let parts: Vec<&Part<'_>> = parts.iter().filter(|p| p.rows() > 0).collect();
        let params: usize = parts.iter().map(|p| p.params()).sum();
        let statements = parts.len() + usize::from(lock_head);
        if DB::WRITES_IN_WITH && !parts.is_empty() && statements > 1 && params <= MAX_PARAMETERS {
            let mut first = 1;
            let mut with = Vec::with_capacity(parts.len());
            for (i, part) in parts.iter().enumerate() {
                with.push(format!("w{i} AS ({} RETURNING 1)", part.sql(first)));
                first += part.params();
            }
            let main = if lock_head {
                let written: Vec<String> = (0..parts.len())
                    .map(|i| format!("(SELECT count(*) FROM w{i})"))
                    .collect();
                format!(
                    "SELECT seq, mac FROM audit_head WHERE id = 1 AND {} >= 0{}",
                    written.join(" + "),
                    DB::FOR_UPDATE
                )
            } else {
                "SELECT 1".to_owned()
            };
            let sql = format!("WITH {} {main}", with.join(", "));
            let rows = parts.iter().map(|p| p.rows()).max().unwrap_or(0);
            let mut args = DB::Arguments::default();
            for part in &parts {
                Self::part_arguments(&mut args, part)?;
            }
            // A name (or creation time) that a group in flight took first is
            // a collision: the group runs again and then sees it.
            if !lock_head {
                sqlx::query_with(&sql, args)
                    .persistent(prepared(rows))
                    .execute(&mut *conn)
                    .await
                    .map_err(group_error::<DB>)?;
                return Ok(None);
            }
            let (seq, mac) = sqlx::query_as_with(&sql, args)
                .persistent(prepared(rows))
                .fetch_one(&mut *conn)
                .await
                .map_err(group_error::<DB>)?;
            return Ok(Some(AuditHead { seq, mac }));
        }
        for part in parts {
            for chunk in part.chunks(MAX_PARAMETERS) {
                let sql = chunk.sql(1);
                let mut args = DB::Arguments::default();
                Self::part_arguments(&mut args, &chunk)?;
                sqlx::query_with(&sql, args)
                    .persistent(prepared(chunk.rows()))
                    .execute(&mut *conn)
                    .await
                    .map_err(group_error::<DB>)?;
            }
        }
        if lock_head {
            return Self::audit_head_row(conn, true).await.map(Some);
        }
        Ok(None)
    }

    /// Adds the parameters of `part` to `args`, in the order of its text.
    fn part_arguments<'q>(args: &mut DB::Arguments<'q>, part: &Part<'q>) -> Result<(), Error> {
        use sqlx::Arguments as _;
        let encode = |e: sqlx::error::BoxDynError| db_error::<DB>(sqlx::Error::Encode(e));
        match *part {
            Part::Secrets(rows) => {
                for row in rows {
                    args.add(row.id.as_str()).map_err(encode)?;
                    args.add(row.workspace_id.as_str()).map_err(encode)?;
                    args.add(row.environment_id.as_str()).map_err(encode)?;
                    args.add(row.name.as_deref()).map_err(encode)?;
                    args.add(row.app_id.as_deref()).map_err(encode)?;
                    args.add(row.expires_at).map_err(encode)?;
                    args.add(row.created_at).map_err(encode)?;
                    args.add(row.created_by.as_str()).map_err(encode)?;
                    args.add(row.version).map_err(encode)?;
                }
            }
            Part::Versions(rows) => {
                for v in rows {
                    args.add(v.secret_id.as_str()).map_err(encode)?;
                    args.add(v.version).map_err(encode)?;
                    args.add(v.created_at).map_err(encode)?;
                    args.add(v.created_by.as_str()).map_err(encode)?;
                    args.add(v.action.as_str()).map_err(encode)?;
                    args.add(v.action.source()).map_err(encode)?;
                    args.add(v.keys.as_str()).map_err(encode)?;
                    args.add(v.changes.as_deref()).map_err(encode)?;
                    args.add(v.sealed.key_id.as_str()).map_err(encode)?;
                    args.add(v.sealed.wrapped_key.as_slice()).map_err(encode)?;
                    args.add(v.sealed.ciphertext.as_slice()).map_err(encode)?;
                }
            }
            Part::CurrentVersions(pairs) | Part::DestroyedVersions(pairs) => {
                for (id, version) in pairs {
                    args.add(id.as_str()).map_err(encode)?;
                    args.add(*version).map_err(encode)?;
                }
            }
        }
        Ok(())
    }

    /// The secret's current row, locked until the transaction ends: a
    /// concurrent write of this secret, on any replica, waits here until
    /// this one commits and then builds on its result. Refused when the
    /// secret is outside `revision`'s environments, or `revision` expects
    /// another version.
    async fn lock_head(
        conn: &mut DB::Connection,
        workspace_id: &str,
        secret_id: &str,
        revision: &Revision,
    ) -> Result<SecretRow, Error> {
        let row = Self::fetch_secret(conn, workspace_id, SecretKey::Id(secret_id), true)
            .await?
            .ok_or_else(|| secret_not_found(secret_id))?;
        rules::check_token_environment(
            &revision.author,
            revision.environments.as_deref(),
            &row.summary().environment_name,
        )?;
        if let Some(expected) = revision.expected_version {
            if expected != row.version {
                let summary = row.summary();
                return Err(Error::failed_precondition(format!(
                    "Secret '{}' was changed by someone else: it is at version {}, not {expected}; \
                     reload it and apply your changes again",
                    summary.name().unwrap_or(&summary.id),
                    row.version
                )));
            }
        }
        Ok(row)
    }

    /// Makes a new version of a secret whose contents are version `to`'s.
    /// Refused when `to` is the current version (there is nothing to undo)
    /// or is not kept.
    pub(crate) async fn rollback_secret(
        conn: &mut DB::Connection,
        keyring: &Keyring,
        workspace_id: &str,
        secret_id: &str,
        to: i64,
        revision: &Revision,
    ) -> Result<Secret, Error> {
        let row = Self::lock_head(conn, workspace_id, secret_id, revision).await?;
        let summary = row.summary();
        let label = summary.name().unwrap_or(&summary.id).to_owned();
        if to == row.version {
            return Err(Error::failed_precondition(format!(
                "Secret '{label}' is at version {to} already; nothing was rolled back"
            )));
        }
        let contents =
            Self::version_contents(conn, keyring, workspace_id, secret_id, &label, to).await?;
        let next = Next {
            contents,
            action: VersionAction::RolledBack { to },
        };
        let head = Head::of(row, keyring);
        Self::new_version(conn, keyring, workspace_id, head, next, revision).await
    }

    /// Writes the version after `head` and makes it current; destroys the
    /// versions that fall out of `revision.keep_versions`. The caller holds
    /// the secret's row lock, so numbers follow one another without gaps.
    /// Returns the secret at its new version.
    async fn new_version(
        conn: &mut DB::Connection,
        keyring: &Keyring,
        workspace_id: &str,
        head: Head,
        next: Next,
        revision: &Revision,
    ) -> Result<Secret, Error> {
        let mut summary = head.summary;
        let secret_id = summary.id.as_str();
        let version = summary.version + 1;
        let row = NewVersion {
            workspace_id,
            secret_id,
            version,
            created_at: now_micros(),
            author: &revision.author,
            action: next.action,
            contents: &next.contents,
            changes: head
                .contents
                .as_ref()
                .map(|before| KeyChanges::between(before, &next.contents)),
        };
        Self::insert_version(conn, keyring, &row).await?;
        sqlx::query("UPDATE secrets SET version = $1 WHERE id = $2")
            .bind(version)
            .bind(secret_id)
            .execute(&mut *conn)
            .await
            .map_err(db_error::<DB>)?;
        // Destroyed: the row goes, and with it the only copy of its wrapped
        // data key.
        sqlx::query("DELETE FROM secret_versions WHERE secret_id = $1 AND version <= $2")
            .bind(secret_id)
            .bind(version - i64::from(revision.keep_versions.max(1)))
            .execute(&mut *conn)
            .await
            .map_err(db_error::<DB>)?;
        summary.version = version;
        summary.keys = next.contents.keys().cloned().collect();
        Ok(Secret {
            summary,
            contents: next.contents,
        })
    }

    /// Seals and inserts one version row.
    async fn insert_version(
        conn: &mut DB::Connection,
        keyring: &Keyring,
        v: &NewVersion<'_>,
    ) -> Result<(), Error> {
        let sealed = seal(keyring, v.workspace_id, v.secret_id, v.version, v.contents);
        let changes = v
            .changes
            .as_ref()
            .map(|c| serde_json::to_string(c).expect("names serialize"));
        sqlx::query(
            "INSERT INTO secret_versions (secret_id, version, created_at, created_by, action, \
             source_version, keys, changes, key_id, wrapped_key, ciphertext) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(v.secret_id)
        .bind(v.version)
        .bind(v.created_at)
        .bind(v.author)
        .bind(v.action.as_str())
        .bind(v.action.source())
        .bind(key_list_column(v.contents.keys()))
        .bind(changes)
        .bind(sealed.key_id.as_str())
        .bind(sealed.wrapped_key.as_slice())
        .bind(sealed.ciphertext.as_slice())
        .execute(&mut *conn)
        .await
        .map(drop)
        .map_err(db_error::<DB>)
    }

    /// NotFound for a version that is not kept, naming the ones that are.
    async fn version_not_kept(
        conn: &mut DB::Connection,
        secret_id: &str,
        label: &str,
        version: i64,
    ) -> Error {
        let kept: Result<(Option<i64>, Option<i64>), _> = sqlx::query_as(
            "SELECT MIN(version), MAX(version) FROM secret_versions WHERE secret_id = $1",
        )
        .bind(secret_id)
        .fetch_one(&mut *conn)
        .await;
        let kept = match kept {
            Ok((Some(first), Some(last))) if first == last => {
                format!("only version {last} is kept")
            }
            Ok((Some(first), Some(last))) => format!("versions {first} to {last} are kept"),
            Ok(_) => "no version is kept".to_owned(),
            Err(e) => return db_error::<DB>(e),
        };
        let why = if version > 0 {
            "it was destroyed or never existed"
        } else {
            "versions are numbered from 1"
        };
        Error::not_found(format!(
            "Secret '{}' has no version {version} ({why}); {kept}",
            rules::echo(label)
        ))
    }

    /// The decrypted contents of a kept version.
    async fn version_contents(
        conn: &mut DB::Connection,
        keyring: &Keyring,
        workspace_id: &str,
        secret_id: &str,
        label: &str,
        version: i64,
    ) -> Result<EnvDict, Error> {
        let sealed: Option<(String, Vec<u8>, Vec<u8>)> = sqlx::query_as(
            "SELECT key_id, wrapped_key, ciphertext FROM secret_versions \
             WHERE secret_id = $1 AND version = $2",
        )
        .bind(secret_id)
        .bind(version)
        .fetch_optional(&mut *conn)
        .await
        .map_err(db_error::<DB>)?;
        let Some((key_id, wrapped_key, ciphertext)) = sealed else {
            return Err(Self::version_not_kept(conn, secret_id, label, version).await);
        };
        let sealed = Sealed {
            key_id,
            wrapped_key,
            ciphertext,
        };
        open_version(keyring, workspace_id, secret_id, version, &sealed, label)
    }

    /// Version `version` of a secret: the secret as it was then (its
    /// metadata with that version's number and keys) and the version's
    /// record.
    pub(crate) async fn secret_version(
        conn: &mut DB::Connection,
        keyring: &Keyring,
        workspace_id: &str,
        secret_id: &str,
        version: i64,
    ) -> Result<(Secret, SecretVersion), Error> {
        let row = Self::fetch_secret(conn, workspace_id, SecretKey::Id(secret_id), false)
            .await?
            .ok_or_else(|| secret_not_found(secret_id))?;
        let mut summary = row.summary();
        let label = summary.name().unwrap_or(&summary.id).to_owned();
        let record = sqlx::query_as::<_, VersionRow>(&format!(
            "SELECT {VERSION_COLUMNS} FROM secret_versions WHERE secret_id = $1 AND version = $2"
        ))
        .bind(secret_id)
        .bind(version)
        .fetch_optional(&mut *conn)
        .await
        .map_err(db_error::<DB>)?;
        let Some(record) = record else {
            return Err(Self::version_not_kept(conn, secret_id, &label, version).await);
        };
        let record = record.into_version(secret_id)?;
        let contents =
            Self::version_contents(conn, keyring, workspace_id, secret_id, &label, version).await?;
        summary.version = version;
        summary.keys = contents.keys().cloned().collect();
        Ok((Secret { summary, contents }, record))
    }

    /// Kept versions of a secret, newest first, older than `before` when
    /// given, at most `limit`. NotFound when the workspace has no such secret.
    pub(crate) async fn secret_history(
        conn: &mut DB::Connection,
        workspace_id: &str,
        secret_id: &str,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<SecretVersion>, Error> {
        let rows = sqlx::query_as::<_, VersionRow>(&format!(
            "SELECT {VERSION_COLUMNS} FROM secret_versions \
             WHERE secret_id = (SELECT id FROM secrets WHERE workspace_id = $1 AND id = $2) \
             AND version < $3 ORDER BY version DESC LIMIT $4"
        ))
        .bind(workspace_id)
        .bind(secret_id)
        .bind(before.unwrap_or(i64::MAX))
        .bind(i64::from(limit))
        .fetch_all(&mut *conn)
        .await
        .map_err(db_error::<DB>)?;
        if rows.is_empty() {
            // No version at all: tell an unknown secret from an empty page.
            Self::fetch_secret(conn, workspace_id, SecretKey::Id(secret_id), false)
                .await?
                .ok_or_else(|| secret_not_found(secret_id))?;
        }
        rows.into_iter()
            .map(|row| row.into_version(secret_id))
            .collect()
    }

    /// Fills in the key lists of version rows carried over from a store
    /// that kept none, by decrypting them once; a version 1 also gets its
    /// changes (every key added). Rows that do not open are left as they
    /// are, and logged. Returns how many rows it filled.
    pub(crate) async fn fill_key_lists(
        conn: &mut DB::Connection,
        keyring: &Keyring,
    ) -> Result<u64, sqlx::Error> {
        // (workspace id, secret id, version, key id, wrapped key, ciphertext)
        type Unlisted = (String, String, i64, String, Vec<u8>, Vec<u8>);
        let rows: Vec<Unlisted> = sqlx::query_as(
            "SELECT s.workspace_id, v.secret_id, v.version, v.key_id, v.wrapped_key, v.ciphertext \
             FROM secret_versions v JOIN secrets s ON s.id = v.secret_id WHERE v.keys IS NULL",
        )
        .fetch_all(&mut *conn)
        .await?;
        let mut filled = 0;
        for (workspace_id, secret_id, version, key_id, wrapped_key, ciphertext) in rows {
            let sealed = Sealed {
                key_id,
                wrapped_key,
                ciphertext,
            };
            let Ok(contents) = open_version(
                keyring,
                &workspace_id,
                &secret_id,
                version,
                &sealed,
                &secret_id,
            ) else {
                continue;
            };
            let changes = (version == 1).then(|| {
                serde_json::to_string(&KeyChanges::between(&EnvDict::new(), &contents))
                    .expect("names serialize")
            });
            sqlx::query(
                "UPDATE secret_versions SET keys = $1, changes = COALESCE(changes, $2) \
                 WHERE secret_id = $3 AND version = $4",
            )
            .bind(key_list_column(contents.keys()))
            .bind(changes)
            .bind(secret_id.as_str())
            .bind(version)
            .execute(&mut *conn)
            .await?;
            filled += 1;
        }
        Ok(filled)
    }

    pub(crate) async fn list_secrets(
        conn: &mut DB::Connection,
        workspace_id: &str,
        environment_id: &str,
        created_before: Option<Micros>,
        limit: u32,
    ) -> Result<Vec<SecretRow>, Error> {
        sqlx::query_as::<_, SecretRow>(&format!(
            "SELECT {SECRET_COLUMNS} FROM {SECRET_FROM} \
             WHERE s.workspace_id = $1 AND s.environment_id = $2 AND s.name IS NOT NULL \
             AND s.created_at < $3 ORDER BY s.created_at DESC LIMIT $4"
        ))
        .bind(workspace_id)
        .bind(environment_id)
        .bind(created_before.unwrap_or(i64::MAX))
        .bind(i64::from(limit))
        .fetch_all(&mut *conn)
        .await
        .map_err(db_error::<DB>)
    }

    /// Sets `last_used_at` of the secrets last used more than
    /// [`LAST_USED_RESOLUTION`](crate::LAST_USED_RESOLUTION) before `at`;
    /// returns the ids it changed. `ids` must be sorted: rows are then
    /// locked in one order by every caller, so two calls cannot deadlock.
    pub(crate) async fn mark_used<'a>(
        conn: &mut DB::Connection,
        workspace_id: &str,
        ids: &'a [String],
        at: Micros,
    ) -> Result<Vec<&'a str>, Error> {
        let mut changed = Vec::new();
        for id in ids {
            let done = sqlx::query(
                "UPDATE secrets SET last_used_at = $1 WHERE workspace_id = $2 AND id = $3 \
                 AND (last_used_at IS NULL OR last_used_at <= $4)",
            )
            .bind(at)
            .bind(workspace_id)
            .bind(id.as_str())
            .bind(at - crate::LAST_USED_RESOLUTION)
            .execute(&mut *conn)
            .await
            .map_err(db_error::<DB>)?;
            if DB::rows_affected(&done) > 0 {
                changed.push(id.as_str());
            }
        }
        Ok(changed)
    }

    /// Deletes anonymous secrets that expired before `now`; `None` when
    /// another replica is sweeping (it holds the lock).
    pub(crate) async fn sweep_expired(
        conn: &mut DB::Connection,
        now: Micros,
    ) -> Result<Option<u64>, Error> {
        if let Some(sql) = DB::TRY_ADVISORY_LOCK {
            let (ours,): (bool,) = sqlx::query_as(sql)
                .bind(LOCK_SWEEP)
                .fetch_one(&mut *conn)
                .await
                .map_err(db_error::<DB>)?;
            if !ours {
                return Ok(None);
            }
        }
        sqlx::query("DELETE FROM secrets WHERE expires_at IS NOT NULL AND expires_at < $1")
            .bind(now)
            .execute(&mut *conn)
            .await
            .map(|done| Some(DB::rows_affected(&done)))
            .map_err(db_error::<DB>)
    }

    // --- helpers ------------------------------------------------------------

    /// Takes the advisory lock `key` until the transaction ends, where the
    /// backend has them.
    async fn advisory_lock(conn: &mut DB::Connection, key: i64) -> Result<(), Error> {
        if let Some(sql) = DB::ADVISORY_LOCK {
            sqlx::query(sql)
                .bind(key)
                .execute(&mut *conn)
                .await
                .map_err(db_error::<DB>)?;
        }
        Ok(())
    }

    // --- the audit log ----------------------------------------------------

    /// The store's audit key, wrapped by the master key: made by the first
    /// start (of any replica: the first insert wins), read by every start.
    pub(crate) async fn ensure_audit_key(
        conn: &mut DB::Connection,
        keyring: &Keyring,
    ) -> Result<Vec<u8>, sqlx::Error> {
        sqlx::query("INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING")
            .bind(META_AUDIT_KEY)
            .bind(keyring.new_audit_key())
            .execute(&mut *conn)
            .await?;
        sqlx::query(
            "INSERT INTO audit_head (id, seq, mac) VALUES (1, 0, $1) ON CONFLICT (id) DO NOTHING",
        )
        .bind(Vec::<u8>::new())
        .execute(&mut *conn)
        .await?;
        let (wrapped,): (Vec<u8>,) = sqlx::query_as("SELECT value FROM meta WHERE key = $1")
            .bind(META_AUDIT_KEY)
            .fetch_one(&mut *conn)
            .await?;
        Ok(wrapped)
    }

    /// The head of the chain, locked until the transaction ends when `lock`.
    async fn audit_head_row(conn: &mut DB::Connection, lock: bool) -> Result<AuditHead, Error> {
        let sql = format!(
            "SELECT seq, mac FROM audit_head WHERE id = 1{}",
            if lock { DB::FOR_UPDATE } else { "" }
        );
        let (seq, mac): (i64, Vec<u8>) =
            sqlx::query_as(&sql)
                .fetch_one(&mut *conn)
                .await
                .map_err(if lock {
                    audit_write_failed::<DB>
                } else {
                    db_error::<DB>
                })?;
        Ok(AuditHead { seq, mac })
    }

    /// The head of the chain.
    pub(crate) async fn audit_head(conn: &mut DB::Connection) -> Result<AuditHead, Error> {
        Self::audit_head_row(conn, false).await
    }

    /// Appends `entries` to the chain, in order, in the transaction `conn`
    /// is in. The head stays locked until that transaction ends, which
    /// orders every append on every replica: numbers stay gapless and each
    /// MAC chains from the event committed before it.
    pub(crate) async fn append_events(
        conn: &mut DB::Connection,
        keyring: &Keyring,
        entries: &[AuditEntry],
    ) -> Result<AuditHead, Error> {
        keyring.audit_key()?;
        let head = Self::audit_head_row(conn, true).await?;
        Self::append_after(conn, keyring, head, entries).await
    }

    /// Appends `entries` to the chain after `head`, which the transaction
    /// `conn` is in has locked ([`Sql::append_events`]).
    async fn append_after(
        conn: &mut DB::Connection,
        keyring: &Keyring,
        mut head: AuditHead,
        entries: &[AuditEntry],
    ) -> Result<AuditHead, Error> {
        let key = keyring.audit_key()?;
        if entries.is_empty() {
            return Ok(head);
        }
        let at = now_micros();
        const COLUMNS: usize = 16;
        // The head moves to the last event; its two parameters follow the
        // rows' (room is left for them in every chunk).
        let head_update = |first: usize| {
            format!(
                "UPDATE audit_head SET seq = ${first}, mac = ${} WHERE id = 1",
                first + 1
            )
        };
        let chunks = entries.chunks((MAX_PARAMETERS - 2) / COLUMNS);
        let last = chunks.len() - 1;
        for (i, chunk) in chunks.enumerate() {
            // Where the database allows it, the last insert moves the head
            // too: one round trip less on every audited write.
            let with_head = DB::WRITES_IN_WITH && i == last;
            let prefix = if with_head {
                format!("WITH head AS ({}) ", head_update(chunk.len() * COLUMNS + 1))
            } else {
                String::new()
            };
            let sql = format!(
                "{prefix}INSERT INTO audit_events ({AUDIT_COLUMNS}) VALUES {}",
                value_rows(1, chunk.len(), COLUMNS)
            );
            let mut query = sqlx::query(&sql).persistent(prepared(chunk.len()));
            for entry in chunk {
                let seq = head.seq + 1;
                let mac = chain_mac(key, &head.mac, seq, at, entry);
                let actor = entry.actor.as_ref();
                query = query
                    .bind(seq)
                    .bind(at)
                    .bind(entry.workspace_id.as_deref())
                    .bind(actor.map(|a| a.token_id.as_str()))
                    .bind(actor.map(|a| a.name.as_str()))
                    .bind(actor.map(|a| a.role.as_str()))
                    .bind(entry.client.as_deref())
                    .bind(entry.interface.as_str())
                    .bind(entry.action.as_str())
                    .bind(entry.environment.as_deref())
                    .bind(entry.secret_name.as_deref())
                    .bind(entry.secret_id.as_deref())
                    .bind(entry.version)
                    .bind(entry.outcome.as_str())
                    .bind(entry.detail.as_deref())
                    .bind(mac.clone());
                head = AuditHead { seq, mac };
            }
            if with_head {
                query = query.bind(head.seq).bind(head.mac.clone());
            }
            query
                .execute(&mut *conn)
                .await
                .map_err(audit_write_failed::<DB>)?;
        }
        if !DB::WRITES_IN_WITH {
            sqlx::query(&head_update(1))
                .bind(head.seq)
                .bind(head.mac.as_slice())
                .execute(&mut *conn)
                .await
                .map_err(audit_write_failed::<DB>)?;
        }
        metrics::counter!("latchkey_audit_events_appended_total").increment(entries.len() as u64);
        Ok(head)
    }

    /// Events of a workspace (and those of no workspace: failed
    /// authentications of unknown tokens), oldest first, that `filter`
    /// selects; at most `limit`.
    pub(crate) async fn audit_events(
        conn: &mut DB::Connection,
        workspace_id: &str,
        filter: &AuditFilter,
        limit: u32,
    ) -> Result<Vec<AuditEvent>, Error> {
        let sql = format!(
            "SELECT {AUDIT_COLUMNS} FROM audit_events \
             WHERE (workspace_id = $1 OR workspace_id IS NULL) AND seq > $2 \
               AND (CAST($3 AS BIGINT) IS NULL OR at >= $3) \
               AND (CAST($4 AS BIGINT) IS NULL OR at < $4) \
               AND (CAST($5 AS TEXT) IS NULL OR secret_name = $5) \
               AND (CAST($6 AS TEXT) IS NULL OR actor_id = $6) \
               AND (CAST($7 AS TEXT) IS NULL OR action = $7) \
               AND (CAST($8 AS TEXT) IS NULL OR environment = $8) \
             ORDER BY seq LIMIT $9"
        );
        let rows: Vec<AuditRow> = sqlx::query_as(&sql)
            .bind(workspace_id)
            .bind(filter.after.unwrap_or(0))
            .bind(filter.since)
            .bind(filter.until)
            .bind(filter.secret.as_deref())
            .bind(filter.token.as_deref())
            .bind(filter.action.as_deref())
            .bind(filter.environment.as_deref())
            .bind(i64::from(limit))
            .fetch_all(&mut *conn)
            .await
            .map_err(db_error::<DB>)?;
        Ok(rows.into_iter().map(AuditEvent::from).collect())
    }

    /// Checks the whole chain, page by page, in the snapshot `conn` reads.
    pub(crate) async fn audit_verify(
        conn: &mut DB::Connection,
        keyring: &Keyring,
    ) -> Result<Verdict, Error> {
        const PAGE: i64 = 2_000;
        let key = keyring.audit_key()?;
        let newest_checkpoint: Option<(Option<String>,)> = sqlx::query_as(
            "SELECT detail FROM audit_events WHERE action = $1 ORDER BY seq DESC LIMIT 1",
        )
        .bind(CHECKPOINT)
        .fetch_optional(&mut *conn)
        .await
        .map_err(db_error::<DB>)?;
        let checkpoint = newest_checkpoint
            .and_then(|(detail,)| serde_json::from_str::<Checkpoint>(&detail?).ok());
        let mut verifier = Verifier::new(key, checkpoint);
        let page = format!(
            "SELECT {AUDIT_COLUMNS} FROM audit_events WHERE seq > $1 ORDER BY seq LIMIT $2"
        );
        let mut after = i64::MIN;
        loop {
            let rows: Vec<AuditRow> = sqlx::query_as(&page)
                .bind(after)
                .bind(PAGE)
                .fetch_all(&mut *conn)
                .await
                .map_err(db_error::<DB>)?;
            let n = rows.len();
            for row in rows {
                let event = AuditEvent::from(row);
                after = event.seq;
                verifier.feed(&event);
            }
            if verifier.is_broken() || n < PAGE as usize {
                break;
            }
        }
        let head = Self::audit_head(conn).await?;
        Ok(verifier.finish(&head))
    }

    /// Removes the events logged before `before`, after appending a
    /// checkpoint (`entry`, completed here) that says where the chain now
    /// starts. Returns how many it removed (none: no checkpoint either).
    pub(crate) async fn audit_retain(
        conn: &mut DB::Connection,
        keyring: &Keyring,
        before: Micros,
        mut entry: AuditEntry,
    ) -> Result<u64, Error> {
        let head = Self::audit_head_row(conn, true).await?;
        // The first event to keep: the oldest logged at or after `before`,
        // else the checkpoint about to be appended.
        let (kept_from,): (Option<i64>,) =
            sqlx::query_as("SELECT MIN(seq) FROM audit_events WHERE at >= $1")
                .bind(before)
                .fetch_one(&mut *conn)
                .await
                .map_err(db_error::<DB>)?;
        let kept_from = kept_from.unwrap_or(head.seq + 1);
        let (removed, prev): (i64, Option<Vec<u8>>) = sqlx::query_as(
            "SELECT COUNT(*), (SELECT mac FROM audit_events WHERE seq = $1) \
             FROM audit_events WHERE seq < $2",
        )
        .bind(kept_from - 1)
        .bind(kept_from)
        .fetch_one(&mut *conn)
        .await
        .map_err(db_error::<DB>)?;
        let removed = u64::try_from(removed).unwrap_or(0);
        if removed == 0 {
            return Ok(0);
        }
        let prev = if kept_from == head.seq + 1 {
            head.mac.clone()
        } else {
            prev.unwrap_or_default()
        };
        entry.action = CHECKPOINT.to_owned();
        entry.detail = Some(
            serde_json::to_string(&Checkpoint {
                kept_from,
                prev_mac: crate::audit::hex(&prev),
                removed,
            })
            .expect("a checkpoint serializes"),
        );
        Self::append_events(conn, keyring, std::slice::from_ref(&entry)).await?;
        sqlx::query("DELETE FROM audit_events WHERE seq < $1")
            .bind(kept_from)
            .execute(&mut *conn)
            .await
            .map_err(db_error::<DB>)?;
        Ok(removed)
    }

    /// Who read each version of a secret: per version and token, newest
    /// version first.
    pub(crate) async fn secret_exposure(
        conn: &mut DB::Connection,
        workspace_id: &str,
        secret_id: &str,
    ) -> Result<Vec<VersionExposure>, Error> {
        let rows: Vec<(i64, String, String, String, i64, i64, i64)> = sqlx::query_as(
            "SELECT version, actor_id, actor_name, interface, COUNT(*), MIN(at), MAX(at) \
             FROM audit_events \
             WHERE workspace_id = $1 AND secret_id = $2 AND action = $3 AND outcome = $4 \
               AND version IS NOT NULL AND actor_id IS NOT NULL AND actor_name IS NOT NULL \
             GROUP BY version, actor_id, actor_name, interface \
             ORDER BY version DESC, actor_id, interface",
        )
        .bind(workspace_id)
        .bind(secret_id)
        .bind(SECRET_READ)
        .bind(crate::audit::OK)
        .fetch_all(&mut *conn)
        .await
        .map_err(db_error::<DB>)?;
        let mut out: Vec<VersionExposure> = Vec::new();
        for (version, token_id, token_name, interface, count, first, last) in rows {
            match out.last_mut() {
                Some(e) if e.version == version && e.token_id == token_id => {
                    e.count += count;
                    e.first_at = e.first_at.min(first);
                    e.last_at = e.last_at.max(last);
                    e.interfaces.push(interface);
                }
                _ => out.push(VersionExposure {
                    version,
                    token_id,
                    token_name,
                    count,
                    first_at: first,
                    last_at: last,
                    interfaces: vec![interface],
                }),
            }
        }
        Ok(out)
    }

    /// The secrets whose current version the token `token_id` has read.
    pub(crate) async fn token_exposure(
        conn: &mut DB::Connection,
        workspace_id: &str,
        token_id: &str,
    ) -> Result<Vec<TokenExposure>, Error> {
        let rows: Vec<(String, String, String, i64, i64, i64)> = sqlx::query_as(
            "SELECT s.id, s.name, e.name, s.version, COUNT(*), MAX(a.at) \
             FROM audit_events a \
             JOIN secrets s ON s.id = a.secret_id AND s.version = a.version \
             JOIN environments e ON e.id = s.environment_id \
             WHERE a.workspace_id = $1 AND a.actor_id = $2 AND a.action = $3 AND a.outcome = $4 \
               AND s.name IS NOT NULL \
             GROUP BY s.id, s.name, e.name, s.version \
             ORDER BY e.name, s.name",
        )
        .bind(workspace_id)
        .bind(token_id)
        .bind(SECRET_READ)
        .bind(crate::audit::OK)
        .fetch_all(&mut *conn)
        .await
        .map_err(db_error::<DB>)?;
        Ok(rows
            .into_iter()
            .map(
                |(secret_id, secret_name, environment, version, count, last_at)| TokenExposure {
                    secret_id,
                    secret_name,
                    environment,
                    version,
                    count,
                    last_at,
                },
            )
            .collect())
    }

    /// A unique violation means the name is taken; anything else is the
    /// database's error.
    #[allow(clippy::needless_pass_by_value)] // by value to read as `.map_err(|e| ...)`
    fn name_taken(e: sqlx::Error, what: &str, name: &str) -> Error {
        if is_unique_violation(&e) {
            Error::already_exists(format!("{what} '{name}' already exists"))
        } else {
            db_error::<DB>(e)
        }
    }
}

/// The current version a new one is made from: the secret's metadata (its
/// number among them), and its contents when they open.
struct Head {
    summary: SecretSummary,
    contents: Option<EnvDict>,
}

impl Head {
    /// The head of a locked row. A current version that no longer opens is
    /// replaced all the same (overwrite, rollback); the key-level changes
    /// of the next version are then unknown.
    fn of(row: SecretRow, keyring: &Keyring) -> Self {
        let summary = row.summary();
        Head {
            summary,
            contents: row.open(keyring).ok().map(|s| s.contents),
        }
    }
}

impl From<Secret> for Head {
    fn from(secret: Secret) -> Self {
        Head {
            summary: secret.summary,
            contents: Some(secret.contents),
        }
    }
}

/// What the next version holds, and why.
struct Next {
    contents: EnvDict,
    action: VersionAction,
}

/// One version row to write.
struct NewVersion<'a> {
    workspace_id: &'a str,
    secret_id: &'a str,
    version: i64,
    created_at: Micros,
    author: &'a str,
    action: VersionAction,
    contents: &'a EnvDict,
    changes: Option<KeyChanges>,
}

/// Seals a secret's contents for one version of it.
fn seal(
    keyring: &Keyring,
    workspace_id: &str,
    secret_id: &str,
    version: i64,
    contents: &latchkey_core::EnvDict,
) -> Sealed {
    keyring.seal(
        Binding {
            workspace_id,
            secret_id,
            version,
        },
        contents,
    )
}

/// A row of [`Sql::lock_environments`]: ("e", id, workspace id, name, is
/// default, newest creation time) for an environment, ("n", id,
/// environment id, name, NULL, NULL) for a named secret.
type LockedRow = (String, String, String, String, Option<bool>, Option<Micros>);

/// Rows of one kind that a group writes ([`Sql::write_parts`]).
#[derive(Clone, Copy)]
enum Part<'a> {
    /// New secrets.
    Secrets(&'a [SecretInsertRow]),
    /// New versions.
    Versions(&'a [VersionInsertRow]),
    /// Secrets that were there before the group, and their new current
    /// version.
    CurrentVersions(&'a [(String, i64)]),
    /// Per secret, the newest version that falls out of what is kept: the
    /// rows up to it go, and with them the only copies of their wrapped
    /// data keys.
    DestroyedVersions(&'a [(String, i64)]),
}

impl<'a> Part<'a> {
    fn rows(&self) -> usize {
        match self {
            Part::Secrets(rows) => rows.len(),
            Part::Versions(rows) => rows.len(),
            Part::CurrentVersions(pairs) | Part::DestroyedVersions(pairs) => pairs.len(),
        }
    }

    /// Parameters per row.
    fn columns(&self) -> usize {
        match self {
            Part::Secrets(_) => 9,
            Part::Versions(_) => 11,
            Part::CurrentVersions(_) | Part::DestroyedVersions(_) => 2,
        }
    }

    fn params(&self) -> usize {
        self.rows() * self.columns()
    }

    /// The statement, its placeholders numbered from `first`.
    fn sql(&self, first: usize) -> String {
        let rows = self.rows();
        match self {
            Part::Secrets(_) => format!(
                "INSERT INTO secrets (id, workspace_id, environment_id, name, app_id, expires_at, \
                 created_at, created_by, version) VALUES {}",
                value_rows(first, rows, self.columns())
            ),
            Part::Versions(_) => format!(
                "INSERT INTO secret_versions (secret_id, version, created_at, created_by, action, \
                 source_version, keys, changes, key_id, wrapped_key, ciphertext) VALUES {}",
                value_rows(first, rows, self.columns())
            ),
            Part::CurrentVersions(_) => {
                let cases: String = (0..rows)
                    .map(|i| format!(" WHEN ${} THEN ${}", first + 2 * i, first + 2 * i + 1))
                    .collect();
                let ids: Vec<String> = (0..rows).map(|i| format!("${}", first + 2 * i)).collect();
                format!(
                    "UPDATE secrets SET version = CASE id{cases} END WHERE id IN ({})",
                    ids.join(", ")
                )
            }
            Part::DestroyedVersions(_) => {
                let which: Vec<String> = (0..rows)
                    .map(|i| {
                        format!(
                            "(secret_id = ${} AND version <= ${})",
                            first + 2 * i,
                            first + 2 * i + 1
                        )
                    })
                    .collect();
                format!("DELETE FROM secret_versions WHERE {}", which.join(" OR "))
            }
        }
    }

    /// The part in pieces that each bind at most `max_params` parameters.
    fn chunks(&self, max_params: usize) -> Vec<Part<'a>> {
        let per = (max_params / self.columns()).max(1);
        match *self {
            Part::Secrets(rows) => rows.chunks(per).map(Part::Secrets).collect(),
            Part::Versions(rows) => rows.chunks(per).map(Part::Versions).collect(),
            Part::CurrentVersions(pairs) => pairs.chunks(per).map(Part::CurrentVersions).collect(),
            Part::DestroyedVersions(pairs) => {
                pairs.chunks(per).map(Part::DestroyedVersions).collect()
            }
        }
    }
}

/// The most parameters one statement binds (SQLite's limit is 32,766,
/// PostgreSQL's 65,535): larger writes are split.
const MAX_PARAMETERS: usize = 32_000;

/// Names one statement looks up ([`Sql::secrets_named`]): one query each,
/// joined by `UNION ALL`, and SQLite allows 500 at most in one statement.
const NAMES_PER_STATEMENT: usize = 128;

/// Group statements of up to this many rows (or list items) stay prepared
/// on their connection, one statement per size: a group of a few writes,
/// the usual case, is then neither parsed nor planned again. Larger ones
/// are prepared for the one use, so that a connection holds a bounded
/// number of statements ([`STATEMENT_CACHE`]).
const PREPARED_ROWS: usize = 16;

/// Statements a connection keeps prepared: the fixed ones, and each group
/// statement at each size up to [`PREPARED_ROWS`].
pub(crate) const STATEMENT_CACHE: usize = 256;

/// Whether a group statement of `rows` rows stays prepared.
fn prepared(rows: usize) -> bool {
    rows <= PREPARED_ROWS
}

/// `n` queries joined by `UNION ALL`, each of one named secret: (id,
/// environment id, name), between `before` and `after`. Each binds three
/// parameters, from `$first` on: the workspace id and the environment's
/// reference ([`environment_named`]), then the secret's name.
fn named_arms(first: usize, n: usize, before: &str, after: &str) -> String {
    (0..n)
        .map(|i| {
            let at = first + 3 * i;
            format!(
                "SELECT {before}id, environment_id, name{after} FROM secrets \
                 WHERE environment_id = (SELECT e.id FROM environments e WHERE {}) \
                 AND name = ${}",
                environment_named("e.", at),
                at + 2
            )
        })
        .collect::<Vec<_>>()
        .join(" UNION ALL ")
}

/// The condition that an environment (its columns prefixed by `prefix`) is
/// the one of workspace `$first` that `$(first + 1)` names: its name, its
/// id, or "" for the workspace's default.
fn environment_named(prefix: &str, first: usize) -> String {
    let reference = first + 1;
    format!(
        "{prefix}workspace_id = ${first} AND (CASE WHEN ${reference} = '' THEN {prefix}is_default \
         ELSE ({prefix}name = ${reference} OR {prefix}id = ${reference}) END)"
    )
}

/// `$first, ..., $(first + n - 1)`.
fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `($first, ..., $(first + columns - 1)), ...`: `rows` rows of values.
fn value_rows(first: usize, rows: usize, columns: usize) -> String {
    (0..rows)
        .map(|row| format!("({})", placeholders(first + row * columns, columns)))
        .collect::<Vec<_>>()
        .join(", ")
}
