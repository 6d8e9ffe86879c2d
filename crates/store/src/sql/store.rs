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
    batch::{Write, Written},
    db_error,
    queries::{SecretKey, Sql},
    Changed, Dialect, Engine, Pending,
};
use crate::{
    audit::{
        AuditEntry, AuditEvent, AuditFilter, AuditHead, TokenExposure, Verdict, VersionExposure,
    },
    rows::{
        secret_not_found, AuditRow, EnvironmentRow, SecretRow, TokenRow, VersionRow, WorkspaceRow,
    },
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
    for<'r> AuditRow: FromRow<'r, <E::DB as sqlx::Database>::Row>,
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
            if created {
                let mut event = AuditEntry::server().action("token.create");
                event.workspace_id = Some(admin.workspace_id.clone());
                event.detail = Some(token_detail(&admin.id, &admin.name, admin.role));
                Sql::<E::DB>::append_events(&mut tx, store.keyring(), &[event]).await?;
            }
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
        audit: &AuditEntry,
    ) -> Result<Environment, Error> {
        let (workspace_id, name) = (workspace_id.to_owned(), name.to_owned());
        let audit = audit.clone().action("environment.create");
        self.write(|store| async move {
            let mut tx = begin(store.writer()).await?;
            let env = Sql::<E::DB>::create_environment(&mut tx, &workspace_id, &name).await?;
            let event = in_environment(audit, &env);
            Sql::<E::DB>::append_events(&mut tx, store.keyring(), &[event]).await?;
            Ok(Pending::new(tx, env, Changed::Nothing))
        })
        .await
    }

    async fn update_environment(
        &self,
        workspace_id: &str,
        current_name: &str,
        update: &EnvironmentUpdate,
        audit: &AuditEntry,
    ) -> Result<Environment, Error> {
        let (workspace_id, current_name, update) = (
            workspace_id.to_owned(),
            current_name.to_owned(),
            update.clone(),
        );
        let mut audit = audit.clone().action("environment.update");
        self.write(|store| async move {
            let mut tx = begin(store.writer()).await?;
            let env =
                Sql::<E::DB>::update_environment(&mut tx, &workspace_id, &current_name, &update)
                    .await?;
            if env.name != current_name
                && !current_name.starts_with(latchkey_core::ids::ENVIRONMENT)
            {
                audit.detail = Some(format!("renamed from '{current_name}'"));
            }
            let event = in_environment(audit, &env);
            Sql::<E::DB>::append_events(&mut tx, store.keyring(), &[event]).await?;
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
        audit: &AuditEntry,
    ) -> Result<(), Error> {
        let (workspace_id, name) = (workspace_id.to_owned(), name.to_owned());
        let audit = audit.clone().action("environment.delete");
        self.write(move |store| async move {
            let mut tx = begin(store.writer()).await?;
            let env = Sql::<E::DB>::delete_environment(&mut tx, &workspace_id, &name, with_secrets)
                .await?;
            let event = in_environment(audit, &env);
            Sql::<E::DB>::append_events(&mut tx, store.keyring(), &[event]).await?;
            Ok(Pending::new(tx, (), Changed::Environments))
        })
        .await
    }

    async fn create_token(&self, token: &NewToken, audit: &AuditEntry) -> Result<Token, Error> {
        let token = token.clone();
        let mut audit = audit.clone().action("token.create");
        audit.detail = Some(token_detail(&token.id, &token.name, token.role));
        self.write(|store| async move {
            let mut tx = begin(store.writer()).await?;
            let now = latchkey_core::time::now_micros();
            let created = Sql::<E::DB>::insert_token(&mut tx, &token, now).await?;
            Sql::<E::DB>::append_events(&mut tx, store.keyring(), &[audit]).await?;
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
        audit: &AuditEntry,
    ) -> Result<Token, Error> {
        let (workspace_id, token_id, secret_hash) =
            (workspace_id.to_owned(), token_id.to_owned(), *secret_hash);
        let mut audit = audit.clone().action("token.rotate");
        audit.detail = Some(match grace_until {
            Some(until) => format!(
                "token {token_id}; its old secret accepted until {}",
                latchkey_core::time::Timestamp::from_micros(until)
            ),
            None => format!("token {token_id}; its old secret refused at once"),
        });
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
            Sql::<E::DB>::append_events(&mut tx, store.keyring(), &[audit]).await?;
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

    async fn revoke_token(
        &self,
        workspace_id: &str,
        token_id: &str,
        audit: &AuditEntry,
    ) -> Result<(), Error> {
        let (workspace_id, token_id) = (workspace_id.to_owned(), token_id.to_owned());
        let mut audit = audit.clone().action("token.revoke");
        audit.detail = Some(format!("token {token_id}"));
        self.write(|store| async move {
            let mut tx = begin(store.writer()).await?;
            Sql::<E::DB>::revoke_token(&mut tx, &workspace_id, &token_id).await?;
            Sql::<E::DB>::append_events(&mut tx, store.keyring(), &[audit]).await?;
            Ok(Pending::new(tx, (), Changed::Nothing))
        })
        .await
    }

    async fn create_secret(&self, new: &NewSecret) -> Result<(Secret, bool), Error> {
        match self.writes().submit(Write::Create(new.clone())).await? {
            Written::Created(secret, created) => Ok((secret, created)),
            other => Err(unexpected(&other)),
        }
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
        let write = Write::Update {
            workspace_id: workspace_id.to_owned(),
            secret_id: secret_id.to_owned(),
            changes: changes.to_vec(),
            revision: revision.clone(),
        };
        match self.writes().submit(write).await? {
            Written::Updated(secret) => Ok(secret),
            other => Err(unexpected(&other)),
        }
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
            let mut event = revision
                .audit
                .clone()
                .action("secret.rollback")
                .about(&secret.summary);
            event.detail = Some(format!("to the contents of version {to}"));
            Sql::<E::DB>::append_events(&mut tx, store.keyring(), &[event]).await?;
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

    async fn delete_secret(
        &self,
        workspace_id: &str,
        secret_id: &str,
        audit: &AuditEntry,
        environments: Option<&[String]>,
    ) -> Result<(), Error> {
        let write = Write::Delete {
            workspace_id: workspace_id.to_owned(),
            secret_id: secret_id.to_owned(),
            audit: audit.clone(),
            environments: environments.map(<[String]>::to_vec),
        };
        match self.writes().submit(write).await? {
            Written::Deleted => Ok(()),
            other => Err(unexpected(&other)),
        }
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

    async fn record(&self, entries: &[AuditEntry]) -> Result<AuditHead, Error> {
        self.events().submit(entries.to_vec()).await
    }

    async fn audit_head(&self) -> Result<AuditHead, Error> {
        self.read(async {
            let mut conn = connection(self.reader()).await?;
            Sql::<E::DB>::audit_head(&mut conn).await
        })
        .await
    }

    async fn audit_events(
        &self,
        workspace_id: &str,
        filter: &AuditFilter,
        limit: u32,
    ) -> Result<Vec<AuditEvent>, Error> {
        self.read(async {
            let mut conn = connection(self.reader()).await?;
            Sql::<E::DB>::audit_events(&mut conn, workspace_id, filter, limit).await
        })
        .await
    }

    async fn audit_verify(&self) -> Result<Verdict, Error> {
        // One snapshot for the walk and the head: a transaction that only
        // reads (on PostgreSQL, repeatable read), outside the time bound of
        // ordinary reads, as a long log takes a while.
        let mut tx = begin(self.reader()).await?;
        if let Some(snapshot) = E::DB::SNAPSHOT {
            sqlx::query(snapshot)
                .execute(&mut *tx)
                .await
                .map_err(db_error::<E::DB>)?;
        }
        let verdict = Sql::<E::DB>::audit_verify(&mut tx, self.keyring()).await?;
        tx.rollback().await.map_err(db_error::<E::DB>)?;
        Ok(verdict)
    }

    async fn audit_retain(&self, before: Micros, audit: &AuditEntry) -> Result<u64, Error> {
        let audit = audit.clone();
        self.write(move |store| async move {
            let mut tx = begin(store.writer()).await?;
            let removed =
                Sql::<E::DB>::audit_retain(&mut tx, store.keyring(), before, audit).await?;
            Ok(Pending::new(tx, removed, Changed::Nothing))
        })
        .await
    }

    async fn rotate_master_key(
        &self,
        new: crate::crypto::MasterKey,
        batch: u32,
        progress: &(dyn Fn(crate::RotationProgress) + Send + Sync),
    ) -> Result<crate::RotationProgress, Error> {
        if batch == 0 {
            return Err(Error::invalid("the rotation batch size must be at least 1"));
        }
        // From here every new row is sealed under the new key, so only the
        // rows already there need rewrapping.
        self.keyring().rotate_to(new)?;
        let total = self
            .read(async {
                let mut conn = connection(self.reader()).await?;
                Sql::<E::DB>::count_not_rewrapped(&mut conn, self.keyring()).await
            })
            .await?;
        let mut state = crate::RotationProgress { done: 0, total };
        progress(state);
        loop {
            let done = self
                .write(move |store| async move {
                    let mut tx = begin(store.writer()).await?;
                    let (found, ids) =
                        Sql::<E::DB>::rewrap_batch(&mut tx, store.keyring(), batch).await?;
                    let done = (found, ids.len() as u64);
                    Ok(Pending::new(tx, done, Changed::Secrets(ids)))
                })
                .await?;
            let (found, done) = done;
            if found == 0 {
                break;
            }
            state.done += done;
            // Rows sealed under the old key by writes that began before the
            // rotation may add to the total.
            state.total = state.total.max(state.done);
            progress(state);
        }
        // The last transaction rewraps whatever such writes committed since,
        // then moves the store's records to the new key.
        let late = self
            .write(move |store| async move {
                let mut tx = begin(store.writer()).await?;
                let mut late = 0u64;
                loop {
                    let (found, ids) =
                        Sql::<E::DB>::rewrap_batch(&mut tx, store.keyring(), batch).await?;
                    if found == 0 {
                        break;
                    }
                    late += ids.len() as u64;
                }
                Sql::<E::DB>::replace_key_meta(&mut tx, store.keyring()).await?;
                Ok(Pending::new(tx, late, Changed::Environments))
            })
            .await?;
        if let Some(checkpoint) = E::DB::CHECKPOINT {
            // The next start checks the key against the file alone.
            sqlx::query(checkpoint)
                .execute(self.writer())
                .await
                .map_err(db_error::<E::DB>)?;
        }
        self.keyring().forget_previous();
        state.done += late;
        state.total = state.total.max(state.done);
        progress(state);
        Ok(state)
    }

    async fn secret_exposure(
        &self,
        workspace_id: &str,
        secret_id: &str,
    ) -> Result<Vec<VersionExposure>, Error> {
        self.read(async {
            let mut conn = connection(self.reader()).await?;
            Sql::<E::DB>::secret_exposure(&mut conn, workspace_id, secret_id).await
        })
        .await
    }

    async fn token_exposure(
        &self,
        workspace_id: &str,
        token_id: &str,
    ) -> Result<Vec<TokenExposure>, Error> {
        self.read(async {
            let mut conn = connection(self.reader()).await?;
            Sql::<E::DB>::token_exposure(&mut conn, workspace_id, token_id).await
        })
        .await
    }
}

/// A group answered a write with the answer of another kind of write: a
/// bug, reported rather than trusted.
fn unexpected(written: &Written) -> Error {
    tracing::error!(?written, "a group of writes answered out of kind");
    Error::internal("The secret store answered a write out of kind")
}

/// An event about the environment `env`.
fn in_environment(mut audit: AuditEntry, env: &Environment) -> AuditEntry {
    audit.environment = Some(env.name.clone());
    audit
}

/// What a token event says of the token: never its secret.
fn token_detail(id: &str, name: &str, role: crate::Role) -> String {
    format!("token {id} ('{name}', role {})", role.as_str())
}
