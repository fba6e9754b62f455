//! [`StatusService`]: the facade the server calls. It restores the fleet from the database
//! at start, runs the scheduler, applies bulk changes all-or-nothing, answers reads from
//! memory, and records and streams transitions.

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use slipway_plugins::PluginHost;
use sqlx::AnyPool;
use tokio::sync::{broadcast, mpsc};

use crate::aggregate::{AppHealth, ComponentHealth, StatusCounts, app_health, summarize};
use crate::budget::BudgetConfig;
use crate::events::{Transition, TransitionEvent};
use crate::fetch::{ClusterRegistry, FetchConfig, Fetchers};
use crate::health::Health;
use crate::model::{BulkRequest, ClusterInfo, ClusterSpec};
use crate::runner::{MonoClock, Runner, wall_ms};
use crate::schedule::ScheduleConfig;
use crate::scheduler::Scheduler;
use crate::table::{AppEntry, Instance, NOT_CHECKED};
use crate::validate::{Catalog, validate};
use crate::{Error, store};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StatusConfig {
    pub schedule: ScheduleConfig,
    pub budget: BudgetConfig,
    pub fetch: FetchConfig,
    /// Checks observing at once (each may hold a socket: keep well under the open-file limit).
    pub max_in_flight: usize,
    /// Instances (upserted + deleted) in one bulk request; app instances are capped alike.
    pub max_bulk_items: usize,
}

impl Default for StatusConfig {
    fn default() -> Self {
        Self {
            schedule: ScheduleConfig::default(),
            budget: BudgetConfig::default(),
            fetch: FetchConfig::default(),
            max_in_flight: 4_096,
            max_bulk_items: 10_000,
        }
    }
}

/// One component instance as the API shows it. The strings are the table's own, shared:
/// a read copies pointers under the scheduler's lock and serialises after releasing it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InstanceView {
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub id: Arc<str>,
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub app_instance: Arc<str>,
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub component: Arc<str>,
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub plugin: Arc<str>,
    pub status: Health,
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub reason: Arc<str>,
    pub since_ms: i64,
    /// 0 until the first check.
    pub checked_at_ms: i64,
    pub flapping: bool,
    /// The current check interval before jitter.
    pub interval_ms: u64,
}

/// An app instance with its aggregated health and components.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AppInstanceView {
    pub id: String,
    pub app: String,
    pub version: String,
    pub cluster: Option<String>,
    pub namespace: String,
    pub stage: String,
    #[serde(flatten)]
    pub health: AppHealth,
    pub components: Vec<InstanceView>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum GroupBy {
    App,
    Cluster,
    Status,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BulkOutcome {
    pub upserted_app_instances: usize,
    pub upserted_instances: usize,
    pub deleted_instances: usize,
}

#[derive(Clone)]
pub struct StatusService {
    inner: Arc<Inner>,
}

struct Inner {
    db: AnyPool,
    plugins: PluginHost,
    scheduler: Arc<Mutex<Scheduler>>,
    clusters: ClusterRegistry,
    events: broadcast::Sender<Arc<TransitionEvent>>,
    clock: MonoClock,
    config: StatusConfig,
    /// Bulk writes are serialised so validation sees the state they apply to, and with
    /// the history writer so the two never contend for SQLite's single writer.
    writes: Arc<tokio::sync::Mutex<()>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.tasks.iter().for_each(|t| t.abort());
    }
}

impl StatusService {
    /// Restores clusters and instances from the database (first checks spread over the
    /// tight window) and starts checking.
    pub async fn open(db: AnyPool, plugins: PluginHost, config: StatusConfig) -> Result<Self, Error> {
        let clock = MonoClock::start();
        let clusters = ClusterRegistry::default();
        for c in store::load_clusters(&db).await? {
            match ClusterRegistry::connect(&c.name, &c.kubeconfig).await {
                Ok((client, _)) => clusters.insert(&c.name, client),
                Err(e) => tracing::warn!(cluster = %c.name, error = %e, "stored cluster cannot be connected"),
            }
        }
        let mut scheduler = Scheduler::new(config.schedule, config.budget, clock.now_ms());
        let now = clock.now_ms();
        for app in store::load_app_instances(&db).await? {
            scheduler.upsert_app(&app);
        }
        let restored = store::load_instances(&db).await?;
        for stored in &restored {
            let index = scheduler.upsert_instance(&stored.spec, now, stored.since_ms);
            if stored.reason != NOT_CHECKED {
                scheduler.restore_health(index, stored.status, &stored.reason, stored.since_ms);
            }
        }
        tracing::info!(instances = restored.len(), "restored status instances");
        let scheduler = Arc::new(Mutex::new(scheduler));
        let (events, _) = broadcast::channel(16_384);
        let (sink, transitions) = mpsc::unbounded_channel();
        let mut tasks = Runner {
            scheduler: scheduler.clone(),
            fetchers: Fetchers::new(config.fetch, clusters.clone())?,
            plugins: plugins.clone(),
            clock,
            max_in_flight: config.max_in_flight,
            sink,
        }
        .spawn();
        let writes = Arc::new(tokio::sync::Mutex::new(()));
        tasks.push(tokio::spawn(record(db.clone(), writes.clone(), events.clone(), transitions)));
        Ok(Self {
            inner: Arc::new(Inner { db, plugins, scheduler, clusters, events, clock, config, writes, tasks }),
        })
    }

