//! Package blobs in the object store, under content-addressed keys.
//!
//! A blob reaches `blobs/sha256/<hex>` only once its bytes are all written and hashed, so a
//! key always holds exactly the bytes its name promises. Streamed uploads go to
//! `uploads/<uuid>` first (the digest is known only at the end) and are renamed into place;
//! whatever a crash leaves behind (an upload, or a blob no package row points at) is removed
//! by [`collect_garbage`] after a grace period that outlasts any publish in flight.

use std::io::Read;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use sha2::{Digest, Sha256};
use sqlx::AnyPool;

use crate::archive::{digest_hex, format_digest};
use crate::error::{Error, Result};
use crate::s3_uploads::S3Access;

const BLOBS: &str = "blobs/sha256";
const UPLOADS: &str = "uploads";
/// Multipart part size: memory per upload is about this times the parts in flight.
const PART_BYTES: usize = 8 * 1024 * 1024;
const PARTS_IN_FLIGHT: usize = 2;

pub fn blob_key(digest: &str) -> Result<Path> {
    Ok(Path::from(format!("{BLOBS}/{}", digest_hex(digest)?)))
}

/// A blob written and hashed, not yet referenced by any package row.
#[derive(Debug, Clone)]
pub struct StoredBlob {
    pub digest: String,
    pub size_bytes: u64,
    pub key: Path,
}

/// Writes bytes already in memory under their content key, then checks the stored size.
pub async fn put_bytes(store: &dyn ObjectStore, bytes: Bytes) -> Result<StoredBlob> {
    let digest = format_digest(Sha256::digest(&bytes));
    let key = blob_key(&digest)?;
    let size_bytes = bytes.len() as u64;
    store.put(&key, PutPayload::from(bytes)).await.map_err(Error::store(&key))?;
    verify_size(store, &key, size_bytes).await?;
    Ok(StoredBlob { digest, size_bytes, key })
}

/// Streams `body` into the store while hashing it, with memory bounded by the part size.
/// If `expected` is given and differs, nothing is kept and the error names both digests.
pub async fn put_stream<E: std::fmt::Display>(
    store: &dyn ObjectStore,
    body: impl Stream<Item = Result<Bytes, E>>,
    expected: Option<&str>,
) -> Result<StoredBlob> {
    if let Some(expected) = expected {
        digest_hex(expected).map_err(|_| Error::DigestMismatch {
            expected: expected.to_owned(),
            actual: "(not a sha256 digest)".into(),
        })?;
    }
    let staged = stage_stream(store, body).await?;
    if let Some(expected) = expected.filter(|e| *e != staged.digest) {
        let _ = store.delete(&staged.key).await;
        return Err(Error::DigestMismatch { expected: expected.to_owned(), actual: staged.digest });
    }
    let key = blob_key(&staged.digest)?;
    store.rename(&staged.key, &key).await.map_err(Error::store(&key))?;
    Ok(StoredBlob { key, ..staged })
}

/// Streams `body` to a fresh `uploads/` key while hashing it, and checks the stored size.
/// The caller renames it into place or deletes it; the garbage collector removes it if the
/// process dies first.
pub(crate) async fn stage_stream<E: std::fmt::Display>(
    store: &dyn ObjectStore,
    body: impl Stream<Item = std::result::Result<Bytes, E>>,
) -> Result<StoredBlob> {
    let staging = Path::from(format!("{UPLOADS}/{}", uuid::Uuid::new_v4()));
    let mut hasher = Sha256::new();
    let body = body.map(|chunk| chunk.map_err(|e| Error::Body(e.to_string())));
    let hash = |chunk: &Bytes| {
        hasher.update(chunk);
        Ok(())
    };
    let (writer, size_bytes) =
        write_stream(store, &staging, body, hash, |e| Error::store(&staging)(e)).await?;
    writer.finish().await.map_err(Error::store(&staging))?;
    verify_size(store, &staging, size_bytes).await?;
    Ok(StoredBlob { digest: format_digest(hasher.finalize()), size_bytes, key: staging })
}

/// Streams `body` into a new multipart object at `key`, a part at a time with a bounded
/// number of parts in flight, so memory stays flat whatever the size. `each` sees every
/// chunk before it is written and may refuse it (a size limit) or record it (a digest). On
/// any failure the upload is aborted and nothing partial stays. Returns the writer, for the
/// caller to finish (or abort after a last check of its own), and the bytes written.
pub async fn write_stream<E>(
    store: &dyn ObjectStore,
    key: &Path,
    body: impl Stream<Item = std::result::Result<Bytes, E>>,
    mut each: impl FnMut(&Bytes) -> std::result::Result<(), E>,
    store_error: impl Fn(object_store::Error) -> E,
) -> std::result::Result<(WriteMultipart, u64), E> {
    let upload = store.put_multipart(key).await.map_err(&store_error)?;
    let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
    let mut size_bytes = 0u64;
    let mut body = std::pin::pin!(body);
    let written: std::result::Result<(), E> = async {
        while let Some(chunk) = body.next().await {
            let chunk = chunk?;
            each(&chunk)?;
            size_bytes += chunk.len() as u64;
            writer.wait_for_capacity(PARTS_IN_FLIGHT).await.map_err(&store_error)?;
            writer.put(chunk);
        }
        Ok(())
    }
    .await;
    match written {
        Ok(()) => Ok((writer, size_bytes)),
        Err(e) => {
            let _ = writer.abort().await;
            Err(e)
        }
    }
}

