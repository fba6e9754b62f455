//! The builder's shared storage in the object store: blobs by digest (layers, configs, base
//! image layers) and small JSON records (layer cache entries, context digest indexes), so
//! replicas share one cache.

use std::sync::Arc;

use bytes::Bytes;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

#[derive(Clone, Debug)]
pub struct BlobStore {
    store: Arc<dyn ObjectStore>,
}

impl BlobStore {
    pub fn new(store: Arc<dyn ObjectStore>) -> Self {
        BlobStore { store }
    }

    fn blob_path(digest: &str) -> StorePath {
        StorePath::from(format!("builder/blobs/{}", digest.replace(':', "/")))
    }

    pub async fn has_blob(&self, digest: &str) -> Result<bool> {
        match self.store.head(&Self::blob_path(digest)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn put_blob(&self, digest: &str, data: Bytes) -> Result<()> {
        if !self.has_blob(digest).await? {
            self.store.put(&Self::blob_path(digest), PutPayload::from_bytes(data)).await?;
        }
        Ok(())
    }

    pub async fn blob(&self, digest: &str) -> Result<Bytes> {
        Ok(self.store.get(&Self::blob_path(digest)).await?.bytes().await?)
    }

    /// Reads a JSON record (`kind/name`), `None` when absent.
    pub async fn record<T: DeserializeOwned>(&self, kind: &str, name: &str) -> Result<Option<T>> {
        let path = StorePath::from(format!("builder/{kind}/{name}.json"));
        match self.store.get(&path).await {
            Ok(got) => {
                let bytes = got.bytes().await?;
                serde_json::from_slice(&bytes).map(Some).map_err(|e| Error::ImageData(format!("{path}: {e}")))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn put_record<T: Serialize>(&self, kind: &str, name: &str, value: &T) -> Result<()> {
        let path = StorePath::from(format!("builder/{kind}/{name}.json"));
        let bytes = serde_json::to_vec(value).map_err(|e| Error::ImageData(e.to_string()))?;
        self.store.put(&path, PutPayload::from(bytes)).await?;
        Ok(())
    }
}
