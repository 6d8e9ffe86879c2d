//! Everything served on the one port: gRPC, the JSON API, the dashboard,
//! health and readiness.

use axum::{
    extract::{Request, State},
    http::{header::CONTENT_TYPE, StatusCode},
    middleware,
    response::{IntoResponse, Response},
    routing::get,
    Router,
};

use latchkey_service::Service;

use crate::{api, grpc};
use latchkey_sandbox::Sandboxes;

/// The whole router, without sandboxes. Tests drive it with `oneshot`,
/// without a socket.
pub fn app(service: Service) -> Router {
    app_with_sandboxes(service, None)
}

/// The whole router; `sandboxes` serves Modal's sandbox RPCs (`None`: they
/// answer that sandboxes are disabled).
pub fn app_with_sandboxes(service: Service, sandboxes: Option<Sandboxes>) -> Router {
    let modal = grpc::ModalApi::new(service.clone()).with_sandboxes(sandboxes.clone());
    let grpc_routes = tonic::service::Routes::new(modal.into_server())
        .add_service(grpc::router::RouterApi::new(sandboxes).into_server())
        .into_axum_router()
        .layer(middleware::from_fn(grpc::sandbox::remember_origin));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(service.clone())
        .nest("/api/v1", api::router(service.clone()))
        .merge(latchkey_dashboard::router(service))
        .merge(grpc_routes)
        .fallback(fallback)
        .layer(middleware::from_fn(grpc::name_unimplemented_rpcs))
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(service): State<Service>) -> Response {
    match service.store().ping().await {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", e.message()),
        )
            .into_response(),
    }
}

async fn fallback(request: Request) -> Response {
    let is_grpc = request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    if is_grpc {
        grpc::unknown_service(request.uri().path())
    } else {
        (StatusCode::NOT_FOUND, "not found\n").into_response()
    }
}
