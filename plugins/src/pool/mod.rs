//! The pool of worker processes and the batch protocol with them.
//!
//! A batch is many calls of one function of one script. The host enforces the time limit
//! from outside: a worker reports finished calls at least every few milliseconds, so when
//! no frame comes within the call timeout plus slack, the call it is on has defeated the
//! interrupt handler. That worker is killed, the call fails with `Timeout`, and the rest of
//! the batch runs on a fresh worker. A worker that dies fails only the call it was on.

mod pipeline;
mod process;

use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::config::HostConfig;
use crate::error::{Error, ScriptLocation};
use crate::protocol::{
    CallList, CallResult, FailureKind, Request, Response, RunBatch, SHORT_BATCH_CALLS, ScriptFailure,
    WorkerLimits, WorkerStats, encode_run,
};
use crate::triple::{PluginTriple, ScriptKind};
pub(crate) use pipeline::lock;
use process::{RecvError, WorkerProcess};

/// How often a worker reports progress inside a batch.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(5);
/// How long a caller polls for the answer to a short batch ([`SHORT_BATCH_CALLS`]) before
/// it parks its thread: such an answer comes within tens of microseconds, less than the
/// wake-up a parked thread costs on a busy machine.
const ANSWER_SPIN: Duration = Duration::from_micros(60);
/// Compiling evaluates top-level code, bounded by the call timeout; parsing a large module
/// takes longer than a call, so compile requests get this much on top.
const COMPILE_SLACK: Duration = Duration::from_secs(2);

pub struct Pool {
    binary: PathBuf,
    limits: WorkerLimits,
    idle: Mutex<Vec<WorkerProcess>>,
    permits: Semaphore,
    /// No frame for this long means the worker is stuck.
    stall_deadline: Duration,
    call_timeout_ms: u64,
    memory_limit: usize,
    /// How long to poll for the answer to a short batch; zero when polling is off.
    short_answer_spin: Duration,
}

/// What a compile request learned.
pub struct Compiled {
    pub bytecode: Arc<Vec<u8>>,
    pub exports: Vec<String>,
}

/// One function of one script revision with its code: what every piece of a batch runs.
pub struct Job<'a> {
    pub triple: &'a PluginTriple,
    pub file: &'a str,
    pub code_hash: &'a str,
    pub bytecode: &'a [u8],
    pub function: &'a str,
}

impl Job<'_> {
    fn request(&self, calls: CallList, report_each: bool) -> RunBatch {
        RunBatch {
            triple: self.triple.clone(),
            file: self.file.to_owned(),
            code_hash: self.code_hash.to_owned(),
            bytecode: None,
            function: self.function.to_owned(),
            calls,
            report_each,
        }
    }

    /// A batch frame that carries the bytecode, for a worker that was not sent it yet.
    fn frame_with_code(&self, calls: CallList, report_each: bool) -> (io::Result<Vec<u8>>, CallList) {
        let mut request = self.request(calls, report_each);
        request.bytecode = Some(hex::encode(self.bytecode));
        (encode_run(&request), request.calls)
    }
}

/// One call's result in the wire form, or why it failed.
pub type CallOutcome = Result<Vec<u8>, Error>;

impl Pool {
    pub fn new(config: &HostConfig) -> Result<Self, Error> {
        let binary = worker_binary(config)?;
        let limits = WorkerLimits {
            call_timeout_ms: config.call_timeout.as_millis() as u64,
            memory_limit_bytes: config.memory_limit_bytes,
            stack_limit_bytes: config.stack_limit_bytes,
            runtimes: config.runtimes_per_worker,
            progress_interval_ms: PROGRESS_INTERVAL.as_millis() as u64,
            poll_after_short_batches: config.poll_short_batches,
        };
        Ok(Self {
            binary,
            stall_deadline: config.call_timeout + PROGRESS_INTERVAL + config.kill_slack,
            call_timeout_ms: limits.call_timeout_ms,
            memory_limit: limits.memory_limit_bytes,
            short_answer_spin: if config.poll_short_batches { ANSWER_SPIN } else { Duration::ZERO },
            limits,
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(config.worker_count()),
        })
    }

    async fn checkout(&self) -> Result<WorkerProcess, Error> {
        let idle = self.idle.lock().expect("idle list lock").pop();
        match idle {
            Some(worker) => Ok(worker),
            None => {
                metrics::counter!("slipway_plugin_workers_started_total").increment(1);
                WorkerProcess::spawn(&self.binary, &self.limits)
                    .await
                    .map_err(|e| Error::Worker(e.to_string()))
            }
        }
    }

