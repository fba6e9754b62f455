//! The replicas of one deployment that share a database. Each announces itself with a
//! heartbeat row stamped by the database's clock, so any replica can tell who is alive and
//! whose work must be taken over, and a person can see it at `GET /v1/cluster`.
//!
//! A single `slipway serve` on the embedded defaults is a cluster of one: the same rows,
//! the same leases, nobody to hand over to.

mod handoff;
mod notify;

pub use notify::Change;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use sqlx::{AnyPool, AssertSqlSafe};
use utoipa::ToSchema;

use crate::config::Config;
use crate::storage::{Dialect, Migrations};

pub const MIGRATIONS: Migrations = &[
    (
        "server-0004-replicas",
        "CREATE TABLE cluster_replicas (
        id TEXT PRIMARY KEY,
        address TEXT NOT NULL,
        version TEXT NOT NULL,
        started_at_ms BIGINT NOT NULL,
        heartbeat_at_ms BIGINT NOT NULL,
        status_instances BIGINT NOT NULL
    )",
    ),
    ("server-0007-status-handoff", handoff::TABLE),
];

/// Where a replica keeps the id it made up at first start.
const REPLICA_ID_FILE: &str = "replica-id";
/// Rows of replicas silent for this long are removed: they left for good.
const FORGET_AFTER_MS: i64 = 24 * 3600 * 1000;

/// id, address, version, started, heartbeat, heartbeat age, status instances, running builds.
type ReplicaRow = (String, String, String, i64, i64, i64, i64, i64);

#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

struct Inner {
    db: AnyPool,
    dialect: Dialect,
    id: String,
    address: String,
    lease: Duration,
}

/// One replica as `GET /v1/cluster` shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReplicaView {
    pub id: String,
    pub address: String,
    pub version: String,
    pub started_at_ms: i64,
    pub heartbeat_at_ms: i64,
    /// Milliseconds since its last heartbeat, by the database's clock.
    pub heartbeat_age_ms: i64,
    /// Heard from within the lease time; a replica that is not alive holds no leases.
    pub alive: bool,
    /// Whether this is the replica that answered.
    pub answering: bool,
    /// Status instances this replica checks.
    pub status_instances: i64,
    /// Builds this replica holds the lease of.
    pub running_builds: i64,
}

