//! `Secret::objects()`: create, list and delete named secrets.
//!
//! Each call returns a builder whose methods are Modal's keyword arguments;
//! `.await` it (it implements [`IntoFuture`]), or `.wait()` it with
//! [`blocking::Wait`](crate::blocking::Wait).

use std::{
    future::{Future, IntoFuture},
    pin::Pin,
};

use latchkey_core::EnvDict;
use reqwest::Method;
use serde::{Deserialize, Serialize};

use crate::{
    secret::SecretInfo,
    time::{IntoTimestamp, Timestamp},
    Client, Error, Result,
};

/// A boxed future, so that builders can be awaited directly.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Largest page the server returns.
const MAX_PAGE: u32 = 1_000;

fn client_or_shared(client: Option<Client>) -> Result<Client> {
    match client {
        Some(c) => Ok(c),
        None => Client::shared(),
    }
}

/// The manager of named secrets: Modal's `Secret.objects`. Get one from
/// [`Secret::objects`](crate::Secret::objects) (shared client) or
/// [`Client::secrets`].
#[derive(Debug, Clone)]
pub struct SecretObjects {
    client: Option<Client>,
}

impl SecretObjects {
    pub(crate) fn new(client: Option<Client>) -> Self {
        Self { client }
    }

    /// Creates the named secret `name` holding `env_dict`; an error
    /// ([`Error::AlreadyExists`]) if the name is taken, unless
    /// [`allow_existing`](CreateSecret::allow_existing) or
    /// [`overwrite`](CreateSecret::overwrite).
    pub fn create<I, K, V>(&self, name: impl Into<String>, env_dict: I) -> CreateSecret
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        CreateSecret {
            client: self.client.clone(),
            name: name.into(),
            values: env_dict
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
            allow_existing: false,
            overwrite: false,
            environment_name: None,
            required_keys: Vec::new(),
        }
    }

    /// Lists named secrets, newest first, fetching page after page.
    pub fn list(&self) -> ListSecrets {
        ListSecrets {
            client: self.client.clone(),
            max_objects: None,
            created_before: None,
            environment_name: None,
            page_size: MAX_PAGE,
        }
    }

    /// Deletes the named secret `name`, irreversibly.
    pub fn delete(&self, name: impl Into<String>) -> DeleteSecret {
        DeleteSecret {
            client: self.client.clone(),
            name: name.into(),
            allow_missing: false,
            environment_name: None,
        }
    }
}

/// What a [`CreateSecret`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CreatedSecret {
    /// Whether the secret is new (`false`: it existed, and was kept or
    /// overwritten).
    pub created: bool,
    /// The secret's metadata.
    pub info: SecretInfo,
}

/// A pending `Secret.objects.create(...)`; `.await` it. Its `Debug` shows
/// the keys, never the values.
#[must_use = "a builder does nothing until it is awaited"]
#[derive(Clone)]
pub struct CreateSecret {
    client: Option<Client>,
    name: String,
    values: EnvDict,
    allow_existing: bool,
    overwrite: bool,
    environment_name: Option<String>,
    required_keys: Vec<String>,
}

impl CreateSecret {
    /// When the name is taken: keep the existing secret and succeed.
    pub fn allow_existing(mut self, yes: bool) -> Self {
        self.allow_existing = yes;
        self
    }

    /// When the name is taken: replace its contents (the CLI's `--force`).
    pub fn overwrite(mut self, yes: bool) -> Self {
        self.overwrite = yes;
        self
    }

    /// The environment to create it in (default: the client's).
    pub fn environment_name(mut self, environment: impl Into<String>) -> Self {
        self.environment_name = Some(environment.into());
        self
    }

    /// Keys the resulting secret must hold; a miss creates nothing.
    pub fn required_keys<I: IntoIterator<Item = K>, K: Into<String>>(mut self, keys: I) -> Self {
        self.required_keys = keys.into_iter().map(Into::into).collect();
        self
    }

    async fn run(self) -> Result<CreatedSecret> {
        #[derive(Serialize)]
        struct Body<'a> {
            name: &'a str,
            values: &'a EnvDict,
            if_exists: &'a str,
            required_keys: &'a [String],
        }
        #[derive(Deserialize)]
        struct Answer {
            created: bool,
            secret: SecretInfo,
        }
        let if_exists = match (self.allow_existing, self.overwrite) {
            (true, true) => {
                return Err(Error::invalid(
                    "allow_existing and overwrite exclude each other",
                ))
            }
            (true, false) => "keep",
            (false, true) => "overwrite",
            (false, false) => "fail",
        };
        let client = client_or_shared(self.client)?;
        let query = [(
            "environment",
            client.environment_or_default(self.environment_name.as_deref()),
        )];
        let answer: Answer = client
            .call(
                Method::POST,
                &["secrets"],
                &query,
                Some(&Body {
                    name: &self.name,
                    values: &self.values,
                    if_exists,
                    required_keys: &self.required_keys,
                }),
            )
            .await?;
        Ok(CreatedSecret {
            created: answer.created,
            info: answer.secret,
        })
    }
}

