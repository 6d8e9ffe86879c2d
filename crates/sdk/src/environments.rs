//! Environments: the namespaces of secrets in a workspace (`main`, `dev`, ...).

use std::future::IntoFuture;

use reqwest::Method;
use serde::{Deserialize, Serialize};

use crate::{objects::BoxFuture, time::Timestamp, Client, Result};

/// An environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct EnvironmentInfo {
    /// The server's id (`en-...`).
    pub id: String,
    /// Its name.
    pub name: String,
    /// Whether an empty environment name means this one.
    pub is_default: bool,
    /// The suffix Modal's client shows for web endpoints.
    pub webhook_suffix: String,
    /// When it was created.
    pub created_at: Timestamp,
}

/// Environment management, from [`Client::environments`]. Creating,
/// renaming and deleting need an admin token.
#[derive(Debug, Clone)]
pub struct Environments {
    client: Client,
}

#[derive(Deserialize)]
struct List {
    items: Vec<EnvironmentInfo>,
}

#[derive(Serialize)]
struct Update<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    webhook_suffix: Option<&'a str>,
}

impl Environments {
    pub(crate) fn new(client: Client) -> Self {
        Self { client }
    }

    /// The environments the token may see, the default first.
    pub async fn list(&self) -> Result<Vec<EnvironmentInfo>> {
        let list: List = self
            .client
            .call(Method::GET, &["environments"], &[], None::<&()>)
            .await?;
        Ok(list.items)
    }

    /// Creates the environment `name`.
    pub async fn create(&self, name: &str) -> Result<EnvironmentInfo> {
        #[derive(Serialize)]
        struct Body<'a> {
            name: &'a str,
        }
        self.client
            .call(Method::POST, &["environments"], &[], Some(&Body { name }))
            .await
    }

    /// Renames the environment `current` to `new_name`; its secrets move with it.
    pub async fn rename(&self, current: &str, new_name: &str) -> Result<EnvironmentInfo> {
        self.update(
            current,
            &Update {
                name: Some(new_name),
                webhook_suffix: None,
            },
        )
        .await
    }

    /// Sets the web suffix that Modal's client shows for `name`.
    pub async fn set_webhook_suffix(&self, name: &str, suffix: &str) -> Result<EnvironmentInfo> {
        self.update(
            name,
            &Update {
                name: None,
                webhook_suffix: Some(suffix),
            },
        )
        .await
    }

    async fn update(&self, current: &str, update: &Update<'_>) -> Result<EnvironmentInfo> {
        self.client
            .call(Method::PATCH, &["environments", current], &[], Some(update))
            .await
    }

    /// Deletes the environment `name`. One that holds secrets is refused
    /// ([`Error::FailedPrecondition`](crate::Error::FailedPrecondition))
    /// unless [`with_secrets`](DeleteEnvironment::with_secrets); the workspace
    /// default is always refused.
    pub fn delete(&self, name: impl Into<String>) -> DeleteEnvironment {
        DeleteEnvironment {
            client: self.client.clone(),
            name: name.into(),
            with_secrets: false,
        }
    }
}

/// A pending environment deletion; `.await` it.
#[must_use = "a builder does nothing until it is awaited"]
#[derive(Debug, Clone)]
pub struct DeleteEnvironment {
    client: Client,
    name: String,
    with_secrets: bool,
}

impl DeleteEnvironment {
    /// Also delete the secrets in it, irreversibly.
    pub fn with_secrets(mut self, yes: bool) -> Self {
        self.with_secrets = yes;
        self
    }
}

impl IntoFuture for DeleteEnvironment {
    type Output = Result<()>;
    type IntoFuture = BoxFuture<Self::Output>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let query = [(
                "with_secrets",
                if self.with_secrets { "true" } else { "" }.to_owned(),
            )];
            self.client
                .call_empty(Method::DELETE, &["environments", &self.name], &query)
                .await
        })
    }
}
