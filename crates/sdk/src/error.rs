//! The one error type of the SDK.

use std::path::PathBuf;

/// Everything that can go wrong in a call of this crate.
///
/// The server's answers map to the first group of variants, each carrying the
/// server's message (`Secret 'x' not found`), which names what was wrong and
/// never holds a secret value. [`Display`](std::fmt::Display) shows that
/// message alone, so a CLI can print it as it is.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The named secret, environment or token does not exist (HTTP 404).
    #[error("{message}")]
    NotFound {
        /// The server's message.
        message: String,
    },
    /// It exists and the request asked for it not to (HTTP 409).
    #[error("{message}")]
    AlreadyExists {
        /// The server's message.
        message: String,
    },
    /// The request breaks a rule: a bad name, key or value, a malformed
    /// argument (HTTP 400, or refused before sending).
    #[error("{message}")]
    Invalid {
        /// What is wrong.
        message: String,
    },
    /// The secret lacks keys that were required (HTTP 412 `missing_keys`).
    #[error("{message}")]
    MissingKeys {
        /// The missing keys, in the order they were required.
        keys: Vec<String>,
        /// `Secret is missing key(s): A, B`.
        message: String,
    },
    /// The state does not allow the request, e.g. revoking the last admin
    /// token or deleting an environment that holds secrets (HTTP 412).
    #[error("{message}")]
    FailedPrecondition {
        /// The server's message.
        message: String,
    },
    /// No token, or one the server does not accept (HTTP 401).
    #[error("{message}")]
    Unauthenticated {
        /// The server's message, which says how to get a token.
        message: String,
    },
    /// The token is valid but may not do this (HTTP 403).
    #[error("{message}")]
    PermissionDenied {
        /// The server's message.
        message: String,
    },
    /// Too many failed authentications came from this address (HTTP 429);
    /// the message says how long to wait.
    #[error("{message}")]
    TooManyRequests {
        /// The server's message, naming the wait.
        message: String,
    },
    /// The server cannot serve now (HTTP 503); retrying later may succeed.
    #[error("{message}")]
    Unavailable {
        /// The server's message.
        message: String,
    },
    /// The server failed, or answered in a way this client does not know.
    #[error("server error (HTTP {status}): {message}")]
    Server {
        /// The HTTP status.
        status: u16,
        /// The server's message, if it gave one.
        message: String,
    },
    /// The server could not be reached, or the connection failed.
    #[error("{message}")]
    Transport {
        /// What failed, with the server's URL.
        message: String,
        /// The underlying error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The client has no usable configuration (no token, a bad profile file,
    /// a bad server URL).
    #[error("{message}")]
    Config {
        /// What is missing or wrong, and how to fix it.
        message: String,
    },
    /// A local file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Error::Invalid {
            message: message.into(),
        }
    }

    pub(crate) fn config(message: impl Into<String>) -> Self {
        Error::Config {
            message: message.into(),
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// The error as the server's code names it (`not_found`, `missing_keys`,
    /// ...), or `transport`, `config`, `io` for local failures. Stable: meant
    /// for scripts and `--json` output.
    pub fn code(&self) -> &'static str {
        match self {
            Error::NotFound { .. } => "not_found",
            Error::AlreadyExists { .. } => "already_exists",
            Error::Invalid { .. } => "invalid",
            Error::MissingKeys { .. } => "missing_keys",
            Error::FailedPrecondition { .. } => "failed_precondition",
            Error::Unauthenticated { .. } => "unauthenticated",
            Error::PermissionDenied { .. } => "permission_denied",
            Error::TooManyRequests { .. } => "resource_exhausted",
            Error::Unavailable { .. } => "unavailable",
            Error::Server { .. } => "internal",
            Error::Transport { .. } => "transport",
            Error::Config { .. } => "config",
            Error::Io { .. } => "io",
        }
    }

    /// Whether this is [`Error::NotFound`].
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound { .. })
    }

    /// Whether this is [`Error::AlreadyExists`].
    pub fn is_already_exists(&self) -> bool {
        matches!(self, Error::AlreadyExists { .. })
    }

    /// The error of an HTTP answer with `status` and an API error body.
    pub(crate) fn from_answer(status: u16, body: &[u8]) -> Self {
        #[derive(serde::Deserialize)]
        struct Body {
            error: Detail,
        }
        #[derive(serde::Deserialize)]
        struct Detail {
            code: String,
            message: String,
            #[serde(default)]
            missing_keys: Option<Vec<String>>,
        }
        let Ok(Body { error }) = serde_json::from_slice::<Body>(body) else {
            return Error::Server {
                status,
                message: format!(
                    "unexpected answer: {}",
                    String::from_utf8_lossy(&body[..body.len().min(200)]).trim()
                ),
            };
        };
        let message = error.message;
        match (error.code.as_str(), status) {
            ("missing_keys", _) => Error::MissingKeys {
                keys: error.missing_keys.unwrap_or_default(),
                message,
            },
            ("not_found", _) | (_, 404) => Error::NotFound { message },
            ("already_exists", _) | (_, 409) => Error::AlreadyExists { message },
            ("invalid", _) | (_, 400) => Error::Invalid { message },
            ("failed_precondition", _) | (_, 412) => Error::FailedPrecondition { message },
            ("unauthenticated", _) | (_, 401) => Error::Unauthenticated { message },
            ("permission_denied", _) | (_, 403) => Error::PermissionDenied { message },
            ("unavailable", _) | (_, 503) => Error::Unavailable { message },
            ("resource_exhausted", _) | (_, 429) => Error::TooManyRequests { message },
            _ => Error::Server { status, message },
        }
    }
}

