//! [`Secret`]: a source of environment variables, local or named on the server.

use std::{
    fmt,
    path::{Path, PathBuf},
};

use latchkey_core::{rules, EnvDict};
use reqwest::Method;
use serde::{Deserialize, Serialize};

use crate::{
    objects::{BoxFuture, SecretObjects},
    time::Timestamp,
    versions::{Rollback, SecretHistory, Target, VersionInfo},
    Client, Error, Result,
};

/// A dictionary of environment variables to give a process: Modal's
/// `modal.Secret`.
///
/// A `Secret` is a *description*: `from_dict`, `from_local_environ` and
/// `from_dotenv` hold their values (read when the `Secret` is made, as Modal
/// does), and `from_name` refers to a named secret on the server, read when it
/// is [resolved](Secret::resolve). Building one never contacts the server.
///
/// Several secrets given to one process are merged in order, later ones
/// overriding earlier ones key by key: [`Secret::resolve_all`].
///
/// A `Secret` is `Serialize`/`Deserialize`, so it can travel to the process
/// that resolves it. `Debug` shows names and keys, never values.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Secret {
    source: Source,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    required_keys: Vec<String>,
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Source {
    /// Values held here.
    Local { values: EnvDict },
    /// A named secret on the server.
    Named {
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        environment_name: Option<String>,
        /// A kept version instead of the current one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        version: Option<i64>,
    },
}

/// A value [`Secret::from_dict`] and [`Secret::update`] accept: a string, or
/// an `Option` of one where `None` drops the key (from_dict) or removes it
/// (update).
pub trait EnvValue {
    /// The value, or `None`.
    fn into_env_value(self) -> Option<String>;
}

impl EnvValue for &str {
    fn into_env_value(self) -> Option<String> {
        Some(self.to_owned())
    }
}

impl EnvValue for String {
    fn into_env_value(self) -> Option<String> {
        Some(self)
    }
}

impl EnvValue for &String {
    fn into_env_value(self) -> Option<String> {
        Some(self.clone())
    }
}

impl<T: Into<String>> EnvValue for Option<T> {
    fn into_env_value(self) -> Option<String> {
        self.map(Into::into)
    }
}

/// A named secret's metadata: what [`Secret::info`] and listings return.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SecretInfo {
    /// The server's id (`st-...`).
    pub id: String,
    /// The secret's name.
    pub name: String,
    /// The environment it lives in.
    #[serde(rename = "environment")]
    pub environment_name: String,
    /// When it was created.
    pub created_at: Timestamp,
    /// The name of the token that created it.
    pub created_by: String,
    /// The last time its values were resolved for a process, if ever.
    pub last_used_at: Option<Timestamp>,
    /// Its keys, sorted.
    pub keys: Vec<String>,
    /// Its version: 1 for a new secret, one more with every change of its
    /// contents. With [`Secret::version`], the version asked for.
    pub version: i64,
    /// With [`Secret::version`]: the record of that version (when and how
    /// it was made, the keys it changed). `None` for the current version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_info: Option<VersionInfo>,
}

/// What resolving a secret gave ([`Secret::resolve_detailed`]): the values,
/// and for a named secret the metadata of the version they are from.
/// `Debug` shows the keys, never the values.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Resolved {
    /// The values, for a process's environment.
    pub values: EnvDict,
    /// For a named secret: its metadata, `version` and `keys` being those of
    /// the version resolved (`last_used_at` as it was before this use).
    /// `None` for a local secret.
    pub info: Option<SecretInfo>,
}

impl fmt::Debug for Resolved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resolved")
            .field("keys", &self.values.keys().collect::<Vec<_>>())
            .field("info", &self.info)
            .finish()
    }
}

/// The answer of `POST /secrets/{name}/resolve`.
#[derive(Deserialize)]
struct ResolveAnswer {
    secret: SecretInfo,
    values: EnvDict,
}

#[derive(Serialize)]
struct ResolveBody<'a> {
    required_keys: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<i64>,
}

