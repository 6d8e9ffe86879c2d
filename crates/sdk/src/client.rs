//! The connection to a latchkey server: configuration, HTTP, the shared
//! client of Modal-style calls.

use std::{
    fmt,
    sync::{Arc, Mutex},
    time::Duration,
};

use reqwest::{Method, Url};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::{
    environments::Environments, objects::SecretObjects, tokens::TokenInfo, tokens::Tokens, Config,
    Error, Result,
};

/// How long to wait for a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a whole request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// How long downloading a backup may take.
const BACKUP_TIMEOUT: Duration = Duration::from_secs(6 * 3600);

/// A client of one latchkey server, with one token.
///
/// Cheap to clone (clones share a connection pool). Every call is async;
/// see [`blocking`](crate::blocking) for synchronous code.
///
/// ```no_run
/// # async fn f() -> latchkey::Result<()> {
/// let client = latchkey::Client::from_env()?;
/// let me = client.whoami().await?;
/// println!("{} in workspace {}", me.token.name, me.workspace_name);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    /// `<server_url>/api/v1/`
    base: Url,
    config: Config,
}

/// The client that Modal-style calls use; see [`Client::shared`].
static SHARED: Mutex<Option<Client>> = Mutex::new(None);

impl Client {
    /// A client for `config`. Fails only on a malformed server URL.
    pub fn new(config: Config) -> Result<Self> {
        Self::build(config, true)
    }

    /// A client configured from the environment, a profile or a local
    /// server's admin token: see [`Config::from_env`].
    pub fn from_env() -> Result<Self> {
        Self::new(Config::from_env()?)
    }

