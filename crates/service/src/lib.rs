//! The service layer: every rule of DESIGN.md and every permission check, in
//! terms of the domain, independent of the wire.
//!
//! The gRPC adapter (and, later, the JSON API and the dashboard) only
//! translate requests into these calls and [`Error`]s into their own status
//! codes, so every interface enforces the same rules.

mod auth;
pub mod sandboxes;

use std::{sync::Arc, time::Duration};

pub use auth::{Caller, TOKEN_CACHE_TTL};
use latchkey_core::{
    ids, rules,
    time::{now_micros, Micros},
    EnvDict, Error,
};
use latchkey_store::{crypto::hash_token_secret, NewSecret, NewToken, OnConflict};
pub use latchkey_store::{
    Environment, EnvironmentUpdate, Role, Secret, SecretKind, SecretSummary, Store, Token,
};
use zeroize::Zeroizing;

/// Largest page a listing returns; larger requests are cut to this.
pub const MAX_PAGE: u32 = 1_000;

/// Settings of the service layer.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// How long anonymous secrets (`from_dict` and friends) live.
    pub anonymous_ttl: Duration,
    /// Where the admin token lies, for the hint in authentication errors.
    pub admin_token_hint: String,
}

/// The service layer. Cheap to clone.
#[derive(Clone)]
pub struct Service {
    store: Arc<dyn Store>,
    config: Arc<ServiceConfig>,
    tokens: Arc<auth::TokenCache>,
}

/// A token name: 1 to 64 characters of `[A-Za-z0-9._@-]`.
pub fn check_token_name(name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "Invalid token name: '{}': use 1 to 64 letters, digits, '.', '_', '@' and '-'",
            rules::echo(name)
        )))
    }
}

/// The names of a lookup, checked before the store is asked.
fn check_lookup(name: &str, environment_name: &str) -> Result<(), Error> {
    rules::check_secret_name(name)?;
    if !environment_name.is_empty() {
        rules::check_environment_name(environment_name)?;
    }
    Ok(())
}

/// How a named secret is created when its name exists.
pub use latchkey_store::OnConflict as CreateMode;

impl Service {
    /// A service over `store`.
    pub fn new(store: Arc<dyn Store>, config: ServiceConfig) -> Self {
        Self {
            store,
            config: Arc::new(config),
            tokens: Arc::new(auth::TokenCache::default()),
        }
    }

    /// The store, for readiness checks and the sweeper.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The environment named `name` (empty: the workspace default), if the
    /// caller may see it.
    pub async fn environment(&self, caller: &Caller, name: &str) -> Result<Environment, Error> {
        if !name.is_empty() {
            rules::check_environment_name(name)?;
        }
        let env = self.store.environment(caller.workspace_id(), name).await?;
        caller.check_environment(&env.name)?;
        Ok(env)
    }

    /// Looks up a named secret's metadata (its keys, never its values) and
    /// checks that it holds `required_keys`: the lookup on every container
    /// start, answered without decrypting when the store has it cached.
    pub async fn lookup_secret(
        &self,
        caller: &Caller,
        environment_name: &str,
        name: &str,
        required_keys: &[String],
    ) -> Result<SecretSummary, Error> {
        check_lookup(name, environment_name)?;
        let found = self
            .store
            .secret_summary_in_environment(caller.workspace_id(), environment_name, name)
            .await?;
        let summary = self.found(caller, environment_name, name, found).await?;
        caller.check_environment(&summary.environment_name)?;
        rules::check_required_keys_in_sorted(
            &summary.keys,
            required_keys.iter().map(String::as_str),
        )?;
        Ok(summary)
    }

    /// Looks up a named secret with its values and checks that it holds
    /// `required_keys`.
    async fn lookup_secret_values(
        &self,
        caller: &Caller,
        environment_name: &str,
        name: &str,
        required_keys: &[String],
    ) -> Result<Secret, Error> {
        check_lookup(name, environment_name)?;
        let found = self
            .store
            .secret_in_environment(caller.workspace_id(), environment_name, name)
            .await?;
        let secret = self.found(caller, environment_name, name, found).await?;
        caller.check_environment(&secret.summary.environment_name)?;
        rules::check_required_keys(&secret.contents, required_keys.iter().map(String::as_str))?;
        Ok(secret)
    }

