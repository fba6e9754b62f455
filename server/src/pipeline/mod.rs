//! The build pipeline: a build request becomes a tagged app package. Requests are stored
//! durably before they are acknowledged; a dispatcher claims queued builds and runs them
//! with bounded parallelism; components are planned and packaged by their component type's
//! plugin, built by the builder, and published together by the registry.

mod avoid;
mod lease;
mod logs;
mod model;
mod prebuilt;
mod run;
mod store;
mod upload;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use slipway_builder::inputs::InputsSettings;
use slipway_builder::registry::RegistryClient;
use slipway_builder::{DockerBackend, DockerSettings, NativeBackend, NativeSettings};
use slipway_plugins::PluginHost;
use slipway_registry::Registry;
use tokio::sync::{Notify, Semaphore};
use tokio::task::AbortHandle;
use tracing::Instrument;

pub use model::{BuildState, BuildSubmission, BuildView, ComponentSpec, SourceRequest};
pub use store::{BuildStore, INSERT_BUILDS, INSERT_COMPONENTS, MIGRATIONS, NewBuild};
pub use upload::UploadedSource;

use crate::cluster::Cluster;
use crate::config::{BuildBackendKind, Config, PipelineConfig};
use logs::LogBook;
use upload::SourceUploads;

/// How often the dispatcher looks for queued builds when nothing woke it.
const POLL: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("the build request is invalid: {}", problems.join("; "))]
    InvalidRequest { problems: Vec<String> },
    #[error("no build with id {id}")]
    NotFound { id: String },
    #[error("build {id} is {}: only {allowed} builds can be {action}", state.as_str())]
    WrongState { id: String, state: BuildState, action: &'static str, allowed: &'static str },
    #[error("the build backend cannot start: {0}")]
    Backend(#[from] slipway_builder::Error),
    #[error("build storage: {0}")]
    Database(#[from] sqlx::Error),
    #[error("build log storage: {0}")]
    ObjectStore(#[from] object_store::Error),
    #[error(
        "the uploaded source is larger than the limit of {limit_bytes} bytes (pipeline.max_context_bytes)"
    )]
    SourceTooLarge { limit_bytes: u64 },
    #[error("stored build data is unreadable: {0}")]
    Corrupt(String),
    #[error("not in the registry: {}", references.join(", "))]
    ImageNotFound { references: Vec<String> },
    #[error("image {reference}: the registry could not be asked: {reason}")]
    ImageRegistry { reference: String, reason: String },
    #[error(transparent)]
    Registry(#[from] slipway_registry::Error),
}

impl From<serde_json::Error> for PipelineError {
    fn from(e: serde_json::Error) -> Self {
        PipelineError::Corrupt(e.to_string())
    }
}

#[derive(Clone)]
pub struct Pipeline {
    inner: Arc<Inner>,
}

struct Inner {
    config: PipelineConfig,
    store: BuildStore,
    plugins: PluginHost,
    registry: Registry,
    /// Looks prebuilt images up in their registries.
    images: RegistryClient,
    backend: run::SharedBackend,
    /// Where and how component inputs are read for build avoidance.
    inputs: InputsSettings,
    logs: LogBook,
    sources: SourceUploads,
    build_slots: Arc<Semaphore>,
    /// Builds running in this process, so a cancel can stop them.
    running: Mutex<HashMap<String, AbortHandle>>,
    component_slots: Semaphore,
    wake: Notify,
}

impl Pipeline {
    /// Opens the pipeline; builds this replica ran before it restarted are taken over at
    /// once (requeued once, then failed as `interrupted`) before anything new starts.
    pub async fn open(
        config: &Config,
        db: sqlx::AnyPool,
        objects: Arc<dyn object_store::ObjectStore>,
        plugins: PluginHost,
        registry: Registry,
        cluster: &Cluster,
    ) -> Result<Self, PipelineError> {
        let settings = &config.pipeline;
        let work_dir = config.data_dir.join("build-work");
        let inputs = InputsSettings {
            work_dir: work_dir.join("inputs"),
            max_context_bytes: settings.max_context_bytes,
            insecure_registries: settings.insecure_registries.clone(),
        };
        let sources =
            SourceUploads::new(objects.clone(), work_dir.join("sources"), settings.max_context_bytes);
        let backend: run::SharedBackend = match settings.backend {
            BuildBackendKind::Native => Arc::new(NativeBackend::new(
                objects.clone(),
                NativeSettings {
                    work_dir,
                    max_context_bytes: settings.max_context_bytes,
                    insecure_registries: settings.insecure_registries.clone(),
                },
            )),
            BuildBackendKind::Docker => Arc::new(DockerBackend::connect(DockerSettings {
                work_dir,
                max_context_bytes: settings.max_context_bytes,
            })?),
        };
        let store = BuildStore::new(db, cluster);
        for taken in store.take_over(true).await? {
            tracing::warn!(build = %taken.id, requeued = taken.requeued, "build interrupted by the restart of this replica");
        }
        Ok(Self {
            inner: Arc::new(Inner {
                config: settings.clone(),
                store,
                plugins,
                registry,
                images: RegistryClient::new(settings.insecure_registries.clone(), None),
                backend,
                inputs,
                logs: LogBook::new(objects),
                sources,
                build_slots: Arc::new(Semaphore::new(settings.max_parallel_builds.max(1))),
                running: Mutex::new(HashMap::new()),
                component_slots: Semaphore::new(settings.max_parallel_components.max(1)),
                wake: Notify::new(),
            }),
        })
    }

    /// Validates and stores a build; it runs when a slot is free.
    pub async fn submit(
        &self,
        app: &str,
        submission: BuildSubmission,
        by: &str,
    ) -> Result<BuildView, PipelineError> {
        let build = self.prepare(app, submission, by).await?;
        self.inner.store.insert(&build).await?;
        self.builds_queued();
        Ok(build.view())
    }

    /// Validates a build request and gives it its id without storing it, for a caller that
    /// stores it in its own transaction and then calls [`Pipeline::builds_queued`].
    pub async fn prepare(
        &self,
        app: &str,
        mut submission: BuildSubmission,
        by: &str,
    ) -> Result<NewBuild, PipelineError> {
        submission.validate(app, &self.inner.config.source_roots)?;
        for component in &submission.components {
            if let SourceRequest::Upload { id } = &component.source
                && !self.inner.sources.exists(id).await?
            {
                return Err(PipelineError::InvalidRequest {
                    problems: vec![format!(
                        "component `{}`: no uploaded source {id} (send it with POST /v1/sources first)",
                        component.name
                    )],
                });
            }
        }
        // The host's active map is what the run resolves the type with, so a type it knows
        // now is one the build can use; asking it costs no database read.
        let kind = slipway_plugins::ScriptKind::Component;
        let unknown = submission
            .components
            .iter()
            .find(|c| self.inner.plugins.active_revision(kind, &c.component_type).is_none());
        if let Some(component) = unknown {
            let e = slipway_plugins::Error::UnknownScript { kind, name: component.component_type.clone() };
            return Err(PipelineError::InvalidRequest {
                problems: vec![format!(
                    "component `{}`: type `{}`: {e}",
                    component.name, component.component_type
                )],
            });
        }
        // Last: the registry round trips are paid only by a request sound otherwise.
        self.pin_images(&mut submission).await?;
        Ok(NewBuild {
            id: uuid::Uuid::now_v7().to_string(),
            app: app.to_owned(),
            submission,
            requested_by: by.to_owned(),
            created_at_ms: crate::storage::now_ms(),
        })
    }

    /// Wakes the dispatcher for builds stored since it last looked.
    pub fn builds_queued(&self) {
        self.inner.wake.notify_one();
    }

    /// Keeps a `.tar.gz` source for builds to name by the returned id.
    pub async fn upload_source<E: std::fmt::Display>(
        &self,
        body: impl futures::Stream<Item = Result<bytes::Bytes, E>>,
    ) -> Result<UploadedSource, PipelineError> {
        let uploaded = self.inner.sources.store(body).await?;
        tracing::info!(source = %uploaded.id, size_bytes = uploaded.size_bytes, "source uploaded");
        Ok(uploaded)
    }

    pub async fn get(&self, id: &str) -> Result<BuildView, PipelineError> {
        self.inner.store.get(id).await
    }

    pub async fn list(
        &self,
        app: Option<&str>,
        state: Option<BuildState>,
        limit: i64,
    ) -> Result<Vec<BuildView>, PipelineError> {
        self.inner.store.list(app, state, limit).await
    }

    /// Stops a queued or running build: its task is aborted (a publish in flight rolls back
    /// with its transaction), and it and its unfinished components end as `cancelled`.
    pub async fn cancel(&self, id: &str, by: &str) -> Result<BuildView, PipelineError> {
        let reason = format!("cancelled by {by}");
        let cancelled = self.inner.store.cancel(id, &reason).await?;
        let task = self.running().remove(id);
        if let Some(task) = task {
            task.abort();
            self.inner.logs.close_build(id).await;
        }
        let build = self.inner.store.get(id).await?;
        if !cancelled {
            return Err(PipelineError::WrongState {
                id: id.into(),
                state: build.state,
                action: "cancelled",
                allowed: "queued or running",
            });
        }
        Ok(build)
    }

    /// Runs a failed or cancelled build again; components that succeeded keep their images.
    pub async fn retry(&self, id: &str) -> Result<BuildView, PipelineError> {
        if !self.inner.store.requeue(id).await? {
            let build = self.inner.store.get(id).await?;
            return Err(PipelineError::WrongState {
                id: id.into(),
                state: build.state,
                action: "retried",
                allowed: "failed or cancelled",
            });
        }
        self.inner.wake.notify_one();
        self.inner.store.get(id).await
    }

    /// A live component log: what it has so far and what comes next; `None` when the
    /// component is not building in this process (read the stored log instead).
    pub async fn follow_log(
        &self,
        id: &str,
        component: &str,
    ) -> Result<Option<(Vec<String>, tokio::sync::broadcast::Receiver<String>)>, PipelineError> {
        self.inner.store.get(id).await?;
        Ok(self.inner.logs.follow(id, component))
    }

    pub async fn log(&self, id: &str, component: &str) -> Result<Vec<String>, PipelineError> {
        self.inner.store.get(id).await?;
        self.inner.logs.read(id, component).await
    }

    /// Starts the dispatcher, which claims queued builds (oldest first) while build slots
    /// are free, and the lease keeper, which renews this replica's build leases, stops the
    /// builds it lost, and takes over the builds of replicas that went silent.
    pub fn spawn_dispatcher(&self, renew_every: Duration) {
        let pipeline = self.clone();
        tokio::spawn(async move {
            loop {
                if let Err(e) = pipeline.dispatch_ready().await {
                    tracing::error!(error = %e, "build dispatcher");
                }
                let _ = tokio::time::timeout(POLL, pipeline.inner.wake.notified()).await;
            }
        });
        let pipeline = self.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(renew_every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                if let Err(e) = pipeline.keep_leases().await {
                    tracing::warn!(error = %e, "build leases could not be renewed; retrying");
                }
            }
        });
    }

    async fn keep_leases(&self) -> Result<(), PipelineError> {
        let running: Vec<String> = self.running().keys().cloned().collect();
        let held: std::collections::HashSet<String> =
            self.inner.store.renew(&running).await?.into_iter().collect();
        let lost: Vec<(String, AbortHandle)> = {
            let mut tasks = self.running();
            let ids: Vec<String> = running.into_iter().filter(|id| !held.contains(id)).collect();
            ids.into_iter().filter_map(|id| tasks.remove(&id).map(|task| (id, task))).collect()
        };
        for (id, task) in lost {
            // Cancelled, or taken over after this replica was cut off for longer than the
            // lease: whoever holds it now runs it; this replica must stop touching it.
            task.abort();
            self.inner.logs.abandon_build(&id);
            tracing::warn!(build = %id, "lost the lease of a running build; stopped it here");
        }
        let taken = self.inner.store.take_over(false).await?;
        for t in &taken {
            tracing::warn!(build = %t.id, reason = %t.reason, requeued = t.requeued, "took over a build whose lease ran out");
        }
        if taken.iter().any(|t| t.requeued) {
            self.inner.wake.notify_one();
        }
        metrics::gauge!("slipway_replica_running_builds").set(held.len() as f64);
        Ok(())
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<String, AbortHandle>> {
        self.inner.running.lock().expect("running builds lock")
    }

    async fn dispatch_ready(&self) -> Result<(), PipelineError> {
        let free = self.inner.build_slots.available_permits();
        if free == 0 {
            return Ok(());
        }
        for id in self.inner.store.claim_queued(free).await? {
            let permit = self
                .inner
                .build_slots
                .clone()
                .try_acquire_owned()
                .expect("claimed no more than the free slots");
            let pipeline = self.clone();
            let span = tracing::info_span!("build", build = %id);
            let key = id.clone();
            let run = async move {
                match pipeline.run_build(&id).await {
                    Ok(()) => {}
                    // The build did not fail, its record did (the database went away): its
                    // lease is no longer renewed, so it is taken over and run again, and a
                    // package it already published is found by its publish key.
                    Err(e @ PipelineError::Database(_)) => {
                        tracing::warn!(build = %id, error = %e, "build could not be recorded; it runs again once its lease runs out");
                    }
                    Err(e) => {
                        tracing::error!(build = %id, error = %e, "build could not be recorded");
                        let reason = format!("internal error: {e}");
                        let _ =
                            pipeline.inner.store.finish(&id, BuildState::Failed, Some(&reason), None).await;
                    }
                }
                pipeline.running().remove(&id);
                drop(permit);
                pipeline.inner.wake.notify_one();
            };
            // Held by the map until the build ends, is cancelled or its lease is lost; an
            // aborted task drops its permit with it, so the slot frees either way.
            let mut running = self.running();
            running.insert(key, tokio::spawn(run.instrument(span)).abort_handle());
        }
        Ok(())
    }
}
