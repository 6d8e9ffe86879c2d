//! The JSON API's error: `{"error": {"code": "...", "message": "..."}}` with
//! the HTTP status that matches the service layer's [`ErrorKind`].
//!
//! Messages come from the service layer, which builds them from names and
//! keys only, or from this module; a rejected request body is described by
//! where it went wrong, never by quoting it. Internal errors reach the log,
//! and the caller gets only the service layer's user-facing message.

use axum::{
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use latchkey_core::{Error, ErrorKind};
use serde::Serialize;
use utoipa::ToSchema;

/// An error answer of the JSON API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    missing_keys: Option<Vec<String>>,
    retry_after: Option<std::time::Duration>,
}

/// The body of every error answer.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ErrorBody {
    /// What went wrong.
    pub(crate) error: ErrorDetail,
}

/// What went wrong, for people (`message`) and programs (`code`).
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ErrorDetail {
    /// One of `not_found`, `already_exists`, `invalid`, `missing_keys`,
    /// `failed_precondition`, `unauthenticated`, `permission_denied`,
    /// `method_not_allowed`, `unavailable`, `internal`.
    #[schema(example = "not_found")]
    pub(crate) code: String,
    /// A sentence naming what was wrong.
    #[schema(example = "Secret 'x' not found")]
    pub(crate) message: String,
    /// For `missing_keys`: the required keys the secret lacks, in the order
    /// they were required.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) missing_keys: Option<Vec<String>>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            missing_keys: None,
            retry_after: None,
        }
    }

    /// A malformed request (400).
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid", message)
    }

    /// No such route (404).
    pub(crate) fn no_route(method: &str, path: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!(
                "No route {method} {}; see /api/v1/openapi.json",
                latchkey_core::rules::echo(path)
            ),
        )
    }

    /// A route that exists, with another method (405).
    pub(crate) fn method_not_allowed(method: &str, path: &str) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!(
                "Method {method} is not allowed on {}; see /api/v1/openapi.json",
                latchkey_core::rules::echo(path)
            ),
        )
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The machine-readable code.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// The user-facing message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl From<Error> for ApiError {
    fn from(error: Error) -> Self {
        let status = match error.kind() {
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::AlreadyExists => StatusCode::CONFLICT,
            ErrorKind::Invalid => StatusCode::BAD_REQUEST,
            ErrorKind::FailedPrecondition => StatusCode::PRECONDITION_FAILED,
            ErrorKind::Unauthenticated => StatusCode::UNAUTHORIZED,
            ErrorKind::PermissionDenied => StatusCode::FORBIDDEN,
            ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        // A kind added later maps to 500 until it has a status of its own.
        let code = if status == StatusCode::INTERNAL_SERVER_ERROR {
            "internal"
        } else {
            error.kind().code()
        };
        let mut api = Self::new(status, code, error.message());
        api.retry_after = error.retry_after();
        if !error.missing_keys().is_empty() {
            api.code = "missing_keys";
            api.missing_keys = Some(error.missing_keys().to_vec());
        }
        api
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            // The service layer logged the cause; this records what the caller saw.
            tracing::warn!(status = %self.status, code = self.code, message = %self.message, "JSON API request failed");
        }
        let status = self.status;
        let retry_after = self.retry_after;
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_owned(),
                message: self.message,
                missing_keys: self.missing_keys,
            },
        };
        let mut response = (status, Json(body)).into_response();
        if let Some(wait) = retry_after {
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"latchkey\""),
            );
        }
        response
    }
}
