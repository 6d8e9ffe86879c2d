//! `/backup`: a consistent online snapshot of the whole store, streamed.

use axum::{
    body::Body,
    http::header,
    response::{IntoResponse, Response},
};

use super::{
    error::{ApiError, ErrorBody},
    extract::Authenticated,
    responses::NotAdmin,
};

/// Take a backup of the whole store (an admin of the server's first
/// workspace). The answer streams the backup file: a manifest line (format
/// version, master key id, each table's row count and digest), one line per
/// row (secrets still sealed), and an end marker with the SHA-256 of the
/// file; `latchkey backup verify` checks it. If reading the store fails
/// midway the stream is cut, so the file lacks its end marker and no check
/// passes it.
#[utoipa::path(
    get, path = "/backup", tag = "backup",
    responses(
        (status = 200, description = "The backup file", content_type = "application/x-ndjson"),
        (status = 503, description = "The store cannot be read now", body = ErrorBody),
        NotAdmin,
    )
)]
pub(crate) async fn backup(
    Authenticated { service, caller }: Authenticated,
) -> Result<Response, ApiError> {
    let mut chunks = service.backup(&caller).await?;
    // The answer's status is sent before its body: wait for the manifest,
    // so that a store that cannot be read is a 503, not a cut stream.
    let first = match chunks.recv().await {
        Some(Ok(first)) => first,
        Some(Err(e)) => {
            tracing::error!(error = %e, "backup failed before it began");
            return Err(latchkey_core::Error::unavailable(
                "The backup could not read the store; try again shortly",
            )
            .into());
        }
        None => {
            return Err(
                latchkey_core::Error::unavailable("The backup ended before it began").into(),
            )
        }
    };
    let rest = futures::stream::unfold(chunks, |mut chunks| async move {
        let chunk = chunks.recv().await?;
        let chunk = chunk.map_err(|e| {
            tracing::error!(error = %e, "backup failed; its stream is cut");
            std::io::Error::other("the backup failed")
        });
        Some((chunk, chunks))
    });
    let stream = futures::StreamExt::chain(
        futures::stream::once(async move { Ok::<_, std::io::Error>(first) }),
        rest,
    );
    Ok(ndjson(stream))
}

/// An answer streaming `lines` of JSON, never cached: a backup, a rotation's
/// progress.
pub(crate) fn ndjson<S>(lines: S) -> Response
where
    S: futures::Stream<Item = Result<Vec<u8>, std::io::Error>> + Send + 'static,
{
    (
        [
            (header::CONTENT_TYPE, "application/x-ndjson"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        Body::from_stream(lines),
    )
        .into_response()
}