    fn build(config: Config, pool: bool) -> Result<Self> {
        let base = base_url(config.server_url())?;
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("latchkey-sdk/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT);
        if base.host_str().is_some_and(|h| {
            h == "localhost"
                || h.parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
                || h == "[::1]"
        }) {
            // A proxy from the environment must not see local traffic.
            builder = builder.no_proxy();
        }
        for ca in extra_roots()? {
            builder = builder.add_root_certificate(ca);
        }
        if !pool {
            // A client shared by several runtimes (the shared client, used
            // from async code and from `blocking`) must not keep connections
            // whose driver task dies with the runtime that opened them.
            builder = builder.pool_max_idle_per_host(0);
        }
        let http = builder
            .build()
            .map_err(|e| Error::config(format!("cannot set up the HTTP client: {e}")))?;
        Ok(Self {
            inner: Arc::new(Inner { http, base, config }),
        })
    }

    /// The process-wide client that Modal-style calls use
    /// ([`Secret::objects`](crate::Secret::objects), [`Secret::info`](crate::Secret::info),
    /// [`Secret::resolve`](crate::Secret::resolve), ...): the one given to
    /// [`Client::set_shared`], else one built by [`Client::from_env`] on first
    /// use and kept (a failure is returned and retried on the next call).
    pub fn shared() -> Result<Self> {
        let mut slot = SHARED
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(client) = &*slot {
            return Ok(client.clone());
        }
        let client = Self::build(Config::from_env()?, false)?;
        *slot = Some(client.clone());
        Ok(client)
    }

    /// Makes Modal-style calls of this process use `config` from now on.
    pub fn set_shared(config: Config) -> Result<()> {
        let client = Self::build(config, false)?;
        *SHARED
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(client);
        Ok(())
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The server's URL.
    pub fn server_url(&self) -> &str {
        self.inner.config.server_url()
    }

    /// The environment used when a call names none (`None`: the
    /// workspace default).
    pub fn environment(&self) -> Option<&str> {
        self.inner.config.environment()
    }

    /// A client for the same server and token whose calls default to
    /// `environment` (`None`: the workspace default).
    pub fn with_environment(&self, environment: Option<&str>) -> Self {
        Self {
            inner: Arc::new(Inner {
                http: self.inner.http.clone(),
                base: self.inner.base.clone(),
                config: self
                    .inner
                    .config
                    .clone()
                    .with_environment(environment.map(str::to_owned)),
            }),
        }
    }

    /// The caller: the token and its workspace. Also the way to check that a
    /// token works (`latchkey login` does).
    pub async fn whoami(&self) -> Result<WhoAmI> {
        self.call(Method::GET, &["whoami"], &[], None::<&()>).await
    }

    /// Named secrets: create, list, delete.
    pub fn secrets(&self) -> SecretObjects {
        SecretObjects::new(Some(self.clone()))
    }

    /// Environments: list, create, rename, delete.
    pub fn environments(&self) -> Environments {
        Environments::new(self.clone())
    }

    /// Tokens: create, list, revoke.
    pub fn tokens(&self) -> Tokens {
        Tokens::new(self.clone())
    }

    /// The audit log: events, its head, verification, and who read what.
    pub fn audit(&self) -> crate::Audit {
        crate::Audit::new(self.clone())
    }

    /// The environment a call uses: its own, else the client's, else the
    /// server's default (empty).
    pub(crate) fn environment_or_default(&self, explicit: Option<&str>) -> String {
        explicit
            .or(self.environment())
            .unwrap_or_default()
            .to_owned()
    }

    /// One request to `/api/v1/<segments...>`; the answer's JSON as `T`.
    pub(crate) async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, String)],
        body: Option<&impl Serialize>,
    ) -> Result<T> {
        let bytes = self.send(method, segments, query, body).await?;
        serde_json::from_slice(&bytes).map_err(|e| Error::Server {
            status: 200,
            message: format!("unexpected answer from {}: {e}", self.server_url()),
        })
    }

    /// One request whose answer has no body worth reading.
    pub(crate) async fn call_empty(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, String)],
    ) -> Result<()> {
        self.send(method, segments, query, None::<&()>).await?;
        Ok(())
    }

    async fn send(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, String)],
        body: Option<&impl Serialize>,
    ) -> Result<Vec<u8>> {
        let response = self
            .request(method, segments, query, body, REQUEST_TIMEOUT)
            .await?;
        let bytes = response.bytes().await.map_err(|e| self.transport(e))?;
        Ok(bytes.to_vec())
    }

    /// Downloads a backup of the whole store (`GET /backup`; an admin token
    /// of the server's first workspace), writing it to `out` as it arrives
    /// and calling `on_chunk` with each piece. Returns the bytes written. A
    /// backup cut short (the server failed midway) is an error here, or
    /// lacks its end marker, which `latchkey backup verify` reports.
    pub async fn backup_into(
        &self,
        out: &mut (dyn std::io::Write + Send),
        on_chunk: &mut (dyn FnMut(&[u8]) + Send),
    ) -> Result<u64> {
        let mut response = self
            .request(Method::GET, &["backup"], &[], None::<&()>, BACKUP_TIMEOUT)
            .await?;
        let mut written = 0u64;
        while let Some(chunk) = response.chunk().await.map_err(|e| self.transport(e))? {
            out.write_all(&chunk)
                .map_err(|e| Error::io("the backup file", e))?;
            on_chunk(&chunk);
            written += chunk.len() as u64;
        }
        Ok(written)
    }

    /// Rotates the server's master key online (an admin token of its first
    /// workspace): calls `on_line` with each JSON line the server streams
    /// (`{"done": N, "total": T}` per batch, then `{"finished": true,
    /// "key_id": ...}` or `{"error": ...}`).
    pub async fn rotate_master_key(&self, on_line: &mut (dyn FnMut(&[u8]) + Send)) -> Result<()> {
        let mut response = self
            .request(
                Method::POST,
                &["key", "rotate"],
                &[],
                None::<&()>,
                BACKUP_TIMEOUT,
            )
            .await?;
        let mut pending = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| self.transport(e))? {
            pending.extend_from_slice(&chunk);
            while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                on_line(&line[..end]);
            }
        }
        Ok(())
    }

    /// One request; the answer when it is a success, its error otherwise.
    async fn request(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, String)],
        body: Option<&impl Serialize>,
        timeout: Duration,
    ) -> Result<reqwest::Response> {
        let mut url = self.inner.base.clone();
        url.path_segments_mut()
            .map_err(|()| Error::config("the server URL cannot have a path"))?
            .pop_if_empty()
            .extend(segments);
        {
            let mut pairs = url.query_pairs_mut();
            for (k, v) in query.iter().filter(|(_, v)| !v.is_empty()) {
                pairs.append_pair(k, v);
            }
        }
        if url.query() == Some("") {
            url.set_query(None);
        }
        let config = &self.inner.config;
        let mut request = self.inner.http.request(method, url).header(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {}:{}", config.token_id(), config.token_secret()),
        );
        request = request.timeout(timeout);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| self.transport(e))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let bytes = response.bytes().await.map_err(|e| self.transport(e))?;
        Err(Error::from_answer(status.as_u16(), &bytes))
    }

    fn transport(&self, error: reqwest::Error) -> Error {
        let mut cause: &dyn std::error::Error = &error;
        while let Some(next) = cause.source() {
            cause = next;
        }
        let what = if error.is_timeout() {
            "timed out".to_owned()
        } else {
            cause.to_string()
        };
        Error::Transport {
            message: format!(
                "Cannot reach the latchkey server at {}: {what}",
                self.server_url()
            ),
            source: Box::new(error.without_url()),
        }
    }
}

