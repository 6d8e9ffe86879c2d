//! `GET /metrics`: Prometheus text format, rendered by
//! `metrics-exporter-prometheus` from what every layer records with the
//! `metrics` macros (the store's cache, group commits, errors and change
//! feed, sandboxes, failed authentications) plus the requests of every
//! interface, recorded here.
//!
//! Labels never hold a secret's or token's name: a request is labelled by
//! its interface, its route template (`/api/v1/secrets/{name}`) or gRPC
//! method (only those latchkey declares), and its status.
//!
//! Who may read it: clients on a loopback address, and any client sending
//! `Authorization: Bearer <token>` with the token of `--metrics-token-file`.

use std::{
    collections::HashSet,
    fmt,
    net::IpAddr,
    pin::Pin,
    sync::{Arc, LazyLock, OnceLock},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use axum::{
    body::{Body, Bytes},
    extract::{MatchedPath, Request, State},
    http::{header, HeaderMap, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
};
use http_body::{Frame, SizeHint};
use metrics::SharedString;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use prost::Message as _;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// Seconds: from 0.5 ms (a cached lookup) to 30 s (a long poll).
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Jobs per group commit (at most 128).
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0];

/// How often histograms are compacted between scrapes.
pub const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process's recorder, installed on first use; every later call
/// returns the same handle.
pub fn handle() -> &'static PrometheusHandle {
    HANDLE.get_or_init(install)
}

fn install() -> PrometheusHandle {
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full("latchkey_request_duration_seconds".to_owned()),
            LATENCY_BUCKETS,
        )
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full("latchkey_group_commit_batch_size".to_owned()),
                BATCH_BUCKETS,
            )
        })
        .expect("the bucket lists are not empty")
        .build_recorder();
    let handle = recorder.handle();
    if metrics::set_global_recorder(recorder).is_err() {
        tracing::warn!("another metrics recorder is installed: /metrics shows nothing");
    }
    describe();
    metrics::gauge!("latchkey_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    // Shown as 0 from the start rather than missing until the first event,
    // so that rates and alerts work from the first scrape.
    metrics::gauge!("latchkey_sandboxes_running").increment(0.0);
    for name in [
        "latchkey_lookup_cache_hits_total",
        "latchkey_store_errors_total",
        "latchkey_store_unavailable_total",
        "latchkey_store_write_collisions_total",
        "latchkey_change_feed_reconnects_total",
        "latchkey_audit_events_appended_total",
        "latchkey_audit_write_failures_total",
    ] {
        metrics::counter!(name).increment(0);
    }
    for reason in ["absent", "not_current"] {
        metrics::counter!("latchkey_lookup_cache_misses_total", "reason" => reason).increment(0);
    }
    for reason in ["no_token", "invalid", "throttled"] {
        metrics::counter!("latchkey_auth_failures_total", "reason" => reason).increment(0);
    }
    for scope in ["secret", "all"] {
        metrics::counter!("latchkey_lookup_cache_invalidations_total", "scope" => scope)
            .increment(0);
    }
    handle
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        "latchkey_requests_total",
        "Requests answered, by interface (grpc, api, dashboard, http), route or RPC, and status"
    );
    describe_histogram!(
        "latchkey_request_duration_seconds",
        Unit::Seconds,
        "Time to answer a request (gRPC: to its final status), by interface and route or RPC"
    );
    describe_counter!(
        "latchkey_lookup_cache_hits_total",
        "Named lookups answered from the lookup cache"
    );
    describe_counter!(
        "latchkey_lookup_cache_misses_total",
        "Named lookups that read the database (absent: not cached; not_current: the PostgreSQL change feed was not in sync)"
    );
    describe_counter!(
        "latchkey_lookup_cache_invalidations_total",
        "Entries of the lookup cache forgotten after a write (secret: one secret's; all: the whole cache)"
    );
    describe_histogram!(
        "latchkey_group_commit_batch_size",
        "Jobs committed together in one transaction, by group (writes: creates, updates and deletes of secrets; audit_events: the events of reads and refusals)"
    );
    describe_counter!(
        "latchkey_store_errors_total",
        "Database errors other than unavailability (answered as INTERNAL / 500)"
    );
    describe_counter!(
        "latchkey_store_unavailable_total",
        "Requests refused because the database was unreachable or too slow (UNAVAILABLE / 503)"
    );
    describe_counter!(
        "latchkey_store_write_collisions_total",
        "PostgreSQL: groups of writes run again because another transaction took a name (or creation time) first, or a deadlock"
    );
    describe_counter!(
        "latchkey_change_feed_reconnects_total",
        "Times the PostgreSQL change feed (LISTEN) was lost and reconnected"
    );
    describe_gauge!(
        "latchkey_sandboxes_running",
        "Modal sandboxes whose process runs"
    );
    describe_counter!(
        "latchkey_auth_failures_total",
        "Failed authentications, by reason (no_token; invalid: unknown, revoked, expired or a wrong secret; throttled: refused for too many failures from the address)"
    );
    describe_gauge!(
        "latchkey_build_info",
        "Always 1; the version of the running server in its label"
    );
}