    fn checkin(&self, worker: WorkerProcess) {
        self.idle.lock().expect("idle list lock").push(worker);
    }

    /// Compiles and evaluates a module in a worker; `Err` carries the engine's message.
    pub async fn compile(
        &self,
        kind: ScriptKind,
        file: &str,
        source: &str,
    ) -> Result<Result<Compiled, (String, Option<ScriptLocation>)>, Error> {
        let _permit = self.permits.acquire().await.expect("the semaphore is never closed");
        let mut worker = self.checkout().await?;
        let request = Request::Compile { kind, file: file.to_owned(), source: source.to_owned() };
        worker.send(&request).await.map_err(|e| Error::Worker(e.to_string()))?;
        match worker.recv(self.stall_deadline + COMPILE_SLACK, Duration::ZERO).await {
            Ok(Response::Compiled { bytecode, exports }) => {
                self.checkin(worker);
                let bytecode = hex::decode(bytecode).map_err(|e| Error::Worker(format!("bytecode: {e}")))?;
                Ok(Ok(Compiled { bytecode: Arc::new(bytecode), exports }))
            }
            Ok(Response::CompileFailed { message, location }) => {
                self.checkin(worker);
                Ok(Err((message, location)))
            }
            Ok(other) => {
                worker.kill().await;
                Err(Error::Worker(format!("unexpected answer to compile: {other:?}")))
            }
            Err(RecvError::Stuck) => {
                worker.kill().await;
                Ok(Err((
                    format!("top-level code ran past {} ms and was killed", self.stall_deadline.as_millis()),
                    None,
                )))
            }
            Err(RecvError::Died(message)) => Ok(Err((message, None))),
        }
    }

    /// Runtimes and heap use of every idle worker (busy ones are skipped, not waited for).
    pub async fn stats(&self) -> Result<WorkerStats, Error> {
        let workers: Vec<WorkerProcess> = std::mem::take(&mut *self.idle.lock().expect("idle list lock"));
        let mut total = WorkerStats::default();
        for mut worker in workers {
            worker.send(&Request::Stats).await.map_err(|e| Error::Worker(e.to_string()))?;
            match worker.recv(self.stall_deadline, Duration::ZERO).await {
                Ok(Response::Stats(stats)) => {
                    total.runtimes += stats.runtimes;
                    total.heap_bytes += stats.heap_bytes;
                    self.checkin(worker);
                }
                _ => worker.kill().await,
            }
        }
        Ok(total)
    }

    /// Runs calls on fresh workers with every call reported as soon as it is done: the
    /// path for the calls a worker was on when it was lost, so that a second loss names the
    /// call that caused it, which alone fails. The caller holds a permit.
    async fn run_careful(&self, job: &Job<'_>, calls: CallList) -> Result<Vec<CallOutcome>, Error> {
        let mut request = job.request(calls, true);
        let mut results: Vec<CallOutcome> = Vec::with_capacity(request.calls.len());
        while !request.calls.is_empty() {
            let mut worker = self.checkout().await?;
            let done_before = results.len();
            let outcome = self.drive(&mut worker, job, &mut request, &mut results).await;
            let answered = results.len() - done_before;
            let Err(stop) = outcome else {
                self.checkin(worker);
                break;
            };
            worker.kill().await;
            metrics::counter!("slipway_plugin_workers_replaced_total").increment(1);
            request.calls.drain_front(answered + 1);
            let error = self.loss_error(job, stop);
            tracing::warn!(triple = %job.triple, function = job.function, %error, "plugin worker replaced");
            results.push(Err(error));
        }
        Ok(results)
    }

    /// How long to poll for the answer to `calls` calls before parking.
    fn answer_spin(&self, calls: usize) -> Duration {
        if calls <= SHORT_BATCH_CALLS { self.short_answer_spin } else { Duration::ZERO }
    }

    fn loss_error(&self, job: &Job<'_>, stop: RecvError) -> Error {
        let (triple, function) = (job.triple.clone(), job.function.to_owned());
        match stop {
            RecvError::Stuck => {
                Error::Timeout { triple, function, limit_ms: self.call_timeout_ms, location: None }
            }
            RecvError::Died(message) => Error::WorkerDied { triple, function, message },
        }
    }

