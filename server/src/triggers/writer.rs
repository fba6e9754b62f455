//! The delivery writer: group commit for accepted deliveries.
//!
//! A delivery is answered `202` only once its build is durable. Committing each one alone
//! costs an fsync per delivery and makes concurrent deliveries queue on the database's write
//! lock; instead one task takes every delivery waiting in its channel and commits them in
//! one transaction (one fsync for the batch), then answers each waiter. Each delivery's
//! replay claims and its build are written together, so a crash never leaves a claim
//! without its build or a build without its claims.
//!
//! Between batches the same task deletes claims older than the replay window, a bounded
//! chunk at a time, so the table holds about one window of deliveries and a prune never
//! stalls deliveries for long (with SQLite they would queue on the write lock anyway).

use std::time::Duration;

use sqlx::AnyPool;
use tokio::sync::{mpsc, oneshot};

use super::{TriggerError, store};
use crate::pipeline::{BuildView, NewBuild, Pipeline};
use crate::storage::now_ms;

/// Most deliveries committed in one transaction; bounds the time a batch holds the lock.
const MAX_BATCH: usize = 256;
/// Deliveries waiting for the writer before senders wait too.
const QUEUE: usize = 4096;
/// Most expired claims deleted at once; a full chunk schedules the next one at once.
const PRUNE_CHUNK: i64 = 5000;

/// An accepted delivery on its way to the database.
pub struct Accepted {
    pub trigger_id: String,
    /// The delivery id key (when the sender gave one) and the payload digest key.
    pub keys: Vec<String>,
    pub build: NewBuild,
}

/// What the writer made of a delivery.
pub enum Recorded {
    /// Its build is stored and queued.
    Started(BuildView),
    /// One of its keys was claimed within the window: the build that claim started.
    Duplicate { build_id: String },
    /// Its trigger was deleted after the delivery was authenticated: nothing is stored.
    TriggerGone,
}

impl Recorded {
    /// The build the delivery started or repeats.
    pub fn build_id(&self) -> Option<&str> {
        match self {
            Recorded::Started(view) => Some(&view.id),
            Recorded::Duplicate { build_id } => Some(build_id),
            Recorded::TriggerGone => None,
        }
    }
}

struct Job {
    delivery: Accepted,
    answer: oneshot::Sender<Result<Recorded, TriggerError>>,
}

#[derive(Clone)]
pub struct DeliveryWriter {
    jobs: mpsc::Sender<Job>,
}

impl DeliveryWriter {
    /// Starts the writer task; it ends when the last handle is dropped.
    pub fn spawn(db: AnyPool, pipeline: Pipeline, window_ms: i64, prune_every: Duration) -> Self {
        let (jobs, queue) = mpsc::channel(QUEUE);
        tokio::spawn(run(db, pipeline, window_ms, prune_every, queue));
        Self { jobs }
    }

    /// Stores the delivery's claims and build, or finds the build of the delivery it
    /// replays; returns once that is committed.
    pub async fn record(&self, delivery: Accepted) -> Result<Recorded, TriggerError> {
        let (answer, answered) = oneshot::channel();
        self.jobs.send(Job { delivery, answer }).await.map_err(|_| TriggerError::WriterStopped)?;
        answered.await.map_err(|_| TriggerError::WriterStopped)?
    }
}

async fn run(
    db: AnyPool,
    pipeline: Pipeline,
    window_ms: i64,
    prune_every: Duration,
    mut queue: mpsc::Receiver<Job>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut prune = tokio::time::interval(prune_every);
    prune.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // `recv_many` is cancel safe: a prune tick never loses a delivery.
        let received = tokio::select! {
            received = queue.recv_many(&mut batch, MAX_BATCH) => received,
            _ = prune.tick() => {
                match store::prune(&db, now_ms() - window_ms, PRUNE_CHUNK).await {
                    Ok(deleted) if deleted as i64 == PRUNE_CHUNK => prune.reset_immediately(),
                    Ok(deleted) => tracing::debug!(deleted, "expired delivery claims pruned"),
                    Err(e) => tracing::warn!(error = %e, "pruning expired delivery claims failed"),
                }
                continue;
            }
        };
        if received == 0 {
            break;
        }
        let deliveries: Vec<&Accepted> = batch.iter().map(|job| &job.delivery).collect();
        let results = match commit(&db, &deliveries, window_ms).await {
            Ok(recorded) => recorded.into_iter().map(Ok).collect(),
            Err(e) if deliveries.len() > 1 => {
                // One delivery's failure must not fail the others: each goes again alone.
                tracing::warn!(error = %e, deliveries = deliveries.len(), "delivery batch failed; committing one by one");
                let mut results = Vec::with_capacity(deliveries.len());
                for delivery in &deliveries {
                    results.push(commit(&db, &[delivery], window_ms).await.map(|mut r| r.remove(0)));
                }
                results
            }
            Err(e) => vec![Err(e)],
        };
        if results.iter().any(|r| matches!(r, Ok(Recorded::Started(_)))) {
            pipeline.builds_queued();
        }
        for (job, result) in batch.drain(..).zip(results) {
            // A sender that went away still has its delivery stored; its retry is a replay.
            let _ = job.answer.send(result);
        }
    }
}

async fn commit(
    db: &AnyPool,
    deliveries: &[&Accepted],
    window_ms: i64,
) -> Result<Vec<Recorded>, TriggerError> {
    let mut tx = db.begin().await?;
    let now = now_ms();
    let recorded = super::batch::record(&mut tx, deliveries, now, now - window_ms).await?;
    tx.commit().await?;
    Ok(recorded)
}
