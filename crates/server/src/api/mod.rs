//! The native JSON API under `/api/v1`, over the same service layer as gRPC.

use axum::Router;
use latchkey_service::Service;

/// The `/api/v1` routes.
pub fn router(service: Service) -> Router {
    drop(service);
    Router::new()
}