    /// What a lookup found, or NotFound saying which is missing: the
    /// environment, or the secret in it.
    async fn found<T>(
        &self,
        caller: &Caller,
        environment_name: &str,
        name: &str,
        found: Option<T>,
    ) -> Result<T, Error> {
        match found {
            Some(found) => Ok(found),
            None => {
                self.environment(caller, environment_name).await?;
                Err(Error::not_found(format!("Secret '{name}' not found")))
            }
        }
    }

    /// Creates a named secret; `mode` says what happens when the name exists.
    /// Returns the secret and whether it was created.
    pub async fn create_secret(
        &self,
        caller: &Caller,
        environment_name: &str,
        name: &str,
        contents: EnvDict,
        mode: CreateMode,
        required_keys: &[String],
    ) -> Result<(Secret, bool), Error> {
        caller.require(Role::Developer, "create secrets")?;
        rules::check_secret_name(name)?;
        rules::check_env_dict(&contents)?;
        let env = self.environment(caller, environment_name).await?;
        // Nothing is half-written: contents that lack a required key are
        // refused before the store is touched. Only an existing secret
        // (kept by ReturnExisting) can then still satisfy the request.
        let keys = || required_keys.iter().map(String::as_str);
        if let Err(missing) = rules::check_required_keys(&contents, keys()) {
            if mode != CreateMode::ReturnExisting {
                return Err(missing);
            }
            let existing = match self
                .store
                .secret_by_name(caller.workspace_id(), &env.id, name)
                .await
            {
                Err(e) if e.kind() == latchkey_core::ErrorKind::NotFound => return Err(missing),
                other => other?,
            };
            rules::check_required_keys(&existing.contents, keys())?;
            return Ok((existing, false));
        }
        let (secret, created) = self
            .store
            .create_secret(&NewSecret {
                workspace_id: caller.workspace_id().to_owned(),
                environment_id: env.id,
                kind: SecretKind::Named(name.to_owned()),
                created_by: caller.token().name.clone(),
                contents,
                on_conflict: mode,
            })
            .await?;
        rules::check_required_keys(&secret.contents, required_keys.iter().map(String::as_str))?;
        Ok((secret, created))
    }

    /// Creates an anonymous secret, removed after the configured time to live.
    pub async fn create_anonymous_secret(
        &self,
        caller: &Caller,
        environment_name: &str,
        contents: EnvDict,
        app_id: Option<String>,
        required_keys: &[String],
    ) -> Result<Secret, Error> {
        caller.require(Role::Developer, "create secrets")?;
        rules::check_env_dict(&contents)?;
        rules::check_required_keys(&contents, required_keys.iter().map(String::as_str))?;
        let env = self.environment(caller, environment_name).await?;
        let ttl = i64::try_from(self.config.anonymous_ttl.as_micros()).unwrap_or(i64::MAX);
        let (secret, _) = self
            .store
            .create_secret(&NewSecret {
                workspace_id: caller.workspace_id().to_owned(),
                environment_id: env.id,
                kind: SecretKind::Anonymous {
                    app_id,
                    expires_at: now_micros().saturating_add(ttl),
                },
                created_by: caller.token().name.clone(),
                contents,
                on_conflict: OnConflict::Fail,
            })
            .await?;
        Ok(secret)
    }

    /// Named secrets of an environment, newest first.
    pub async fn list_secrets(
        &self,
        caller: &Caller,
        environment_name: &str,
        created_before: Option<Micros>,
        max_objects: Option<u32>,
    ) -> Result<(Environment, Vec<SecretSummary>), Error> {
        let env = self.environment(caller, environment_name).await?;
        let limit = max_objects.unwrap_or(MAX_PAGE).min(MAX_PAGE);
        let items = self
            .store
            .list_secrets(caller.workspace_id(), &env.id, created_before, limit)
            .await?;
        Ok((env, items))
    }

