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
    pub registry: slipway_registry::Registry,
}

impl AppState {
    /// Opens the database (running migrations) and the object store named by `config`.
    pub async fn open(config: Config) -> Result<Self, StorageError> {
        let db = storage::open_database(&config).await?;
        let objects = storage::open_object_store(&config)?;
        let mut registry =
            slipway_registry::Registry::new(db.clone(), objects.clone(), config.registry.clone());
        if config.object_store.kind == crate::config::ObjectStoreKind::Local {
            registry = registry.with_local_root(config.object_store_path());
        }
        registry.spawn_garbage_collector();
        Ok(Self(Arc::new(Shared {
            config,
            db,
            objects,
            metrics: crate::telemetry::metrics_handle(),
            registry,
        })))
    }
}

impl Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}
