use std::fmt;

/// What went wrong, in terms every interface can map to its own status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The named object does not exist (gRPC NOT_FOUND, HTTP 404).
    NotFound,
    /// The object exists and the request asked for it not to (ALREADY_EXISTS, 409).
    AlreadyExists,
    /// The request itself is malformed or breaks a rule (INVALID_ARGUMENT, 400).
    Invalid,
    /// The request is well formed but the state does not allow it, e.g. a
    /// secret lacks a required key (FAILED_PRECONDITION, 412).
    FailedPrecondition,
    /// No credentials, or credentials that do not match a token (UNAUTHENTICATED, 401).
    Unauthenticated,
    /// The token is valid but may not do this (PERMISSION_DENIED, 403).
    PermissionDenied,
    /// The storage is unreachable right now; retrying later may succeed (UNAVAILABLE, 503).
    Unavailable,
    /// A bug or a corrupted store; details are in the server log only (INTERNAL, 500).
    Internal,
    /// A limit of this server is reached, e.g. as many sandboxes run as it
    /// holds; the caller may try again once some are gone
    /// (RESOURCE_EXHAUSTED, 429).
    ResourceExhausted,
}

impl ErrorKind {
    /// Its machine-readable code, as the JSON API and the audit log name it.
    pub fn code(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not_found",
            ErrorKind::AlreadyExists => "already_exists",
            ErrorKind::Invalid => "invalid",
            ErrorKind::FailedPrecondition => "failed_precondition",
            ErrorKind::Unauthenticated => "unauthenticated",
            ErrorKind::PermissionDenied => "permission_denied",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::ResourceExhausted => "resource_exhausted",
            ErrorKind::Internal => "internal",
        }
    }
}

/// An error with a message meant for the person who made the request.
///
/// The message names what was wrong (`Secret 'x' not found`) and never holds a
/// secret value or a token secret: callers build it from names and keys only.
///
/// Some errors also carry data for programs, so that no interface has to
/// parse it back out of the message: [`Error::missing_keys`].
#[derive(Clone, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    missing_keys: Vec<String>,
    retry_after: Option<std::time::Duration>,
}

impl Error {
    /// An error of `kind` with a user-facing `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            missing_keys: Vec::new(),
            retry_after: None,
        }
    }

    /// The same error, saying when the request may be tried again (HTTP's
    /// `Retry-After`); the message should name the wait too.
    pub fn with_retry_after(mut self, wait: std::time::Duration) -> Self {
        self.retry_after = Some(wait);
        self
    }

    /// When the request may be tried again, if the error says.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        self.retry_after
    }

    /// The same error, naming the required keys a secret lacks (set by
    /// [`rules::check_required_keys`](crate::rules::check_required_keys)).
    pub fn with_missing_keys(mut self, keys: Vec<String>) -> Self {
        self.missing_keys = keys;
        self
    }

    /// [`ErrorKind::NotFound`].
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }

    /// [`ErrorKind::AlreadyExists`].
    pub fn already_exists(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::AlreadyExists, message)
    }

    /// [`ErrorKind::Invalid`].
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Invalid, message)
    }

    /// [`ErrorKind::FailedPrecondition`].
    pub fn failed_precondition(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::FailedPrecondition, message)
    }

    /// [`ErrorKind::Unauthenticated`].
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unauthenticated, message)
    }

    /// [`ErrorKind::PermissionDenied`].
    pub fn permission_denied(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::PermissionDenied, message)
    }

    /// [`ErrorKind::Unavailable`].
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unavailable, message)
    }

    /// [`ErrorKind::Internal`]. The message reaches the caller, so keep details
    /// for the log and say only what the caller can act on.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }

    /// [`ErrorKind::ResourceExhausted`].
    pub fn resource_exhausted(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::ResourceExhausted, message)
    }

    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The user-facing message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The required keys a secret lacks, in the order they were required,
    /// as they were asked for (the message may shorten them); empty for
    /// every other error.
    pub fn missing_keys(&self) -> &[String] {
        &self.missing_keys
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.kind, self.message)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}