    /// Registers, updates and deletes in one go: validated in full, written in one
    /// transaction, then applied to the schedule. Any bad item refuses the whole request.
    pub async fn apply(&self, request: BulkRequest) -> Result<BulkOutcome, Error> {
        let inner = &self.inner;
        if request.size() > inner.config.max_bulk_items {
            return Err(Error::TooManyItems { count: request.size(), limit: inner.config.max_bulk_items });
        }
        let _write = inner.writes.lock().await;
        let catalog = Catalog::load(&inner.plugins).await?;
        let plan = {
            let s = inner.scheduler.lock();
            validate(&request, &s.table, &catalog, &inner.clusters, inner.config.max_bulk_items)?
        };
        let now_wall = wall_ms();
        store::apply_bulk(
            &inner.db,
            &request.app_instances,
            &request.instances,
            &request.delete,
            &plan.emptied_apps,
            now_wall,
        )
        .await?;
        let mut s = inner.scheduler.lock();
        let now = inner.clock.now_ms();
        for app in &request.app_instances {
            s.upsert_app(app);
        }
        for instance in &request.instances {
            s.upsert_instance(instance, now, now_wall);
        }
        for id in &request.delete {
            s.remove(id);
        }
        Ok(BulkOutcome {
            upserted_app_instances: request.app_instances.len(),
            upserted_instances: request.instances.len(),
            deleted_instances: request.delete.len(),
        })
    }

