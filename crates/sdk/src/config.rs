//! Where a client's server, token and environment come from.

use std::{fmt, path::PathBuf};

use latchkey_core::admin_token::{AdminTokenError, AdminTokenFile};
use zeroize::Zeroizing;

use crate::{profile::ProfileFile, Error, Result};

/// The URL of a local server started with the defaults.
pub const DEFAULT_SERVER_URL: &str = "http://127.0.0.1:7420";

/// Where a [`Config`]'s token came from (for messages such as "using
/// profile 'prod'").
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigSource {
    /// Given in code ([`Config::new`]).
    Explicit,
    /// `LATCHKEY_TOKEN_ID` and `LATCHKEY_TOKEN_SECRET`.
    Environment,
    /// A profile of the profile file.
    Profile {
        /// The profile's name.
        name: String,
        /// The profile file.
        path: PathBuf,
    },
    /// The `admin-token` file of a local server's data dir (zero-config).
    AdminTokenFile {
        /// The file.
        path: PathBuf,
    },
}

/// Everything a [`Client`](crate::Client) needs: the server, a token, and the
/// environment used when a call names none.
///
/// `Debug` never shows the token secret.
#[derive(Clone)]
pub struct Config {
    server_url: String,
    token_id: String,
    token_secret: Zeroizing<String>,
    environment: Option<String>,
    source: ConfigSource,
}

impl Config {
    /// A configuration given in code.
    pub fn new(
        server_url: impl Into<String>,
        token_id: impl Into<String>,
        token_secret: impl Into<String>,
    ) -> Self {
        Self {
            server_url: server_url.into(),
            token_id: token_id.into(),
            token_secret: Zeroizing::new(token_secret.into()),
            environment: None,
            source: ConfigSource::Explicit,
        }
    }

    /// The same configuration with a default environment (`None`: the
    /// workspace default).
    pub fn with_environment(mut self, environment: Option<String>) -> Self {
        self.environment = environment.filter(|e| !e.is_empty());
        self
    }

    /// The server's URL.
    pub fn server_url(&self) -> &str {
        &self.server_url
    }

    /// The token's id (`ak-...`).
    pub fn token_id(&self) -> &str {
        &self.token_id
    }

    /// The token's secret (`as-...`). Keep it out of logs.
    pub fn token_secret(&self) -> &str {
        &self.token_secret
    }

    /// The environment used when a call names none; `None` is the
    /// workspace default.
    pub fn environment(&self) -> Option<&str> {
        self.environment.as_deref()
    }

    /// Where the token came from.
    pub fn source(&self) -> &ConfigSource {
        &self.source
    }

    /// The configuration of this process, looked up in order:
    ///
    /// 1. `LATCHKEY_SERVER_URL`, `LATCHKEY_TOKEN_ID`, `LATCHKEY_TOKEN_SECRET`,
    ///    `LATCHKEY_ENVIRONMENT`; each overrides the profile's value;
    /// 2. the profile `LATCHKEY_PROFILE`, else the active profile, of the
    ///    profile file (`LATCHKEY_CONFIG_PATH`, default `~/.latchkey.toml`);
    /// 3. zero-config: the `admin-token` file in the default data dir of a
    ///    local server (`$XDG_DATA_HOME/latchkey`, else
    ///    `~/.local/share/latchkey`), with its server URL, else
    ///    [`DEFAULT_SERVER_URL`].
    ///
    /// Empty variables count as unset.
    pub fn from_env() -> Result<Self> {
        Self::from_env_with(&|name| std::env::var(name).ok())
    }