    /// A secret by id, if the caller may see its environment.
    pub async fn secret(&self, caller: &Caller, secret_id: &str) -> Result<Secret, Error> {
        let secret = self
            .store
            .secret_by_id(caller.workspace_id(), secret_id)
            .await?;
        caller.check_environment(&secret.summary.environment_name)?;
        Ok(secret)
    }

    /// Merges `changes` into a secret like `dict.update` (`None` removes a key).
    pub async fn update_secret(
        &self,
        caller: &Caller,
        secret_id: &str,
        changes: &[(String, Option<String>)],
    ) -> Result<Secret, Error> {
        caller.require(Role::Developer, "update secrets")?;
        for (key, value) in changes {
            rules::check_key(key)?;
            if let Some(value) = value {
                rules::check_value(key, value)?;
            }
        }
        self.secret(caller, secret_id).await?;
        self.store
            .update_secret(caller.workspace_id(), secret_id, changes)
            .await
    }

    /// Deletes a secret by id.
    pub async fn delete_secret(&self, caller: &Caller, secret_id: &str) -> Result<(), Error> {
        caller.require(Role::Developer, "delete secrets")?;
        self.secret(caller, secret_id).await?;
        self.store
            .delete_secret(caller.workspace_id(), secret_id)
            .await
    }

    /// Records that secrets' values reached a running process.
    pub async fn mark_used(&self, caller: &Caller, secret_ids: &[String]) -> Result<(), Error> {
        self.store
            .mark_used(caller.workspace_id(), secret_ids, now_micros())
            .await
    }

    /// The environments the caller may see, the default first.
    pub async fn list_environments(&self, caller: &Caller) -> Result<Vec<Environment>, Error> {
        let all = self.store.list_environments(caller.workspace_id()).await?;
        Ok(all
            .into_iter()
            .filter(|e| caller.check_environment(&e.name).is_ok())
            .collect())
    }

    /// Creates an environment.
    pub async fn create_environment(
        &self,
        caller: &Caller,
        name: &str,
    ) -> Result<Environment, Error> {
        caller.require_workspace_admin("create environments")?;
        rules::check_environment_name(name)?;
        self.store
            .create_environment(caller.workspace_id(), name)
            .await
    }

    /// The environment `name` (empty: the default), created first when
    /// `create` and it does not exist.
    pub async fn get_or_create_environment(
        &self,
        caller: &Caller,
        name: &str,
        create: bool,
    ) -> Result<Environment, Error> {
        match self.environment(caller, name).await {
            Err(e)
                if create && e.kind() == latchkey_core::ErrorKind::NotFound && !name.is_empty() =>
            {
                match self.create_environment(caller, name).await {
                    // Another request created it meanwhile.
                    Err(e) if e.kind() == latchkey_core::ErrorKind::AlreadyExists => {
                        self.environment(caller, name).await
                    }
                    other => other,
                }
            }
            other => other,
        }
    }

    /// Renames an environment or changes its webhook suffix.
    pub async fn update_environment(
        &self,
        caller: &Caller,
        current_name: &str,
        update: EnvironmentUpdate,
    ) -> Result<Environment, Error> {
        caller.require_workspace_admin("change environments")?;
        rules::check_environment_name(current_name)?;
        if let Some(name) = &update.name {
            rules::check_environment_name(name)?;
        }
        if let Some(suffix) = &update.webhook_suffix {
            if suffix.len() > 64
                || !suffix
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            {
                return Err(Error::invalid(format!(
                    "Invalid web suffix: '{}': use at most 64 letters, digits and '-'",
                    rules::echo(suffix)
                )));
            }
        }
        if let Some(new_name) = update.name.as_deref().filter(|n| *n != current_name) {
            // Token limits name environments: a rename would lock such tokens
            // out of theirs, or point them at another one.
            let tokens = self.store.list_tokens(caller.workspace_id()).await?;
            let bound: Vec<&str> = tokens
                .iter()
                .filter(|t| t.revoked_at.is_none())
                .filter(|t| {
                    t.environments
                        .as_ref()
                        .is_some_and(|e| e.iter().any(|n| n == current_name || n == new_name))
                })
                .map(|t| t.name.as_str())
                .collect();
            if !bound.is_empty() {
                return Err(Error::failed_precondition(format!(
                    "Environment '{current_name}' cannot be renamed to '{new_name}' while tokens \
                     are limited to either name ({}); revoke them first",
                    bound.join(", ")
                )));
            }
        }
        self.store
            .update_environment(caller.workspace_id(), current_name, &update)
            .await
    }