/// The variable naming a PEM file of CA certificates trusted beside the
/// system's roots (a private CA that signed the server's certificate).
pub const CA_CERT_VAR: &str = "LATCHKEY_CA_CERT";

/// The certificates of [`CA_CERT_VAR`]'s file; none when it is not set.
fn extra_roots() -> Result<Vec<reqwest::Certificate>> {
    let Some(path) = std::env::var_os(CA_CERT_VAR).filter(|p| !p.is_empty()) else {
        return Ok(Vec::new());
    };
    let path = std::path::PathBuf::from(path);
    let pem = std::fs::read(&path).map_err(|e| {
        Error::config(format!(
            "{CA_CERT_VAR}: cannot read {}: {e}",
            path.display()
        ))
    })?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
        Error::config(format!(
            "{CA_CERT_VAR}: {} is not a PEM file of certificates: {e}",
            path.display()
        ))
    })?;
    if certs.is_empty() {
        return Err(Error::config(format!(
            "{CA_CERT_VAR}: {} holds no certificate (expected PEM: -----BEGIN CERTIFICATE-----)",
            path.display()
        )));
    }
    Ok(certs)
}

/// `<server>/api/v1/` from a server URL given with or without a scheme.
fn base_url(server_url: &str) -> Result<Url> {
    let text = server_url.trim().trim_end_matches('/');
    let text = if text.contains("://") {
        text.to_owned()
    } else {
        format!("http://{text}")
    };
    let mut url = Url::parse(&text)
        .map_err(|e| Error::config(format!("Invalid server URL '{server_url}': {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
        return Err(Error::config(format!(
            "Invalid server URL '{server_url}': use http:// or https://"
        )));
    }
    let path = format!("{}/api/v1/", url.path().trim_end_matches('/'));
    url.set_path(&path);
    url.set_query(None);
    Ok(url)
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// Who the caller is: [`Client::whoami`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct WhoAmI {
    /// The workspace's id (`ac-...`).
    pub workspace_id: String,
    /// The workspace's name.
    pub workspace_name: String,
    /// The token making the calls.
    pub token: TokenInfo,
    /// The head of the server's audit chain (absent from older servers).
    #[serde(default)]
    pub audit_head: Option<crate::AuditHead>,
}

#[cfg(test)]
mod tests {
    use super::base_url;

    #[test]
    fn base_urls() {
        assert_eq!(
            base_url("http://127.0.0.1:7420").unwrap().as_str(),
            "http://127.0.0.1:7420/api/v1/"
        );
        assert_eq!(
            base_url("127.0.0.1:7420/").unwrap().as_str(),
            "http://127.0.0.1:7420/api/v1/"
        );
        assert_eq!(
            base_url("https://x.example/latchkey/").unwrap().as_str(),
            "https://x.example/latchkey/api/v1/"
        );
        assert!(base_url("ftp://x").is_err());
    }
}