impl Secret {
    /// A secret from key-value pairs; a `None` value drops its key.
    ///
    /// ```
    /// use latchkey::Secret;
    /// let s = Secret::from_dict([("FOO", Some("bar")), ("UNSET", None)]);
    /// assert_eq!(s.local_values().unwrap().keys().collect::<Vec<_>>(), ["FOO"]);
    /// let s = Secret::from_dict([("FOO", "bar")]);
    /// # let _ = s;
    /// ```
    pub fn from_dict<I, K, V>(env_dict: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: EnvValue,
    {
        let values = env_dict
            .into_iter()
            .filter_map(|(k, v)| v.into_env_value().map(|v| (k.into(), v)))
            .collect();
        Self::local(values)
    }

    fn local(values: EnvDict) -> Self {
        Self {
            source: Source::Local { values },
            required_keys: Vec::new(),
        }
    }

    /// A secret holding these variables of this process's environment, read
    /// now. A variable that is not set (or not UTF-8) is an
    /// [`Error::Invalid`] naming it.
    pub fn from_local_environ<I, K>(env_keys: I) -> Result<Self>
    where
        I: IntoIterator<Item = K>,
        K: AsRef<str>,
    {
        let mut values = EnvDict::new();
        let mut missing = Vec::new();
        for key in env_keys {
            let key = key.as_ref();
            match std::env::var(key) {
                Ok(v) => {
                    values.insert(key.to_owned(), v);
                }
                Err(std::env::VarError::NotPresent) => missing.push(key.to_owned()),
                Err(std::env::VarError::NotUnicode(_)) => {
                    return Err(Error::invalid(format!(
                        "Local environment variable '{key}' is not valid UTF-8"
                    )))
                }
            }
        }
        if !missing.is_empty() {
            return Err(Error::invalid(format!(
                "Local environment variable(s) not set: {}",
                missing.join(", ")
            )));
        }
        Ok(Self::local(values))
    }

    /// A secret holding the variables of a `.env` file, read now: the first
    /// `.env` found in `path` (a file's directory, or a directory) or one of
    /// its parents. See [`Secret::from_dotenv_with`].
    pub fn from_dotenv(path: impl AsRef<Path>) -> Result<Self> {
        Self::from_dotenv_with(Some(path.as_ref()), ".env")
    }

    /// Modal's `from_dotenv(path=None, filename=".env")`: looks for
    /// `filename` in `path` (or the current directory when `None`) and then
    /// in each parent directory, like python-dotenv's `find_dotenv`, and reads
    /// the first one found exactly as python-dotenv does (quotes, escapes,
    /// `export`, `${VAR}` and `${VAR:-default}` from the file or this
    /// process's environment; a key without `=` is the empty string).
    ///
    /// Unlike Modal, a missing file is an error ([`Error::Io`], not an empty
    /// secret), and so is a line python-dotenv would skip ([`Error::Invalid`]
    /// with its line number): a secret silently missing keys is worse.
    pub fn from_dotenv_with(path: Option<&Path>, filename: &str) -> Result<Self> {
        let start = match path {
            Some(p) => p.to_path_buf(),
            None => std::env::current_dir().map_err(|e| Error::io(".", e))?,
        };
        let start = std::path::absolute(&start).map_err(|e| Error::io(&start, e))?;
        let meta = std::fs::metadata(&start).map_err(|e| Error::io(&start, e))?;
        let dir = if meta.is_dir() {
            start
        } else {
            start.parent().map(Path::to_path_buf).unwrap_or_default()
        };
        let file = dir
            .ancestors()
            .map(|d| d.join(filename))
            .find(|candidate| candidate.is_file())
            .ok_or_else(|| {
                Error::io(
                    dir.join(filename),
                    std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        format!(
                            "no {filename} file in {} or any directory above it",
                            dir.display()
                        ),
                    ),
                )
            })?;
        Self::read_dotenv(&file)
    }