    /// [`Config::from_env`] with variables looked up by `env` instead of the
    /// process environment (for tests and for callers that hold their own
    /// settings, like a CLI's flags).
    pub fn from_env_with(env: &dyn Fn(&str) -> Option<String>) -> Result<Self> {
        let var = |name: &str| env(name).filter(|v| !v.is_empty());

        // The profile file, if there is one to read.
        let profile = match crate::profile::default_path_with(env) {
            Ok(path) => {
                let file = ProfileFile::load(&path)?;
                match var("LATCHKEY_PROFILE") {
                    Some(name) => match file.get(&name) {
                        Some(p) => Some((name, p.clone(), path)),
                        None => {
                            return Err(Error::config(format!(
                                "LATCHKEY_PROFILE is '{name}', but {} has no such profile{}",
                                path.display(),
                                list_profiles(&file)
                            )))
                        }
                    },
                    None => file
                        .active()
                        .map(|(name, p)| (name.to_owned(), p.clone(), path)),
                }
            }
            Err(_) => None,
        };

        let env_id = var("LATCHKEY_TOKEN_ID");
        let env_secret = var("LATCHKEY_TOKEN_SECRET");
        let (token_id, token_secret, source, file_url) = match (env_id, env_secret) {
            (Some(id), Some(secret)) => (id, secret, ConfigSource::Environment, None),
            (Some(_), None) => {
                return Err(Error::config(
                    "LATCHKEY_TOKEN_ID is set but LATCHKEY_TOKEN_SECRET is not; set both",
                ))
            }
            (None, Some(_)) => {
                return Err(Error::config(
                    "LATCHKEY_TOKEN_SECRET is set but LATCHKEY_TOKEN_ID is not; set both",
                ))
            }
            (None, None) => match &profile {
                Some((name, p, path)) => match (&p.token_id, &p.token_secret) {
                    (Some(id), Some(secret)) => (
                        id.clone(),
                        secret.clone(),
                        ConfigSource::Profile {
                            name: name.clone(),
                            path: path.clone(),
                        },
                        None,
                    ),
                    _ => {
                        return Err(Error::config(format!(
                            "Profile '{name}' in {} lacks token_id or token_secret; \
                             run `latchkey login` again",
                            path.display()
                        )))
                    }
                },
                None => {
                    let (id, secret, url, path) = admin_token_file(env)?;
                    (id, secret, ConfigSource::AdminTokenFile { path }, url)
                }
            },
        };
        let profile_value = |f: fn(&crate::Profile) -> &Option<String>| {
            profile
                .as_ref()
                .and_then(|(_, p, _)| f(p).clone())
                .filter(|v| !v.is_empty())
        };
        let server_url = var("LATCHKEY_SERVER_URL")
            .or_else(|| profile_value(|p| &p.server_url))
            .or(file_url)
            .unwrap_or_else(|| DEFAULT_SERVER_URL.to_owned());
        let environment = var("LATCHKEY_ENVIRONMENT").or_else(|| profile_value(|p| &p.environment));
        Ok(Self {
            server_url,
            token_id,
            token_secret: Zeroizing::new(token_secret),
            environment,
            source,
        })
    }
}

fn list_profiles(file: &ProfileFile) -> String {
    let names: Vec<&str> = file.profiles().keys().map(String::as_str).collect();
    if names.is_empty() {
        String::new()
    } else {
        format!(" (profiles: {})", names.join(", "))
    }
}

