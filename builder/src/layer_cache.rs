//! The layer cache: a step's key is the digest of its parent chain, the instruction as
//! expanded, and the content digest of what it reads; the value is the layer it produced
//! (or none, for a step that changed nothing). Records live in the object store, so every
//! replica shares them.

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::image::LayerRef;
use crate::store::BlobStore;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheRecord {
    pub layer: Option<LayerRef>,
}

#[derive(Clone, Debug)]
pub struct LayerCache {
    store: BlobStore,
}

impl LayerCache {
    pub fn new(store: BlobStore) -> Self {
        LayerCache { store }
    }

    /// The cached result of a step, if its layer blob is still present.
    pub async fn get(&self, key: &str) -> Result<Option<CacheRecord>> {
        let Some(record) = self.store.record::<CacheRecord>("cache", key).await? else {
            return Ok(None);
        };
        match &record.layer {
            Some(layer) if !self.store.has_blob(&layer.digest).await? => Ok(None),
            _ => Ok(Some(record)),
        }
    }

    pub async fn put(&self, key: &str, record: &CacheRecord) -> Result<()> {
        self.store.put_record("cache", key, record).await
    }
}
