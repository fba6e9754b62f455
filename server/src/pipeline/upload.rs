//! Uploaded build sources: a client that shares no directory or git server with Slipway (the
//! `slipway build ./dir` of a person at a laptop) sends its source as a `.tar.gz`. It is kept
//! in the object store under `sources/`, so any replica can run the build, and each component
//! build fetches its own copy into the work directory, handed to the builder as an archive.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};
use serde::Serialize;
use tempfile::TempPath;
use tokio::io::AsyncWriteExt;

use super::PipelineError;

const PREFIX: &str = "sources";

/// What `POST /v1/sources` answers: the id a build names as `{"upload": {"id": …}}`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct UploadedSource {
    pub id: String,
    pub size_bytes: u64,
}

pub(super) struct SourceUploads {
    objects: Arc<dyn ObjectStore>,
    /// Where component builds unpack from; inside the build work directory.
    dir: PathBuf,
    max_bytes: u64,
}

/// An upload id is a UUID, so it can never name a path outside `sources/`.
pub fn check_id(id: &str) -> Result<(), String> {
    uuid::Uuid::parse_str(id).map(|_| ()).map_err(|_| format!("`{id}` is not an uploaded source id"))
}

fn key(id: &str) -> ObjectPath {
    ObjectPath::from(format!("{PREFIX}/{id}.tar.gz"))
}

impl SourceUploads {
    pub(super) fn new(objects: Arc<dyn ObjectStore>, dir: PathBuf, max_bytes: u64) -> Self {
        Self { objects, dir, max_bytes }
    }

    /// Streams `body` into the object store; a body past `max_context_bytes` is refused and
    /// what was written of it removed.
    pub(super) async fn store<E: std::fmt::Display>(
        &self,
        body: impl Stream<Item = Result<Bytes, E>>,
    ) -> Result<UploadedSource, PipelineError> {
        let id = uuid::Uuid::now_v7().to_string();
        let key = key(&id);
        let body = body.map(|chunk| {
            chunk.map_err(|e| PipelineError::InvalidRequest {
                problems: vec![format!("the source upload was interrupted: {e}")],
            })
        });
        let mut seen = 0u64;
        let limit = |chunk: &Bytes| {
            seen += chunk.len() as u64;
            if seen > self.max_bytes {
                return Err(PipelineError::SourceTooLarge { limit_bytes: self.max_bytes });
            }
            Ok(())
        };
        let (writer, size_bytes) =
            slipway_registry::blobs::write_stream(&*self.objects, &key, body, limit, PipelineError::from)
                .await?;
        if size_bytes == 0 {
            let _ = writer.abort().await;
            return Err(PipelineError::InvalidRequest {
                problems: vec!["the body must be the source as a .tar.gz".into()],
            });
        }
        writer.finish().await?;
        Ok(UploadedSource { id, size_bytes })
    }

    pub(super) async fn exists(&self, id: &str) -> Result<bool, PipelineError> {
        match self.objects.head(&key(id)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// A private copy of the upload for one component build, removed when dropped.
    pub(super) async fn fetch(&self, id: &str) -> Result<TempPath, String> {
        check_id(id)?;
        let failed = |e: &dyn std::fmt::Display| format!("reading uploaded source {id}: {e}");
        tokio::fs::create_dir_all(&self.dir).await.map_err(|e| failed(&e))?;
        let path = tempfile::Builder::new()
            .suffix(".tar.gz")
            .tempfile_in(&self.dir)
            .map_err(|e| failed(&e))?
            .into_temp_path();
        let mut file = tokio::fs::File::create(&path).await.map_err(|e| failed(&e))?;
        let mut stream = self.objects.get(&key(id)).await.map_err(|e| failed(&e))?.into_stream();
        while let Some(chunk) = stream.next().await {
            file.write_all(&chunk.map_err(|e| failed(&e))?).await.map_err(|e| failed(&e))?;
        }
        file.flush().await.map_err(|e| failed(&e))?;
        Ok(path)
    }
}
