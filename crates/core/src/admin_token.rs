//! The `admin-token` file a server writes into its data dir on the first
//! start, and that clients and tests read back.
//!
//! It is a `.env` file, so that `set -a; . DIR/admin-token` works in a
//! shell; reading it with [`crate::dotenv`] keeps this the one grammar for
//! it, and writing and reading it here keeps the server and its readers
//! agreeing on the variable names.
//!
//! ```
//! use latchkey_core::admin_token::AdminTokenFile;
//!
//! let file = AdminTokenFile::new(Some("http://127.0.0.1:7420".into()), "ak-1", "as-2");
//! let again = AdminTokenFile::parse(&file.render()).unwrap();
//! assert_eq!(again.token_id, "ak-1");
//! assert_eq!(again.token_secret(), "as-2");
//! assert!(!format!("{again:?}").contains("as-2"));
//! ```

use std::{fmt, path::Path};

use zeroize::Zeroizing;

use crate::dotenv::{self, DotenvError};

/// The variable holding the server's URL.
pub const SERVER_URL_VAR: &str = "LATCHKEY_SERVER_URL";
/// The variable holding the token id.
pub const TOKEN_ID_VAR: &str = "LATCHKEY_TOKEN_ID";
/// The variable holding the token secret.
pub const TOKEN_SECRET_VAR: &str = "LATCHKEY_TOKEN_SECRET";

/// The contents of an `admin-token` file. `Debug` never shows the secret,
/// which is wiped from memory on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminTokenFile {
    /// The URL the server listened on when it wrote the file; `None` when
    /// the line is missing or empty, and a client falls back to its default.
    pub server_url: Option<String>,
    /// The admin token's id (`ak-...`).
    pub token_id: String,
    token_secret: Zeroizing<String>,
}

/// Why an `admin-token` file cannot be used. Never shows any of its text.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminTokenError {
    /// The file cannot be read (`NotFound` when there is no local server).
    #[error("{0}")]
    Read(std::io::Error),
    /// The file is not a valid `.env` file.
    #[error(transparent)]
    Dotenv(#[from] DotenvError),
    /// The token id or secret is missing or empty.
    #[error("lacks {TOKEN_ID_VAR} or {TOKEN_SECRET_VAR}")]
    Incomplete,
}

impl AdminTokenFile {
    /// The file for this token.
    pub fn new(server_url: Option<String>, token_id: &str, token_secret: &str) -> Self {
        Self {
            server_url,
            token_id: token_id.to_owned(),
            token_secret: Zeroizing::new(token_secret.to_owned()),
        }
    }

    /// The admin token's secret (`as-...`).
    pub fn token_secret(&self) -> &str {
        &self.token_secret
    }

    /// The file's text: one `NAME=value` line per variable.
    pub fn render(&self) -> Zeroizing<String> {
        let mut text = Zeroizing::new(String::new());
        if let Some(url) = &self.server_url {
            text.push_str(&format!("{SERVER_URL_VAR}={url}\n"));
        }
        text.push_str(&format!("{TOKEN_ID_VAR}={}\n", self.token_id));
        // Written piece by piece so that no unzeroized copy of the secret
        // is left behind by `format!`.
        text.push_str(TOKEN_SECRET_VAR);
        text.push('=');
        text.push_str(&self.token_secret);
        text.push('\n');
        text
    }

    /// Reads the file's text. Only this file's variables are interpolated,
    /// never the process environment's.
    ///
    /// # Errors
    ///
    /// [`AdminTokenError::Dotenv`] for text that is not a `.env` file,
    /// [`AdminTokenError::Incomplete`] without a token id and secret.
    pub fn parse(text: &str) -> Result<Self, AdminTokenError> {
        let mut entries = dotenv::parse_isolated(text)?;
        let mut take = |key: &str| {
            entries
                .iter_mut()
                .find(|(k, _)| k == key)
                .and_then(|(_, v)| v.take())
                .filter(|v| !v.is_empty())
        };
        let server_url = take(SERVER_URL_VAR);
        let token_id = take(TOKEN_ID_VAR);
        // Moved out of the entries, not copied, so the one copy is wiped.
        let token_secret = take(TOKEN_SECRET_VAR).map(Zeroizing::new);
        match (token_id, token_secret) {
            (Some(token_id), Some(token_secret)) => Ok(Self {
                server_url,
                token_id,
                token_secret,
            }),
            _ => Err(AdminTokenError::Incomplete),
        }
    }

    /// Reads the file at `path`.
    ///
    /// # Errors
    ///
    /// [`AdminTokenError::Read`] when it cannot be read, else as [`parse`](Self::parse).
    pub fn read(path: &Path) -> Result<Self, AdminTokenError> {
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(AdminTokenError::Read)?);
        Self::parse(&text)
    }
}

impl fmt::Debug for AdminTokenFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminTokenFile")
            .field("server_url", &self.server_url)
            .field("token_id", &self.token_id)
            .field("token_secret", &"<redacted>")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_three_lines_the_server_always_wrote() {
        let file = AdminTokenFile::new(Some("http://127.0.0.1:7420".into()), "ak-a", "as-b");
        assert_eq!(
            *file.render(),
            "LATCHKEY_SERVER_URL=http://127.0.0.1:7420\nLATCHKEY_TOKEN_ID=ak-a\nLATCHKEY_TOKEN_SECRET=as-b\n"
        );
        assert_eq!(AdminTokenFile::parse(&file.render()).unwrap(), file);
        let no_url = AdminTokenFile::new(None, "ak-a", "as-b");
        assert_eq!(
            *no_url.render(),
            "LATCHKEY_TOKEN_ID=ak-a\nLATCHKEY_TOKEN_SECRET=as-b\n"
        );
    }

    #[test]
    fn reads_any_dotenv_form_and_refuses_a_file_without_the_token() {
        let file = AdminTokenFile::parse(
            "# written by latchkey\nexport LATCHKEY_TOKEN_ID='ak-a'\nLATCHKEY_SERVER_URL=\nLATCHKEY_TOKEN_SECRET=\"as-b\"\n",
        )
        .unwrap();
        assert_eq!(file.server_url, None);
        assert_eq!(
            (file.token_id.as_str(), file.token_secret()),
            ("ak-a", "as-b")
        );

        for bad in [
            "LATCHKEY_TOKEN_ID=ak-a\n",
            "LATCHKEY_TOKEN_ID=ak-a\nLATCHKEY_TOKEN_SECRET=\n",
        ] {
            assert!(matches!(
                AdminTokenFile::parse(bad),
                Err(AdminTokenError::Incomplete)
            ));
        }
        let e = AdminTokenFile::parse("LATCHKEY_TOKEN_SECRET=\"as-secret\n").unwrap_err();
        assert!(matches!(e, AdminTokenError::Dotenv(_)));
        assert!(!e.to_string().contains("as-secret"), "{e}");
    }

    #[test]
    fn debug_hides_the_secret() {
        let file = AdminTokenFile::new(None, "ak-a", "as-secret");
        let shown = format!("{file:?}");
        assert!(
            shown.contains("ak-a") && !shown.contains("as-secret"),
            "{shown}"
        );
    }
}
