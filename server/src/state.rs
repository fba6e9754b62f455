//! What every handler can reach: configuration and the shared stores, opened once at start.

use std::ops::Deref;
use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;
use object_store::ObjectStore;
use sqlx::AnyPool;

use crate::auth::{AuthError, TokenStore};
use crate::cluster::Cluster;
use crate::config::Config;
use crate::pipeline::{Pipeline, PipelineError};
use crate::storage::{self, StorageError};
use crate::triggers::Triggers;

#[derive(Clone)]
pub struct AppState(Arc<Shared>);

pub struct Shared {
    pub config: Config,
    pub db: AnyPool,
    pub objects: Arc<dyn ObjectStore>,
    pub metrics: PrometheusHandle,
    pub registry: slipway_registry::Registry,
    pub plugins: slipway_plugins::PluginHost,
    pub status: slipway_status::StatusService,
    pub tokens: TokenStore,
    pub pipeline: Pipeline,
    pub triggers: Triggers,
    pub cluster: Cluster,
}

impl AppState {
    /// Opens the database (running migrations) and the object store named by `config`.
    pub async fn open(config: Config) -> Result<Self, OpenError> {
        let db = storage::open_database(&config).await?;
        let objects = storage::open_object_store(&config)?;
        let mut registry =
            slipway_registry::Registry::new(db.clone(), objects.clone(), config.registry.clone());
        registry = match config.object_store.kind {
            crate::config::ObjectStoreKind::Local => registry.with_local_root(config.object_store_path()),
            crate::config::ObjectStoreKind::S3 => {
                let s3 = &config.object_store.s3;
                registry.with_s3_uploads(slipway_registry::S3Access {
                    endpoint: s3.endpoint.clone(),
                    bucket: s3.bucket.clone(),
                    region: s3.region.clone(),
                    access_key_id: s3.access_key_id.clone(),
                    secret_access_key: s3.secret_access_key.clone(),
                })
            }
        };
        registry.spawn_garbage_collector();
        let plugins =
            slipway_plugins::PluginHost::open(db.clone(), objects.clone(), config.plugins.clone()).await?;
        let cluster = Cluster::join(db.clone(), &config).await.map_err(StorageError::Cluster)?;
        // On PostgreSQL several replicas may share the fleet: each checks its shard. On
        // SQLite there is one process, which checks everything.
        let shard_as = (cluster.dialect() == storage::Dialect::Postgres).then(|| cluster.id().to_owned());
        let status =
            slipway_status::StatusService::open(db.clone(), plugins.clone(), config.status, shard_as).await?;
        let pipeline =
            Pipeline::open(&config, db.clone(), objects.clone(), plugins.clone(), registry.clone(), &cluster)
                .await?;
        if config.pipeline.run_builds {
            pipeline.spawn_dispatcher(cluster.renew_every());
        }
        cluster.spawn_heartbeat(status.downgrade());
        let triggers =
            Triggers::new(db.clone(), cluster.dialect(), plugins.clone(), pipeline.clone(), &config.triggers);
        let tokens = TokenStore::new(db.clone());
        cluster.spawn_listener(config.database_url(), plugins.clone(), tokens.clone(), status.downgrade());
        if let Some(path) = tokens.ensure_initial_admin(&config.data_dir).await? {
            tracing::info!(path = %path.display(), "first start: created an admin API token and wrote it to this file");
        }
        Ok(Self(Arc::new(Shared {
            config,
            db,
            objects,
            metrics: crate::telemetry::metrics_handle(),
            registry,
            plugins,
            status,
            tokens,
            pipeline,
            triggers,
            cluster,
        })))
    }
}

/// Why the service could not open its state at start.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("cannot start the build pipeline: {0}")]
    Pipeline(#[from] PipelineError),
    #[error("cannot start the plugin host: {0}")]
    Plugins(#[from] slipway_plugins::Error),
    #[error("cannot start the status scaler: {0}")]
    Status(#[from] slipway_status::Error),
}

impl Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}
