//! What every handler can reach: configuration and the shared stores, opened once at start.

use std::ops::Deref;
use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;
use object_store::ObjectStore;
use sqlx::AnyPool;

use crate::config::Config;
use crate::storage::{self, StorageError};

#[derive(Clone)]
pub struct AppState(Arc<Shared>);

pub struct Shared {
    pub config: Config,
    pub db: AnyPool,
    pub objects: Arc<dyn ObjectStore>,
    pub metrics: PrometheusHandle,
}

impl AppState {
    /// Opens the database (running migrations) and the object store named by `config`.
    pub async fn open(config: Config) -> Result<Self, StorageError> {
        let db = storage::open_database(&config).await?;
        let objects = storage::open_object_store(&config)?;
        Ok(Self(Arc::new(Shared { config, db, objects, metrics: crate::telemetry::metrics_handle() })))
    }
}

impl Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}
