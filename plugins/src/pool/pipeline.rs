//! Batches in pieces, pipelined: a worker gets the next pieces of a batch before it has
//! answered the one it runs, so it goes from one piece to the next without waiting for the
//! host, while the host encodes later pieces and decodes earlier answers on its own core.
//! Pieces are made on demand by the caller (encoding, memo lookups) and their answers
//! handed back as they come, so neither side waits for the whole batch.
//!
//! The writer and the reader of a worker are two futures of the caller's task; what they
//! share sits behind locks that are never contended nor held across an await (the task
//! must stay `Send`).

use std::collections::VecDeque;
use std::io;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use futures::future::{Either, select};
use tokio::sync::Notify;

use super::process::{Lost, WorkerProcess, send};
use super::{CallOutcome, Job, Pool};
use crate::error::Error;
use crate::protocol::{CallList, Response, encode_run_parts};

/// Pieces sent to one worker ahead of its answers: one running, the next ones waiting in
/// its input pipe.
const PIECES_IN_FLIGHT: usize = 3;

/// A piece of a batch: its number (in the order the caller made them) and its calls.
type Piece = (usize, CallList);

/// Where the lanes of a batch take pieces from: first those given back by a lane that lost
/// its worker or was asked for code, then new ones from the caller.
struct Source<P> {
    make: Mutex<(P, usize)>,
    returned: Mutex<VecDeque<Piece>>,
}

impl<P: FnMut() -> Option<CallList>> Source<P> {
    fn take(&self) -> Option<Piece> {
        if let Some(piece) = lock(&self.returned).pop_front() {
            return Some(piece);
        }
        let (make, made) = &mut *lock(&self.make);
        let calls = make()?;
        *made += 1;
        Some((*made - 1, calls))
    }

    fn give_back(&self, piece: Piece) {
        lock(&self.returned).push_back(piece);
    }
}

/// A worker lost in the middle of a pipeline: the pieces it had, the first of them with the
/// answers it gave before it went.
struct Interrupted {
    lost: Lost,
    answered: Vec<CallOutcome>,
    in_flight: VecDeque<Piece>,
}

impl Pool {
    /// Runs the pieces `make` returns until it returns `None`, on up to `lanes` workers at
    /// once, and hands each piece's results, one per call in order, to `done` with the
    /// piece's number. The error is for the whole batch (a worker that cannot start).
    pub async fn run_pieces<P, D>(&self, job: &Job<'_>, lanes: usize, make: P, done: D) -> Result<(), Error>
    where
        P: FnMut() -> Option<CallList>,
        D: FnMut(usize, Vec<CallOutcome>),
    {
        let header = serde_json::to_vec(&job.request(CallList::default(), false))
            .map_err(|e| Error::Worker(format!("batch header: {e}")))?;
        let run = Run {
            pool: self,
            job,
            header,
            source: Source { make: Mutex::new((make, 0)), returned: Mutex::new(VecDeque::new()) },
            done: Mutex::new(done),
        };
        for lane in futures::future::join_all((0..lanes.max(1)).map(|_| run.lane())).await {
            lane?;
        }
        Ok(())
    }
}

/// One batch being run: what its lanes share.
struct Run<'a, P, D> {
    pool: &'a Pool,
    job: &'a Job<'a>,
    /// The batch frame's header, the same for every piece sent without code.
    header: Vec<u8>,
    source: Source<P>,
    done: Mutex<D>,
}