impl IntoFuture for CreateSecret {
    type Output = Result<CreatedSecret>;
    type IntoFuture = BoxFuture<Self::Output>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.run())
    }
}

/// A pending `Secret.objects.list(...)`; `.await` it.
#[must_use = "a builder does nothing until it is awaited"]
#[derive(Debug)]
pub struct ListSecrets {
    client: Option<Client>,
    max_objects: Option<usize>,
    created_before: Option<Result<Timestamp>>,
    environment_name: Option<String>,
    page_size: u32,
}

impl ListSecrets {
    /// Return at most this many secrets.
    pub fn max_objects(mut self, n: usize) -> Self {
        self.max_objects = Some(n);
        self
    }

    /// Only secrets created strictly before this instant: a date
    /// (`"2025-01-01"`), a date-time, a Unix timestamp, a
    /// [`SystemTime`](std::time::SystemTime) or a [`Timestamp`]. A string that
    /// is none of these makes the call fail with [`Error::Invalid`].
    pub fn created_before(mut self, when: impl IntoTimestamp) -> Self {
        self.created_before = Some(when.into_timestamp());
        self
    }

    /// The environment to list (default: the client's).
    pub fn environment_name(mut self, environment: impl Into<String>) -> Self {
        self.environment_name = Some(environment.into());
        self
    }

    /// How many secrets each request fetches (1 to 1000, default 1000).
    /// Paging is invisible either way; this is for tests and slow links.
    pub fn page_size(mut self, n: u32) -> Self {
        self.page_size = n.clamp(1, MAX_PAGE);
        self
    }

    async fn run(self) -> Result<Vec<SecretInfo>> {
        #[derive(Deserialize)]
        struct Page {
            items: Vec<SecretInfo>,
            next_created_before: Option<Timestamp>,
        }
        let mut before = self.created_before.transpose()?;
        let client = client_or_shared(self.client)?;
        let environment = client.environment_or_default(self.environment_name.as_deref());
        let mut out: Vec<SecretInfo> = Vec::new();
        loop {
            let want = match self.max_objects {
                Some(max) if max <= out.len() => break,
                Some(max) => u32::try_from(max - out.len())
                    .unwrap_or(u32::MAX)
                    .min(self.page_size),
                None => self.page_size,
            };
            let query = [
                ("environment", environment.clone()),
                (
                    "created_before",
                    before.map(|t| t.to_string()).unwrap_or_default(),
                ),
                ("limit", want.to_string()),
            ];
            let page: Page = client
                .call(Method::GET, &["secrets"], &query, None::<&()>)
                .await?;
            let full = page.items.len() >= want as usize;
            out.extend(page.items);
            match page.next_created_before {
                Some(next) if full => before = Some(next),
                _ => break,
            }
        }
        Ok(out)
    }
}

impl IntoFuture for ListSecrets {
    type Output = Result<Vec<SecretInfo>>;
    type IntoFuture = BoxFuture<Self::Output>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.run())
    }
}

/// A pending `Secret.objects.delete(...)`; `.await` it.
#[must_use = "a builder does nothing until it is awaited"]
#[derive(Debug, Clone)]
pub struct DeleteSecret {
    client: Option<Client>,
    name: String,
    allow_missing: bool,
    environment_name: Option<String>,
}

impl DeleteSecret {
    /// Succeed (with `false`) when there is no such secret.
    pub fn allow_missing(mut self, yes: bool) -> Self {
        self.allow_missing = yes;
        self
    }

    /// The environment holding it (default: the client's).
    pub fn environment_name(mut self, environment: impl Into<String>) -> Self {
        self.environment_name = Some(environment.into());
        self
    }

    async fn run(self) -> Result<bool> {
        let client = client_or_shared(self.client)?;
        let query = [(
            "environment",
            client.environment_or_default(self.environment_name.as_deref()),
        )];
        match client
            .call_empty(Method::DELETE, &["secrets", &self.name], &query)
            .await
        {
            Ok(()) => Ok(true),
            // Only a missing secret: an unknown environment stays an error.
            Err(Error::NotFound { message })
                if self.allow_missing && message.starts_with("Secret ") =>
            {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }
}

impl IntoFuture for DeleteSecret {
    /// Whether a secret was deleted.
    type Output = Result<bool>;
    type IntoFuture = BoxFuture<Self::Output>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.run())
    }
}

impl std::fmt::Debug for CreateSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreateSecret")
            .field("name", &self.name)
            .field("keys", &self.values.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}