/// The default data dir of a local server, with variables from `env`.
fn default_data_dir(env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    let var = |name: &str| env(name).filter(|v| !v.is_empty());
    var("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| var("HOME").map(|home| PathBuf::from(home).join(".local/share")))
        .map(|base| base.join("latchkey"))
}

/// Reads `DATA_DIR/admin-token`: (token id, secret, server URL, path).
fn admin_token_file(
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(String, String, Option<String>, PathBuf)> {
    let how = "set LATCHKEY_TOKEN_ID and LATCHKEY_TOKEN_SECRET, run `latchkey login`, \
               or start a local server with `latchkey serve`";
    let Some(dir) = default_data_dir(env) else {
        return Err(Error::config(format!(
            "No latchkey token is configured: {how}"
        )));
    };
    let path = dir.join(latchkey_core::paths::ADMIN_TOKEN_FILE);
    match AdminTokenFile::read(&path) {
        Ok(file) => {
            let secret = file.token_secret().to_owned();
            Ok((file.token_id, secret, file.server_url, path))
        }
        Err(AdminTokenError::Read(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(Error::config(format!(
                "No latchkey token is configured and there is no local server's token in {}: {how}",
                path.display()
            )))
        }
        Err(AdminTokenError::Read(e)) => Err(Error::io(path, e)),
        Err(AdminTokenError::Incomplete) => Err(Error::config(format!(
            "{} lacks LATCHKEY_TOKEN_ID or LATCHKEY_TOKEN_SECRET",
            path.display()
        ))),
        Err(e) => Err(Error::config(format!("{}: {e}", path.display()))),
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("server_url", &self.server_url)
            .field("token_id", &self.token_id)
            .field("token_secret", &"<redacted>")
            .field("environment", &self.environment)
            .field("source", &self.source)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::{Profile, ProfileFile};

    fn lookup(vars: &[(&str, String)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn environment_then_profile_then_admin_token_file() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().display().to_string();
        let data = dir.path().join(".local/share/latchkey");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(
            data.join("admin-token"),
            "LATCHKEY_SERVER_URL=http://127.0.0.1:9999\nLATCHKEY_TOKEN_ID=ak-file\nLATCHKEY_TOKEN_SECRET=as-file\n",
        )
        .unwrap();

        // Zero-config: the admin token file, with its URL.
        let c = Config::from_env_with(&lookup(&[("HOME", home.clone())])).unwrap();
        assert_eq!(c.token_id(), "ak-file");
        assert_eq!(c.server_url(), "http://127.0.0.1:9999");
        assert!(matches!(c.source(), ConfigSource::AdminTokenFile { .. }));
        assert!(!format!("{c:?}").contains("as-file"));

        // A profile wins over the file.
        let mut file = ProfileFile::load(dir.path().join(".latchkey.toml")).unwrap();
        file.insert(
            "a",
            Profile::new("http://a", "ak-a", "as-a").with_environment("dev"),
        )
        .unwrap();
        file.insert("b", Profile::new("http://b", "ak-b", "as-b"))
            .unwrap();
        file.activate("b").unwrap();
        file.save().unwrap();
        let c = Config::from_env_with(&lookup(&[("HOME", home.clone())])).unwrap();
        assert_eq!((c.token_id(), c.server_url()), ("ak-b", "http://b"));
        let c = Config::from_env_with(&lookup(&[
            ("HOME", home.clone()),
            ("LATCHKEY_PROFILE", "a".to_owned()),
        ]))
        .unwrap();
        assert_eq!((c.token_id(), c.environment()), ("ak-a", Some("dev")));
        let e = Config::from_env_with(&lookup(&[
            ("HOME", home.clone()),
            ("LATCHKEY_PROFILE", "zz".to_owned()),
        ]))
        .unwrap_err();
        assert!(
            e.to_string().contains("'zz'") && e.to_string().contains("a, b"),
            "{e}"
        );

        // Variables win over the profile, each on its own.
        let c = Config::from_env_with(&lookup(&[
            ("HOME", home.clone()),
            ("LATCHKEY_TOKEN_ID", "ak-env".to_owned()),
            ("LATCHKEY_TOKEN_SECRET", "as-env".to_owned()),
            ("LATCHKEY_ENVIRONMENT", "prod".to_owned()),
        ]))
        .unwrap();
        assert_eq!(
            (c.token_id(), c.server_url(), c.environment()),
            ("ak-env", "http://b", Some("prod"))
        );
        assert_eq!(c.source(), &ConfigSource::Environment);
        let e = Config::from_env_with(&lookup(&[
            ("HOME", home),
            ("LATCHKEY_TOKEN_ID", "ak-env".to_owned()),
        ]))
        .unwrap_err();
        assert!(e.to_string().contains("LATCHKEY_TOKEN_SECRET"), "{e}");

        // LATCHKEY_CONFIG_PATH elsewhere, nothing there, no admin token: a
        // message that says what to do.
        let empty = tempfile::tempdir().unwrap();
        let e = Config::from_env_with(&lookup(&[
            ("HOME", empty.path().display().to_string()),
            (
                "LATCHKEY_CONFIG_PATH",
                empty.path().join("none.toml").display().to_string(),
            ),
        ]))
        .unwrap_err();
        assert!(matches!(e, Error::Config { .. }));
        assert!(e.to_string().contains("latchkey login"), "{e}");
    }
}