    fn read_dotenv(file: &PathBuf) -> Result<Self> {
        let text =
            zeroize::Zeroizing::new(std::fs::read_to_string(file).map_err(|e| Error::io(file, e))?);
        let entries = latchkey_core::dotenv::parse_with_process_env(&text)
            .map_err(|e| Error::invalid(format!("{}: {e}", file.display())))?;
        Ok(Self::local(
            latchkey_core::dotenv::into_env_dict(entries)
                .into_iter()
                .collect(),
        ))
    }

    /// A reference to the named secret `name` on the server. Nothing is
    /// fetched until it is used; see [`Secret::environment_name`] and
    /// [`Secret::required_keys`].
    pub fn from_name(name: impl Into<String>) -> Self {
        Self {
            source: Source::Named {
                name: name.into(),
                environment_name: None,
                version: None,
            },
            required_keys: Vec::new(),
        }
    }

    /// For a named secret: the environment it lives in (default: the
    /// client's). Does nothing to a local secret.
    pub fn environment_name(mut self, environment: impl Into<String>) -> Self {
        if let Source::Named {
            environment_name, ..
        } = &mut self.source
        {
            *environment_name = Some(environment.into()).filter(|e| !e.is_empty());
        }
        self
    }

    /// For a named secret: use its kept version `version` (1, 2, 3...)
    /// rather than the current one. [`resolve`](Secret::resolve) then gives
    /// that version's values and [`info`](Secret::info) its keys and
    /// record; a version the server no longer keeps is [`Error::NotFound`]
    /// naming the versions it keeps, and a number below 1 is
    /// [`Error::Invalid`] (before any request). Updates, history and
    /// rollbacks act on the secret itself, whatever its pinned version.
    /// Does nothing to a local secret.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let _server = latchkey::testing::start_server_for_examples()?;
    /// use latchkey::Secret;
    ///
    /// Secret::objects().create("db", [("PASSWORD", "first")]).await?;
    /// let db = Secret::from_name("db");
    /// db.update([("PASSWORD", "second")]).await?;
    /// assert_eq!(db.resolve().await?["PASSWORD"], "second");
    /// assert_eq!(db.clone().version(1).resolve().await?["PASSWORD"], "first");
    ///
    /// let err = db.version(7).resolve().await.unwrap_err();
    /// assert!(err.to_string().contains("versions 1 to 2 are kept"), "{err}");
    /// # Ok(()) }
    /// ```
    pub fn version(mut self, version: i64) -> Self {
        if let Source::Named { version: v, .. } = &mut self.source {
            *v = Some(version);
        }
        self
    }

    /// Keys the secret must hold when it is resolved; checked by the server
    /// for a named secret (before its use is recorded) and here for a local
    /// one. A miss is [`Error::MissingKeys`].
    pub fn required_keys<I, K>(mut self, keys: I) -> Self
    where
        I: IntoIterator<Item = K>,
        K: Into<String>,
    {
        self.required_keys = keys.into_iter().map(Into::into).collect();
        self
    }

    /// The name of a named secret; `None` for a local one.
    pub fn name(&self) -> Option<&str> {
        match &self.source {
            Source::Named { name, .. } => Some(name),
            Source::Local { .. } => None,
        }
    }

    /// The environment given to a named secret, if any.
    pub fn environment(&self) -> Option<&str> {
        match &self.source {
            Source::Named {
                environment_name, ..
            } => environment_name.as_deref(),
            Source::Local { .. } => None,
        }
    }

    /// The version given to a named secret by [`Secret::version`], if any.
    pub fn pinned_version(&self) -> Option<i64> {
        match &self.source {
            Source::Named { version, .. } => *version,
            Source::Local { .. } => None,
        }
    }

    /// The values of a local secret; `None` for a named one (use
    /// [`Secret::resolve`]).
    pub fn local_values(&self) -> Option<&EnvDict> {
        match &self.source {
            Source::Local { values } => Some(values),
            Source::Named { .. } => None,
        }
    }

