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

use sqlx::{AnyPool, Connection};
use tokio::sync::{mpsc, oneshot};

use super::checkpoint::{self, Checkpointer, LOG_BOUND};
use super::sqlite_writer::{Outcomes, SqliteWriter};
use super::stages::Stage;
use super::wal::{self, Waiter, WalFlusher};
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
    /// SQLite: the writer's own connection, on its own thread, commits without an fsync and
    /// the flusher makes each commit durable outside the write lock while the next batch is
    /// written; its checkpoints run beside it, not in its commits.
    Wal { sqlite: SqliteWriter, flusher: WalFlusher, checkpointer: Checkpointer },
}

impl Sink {
    async fn open(db: &AnyPool, dialect: Dialect) -> Sink {
        if dialect != Dialect::Sqlite {
            return Sink::Pool(db.clone());
        }
        let own = async {
            let (database, busy_timeout_ms) = {
                let mut conn = db.acquire().await?;
                let (busy,): (i64,) = sqlx::query_as("PRAGMA busy_timeout").fetch_one(&mut *conn).await?;
                (wal::database_file(&mut conn).await?, busy)
            };
            // The pool's busy timeout, and the settings the flusher and the checkpointer
            // rely on; the connection is the writer's alone, so they reach nothing else.
            let session = format!(
                "PRAGMA busy_timeout = {busy_timeout_ms}; {}; {}",
                wal::WRITER_SYNCHRONOUS,
                checkpoint::writer_settings(LOG_BOUND)
            );
            let sqlite = SqliteWriter::open(database.clone(), session).await?;
            let flusher = WalFlusher::start(wal::log_file(&database));
            let checkpointer = Checkpointer::start(db.acquire().await?.detach(), LOG_BOUND).await?;
            Ok::<_, TriggerError>(Sink::Wal { sqlite, flusher, checkpointer })
        };
        own.await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "the delivery writer commits with an fsync each (no flusher)");
            Sink::Pool(db.clone())
        })
    }

    async fn commit(&mut self, deliveries: Vec<Accepted>, window_ms: i64) -> Outcomes {
        match self {
            Sink::Pool(db) => {
                let deliveries: Vec<&Accepted> = deliveries.iter().collect();
                commit_each(db, &deliveries, window_ms).await
            }
            Sink::Wal { sqlite, checkpointer, .. } => {
                let turn = checkpointer.turn().await;
                let committed = sqlite.commit(deliveries, window_ms).await;
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

/// A database the writer commits a batch to, in one transaction.
pub trait Committer {
    async fn commit(
        &mut self,
        deliveries: &[&Accepted],
        window_ms: i64,
    ) -> Result<Vec<Recorded>, TriggerError>;
}

impl Committer for AnyPool {
    async fn commit(
        &mut self,
        deliveries: &[&Accepted],
        window_ms: i64,
    ) -> Result<Vec<Recorded>, TriggerError> {
        let mut conn = self.acquire().await?;
        let mut tx = conn.begin().await?;
        let now = now_ms();
        let recorded = super::batch::record(&mut *tx, deliveries, now, now - window_ms).await?;
        tx.commit().await?;
        Ok(recorded)
    }
}

/// Commits `deliveries` in one transaction; if that fails, each alone, so one delivery's
/// failure does not fail the others.
pub async fn commit_each(db: &mut impl Committer, deliveries: &[&Accepted], window_ms: i64) -> Outcomes {
    match db.commit(deliveries, window_ms).await {
        Ok(recorded) => recorded.into_iter().map(Ok).collect(),
        Err(e) if deliveries.len() > 1 => {
            tracing::warn!(error = %e, deliveries = deliveries.len(), "delivery batch failed; committing one by one");
            let mut outcomes = Vec::with_capacity(deliveries.len());
            for delivery in deliveries {
                outcomes.push(db.commit(&[delivery], window_ms).await.map(|mut r| r.remove(0)));
            }
            outcomes
        }
        Err(e) => vec![Err(e)],
    }
}

/// What waits for a batch's commit: a delivery's sender, or a barrier.
enum Answer {
    Delivery(oneshot::Sender<Result<Recorded, TriggerError>>),
    Barrier(oneshot::Sender<Result<(), TriggerError>>),
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
        let mut deliveries = Vec::with_capacity(batch.len());
        let answers: Vec<Answer> = batch
            .drain(..)
            .map(|job| match job {
                Job::Record { delivery, queued, answer } => {
                    Stage::WriterQueue.record(began - queued, 1);
                    deliveries.push(delivery);
                    Answer::Delivery(answer)
                }
                Job::Barrier(answer) => Answer::Barrier(answer),
            })
            .collect();
        let count = deliveries.len();
        let outcomes = sink.commit(deliveries, window_ms).await;
        let committed = Instant::now();
        Stage::Commit.record(committed - began, count);
        if outcomes.iter().any(|r| matches!(r, Ok(Recorded::Started(_)))) {
            pipeline.builds_queued();
        }
        let mut outcomes = outcomes.into_iter();
        let waiters = answers
            .into_iter()
            .map(|answer| -> Waiter {
                match answer {
                    Answer::Delivery(answer) => {
                        let outcome = outcomes.next().expect("an outcome for every delivery");
                        // A sender that went away still has its delivery stored; its retry
                        // is a replay.
                        Box::new(move |flushed| {
                            Stage::Flush.done(committed);
                            let _ = answer.send(flushed.and(outcome));
                        })
                    }
                    Answer::Barrier(answer) => Box::new(move |flushed| {
                        let _ = answer.send(flushed);
                    }),
                }
            })
            .collect();
        sink.answer(waiters);
    }
}