/// Who may read `/metrics` besides loopback clients.
#[derive(Clone, Default)]
pub struct MetricsAccess {
    token: Option<Arc<Zeroizing<String>>>,
}

/// Never shows the token.
impl fmt::Debug for MetricsAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetricsAccess")
            .field("token", &self.token.as_ref().map(|_| "<hidden>"))
            .finish()
    }
}

impl MetricsAccess {
    /// Loopback clients only.
    pub fn loopback_only() -> Self {
        Self::default()
    }

    /// Loopback clients, and others sending this bearer token.
    pub fn with_token(token: Zeroizing<String>) -> Self {
        Self {
            token: Some(Arc::new(token)),
        }
    }

    /// The answer refusing this client, or `None` when it may read.
    fn refusal(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> Option<Response> {
        if peer.is_some_and(|ip| ip.to_canonical().is_loopback()) {
            return None;
        }
        let Some(token) = &self.token else {
            return Some(
                (
                    StatusCode::FORBIDDEN,
                    "/metrics is served to loopback clients only; start the server with \
                 --metrics-token-file FILE to let Prometheus in with that bearer token\n",
                )
                    .into_response(),
            );
        };
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        if bool::from(presented.as_bytes().ct_eq(token.as_bytes())) {
            None
        } else {
            Some(
                (
                    StatusCode::UNAUTHORIZED,
                    [(header::WWW_AUTHENTICATE, "Bearer")],
                    "/metrics needs the bearer token of --metrics-token-file\n",
                )
                    .into_response(),
            )
        }
    }
}

/// `GET /metrics`.
pub(crate) async fn serve_metrics(
    State(access): State<MetricsAccess>,
    request: Request,
) -> Response {
    let peer = request
        .extensions()
        .get::<latchkey_service::ClientAddr>()
        .map(|a| a.0);
    if let Some(refused) = access.refusal(peer, request.headers()) {
        return refused;
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        handle().render(),
    )
        .into_response()
}

/// The route template a request matched, set by [`remember_route`] inside
/// the router for [`observe`] outside it.
#[derive(Clone, Default)]
struct MatchedRoute(Arc<OnceLock<String>>);

/// Route layer: tells [`observe`] which route template matched.
pub(crate) async fn remember_route(request: Request, next: Next) -> Response {
    if let (Some(slot), Some(matched)) = (
        request.extensions().get::<MatchedRoute>(),
        request.extensions().get::<MatchedPath>(),
    ) {
        let _ = slot.0.set(matched.as_str().to_owned());
    }
    next.run(request).await
}

/// Every gRPC method latchkey declares, as `/package.Service/Method`.
static RPCS: LazyLock<HashSet<String>> = LazyLock::new(|| {
    let set = prost_types::FileDescriptorSet::decode(latchkey_proto::FILE_DESCRIPTOR_SET)
        .expect("the descriptors built into latchkey-proto decode");
    set.file
        .iter()
        .flat_map(|file| {
            file.service.iter().flat_map(move |service| {
                service.method.iter().map(move |method| {
                    format!("/{}.{}/{}", file.package(), service.name(), method.name())
                })
            })
        })
        .collect()
});

fn interface(path: &str, grpc: bool) -> &'static str {
    if grpc {
        "grpc"
    } else if path.starts_with("/api/") {
        "api"
    } else if matches!(path, "/healthz" | "/readyz" | "/metrics") {
        "http"
    } else {
        "dashboard"
    }
}