    /// The manager of named secrets, with the [shared client](Client::shared):
    /// Modal's `Secret.objects`. [`Client::secrets`] is the same with a
    /// given client.
    pub fn objects() -> SecretObjects {
        SecretObjects::new(None)
    }

    fn named(&self, what: &str) -> Result<(&str, Option<&str>)> {
        match &self.source {
            Source::Named {
                name,
                environment_name,
                ..
            } => Ok((name, environment_name.as_deref())),
            Source::Local { .. } => Err(Error::invalid(format!(
                "Only a named secret (Secret::from_name) has {what} on the server"
            ))),
        }
    }

    /// [`Secret::named`], owned, for a builder that reports the error when
    /// it runs.
    fn target(&self, what: &str) -> Target {
        self.named(what)
            .map(|(name, env)| (name.to_owned(), env.map(str::to_owned)))
    }

    /// The pinned version, checked: a number below 1 fails here, before
    /// any request.
    fn checked_version(&self) -> Result<Option<i64>> {
        let version = self.pinned_version();
        if let Some(v) = version {
            rules::check_version(v)?;
        }
        Ok(version)
    }

    /// The named secret's metadata (name, created_at, created_by, keys...),
    /// with the shared client. The required keys are checked. With
    /// [`Secret::version`], that version's keys and number, and its record
    /// in [`SecretInfo::version_info`].
    pub async fn info(&self) -> Result<SecretInfo> {
        self.info_with(&Client::shared()?).await
    }

    /// [`Secret::info`] with `client`.
    pub async fn info_with(&self, client: &Client) -> Result<SecretInfo> {
        let (name, env) = self.named("info")?;
        let version = self.checked_version()?;
        let query = [
            ("environment", client.environment_or_default(env)),
            ("required_keys", self.required_keys.join(",")),
            (
                "version",
                version.map(|v| v.to_string()).unwrap_or_default(),
            ),
        ];
        client
            .call(Method::GET, &["secrets", name], &query, None::<&()>)
            .await
    }

    /// The named secret's kept versions, newest first, with the shared
    /// client: who made each, when, how (created, updated, overwritten,
    /// rolled back) and the names of the keys it added, removed and
    /// changed. Never a value. `.await` the returned builder.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let _server = latchkey::testing::start_server_for_examples()?;
    /// use latchkey::{Secret, VersionAction};
    ///
    /// Secret::objects().create("api", [("KEY", "k1"), ("URL", "u")]).await?;
    /// let api = Secret::from_name("api");
    /// api.update([("KEY", Some("k2")), ("URL", None)]).await?;
    ///
    /// let history = api.history().await?;
    /// assert_eq!(history[0].version, 2);
    /// assert_eq!(history[0].action, VersionAction::Updated);
    /// assert_eq!(history[0].keys_changed, Some(vec!["KEY".to_owned()]));
    /// assert_eq!(history[0].keys_removed, Some(vec!["URL".to_owned()]));
    /// assert_eq!(history[1].action, VersionAction::Created);
    /// # Ok(()) }
    /// ```
    pub fn history(&self) -> SecretHistory {
        SecretHistory::new(None, self.target("a history"))
    }

    /// [`Secret::history`] with `client`.
    pub fn history_with(&self, client: &Client) -> SecretHistory {
        SecretHistory::new(Some(client.clone()), self.target("a history"))
    }

