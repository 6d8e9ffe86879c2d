//! Blobs: how Modal's client moves arguments, results and files larger than
//! 2 MiB. The client asks for an upload URL (`BlobCreate`), `PUT`s the bytes
//! there and checks the answer's `ETag` (the hex MD5 of the body, as S3
//! answers), then names the blob in its request; the reader asks for a
//! download URL (`BlobGet`) and `GET`s it.
//!
//! The URLs are on latchkey's own port (`/functions/blobs/ID`), signed with
//! a key that lives only in the server's memory and valid for a few
//! minutes: whoever holds one may do exactly that one upload or download,
//! as with a presigned S3 URL. Blobs are kept in memory per workspace, for
//! an hour at most, within a total budget.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use latchkey_core::{ids, Error};
use latchkey_proto::api;
use md5::{Digest as _, Md5};
use sha2::Sha256;
use subtle::ConstantTimeEq as _;

use crate::{echo, Functions};

/// Largest blob.
pub const MAX_BLOB_BYTES: usize = 64 * 1024 * 1024;
/// Bytes of blobs kept at once, over all workspaces.
const MAX_TOTAL_BYTES: usize = 512 * 1024 * 1024;
/// How long a blob is kept.
const BLOB_TTL: Duration = Duration::from_secs(60 * 60);
/// How long a signed URL is valid.
const URL_TTL: Duration = Duration::from_secs(10 * 60);

pub(crate) struct Blobs {
    key: [u8; 32],
    blobs: HashMap<String, Blob>,
    bytes: usize,
}

impl Default for Blobs {
    fn default() -> Self {
        use rand::RngCore as _;
        let mut key = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut key);
        Self {
            key,
            blobs: HashMap::new(),
            bytes: 0,
        }
    }
}

struct Blob {
    workspace_id: String,
    length: usize,
    /// The MD5 the client announced (base64), checked on upload.
    md5_base64: String,
    data: Option<Arc<Vec<u8>>>,
    created: Instant,
}

/// Which use a URL is signed for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobAccess {
    /// `PUT`: the one upload.
    Upload,
    /// `GET`.
    Download,
}

