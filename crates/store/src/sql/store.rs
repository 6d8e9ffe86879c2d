//! The one [`Store`] implementation, for every [`Engine`].
//!
//! Reads take a connection from the engine's reader; writes run through
//! [`Engine::write`] in one transaction on its writer, and forget what they
//! changed in the lookup cache after they commit. Lookups by name are
//! answered by the cache when the engine says it is current.

use async_trait::async_trait;
use latchkey_core::{time::Micros, Error};
use sqlx::{
    pool::PoolConnection, ColumnIndex, Decode, Encode, Executor, FromRow, IntoArguments, Pool,
    Transaction, Type,
};

use super::{
    db_error,
    queries::{SecretKey, Sql},
    Changed, Dialect, Engine, Pending,
};
use crate::{
    rows::{secret_not_found, EnvironmentRow, SecretRow, TokenRow, VersionRow, WorkspaceRow},
    Environment, EnvironmentUpdate, NewSecret, NewToken, Revision, Secret, SecretSummary,
    SecretVersion, Store, Token, TokenCredentials, Workspace,
};

async fn connection<DB: Dialect>(pool: &Pool<DB>) -> Result<PoolConnection<DB>, Error> {
    pool.acquire().await.map_err(db_error::<DB>)
}

async fn begin<DB: Dialect>(pool: &Pool<DB>) -> Result<Transaction<'static, DB>, Error> {
    pool.begin().await.map_err(db_error::<DB>)
}

/// A lookup by name, through the cache when the engine says it is current;
/// `$answer` is the cache's method that makes the answer (values, or
/// metadata only). A macro: a generic function would need the `where` clause
/// below once more.
macro_rules! named_lookup {
    ($store:ident, $lookup:expr, $answer:ident $(, $arg:expr)*) => {{
        let lookup = $lookup;
        $store
            .read(async {
                let current = $store.lookups_current().await;
                let read = async {
                    let mut conn = connection($store.reader()).await?;
                    Sql::<E::DB>::read_named(&mut conn, lookup).await
                };
                $store.cache().$answer($($arg,)* lookup, current, read).await
            })
            .await
    }};
}

