//! Secrets, named and anonymous.
//!
//! A lookup ([`Service::lookup_secret`]) answers from metadata (keys, never
//! values), so the check on every container start neither decrypts nor
//! writes; a delivery to a process ([`Service::resolve_secret`]) decrypts
//! and marks the secret used.

use latchkey_core::{
    rules,
    time::{now_micros, Micros},
    EnvDict, Error,
};
use latchkey_store::{NewSecret, OnConflict, Revision, LAST_USED_RESOLUTION};

use crate::{
    audit::Target, environments::check_environment_reference, Caller, CreateMode, Environment,
    Role, Secret, SecretKind, SecretSummary, SecretVersion, Service, MAX_PAGE,
};

/// The names of a lookup, checked before the store is asked.
fn check_lookup(name: &str, environment_name: &str) -> Result<(), Error> {
    rules::check_secret_name(name)?;
    check_environment_reference(environment_name)?;
    Ok(())
}

impl Service {
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
        self.audited(
            caller,
            "secret.info",
            Target::secret(environment_name, name),
            async {
                let summary = self
                    .find_secret(caller, environment_name, name, required_keys)
                    .await?;
                self.record_metadata_read(caller.audit("secret.info").about(&summary))
                    .await?;
                Ok(summary)
            },
        )
        .await
    }

    /// [`lookup_secret`](Self::lookup_secret) as a step of another
    /// operation: not recorded as a read of its own.
    pub(crate) async fn find_secret(
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
        self.checked(caller, environment_name, name, required_keys, found, |s| s)
            .await
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
        self.checked(caller, environment_name, name, required_keys, found, |s| {
            &s.summary
        })
        .await
    }

    /// What a lookup found, once the caller may use its environment and it
    /// holds `required_keys` (checked against its sorted key list, which
    /// values and metadata both carry); or NotFound saying which is
    /// missing: the environment, or the secret in it.
    async fn checked<T>(
        &self,
        caller: &Caller,
        environment_name: &str,
        name: &str,
        required_keys: &[String],
        found: Option<T>,
        summary: impl Fn(&T) -> &SecretSummary,
    ) -> Result<T, Error> {
        let Some(found) = found else {
            self.environment(caller, environment_name).await?;
            return Err(Error::not_found(format!("Secret '{name}' not found")));
        };
        let summary = summary(&found);
        caller.check_environment(&summary.environment_name)?;
        rules::check_required_keys_in_sorted(
            &summary.keys,
            required_keys.iter().map(String::as_str),
        )?;
        Ok(found)
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
        self.audited(
            caller,
            "secret.read",
            Target::secret(environment_name, name),
            async {
                let secret = self
                    .lookup_secret_values(caller, environment_name, name, required_keys)
                    .await?;
                self.record_read(caller, &secret.summary).await?;
                self.mark_delivered(caller, &secret.summary).await?;
                Ok(secret)
            },
        )
        .await
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
        self.audited(
            caller,
            "secret.create",
            Target::secret(environment_name, name),
            async {
                caller.require(Role::Developer, "create secrets")?;
                rules::check_secret_name(name)?;
                rules::check_env_dict(&contents)?;
                check_environment_reference(environment_name)?;
                // Nothing is half-written: contents that lack a required key are
                // refused before the store is touched. Only an existing secret
                // (kept by ReturnExisting) can then still satisfy the request.
                let keys = || required_keys.iter().map(String::as_str);
                if let Err(missing) = rules::check_required_keys(&contents, keys()) {
                    if mode != CreateMode::ReturnExisting {
                        // The environment's errors come first, as for a
                        // create that goes to the store.
                        self.environment(caller, environment_name).await?;
                        return Err(missing);
                    }
                    let env = self.environment(caller, environment_name).await?;
                    let existing = match self
                        .store
                        .secret_by_name(caller.workspace_id(), &env.id, name)
                        .await
                    {
                        Err(e) if e.kind() == latchkey_core::ErrorKind::NotFound => {
                            return Err(missing)
                        }
                        other => other?,
                    };
                    rules::check_required_keys(&existing.contents, keys())?;
                    return Ok((existing, false));
                }
                let (secret, created) = self
                    .store
                    .create_secret(&NewSecret {
                        workspace_id: caller.workspace_id().to_owned(),
                        // Found, and checked against the token, by the
                        // write's own transaction: no round trip before it.
                        environment: environment_name.to_owned(),
                        environments: caller.token().environments.clone(),
                        kind: SecretKind::Named(name.to_owned()),
                        created_by: caller.token().name.clone(),
                        contents,
                        on_conflict: mode,
                        keep_versions: self.config.keep_versions,
                        audit: caller.audit(""),
                    })
                    .await?;
                rules::check_required_keys(
                    &secret.contents,
                    required_keys.iter().map(String::as_str),
                )?;
                Ok((secret, created))
            },
        )
        .await
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
        self.audited(
            caller,
            "secret.create",
            Target::environment(environment_name),
            async {
                caller.require(Role::Developer, "create secrets")?;
                rules::check_env_dict(&contents)?;
                rules::check_required_keys(&contents, required_keys.iter().map(String::as_str))?;
                check_environment_reference(environment_name)?;
                let ttl = i64::try_from(self.config.anonymous_ttl.as_micros()).unwrap_or(i64::MAX);
                let (secret, _) = self
                    .store
                    .create_secret(&NewSecret {
                        workspace_id: caller.workspace_id().to_owned(),
                        environment: environment_name.to_owned(),
                        environments: caller.token().environments.clone(),
                        kind: SecretKind::Anonymous {
                            app_id,
                            expires_at: now_micros().saturating_add(ttl),
                        },
                        created_by: caller.token().name.clone(),
                        contents,
                        on_conflict: OnConflict::Fail,
                        keep_versions: self.config.keep_versions,
                        audit: caller.audit(""),
                    })
                    .await?;
                Ok(secret)
            },
        )
        .await
    }

    /// Named secrets of an environment, newest first.
    pub async fn list_secrets(
        &self,
        caller: &Caller,
        environment_name: &str,
        created_before: Option<Micros>,
        max_objects: Option<u32>,
    ) -> Result<(Environment, Vec<SecretSummary>), Error> {
        self.audited(
            caller,
            "secret.list",
            Target::environment(environment_name),
            async {
                let env = self.environment(caller, environment_name).await?;
                let limit = max_objects.unwrap_or(MAX_PAGE).min(MAX_PAGE);
                let items = self
                    .store
                    .list_secrets(caller.workspace_id(), &env.id, created_before, limit)
                    .await?;
                let mut event = caller.audit("secret.list");
                event.environment = Some(env.name.clone());
                self.record_metadata_read(event).await?;
                Ok((env, items))
            },
        )
        .await
    }

    /// A secret by id with its values, if the caller may see its
    /// environment: recorded as a read of its values.
    pub async fn secret(&self, caller: &Caller, secret_id: &str) -> Result<Secret, Error> {
        self.audited(caller, "secret.read", Target::secret_id(secret_id), async {
            let secret = self
                .store
                .secret_by_id(caller.workspace_id(), secret_id)
                .await?;
            caller.check_environment(&secret.summary.environment_name)?;
            self.record_read(caller, &secret.summary).await?;
            Ok(secret)
        })
        .await
    }

    /// A secret's metadata by id (its keys, never its values), if the
    /// caller may see its environment.
    pub async fn secret_metadata(
        &self,
        caller: &Caller,
        secret_id: &str,
    ) -> Result<SecretSummary, Error> {
        self.audited(caller, "secret.info", Target::secret_id(secret_id), async {
            let summary = self.secret_summary(caller, secret_id).await?;
            self.record_metadata_read(caller.audit("secret.info").about(&summary))
                .await?;
            Ok(summary)
        })
        .await
    }

    /// Merges `changes` into a secret like `dict.update` (`None` removes a
    /// key), as a new version. With `expected_version`, the update is
    /// refused (FailedPrecondition) unless that is the current version: a
    /// compare-and-swap in the store.
    pub async fn update_secret(
        &self,
        caller: &Caller,
        secret_id: &str,
        changes: &[(String, Option<String>)],
        expected_version: Option<i64>,
    ) -> Result<Secret, Error> {
        self.audited(
            caller,
            "secret.update",
            Target::secret_id(secret_id),
            async {
                caller.require(Role::Developer, "update secrets")?;
                for (key, value) in changes {
                    rules::check_key(key)?;
                    if let Some(value) = value {
                        rules::check_value(key, value)?;
                    }
                }
                // The store refuses a secret outside the caller's
                // environments in the update's own transaction (the
                // revision carries them): no read before the write.
                self.store
                    .update_secret(
                        caller.workspace_id(),
                        secret_id,
                        changes,
                        &self.revision(caller, expected_version),
                    )
                    .await
            },
        )
        .await
    }

    /// Makes a new version of a secret with the contents of its version
    /// `to`; refused when `to` is current or not kept.
    pub async fn rollback_secret(
        &self,
        caller: &Caller,
        secret_id: &str,
        to: i64,
        expected_version: Option<i64>,
    ) -> Result<Secret, Error> {
        self.audited(
            caller,
            "secret.rollback",
            Target::secret_id(secret_id),
            async {
                caller.require(Role::Developer, "roll back secrets")?;
                rules::check_version(to)?;
                self.secret_summary(caller, secret_id).await?;
                self.store
                    .rollback_secret(
                        caller.workspace_id(),
                        secret_id,
                        to,
                        &self.revision(caller, expected_version),
                    )
                    .await
            },
        )
        .await
    }

    /// Version `version` of a secret, with its values and its record.
    pub async fn secret_version(
        &self,
        caller: &Caller,
        secret_id: &str,
        version: i64,
    ) -> Result<(Secret, SecretVersion), Error> {
        self.audited(caller, "secret.read", Target::secret_id(secret_id), async {
            rules::check_version(version)?;
            self.secret_summary(caller, secret_id).await?;
            let found = self
                .store
                .secret_version(caller.workspace_id(), secret_id, version)
                .await?;
            self.record_read(caller, &found.0.summary).await?;
            Ok(found)
        })
        .await
    }

    /// The kept versions of a secret, newest first, numbered below `before`
    /// when given; never a value.
    pub async fn secret_history(
        &self,
        caller: &Caller,
        secret_id: &str,
        before: Option<i64>,
        max_objects: Option<u32>,
    ) -> Result<Vec<SecretVersion>, Error> {
        self.audited(caller, "secret.info", Target::secret_id(secret_id), async {
            let summary = self.secret_summary(caller, secret_id).await?;
            let limit = max_objects.unwrap_or(MAX_PAGE).min(MAX_PAGE);
            let history = self
                .store
                .secret_history(caller.workspace_id(), secret_id, before, limit)
                .await?;
            self.record_metadata_read(caller.audit("secret.info").about(&summary))
                .await?;
            Ok(history)
        })
        .await
    }

    /// Version `version` of a named secret with its values, for delivery to
    /// a process that starts now (`latchkey run --secret NAME@N`, a
    /// lockfile): required keys are checked against that version, and the
    /// secret is marked used.
    pub async fn resolve_secret_version(
        &self,
        caller: &Caller,
        environment_name: &str,
        name: &str,
        version: i64,
        required_keys: &[String],
    ) -> Result<Secret, Error> {
        self.audited(
            caller,
            "secret.read",
            Target::secret(environment_name, name),
            async {
                rules::check_version(version)?;
                let summary = self
                    .find_secret(caller, environment_name, name, &[])
                    .await?;
                let (secret, _) = self
                    .store
                    .secret_version(caller.workspace_id(), &summary.id, version)
                    .await?;
                rules::check_required_keys(
                    &secret.contents,
                    required_keys.iter().map(String::as_str),
                )?;
                self.record_read(caller, &secret.summary).await?;
                self.mark_delivered(caller, &secret.summary).await?;
                Ok(secret)
            },
        )
        .await
    }

    /// Who writes, and how many versions are kept: what every new version
    /// is made with.
    fn revision(&self, caller: &Caller, expected_version: Option<i64>) -> Revision {
        Revision {
            author: caller.token().name.clone(),
            keep_versions: self.config.keep_versions,
            expected_version,
            audit: caller.audit(""),
            environments: caller.token().environments.clone(),
        }
    }

    /// A secret's metadata by id (never decrypted), if the caller may see
    /// its environment.
    async fn secret_summary(
        &self,
        caller: &Caller,
        secret_id: &str,
    ) -> Result<SecretSummary, Error> {
        let secret = self
            .store
            .secret_summary_by_id(caller.workspace_id(), secret_id)
            .await?;
        caller.check_environment(&secret.environment_name)?;
        Ok(secret)
    }

    /// Deletes the secret `secret_id` for `caller`: the store checks it
    /// against the caller's environments in the delete's own transaction,
    /// as it does an update.
    async fn delete_in_store(&self, caller: &Caller, secret_id: &str) -> Result<(), Error> {
        self.store
            .delete_secret(
                caller.workspace_id(),
                secret_id,
                &caller.audit(""),
                caller.token().environments.as_deref(),
            )
            .await
    }

    /// Deletes a secret by id (even one whose contents no longer decrypt).
    pub async fn delete_secret(&self, caller: &Caller, secret_id: &str) -> Result<(), Error> {
        self.audited(
            caller,
            "secret.delete",
            Target::secret_id(secret_id),
            async {
                caller.require(Role::Developer, "delete secrets")?;
                self.delete_in_store(caller, secret_id).await
            },
        )
        .await
    }

    /// Deletes a named secret.
    pub async fn delete_secret_by_name(
        &self,
        caller: &Caller,
        environment_name: &str,
        name: &str,
    ) -> Result<(), Error> {
        self.audited(
            caller,
            "secret.delete",
            Target::secret(environment_name, name),
            async {
                caller.require(Role::Developer, "delete secrets")?;
                let secret = self
                    .find_secret(caller, environment_name, name, &[])
                    .await?;
                self.delete_in_store(caller, &secret.id).await
            },
        )
        .await
    }

    /// Records that a secret's values reach a process that starts now,
    /// unless its recorded use is recent enough already: the store keeps
    /// `last_used_at` to [`LAST_USED_RESOLUTION`], so a resolve of a secret
    /// used within that time need not wait for the writer.
    async fn mark_delivered(&self, caller: &Caller, secret: &SecretSummary) -> Result<(), Error> {
        let now = now_micros();
        let recent = secret
            .last_used_at
            .is_some_and(|at| now.saturating_sub(at) < LAST_USED_RESOLUTION);
        if recent {
            return Ok(());
        }
        self.store
            .mark_used(caller.workspace_id(), std::slice::from_ref(&secret.id), now)
            .await
    }

    /// Records that secrets' values reached a running process.
    pub async fn mark_used(&self, caller: &Caller, secret_ids: &[String]) -> Result<(), Error> {
        self.store
            .mark_used(caller.workspace_id(), secret_ids, now_micros())
            .await
    }

    /// Removes expired anonymous secrets.
    pub async fn sweep_expired(&self) -> Result<u64, Error> {
        self.store.sweep_expired(now_micros()).await
    }
}
