//! `/key/rotate`: online rotation of the master key, its progress streamed.

use axum::response::Response;
use latchkey_service::RotationEvent;

use super::{
    error::{ApiError, ErrorBody},
    extract::Authenticated,
    responses::NotAdmin,
};

/// One line of the answer of `/key/rotate`.
fn line(event: &RotationEvent) -> Vec<u8> {
    let value = match event {
        RotationEvent::Progress(p) => serde_json::json!({ "done": p.done, "total": p.total }),
        RotationEvent::Done { key_id } => serde_json::json!({ "finished": true, "key_id": key_id }),
        RotationEvent::Failed(message) => serde_json::json!({ "error": message }),
    };
    let mut bytes = value.to_string().into_bytes();
    bytes.push(b'\n');
    bytes
}

/// Rotate the master key (an admin of the server's first workspace, not
/// limited to some environments): the server makes a new key, keeps it
/// beside `master.key`, seals every new row under it and rewraps every data
/// key in batches while it keeps serving, then replaces `master.key`. The
/// answer streams one JSON line per batch (`{"done": N, "total": T}`) and
/// ends with `{"finished": true, "key_id": ...}` or `{"error": ...}` (the
/// rotation then resumes when asked again, or at the next start). Refused
/// (412) when the key was given by `LATCHKEY_MASTER_KEY` or
/// `--master-key-file`, or when the data dir cannot take the new key.
#[utoipa::path(
    post, path = "/key/rotate", tag = "key",
    responses(
        (status = 200, description = "Progress lines, then the end", content_type = "application/x-ndjson"),
        (status = 412, description = "This server cannot rotate its key online, or a rotation is running", body = ErrorBody),
        NotAdmin,
    )
)]
pub(crate) async fn rotate(
    Authenticated { service, caller }: Authenticated,
) -> Result<Response, ApiError> {
    let events = service.rotate_master_key(&caller).await?;
    let stream = futures::stream::unfold(events, |mut events| async move {
        let event = events.recv().await?;
        Some((Ok::<_, std::io::Error>(line(&event)), events))
    });
    Ok(super::backup::ndjson(stream))
}