    /// The current state of each id, in request order; unknown ids are listed apart.
    pub fn batch_get<'a>(&self, ids: &[&'a str]) -> (Vec<InstanceView>, Vec<&'a str>) {
        let mut found = Vec::with_capacity(ids.len());
        let mut missing = Vec::new();
        let s = self.inner.scheduler.lock();
        for &id in ids {
            match s.table.by_id(id) {
                Some(i) => found.push(view(i)),
                None => missing.push(id),
            }
        }
        (found, missing)
    }

    /// App instances of `app`, optionally only those whose aggregated status is `status`.
    pub fn app_instances(&self, app: &str, status: Option<Health>) -> Vec<AppInstanceView> {
        let s = self.inner.scheduler.lock();
        let mut out: Vec<AppInstanceView> = s
            .table
            .apps
            .values()
            .filter(|a| a.spec.app == app)
            .map(|a| app_view(a, &s))
            .filter(|a| status.is_none_or(|st| a.health.status == st))
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// Counts of app instances per app or cluster (by aggregated status), or of component
    /// instances per status.
    pub fn summary(&self, group_by: GroupBy) -> BTreeMap<String, StatusCounts> {
        let s = self.inner.scheduler.lock();
        match group_by {
            GroupBy::Status => {
                summarize(s.table.iter().map(|(_, i)| (i.health.as_str().to_owned(), i.health)))
            }
            GroupBy::App | GroupBy::Cluster => summarize(s.table.apps.values().map(|a| {
                let key = match group_by {
                    GroupBy::App => a.spec.app.clone(),
                    _ => a.spec.cluster.clone().unwrap_or_else(|| "(none)".into()),
                };
                (key, aggregate(a, &s).status)
            })),
        }
    }

    pub async fn history(&self, id: &str, limit: i64) -> Result<Vec<Transition>, Error> {
        if self.inner.scheduler.lock().table.index_of(id).is_none() {
            return Err(Error::NotFound { what: "instance", id: id.to_owned() });
        }
        store::history(&self.inner.db, id, limit).await
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<TransitionEvent>> {
        self.inner.events.subscribe()
    }

    /// A deploy or trigger for an app instance (or one component instance) counts as a
    /// change: its components are checked now and then tightly. Returns how many.
    pub fn change_event(&self, id: &str) -> Result<usize, Error> {
        let now = self.inner.clock.now_ms();
        match self.inner.scheduler.lock().change_event(id, now) {
            0 => Err(Error::NotFound { what: "app instance or instance", id: id.to_owned() }),
            n => Ok(n),
        }
    }

    /// Registers (or replaces) a cluster by kubeconfig. The kubeconfig is stored for
    /// restarts and never returned.
    pub async fn register_cluster(&self, spec: ClusterSpec) -> Result<ClusterInfo, Error> {
        if spec.name.is_empty() {
            return Err(Error::InvalidCluster {
                name: spec.name,
                message: "the name must not be empty".into(),
            });
        }
        let (client, server) = ClusterRegistry::connect(&spec.name, &spec.kubeconfig).await?;
        let stored = store::StoredCluster {
            name: spec.name,
            server,
            kubeconfig: spec.kubeconfig,
            registered_at_ms: wall_ms(),
        };
        store::save_cluster(&self.inner.db, &stored).await?;
        self.inner.clusters.insert(&stored.name, client);
        Ok(ClusterInfo {
            name: stored.name,
            server: stored.server,
            registered_at_ms: stored.registered_at_ms,
        })
    }

    pub async fn clusters(&self) -> Result<Vec<ClusterInfo>, Error> {
        Ok(store::load_clusters(&self.inner.db)
            .await?
            .into_iter()
            .map(|c| ClusterInfo { name: c.name, server: c.server, registered_at_ms: c.registered_at_ms })
            .collect())
    }

    /// Every instance's status grouped by app and cluster (see [`crate::heatmap`]).
    pub fn heatmap(&self) -> Vec<crate::heatmap::HeatmapGroup> {
        let cells = crate::heatmap::cells(&self.inner.scheduler.lock().table);
        crate::heatmap::group(cells)
    }

    /// Instances registered now.
    pub fn len(&self) -> usize {
        self.inner.scheduler.lock().table.len()
    }

    /// [`StatusService::len`] for a task that reports it periodically (the replica
    /// heartbeat): the reader does not keep the service alive, so once the state that owns
    /// it is dropped the checks stop, and the reader answers 0.
    pub fn len_reader(&self) -> impl Fn() -> usize + Send + Sync + 'static {
        let inner = Arc::downgrade(&self.inner);
        move || inner.upgrade().map_or(0, |i| i.scheduler.lock().table.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn view(i: &Instance) -> InstanceView {
    InstanceView {
        id: i.id.clone(),
        app_instance: i.app_instance.clone(),
        component: i.component.clone(),
        plugin: i.plugin.clone(),
        status: i.health,
        reason: i.reason.clone(),
        since_ms: i.since_ms,
        checked_at_ms: i.checked_ms,
        flapping: i.schedule.is_flapping(),
        interval_ms: i.schedule.interval().as_millis() as u64,
    }
}

fn aggregate(a: &AppEntry, s: &Scheduler) -> AppHealth {
    app_health(a.components.iter().filter_map(|&c| s.table.get(c)).map(|i| ComponentHealth {
        component: &i.component,
        health: i.health,
        reason: &i.reason,
    }))
}

fn app_view(a: &AppEntry, s: &Scheduler) -> AppInstanceView {
    AppInstanceView {
        id: a.spec.id.clone(),
        app: a.spec.app.clone(),
        version: a.spec.version.clone(),
        cluster: a.spec.cluster.clone(),
        namespace: a.spec.namespace.clone(),
        stage: a.spec.stage.clone(),
        health: aggregate(a, s),
        components: a.components.iter().filter_map(|&c| s.table.get(c)).map(view).collect(),
    }
}

/// Writes transitions to the history and publishes them, in batches as they come.
async fn record(
    db: AnyPool,
    writes: Arc<tokio::sync::Mutex<()>>,
    events: broadcast::Sender<Arc<TransitionEvent>>,
    mut incoming: mpsc::UnboundedReceiver<Vec<TransitionEvent>>,
) {
    while let Some(mut batch) = incoming.recv().await {
        while let Ok(more) = incoming.try_recv() {
            batch.extend(more);
        }
        let transitions: Vec<Transition> = batch.iter().map(|e| e.transition.clone()).collect();
        let written = {
            let _write = writes.lock().await;
            store::record_transitions(&db, &transitions).await
        };
        if let Err(e) = written {
            tracing::error!(error = %e, count = transitions.len(), "cannot record status transitions");
        }
        for event in batch {
            let _ = events.send(Arc::new(event));
        }
    }
}
