//! A named secret's versions: its history and rollbacks.
//!
//! Every change of a named secret makes a new version (1, 2, 3... without
//! gaps). The server keeps the most recent ones (`latchkey serve
//! --keep-versions`, 20 by default) and destroys older ones with their data
//! keys. A history tells who changed which keys, and how; it never holds a
//! value. A rollback does not rewrite history: it makes a new version with
//! the contents of an old one.

use std::{fmt, future::IntoFuture};

use reqwest::Method;
use serde::{Deserialize, Serialize};

use crate::{objects::BoxFuture, secret::SecretInfo, time::Timestamp, Client, Error, Result};

/// Largest page of versions the server returns.
const MAX_PAGE: u32 = 1_000;

/// How a version was made.
///
/// Its text form ([`Display`](fmt::Display), and the `action` field on the
/// wire) is `created`, `updated`, `overwritten` or `rolled back to N`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum VersionAction {
    /// The secret was created with these contents.
    Created,
    /// An update merged changes into the version before
    /// ([`Secret::update`](crate::Secret::update)).
    Updated,
    /// A create with overwrite replaced the contents
    /// ([`CreateSecret::overwrite`](crate::CreateSecret::overwrite), the
    /// CLI's `secret create --force`).
    Overwritten,
    /// A rollback copied the contents of an earlier version
    /// ([`Secret::rollback`](crate::Secret::rollback)).
    RolledBack {
        /// The version whose contents were copied.
        to: i64,
    },
    /// An action this version of the SDK does not know, as the server
    /// wrote it (a newer server may record new kinds of change).
    Other(String),
}

impl VersionAction {
    /// Reads the wire's `action` text and `rolled_back_to` number.
    fn from_wire(action: String, rolled_back_to: Option<i64>) -> Self {
        match (action.as_str(), rolled_back_to) {
            ("created", _) => VersionAction::Created,
            ("updated", _) => VersionAction::Updated,
            ("overwritten", _) => VersionAction::Overwritten,
            (_, Some(to)) => VersionAction::RolledBack { to },
            (text, None) => match text
                .strip_prefix("rolled back to ")
                .and_then(|n| n.parse().ok())
            {
                Some(to) => VersionAction::RolledBack { to },
                None => VersionAction::Other(action),
            },
        }
    }

    /// For a rollback: the version whose contents it copied.
    pub fn rolled_back_to(&self) -> Option<i64> {
        match self {
            VersionAction::RolledBack { to } => Some(*to),
            _ => None,
        }
    }
}

impl fmt::Display for VersionAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VersionAction::Created => f.write_str("created"),
            VersionAction::Updated => f.write_str("updated"),
            VersionAction::Overwritten => f.write_str("overwritten"),
            VersionAction::RolledBack { to } => write!(f, "rolled back to {to}"),
            VersionAction::Other(text) => f.write_str(text),
        }
    }
}

/// One kept version of a named secret: who made it, when, how, and the
/// names of the keys it added, removed and changed against the version
/// before it (compared by the server; never a value).
///
/// It is serialized as the server writes it (`action` as text, plus
/// `rolled_back_to`), so that a program can pass it on as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "WireVersion", into = "WireVersion")]
#[non_exhaustive]
pub struct VersionInfo {
    /// Its number: 1, 2, 3... per secret, without gaps.
    pub version: i64,
    /// When it was made.
    pub created_at: Timestamp,
    /// The name of the token that made it (empty when not known: a version
    /// carried over from a server that kept no history).
    pub created_by: String,
    /// How it was made.
    pub action: VersionAction,
    /// Its keys, sorted.
    pub keys: Vec<String>,
    /// Keys it added against the version before, sorted; `None` when that
    /// version was never kept, so the change is not known.
    pub keys_added: Option<Vec<String>>,
    /// Keys it removed, sorted; `None` as for `keys_added`.
    pub keys_removed: Option<Vec<String>>,
    /// Keys whose value it changed, sorted; `None` as for `keys_added`.
    pub keys_changed: Option<Vec<String>>,
}

/// [`VersionInfo`] as the JSON API writes it.
#[derive(Clone, Serialize, Deserialize)]
struct WireVersion {
    version: i64,
    created_at: Timestamp,
    created_by: String,
    action: String,
    #[serde(default)]
    rolled_back_to: Option<i64>,
    keys: Vec<String>,
    #[serde(default)]
    keys_added: Option<Vec<String>>,
    #[serde(default)]
    keys_removed: Option<Vec<String>>,
    #[serde(default)]
    keys_changed: Option<Vec<String>>,
}

impl From<WireVersion> for VersionInfo {
    fn from(w: WireVersion) -> Self {
        Self {
            version: w.version,
            created_at: w.created_at,
            created_by: w.created_by,
            action: VersionAction::from_wire(w.action, w.rolled_back_to),
            keys: w.keys,
            keys_added: w.keys_added,
            keys_removed: w.keys_removed,
            keys_changed: w.keys_changed,
        }
    }
}

impl From<VersionInfo> for WireVersion {
    fn from(v: VersionInfo) -> Self {
        Self {
            version: v.version,
            created_at: v.created_at,
            created_by: v.created_by,
            rolled_back_to: v.action.rolled_back_to(),
            action: v.action.to_string(),
            keys: v.keys,
            keys_added: v.keys_added,
            keys_removed: v.keys_removed,
            keys_changed: v.keys_changed,
        }
    }
}

/// The secret a history or rollback acts on: its name and environment, or
/// why it has none (a local secret), reported when the call runs.
pub(crate) type Target = Result<(String, Option<String>)>;

fn client_or_shared(client: Option<Client>) -> Result<Client> {
    match client {
        Some(c) => Ok(c),
        None => Client::shared(),
    }
}

