//! What one group of writes does, decided in memory.
//!
//! A group ([`super::group`]) runs in one transaction with a fixed number of
//! statements whatever its size: it locks what it needs and reads it
//! ([`Sql::write_group`](super::queries::Sql::write_group)), this module's
//! [`Plan`] applies every write to what was read, in the order the writes
//! came, and the transaction then writes the outcome with one multi-row
//! statement per kind of row (on PostgreSQL, one statement for all of
//! them). Round trips per group, not per write, are
//! what lets a group of many writes cost about what one write costs.
//!
//! Each write sees the ones before it in its group as if they had
//! committed: a second create of a name finds the first, an update builds on
//! the version the previous update of the secret made. A write that is
//! refused (a name taken, a secret gone, a version that moved) fails alone
//! and changes nothing; the others go on.

use std::collections::{BTreeSet, HashMap};

use latchkey_core::{ids, rules, time::Micros, EnvDict, Error};

use crate::{
    audit::AuditEntry,
    crypto::{Binding, Keyring, Sealed},
    rows::{environment_not_found, key_list_column, secret_not_found, SecretInsert, SecretRow},
    KeyChanges, NewSecret, OnConflict, Revision, Secret, SecretKind, SecretSummary, VersionAction,
};

/// The current time in microseconds, strictly later than every time this
/// process answered before. The groups of writes a replica has in flight
/// read the newest creation time of an environment before either commits;
/// this clock keeps the times they give apart (the unique index of
/// creation times stays the last word: a collision with another replica
/// runs the group again).
pub(crate) fn unique_micros() -> Micros {
    use std::sync::atomic::{AtomicI64, Ordering};
    static LAST: AtomicI64 = AtomicI64::new(0);
    let now = latchkey_core::time::now_micros();
    let next = |last: Micros| now.max(last + 1);
    match LAST.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| {
        Some(next(last))
    }) {
        Ok(last) | Err(last) => next(last),
    }
}

/// One write committed in a group.
#[derive(Debug, Clone)]
pub(crate) enum Write {
    /// Create a secret (or act on the existing one as `on_conflict` says).
    Create(NewSecret),
    /// Merge changes into a secret as a new version.
    Update {
        workspace_id: String,
        secret_id: String,
        changes: Vec<(String, Option<String>)>,
        revision: Revision,
    },
    /// Delete a secret.
    Delete {
        workspace_id: String,
        secret_id: String,
        audit: AuditEntry,
        /// Those the deleting token may use (`None`: all).
        environments: Option<Vec<String>>,
    },
}

/// What a write answers once its group committed.
#[derive(Debug)]
pub(crate) enum Written {
    /// The secret created (true), or the existing one, returned or
    /// overwritten (false).
    Created(Secret, bool),
    /// The secret at its new version.
    Updated(Secret),
    /// The secret is gone.
    Deleted,
}

/// An environment a group's creates use, as locked: (id, workspace id,
/// name, whether it is the default, the newest creation time of its named
/// secrets).
pub(crate) type EnvironmentLock = (String, String, String, bool, Option<Micros>);

/// How a create names its environment: (workspace id, the environment's
/// id, its name, or "" for the default; see [`NewSecret::environment`]).
pub(crate) type EnvironmentRef<'a> = (&'a str, &'a str);

/// Whether the environment `env` is the one `reference` names.
fn names_environment(env: &EnvironmentLock, (workspace_id, reference): EnvironmentRef<'_>) -> bool {
    let (id, workspace, name, is_default, _) = env;
    workspace == workspace_id
        && if reference.is_empty() {
            *is_default
        } else {
            name == reference || id == reference
        }
}

/// A named secret found by the name of a create: (id, environment id,
/// name).
pub(crate) type NameFound = (String, String, String);

/// A new secret row.
pub(crate) struct SecretInsertRow {
    pub(crate) id: String,
    pub(crate) workspace_id: String,
    pub(crate) environment_id: String,
    pub(crate) name: Option<String>,
    pub(crate) app_id: Option<String>,
    pub(crate) expires_at: Option<Micros>,
    pub(crate) created_at: Micros,
    pub(crate) created_by: String,
    /// Its current version once the group is done.
    pub(crate) version: i64,
}