async fn verify_size(store: &dyn ObjectStore, key: &Path, size_bytes: u64) -> Result<()> {
    let meta = store.head(key).await.map_err(Error::store(key))?;
    if meta.size != size_bytes {
        return Err(Error::ObjectStore {
            key: key.to_string(),
            source: object_store::Error::Generic {
                store: "registry",
                source: format!("stored {} bytes, wrote {size_bytes}", meta.size).into(),
            },
        });
    }
    Ok(())
}

/// An open blob: its byte range and the stream of those bytes.
pub struct BlobRead {
    pub size_bytes: u64,
    pub range: Range<u64>,
    pub stream: BoxStream<'static, Result<Bytes>>,
}

/// Opens `digest` for reading, the whole blob or `range` of it.
pub async fn open(store: &dyn ObjectStore, digest: &str, range: Option<GetRange>) -> Result<BlobRead> {
    open_key(store, blob_key(digest)?, range).await
}

pub(crate) async fn open_key(
    store: &dyn ObjectStore,
    key: Path,
    range: Option<GetRange>,
) -> Result<BlobRead> {
    let options = GetOptions { range, ..GetOptions::default() };
    let result = store.get_opts(&key, options).await.map_err(Error::store(&key))?;
    let (size_bytes, range) = (result.meta.size, result.range.clone());
    let stream =
        result.into_stream().map_err(move |e| Error::ObjectStore { key: key.to_string(), source: e });
    Ok(BlobRead { size_bytes, range, stream: stream.boxed() })
}

/// Runs `check` over the blob as a blocking `Read` (the tar and gzip readers are
/// synchronous), streaming it from the store chunk by chunk.
pub async fn read_blocking<T: Send + 'static>(
    store: &dyn ObjectStore,
    key: &Path,
    check: impl FnOnce(Box<dyn Read + Send>) -> Result<T> + Send + 'static,
) -> Result<T> {
    let blob = open_key(store, key.clone(), None).await?;
    let reader = tokio_util::io::StreamReader::new(blob.stream.map_err(std::io::Error::other));
    let bridge = tokio_util::io::SyncIoBridge::new(reader);
    tokio::task::spawn_blocking(move || check(Box::new(bridge)))
        .await
        .map_err(|e| Error::Io(std::io::Error::other(e)))?
}

/// What a garbage-collection pass removed.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GcReport {
    pub orphan_blobs: Vec<String>,
    pub stale_uploads: Vec<String>,
}

/// Where interrupted multipart uploads leave what the object store API does not list.
#[derive(Debug, Default, Clone, Copy)]
pub struct Leftovers<'a> {
    /// The directory of a local-disk store (staging files `uploads/<uuid>#<n>`).
    pub local_root: Option<&'a std::path::Path>,
    /// The bucket of an S3 store (incomplete multipart uploads).
    pub s3: Option<&'a S3Access>,
}

/// Removes blobs no package row references and uploads never finished, both only when
/// older than `grace` so a publish between its blob write and its commit is left alone.
pub async fn collect_garbage(
    store: &Arc<dyn ObjectStore>,
    db: &AnyPool,
    leftovers: Leftovers<'_>,
    grace: Duration,
) -> Result<GcReport> {
    let cutoff = crate::now_ms() - grace.as_millis() as i64;
    let mut report = GcReport::default();
    if let Some(root) = leftovers.local_root {
        report.stale_uploads = sweep_local_staging(&root.join(UPLOADS), grace)?;
    }
    if let Some(s3) = leftovers.s3 {
        report.stale_uploads.extend(s3.abort_stale(UPLOADS, cutoff).await?);
    }
    let mut uploads = store.list(Some(&Path::from(UPLOADS)));
    while let Some(meta) = uploads.try_next().await.map_err(Error::store(&Path::from(UPLOADS)))? {
        if meta.last_modified.timestamp_millis() < cutoff {
            store.delete(&meta.location).await.map_err(Error::store(&meta.location))?;
            report.stale_uploads.push(meta.location.to_string());
        }
    }
    let mut blobs = store.list(Some(&Path::from(BLOBS)));
    while let Some(meta) = blobs.try_next().await.map_err(Error::store(&Path::from(BLOBS)))? {
        let Some(hex) = meta.location.filename() else { continue };
        let digest = format!("sha256:{hex}");
        if meta.last_modified.timestamp_millis() >= cutoff || is_referenced(db, &digest).await? {
            continue;
        }
        store.delete(&meta.location).await.map_err(Error::store(&meta.location))?;
        report.orphan_blobs.push(digest);
    }
    if !report.orphan_blobs.is_empty() || !report.stale_uploads.is_empty() {
        tracing::info!(
            orphan_blobs = report.orphan_blobs.len(),
            stale_uploads = report.stale_uploads.len(),
            "registry garbage collected"
        );
    }
    Ok(report)
}

/// Removes multipart staging files (`<name>#<digits>`, which the local object store hides
/// from listings) older than `grace`.
fn sweep_local_staging(dir: &std::path::Path, grace: Duration) -> Result<Vec<String>> {
    let mut removed = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(removed),
        Err(e) => return Err(e.into()),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let staging =
            name.split_once('#').is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        let age = entry.metadata()?.modified()?.elapsed().unwrap_or_default();
        if staging && age >= grace {
            std::fs::remove_file(entry.path())?;
            removed.push(format!("{UPLOADS}/{name}"));
        }
    }
    Ok(removed)
}

pub(crate) async fn is_referenced(db: &AnyPool, digest: &str) -> Result<bool> {
    let row: Option<(String,)> =
        sqlx::query_as("SELECT app FROM registry_app_packages WHERE digest = $1 LIMIT 1")
            .bind(digest)
            .fetch_optional(db)
            .await?;
    Ok(row.is_some())
}