/// A pending [`Secret::history`](crate::Secret::history): the kept versions
/// of a named secret, newest first, fetched page after page; `.await` it.
#[must_use = "a builder does nothing until it is awaited"]
#[derive(Debug)]
pub struct SecretHistory {
    client: Option<Client>,
    target: Target,
    page_size: u32,
}

impl SecretHistory {
    pub(crate) fn new(client: Option<Client>, target: Target) -> Self {
        Self {
            client,
            target,
            page_size: MAX_PAGE,
        }
    }

    /// How many versions each request fetches (1 to 1000, default 1000).
    /// Paging is invisible either way; this is for tests and slow links.
    pub fn page_size(mut self, n: u32) -> Self {
        self.page_size = n.clamp(1, MAX_PAGE);
        self
    }

    async fn run(self) -> Result<Vec<VersionInfo>> {
        #[derive(Deserialize)]
        struct Page {
            items: Vec<VersionInfo>,
            next_before: Option<i64>,
        }
        let (name, env) = self.target?;
        let client = client_or_shared(self.client)?;
        let environment = client.environment_or_default(env.as_deref());
        let mut out: Vec<VersionInfo> = Vec::new();
        let mut before: Option<i64> = None;
        loop {
            let query = [
                ("environment", environment.clone()),
                ("before", before.map(|b| b.to_string()).unwrap_or_default()),
                ("limit", self.page_size.to_string()),
            ];
            let page: Page = client
                .call(
                    Method::GET,
                    &["secrets", &name, "versions"],
                    &query,
                    None::<&()>,
                )
                .await?;
            out.extend(page.items);
            match page.next_before {
                // Versions are numbered downwards page after page; a server
                // that answered otherwise would make this loop forever.
                Some(next) if before.is_none_or(|b| next < b) => before = Some(next),
                _ => break,
            }
        }
        Ok(out)
    }
}

impl IntoFuture for SecretHistory {
    type Output = Result<Vec<VersionInfo>>;
    type IntoFuture = BoxFuture<Self::Output>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.run())
    }
}

/// A pending [`Secret::rollback`](crate::Secret::rollback); `.await` it for
/// the secret's metadata at its new version.
#[must_use = "a builder does nothing until it is awaited"]
#[derive(Debug)]
pub struct Rollback {
    client: Option<Client>,
    target: Target,
    to: i64,
    expected_version: Option<i64>,
}

impl Rollback {
    pub(crate) fn new(client: Option<Client>, target: Target, to: i64) -> Self {
        Self {
            client,
            target,
            to,
            expected_version: None,
        }
    }

    /// Roll back only if `version` is still the current version, else fail
    /// with [`Error::FailedPrecondition`] and change nothing: a
    /// compare-and-swap for callers that looked at the secret first.
    pub fn expected_version(mut self, version: i64) -> Self {
        self.expected_version = Some(version);
        self
    }

    async fn run(self) -> Result<SecretInfo> {
        #[derive(Serialize)]
        struct Body {
            to: i64,
            #[serde(skip_serializing_if = "Option::is_none")]
            expected_version: Option<i64>,
        }
        let (name, env) = self.target?;
        latchkey_core::rules::check_version(self.to).map_err(Error::from)?;
        let client = client_or_shared(self.client)?;
        let query = [("environment", client.environment_or_default(env.as_deref()))];
        client
            .call(
                Method::POST,
                &["secrets", &name, "rollback"],
                &query,
                Some(&Body {
                    to: self.to,
                    expected_version: self.expected_version,
                }),
            )
            .await
    }
}

impl IntoFuture for Rollback {
    type Output = Result<SecretInfo>;
    type IntoFuture = BoxFuture<Self::Output>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.run())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(action: &str, rolled_back_to: Option<i64>) -> serde_json::Value {
        serde_json::json!({
            "version": 4,
            "created_at": "2025-01-01T12:00:00.000001Z",
            "created_by": "admin",
            "action": action,
            "rolled_back_to": rolled_back_to,
            "keys": ["A", "B"],
            "keys_added": ["B"],
            "keys_removed": [],
            "keys_changed": null,
        })
    }

    #[test]
    fn actions_are_typed_and_written_back_as_the_server_wrote_them() {
        let v: VersionInfo = serde_json::from_value(wire("rolled back to 2", Some(2))).unwrap();
        assert_eq!(v.action, VersionAction::RolledBack { to: 2 });
        assert_eq!(v.action.to_string(), "rolled back to 2");
        assert_eq!(v.keys_added.as_deref(), Some(&["B".to_owned()][..]));
        assert_eq!(v.keys_changed, None);
        assert_eq!(
            serde_json::to_value(&v).unwrap(),
            wire("rolled back to 2", Some(2))
        );
        for (text, action) in [
            ("created", VersionAction::Created),
            ("updated", VersionAction::Updated),
            ("overwritten", VersionAction::Overwritten),
        ] {
            let v: VersionInfo = serde_json::from_value(wire(text, None)).unwrap();
            assert_eq!(v.action, action);
            assert_eq!(v.action.to_string(), text);
            assert_eq!(serde_json::to_value(&v).unwrap(), wire(text, None));
        }
        // Without the number beside it, the text alone says it.
        let v: VersionInfo = serde_json::from_value(wire("rolled back to 7", None)).unwrap();
        assert_eq!(v.action.rolled_back_to(), Some(7));
        // An action of a newer server is kept, not an error.
        let v: VersionInfo = serde_json::from_value(wire("rotated", None)).unwrap();
        assert_eq!(v.action, VersionAction::Other("rotated".into()));
        assert_eq!(serde_json::to_value(&v).unwrap(), wire("rotated", None));
    }
}
