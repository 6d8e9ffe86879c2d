//! Error answers that several routes document in the same words, written
//! once for the `responses(...)` of their `#[utoipa::path]`.
//!
//! These types only describe: the answer itself is always an
//! [`ApiError`](super::ApiError), so none of them is ever built. An answer
//! whose description differs from route to route (most 400s and 409s) stays
//! inline in its route's attribute, where the reader of the handler sees it.

// The derive reads the field's type for the schema, never its value.
#![expect(
    dead_code,
    reason = "descriptions for the OpenAPI document, never built"
)]

use utoipa::IntoResponses;

use super::error::ErrorBody;

/// 404 on the `/secrets/{name}` routes.
#[derive(IntoResponses)]
#[response(status = 404, description = "No such secret")]
pub(crate) struct SecretNotFound(ErrorBody);

/// 404 on the `/environments/{name}` routes.
#[derive(IntoResponses)]
#[response(status = 404, description = "No such environment")]
pub(crate) struct EnvironmentNotFound(ErrorBody);

/// 412 where the caller may name keys the secret must hold.
#[derive(IntoResponses)]
#[response(status = 412, description = "A required key is missing")]
pub(crate) struct MissingKeys(ErrorBody);

/// 403 on the admin-only routes.
#[derive(IntoResponses)]
#[response(status = 403, description = "Not an admin token")]
pub(crate) struct NotAdmin(ErrorBody);