impl Cluster {
    /// Announces this replica (or announces it again after a restart) and returns it.
    pub async fn join(db: AnyPool, config: &Config) -> Result<Self, sqlx::Error> {
        let dialect = Dialect::of(config);
        let id = if config.cluster.replica_id.is_empty() {
            remembered_id(&config.data_dir)
        } else {
            config.cluster.replica_id.clone()
        };
        let address = if config.cluster.advertise.is_empty() {
            config.listen.to_string()
        } else {
            config.cluster.advertise.clone()
        };
        let now = dialect.now_ms();
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO cluster_replicas (id, address, version, started_at_ms, heartbeat_at_ms, status_instances)
             VALUES ($1, $2, $3, {now}, {now}, 0)
             ON CONFLICT (id) DO UPDATE SET address = excluded.address, version = excluded.version,
                 started_at_ms = excluded.started_at_ms, heartbeat_at_ms = excluded.heartbeat_at_ms"
        )))
        .bind(&id)
        .bind(&address)
        .bind(env!("CARGO_PKG_VERSION"))
        .execute(&db)
        .await?;
        tracing::info!(replica = %id, %address, "joined the cluster");
        let lease = Duration::from_millis(config.cluster.lease_ms.max(1_000));
        Ok(Self { inner: Arc::new(Inner { db, dialect, id, address, lease }) })
    }

    pub fn id(&self) -> &str {
        &self.inner.id
    }

    pub fn dialect(&self) -> Dialect {
        self.inner.dialect
    }

    /// How long a lease or a heartbeat holds without renewal.
    pub fn lease(&self) -> Duration {
        self.inner.lease
    }

    /// Renewals run three times per lease, so one slow round trip never loses a lease.
    pub fn renew_every(&self) -> Duration {
        self.inner.lease / 3
    }

    /// Beats until the status service is dropped, and in between watches who else is
    /// alive. Each beat that lands is followed by placing the status instances over the
    /// live replicas, and only then extends this replica's status lease: a replica that was
    /// cut off for longer than the lease gives up what it lost before it checks anything
    /// again. Watching four times a second takes over a silent replica's instances soon
    /// after its lease ends.
    pub fn spawn_heartbeat(&self, status: slipway_status::WeakStatusService) {
        let cluster = self.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(cluster.beat_every() / 4);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last_beat: Option<Instant> = None;
            let mut last_handoff: Option<Instant> = None;
            let writing = Arc::new(AtomicBool::new(false));
            // A beat that landed but whose placement has not yet run: the lease it bought.
            let mut unplaced: Option<Instant> = None;
            loop {
                ticks.tick().await;
                // Upgraded only between awaits: a beat in progress must not keep a dropped
                // service (and its checks) alive.
                let Some(owned) = status.upgrade().map(|s| {
                    s.let_go_if_lapsed();
                    s.owned() as i64
                }) else {
                    return;
                };
                let started = Instant::now();
                let beat_due = last_beat.is_none_or(|at| at.elapsed() >= cluster.beat_every());
                if beat_due {
                    metrics::gauge!("slipway_replica_status_instances").set(owned as f64);
                    match cluster.beat(owned).await {
                        Ok(()) => (last_beat, unplaced) = (Some(started), Some(started)),
                        Err(e) => {
                            tracing::warn!(error = %e, "cluster heartbeat failed; retrying");
                            continue;
                        }
                    }
                }
                let live = match cluster.live_replicas().await {
                    Ok(live) => live,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read the live replicas; retrying");
                        continue;
                    }
                };
                let Some(needs_placing) = status.upgrade().map(|s| s.needs_placing(&live)) else { return };
                let snapshots = if needs_placing {
                    cluster.handoffs().await.unwrap_or_else(|e| {
                        tracing::warn!(error = %e, "cannot read the status schedule snapshots; taken instances start afresh");
                        Vec::new()
                    })
                } else {
                    Vec::new()
                };
                let Some(status) = status.upgrade() else { return };
                if last_handoff.is_none_or(|at| at.elapsed() >= handoff::WRITE_EVERY)
                    && !writing.load(Ordering::Acquire)
                {
                    last_handoff = Some(Instant::now());
                    if let Some(body) = status.handoff() {
                        writing.store(true, Ordering::Release);
                        cluster.spawn_handoff_write(body, writing.clone());
                    }
                }
                if unplaced
                    .is_some_and(|beat| beat + cluster.lease() - cluster.lease() / 10 <= Instant::now())
                {
                    // The beat took longer than the lease it bought (the process was frozen
                    // meanwhile): place nothing on it; the next beat starts afresh.
                    (last_beat, unplaced) = (None, None);
                    continue;
                }
                status.reshard(&live, &snapshots);
                if let Some(beat) = unplaced.take() {
                    // The others count this lease from when the database stamped the beat,
                    // which is after the beat started: ending it a tenth early covers clocks
                    // that run at slightly different rates.
                    status.hold_until(beat + cluster.lease() - cluster.lease() / 10);
                }
            }
        });
    }

    /// Writes this replica's status schedule snapshot beside the beats (a slow write must
    /// not delay them); `writing` is cleared when it is done.
    fn spawn_handoff_write(&self, body: Vec<u8>, writing: Arc<AtomicBool>) {
        let cluster = self.clone();
        tokio::spawn(async move {
            if let Err(e) = cluster.write_handoff(body).await {
                tracing::warn!(error = %e, "cannot write the status schedule snapshot");
            }
            writing.store(false, Ordering::Release);
        });
    }

    /// A beat a second, or three per lease when the lease is shorter than three seconds.
    fn beat_every(&self) -> Duration {
        (self.inner.lease / 3).min(Duration::from_secs(1))
    }

    /// The replicas heard from within the lease, by the database's clock.
    async fn live_replicas(&self) -> Result<Vec<String>, sqlx::Error> {
        let now = self.inner.dialect.now_ms();
        sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT id FROM cluster_replicas WHERE heartbeat_at_ms >= {now} - $1 ORDER BY id"
        )))
        .bind(self.inner.lease.as_millis() as i64)
        .fetch_all(&self.inner.db)
        .await
    }

    async fn beat(&self, status_instances: i64) -> Result<(), sqlx::Error> {
        let now = self.inner.dialect.now_ms();
        let updated = sqlx::query(AssertSqlSafe(format!(
            "UPDATE cluster_replicas SET heartbeat_at_ms = {now}, status_instances = $1 WHERE id = $2"
        )))
        .bind(status_instances)
        .bind(&self.inner.id)
        .execute(&self.inner.db)
        .await?;
        if updated.rows_affected() == 0 {
            // Removed while this replica was cut off for a day: announce it again.
            sqlx::query(AssertSqlSafe(format!(
                "INSERT INTO cluster_replicas (id, address, version, started_at_ms, heartbeat_at_ms, status_instances)
                 VALUES ($1, $2, $3, {now}, {now}, $4) ON CONFLICT (id) DO NOTHING"
            )))
            .bind(&self.inner.id)
            .bind(&self.inner.address)
            .bind(env!("CARGO_PKG_VERSION"))
            .bind(status_instances)
            .execute(&self.inner.db)
            .await?;
        }
        sqlx::query(AssertSqlSafe(format!(
            "DELETE FROM cluster_replicas WHERE heartbeat_at_ms < {now} - $1"
        )))
        .bind(FORGET_AFTER_MS)
        .execute(&self.inner.db)
        .await?;
        Ok(())
    }

    /// Every replica heard from in the last day, this one first, with the builds each holds.
    pub async fn replicas(&self) -> Result<Vec<ReplicaView>, sqlx::Error> {
        let now = self.inner.dialect.now_ms();
        let rows: Vec<ReplicaRow> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT r.id, r.address, r.version, r.started_at_ms, r.heartbeat_at_ms, {now} - r.heartbeat_at_ms,
                    r.status_instances,
                    (SELECT COUNT(*) FROM builds b WHERE b.owner = r.id AND b.state = 'running')
             FROM cluster_replicas r ORDER BY r.id"
        )))
        .fetch_all(&self.inner.db)
        .await?;
        let lease_ms = self.inner.lease.as_millis() as i64;
        let mut replicas: Vec<ReplicaView> = rows
            .into_iter()
            .map(
                |(
                    id,
                    address,
                    version,
                    started_at_ms,
                    heartbeat_at_ms,
                    age,
                    status_instances,
                    running_builds,
                )| {
                    ReplicaView {
                        answering: id == self.inner.id,
                        id,
                        address,
                        version,
                        started_at_ms,
                        heartbeat_at_ms,
                        heartbeat_age_ms: age.max(0),
                        alive: age <= lease_ms,
                        status_instances,
                        running_builds,
                    }
                },
            )
            .collect();
        replicas.sort_by_key(|r| !r.answering);
        Ok(replicas)
    }
}

/// The id this data directory's replica made up at its first start: the host name (a pod's
/// name on Kubernetes) and a random suffix, so two replicas never share one.
fn remembered_id(data_dir: &Path) -> String {
    let file = data_dir.join(REPLICA_ID_FILE);
    if let Ok(id) = std::fs::read_to_string(&file)
        && !id.trim().is_empty()
    {
        return id.trim().to_owned();
    }
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "replica".into());
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let id = format!("{host}-{}", &suffix[..8]);
    if let Err(e) = std::fs::write(&file, &id) {
        tracing::warn!(error = %e, path = %file.display(), "cannot keep the replica id; a restart gets a new one");
    }
    id
}
