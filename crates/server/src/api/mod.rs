//! The native JSON API under `/api/v1`, over the same service layer as gRPC,
//! so both enforce the same rules and permissions.
//!
//! - Authentication: `Authorization: Bearer <token_id>:<token_secret>` on
//!   every route but `/openapi.json`.
//! - `?environment=NAME` selects the environment; empty or absent means the
//!   workspace default.
//! - Instants are RFC 3339 in UTC with microseconds; listings page by
//!   `created_before` (creation times are unique, so nothing is lost).
//! - Errors are `{"error": {"code": "not_found", "message": "Secret 'x' not found"}}`
//!   with the matching status: 400 `invalid`, 401 `unauthenticated`, 403
//!   `permission_denied`, 404 `not_found`, 405 `method_not_allowed`, 409
//!   `already_exists`, 412 `missing_keys` (with `missing_keys: [...]`) or
//!   `failed_precondition`, 503 `unavailable`, 500 `internal`.
//! - Values and token secrets appear only in the answers that exist to
//!   return them (`POST /secrets/{name}/resolve`, `POST /tokens`), never in
//!   an error or a log line.
//!
//! Every route is registered through [`utoipa_axum::routes!`], which adds it
//! to the router and to the OpenAPI document at once, so the document served
//! at `/api/v1/openapi.json` ([`openapi`]) cannot miss one.

mod audit;
mod backup;
mod environments;
mod error;
mod extract;
mod key;
mod model;
mod responses;
mod secrets;
#[cfg(test)]
mod tests;
mod tokens;

use std::sync::OnceLock;

use axum::{
    extract::{DefaultBodyLimit, OriginalUri},
    http::{header, Method},
    response::{IntoResponse, Response},
    Router,
};
use latchkey_service::Service;
use utoipa::{
    openapi::security::{Http, HttpAuthScheme, SecurityScheme},
    Modify, OpenApi,
};
use utoipa_axum::{router::OpenApiRouter, routes};

pub use error::ApiError;

/// Largest request body: a secret of 1,000 keys of the largest size fits.
const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "latchkey",
        description = "latchkey's native JSON API: named secrets, environments and tokens.\n\n\
            Authenticate with `Authorization: Bearer <token_id>:<token_secret>`. \
            Errors are `{\"error\": {\"code\": ..., \"message\": ...}}`.",
        license(name = "Apache-2.0")
    ),
    servers((url = "/api/v1")),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    tags(
        (name = "secrets", description = "Named secrets and their values"),
        (name = "environments", description = "Namespaces of secrets"),
        (name = "tokens", description = "The caller and the workspace's tokens"),
        (name = "audit", description = "The audit log and who read what"),
        (name = "backup", description = "Backups of the whole store"),
        (name = "key", description = "The master key"),
        (name = "meta", description = "This document"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut scheme = Http::new(HttpAuthScheme::Bearer);
        scheme.bearer_format = Some("<token_id>:<token_secret>".to_owned());
        components.add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

fn routes() -> OpenApiRouter<Service> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(openapi_json))
        .routes(routes!(tokens::whoami))
        .routes(routes!(environments::list, environments::create))
        .routes(routes!(environments::update, environments::delete))
        .routes(routes!(secrets::list, secrets::create))
        .routes(routes!(secrets::get, secrets::update, secrets::delete))
        .routes(routes!(secrets::resolve))
        .routes(routes!(secrets::versions))
        .routes(routes!(secrets::rollback))
        .routes(routes!(tokens::list, tokens::create))
        .routes(routes!(tokens::revoke))
        .routes(routes!(audit::list))
        .routes(routes!(audit::head))
        .routes(routes!(audit::verify))
        .routes(routes!(audit::secret_exposure))
        .routes(routes!(audit::token_exposure))
        .routes(routes!(tokens::rotate))
        .routes(routes!(backup::backup))
        .routes(routes!(key::rotate))
}

/// The OpenAPI 3 document of the API, as served at `/api/v1/openapi.json`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes().into_openapi()
}

/// The OpenAPI 3 document of this API (no authentication needed).
#[utoipa::path(
    get, path = "/openapi.json", tag = "meta", security(()),
    responses((status = 200, description = "This document", content_type = "application/json"))
)]
async fn openapi_json() -> Response {
    static DOC: OnceLock<String> = OnceLock::new();
    let doc = DOC.get_or_init(|| openapi().to_json().unwrap_or_else(|_| "{}".to_owned()));
    ([(header::CONTENT_TYPE, "application/json")], doc.as_str()).into_response()
}

async fn no_route(method: Method, OriginalUri(uri): OriginalUri) -> ApiError {
    ApiError::no_route(method.as_str(), uri.path())
}

async fn method_not_allowed(method: Method, OriginalUri(uri): OriginalUri) -> ApiError {
    ApiError::method_not_allowed(method.as_str(), uri.path())
}

/// The `/api/v1` routes.
pub fn router(service: Service) -> Router {
    let (router, _) = routes().split_for_parts();
    router
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(service)
}
