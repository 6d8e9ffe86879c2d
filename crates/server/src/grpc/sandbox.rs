//! What the gRPC adapter adds to the sandbox RPCs (`latchkey-sandbox` does
//! the rest): the answer of a server without `--sandboxes`, and the address
//! the client reached the server at, which only the HTTP request knows.

use axum::{extract::Request as HttpRequest, middleware::Next, response::Response};
use tonic::{Request, Status};

/// The answer to a sandbox RPC on a server started without `--sandboxes`.
///
/// UNIMPLEMENTED rather than FAILED_PRECONDITION: gRPC defines it as "not
/// implemented or not supported/enabled in this service", which is the case;
/// the client raises it as `UnimplementedError`, never retries it, and shows
/// the message, which says how to enable sandboxes. It also keeps one answer
/// for "this server does not run code", whichever RPC asks.
pub(crate) fn disabled(rpc: &str) -> Status {
    Status::unimplemented(format!(
        "{rpc} is not served: sandboxes are disabled on this server; start it with --sandboxes"
    ))
}

/// The scheme and authority a client reached this server at, e.g.
/// `http://127.0.0.1:7420`: where it can reach the command router too.
#[derive(Debug, Clone)]
struct RequestOrigin(String);

/// The RPCs that answer with the command router's address, from
/// [`RequestOrigin`].
const NEED_ORIGIN: [&str; 2] = [
    "/modal.client.ModalClient/SandboxCreateV2",
    "/modal.client.ModalClient/SandboxGetCommandRouterAccess",
];

/// Middleware: remembers the origin of the requests that need it, for
/// [`origin`] (every other request passes untouched).
pub(crate) async fn remember_origin(mut request: HttpRequest, next: Next) -> Response {
    if !NEED_ORIGIN.contains(&request.uri().path()) {
        return next.run(request).await;
    }
    let uri = request.uri();
    let authority = uri.authority().map(|a| a.as_str().to_owned()).or_else(|| {
        request
            .headers()
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_owned)
    });
    if let Some(authority) = authority {
        let scheme = uri.scheme_str().unwrap_or("http").to_owned();
        request
            .extensions_mut()
            .insert(RequestOrigin(format!("{scheme}://{authority}")));
    }
    next.run(request).await
}

/// The origin [`remember_origin`] found for `request`.
pub(crate) fn origin<T>(request: &Request<T>) -> Option<&str> {
    request
        .extensions()
        .get::<RequestOrigin>()
        .map(|o| o.0.as_str())
}