impl BlobAccess {
    fn as_str(self) -> &'static str {
        match self {
            Self::Upload => "put",
            Self::Download => "get",
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Blobs {
    fn signature(&self, id: &str, access: BlobAccess, expires: u64) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("any key length");
        mac.update(format!("{id}\n{}\n{expires}", access.as_str()).as_bytes());
        mac.finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    fn url(&self, base: &str, id: &str, access: BlobAccess) -> String {
        let expires = unix_now() + URL_TTL.as_secs();
        let sig = self.signature(id, access, expires);
        format!(
            "{}/functions/blobs/{id}?op={}&exp={expires}&sig={sig}",
            base.trim_end_matches('/'),
            access.as_str()
        )
    }

    fn check(&self, id: &str, access: BlobAccess, expires: u64, sig: &str) -> Result<(), Error> {
        if expires < unix_now() {
            return Err(Error::permission_denied("This blob URL has expired"));
        }
        let expected = self.signature(id, access, expires);
        if !bool::from(expected.as_bytes().ct_eq(sig.as_bytes())) {
            return Err(Error::permission_denied(
                "This blob URL's signature is not valid",
            ));
        }
        Ok(())
    }

    /// Whether blob `id` of `workspace_id` holds its upload.
    pub(crate) fn has(&self, workspace_id: &str, id: &str) -> bool {
        self.blobs
            .get(id)
            .is_some_and(|b| b.workspace_id == workspace_id && b.data.is_some())
    }

    fn expire(&mut self) {
        let mut freed = 0;
        self.blobs.retain(|_, b| {
            let keep = b.created.elapsed() < BLOB_TTL;
            if !keep {
                freed += b.length;
            }
            keep
        });
        self.bytes -= freed;
    }
}

impl Functions {
    /// `BlobCreate`: an id and a signed upload URL for `content_length`
    /// bytes, in `workspace_id`.
    pub fn blob_create(
        &self,
        workspace_id: &str,
        req: &api::BlobCreateRequest,
    ) -> Result<api::BlobCreateResponse, Error> {
        let length = usize::try_from(req.content_length).unwrap_or(usize::MAX);
        if req.content_length < 0 || length > MAX_BLOB_BYTES {
            return Err(Error::invalid(format!(
                "This payload is {} MiB; latchkey accepts function arguments, results and files \
                 of at most {} MiB",
                req.content_length / (1024 * 1024),
                MAX_BLOB_BYTES / (1024 * 1024)
            )));
        }
        let mut state = self.state();
        let blobs = &mut state.blobs;
        blobs.expire();
        if blobs.bytes + length > MAX_TOTAL_BYTES {
            return Err(Error::resource_exhausted(format!(
                "This server holds {} MiB of large payloads, its limit; try again later",
                MAX_TOTAL_BYTES / (1024 * 1024)
            )));
        }
        let id = ids::new_id("bl-");
        blobs.bytes += length;
        blobs.blobs.insert(
            id.clone(),
            Blob {
                workspace_id: workspace_id.to_owned(),
                length,
                md5_base64: req.content_md5.clone(),
                data: None,
                created: Instant::now(),
            },
        );
        let url = blobs.url(&self.inner.config.public_url, &id, BlobAccess::Upload);
        Ok(api::BlobCreateResponse {
            blob_id: id.clone(),
            blob_ids: vec![id],
            upload_type_oneof: Some(api::blob_create_response::UploadTypeOneof::UploadUrl(
                url.clone(),
            )),
            upload_types_oneof: Some(api::blob_create_response::UploadTypesOneof::UploadUrls(
                api::UploadUrlList { items: vec![url] },
            )),
        })
    }

    /// `BlobGet`: a signed download URL for a blob of `workspace_id`.
    pub fn blob_get(
        &self,
        workspace_id: &str,
        blob_id: &str,
    ) -> Result<api::BlobGetResponse, Error> {
        let state = self.state();
        let uploaded = state
            .blobs
            .blobs
            .get(blob_id)
            .filter(|b| b.workspace_id == workspace_id && b.data.is_some());
        if uploaded.is_none() {
            return Err(Error::not_found(format!(
                "Blob '{}' not found",
                echo(blob_id)
            )));
        }
        Ok(api::BlobGetResponse {
            download_url: state.blobs.url(
                &self.inner.config.public_url,
                blob_id,
                BlobAccess::Download,
            ),
        })
    }

    /// The contents of an uploaded blob of `workspace_id` (a file sent as
    /// a blob, an argument a container reads).
    pub(crate) fn blob_data(
        &self,
        workspace_id: &str,
        blob_id: &str,
    ) -> Result<Arc<Vec<u8>>, Error> {
        self.state()
            .blobs
            .blobs
            .get(blob_id)
            .filter(|b| b.workspace_id == workspace_id)
            .and_then(|b| b.data.clone())
            .ok_or_else(|| Error::not_found(format!("Blob '{}' not found", echo(blob_id))))
    }

    /// The `PUT` of a signed upload URL: stores the body and returns its hex
    /// MD5 (the `ETag` the client checks).
    pub fn blob_upload(
        &self,
        blob_id: &str,
        expires: u64,
        sig: &str,
        body: &[u8],
    ) -> Result<String, Error> {
        let mut state = self.state();
        state
            .blobs
            .check(blob_id, BlobAccess::Upload, expires, sig)?;
        let blob = state
            .blobs
            .blobs
            .get_mut(blob_id)
            .ok_or_else(|| Error::not_found(format!("Blob '{}' not found", echo(blob_id))))?;
        if blob.data.is_some() {
            return Err(Error::failed_precondition("This blob was uploaded already"));
        }
        if body.len() != blob.length {
            return Err(Error::invalid(format!(
                "The blob is announced as {} bytes, the upload has {}",
                blob.length,
                body.len()
            )));
        }
        let md5 = Md5::digest(body);
        if !blob.md5_base64.is_empty()
            && base64::engine::general_purpose::STANDARD.encode(md5) != blob.md5_base64
        {
            return Err(Error::invalid(
                "The upload does not match its announced MD5",
            ));
        }
        blob.data = Some(Arc::new(body.to_vec()));
        Ok(md5.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// The `GET` of a signed download URL.
    pub fn blob_download(
        &self,
        blob_id: &str,
        expires: u64,
        sig: &str,
    ) -> Result<Arc<Vec<u8>>, Error> {
        let state = self.state();
        state
            .blobs
            .check(blob_id, BlobAccess::Download, expires, sig)?;
        state
            .blobs
            .blobs
            .get(blob_id)
            .and_then(|b| b.data.clone())
            .ok_or_else(|| Error::not_found(format!("Blob '{}' not found", echo(blob_id))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_signed_per_blob_use_and_expiry() {
        let blobs = Blobs::default();
        let exp = unix_now() + 60;
        let sig = blobs.signature("bl-1", BlobAccess::Upload, exp);
        assert!(blobs.check("bl-1", BlobAccess::Upload, exp, &sig).is_ok());
        assert!(blobs
            .check("bl-1", BlobAccess::Download, exp, &sig)
            .is_err());
        assert!(blobs.check("bl-2", BlobAccess::Upload, exp, &sig).is_err());
        assert!(blobs
            .check("bl-1", BlobAccess::Upload, exp + 1, &sig)
            .is_err());
        let old = unix_now() - 1;
        let sig = blobs.signature("bl-1", BlobAccess::Upload, old);
        assert!(blobs.check("bl-1", BlobAccess::Upload, old, &sig).is_err());
        let url = blobs.url("http://h:1/", "bl-1", BlobAccess::Download);
        assert!(
            url.starts_with("http://h:1/functions/blobs/bl-1?op=get&exp="),
            "{url}"
        );
    }
}