impl<P, D> Run<'_, P, D>
where
    P: FnMut() -> Option<CallList>,
    D: FnMut(usize, Vec<CallOutcome>),
{
    /// One worker's share of a batch: pieces until there are no more, on a fresh worker
    /// after each loss.
    async fn lane(&self) -> Result<(), Error> {
        let Some(mut first) = self.source.take() else { return Ok(()) };
        let _permit = self.pool.permits.acquire().await.expect("the semaphore is never closed");
        loop {
            let mut worker = self.pool.checkout().await?;
            let outcome = self.pipeline(&mut worker, first).await;
            if let Err(stop) = outcome {
                self.recover(worker, stop).await?;
            } else {
                self.pool.checkin(worker);
            }
            // Pieces given back after this lane's writer stopped are still to run.
            let Some(next) = self.source.take() else { return Ok(()) };
            first = next;
        }
    }

    /// After a worker loss: the calls it did not answer of the piece it was on run one
    /// report each (so a second loss names its call), the pieces behind go back.
    async fn recover(&self, mut worker: WorkerProcess, stop: Interrupted) -> Result<(), Error> {
        let error = worker.explain(stop.lost).await;
        worker.kill().await;
        metrics::counter!("slipway_plugin_workers_replaced_total").increment(1);
        let mut in_flight = stop.in_flight;
        let (index, mut calls) = in_flight.pop_front().expect("a lost pipeline has a piece in flight");
        in_flight.into_iter().for_each(|piece| self.source.give_back(piece));
        let mut results = stop.answered;
        calls.drain_front(results.len());
        if calls.len() == 1 {
            let error = self.pool.loss_error(self.job, error);
            tracing::warn!(triple = %self.job.triple, function = self.job.function, %error, "plugin worker replaced");
            results.push(Err(error));
        } else {
            // Which of the unanswered calls brought the worker down is not known yet.
            results.extend(self.pool.run_careful(self.job, calls).await?);
        }
        (lock(&self.done))(index, results);
        Ok(())
    }

    /// Keeps up to [`PIECES_IN_FLIGHT`] pieces sent to `worker` and reads their answers,
    /// until `source` is empty and every piece is answered.
    async fn pipeline(&self, worker: &mut WorkerProcess, first: Piece) -> Result<(), Interrupted> {
        let (pool, job, source, done) = (self.pool, self.job, &self.source, &self.done);
        let has_code = AtomicBool::new(worker.sent_code.contains(job.code_hash));
        let in_flight: Mutex<VecDeque<Piece>> = Mutex::new(VecDeque::new());
        let writer_done = AtomicBool::new(false);
        let (sent, room) = (Notify::new(), Notify::new());
        let (stdin, answers) = worker.pipes();
        let writer = async {
            let mut next = Some(first);
            loop {
                while lock(&in_flight).len() >= PIECES_IN_FLIGHT {
                    room.notified().await;
                }
                let Some((index, calls)) = next.take().or_else(|| source.take()) else { break };
                let (frame, calls) = if has_code.load(Ordering::Relaxed) {
                    (encode_run_parts(&self.header, &calls), calls)
                } else {
                    job.frame_with_code(calls, false)
                };
                has_code.store(true, Ordering::Relaxed);
                lock(&in_flight).push_back((index, calls));
                sent.notify_one();
                // A failed write means the worker is gone; the reader learns how from its output.
                let Ok(frame) = frame else { break };
                if send(stdin, &frame).await.is_err() {
                    break;
                }
            }
            writer_done.store(true, Ordering::Relaxed);
            sent.notify_one();
        };
        let reader = async {
            let mut answered: Vec<CallOutcome> = Vec::new();
            loop {
                let Some(expected) = lock(&in_flight).front().map(|(_, calls)| calls.len()) else {
                    if writer_done.load(Ordering::Relaxed) {
                        return Ok(());
                    }
                    sent.notified().await;
                    continue;
                };
                let response = answers.recv(pool.stall_deadline, pool.answer_spin(expected)).await;
                let broken = |message: String| Lost::Broken(io::Error::other(message));
                match response.map_err(|lost| (lost, std::mem::take(&mut answered)))? {
                    Response::NeedCode => {
                        // The worker dropped the code since it was sent: this piece and those
                        // behind it go back, and the next piece sent carries the code.
                        let piece = lock(&in_flight).pop_front().expect("a piece in flight");
                        source.give_back(piece);
                        has_code.store(false, Ordering::Relaxed);
                        room.notify_one();
                    }
                    Response::Progress { results } => pool.collect(job, results, &mut answered),
                    Response::Done { results } => {
                        pool.collect(job, results, &mut answered);
                        if answered.len() != expected {
                            let message = format!("answered {} of {expected} calls", answered.len());
                            return Err((broken(message), answered));
                        }
                        let (index, _) = lock(&in_flight).pop_front().expect("a piece in flight");
                        room.notify_one();
                        (lock(done))(index, std::mem::take(&mut answered));
                    }
                    other => {
                        return Err((broken(format!("unexpected answer to a batch: {other:?}")), answered));
                    }
                }
            }
        };
        // A reader that stops on a lost worker drops the writer, which may wait on a full pipe.
        let outcome = match select(pin!(writer), pin!(reader)).await {
            Either::Left(((), reader)) => reader.await,
            Either::Right((outcome, _writer)) => outcome,
        };
        match &outcome {
            Ok(()) => {
                worker.sent_code.insert(job.code_hash.to_owned());
            }
            Err(_) => {
                worker.sent_code.remove(job.code_hash);
            }
        }
        outcome.map_err(|(lost, answered)| Interrupted {
            lost,
            answered,
            in_flight: in_flight.into_inner().unwrap_or_else(PoisonError::into_inner),
        })
    }
}

/// A lock shared by the writer and the reader of a batch (or the caller's halves of it):
/// never contended, never held across an await; a panic while one is held ends the batch.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
