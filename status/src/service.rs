//! [`StatusService`]: the facade the server calls. It restores the fleet from the database
//! at start, runs the scheduler, applies bulk changes all-or-nothing, answers reads from
//! memory, and records and streams transitions.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Instant;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use slipway_plugins::PluginHost;
use sqlx::AnyPool;
use tokio::sync::{broadcast, mpsc};

use crate::aggregate::{AppHealth, ComponentHealth, StatusCounts, app_health, summarize};
use crate::budget::BudgetConfig;
use crate::events::{Transition, TransitionEvent};
use crate::fetch::{ClusterRegistry, FetchConfig, Fetchers};
use crate::handoff::Handoff;
use crate::health::Health;
use crate::model::{BulkRequest, ClusterInfo, ClusterSpec};
use crate::peers::{Envelope, Message};
use crate::runner::{MonoClock, Runner, wall_ms};
use crate::schedule::ScheduleConfig;
use crate::scheduler::{Reshard, Scheduler};
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

/// One component instance as the API shows it, borrowed from the instance table: reads
/// serialise it while they hold the scheduler's lock, so a 10,000-id batch copies no
/// string and touches no reference count.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InstanceView<'a> {
    pub id: &'a str,
    pub app_instance: &'a str,
    pub component: &'a str,
    pub plugin: &'a str,
    pub status: Health,
    pub reason: &'a str,
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
pub struct AppInstanceView<'a> {
    pub id: &'a str,
    pub app: &'a str,
    pub version: &'a str,
    pub cluster: Option<&'a str>,
    pub namespace: &'a str,
    pub stage: &'a str,
    #[serde(flatten)]
    pub health: AppHealth,
    pub components: Vec<InstanceView<'a>>,
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
    sharding: Option<Sharding>,
}

/// This replica's part in a fleet sharded over several (see [`crate::shard`]).
struct Sharding {
    replica: String,
    /// Until when (on the service's clock) this replica may check what it owns: the lease
    /// its last heartbeat bought. Checked before every dispatch, so a replica that was
    /// frozen or cut off for longer stops before it checks anything.
    fence: Arc<AtomicU64>,
    /// When the newest bulk change this replica applied was made, for replays.
    last_change_ms: AtomicI64,
    changes: AtomicU64,
    /// Bulk changes already applied here (id, when made): a replay skips them, so an
    /// instance is not rescheduled for a change it already reflects.
    applied: Mutex<HashMap<String, i64>>,
}

impl Sharding {
    /// Records change `id` as applied (once it was), forgetting those the feed no longer keeps.
    fn mark_applied(&self, id: &str, at_ms: i64) {
        let mut applied = self.applied.lock();
        if applied.len() % 1_024 == 1_023 {
            applied.retain(|_, at| *at >= at_ms - store::CHANGES_KEPT_MS - REPLAY_SLACK_MS);
        }
        applied.insert(id.to_owned(), at_ms);
    }
}

/// `slipway/<version>`, and on a sharded fleet `(replica <id>)`: an instance's owner can
/// tell which replica polls it.
fn user_agent(sharding: Option<&Sharding>) -> String {
    let version = env!("CARGO_PKG_VERSION");
    match sharding {
        Some(s) => format!("slipway/{version} (replica {})", s.replica),
        None => format!("slipway/{version}"),
    }
}

/// See [`StatusService::downgrade`].
#[derive(Clone)]
pub struct WeakStatusService(std::sync::Weak<Inner>);

impl WeakStatusService {
    pub fn upgrade(&self) -> Option<StatusService> {
        self.0.upgrade().map(|inner| StatusService { inner })
    }
}

/// The ids a bulk change touched, as kept in the change feed.
#[derive(Debug, Default, Serialize, Deserialize)]
struct ChangedIds {
    apps: Vec<String>,
    instances: Vec<String>,
    deleted: Vec<String>,
}

/// A replayed change may be this much older than the newest one seen (clock skew between
/// replicas and commits landing out of order).
const REPLAY_SLACK_MS: i64 = 60_000;

impl Drop for Inner {
    fn drop(&mut self) {
        self.tasks.iter().for_each(|t| t.abort());
    }
}

