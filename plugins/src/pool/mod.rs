//! The pool of worker processes and the batch protocol with them.
//!
//! A batch is many calls of one function of one script. The host enforces the time limit
//! from outside: a worker reports finished calls at least every few milliseconds, so when
//! no frame comes within the call timeout plus slack, the call it is on has defeated the
//! interrupt handler. That worker is killed, the call fails with `Timeout`, and the rest of
//! the batch runs on a fresh worker. A worker that dies fails only the call it was on.

mod process;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::config::HostConfig;
use crate::error::{Error, ScriptLocation};
use crate::protocol::{
    CallResult, FailureKind, Request, Response, RunBatch, ScriptFailure, WorkerLimits, WorkerStats,
    encode_run,
};
use crate::triple::{PluginTriple, ScriptKind};
use process::{RecvError, WorkerProcess};

/// How often a worker reports progress inside a batch.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(5);
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
}

/// What a compile request learned.
pub struct Compiled {
    pub bytecode: Arc<Vec<u8>>,
    pub exports: Vec<String>,
}

/// One batch: a script, its code and the calls to make.
pub struct Batch<'a> {
    pub triple: &'a PluginTriple,
    pub file: &'a str,
    pub code_hash: &'a str,
    pub bytecode: &'a [u8],
    pub function: &'a str,
    /// Each call's arguments as one array in the wire form.
    pub calls: Vec<Vec<u8>>,
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
        };
        Ok(Self {
            binary,
            stall_deadline: config.call_timeout + PROGRESS_INTERVAL + config.kill_slack,
            call_timeout_ms: limits.call_timeout_ms,
            memory_limit: limits.memory_limit_bytes,
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
        match worker.recv(self.stall_deadline + COMPILE_SLACK).await {
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
            match worker.recv(self.stall_deadline).await {
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

    /// Runs every call of the batch; the result list has one entry per call, in order.
    pub async fn run(&self, batch: Batch<'_>) -> Result<Vec<CallOutcome>, Error> {
        let total = batch.calls.len();
        let mut request = RunBatch {
            triple: batch.triple.clone(),
            file: batch.file.to_owned(),
            code_hash: batch.code_hash.to_owned(),
            bytecode: None,
            function: batch.function.to_owned(),
            calls: batch.calls,
            report_each: false,
        };
        // Encoded before waiting for a worker, so encoding overlaps the batches running now.
        let encode = |request: &RunBatch| encode_run(request).map_err(|e| Error::Worker(e.to_string()));
        let mut frame = Some(encode(&request)?);
        let _permit = self.permits.acquire().await.expect("the semaphore is never closed");
        let mut results: Vec<CallOutcome> = Vec::with_capacity(total);
        while !request.calls.is_empty() {
            let mut worker = self.checkout().await?;
            let encoded = match frame.take() {
                Some(frame) => frame,
                None => encode(&request)?,
            };
            let done_before = results.len();
            let outcome = self.drive(&mut worker, &mut request, &encoded, batch.bytecode, &mut results).await;
            let answered = results.len() - done_before;
            let Err(stop) = outcome else {
                self.checkin(worker);
                break;
            };
            worker.kill().await;
            metrics::counter!("slipway_plugin_workers_replaced_total").increment(1);
            request.calls.drain(..answered);
            // After a worker is lost with several calls unanswered, the rest is resent with
            // every call reported, so the next loss names exactly the call that caused it.
            if request.calls.len() > 1 && !request.report_each {
                request.report_each = true;
                continue;
            }
            let error = match stop {
                RecvError::Stuck => Error::Timeout {
                    triple: batch.triple.clone(),
                    function: batch.function.to_owned(),
                    limit_ms: self.call_timeout_ms,
                    location: None,
                },
                RecvError::Died(message) => Error::WorkerDied {
                    triple: batch.triple.clone(),
                    function: batch.function.to_owned(),
                    message,
                },
            };
            tracing::warn!(triple = %batch.triple, function = batch.function, %error, "plugin worker replaced");
            results.push(Err(error));
            request.calls.drain(..1);
            request.report_each = false;
        }
        Ok(results)
    }

    /// Sends one batch and collects answers until `Done` or until the worker fails.
    async fn drive(
        &self,
        worker: &mut WorkerProcess,
        request: &mut RunBatch,
        frame: &[u8],
        bytecode: &[u8],
        results: &mut Vec<CallOutcome>,
    ) -> Result<(), RecvError> {
        let died = |e: std::io::Error| RecvError::Died(e.to_string());
        worker.send_encoded(frame).await.map_err(died)?;
        loop {
            match worker.recv(self.stall_deadline).await? {
                Response::NeedCode => {
                    request.bytecode = Some(hex::encode(bytecode));
                    let sent = match encode_run(request) {
                        Ok(frame) => worker.send_encoded(&frame).await,
                        Err(e) => Err(e),
                    };
                    request.bytecode = None;
                    sent.map_err(died)?;
                }
                Response::Progress { results: chunk } => self.collect(request, chunk, results),
                Response::Done { results: chunk } => {
                    self.collect(request, chunk, results);
                    return Ok(());
                }
                other => return Err(RecvError::Died(format!("unexpected answer to a batch: {other:?}"))),
            }
        }
    }

    fn collect(&self, request: &RunBatch, chunk: Vec<CallResult>, results: &mut Vec<CallOutcome>) {
        for CallResult { outcome, logs } in chunk {
            for line in logs {
                let triple = &request.triple;
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
            results.push(outcome.map_err(|f| self.script_error(&request.triple, &request.function, f)));
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