    /// Rolls the named secret back to its kept version `to`, with the shared
    /// client: a new version whose contents are those of `to` (history is
    /// never rewritten). `.await` the returned builder for the secret's
    /// metadata at its new version.
    ///
    /// Rolling back to the current version is
    /// [`Error::FailedPrecondition`] (nothing to undo); a version that is
    /// not kept is [`Error::NotFound`] naming the kept ones; a number below
    /// 1 is [`Error::Invalid`].
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let _server = latchkey::testing::start_server_for_examples()?;
    /// use latchkey::{Secret, VersionAction};
    ///
    /// Secret::objects().create("db", [("PASSWORD", "good")]).await?;
    /// let db = Secret::from_name("db");
    /// db.update([("PASSWORD", "bad")]).await?;
    ///
    /// let info = db.rollback(1).await?;
    /// assert_eq!(info.version, 3);
    /// assert_eq!(db.resolve().await?["PASSWORD"], "good");
    /// assert_eq!(db.history().await?[0].action, VersionAction::RolledBack { to: 1 });
    ///
    /// // Only if nobody changed it since version 3:
    /// db.rollback(2).expected_version(3).await?;
    /// assert!(db.rollback(1).expected_version(3).await.is_err());
    /// # Ok(()) }
    /// ```
    pub fn rollback(&self, to: i64) -> Rollback {
        Rollback::new(None, self.target("versions"), to)
    }

    /// [`Secret::rollback`] with `client`.
    pub fn rollback_with(&self, client: &Client, to: i64) -> Rollback {
        Rollback::new(Some(client.clone()), self.target("versions"), to)
    }

    /// Merges `changes` into the named secret like Python's `dict.update`:
    /// a value sets its key, `None` removes it, keys not named stay.
    /// Concurrent updates of different keys all survive. Uses the shared
    /// client; `.await` the returned builder for the metadata after the
    /// change (a new version).
    /// [`expected_version`](UpdateSecret::expected_version) makes it a
    /// compare-and-swap.
    pub fn update<I, K, V>(&self, changes: I) -> UpdateSecret
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: EnvValue,
    {
        UpdateSecret::new(None, self.target("update"), changes)
    }

    /// [`Secret::update`] with `client`.
    pub fn update_with<I, K, V>(&self, client: &Client, changes: I) -> UpdateSecret
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: EnvValue,
    {
        UpdateSecret::new(Some(client.clone()), self.target("update"), changes)
    }

    /// The values to put in a process's environment, with the shared client
    /// when the secret is named (which records its use: `last_used_at`).
    /// Required keys are checked first.
    pub async fn resolve(&self) -> Result<EnvDict> {
        match &self.source {
            Source::Local { .. } => self.resolve_local(),
            Source::Named { .. } => self.resolve_with(&Client::shared()?).await,
        }
    }

    /// [`Secret::resolve`] with `client` (not contacted for a local secret).
    pub async fn resolve_with(&self, client: &Client) -> Result<EnvDict> {
        Ok(self.resolve_detailed_with(client).await?.values)
    }

    /// [`Secret::resolve`], also telling which version of a named secret
    /// the values are from (to pin it later with [`Secret::version`], as
    /// `latchkey run --lock` does). One request: the version and the
    /// values cannot disagree.
    pub async fn resolve_detailed(&self) -> Result<Resolved> {
        match &self.source {
            Source::Local { .. } => Ok(Resolved {
                values: self.resolve_local()?,
                info: None,
            }),
            Source::Named { .. } => self.resolve_detailed_with(&Client::shared()?).await,
        }
    }

    /// [`Secret::resolve_detailed`] with `client` (not contacted for a local
    /// secret).
    pub async fn resolve_detailed_with(&self, client: &Client) -> Result<Resolved> {
        match &self.source {
            Source::Local { .. } => Ok(Resolved {
                values: self.resolve_local()?,
                info: None,
            }),
            Source::Named {
                name,
                environment_name,
                ..
            } => {
                let version = self.checked_version()?;
                let query = [(
                    "environment",
                    client.environment_or_default(environment_name.as_deref()),
                )];
                let answer: ResolveAnswer = client
                    .call(
                        Method::POST,
                        &["secrets", name, "resolve"],
                        &query,
                        Some(&ResolveBody {
                            required_keys: &self.required_keys,
                            version,
                        }),
                    )
                    .await?;
                Ok(Resolved {
                    values: answer.values,
                    info: Some(answer.secret),
                })
            }
        }
    }

