//! The signed blob URLs of Modal functions (`/functions/blobs/ID`): where
//! the client and containers `PUT` and `GET` payloads over 2 MiB (see
//! `latchkey_functions`' blobs). The signature in the query is the only
//! credential, as with a presigned S3 URL: no token goes with these
//! requests.

use axum::{
    body::Bytes,
    extract::{DefaultBodyLimit, Path, Query, State},
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    routing::put,
    Router,
};
use latchkey_core::{Error, ErrorKind};
use latchkey_functions::{BlobAccess, Functions, MAX_BLOB_BYTES};
use serde::Deserialize;

/// The blob routes.
pub(crate) fn router(functions: Functions) -> Router {
    Router::new()
        .route("/functions/blobs/{id}", put(upload).get(download))
        .layer(DefaultBodyLimit::max(MAX_BLOB_BYTES))
        .with_state(functions)
}

#[derive(Deserialize)]
struct Signed {
    op: String,
    exp: u64,
    sig: String,
}

fn refuse(error: &Error) -> Response {
    let code = match error.kind() {
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::PermissionDenied => StatusCode::FORBIDDEN,
        ErrorKind::FailedPrecondition => StatusCode::CONFLICT,
        ErrorKind::ResourceExhausted => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::BAD_REQUEST,
    };
    (code, format!("{}\n", error.message())).into_response()
}

fn check_op(signed: &Signed, access: BlobAccess) -> Result<(), Error> {
    let expected = match access {
        BlobAccess::Upload => "put",
        BlobAccess::Download => "get",
    };
    if signed.op == expected {
        Ok(())
    } else {
        Err(Error::permission_denied(format!(
            "This URL is signed for {}, not for this request",
            if signed.op == "put" {
                "an upload"
            } else {
                "a download"
            }
        )))
    }
}

async fn upload(
    State(functions): State<Functions>,
    Path(id): Path<String>,
    Query(signed): Query<Signed>,
    body: Bytes,
) -> Response {
    let stored = check_op(&signed, BlobAccess::Upload)
        .and_then(|()| functions.blob_upload(&id, signed.exp, &signed.sig, &body));
    match stored {
        Ok(md5_hex) => {
            let mut response = StatusCode::OK.into_response();
            if let Ok(etag) = HeaderValue::from_str(&format!("\"{md5_hex}\"")) {
                response.headers_mut().insert(header::ETAG, etag);
            }
            response
        }
        Err(e) => refuse(&e),
    }
}

async fn download(
    State(functions): State<Functions>,
    Path(id): Path<String>,
    Query(signed): Query<Signed>,
) -> Response {
    let found = check_op(&signed, BlobAccess::Download)
        .and_then(|()| functions.blob_download(&id, signed.exp, &signed.sig));
    match found {
        Ok(data) => (
            [(header::CONTENT_TYPE, "application/octet-stream")],
            data.as_ref().clone(),
        )
            .into_response(),
        Err(e) => refuse(&e),
    }
}