/// A new version row, sealed.
pub(crate) struct VersionInsertRow {
    pub(crate) secret_id: String,
    pub(crate) version: i64,
    pub(crate) created_at: Micros,
    pub(crate) created_by: String,
    pub(crate) action: VersionAction,
    pub(crate) keys: String,
    pub(crate) changes: Option<String>,
    pub(crate) sealed: Sealed,
}

/// What a group writes, and what each of its writes answers.
pub(crate) struct Outcome {
    /// One per write, in the order the writes came.
    pub(crate) results: Vec<Result<Written, Error>>,
    /// Secrets to delete (their versions go with them).
    pub(crate) deletes: Vec<String>,
    /// Secrets to insert.
    pub(crate) secrets: Vec<SecretInsertRow>,
    /// Versions to insert.
    pub(crate) versions: Vec<VersionInsertRow>,
    /// Secrets that were there before the group, and their new current
    /// version.
    pub(crate) current: Vec<(String, i64)>,
    /// Per secret, the newest version that falls out of what is kept.
    pub(crate) destroyed: Vec<(String, i64)>,
    /// The group's audit events, in order.
    pub(crate) events: Vec<AuditEntry>,
    /// Secrets whose lookups the cache must forget.
    pub(crate) changed: Vec<String>,
}

/// The writes of one group, and what they need read and locked.
pub(crate) struct Plan<'a> {
    writes: &'a [Write],
}

impl<'a> Plan<'a> {
    pub(crate) fn new(writes: &'a [Write]) -> Self {
        Plan { writes }
    }

    fn creates(&self) -> impl Iterator<Item = &'a NewSecret> {
        self.writes.iter().filter_map(|w| match w {
            Write::Create(new) => Some(new),
            _ => None,
        })
    }

    /// The environments the creates go to, as they name them, sorted. The
    /// group locks their rows in the order of their ids, so two groups never
    /// wait on each other.
    pub(crate) fn environments(&self) -> Vec<EnvironmentRef<'a>> {
        self.creates()
            .map(|new| (new.workspace_id.as_str(), new.environment.as_str()))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    }

    /// The names of the named creates, each with its environment as the
    /// create names it, sorted.
    pub(crate) fn names(&self) -> Vec<(EnvironmentRef<'a>, &'a str)> {
        self.creates()
            .filter_map(|new| match &new.kind {
                SecretKind::Named(name) => Some((
                    (new.workspace_id.as_str(), new.environment.as_str()),
                    name.as_str(),
                )),
                SecretKind::Anonymous { .. } => None,
            })
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    }

    /// The secrets the group changes that exist before it, sorted (the
    /// order they are locked in): those updated and deleted, and those a
    /// create would overwrite, among `found` (what the creates' names
    /// found in the `environments` locked).
    pub(crate) fn locked_ids(
        &self,
        environments: &[EnvironmentLock],
        found: &[NameFound],
    ) -> Vec<String> {
        let by_name: HashMap<(&str, &str), &str> = found
            .iter()
            .map(|(id, env, name)| ((env.as_str(), name.as_str()), id.as_str()))
            .collect();
        let overwritten = self
            .creates()
            .filter_map(|new| match (&new.kind, new.on_conflict) {
                (SecretKind::Named(name), OnConflict::Overwrite) => {
                    let env = environment_of(environments, new)?;
                    by_name.get(&(env.0.as_str(), name.as_str())).copied()
                }
                _ => None,
            });
        let changed = self.writes.iter().filter_map(|w| match w {
            Write::Update { secret_id, .. } | Write::Delete { secret_id, .. } => {
                Some(secret_id.as_str())
            }
            Write::Create(_) => None,
        });
        sorted(overwritten.chain(changed))
            .into_iter()
            .map(str::to_owned)
            .collect()
    }

    /// Applies every write, in order, to what the group read: the
    /// environments it locked (with the newest creation time of each one's
    /// named secrets), what the creates' names found (`found`), and the
    /// rows of the secrets it locked and of those found (`rows`, read after
    /// the locks; a secret found by name and gone since has freed its
    /// name).
    pub(crate) fn run(
        self,
        keyring: &Keyring,
        now: impl Fn() -> Micros,
        environments: &[EnvironmentLock],
        found: Vec<NameFound>,
        rows: Vec<SecretRow>,
    ) -> Outcome {
        let clocks = environments
            .iter()
            .map(|(id, _, _, _, newest)| (id.clone(), newest.unwrap_or(0)))
            .collect();
        let mut state = State {
            keyring,
            clocks,
            names: HashMap::new(),
            secrets: HashMap::new(),
            order: Vec::new(),
            versions: Vec::new(),
            events: Vec::new(),
        };
        for row in rows {
            state.add(row, false);
        }
        for (id, env, name) in found {
            if state.secrets.contains_key(&id) {
                state.names.insert((env, name), id);
            }
        }
        let mut results = Vec::with_capacity(self.writes.len());
        for write in self.writes {
            let result = match write {
                Write::Create(new) => state.create(new, environments, &now),
                Write::Update {
                    workspace_id,
                    secret_id,
                    changes,
                    revision,
                } => state.update(workspace_id, secret_id, changes, revision, &now),
                Write::Delete {
                    workspace_id,
                    secret_id,
                    audit,
                    environments,
                } => state.delete(workspace_id, secret_id, audit, environments.as_deref()),
            };
            results.push(result);
        }
        state.finish(results)
    }
}