    /// A local secret's values, checked against the rules every secret
    /// follows and against its required keys.
    fn resolve_local(&self) -> Result<EnvDict> {
        let Source::Local { values } = &self.source else {
            unreachable!("resolve_local is called on local secrets only")
        };
        rules::check_env_dict(values)?;
        rules::check_required_keys(values, self.required_keys.iter().map(String::as_str))?;
        Ok(values.clone())
    }

    /// The environment that `secrets` give a process, later secrets
    /// overriding earlier ones key by key (Modal's `secrets=[a, b]`). Named
    /// secrets are resolved with the shared client, which is not needed (nor
    /// configured) when every secret is local. Nothing is returned unless
    /// every secret resolves.
    pub async fn resolve_all(secrets: &[Secret]) -> Result<EnvDict> {
        let client = if secrets.iter().any(|s| s.name().is_some()) {
            Some(Client::shared()?)
        } else {
            None
        };
        let mut layers = Vec::with_capacity(secrets.len());
        for secret in secrets {
            layers.push(match &client {
                Some(client) => secret.resolve_with(client).await?,
                None => secret.resolve_local()?,
            });
        }
        Ok(merge(layers))
    }

    /// [`Secret::resolve_all`] with `client`.
    pub async fn resolve_all_with(client: &Client, secrets: &[Secret]) -> Result<EnvDict> {
        let mut layers = Vec::with_capacity(secrets.len());
        for secret in secrets {
            layers.push(secret.resolve_with(client).await?);
        }
        Ok(merge(layers))
    }
}

/// Merges dictionaries in order, later ones overriding earlier ones key by
/// key: the precedence of several secrets on one process.
///
/// ```
/// use latchkey::{merge, EnvDict};
/// let a = EnvDict::from([("A".into(), "1".into()), ("B".into(), "1".into())]);
/// let b = EnvDict::from([("B".into(), "2".into())]);
/// assert_eq!(merge([a, b]), EnvDict::from([("A".into(), "1".into()), ("B".into(), "2".into())]));
/// ```
pub fn merge<I: IntoIterator<Item = EnvDict>>(layers: I) -> EnvDict {
    let mut out = EnvDict::new();
    for layer in layers {
        out.extend(layer);
    }
    out
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Secret");
        match &self.source {
            Source::Local { values } => d.field("keys", &values.keys().collect::<Vec<_>>()),
            Source::Named {
                name,
                environment_name,
                version,
            } => d
                .field("name", name)
                .field("environment_name", environment_name)
                .field("version", version),
        };
        d.field("required_keys", &self.required_keys).finish()
    }
}

/// A pending [`Secret::update`]; `.await` it for the secret's metadata
/// after the change. Its `Debug` shows the keys, never the values.
#[must_use = "a builder does nothing until it is awaited"]
pub struct UpdateSecret {
    client: Option<Client>,
    target: Target,
    changes: Vec<(String, Option<String>)>,
    expected_version: Option<i64>,
}

