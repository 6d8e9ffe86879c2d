//! `/backup`: a consistent online snapshot of the whole store, streamed.

use axum::{
    body::Body,
    http::header,
    response::{IntoResponse, Response},
};

use super::{error::ApiError, extract::Authenticated, responses::NotAdmin};

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
        NotAdmin,
    )
)]
pub(crate) async fn backup(
    Authenticated { service, caller }: Authenticated,
) -> Result<Response, ApiError> {
    let chunks = service.backup(&caller)?;
    let stream = futures::stream::unfold(chunks, |mut chunks| async move {
        let chunk = chunks.recv().await?;
        let chunk = chunk.map_err(|e| {
            tracing::error!(error = %e, "backup failed; its stream is cut");
            std::io::Error::other("the backup failed")
        });
        Some((chunk, chunks))
    });
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-ndjson"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}