/// A secret as the group's writes leave it.
struct Current {
    summary: SecretSummary,
    workspace_id: String,
    /// Its row as read, until its contents are needed.
    sealed: Option<SecretRow>,
    /// Its contents once opened (or made by the group).
    contents: Option<Result<EnvDict, Error>>,
    /// Its version before the group; `None` when the group creates it.
    before: Option<i64>,
    /// The newest version that falls out of what is kept.
    destroyed: i64,
    deleted: bool,
    /// Whether a write of the group changed it.
    changed: bool,
}

impl Current {
    fn contents(&mut self, keyring: &Keyring) -> Result<EnvDict, Error> {
        if let Some(row) = self.sealed.take() {
            self.contents = Some(row.open(keyring).map(|secret| secret.contents));
        }
        match &self.contents {
            Some(contents) => contents.clone(),
            None => Err(Error::internal("a secret of the group has no contents")),
        }
    }
}

struct State<'k> {
    keyring: &'k Keyring,
    /// Per environment, the newest creation time of its named secrets.
    clocks: HashMap<String, Micros>,
    /// (environment id, name) → secret id, for the names the creates use.
    names: HashMap<(String, String), String>,
    secrets: HashMap<String, Current>,
    /// Secret ids in the order they entered the group.
    order: Vec<String>,
    versions: Vec<VersionInsertRow>,
    events: Vec<AuditEntry>,
}

