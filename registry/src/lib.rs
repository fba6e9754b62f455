//! Slipway registry: component and app packages, semantic versions, tags and tag queries,
//! package blobs in the object store, offline export and import.
//!
//! Owns: package formats ([`manifest`], [`archive`]), version ordering ([`version`],
//! [`range`]), name and tag rules ([`names`]), publish atomicity ([`publish`], [`blobs`]),
//! tags and exclusive tags ([`tags`]), tag queries ([`query`]), retention ([`retention`]),
//! reuse of component packages built from the same inputs ([`reuse`]) and offline packages
//! ([`offline`]).
//! Must not know: HTTP routes, how images are built, instance health. The database pool and
//! object store are handed in by the server; the only network peer it talks to itself is
//! an OCI image registry, for offline export and import.
//!
//! Main type: [`Registry`]. The build pipeline publishes through
//! [`Registry::publish_app_package`]; clients that built a package themselves upload it
//! with [`Registry::upload_app_package`].

pub mod archive;
pub mod blobs;
mod changes;
mod error;
mod latest;
pub mod manifest;
pub mod names;
pub mod offline;
pub mod publish;
pub mod query;
pub mod range;
pub mod retention;
pub mod reuse;
mod s3_uploads;
mod schema;
pub mod tags;
pub mod version;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use object_store::ObjectStore;
use serde::{Deserialize, Serialize};
use sqlx::AnyPool;

pub use error::{Error, Result};
pub use s3_uploads::S3Access;
pub use schema::MIGRATIONS;

/// The registry's settings (the `[registry]` table of `slipway.toml`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistryConfig {
    /// Keep at most this many untagged versions per app beyond the newest ones; 0 keeps all.
    /// Tagged versions are never deleted by retention.
    pub keep_versions: u32,
    /// Blobs and uploads younger than this are never garbage collected, so a publish
    /// between its blob write and its commit is safe.
    pub gc_grace_secs: u64,
    /// How often the garbage collector runs; 0 disables it.
    pub gc_interval_secs: u64,
    /// The OCI registry offline imports push images into (`host:port`).
    pub image_registry: String,
    /// Talk plain HTTP to `image_registry` (a loopback registry).
    pub image_registry_insecure: bool,
    /// "Latest with these tags" answers kept in memory, each checked against the app's
    /// change counter on every use; 0 disables the cache.
    pub latest_cache_entries: u64,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            keep_versions: 0,
            gc_grace_secs: 3600,
            gc_interval_secs: 600,
            image_registry: "127.0.0.1:5000".into(),
            image_registry_insecure: true,
            latest_cache_entries: 10_000,
        }
    }
}

/// The registry: metadata in the database, package blobs in the object store.
#[derive(Clone)]
pub struct Registry {
    db: AnyPool,
    store: Arc<dyn ObjectStore>,
    config: RegistryConfig,
    local_root: Option<PathBuf>,
    s3: Option<Arc<S3Access>>,
    /// Queues this process's write transactions first come, first served. SQLite admits one
    /// writer and lets the others poll for the lock, which under steady load can starve one
    /// past its busy timeout; waiting here in order instead costs nothing on PostgreSQL.
    writes: Arc<tokio::sync::Mutex<()>>,
    changes: changes::ChangeReader,
    latest: Option<latest::LatestCache>,
}

/// A write transaction holding its place in the writer queue until it commits or drops.
pub(crate) struct WriteTx {
    pub tx: sqlx::Transaction<'static, sqlx::Any>,
    _turn: tokio::sync::OwnedMutexGuard<()>,
}

impl WriteTx {
    /// Commits and gives the next writer its turn.
    pub(crate) async fn commit(self) -> Result<()> {
        Ok(self.tx.commit().await?)
    }
}

impl Registry {
    pub fn new(db: AnyPool, store: Arc<dyn ObjectStore>, config: RegistryConfig) -> Self {
        let latest = latest::cache(config.latest_cache_entries);
        Self {
            changes: changes::ChangeReader::new(db.clone()),
            db,
            store,
            config,
            local_root: None,
            s3: None,
            writes: Arc::default(),
            latest,
        }
    }

    /// Opens a write transaction on `app`'s packages or tags once this process's earlier
    /// writers are done. Its first statement bumps the app's change counter, which also
    /// takes SQLite's write lock before any read of the transaction.
    pub(crate) async fn begin_write(&self, app: &str) -> Result<WriteTx> {
        let turn = self.writes.clone().lock_owned().await;
        let mut tx = self.db.begin().await?;
        changes::bump(&mut tx, app).await?;
        Ok(WriteTx { tx, _turn: turn })
    }

    /// Names the directory behind a local-disk object store. A process killed mid-upload
    /// leaves a multipart staging file there that the object store API never lists; the
    /// garbage collector sweeps these files when it knows the directory.
    pub fn with_local_root(mut self, root: PathBuf) -> Self {
        self.local_root = Some(root);
        self
    }

    /// Names the S3 bucket behind the object store. A process killed mid-upload leaves an
    /// incomplete multipart upload there; the garbage collector aborts those it can list.
    pub fn with_s3_uploads(mut self, access: S3Access) -> Self {
        self.s3 = Some(Arc::new(access));
        self
    }

    pub fn config(&self) -> &RegistryConfig {
        &self.config
    }

    /// One garbage-collection pass with the configured grace period.
    pub async fn collect_garbage(&self) -> Result<blobs::GcReport> {
        self.collect_garbage_older_than(Duration::from_secs(self.config.gc_grace_secs)).await
    }

    /// One garbage-collection pass with an explicit grace period.
    pub async fn collect_garbage_older_than(&self, grace: Duration) -> Result<blobs::GcReport> {
        let leftovers = blobs::Leftovers { local_root: self.local_root.as_deref(), s3: self.s3.as_deref() };
        blobs::collect_garbage(&self.store, &self.db, leftovers, grace).await
    }

    /// Runs the garbage collector every `gc_interval_secs` until the runtime stops.
    pub fn spawn_garbage_collector(&self) {
        if self.config.gc_interval_secs == 0 {
            return;
        }
        let registry = self.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(registry.config.gc_interval_secs));
            loop {
                every.tick().await;
                if let Err(e) = registry.collect_garbage().await {
                    tracing::warn!(error = %e, "registry garbage collection failed");
                }
            }
        });
    }
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}
