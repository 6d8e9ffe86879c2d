//! Names the RPC in UNIMPLEMENTED answers.
//!
//! tonic answers a method its service does not declare with a bare
//! UNIMPLEMENTED status; the client then shows an empty message. This layer
//! adds one that names the RPC, and answers gRPC requests to services we do
//! not serve at all the same way.

use axum::{body::Body, extract::Request, middleware::Next, response::Response};
use http::{header::CONTENT_TYPE, HeaderValue};

const GRPC_STATUS: &str = "grpc-status";
const GRPC_MESSAGE: &str = "grpc-message";
const UNIMPLEMENTED: &str = "12";

/// The V1 sandbox flow, which Modal's client takes only for what V2 cannot
/// do: say what that is rather than name an RPC the caller never chose.
const V1_SANDBOX_CREATE: &str = "/modal.client.ModalClient/SandboxCreate";

/// RPCs that stand for a feature latchkey does not offer: the answer names
/// the feature rather than the RPC.
const REFUSED_FEATURES: [(&str, &str); 4] = [
    (
        "VolumeGetOrCreate",
        "latchkey does not support volumes (modal.Volume) in functions",
    ),
    (
        "SharedVolumeGetOrCreate",
        "latchkey does not support network file systems (modal.NetworkFileSystem) in functions",
    ),
    (
        "ProxyGet",
        "latchkey does not support proxies (modal.Proxy) in functions",
    ),
    (
        "ClassCreate",
        "latchkey does not support classes (@app.cls) in functions",
    ),
];

fn message_for(path: &str) -> HeaderValue {
    if path == V1_SANDBOX_CREATE {
        return HeaderValue::from_static(
            "latchkey sandboxes do not support GPUs, network file systems or a PTY \
             (the client asks for those with SandboxCreate, which latchkey does not serve)",
        );
    }
    // Features functions cannot have, asked for with RPCs of their own.
    for (rpc, feature) in REFUSED_FEATURES {
        if path.strip_prefix("/modal.client.ModalClient/") == Some(rpc) {
            return HeaderValue::from_static(feature);
        }
    }
    let rpc: String = path
        .trim_start_matches('/')
        .chars()
        // grpc-message is percent-encoded; keep to characters that need none.
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '/' | '_' | '-'))
        .collect();
    HeaderValue::from_str(&format!("latchkey does not implement the RPC {rpc}"))
        .unwrap_or_else(|_| HeaderValue::from_static("latchkey does not implement this RPC"))
}

/// Middleware: fills in the message of UNIMPLEMENTED answers.
pub async fn name_unimplemented_rpcs(request: Request, next: Next) -> Response {
    // A clone of the URI shares its bytes: no copy on the request path.
    let uri = request.uri().clone();
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    if headers.get(GRPC_STATUS).is_some_and(|s| s == UNIMPLEMENTED)
        && headers.get(GRPC_MESSAGE).is_none()
    {
        headers.insert(GRPC_MESSAGE, message_for(uri.path()));
    }
    response
}

/// The answer to a gRPC request for a service that is not served.
pub(crate) fn unknown_service(path: &str) -> Response {
    let mut response = Response::new(Body::empty());
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    headers.insert(GRPC_STATUS, HeaderValue::from_static(UNIMPLEMENTED));
    headers.insert(GRPC_MESSAGE, message_for(path));
    response
}
