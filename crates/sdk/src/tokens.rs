//! Tokens: who may call the server, and what they may do.

use std::{fmt, future::IntoFuture, time::Duration};

use reqwest::Method;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::{objects::BoxFuture, time::Timestamp, Client, Result};

pub use latchkey_core::Role;

/// A token, without its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TokenInfo {
    /// Its id (`ak-...`), public.
    pub id: String,
    /// Its name: the `created_by` of what it creates.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// The environments it is limited to; `None` means all.
    pub environments: Option<Vec<String>>,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it was revoked, if it was.
    pub revoked_at: Option<Timestamp>,
    /// When it stops being accepted; `None`: never.
    #[serde(default)]
    pub expires_at: Option<Timestamp>,
    /// The last time it authenticated a request, to the minute.
    #[serde(default)]
    pub last_used_at: Option<Timestamp>,
    /// After a rotation with a grace period: until when the secret it
    /// replaced is still accepted.
    #[serde(default)]
    pub previous_secret_until: Option<Timestamp>,
}

/// A token's secret (`as-...`). `Debug` and `Display` hide it; it is wiped
/// from memory when dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenSecret(Zeroizing<String>);

impl TokenSecret {
    /// The secret itself: show it once, store it safely, never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for TokenSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenSecret(<redacted>)")
    }
}

/// A token just created or rotated, with its secret: the only time the
/// server shows it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct NewToken {
    /// The token.
    pub info: TokenInfo,
    /// Its secret.
    pub secret: TokenSecret,
}

impl NewToken {
    /// A [`Config`](crate::Config) that uses this token on `server_url`.
    pub fn config(&self, server_url: impl Into<String>) -> crate::Config {
        crate::Config::new(server_url, &self.info.id, self.secret.expose())
    }
}

/// Token management, from [`Client::tokens`]. Needs an admin token.
#[derive(Debug, Clone)]
pub struct Tokens {
    client: Client,
}

impl Tokens {
    pub(crate) fn new(client: Client) -> Self {
        Self { client }
    }

    /// The workspace's tokens, oldest first, revoked ones included.
    pub async fn list(&self) -> Result<Vec<TokenInfo>> {
        #[derive(Deserialize)]
        struct List {
            items: Vec<TokenInfo>,
        }
        let list: List = self
            .client
            .call(Method::GET, &["tokens"], &[], None::<&()>)
            .await?;
        Ok(list.items)
    }

    /// Creates a token named `name` with `role`; see
    /// [`environments`](CreateToken::environments).
    pub fn create(&self, name: impl Into<String>, role: Role) -> CreateToken {
        CreateToken {
            client: self.client.clone(),
            name: name.into(),
            role,
            environments: None,
            ttl: None,
        }
    }

    /// Gives the token `id` (`ak-...`) a new secret, returned this once; the
    /// secret it replaces stays accepted for `grace` (not at all when
    /// `None`). The token keeps its id, name, role, environments and expiry.
    pub async fn rotate(&self, id: &str, grace: Option<Duration>) -> Result<NewToken> {
        #[derive(Serialize)]
        struct Body {
            #[serde(skip_serializing_if = "Option::is_none")]
            grace: Option<String>,
        }
        let answer: Answer = self
            .client
            .call(
                Method::POST,
                &["tokens", id, "rotate"],
                &[],
                Some(&Body {
                    grace: grace.map(duration_text),
                }),
            )
            .await?;
        Ok(answer.into())
    }

    /// Revokes the token `id` (`ak-...`). The workspace's last admin token
    /// cannot be revoked.
    pub async fn revoke(&self, id: &str) -> Result<()> {
        self.client
            .call_empty(Method::DELETE, &["tokens", id], &[])
            .await
    }
}

/// A pending token creation; `.await` it.
#[must_use = "a builder does nothing until it is awaited"]
#[derive(Debug, Clone)]
pub struct CreateToken {
    client: Client,
    name: String,
    role: Role,
    environments: Option<Vec<String>>,
    ttl: Option<Duration>,
}

/// A duration as the API takes it: whole seconds (at least one).
fn duration_text(d: Duration) -> String {
    // A sub-second remainder rounds up, so that a positive duration never
    // becomes the zero the server refuses.
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    format!("{secs}s")
}

/// The answer of a creation or rotation.
#[derive(Deserialize)]
struct Answer {
    token: TokenInfo,
    secret: String,
}

impl From<Answer> for NewToken {
    fn from(answer: Answer) -> Self {
        NewToken {
            info: answer.token,
            secret: TokenSecret(Zeroizing::new(answer.secret)),
        }
    }
}

impl CreateToken {
    /// Make it expire `ttl` from now (default: never). A zero `ttl` is
    /// refused by the server.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// Limit the token to these environments (default: all).
    pub fn environments<I: IntoIterator<Item = S>, S: Into<String>>(mut self, envs: I) -> Self {
        self.environments = Some(envs.into_iter().map(Into::into).collect());
        self
    }
}

impl IntoFuture for CreateToken {
    type Output = Result<NewToken>;
    type IntoFuture = BoxFuture<Self::Output>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            #[derive(Serialize)]
            struct Body<'a> {
                name: &'a str,
                role: Role,
                #[serde(skip_serializing_if = "Option::is_none")]
                environments: Option<&'a [String]>,
                #[serde(skip_serializing_if = "Option::is_none")]
                ttl: Option<String>,
            }
            let answer: Answer = self
                .client
                .call(
                    Method::POST,
                    &["tokens"],
                    &[],
                    Some(&Body {
                        name: &self.name,
                        role: self.role,
                        environments: self.environments.as_deref(),
                        ttl: if self.ttl == Some(Duration::ZERO) {
                            Some("0".to_owned())
                        } else {
                            self.ttl.map(duration_text)
                        },
                    }),
                )
                .await?;
            Ok(answer.into())
        })
    }
}
