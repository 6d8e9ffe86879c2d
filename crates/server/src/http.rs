//! Everything served on the one port: gRPC, the JSON API, the dashboard,
//! health, readiness and metrics.

use std::{
    pin::Pin,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    task::{Context, Poll},
};

use axum::{
    body::{Body, Bytes},
    extract::{Request, State},
    http::{
        header::{CONTENT_TYPE, RETRY_AFTER, STRICT_TRANSPORT_SECURITY},
        StatusCode,
    },
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
    Router,
};
use http_body::{Body as _, Frame, SizeHint};
use tokio::sync::Semaphore;

use latchkey_service::Service;

use crate::{api, grpc, telemetry, telemetry::MetricsAccess};
use latchkey_sandbox::Sandboxes;

/// The whole router, without sandboxes. Tests drive it with `oneshot`,
/// without a socket.
pub fn app(service: Service) -> Router {
    app_with_sandboxes(service, None)
}

/// Default for [`app_with_limits`]' `max_buffered_bytes`.
pub const DEFAULT_MAX_BUFFERED_BYTES: usize = 256 * 1024 * 1024;

/// The whole router; `sandboxes` serves Modal's sandbox RPCs (`None`: they
/// answer that sandboxes are disabled).
pub fn app_with_sandboxes(service: Service, sandboxes: Option<Sandboxes>) -> Router {
    app_with_limits(service, sandboxes, DEFAULT_MAX_BUFFERED_BYTES)
}

/// The whole router, holding at most `max_buffered_bytes` of request bodies
/// at once (see `limit_buffered_bytes`).
pub fn app_with_limits(
    service: Service,
    sandboxes: Option<Sandboxes>,
    max_buffered_bytes: usize,
) -> Router {
    app_with_options(
        service,
        sandboxes,
        &AppOptions {
            max_buffered_bytes,
            ..AppOptions::default()
        },
    )
}

/// How [`app_with_options`] serves.
#[derive(Debug, Clone)]
pub struct AppOptions {
    /// Most bytes of request bodies held at once (see `limit_buffered_bytes`).
    pub max_buffered_bytes: usize,
    /// Served over TLS: the dashboard's answers carry
    /// `Strict-Transport-Security`.
    pub tls: bool,
    /// Who may read `/metrics` besides loopback clients.
    pub metrics: MetricsAccess,
    /// Modal functions (`--functions`); `None`: disabled.
    pub functions: Option<latchkey_functions::Functions>,
}

impl Default for AppOptions {
    fn default() -> Self {
        Self {
            max_buffered_bytes: DEFAULT_MAX_BUFFERED_BYTES,
            tls: false,
            metrics: MetricsAccess::loopback_only(),
            functions: None,
        }
    }
}

/// What browsers are told on the dashboard over TLS: only https for a year.
const HSTS: &str = "max-age=31536000";

/// The dashboard when this server terminates TLS: the request came over
/// https, whatever a client claims (so its session cookie is `Secure`), and
/// browsers are told to come back over https only.
async fn dashboard_over_tls(mut request: Request, next: Next) -> Response {
    request.headers_mut().insert(
        "x-forwarded-proto",
        axum::http::HeaderValue::from_static("https"),
    );
    let mut response = next.run(request).await;
    response.headers_mut().insert(
        STRICT_TRANSPORT_SECURITY,
        axum::http::HeaderValue::from_static(HSTS),
    );
    response
}

/// The whole router, as `options` say.
pub fn app_with_options(
    service: Service,
    sandboxes: Option<Sandboxes>,
    options: &AppOptions,
) -> Router {
    let modal = grpc::ModalApi::new(service.clone())
        .with_sandboxes(sandboxes.clone())
        .with_functions(options.functions.clone());
    if let Some(functions) = &options.functions {
        // Containers call through their task's socket, served by this same
        // service (never through the port, where they would need a token).
        functions.set_task_server(grpc::functions::task_server(modal.clone()));
    }
    let auth = grpc::GrpcAuth {
        service: service.clone(),
        sandboxes: sandboxes.clone(),
    };
    let grpc_routes = tonic::service::Routes::new(modal.into_server())
        .add_service(grpc::router::RouterApi::new(sandboxes).into_server())
        .into_axum_router()
        .layer(middleware::from_fn(grpc::sandbox::remember_origin))
        // Outermost, so that nothing reads a body before credentials pass.
        .layer(middleware::from_fn_with_state(
            auth,
            grpc::authenticate_first,
        ));
    // Installed before anything records.
    telemetry::handle();
    let budget = BodyBudget::new(options.max_buffered_bytes);
    let mut dashboard = latchkey_dashboard::router(service.clone());
    if options.tls {
        dashboard = dashboard.layer(middleware::from_fn(dashboard_over_tls));
    }
    let mut router = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(service.clone())
        .route(
            "/metrics",
            get(telemetry::serve_metrics).with_state(options.metrics.clone()),
        )
        .nest("/api/v1", api::router(service))
        .merge(dashboard)
        .merge(grpc_routes);
    if let Some(functions) = &options.functions {
        router = router.merge(crate::blobs::router(functions.clone()));
    }
    router
        .route_layer(middleware::from_fn(telemetry::remember_route))
        .fallback(fallback)
        .layer(middleware::from_fn(grpc::name_unimplemented_rpcs))
        .layer(middleware::from_fn_with_state(budget, limit_buffered_bytes))
        .layer(middleware::from_fn(telemetry::observe))
}