// The `where` clause is that of [`Sql`]: what its statements need of the
// database, stated per type because the compiler does not carry it over.
#[async_trait]
impl<E> Store for E
where
    E: Engine,
    for<'c> &'c mut <E::DB as sqlx::Database>::Connection: Executor<'c, Database = E::DB>,
    for<'q> <E::DB as sqlx::Database>::Arguments<'q>: IntoArguments<'q, E::DB>,
    for<'q> &'q str: Encode<'q, E::DB> + Type<E::DB>,
    for<'q> &'q [u8]: Encode<'q, E::DB> + Type<E::DB>,
    for<'q> Vec<u8>: Encode<'q, E::DB> + Decode<'q, E::DB> + Type<E::DB>,
    for<'q> String: Encode<'q, E::DB> + Decode<'q, E::DB> + Type<E::DB>,
    for<'q> i64: Encode<'q, E::DB> + Decode<'q, E::DB> + Type<E::DB>,
    for<'q> bool: Encode<'q, E::DB> + Decode<'q, E::DB> + Type<E::DB>,
    for<'q> Option<&'q str>: Encode<'q, E::DB> + Type<E::DB>,
    for<'q> Option<String>: Encode<'q, E::DB> + Type<E::DB>,
    for<'q> Option<i64>: Encode<'q, E::DB> + Type<E::DB>,
    for<'q> Option<Vec<u8>>: Encode<'q, E::DB> + Type<E::DB>,
    usize: ColumnIndex<<E::DB as sqlx::Database>::Row>,
    for<'r> WorkspaceRow: FromRow<'r, <E::DB as sqlx::Database>::Row>,
    for<'r> EnvironmentRow: FromRow<'r, <E::DB as sqlx::Database>::Row>,
    for<'r> TokenRow: FromRow<'r, <E::DB as sqlx::Database>::Row>,
    for<'r> SecretRow: FromRow<'r, <E::DB as sqlx::Database>::Row>,
    for<'r> VersionRow: FromRow<'r, <E::DB as sqlx::Database>::Row>,
{
    async fn ping(&self) -> Result<(), Error> {
        self.probe(async {
            sqlx::query("SELECT 1")
                .execute(self.reader())
                .await
                .map(drop)
                .map_err(db_error::<E::DB>)
        })
        .await
    }

    async fn close(&self) {
        Engine::close(self).await;
    }

    async fn bootstrap(&self, admin: &NewToken) -> Result<bool, Error> {
        let admin = admin.clone();
        self.write(|store| async move {
            let mut tx = begin(store.writer()).await?;
            let created = Sql::<E::DB>::bootstrap(&mut tx, &admin).await?;
            Ok(Pending::new(tx, created, Changed::Nothing))
        })
        .await
    }

    async fn workspace(&self, id: &str) -> Result<Workspace, Error> {
        self.read(async {
            Sql::<E::DB>::workspace(&mut *connection(self.reader()).await?, id).await
        })
        .await
    }

    async fn list_environments(&self, workspace_id: &str) -> Result<Vec<Environment>, Error> {
        self.read(async {
            let mut conn = connection(self.reader()).await?;
            Sql::<E::DB>::list_environments(&mut conn, workspace_id).await
        })
        .await
    }

    async fn environment(&self, workspace_id: &str, name: &str) -> Result<Environment, Error> {
        self.read(async {
            let mut conn = connection(self.reader()).await?;
            Sql::<E::DB>::environment(&mut conn, workspace_id, name, false).await
        })
        .await
    }

    async fn create_environment(
        &self,
        workspace_id: &str,
        name: &str,
    ) -> Result<Environment, Error> {
        let (workspace_id, name) = (workspace_id.to_owned(), name.to_owned());
        self.write(|store| async move {
            let mut tx = begin(store.writer()).await?;
            let env = Sql::<E::DB>::create_environment(&mut tx, &workspace_id, &name).await?;
            Ok(Pending::new(tx, env, Changed::Nothing))
        })
        .await
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
        self.write(|store| async move {
            let mut tx = begin(store.writer()).await?;
            let env =
                Sql::<E::DB>::update_environment(&mut tx, &workspace_id, &current_name, &update)
                    .await?;
            // Lookups by the old name (and of the default) must miss now.
            Ok(Pending::new(tx, env, Changed::Environments))
        })
        .await
    }

    async fn delete_environment(
        &self,
        workspace_id: &str,
        name: &str,
        with_secrets: bool,
    ) -> Result<(), Error> {
        let (workspace_id, name) = (workspace_id.to_owned(), name.to_owned());
        self.write(move |store| async move {
            let mut tx = begin(store.writer()).await?;
            Sql::<E::DB>::delete_environment(&mut tx, &workspace_id, &name, with_secrets).await?;
            Ok(Pending::new(tx, (), Changed::Environments))
        })
        .await
    }

    async fn create_token(&self, token: &NewToken) -> Result<Token, Error> {
        let token = token.clone();
        self.write(|store| async move {
            let mut tx = begin(store.writer()).await?;
            let now = latchkey_core::time::now_micros();
            let created = Sql::<E::DB>::insert_token(&mut tx, &token, now).await?;
            Ok(Pending::new(tx, created, Changed::Nothing))
        })
        .await
    }

    async fn token_for_auth(
        &self,
        token_id: &str,
        now: Micros,
    ) -> Result<Option<TokenCredentials>, Error> {
        self.read(async {
            let mut conn = connection(self.reader()).await?;
            Sql::<E::DB>::token_for_auth(&mut conn, token_id, now, false).await
        })
        .await
    }

    async fn mark_token_used(&self, token_id: &str, at: Micros) -> Result<(), Error> {
        let token_id = token_id.to_owned();
        self.write(move |store| async move {
            let mut tx = begin(store.writer()).await?;
            Sql::<E::DB>::mark_token_used(&mut tx, &token_id, at).await?;
            Ok(Pending::new(tx, (), Changed::Nothing))
        })
        .await
    }

    async fn rotate_token(
        &self,
        workspace_id: &str,
        token_id: &str,
        secret_hash: &[u8; 32],
        grace_until: Option<Micros>,
    ) -> Result<Token, Error> {
        let (workspace_id, token_id, secret_hash) =
            (workspace_id.to_owned(), token_id.to_owned(), *secret_hash);
        self.write(move |store| async move {
            let mut tx = begin(store.writer()).await?;
            let now = latchkey_core::time::now_micros();
            let token = Sql::<E::DB>::rotate_token(
                &mut tx,
                &workspace_id,
                &token_id,
                &secret_hash,
                grace_until,
                now,
            )
            .await?;
            Ok(Pending::new(tx, token, Changed::Nothing))
        })
        .await
    }

    async fn list_tokens(&self, workspace_id: &str) -> Result<Vec<Token>, Error> {
        self.read(async {
            let mut conn = connection(self.reader()).await?;
            Sql::<E::DB>::list_tokens(&mut conn, workspace_id).await
        })
        .await
    }

    async fn revoke_token(&self, workspace_id: &str, token_id: &str) -> Result<(), Error> {
        let (workspace_id, token_id) = (workspace_id.to_owned(), token_id.to_owned());
        self.write(|store| async move {
            let mut tx = begin(store.writer()).await?;
            Sql::<E::DB>::revoke_token(&mut tx, &workspace_id, &token_id).await?;
            Ok(Pending::new(tx, (), Changed::Nothing))
        })
        .await
    }

    async fn create_secret(&self, new: &NewSecret) -> Result<(Secret, bool), Error> {
        let (row, created) = self.creates().create(new).await?;
        Ok((row.open(self.keyring())?, created))
    }

    async fn secret_by_name(
        &self,
        workspace_id: &str,
        environment_id: &str,
        name: &str,
    ) -> Result<Secret, Error> {
        let key = SecretKey::Name {
            environment_id,
            name,
        };
        self.read(async {
            let mut conn = connection(self.reader()).await?;
            Sql::<E::DB>::fetch_secret(&mut conn, workspace_id, key, false)
                .await?
                .ok_or_else(|| secret_not_found(name))?
                .open(self.keyring())
        })
        .await
    }

    async fn secret_in_environment(
        &self,
        workspace_id: &str,
        environment_name: &str,
        name: &str,
    ) -> Result<Option<Secret>, Error> {
        named_lookup!(
            self,
            (workspace_id, environment_name, name),
            secret,
            self.keyring()
        )
    }

    async fn secret_summary_in_environment(
        &self,
        workspace_id: &str,
        environment_name: &str,
        name: &str,
    ) -> Result<Option<SecretSummary>, Error> {
        named_lookup!(self, (workspace_id, environment_name, name), summary)
    }

    async fn secret_summary_by_id(
        &self,
        workspace_id: &str,
        secret_id: &str,
    ) -> Result<SecretSummary, Error> {
        self.read(async {
            let mut conn = connection(self.reader()).await?;
            Sql::<E::DB>::fetch_secret(&mut conn, workspace_id, SecretKey::Id(secret_id), false)
                .await?
                .map(|row| row.summary())
                .ok_or_else(|| secret_not_found(secret_id))
        })
        .await
    }

    async fn secret_by_id(&self, workspace_id: &str, secret_id: &str) -> Result<Secret, Error> {
        self.read(async {
            let mut conn = connection(self.reader()).await?;
            Sql::<E::DB>::fetch_secret(&mut conn, workspace_id, SecretKey::Id(secret_id), false)
                .await?
                .ok_or_else(|| secret_not_found(secret_id))?
                .open(self.keyring())
        })
        .await
    }

    async fn update_secret(
        &self,
        workspace_id: &str,
        secret_id: &str,
        changes: &[(String, Option<String>)],
        revision: &Revision,
    ) -> Result<Secret, Error> {
        let (workspace_id, secret_id, changes, revision) = (
            workspace_id.to_owned(),
            secret_id.to_owned(),
            changes.to_vec(),
            revision.clone(),
        );
        self.write(|store| async move {
            let mut tx = begin(store.writer()).await?;
            let secret = Sql::<E::DB>::update_secret(
                &mut tx,
                store.keyring(),
                &workspace_id,
                &secret_id,
                &changes,
                &revision,
            )
            .await?;
            Ok(Pending::new(tx, secret, Changed::secret(&secret_id)))
        })
        .await
    }

    async fn rollback_secret(
        &self,
        workspace_id: &str,
        secret_id: &str,
        to: i64,
        revision: &Revision,
    ) -> Result<Secret, Error> {
        let (workspace_id, secret_id, revision) = (
            workspace_id.to_owned(),
            secret_id.to_owned(),
            revision.clone(),
        );
        self.write(move |store| async move {
            let mut tx = begin(store.writer()).await?;
            let secret = Sql::<E::DB>::rollback_secret(
                &mut tx,
                store.keyring(),
                &workspace_id,
                &secret_id,
                to,
                &revision,
            )
            .await?;
            Ok(Pending::new(tx, secret, Changed::secret(&secret_id)))
        })
        .await
    }

    async fn secret_version(
        &self,
        workspace_id: &str,
        secret_id: &str,
        version: i64,
    ) -> Result<(Secret, SecretVersion), Error> {
        self.read(async {
            let mut conn = connection(self.reader()).await?;
            Sql::<E::DB>::secret_version(
                &mut conn,
                self.keyring(),
                workspace_id,
                secret_id,
                version,
            )
            .await
        })
        .await
    }

    async fn secret_history(
        &self,
        workspace_id: &str,
        secret_id: &str,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<SecretVersion>, Error> {
        self.read(async {
            let mut conn = connection(self.reader()).await?;
            Sql::<E::DB>::secret_history(&mut conn, workspace_id, secret_id, before, limit).await
        })
        .await
    }

    async fn delete_secret(&self, workspace_id: &str, secret_id: &str) -> Result<(), Error> {
        let (workspace_id, secret_id) = (workspace_id.to_owned(), secret_id.to_owned());
        self.write(|store| async move {
            let mut tx = begin(store.writer()).await?;
            Sql::<E::DB>::delete_secret(&mut tx, &workspace_id, &secret_id).await?;
            Ok(Pending::new(tx, (), Changed::secret(&secret_id)))
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
        self.read(async {
            let mut conn = connection(self.reader()).await?;
            Sql::<E::DB>::list_secrets(
                &mut conn,
                workspace_id,
                environment_id,
                created_before,
                limit,
            )
            .await
            .map(|rows| rows.iter().map(SecretRow::summary).collect())
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
        let workspace_id = workspace_id.to_owned();
        let mut ids = secret_ids.to_vec();
        ids.sort();
        ids.dedup();
        self.write(move |store| async move {
            let mut tx = begin(store.writer()).await?;
            let changed = Sql::<E::DB>::mark_used(&mut tx, &workspace_id, &ids, at).await?;
            // `last_used_at` is part of what a lookup returns.
            let changed = Changed::Secrets(changed.into_iter().map(str::to_owned).collect());
            Ok(Pending::new(tx, (), changed))
        })
        .await
    }

    fn backup(&self) -> tokio::sync::mpsc::Receiver<Result<Vec<u8>, crate::copy::CopyError>> {
        crate::backup::take(Engine::raw(self))
    }

    async fn sweep_expired(&self, now: Micros) -> Result<u64, Error> {
        self.write(move |store| async move {
            let mut tx = begin(store.writer()).await?;
            let removed = Sql::<E::DB>::sweep_expired(&mut tx, now).await?;
            if removed.is_none() {
                tracing::debug!("another replica is sweeping; skipping this turn");
            }
            // Anonymous secrets are never in the cache of named lookups.
            Ok(Pending::new(tx, removed.unwrap_or(0), Changed::Nothing))
        })
        .await
    }
}