/// A rule of latchkey's domain checked on this side of the wire (a local
/// secret's keys, a profile name, a time): the variant the server would
/// answer with for the same error, so a caller handles both alike.
impl From<latchkey_core::Error> for Error {
    fn from(e: latchkey_core::Error) -> Self {
        use latchkey_core::ErrorKind;
        let message = e.message().to_owned();
        if !e.missing_keys().is_empty() {
            return Error::MissingKeys {
                keys: e.missing_keys().to_vec(),
                message,
            };
        }
        match e.kind() {
            ErrorKind::NotFound => Error::NotFound { message },
            ErrorKind::AlreadyExists => Error::AlreadyExists { message },
            ErrorKind::Invalid => Error::Invalid { message },
            ErrorKind::FailedPrecondition => Error::FailedPrecondition { message },
            ErrorKind::Unauthenticated => Error::Unauthenticated { message },
            ErrorKind::PermissionDenied => Error::PermissionDenied { message },
            ErrorKind::Unavailable => Error::Unavailable { message },
            ErrorKind::ResourceExhausted => Error::TooManyRequests { message },
            _ => Error::Server {
                status: 500,
                message,
            },
        }
    }
}

/// The result of this crate's calls.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_map_to_variants_with_the_servers_message() {
        let e = Error::from_answer(
            412,
            br#"{"error":{"code":"missing_keys","message":"Secret is missing key(s): A, B","missing_keys":["A","B"]}}"#,
        );
        assert!(matches!(&e, Error::MissingKeys { keys, .. } if keys == &["A", "B"]));
        assert_eq!(e.to_string(), "Secret is missing key(s): A, B");
        let e = Error::from_answer(
            404,
            br#"{"error":{"code":"not_found","message":"Secret 'x' not found"}}"#,
        );
        assert!(e.is_not_found());
        assert_eq!(e.code(), "not_found");
        let e = Error::from_answer(502, b"<html>bad gateway</html>");
        assert!(matches!(e, Error::Server { status: 502, .. }));
    }

    #[test]
    fn local_rule_errors_map_like_the_servers_answers() {
        let dict: latchkey_core::EnvDict = [("A".to_owned(), "1".to_owned())].into();
        let e = Error::from(
            latchkey_core::rules::check_required_keys(&dict, ["B", "A", "C"]).unwrap_err(),
        );
        assert!(matches!(&e, Error::MissingKeys { keys, .. } if keys == &["B", "C"]));
        assert_eq!(e.to_string(), "Secret is missing key(s): B, C");
        let e = Error::from(latchkey_core::rules::check_key("1A").unwrap_err());
        assert_eq!(e.code(), "invalid");
    }
}