impl UpdateSecret {
    fn new<I, K, V>(client: Option<Client>, target: Target, changes: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: EnvValue,
    {
        Self {
            client,
            target,
            changes: changes
                .into_iter()
                .map(|(k, v)| (k.into(), v.into_env_value()))
                .collect(),
            expected_version: None,
        }
    }

    /// Change the secret only if `version` is still its current version,
    /// else fail with [`Error::FailedPrecondition`] and change nothing: a
    /// read-modify-write then never overwrites a change made since the read
    /// ([`SecretInfo::version`]).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let _server = latchkey::testing::start_server_for_examples()?;
    /// use latchkey::{Error, Secret};
    ///
    /// let created = Secret::objects().create("counter", [("N", "1")]).await?;
    /// let counter = Secret::from_name("counter");
    /// counter.update([("N", "2")]).expected_version(created.info.version).await?;
    /// // Version 1 is no longer current: refused, nothing changed.
    /// let err = counter.update([("N", "3")]).expected_version(1).await.unwrap_err();
    /// assert!(matches!(err, Error::FailedPrecondition { .. }));
    /// assert_eq!(counter.resolve().await?["N"], "2");
    /// # Ok(()) }
    /// ```
    pub fn expected_version(mut self, version: i64) -> Self {
        self.expected_version = Some(version);
        self
    }

    async fn run(self) -> Result<SecretInfo> {
        #[derive(Serialize)]
        struct Body {
            values: serde_json::Map<String, serde_json::Value>,
            #[serde(skip_serializing_if = "Option::is_none")]
            expected_version: Option<i64>,
        }
        let (name, env) = self.target?;
        let client = match self.client {
            Some(client) => client,
            None => Client::shared()?,
        };
        let values = self
            .changes
            .into_iter()
            .map(|(k, v)| {
                let value = v.map_or(serde_json::Value::Null, serde_json::Value::String);
                (k, value)
            })
            .collect();
        let query = [("environment", client.environment_or_default(env.as_deref()))];
        client
            .call(
                Method::PATCH,
                &["secrets", &name],
                &query,
                Some(&Body {
                    values,
                    expected_version: self.expected_version,
                }),
            )
            .await
    }
}

impl std::future::IntoFuture for UpdateSecret {
    type Output = Result<SecretInfo>;
    type IntoFuture = BoxFuture<Self::Output>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.run())
    }
}

impl fmt::Debug for UpdateSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpdateSecret")
            .field("target", &self.target)
            .field(
                "keys",
                &self.changes.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .field("expected_version", &self.expected_version)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_secrets_check_rules_and_required_keys() {
        let s = Secret::from_dict([("A", "1")]).required_keys(["A", "C", "B", "C"]);
        match s.resolve_local().unwrap_err() {
            Error::MissingKeys { keys, message } => {
                assert_eq!(keys, ["C", "B"]);
                assert_eq!(message, "Secret is missing key(s): C, B");
            }
            e => panic!("{e:?}"),
        }
        let bad = Secret::from_dict([("1A", "x")]);
        assert!(matches!(bad.resolve_local(), Err(Error::Invalid { .. })));
    }

    #[test]
    fn debug_and_serde_keep_their_promises() {
        let s = Secret::from_dict([("TOKEN", "hunter2")]);
        assert!(!format!("{s:?}").contains("hunter2"));
        let named = Secret::from_name("db")
            .environment_name("dev")
            .required_keys(["URL"]);
        let json = serde_json::to_string(&named).unwrap();
        assert_eq!(serde_json::from_str::<Secret>(&json).unwrap(), named);
        assert_eq!(named.environment(), Some("dev"));
        // environment_name means nothing to a local secret.
        assert_eq!(s.clone().environment_name("dev"), s);
    }

    #[test]
    fn dotenv_files_are_found_upwards() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("a/b");
        std::fs::create_dir_all(&deep).unwrap();
        std::fs::write(dir.path().join(".env"), "export USERNAME='me'\nEMPTY\n").unwrap();
        std::fs::write(dir.path().join("a/.env-dev"), "MODE=dev\n").unwrap();
        std::fs::write(deep.join("main.rs"), "").unwrap();
        let s = Secret::from_dotenv(deep.join("main.rs")).unwrap();
        assert_eq!(
            s.local_values().unwrap(),
            &EnvDict::from([
                ("USERNAME".into(), "me".into()),
                ("EMPTY".into(), String::new())
            ])
        );
        let s = Secret::from_dotenv_with(Some(&deep), ".env-dev").unwrap();
        assert_eq!(s.local_values().unwrap()["MODE"], "dev");
        let e = Secret::from_dotenv_with(Some(&deep), ".env-none").unwrap_err();
        assert!(e.to_string().contains("no .env-none file"), "{e}");
        std::fs::write(deep.join(".env"), "A=1\nB=\"never closed\n").unwrap();
        let e = Secret::from_dotenv(&deep).unwrap_err();
        assert!(e.to_string().contains("line 2"), "{e}");
    }
}
