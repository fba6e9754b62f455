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
//! On SQLite the loop runs on a thread of its own with its own connection (rusqlite's), and
//! a batch's statements are plain calls on it (`sqlite_writer.rs`): no hop to a driver
//! thread per statement, and no runtime worker to wait for between batches. On PostgreSQL it
//! is a task with a pool connection per batch.
//!
//! Between batches the writer deletes claims older than the replay window, a bounded
//! chunk at a time, so the table holds about one window of deliveries and a prune never
//! stalls deliveries for long (with SQLite they would queue on the write lock anyway).

use std::time::{Duration, Instant};

use sqlx::{AnyPool, Connection};
use tokio::sync::{mpsc, oneshot};

use super::checkpoint::{self, Checkpointer, LOG_BOUND};
use super::sqlite_writer;
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
    /// Deletes up to `PRUNE_CHUNK` expired claims after the batch; answered with how many.
    Prune(oneshot::Sender<Result<u64, TriggerError>>),
}

/// Each delivery's outcome, in the batch's order.
pub type Outcomes = Vec<Result<Recorded, TriggerError>>;

#[derive(Clone)]
pub struct DeliveryWriter {
    jobs: mpsc::Sender<Job>,
}

impl DeliveryWriter {
    /// Starts the writer and its pruning; they end when the last handle is dropped.
    pub fn spawn(
        db: AnyPool,
        dialect: Dialect,
        pipeline: Pipeline,
        window_ms: i64,
        prune_every: Duration,
    ) -> Self {
        let (jobs, queue) = mpsc::channel(QUEUE);
        tokio::spawn(prune(jobs.downgrade(), prune_every));
        tokio::spawn(async move {
            let Some(sink) = WalSink::open(&db, dialect).await else {
                return run(db, pipeline, window_ms, queue).await;
            };
            // Its statements block the thread they run on, and every delivery waits for
            // them: a thread of its own, woken directly by the deliveries it takes.
            let thread = std::thread::Builder::new()
                .name("delivery-writer".into())
                .spawn(move || futures::executor::block_on(run(sink, pipeline, window_ms, queue)));
            if let Err(e) = thread {
                // The queue went with the closure: deliveries are answered `WriterStopped`.
                tracing::error!(error = %e, "the delivery writer's thread could not start");
            }
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

/// Asks the writer to prune at each tick, at once again while a prune finds a full chunk.
/// It holds the queue weakly, so the writer still ends with its last handle.
async fn prune(jobs: mpsc::WeakSender<Job>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(jobs) = jobs.upgrade() else { break };
        let (answer, answered) = oneshot::channel();
        if jobs.send(Job::Prune(answer)).await.is_err() {
            break;
        }
        drop(jobs);
        match answered.await {
            Ok(Ok(deleted)) if deleted as i64 == PRUNE_CHUNK => tick.reset_immediately(),
            Ok(Ok(deleted)) => tracing::debug!(deleted, "expired delivery claims pruned"),
            Ok(Err(e)) => tracing::warn!(error = %e, "pruning expired delivery claims failed"),
            Err(_) => break,
        }
    }
}

/// Where the writer commits its batches, and when a commit may be answered.
pub trait Sink {
    /// Commits the deliveries in one transaction.
    async fn commit(
        &mut self,
        deliveries: &[&Accepted],
        window_ms: i64,
    ) -> Result<Vec<Recorded>, TriggerError>;
    /// Deletes up to `limit` claims made before `cutoff_ms`; how many.
    async fn prune(&mut self, cutoff_ms: i64, limit: i64) -> Result<u64, TriggerError>;
    /// Calls each waiter once what was committed before is durable.
    fn answer(&self, waiters: Vec<Waiter>);
}

/// A pool connection per batch, whose commit returns once it is durable: PostgreSQL (its
/// own group commit overlaps the flushes of concurrent commits), or SQLite when the writer
/// could not set up its own connection.
impl Sink for AnyPool {
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

    async fn prune(&mut self, cutoff_ms: i64, limit: i64) -> Result<u64, TriggerError> {
        Ok(store::prune(self, cutoff_ms, limit).await?)
    }

    fn answer(&self, waiters: Vec<Waiter>) {
        waiters.into_iter().for_each(|waiter| waiter(Ok(())));
    }
}

/// SQLite: the writer's own connection commits without an fsync and the flusher makes each
/// commit durable outside the write lock while the next batch is written; its checkpoints
/// run beside it, not in its commits.
struct WalSink {
    conn: rusqlite::Connection,
    flusher: WalFlusher,
    checkpointer: Checkpointer,
}

impl WalSink {
    /// `None` on PostgreSQL, or when SQLite's writer could not be set up (logged).
    async fn open(db: &AnyPool, dialect: Dialect) -> Option<WalSink> {
        if dialect != Dialect::Sqlite {
            return None;
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
            let conn = sqlite_writer::open(database.clone(), session).await?;
            let flusher = WalFlusher::start(wal::log_file(&database))?;
            let checkpointer =
                Checkpointer::start(db.acquire().await?.detach(), &database, LOG_BOUND).await?;
            Ok::<_, TriggerError>(WalSink { conn, flusher, checkpointer })
        };
        own.await
            .inspect_err(
                |e| tracing::warn!(error = %e, "the delivery writer commits with an fsync each (no flusher)"),
            )
            .ok()
    }
}

impl Sink for WalSink {
    async fn commit(
        &mut self,
        deliveries: &[&Accepted],
        window_ms: i64,
    ) -> Result<Vec<Recorded>, TriggerError> {
        let turn = self.checkpointer.turn().await;
        let committed = sqlite_writer::commit(&mut self.conn, deliveries, window_ms).await;
        drop(turn);
        self.checkpointer.committed();
        committed
    }

    async fn prune(&mut self, cutoff_ms: i64, limit: i64) -> Result<u64, TriggerError> {
        let _turn = self.checkpointer.turn().await;
        Ok(sqlite_writer::prune(&self.conn, cutoff_ms, limit)?)
    }

    fn answer(&self, waiters: Vec<Waiter>) {
        self.flusher.after_flush(waiters);
    }
}

/// Commits `deliveries` in one transaction; if that fails, each alone, so one delivery's
/// failure does not fail the others.
async fn commit_each(sink: &mut impl Sink, deliveries: &[&Accepted], window_ms: i64) -> Outcomes {
    match sink.commit(deliveries, window_ms).await {
        Ok(recorded) => recorded.into_iter().map(Ok).collect(),
        Err(e) if deliveries.len() > 1 => {
            tracing::warn!(error = %e, deliveries = deliveries.len(), "delivery batch failed; committing one by one");
            let mut outcomes = Vec::with_capacity(deliveries.len());
            for delivery in deliveries {
                outcomes.push(sink.commit(&[delivery], window_ms).await.map(|mut r| r.remove(0)));
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

async fn run(mut sink: impl Sink, pipeline: Pipeline, window_ms: i64, mut queue: mpsc::Receiver<Job>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let began = Instant::now();
        let (mut deliveries, mut answers, mut prunes) =
            (Vec::with_capacity(batch.len()), Vec::new(), Vec::new());
        for job in batch.drain(..) {
            match job {
                Job::Record { delivery, queued, answer } => {
                    Stage::WriterQueue.record(began - queued, 1);
                    deliveries.push(delivery);
                    answers.push(Answer::Delivery(answer));
                }
                Job::Barrier(answer) => answers.push(Answer::Barrier(answer)),
                Job::Prune(answer) => prunes.push(answer),
            }
        }
        let outcomes = if deliveries.is_empty() {
            Vec::new()
        } else {
            let deliveries: Vec<&Accepted> = deliveries.iter().collect();
            commit_each(&mut sink, &deliveries, window_ms).await
        };
        let committed = Instant::now();
        if !deliveries.is_empty() {
            Stage::Commit.record(committed - began, deliveries.len());
        }
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
        for answer in prunes {
            let _ = answer.send(sink.prune(now_ms() - window_ms, PRUNE_CHUNK).await);
        }
    }
}
