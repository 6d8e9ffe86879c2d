//! Environments: workspace-wide admin work (create, rename, delete), and
//! [`Service::environment`], which resolves a name for the secret calls and
//! stops a token limited to other environments.

use latchkey_core::{rules, Error};

use crate::{audit::Target, Caller, Environment, EnvironmentUpdate, Service};

/// An environment as a request names it: its name, its id, or "" for the
/// default.
pub(crate) fn check_environment_reference(reference: &str) -> Result<(), Error> {
    if reference.is_empty() {
        Ok(())
    } else {
        rules::check_environment_reference(reference)
    }
}

impl Service {
    /// The environment named `name` (empty: the workspace default), if the
    /// caller may see it.
    pub async fn environment(&self, caller: &Caller, name: &str) -> Result<Environment, Error> {
        check_environment_reference(name)?;
        let env = self.store.environment(caller.workspace_id(), name).await?;
        caller.check_environment(&env.name)?;
        Ok(env)
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
        self.audited(
            caller,
            "environment.create",
            Target::environment(name),
            async {
                caller.require_workspace_admin("create environments")?;
                rules::check_environment_name(name)?;
                self.store
                    .create_environment(caller.workspace_id(), name, &caller.audit(""))
                    .await
            },
        )
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
        self.audited(
            caller,
            "environment.update",
            Target::environment(current_name),
            async {
                caller.require_workspace_admin("change environments")?;
                rules::check_environment_reference(current_name)?;
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
                // The environment may be named by its id: the checks below compare
                // names, so they take its name.
                let env = self
                    .store
                    .environment(caller.workspace_id(), current_name)
                    .await?;
                let current_name = env.name.as_str();
                if let Some(new_name) = update.name.as_deref().filter(|n| *n != current_name) {
                    // Token limits name environments: a rename would lock such tokens
                    // out of theirs, or point them at another one.
                    let tokens = self.store.list_tokens(caller.workspace_id()).await?;
                    let bound: Vec<&str> = tokens
                        .iter()
                        .filter(|t| t.revoked_at.is_none())
                        .filter(|t| {
                            t.environments.as_ref().is_some_and(|e| {
                                e.iter().any(|n| n == current_name || n == new_name)
                            })
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
                    .update_environment(
                        caller.workspace_id(),
                        current_name,
                        &update,
                        &caller.audit(""),
                    )
                    .await
            },
        )
        .await
    }

    /// Deletes an environment; with `with_secrets`, also the secrets in it.
    pub async fn delete_environment(
        &self,
        caller: &Caller,
        name: &str,
        with_secrets: bool,
    ) -> Result<(), Error> {
        self.audited(
            caller,
            "environment.delete",
            Target::environment(name),
            async {
                caller.require_workspace_admin("delete environments")?;
                rules::check_environment_reference(name)?;
                self.store
                    .delete_environment(
                        caller.workspace_id(),
                        name,
                        with_secrets,
                        &caller.audit(""),
                    )
                    .await
            },
        )
        .await
    }
}