/// Middleware, outermost: counts and times every request.
pub(crate) async fn observe(mut request: Request, next: Next) -> Response {
    let start = Instant::now();
    let grpc = crate::http::is_grpc(&request);
    let path = request.uri().path();
    let interface = interface(path, grpc);
    // A declared RPC's name is static: no allocation on the gRPC path.
    let rpc = grpc.then(|| {
        RPCS.get(path)
            .map_or(SharedString::const_str("unknown"), |p| {
                SharedString::const_str(&p[1..])
            })
    });
    let slot = MatchedRoute::default();
    request.extensions_mut().insert(slot.clone());
    let response = next.run(request).await;
    let route = rpc.unwrap_or_else(|| {
        slot.0
            .get()
            .map_or(SharedString::const_str("unmatched"), |r| {
                SharedString::from_owned(r.clone())
            })
    });
    let pending = Pending {
        interface,
        route,
        start,
    };
    if !grpc {
        pending.finish(response.status().as_str().to_owned());
        return response;
    }
    // Trailers-only (an error before any message): the status is here.
    if let Some(status) = grpc_status(response.headers()) {
        pending.finish(status);
        return response;
    }
    response.map(|inner| {
        Body::new(GrpcBody {
            inner,
            pending: Some(pending),
        })
    })
}

/// A request whose outcome is not recorded yet.
struct Pending {
    interface: &'static str,
    route: SharedString,
    start: Instant,
}

impl Pending {
    fn finish(self, status: String) {
        let Self {
            interface,
            route,
            start,
        } = self;
        metrics::histogram!(
            "latchkey_request_duration_seconds",
            "interface" => interface,
            "route" => route.clone()
        )
        .record(start.elapsed().as_secs_f64());
        metrics::counter!(
            "latchkey_requests_total",
            "interface" => interface,
            "route" => route,
            "status" => status
        )
        .increment(1);
    }
}

/// The gRPC status of a header or trailer map, by name (`NotFound`).
fn grpc_status(headers: &HeaderMap) -> Option<String> {
    let code = headers
        .get("grpc-status")?
        .to_str()
        .ok()?
        .parse::<i32>()
        .ok()?;
    Some(format!("{:?}", tonic::Code::from_i32(code)))
}

/// A gRPC response body that records the request when its trailers (the
/// status) go out, or when it is dropped unfinished (`Cancelled`).
struct GrpcBody {
    inner: Body,
    pending: Option<Pending>,
}

impl Drop for GrpcBody {
    fn drop(&mut self) {
        if let Some(pending) = self.pending.take() {
            pending.finish("Cancelled".to_owned());
        }
    }
}

impl http_body::Body for GrpcBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        let polled = std::task::ready!(Pin::new(&mut this.inner).poll_frame(cx));
        let status = match &polled {
            Some(Ok(frame)) => frame.trailers_ref().map(grpc_status),
            Some(Err(_)) => Some(Some("Internal".to_owned())),
            None => Some(None),
        };
        if let Some(status) = status {
            if let Some(pending) = this.pending.take() {
                pending.finish(status.unwrap_or_else(|| "Unknown".to_owned()));
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn bearer(token: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            format!("Bearer {token}").parse().unwrap(),
        );
        headers
    }

    #[test]
    fn loopback_reads_freely_others_need_the_token() {
        let none = HeaderMap::new();
        let local: IpAddr = "127.0.0.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        let remote: IpAddr = "192.0.2.7".parse().unwrap();
        let open = MetricsAccess::loopback_only();
        assert!(open.refusal(Some(local), &none).is_none());
        assert!(open.refusal(Some(mapped), &none).is_none());
        assert!(open.refusal(Some("::1".parse().unwrap()), &none).is_none());
        let refused = open.refusal(Some(remote), &bearer("anything")).unwrap();
        assert_eq!(refused.status(), StatusCode::FORBIDDEN);
        assert!(open.refusal(None, &none).is_some());

        let token = "0123456789abcdef0123456789abcdef";
        let guarded = MetricsAccess::with_token(Zeroizing::new(token.to_owned()));
        assert!(guarded.refusal(Some(local), &none).is_none());
        assert!(guarded.refusal(Some(remote), &bearer(token)).is_none());
        for wrong in [
            HeaderMap::new(),
            bearer("0123456789abcdef"),
            bearer(&format!("{token}x")),
        ] {
            let refused = guarded.refusal(Some(remote), &wrong).unwrap();
            assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
        }
        assert!(!format!("{guarded:?}").contains(token));
    }
}