/// The bytes of request bodies the server may hold at once, shared by all
/// requests.
#[derive(Clone)]
struct BodyBudget(Arc<Semaphore>);

impl BodyBudget {
    fn new(max_bytes: usize) -> Self {
        Self(Arc::new(Semaphore::new(
            max_bytes.clamp(1, Semaphore::MAX_PERMITS),
        )))
    }
}

/// Bounds the bytes of request bodies held across all requests: each chunk
/// of a body takes its size from one shared budget as its handler reads it,
/// and the body gives all of it back once read to the end or dropped.
///
/// - Nothing is taken before a handler reads, and every handler checks
///   credentials first: a caller without a token takes nothing.
/// - Requests that then wait for long (sandbox long polls, output streams)
///   hold nothing.
/// - When the budget is spent the request is refused at once, as
///   UNAVAILABLE (gRPC) or 503 (HTTP), which clients retry: waiting instead
///   could deadlock, as HTTP/2 streams that wait keep the connection's flow
///   control window from the stream being read.
async fn limit_buffered_bytes(
    State(budget): State<BodyBudget>,
    request: Request,
    next: Next,
) -> Response {
    if request.body().is_end_stream() {
        return next.run(request).await;
    }
    let grpc = is_grpc(&request);
    let refused = Arc::new(AtomicBool::new(false));
    let request = request.map(|inner| {
        Body::new(BudgetedBody {
            inner,
            budget: Arc::clone(&budget.0),
            held: 0,
            refused: Arc::clone(&refused),
        })
    });
    let response = next.run(request).await;
    if !refused.load(Ordering::Relaxed) {
        return response;
    }
    tracing::warn!("a request was refused: the server holds as many request bytes as --max-buffered-mib allows");
    if grpc {
        tonic::Status::unavailable(BUDGET_SPENT).into_http()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [(RETRY_AFTER, "1")],
            format!("{BUDGET_SPENT}\n"),
        )
            .into_response()
    }
}

const BUDGET_SPENT: &str =
    "The server is reading as many request bodies as it may at once; retry shortly";

/// A request body that holds a share of the [`BodyBudget`] for what it has
/// read, until it ends.
struct BudgetedBody {
    inner: Body,
    budget: Arc<Semaphore>,
    held: usize,
    refused: Arc<AtomicBool>,
}

impl BudgetedBody {
    fn release(&mut self) {
        self.budget.add_permits(std::mem::take(&mut self.held));
    }

    /// Takes `bytes` from the budget; false when it is spent.
    fn take(&mut self, bytes: usize) -> bool {
        let Ok(n) = u32::try_from(bytes) else {
            return false;
        };
        match self.budget.try_acquire_many(n) {
            Ok(permit) => {
                permit.forget();
                self.held += bytes;
                true
            }
            Err(_) => false,
        }
    }
}

impl Drop for BudgetedBody {
    fn drop(&mut self) {
        self.release();
    }
}

/// Why a body stopped being read (see [`limit_buffered_bytes`]).
#[derive(Debug)]
struct BudgetSpent;

impl std::fmt::Display for BudgetSpent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(BUDGET_SPENT)
    }
}

impl std::error::Error for BudgetSpent {}

impl http_body::Body for BudgetedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        let polled = std::task::ready!(Pin::new(&mut this.inner).poll_frame(cx));
        match &polled {
            Some(Ok(frame)) => {
                let bytes = frame.data_ref().map_or(0, Bytes::len);
                if bytes > 0 && !this.take(bytes) {
                    this.refused.store(true, Ordering::Relaxed);
                    this.release();
                    return Poll::Ready(Some(Err(axum::Error::new(BudgetSpent))));
                }
                if this.inner.is_end_stream() {
                    this.release();
                }
            }
            None | Some(Err(_)) => this.release(),
        }
        Poll::Ready(polled)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

pub(crate) fn is_grpc(request: &Request) -> bool {
    request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
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
    if is_grpc(&request) {
        grpc::unknown_service(request.uri().path())
    } else {
        (StatusCode::NOT_FOUND, "not found\n").into_response()
    }
}