    /// Sends one batch and collects answers until `Done` or until the worker fails.
    async fn drive(
        &self,
        worker: &mut WorkerProcess,
        job: &Job<'_>,
        request: &mut RunBatch,
        results: &mut Vec<CallOutcome>,
    ) -> Result<(), RecvError> {
        let died = |e: io::Error| RecvError::Died(e.to_string());
        let frame = if worker.sent_code.contains(job.code_hash) {
            encode_run(request)
        } else {
            let (frame, calls) = job.frame_with_code(std::mem::take(&mut request.calls), request.report_each);
            request.calls = calls;
            worker.sent_code.insert(job.code_hash.to_owned());
            frame
        };
        worker.send_encoded(&frame.map_err(died)?).await.map_err(died)?;
        loop {
            match worker.recv(self.stall_deadline, self.answer_spin(request.calls.len())).await? {
                Response::NeedCode => {
                    let (frame, calls) =
                        job.frame_with_code(std::mem::take(&mut request.calls), request.report_each);
                    request.calls = calls;
                    worker.send_encoded(&frame.map_err(died)?).await.map_err(died)?;
                }
                Response::Progress { results: chunk } => self.collect(job, chunk, results),
                Response::Done { results: chunk } => {
                    self.collect(job, chunk, results);
                    return Ok(());
                }
                other => return Err(RecvError::Died(format!("unexpected answer to a batch: {other:?}"))),
            }
        }
    }

    fn collect(&self, job: &Job<'_>, chunk: Vec<CallResult>, results: &mut Vec<CallOutcome>) {
        for CallResult { outcome, logs } in chunk {
            for line in logs {
                let triple = job.triple;
                match line.level.as_str() {
                    "error" => {
                        tracing::error!(target: "slipway_plugins::script", %triple, "{}", line.message)
                    }
                    "warn" => tracing::warn!(target: "slipway_plugins::script", %triple, "{}", line.message),
                    "debug" => {
                        tracing::debug!(target: "slipway_plugins::script", %triple, "{}", line.message)
                    }
                    _ => tracing::info!(target: "slipway_plugins::script", %triple, "{}", line.message),
                }
            }
            results.push(outcome.map_err(|f| self.script_error(job.triple, job.function, f)));
        }
    }

    fn script_error(&self, triple: &PluginTriple, function: &str, failure: ScriptFailure) -> Error {
        let (triple, function, location) = (triple.clone(), function.to_owned(), failure.location);
        match failure.kind {
            FailureKind::Timeout => {
                Error::Timeout { triple, function, limit_ms: self.call_timeout_ms, location }
            }
            FailureKind::MemoryLimit => {
                Error::MemoryLimit { triple, function, limit_bytes: self.memory_limit, location }
            }
            FailureKind::StackOverflow => Error::StackOverflow { triple, function, location },
            FailureKind::Thrown => Error::Thrown { triple, function, message: failure.message, location },
            FailureKind::Unconvertible => Error::WrongShape { triple, function, message: failure.message },
            FailureKind::UnknownFunction => Error::UnknownFunction { triple, function },
            FailureKind::ModuleLoad => Error::ModuleLoad { triple, message: failure.message, location },
        }
    }
}

/// The executable workers run: the one configured, else this process's own executable,
/// which becomes a worker through [`crate::worker::SELF_HOST_HOOK`].
fn worker_binary(config: &HostConfig) -> Result<PathBuf, Error> {
    if let Some(path) = &config.worker_binary {
        return Ok(path.clone());
    }
    #[cfg(target_os = "linux")]
    {
        // Referencing the hook keeps the linker from dropping it.
        std::hint::black_box(&crate::worker::SELF_HOST_HOOK);
        std::env::current_exe().map_err(|e| Error::Worker(format!("cannot find the current executable: {e}")))
    }
    #[cfg(not(target_os = "linux"))]
    Err(Error::Worker("set plugins.worker_binary to the slipway-plugin-worker executable".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polling_for_short_batches_follows_the_config_on_both_sides() {
        for poll in [true, false] {
            let pool = Pool::new(&HostConfig { poll_short_batches: poll, ..HostConfig::default() }).unwrap();
            assert_eq!(pool.limits.poll_after_short_batches, poll, "what the workers are told");
            let spin = if poll { ANSWER_SPIN } else { Duration::ZERO };
            assert_eq!(pool.answer_spin(SHORT_BATCH_CALLS), spin);
            assert_eq!(
                pool.answer_spin(SHORT_BATCH_CALLS + 1),
                Duration::ZERO,
                "a long batch is never polled for"
            );
        }
    }
}