impl State<'_> {
    fn add(&mut self, row: SecretRow, new: bool) {
        let summary = row.summary();
        let current = Current {
            workspace_id: row.workspace_id.clone(),
            before: (!new).then_some(summary.version),
            summary,
            sealed: Some(row),
            contents: None,
            destroyed: 0,
            deleted: false,
            changed: false,
        };
        self.order.push(current.summary.id.clone());
        self.secrets.insert(current.summary.id.clone(), current);
    }

    /// The secret `id` of `workspace_id`, unless it is gone.
    fn secret(&mut self, workspace_id: &str, id: &str) -> Result<&mut Current, Error> {
        self.secrets
            .get_mut(id)
            .filter(|s| s.workspace_id == workspace_id && !s.deleted)
            .ok_or_else(|| secret_not_found(id))
    }

    fn create(
        &mut self,
        new: &NewSecret,
        environments: &[EnvironmentLock],
        now: &impl Fn() -> Micros,
    ) -> Result<Written, Error> {
        let (environment_id, _, environment_name, _, _) = environment_of(environments, new)
            .ok_or_else(|| environment_not_found(&new.environment))?;
        rules::check_token_environment(
            &new.created_by,
            new.environments.as_deref(),
            environment_name,
        )?;
        let (environment_id, environment_name) = (environment_id.clone(), environment_name.clone());
        let created_at = match &new.kind {
            SecretKind::Named(name) => {
                let key = (environment_id.clone(), name.clone());
                if let Some(id) = self.names.get(&key).cloned() {
                    if self.secrets.get(&id).is_some_and(|s| !s.deleted) {
                        return self.on_conflict(new, name, &id, now);
                    }
                }
                let clock = self.clocks.entry(environment_id.clone()).or_insert(0);
                *clock = now().max(*clock + 1);
                *clock
            }
            SecretKind::Anonymous { .. } => now(),
        };
        let id = ids::new_id(ids::SECRET);
        let summary = SecretSummary {
            id: id.clone(),
            kind: new.kind.clone(),
            environment_id: environment_id.clone(),
            environment_name,
            created_at,
            created_by: new.created_by.clone(),
            last_used_at: None,
            version: 0,
            keys: Vec::new(),
        };
        if let SecretKind::Named(name) = &new.kind {
            self.names
                .insert((environment_id, name.clone()), id.clone());
        }
        self.order.push(id.clone());
        self.secrets.insert(
            id.clone(),
            Current {
                summary,
                workspace_id: new.workspace_id.clone(),
                sealed: None,
                contents: None,
                before: None,
                destroyed: 0,
                deleted: false,
                changed: false,
            },
        );
        let secret = self.next_version(
            &id,
            new.contents.clone(),
            (VersionAction::Created, "secret.create"),
            &revision_of(new),
            created_at,
        );
        Ok(Written::Created(secret, true))
    }

    /// A create of a name that exists (`id`).
    fn on_conflict(
        &mut self,
        new: &NewSecret,
        name: &str,
        id: &str,
        now: &impl Fn() -> Micros,
    ) -> Result<Written, Error> {
        match new.on_conflict {
            OnConflict::Fail => Err(Error::already_exists(format!(
                "Secret '{name}' already exists"
            ))),
            OnConflict::ReturnExisting => {
                let keyring = self.keyring;
                let current = self.secret(&new.workspace_id, id)?;
                let contents = current.contents(keyring)?;
                let summary = current.summary.clone();
                Ok(Written::Created(Secret { summary, contents }, false))
            }
            OnConflict::Overwrite => {
                let secret = self.next_version(
                    id,
                    new.contents.clone(),
                    (VersionAction::Overwritten, "secret.overwrite"),
                    &revision_of(new),
                    now(),
                );
                Ok(Written::Created(secret, false))
            }
        }
    }

    fn update(
        &mut self,
        workspace_id: &str,
        secret_id: &str,
        changes: &[(String, Option<String>)],
        revision: &Revision,
        now: &impl Fn() -> Micros,
    ) -> Result<Written, Error> {
        let keyring = self.keyring;
        let current = self.secret(workspace_id, secret_id)?;
        rules::check_token_environment(
            &revision.author,
            revision.environments.as_deref(),
            &current.summary.environment_name,
        )?;
        if let Some(expected) = revision.expected_version {
            if expected != current.summary.version {
                return Err(Error::failed_precondition(format!(
                    "Secret '{}' was changed by someone else: it is at version {}, not {expected}; \
                     reload it and apply your changes again",
                    current.summary.name().unwrap_or(&current.summary.id),
                    current.summary.version
                )));
            }
        }
        let contents = rules::apply_changes(current.contents(keyring)?, changes)?;
        let secret = self.next_version(
            secret_id,
            contents,
            (VersionAction::Updated, "secret.update"),
            revision,
            now(),
        );
        Ok(Written::Updated(secret))
    }

    fn delete(
        &mut self,
        workspace_id: &str,
        secret_id: &str,
        audit: &AuditEntry,
        environments: Option<&[String]>,
    ) -> Result<Written, Error> {
        let current = self.secret(workspace_id, secret_id)?;
        let token = audit.actor.as_ref().map_or("", |actor| actor.name.as_str());
        rules::check_token_environment(token, environments, &current.summary.environment_name)?;
        current.deleted = true;
        current.changed = true;
        let event = audit
            .clone()
            .action("secret.delete")
            .about(&current.summary);
        self.events.push(event);
        Ok(Written::Deleted)
    }

    /// Makes the version after the current one of secret `id`, holding
    /// `contents`, and its audit event (`action`: the version's, the
    /// event's); returns the secret at it.
    fn next_version(
        &mut self,
        id: &str,
        contents: EnvDict,
        (action, event): (VersionAction, &str),
        revision: &Revision,
        created_at: Micros,
    ) -> Secret {
        let keyring = self.keyring;
        let current = self
            .secrets
            .get_mut(id)
            .expect("the group holds the secret");
        // A current version that no longer opens is replaced all the same
        // (an overwrite); its key-level changes are then unknown.
        let before = match action {
            VersionAction::Created => Some(EnvDict::new()),
            _ => current.contents(keyring).ok(),
        };
        let version = current.summary.version + 1;
        let sealed = keyring.seal(
            Binding {
                workspace_id: &current.workspace_id,
                secret_id: id,
                version,
            },
            &contents,
        );
        self.versions.push(VersionInsertRow {
            secret_id: id.to_owned(),
            version,
            created_at,
            created_by: revision.author.clone(),
            action,
            keys: key_list_column(contents.keys()),
            changes: before.map(|before| {
                serde_json::to_string(&KeyChanges::between(&before, &contents))
                    .expect("names serialize")
            }),
            sealed,
        });
        current.summary.version = version;
        current.summary.keys = contents.keys().cloned().collect();
        current.destroyed = current
            .destroyed
            .max(version - i64::from(revision.keep_versions.max(1)));
        current.contents = Some(Ok(contents.clone()));
        current.changed = true;
        let summary = current.summary.clone();
        self.events
            .push(revision.audit.clone().action(event).about(&summary));
        Secret { summary, contents }
    }

    fn finish(mut self, results: Vec<Result<Written, Error>>) -> Outcome {
        let mut outcome = Outcome {
            results,
            deletes: Vec::new(),
            secrets: Vec::new(),
            versions: Vec::new(),
            current: Vec::new(),
            destroyed: Vec::new(),
            events: std::mem::take(&mut self.events),
            changed: Vec::new(),
        };
        let gone = |id: &str| self.secrets.get(id).is_none_or(|s| s.deleted);
        outcome.versions = std::mem::take(&mut self.versions)
            .into_iter()
            .filter(|v| !gone(&v.secret_id))
            .collect();
        for id in &self.order {
            let current = &self.secrets[id];
            if !current.changed {
                continue;
            }
            match current.before {
                // Created by the group (and not deleted: nothing can name
                // it before the group answers).
                None if !current.deleted => {
                    let summary = &current.summary;
                    let cols = SecretInsert::of(&summary.kind);
                    outcome.secrets.push(SecretInsertRow {
                        id: id.clone(),
                        workspace_id: current.workspace_id.clone(),
                        environment_id: summary.environment_id.clone(),
                        name: cols.name.map(str::to_owned),
                        app_id: cols.app_id.map(str::to_owned),
                        expires_at: cols.expires_at,
                        created_at: summary.created_at,
                        created_by: summary.created_by.clone(),
                        version: summary.version,
                    });
                }
                None => {}
                Some(_) if current.deleted => {
                    outcome.deletes.push(id.clone());
                    outcome.changed.push(id.clone());
                }
                Some(before) => {
                    if current.summary.version != before {
                        outcome.current.push((id.clone(), current.summary.version));
                    }
                    if current.destroyed >= 1 {
                        outcome.destroyed.push((id.clone(), current.destroyed));
                    }
                    outcome.changed.push(id.clone());
                }
            }
        }
        outcome
    }
}

/// What a create that makes a version writes as.
fn revision_of(new: &NewSecret) -> Revision {
    Revision {
        author: new.created_by.clone(),
        keep_versions: new.keep_versions,
        expected_version: None,
        audit: new.audit.clone(),
        // Checked by the create itself.
        environments: None,
    }
}

/// The environment, among those locked, that the create `new` goes to.
fn environment_of<'e>(
    environments: &'e [EnvironmentLock],
    new: &NewSecret,
) -> Option<&'e EnvironmentLock> {
    let reference = (new.workspace_id.as_str(), new.environment.as_str());
    environments
        .iter()
        .find(|env| names_environment(env, reference))
}

/// `items`, sorted, each once.
fn sorted<'s>(items: impl Iterator<Item = &'s str>) -> Vec<&'s str> {
    items.collect::<BTreeSet<_>>().into_iter().collect()
}