impl StatusService {
    /// Restores clusters and instances from the database (first checks spread over the
    /// tight window) and starts checking. With `replica`, this is one shard of a fleet
    /// sharded over several replicas on PostgreSQL: it checks nothing until
    /// [`StatusService::reshard`] gives it instances and [`StatusService::hold_until`] a lease.
    pub async fn open(
        db: AnyPool,
        plugins: PluginHost,
        config: StatusConfig,
        replica: Option<String>,
    ) -> Result<Self, Error> {
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
        // Read before the instances: every change listed is reflected in what is loaded next.
        let reflected: HashMap<String, i64> = match replica {
            Some(_) => store::changes_since(&db, 0).await?.into_iter().map(|c| (c.id, c.at_ms)).collect(),
            None => HashMap::new(),
        };
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
        let sharding = replica.map(|replica| {
            scheduler.shard_as(&replica);
            Sharding {
                replica,
                fence: Arc::new(AtomicU64::new(0)),
                last_change_ms: AtomicI64::new(wall_ms()),
                changes: AtomicU64::new(0),
                applied: Mutex::new(reflected),
            }
        });
        let fence = sharding.as_ref().map_or_else(|| Arc::new(AtomicU64::new(u64::MAX)), |s| s.fence.clone());
        let scheduler = Arc::new(Mutex::new(scheduler));
        let (events, _) = broadcast::channel(16_384);
        let (sink, transitions) = mpsc::unbounded_channel();
        let mut tasks = Runner {
            scheduler: scheduler.clone(),
            fetchers: Fetchers::new(config.fetch, clusters.clone(), &user_agent(sharding.as_ref()))?,
            plugins: plugins.clone(),
            clock,
            max_in_flight: config.max_in_flight,
            sink,
            fence,
        }
        .spawn();
        let writes = Arc::new(tokio::sync::Mutex::new(()));
        let announce_as = sharding.as_ref().map(|s| s.replica.clone());
        tasks.push(tokio::spawn(record(
            db.clone(),
            writes.clone(),
            events.clone(),
            transitions,
            announce_as,
        )));
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                plugins,
                scheduler,
                clusters,
                events,
                clock,
                config,
                writes,
                tasks,
                sharding,
            }),
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
        let change = inner.sharding.as_ref().map(|sharding| {
            let n = sharding.changes.fetch_add(1, Ordering::Relaxed);
            let ids = ChangedIds {
                apps: request.app_instances.iter().map(|a| a.id.clone()).collect(),
                instances: request.instances.iter().map(|i| i.id.clone()).collect(),
                deleted: request.delete.clone(),
            };
            let id = format!("{}-{now_wall}-{n}", sharding.replica);
            sharding.mark_applied(&id, now_wall);
            store::StoredChange {
                id,
                at_ms: now_wall,
                ids: serde_json::to_string(&ids).expect("serialisable"),
            }
        });
        store::apply_bulk(
            &inner.db,
            &request.app_instances,
            &request.instances,
            &request.delete,
            &plan.emptied_apps,
            change.as_ref(),
            now_wall,
        )
        .await?;
        {
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
            s.rebalance(now);
        }
        if let Some(change) = change {
            self.tell_others(Message::Changed(change.id)).await;
        }
        Ok(BulkOutcome {
            upserted_app_instances: request.app_instances.len(),
            upserted_instances: request.instances.len(),
            deleted_instances: request.delete.len(),
        })
    }

    /// The current state of each id, in request order (`None` for an unknown id), handed
    /// to `answer` under the scheduler's lock (the views borrow from the table): `answer`
    /// should only write them out.
    pub fn batch_get<'i, R>(
        &self,
        ids: &[&'i str],
        answer: impl FnOnce(&mut dyn Iterator<Item = (&'i str, Option<InstanceView<'_>>)>) -> R,
    ) -> R {
        let s = self.inner.scheduler.lock();
        // Every id is looked up first, in a loop short enough that the processor overlaps
        // the cache misses of many lookups (10,000 random ids miss on every one); writing
        // the views in the same loop made each lookup wait for the previous view.
        let found: Vec<Option<u32>> = ids.iter().map(|id| s.table.index_of(id)).collect();
        answer(
            &mut ids.iter().zip(found).map(|(&id, index)| (id, index.and_then(|i| s.table.get(i)).map(view))),
        )
    }

    /// App instances of `app`, optionally only those whose aggregated status is `status`,
    /// handed to `answer` under the scheduler's lock like [`StatusService::batch_get`].
    pub fn app_instances<R>(
        &self,
        app: &str,
        status: Option<Health>,
        answer: impl FnOnce(Vec<AppInstanceView<'_>>) -> R,
    ) -> R {
        let s = self.inner.scheduler.lock();
        let mut out: Vec<AppInstanceView> = s
            .table
            .apps
            .values()
            .filter(|a| a.spec.app == app)
            .map(|a| app_view(a, &s))
            .filter(|a| status.is_none_or(|st| a.health.status == st))
            .collect();
        out.sort_by(|a, b| a.id.cmp(b.id));
        answer(out)
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
    pub async fn change_event(&self, id: &str) -> Result<usize, Error> {
        let now = self.inner.clock.now_ms();
        let count = self.inner.scheduler.lock().change_event(id, now);
        if count == 0 {
            return Err(Error::NotFound { what: "app instance or instance", id: id.to_owned() });
        }
        self.tell_others(Message::DeployEvent(id.to_owned())).await;
        Ok(count)
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

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the fleet must be placed again over the live `replicas`: when it must, the
    /// caller passes the other replicas' schedule snapshots to [`StatusService::reshard`].
    pub fn needs_placing(&self, replicas: &[String]) -> bool {
        self.inner.sharding.is_some() && self.inner.scheduler.lock().needs_placing(&sorted(replicas))
    }

    /// Places the fleet over the live `replicas` (their ids, in any order) and checks
    /// this replica's share, continuing the schedules in `snapshots` (each with its age in
    /// ms by the database's clock; see [`crate::handoff`]). No-op on a single node.
    pub fn reshard(&self, replicas: &[String], snapshots: &[(i64, Vec<u8>)]) -> Reshard {
        let replicas = sorted(replicas);
        let now = self.inner.clock.now_ms();
        let (handed, errors) = Handoff::read(snapshots, now);
        for error in errors {
            tracing::warn!(%error, "a replica's schedule snapshot is unreadable; its instances start afresh");
        }
        let outcome = self.inner.scheduler.lock().reshard(&replicas, &handed, now);
        if outcome.acquired + outcome.released > 0 {
            tracing::info!(
                replicas = replicas.len(),
                acquired = outcome.acquired,
                released = outcome.released,
                owned = outcome.owned,
                handed = handed.len(),
                "status instances placed again"
            );
        }
        outcome
    }

    /// The schedule of every instance this replica checks, for the others to continue
    /// should they take some over; `None` on a single node.
    pub fn handoff(&self) -> Option<Vec<u8>> {
        self.inner.sharding.as_ref()?;
        let now = self.inner.clock.now_ms();
        Some(self.inner.scheduler.lock().handoff(now))
    }

    /// Lets this replica check what it owns until `deadline`: the end of the lease its
    /// last heartbeat bought.
    pub fn hold_until(&self, deadline: Instant) {
        if let Some(sharding) = &self.inner.sharding {
            sharding.fence.store(self.inner.clock.ms_at(deadline), Ordering::SeqCst);
        }
    }

    /// Lets go of everything when the lease has run out (checks resume at the next
    /// [`StatusService::reshard`]): the heartbeat calls it before it beats, so a replica
    /// that wakes from a freeze gives up what it may have lost whichever task runs first.
    pub fn let_go_if_lapsed(&self) -> bool {
        let Some(sharding) = &self.inner.sharding else { return false };
        crate::runner::let_go_if_lapsed(&sharding.fence, &self.inner.scheduler, self.inner.clock.now_ms())
    }

    /// Instances this replica checks.
    pub fn owned(&self) -> usize {
        self.inner.scheduler.lock().owned()
    }

    /// A handle that does not keep the service alive, for tasks that run beside it (the
    /// replica heartbeat): once the state that owns the service is dropped, the checks
    /// stop, and such a task's upgrade fails.
    pub fn downgrade(&self) -> WeakStatusService {
        WeakStatusService(Arc::downgrade(&self.inner))
    }

    /// Acts on a notification from another replica (see [`crate::peers`]).
    pub async fn receive(&self, payload: &str) -> Result<(), Error> {
        let Some(sharding) = &self.inner.sharding else { return Ok(()) };
        let envelope = Envelope::parse(payload).map_err(|e| Error::Corrupt {
            what: "status notification",
            id: String::new(),
            message: e.to_string(),
        })?;
        if envelope.from == sharding.replica {
            return Ok(());
        }
        match envelope.message {
            Message::Transitions(judged) => {
                let now = self.inner.clock.now_ms();
                let events: Vec<TransitionEvent> = {
                    let mut s = self.inner.scheduler.lock();
                    let transitions: Vec<Transition> =
                        judged.into_iter().filter_map(|j| s.apply_foreign(j, now)).collect();
                    transitions.into_iter().map(|t| s.event(t)).collect()
                };
                for event in events {
                    let _ = self.inner.events.send(Arc::new(event));
                }
            }
            Message::Changed(id) => {
                if let Some(change) = store::load_change(&self.inner.db, &id).await? {
                    self.apply_change(change).await?;
                }
            }
            Message::DeployEvent(id) => {
                let now = self.inner.clock.now_ms();
                self.inner.scheduler.lock().change_event(&id, now);
            }
        }
        Ok(())
    }

    /// Catches up after notifications may have been lost (the listener reconnected):
    /// replays recent bulk changes and reloads the statuses other replicas recorded.
    pub async fn resync(&self) -> Result<(), Error> {
        let Some(sharding) = &self.inner.sharding else { return Ok(()) };
        let since = sharding.last_change_ms.load(Ordering::SeqCst) - REPLAY_SLACK_MS;
        for change in store::changes_since(&self.inner.db, since).await? {
            self.apply_change(change).await?;
        }
        let stored = store::load_health(&self.inner.db).await?;
        let now = self.inner.clock.now_ms();
        let mut s = self.inner.scheduler.lock();
        for (id, health, reason, since_ms) in
            stored.into_iter().filter(|(_, _, reason, _)| reason != NOT_CHECKED)
        {
            s.apply_foreign((id, health, reason, since_ms), now);
        }
        Ok(())
    }

    /// Applies another replica's bulk change, once: the touched rows as they are now.
    async fn apply_change(&self, change: store::StoredChange) -> Result<(), Error> {
        if self.inner.sharding.as_ref().is_some_and(|s| s.applied.lock().contains_key(&change.id)) {
            return Ok(());
        }
        let ids: ChangedIds = serde_json::from_str(&change.ids).map_err(|e| Error::Corrupt {
            what: "status change",
            id: change.id.clone(),
            message: e.to_string(),
        })?;
        let apps = store::load_app_instances_by_id(&self.inner.db, &ids.apps).await?;
        let instances = store::load_instances_by_id(&self.inner.db, &ids.instances).await?;
        let mut s = self.inner.scheduler.lock();
        let (now, now_wall) = (self.inner.clock.now_ms(), wall_ms());
        for app in &apps {
            s.upsert_app(app);
        }
        let mut present = std::collections::HashSet::with_capacity(instances.len());
        for stored in &instances {
            let index = s.upsert_instance(&stored.spec, now, now_wall);
            if stored.reason != NOT_CHECKED {
                s.restore_health(index, stored.status, &stored.reason, stored.since_ms);
            }
            present.insert(stored.spec.id.as_str());
        }
        // Upserted here but gone from the table since: deleted by a later change.
        for id in ids.instances.iter().filter(|id| !present.contains(id.as_str())).chain(&ids.deleted) {
            s.remove(id);
        }
        s.rebalance(now);
        if let Some(sharding) = &self.inner.sharding {
            sharding.mark_applied(&change.id, change.at_ms);
            sharding.last_change_ms.fetch_max(change.at_ms, Ordering::SeqCst);
        }
        Ok(())
    }

    /// Tells the other replicas of a sharded fleet (nobody on a single node).
    async fn tell_others(&self, message: Message) {
        if let Some(sharding) = &self.inner.sharding {
            let envelope = Envelope { from: sharding.replica.clone(), message };
            crate::peers::announce(&self.inner.db, &[envelope.payload()]).await;
        }
    }
}

fn view(i: &Instance) -> InstanceView<'_> {
    InstanceView {
        id: &i.id,
        app_instance: &i.app_instance,
        component: &i.component,
        plugin: &i.plugin,
        status: i.health,
        reason: &i.reason,
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

fn app_view<'a>(a: &'a AppEntry, s: &'a Scheduler) -> AppInstanceView<'a> {
    AppInstanceView {
        id: &a.spec.id,
        app: &a.spec.app,
        version: &a.spec.version,
        cluster: a.spec.cluster.as_deref(),
        namespace: &a.spec.namespace,
        stage: &a.spec.stage,
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
    announce_as: Option<String>,
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
        if let Some(replica) = &announce_as {
            crate::peers::announce(&db, &crate::peers::transition_payloads(replica, &transitions)).await;
        }
        for event in batch {
            let _ = events.send(Arc::new(event));
        }
    }
}

/// Replica ids in the order every replica places them in.
fn sorted(replicas: &[String]) -> Vec<Arc<str>> {
    let mut sorted: Vec<Arc<str>> = replicas.iter().map(|r| Arc::from(r.as_str())).collect();
    sorted.sort();
    sorted.dedup();
    sorted
}
