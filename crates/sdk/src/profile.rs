//! The profile file, `~/.latchkey.toml`: named sets of credentials, one of
//! them active. `latchkey login` writes a profile; `latchkey profile
//! activate` switches; [`Client::from_env`](crate::Client::from_env) reads
//! the active one.
//!
//! ```toml
//! [default]
//! server_url = "http://127.0.0.1:7420"
//! token_id = "ak-..."
//! token_secret = "as-..."
//! active = true
//!
//! [prod]
//! server_url = "https://secrets.example.com"
//! token_id = "ak-..."
//! token_secret = "as-..."
//! environment = "prod"
//! ```
//!
//! The file is written atomically with mode 0600. Keys this version does
//! not know are kept; comments are not.

use std::{
    collections::BTreeMap,
    fmt,
    io::Write,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::{Error, Result};

/// Name of the profile file in the home directory.
pub const FILE_NAME: &str = ".latchkey.toml";

/// One profile: where the server is and which token to use.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Profile {
    /// The server's URL (`http://127.0.0.1:7420`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_url: Option<String>,
    /// The token's id (`ak-...`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_id: Option<String>,
    /// The token's secret (`as-...`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_secret: Option<String>,
    /// The environment used when a call names none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// Whether this is the active profile.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub active: bool,
    /// Keys this version does not know, kept as they were.
    #[serde(flatten)]
    extra: toml::Table,
}

impl Profile {
    /// A profile for `server_url` with a token.
    pub fn new(
        server_url: impl Into<String>,
        token_id: impl Into<String>,
        token_secret: impl Into<String>,
    ) -> Self {
        Self {
            server_url: Some(server_url.into()),
            token_id: Some(token_id.into()),
            token_secret: Some(token_secret.into()),
            ..Self::default()
        }
    }

    /// The same profile with a default environment.
    pub fn with_environment(mut self, environment: impl Into<String>) -> Self {
        self.environment = Some(environment.into());
        self
    }
}

impl fmt::Debug for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Profile")
            .field("server_url", &self.server_url)
            .field("token_id", &self.token_id)
            .field(
                "token_secret",
                &self.token_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("environment", &self.environment)
            .field("active", &self.active)
            .finish_non_exhaustive()
    }
}

/// The profile file: profiles by name, at most one active.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProfileFile {
    path: PathBuf,
    profiles: BTreeMap<String, Profile>,
}

impl ProfileFile {
    /// The file's path: `LATCHKEY_CONFIG_PATH`, else `~/.latchkey.toml`.
    pub fn default_path() -> Result<PathBuf> {
        default_path_with(&|name| std::env::var(name).ok())
    }

