//! Raw queue claims per second: a large table of queued builds on PostgreSQL, and claimers
//! on connections of their own each claiming one build at a time through the pipeline's own
//! claim (`BuildStore::claim_queued`, `FOR UPDATE SKIP LOCKED`), as replicas' dispatchers do
//! when a build slot frees.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use slipway_server::cluster::Cluster;
use slipway_server::config::Config;
use slipway_server::pipeline::{BuildStore, BuildSubmission, ComponentSpec, NewBuild, SourceRequest};

/// Claimers, each with its own connection.
const CLAIMERS: usize = 8;
/// Builds inserted per transaction while filling the queue.
const FILL_CHUNK: usize = 5_000;

/// Fills the empty database at `url` with `queued` builds, then claims for `window`.
pub async fn run(url: &str, queued: usize, window: Duration) -> anyhow::Result<Value> {
    let queue = Queue::fill(url, queued, CLAIMERS).await?;
    let claimed = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let deadline = started + window;
    let mut claimers = Vec::new();
    for k in 0..CLAIMERS {
        let store = queue.claimer(k).await?;
        let claimed = claimed.clone();
        claimers.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let got = store.claim_queued(1).await?;
                anyhow::ensure!(!got.is_empty(), "the queue ran dry: fill it with more builds");
                anyhow::ensure!(got.len() == 1, "one claim took {} builds", got.len());
                claimed.fetch_add(got.len(), Ordering::Relaxed);
            }
            anyhow::Ok(())
        }));
    }
    for claimer in claimers {
        claimer.await??;
    }
    let claims = claimed.load(Ordering::Relaxed);
    let per_s = claims as f64 / started.elapsed().as_secs_f64();
    eprintln!(
        "cluster: {claims} claims by {CLAIMERS} claimers in {window:?} from {queued} queued: {per_s:.0}/s"
    );
    Ok(json!({ "queue_claims_per_s": per_s, "queue_claimers": CLAIMERS, "queue_depth": queued }))
}

/// A database holding a queue of builds, for claimers to take from.
pub struct Queue {
    config: Config,
    db: sqlx::AnyPool,
    _data: tempfile::TempDir,
}

impl Queue {
    /// Migrates the empty database at `url` and queues `queued` builds in it; `connections`
    /// is the pool size the claimers share.
    pub async fn fill(url: &str, queued: usize, connections: usize) -> anyhow::Result<Queue> {
        let data = tempfile::tempdir()?;
        let mut config = Config { data_dir: data.path().into(), ..Config::default() };
        config.database.url = url.to_owned();
        config.database.max_connections = connections as u32;
        let db = slipway_server::storage::open_database(&config).await?;
        fill(&db, queued).await?;
        Ok(Queue { config, db, _data: data })
    }

    /// The pipeline's build store as replica `claimer-{k}` has it.
    pub async fn claimer(&self, k: usize) -> anyhow::Result<BuildStore> {
        let mut config = self.config.clone();
        config.cluster.replica_id = format!("claimer-{k}");
        Ok(BuildStore::new(self.db.clone(), &Cluster::join(self.db.clone(), &config).await?))
    }
}

async fn fill(db: &sqlx::AnyPool, queued: usize) -> anyhow::Result<()> {
    let started = Instant::now();
    let component = ComponentSpec {
        name: "c".into(),
        component_type: "microservice".into(),
        source: SourceRequest::Git {
            url: "https://git.example/acme/shop.git".into(),
            reference: "main".into(),
        },
        path: ".".into(),
        params: Value::Null,
    };
    for from in (0..queued).step_by(FILL_CHUNK) {
        let builds: Vec<NewBuild> = (from..(from + FILL_CHUNK).min(queued))
            .map(|k| NewBuild {
                id: uuid_like(k),
                app: "queued".into(),
                submission: BuildSubmission {
                    version: "auto".into(),
                    tags: Vec::new(),
                    components: vec![component.clone()],
                },
                requested_by: "bench".into(),
                created_at_ms: k as i64,
            })
            .collect();
        let mut tx = db.begin().await?;
        NewBuild::insert_all(&mut tx, &builds.iter().collect::<Vec<_>>()).await?;
        tx.commit().await?;
    }
    eprintln!("cluster: {queued} builds queued in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// Ids in submission order, as the pipeline's time-ordered ids are.
fn uuid_like(k: usize) -> String {
    format!("00000000-0000-7000-8000-{k:012}")
}