    /// Deletes an environment; with `with_secrets`, also the secrets in it.
    pub async fn delete_environment(
        &self,
        caller: &Caller,
        name: &str,
        with_secrets: bool,
    ) -> Result<(), Error> {
        caller.require_workspace_admin("delete environments")?;
        rules::check_environment_name(name)?;
        self.store
            .delete_environment(caller.workspace_id(), name, with_secrets)
            .await
    }

    /// A named secret with its values, for delivery to a process that starts
    /// now: required keys are checked and its `last_used_at` is updated.
    pub async fn resolve_secret(
        &self,
        caller: &Caller,
        environment_name: &str,
        name: &str,
        required_keys: &[String],
    ) -> Result<Secret, Error> {
        let secret = self
            .lookup_secret_values(caller, environment_name, name, required_keys)
            .await?;
        self.mark_used(caller, std::slice::from_ref(&secret.summary.id))
            .await?;
        Ok(secret)
    }

    /// Deletes a named secret.
    pub async fn delete_secret_by_name(
        &self,
        caller: &Caller,
        environment_name: &str,
        name: &str,
    ) -> Result<(), Error> {
        caller.require(Role::Developer, "delete secrets")?;
        let secret = self
            .lookup_secret(caller, environment_name, name, &[])
            .await?;
        self.store
            .delete_secret(caller.workspace_id(), &secret.id)
            .await
    }

    /// Creates a token in the caller's workspace. The returned secret is
    /// shown once and never stored.
    pub async fn create_token(
        &self,
        caller: &Caller,
        name: &str,
        role: Role,
        environments: Option<Vec<String>>,
    ) -> Result<(Token, Zeroizing<String>), Error> {
        caller.require_workspace_admin("create tokens")?;
        check_token_name(name)?;
        if let Some(envs) = &environments {
            if envs.is_empty() {
                return Err(Error::invalid(
                    "A token limited to environments needs at least one environment",
                ));
            }
            for env in envs {
                self.environment(caller, env).await?;
            }
        }
        let secret = Zeroizing::new(ids::new_token_secret());
        let token = self
            .store
            .create_token(&NewToken {
                id: ids::new_id(ids::TOKEN_ID),
                workspace_id: caller.workspace_id().to_owned(),
                name: name.to_owned(),
                role,
                environments,
                secret_hash: hash_token_secret(&secret),
            })
            .await?;
        Ok((token, secret))
    }

    /// The tokens of the caller's workspace.
    pub async fn list_tokens(&self, caller: &Caller) -> Result<Vec<Token>, Error> {
        caller.require_workspace_admin("list tokens")?;
        self.store.list_tokens(caller.workspace_id()).await
    }

    /// Revokes a token. The workspace's last active admin token cannot be
    /// revoked, so that a workspace is never left without one.
    pub async fn revoke_token(&self, caller: &Caller, token_id: &str) -> Result<(), Error> {
        caller.require_workspace_admin("revoke tokens")?;
        // The store refuses the workspace's last admin token, in the same
        // transaction as the revocation.
        self.store
            .revoke_token(caller.workspace_id(), token_id)
            .await?;
        self.tokens.forget(token_id);
        Ok(())
    }

    /// Removes expired anonymous secrets.
    pub async fn sweep_expired(&self) -> Result<u64, Error> {
        self.store.sweep_expired(now_micros()).await
    }
}