    /// Reads the file at `path`; a missing file is an empty set of profiles.
    pub fn load(path: impl Into<PathBuf>) -> Result<Self> {
        let path = path.into();
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => Zeroizing::new(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Self {
                    path,
                    profiles: BTreeMap::new(),
                })
            }
            Err(e) => return Err(Error::io(path, e)),
        };
        // toml's messages quote the offending line, which may hold a token
        // secret: report the position only.
        let profiles: BTreeMap<String, Profile> = toml::from_str(&text).map_err(|e| {
            let at = e
                .span()
                .map(|span| {
                    let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
                    format!(" at line {line}")
                })
                .unwrap_or_default();
            Error::config(format!(
                "The profile file {} is not valid{at}: expected [profile] tables \
                 with server_url, token_id, token_secret, environment and active",
                path.display()
            ))
        })?;
        Ok(Self { path, profiles })
    }

    /// Reads the file at [`ProfileFile::default_path`].
    pub fn load_default() -> Result<Self> {
        Self::load(Self::default_path()?)
    }

    /// Where this file is read from and written to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The profiles, by name.
    pub fn profiles(&self) -> &BTreeMap<String, Profile> {
        &self.profiles
    }

    /// The profile `name`.
    pub fn get(&self, name: &str) -> Option<&Profile> {
        self.profiles.get(name)
    }

    /// The active profile: the one marked `active`, else the only one.
    pub fn active(&self) -> Option<(&str, &Profile)> {
        self.profiles
            .iter()
            .find(|(_, p)| p.active)
            .or_else(|| {
                let mut all = self.profiles.iter();
                match (all.next(), all.next()) {
                    (Some(only), None) => Some(only),
                    _ => None,
                }
            })
            .map(|(name, p)| (name.as_str(), p))
    }

    /// Adds or replaces the profile `name`, keeping whether it was active
    /// (`profile.active` set to `true` makes it the active one).
    pub fn insert(&mut self, name: impl Into<String>, mut profile: Profile) -> Result<()> {
        let name = name.into();
        latchkey_core::rules::check_profile_name(&name)?;
        let was_active = self.profiles.get(&name).is_some_and(|p| p.active);
        let activate = profile.active;
        profile.active = was_active;
        self.profiles.insert(name.clone(), profile);
        if activate {
            self.activate(&name)?;
        }
        Ok(())
    }

    /// Makes `name` the active profile.
    pub fn activate(&mut self, name: &str) -> Result<()> {
        if !self.profiles.contains_key(name) {
            return Err(self.unknown(name));
        }
        for (n, p) in &mut self.profiles {
            p.active = n == name;
        }
        Ok(())
    }

    /// Removes the profile `name`, returning it.
    pub fn remove(&mut self, name: &str) -> Result<Profile> {
        self.profiles.remove(name).ok_or_else(|| self.unknown(name))
    }

    fn unknown(&self, name: &str) -> Error {
        let known: Vec<&str> = self.profiles.keys().map(String::as_str).collect();
        Error::config(format!(
            "No profile '{name}' in {} (profiles: {})",
            self.path.display(),
            if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            }
        ))
    }

    /// Writes the file atomically (a temp file in the same directory, then
    /// a rename), with mode 0600: it holds token secrets.
    pub fn save(&self) -> Result<()> {
        let text = Zeroizing::new(
            toml::to_string_pretty(&self.profiles)
                .map_err(|e| Error::config(format!("cannot encode the profile file: {e}")))?,
        );
        let dir = self
            .path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let tmp = self.path.with_extension("toml.tmp");
        let _ = std::fs::remove_file(&tmp);
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&tmp).map_err(|e| Error::io(&tmp, e))?;
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, &self.path).map_err(|e| Error::io(&self.path, e))
    }
}

pub(crate) fn default_path_with(env: &dyn Fn(&str) -> Option<String>) -> Result<PathBuf> {
    if let Some(path) = env("LATCHKEY_CONFIG_PATH").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(path));
    }
    env("HOME")
        .filter(|h| !h.is_empty())
        .map(|home| PathBuf::from(home).join(FILE_NAME))
        .ok_or_else(|| {
            Error::config(
                "Cannot find the profile file: neither LATCHKEY_CONFIG_PATH nor HOME is set",
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_round_trip_and_keep_unknown_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/.latchkey.toml");
        let mut file = ProfileFile::load(&path).unwrap();
        assert!(file.active().is_none());
        file.insert(
            "local",
            Profile::new("http://127.0.0.1:7420", "ak-1", "as-1"),
        )
        .unwrap();
        assert_eq!(
            file.active().unwrap().0,
            "local",
            "the only profile is active"
        );
        let mut prod = Profile::new("https://x", "ak-2", "as-2").with_environment("prod");
        prod.active = true;
        file.insert("prod", prod).unwrap();
        file.save().unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, format!("{text}\n[other]\ncolour = \"blue\"\n")).unwrap();
        let mut file = ProfileFile::load(&path).unwrap();
        assert_eq!(file.active().unwrap().0, "prod");
        assert_eq!(
            file.get("prod").unwrap().environment.as_deref(),
            Some("prod")
        );
        file.activate("local").unwrap();
        file.save().unwrap();
        let file = ProfileFile::load(&path).unwrap();
        assert_eq!(file.active().unwrap().0, "local");
        assert!(std::fs::read_to_string(&path)
            .unwrap()
            .contains("colour = \"blue\""));
        assert!(
            !format!("{file:?}").contains("as-1"),
            "Debug redacts secrets"
        );
    }

    #[test]
    fn errors_name_the_problem_without_quoting_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.toml");
        std::fs::write(&path, "[a]\ntoken_secret = as-unquoted-secret\n").unwrap();
        let e = ProfileFile::load(&path).unwrap_err().to_string();
        assert!(e.contains("line 2") && !e.contains("as-unquoted"), "{e}");
        let mut file = ProfileFile::load(dir.path().join("none.toml")).unwrap();
        let e = file.activate("x").unwrap_err().to_string();
        assert!(e.contains("No profile 'x'"), "{e}");
        assert!(file.insert("bad name", Profile::default()).is_err());
    }
}
