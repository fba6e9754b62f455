//! The delivery writer: group commit for accepted deliveries.
//!
//! A delivery is answered `202` only once its build is durable. Committing each one alone
//! costs an fsync per delivery and makes concurrent deliveries queue on the database's write
//! lock; instead one task takes every delivery waiting in its channel and commits them in
//! one transaction, then answers each waiter once the commit is durable: on PostgreSQL when
//! the commit returns, on SQLite after the flush of the log that follows it (`wal.rs`),
//! which runs while the next batch is written. Each delivery's
//! replay claims and its build are written together, so a crash never leaves a claim
//! without its build or a build without its claims.
//!
//! Between batches the same task deletes claims older than the replay window, a bounded
//! chunk at a time, so the table holds about one window of deliveries and a prune never
//! stalls deliveries for long (with SQLite they would queue on the write lock anyway).

use std::time::{Duration, Instant};

use sqlx::{AnyConnection, AnyPool, Connection};
use tokio::sync::{mpsc, oneshot};

use super::checkpoint::{Checkpointer, LOG_BOUND};
use super::stages::Stage;
use super::wal::{Waiter, WalFlusher};
use super::{TriggerError, store};
use crate::pipeline::{BuildView, NewBuild, Pipeline};
use crate::storage::{Dialect, now_ms};

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

enum Job {
    Record {
        delivery: Accepted,
        queued: Instant,
        answer: oneshot::Sender<Result<Recorded, TriggerError>>,
    },
    /// Answered once everything committed before it is durable.
    Barrier(oneshot::Sender<Result<(), TriggerError>>),
}

#[derive(Clone)]
pub struct DeliveryWriter {
    jobs: mpsc::Sender<Job>,
}

impl DeliveryWriter {
    /// Starts the writer task; it ends when the last handle is dropped.
    pub fn spawn(
        db: AnyPool,
        dialect: Dialect,
        pipeline: Pipeline,
        window_ms: i64,
        prune_every: Duration,
    ) -> Self {
        let (jobs, queue) = mpsc::channel(QUEUE);
        tokio::spawn(async move {
            let sink = Sink::open(&db, dialect).await;
            run(db, sink, pipeline, window_ms, prune_every, queue).await
        });
        Self { jobs }
    }

    /// Stores the delivery's claims and build, or finds the build of the delivery it
    /// replays; returns once that is committed and durable.
    pub async fn record(&self, delivery: Accepted) -> Result<Recorded, TriggerError> {
        let (answer, answered) = oneshot::channel();
        self.jobs
            .send(Job::Record { delivery, queued: Instant::now(), answer })
            .await
            .map_err(|_| TriggerError::WriterStopped)?;
        answered.await.map_err(|_| TriggerError::WriterStopped)?
    }

    /// Returns once every delivery committed so far is durable: a claim read from the
    /// database may be one whose flush is still under way, and must not be answered before.
    pub async fn durable(&self) -> Result<(), TriggerError> {
        let (answer, answered) = oneshot::channel();
        self.jobs.send(Job::Barrier(answer)).await.map_err(|_| TriggerError::WriterStopped)?;
        answered.await.map_err(|_| TriggerError::WriterStopped)?
    }
}

/// Where the writer commits its batches, and when a commit may be answered.
enum Sink {
    /// A pool connection per batch, whose commit returns once it is durable: PostgreSQL
    /// (its own group commit overlaps the flushes of concurrent commits), or SQLite when the
    /// writer could not set up its own connection.
    Pool(AnyPool),
    /// SQLite: the writer's own connection commits without an fsync and the flusher makes
    /// each commit durable outside the write lock while the next batch is written; its
    /// checkpoints run beside it, not in its commits.
    Wal { conn: AnyConnection, flusher: WalFlusher, checkpointer: Checkpointer },
}

impl Sink {
    async fn open(db: &AnyPool, dialect: Dialect) -> Sink {
        if dialect != Dialect::Sqlite {
            return Sink::Pool(db.clone());
        }
        let own = async {
            // Out of the pool: its setting must not reach other work, and it stays open.
            let mut conn = db.acquire().await?.detach();
            let flusher = WalFlusher::open(&mut conn).await?;
            let own = db.acquire().await?.detach();
            let checkpointer = Checkpointer::start(&mut conn, own, LOG_BOUND).await?;
            Ok::<_, sqlx::Error>(Sink::Wal { conn, flusher, checkpointer })
        };
        own.await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "the delivery writer commits with an fsync each (no flusher)");
            Sink::Pool(db.clone())
        })
    }

    async fn commit(
        &mut self,
        deliveries: &[&Accepted],
        window_ms: i64,
    ) -> Result<Vec<Recorded>, TriggerError> {
        match self {
            Sink::Pool(db) => commit(&mut *db.acquire().await?, deliveries, window_ms).await,
            Sink::Wal { conn, checkpointer, .. } => {
                let turn = checkpointer.turn().await;
                let committed = commit(conn, deliveries, window_ms).await;
                drop(turn);
                checkpointer.committed();
                committed
            }
        }
    }

    fn answer(&self, waiters: Vec<Waiter>) {
        match self {
            Sink::Pool(_) => waiters.into_iter().for_each(|waiter| waiter(Ok(()))),
            Sink::Wal { flusher, .. } => flusher.after_flush(waiters),
        }
    }
}

async fn run(
    db: AnyPool,
    mut sink: Sink,
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
        let began = Instant::now();
        let deliveries: Vec<&Accepted> = batch
            .iter()
            .filter_map(|job| match job {
                Job::Record { delivery, queued, .. } => {
                    Stage::WriterQueue.record(began - *queued, 1);
                    Some(delivery)
                }
                Job::Barrier(_) => None,
            })
            .collect();
        let results = match sink.commit(&deliveries, window_ms).await {
            Ok(recorded) => recorded.into_iter().map(Ok).collect(),
            Err(e) if deliveries.len() > 1 => {
                // One delivery's failure must not fail the others: each goes again alone.
                tracing::warn!(error = %e, deliveries = deliveries.len(), "delivery batch failed; committing one by one");
                let mut results = Vec::with_capacity(deliveries.len());
                for delivery in &deliveries {
                    results.push(sink.commit(&[delivery], window_ms).await.map(|mut r| r.remove(0)));
                }
                results
            }
            Err(e) => vec![Err(e)],
        };
        let committed = Instant::now();
        Stage::Commit.record(committed - began, deliveries.len());
        if results.iter().any(|r| matches!(r, Ok(Recorded::Started(_)))) {
            pipeline.builds_queued();
        }
        let mut results = results.into_iter();
        let waiters = batch
            .drain(..)
            .map(|job| -> Waiter {
                match job {
                    Job::Record { answer, .. } => {
                        let result = results.next().expect("a result for every delivery");
                        // A sender that went away still has its delivery stored; its retry
                        // is a replay.
                        Box::new(move |flushed| {
                            Stage::Flush.done(committed);
                            let _ = answer.send(flushed.and(result));
                        })
                    }
                    Job::Barrier(answer) => Box::new(move |flushed| {
                        let _ = answer.send(flushed);
                    }),
                }
            })
            .collect();
        sink.answer(waiters);
    }
}

async fn commit(
    conn: &mut AnyConnection,
    deliveries: &[&Accepted],
    window_ms: i64,
) -> Result<Vec<Recorded>, TriggerError> {
    let mut tx = conn.begin().await?;
    let now = now_ms();
    let recorded = super::batch::record(&mut tx, deliveries, now, now - window_ms).await?;
    tx.commit().await?;
    Ok(recorded)
}
