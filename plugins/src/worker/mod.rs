//! The worker process: reads requests from stdin, runs them in per-script sandboxes and
//! writes the answers to stdout. The first frame it reads is its [`WorkerLimits`].
//!
//! Any executable that links this crate can be a worker: the host starts its own
//! executable again with [`SELF_HOST_ENV`] set, and [`SELF_HOST_HOOK`] turns that process
//! into a worker before `main` runs. So the `slipway` binary, test binaries and benchmarks
//! need no second binary beside them; `slipway-plugin-worker` exists for deployments that
//! configure a separate worker binary.
//!
//! A worker is disposable: when a script defeats the sandbox (an uninterruptible builtin,
//! an engine abort) the host kills or loses this process and starts another.

mod args;
mod convert;
mod host_ctx;
mod key_names;
mod lazy;
mod sandbox;

use std::collections::HashMap;
use std::io::{self, BufReader, BufWriter, Write};
use std::time::{Duration, Instant};

use crate::protocol::{
    CallResult, FailureKind, Request, Response, RunBatch, SHORT_BATCH_CALLS, WorkerLimits, WorkerStats,
    decode_json, decode_request, read_frame, write_response,
};
use crate::triple::PluginTriple;
use sandbox::ScriptRuntime;

/// Bytecode kept per worker; past this the oldest half is dropped (the host resends).
const MAX_BYTECODES: usize = 512;

/// Set (to any value) in a worker's environment by the host that starts it.
pub const SELF_HOST_ENV: &str = "SLIPWAY_INTERNAL_PLUGIN_WORKER";

/// Runs before `main` in every process linking this crate (an ELF `.init_array` entry) and
/// serves as a worker, never returning, when the host started this process as one.
#[cfg(target_os = "linux")]
#[used]
#[unsafe(link_section = ".init_array")]
pub static SELF_HOST_HOOK: extern "C" fn() = become_worker_if_asked;

#[cfg(target_os = "linux")]
extern "C" fn become_worker_if_asked() {
    if std::env::var_os(SELF_HOST_ENV).is_none() {
        return;
    }
    let code = match main() {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("slipway plugin worker: {e}");
            1
        }
    };
    std::process::exit(code);
}

/// The entry point of a worker process (`slipway-plugin-worker`, or any executable linking
/// this crate when started with [`SELF_HOST_ENV`]).
pub fn main() -> io::Result<()> {
    let mut input = BufReader::new(io::stdin().lock());
    let mut output = BufWriter::new(io::stdout().lock());
    let mut frame = Vec::with_capacity(64 * 1024);
    if read_frame(&mut input, &mut frame)?.is_none() {
        return Ok(());
    }
    let mut worker = Worker::new(decode_json::<WorkerLimits>(&frame)?);
    let mut next_soon = true;
    while next_frame(&mut input, &mut frame, next_soon)?.is_some() {
        let request = decode_request(&frame)?;
        next_soon = worker.limits.poll_after_short_batches
            && matches!(&request, Request::Run(batch) if batch.calls.len() <= SHORT_BATCH_CALLS);
        match request {
            Request::Compile { kind, file, source } => {
                let response = match ScriptRuntime::compile(&worker.limits, kind, &file, &source) {
                    Ok(compiled) => Response::Compiled {
                        bytecode: hex::encode(compiled.bytecode),
                        exports: compiled.exports,
                    },
                    Err(failure) => {
                        Response::CompileFailed { message: failure.message, location: failure.location }
                    }
                };
                write_response(&mut output, &response)?;
            }
            Request::Run(batch) => worker.run(batch, &mut output)?,
            Request::Stats => {
                let stats = WorkerStats {
                    runtimes: worker.runtimes.len(),
                    heap_bytes: worker.runtimes.values().map(|(r, _)| r.memory_used()).sum(),
                };
                write_response(&mut output, &Response::Stats(stats))?;
            }
        }
    }
    Ok(())
}

/// How long a worker polls its input for the next request after a short batch before it
/// blocks: a caller that sends one call after another then finds the worker awake instead
/// of paying a process wake-up per call, and an idle worker costs this much CPU once.
const INPUT_SPIN: Duration = Duration::from_micros(100);

/// Reads the next request, polling briefly for it first when none is buffered and one is
/// expected soon.
fn next_frame(
    input: &mut BufReader<io::StdinLock<'_>>,
    frame: &mut Vec<u8>,
    soon: bool,
) -> io::Result<Option<()>> {
    if soon && input.buffer().is_empty() {
        let until = Instant::now() + INPUT_SPIN;
        let mut stdin = libc::pollfd { fd: 0, events: libc::POLLIN, revents: 0 };
        // SAFETY: one pollfd that outlives the call; a zero timeout makes poll only report.
        while unsafe { libc::poll(&mut stdin, 1, 0) } == 0 && Instant::now() < until {
            std::hint::spin_loop();
        }
    }
    read_frame(input, frame)
}

struct Worker {
    limits: WorkerLimits,
    bytecode: HashMap<(String, String), Vec<u8>>,
    bytecode_order: Vec<(String, String)>,
    runtimes: HashMap<(PluginTriple, String), (ScriptRuntime, u64)>,
    tick: u64,
}

impl Worker {
    fn new(limits: WorkerLimits) -> Self {
        Self {
            limits,
            bytecode: HashMap::new(),
            bytecode_order: Vec::new(),
            runtimes: HashMap::new(),
            tick: 0,
        }
    }

    fn run(&mut self, batch: RunBatch, output: &mut impl Write) -> io::Result<()> {
        let code_key = (batch.file.clone(), batch.code_hash.clone());
        if let Some(hex_code) = &batch.bytecode {
            let Ok(code) = hex::decode(hex_code) else {
                return Err(io::Error::other("bytecode is not hex"));
            };
            self.remember_bytecode(code_key.clone(), code);
        }
        let runtime_key = (batch.triple.clone(), batch.code_hash.clone());
        let progress_every = Duration::from_millis(self.limits.progress_interval_ms);
        let mut pending = Vec::new();
        let mut last_sent = Instant::now();
        // Taken out of the map for the batch, so calls do not look it up one by one.
        let mut runtime = self.runtimes.remove(&runtime_key).map(|(runtime, _)| runtime);
        if let Some(runtime) = &runtime {
            runtime.start_batch();
        }
        for args in &batch.calls {
            if runtime.is_none() {
                let Some(code) = self.bytecode.get(&code_key) else {
                    // Only possible before the first call: the host resends with the code.
                    return write_response(output, &Response::NeedCode);
                };
                match ScriptRuntime::load(&self.limits, &batch.triple, &batch.file, code) {
                    Ok(loaded) => runtime = Some(loaded),
                    Err(failure) => {
                        pending.push(CallResult { outcome: Err(failure), logs: Vec::new() });
                        continue;
                    }
                }
            }
            let (outcome, logs) = runtime.as_ref().expect("loaded above").call(&batch.function, args);
            let spoiled = matches!(
                &outcome,
                Err(f) if matches!(f.kind, FailureKind::Timeout | FailureKind::MemoryLimit | FailureKind::StackOverflow)
            );
            if spoiled {
                // A runtime that hit a limit may hold half-updated state: start the next call afresh.
                runtime = None;
            }
            pending.push(CallResult { outcome, logs });
            if batch.report_each || last_sent.elapsed() >= progress_every {
                write_response(output, &Response::Progress { results: std::mem::take(&mut pending) })?;
                last_sent = Instant::now();
            }
        }
        if let Some(runtime) = runtime {
            self.tick += 1;
            self.insert_runtime(runtime_key, runtime);
        }
        write_response(output, &Response::Done { results: pending })
    }

    fn remember_bytecode(&mut self, key: (String, String), code: Vec<u8>) {
        if self.bytecode.len() >= MAX_BYTECODES {
            for old in self.bytecode_order.drain(..MAX_BYTECODES / 2) {
                self.bytecode.remove(&old);
            }
        }
        if self.bytecode.insert(key.clone(), code).is_none() {
            self.bytecode_order.push(key);
        }
    }

    fn insert_runtime(&mut self, key: (PluginTriple, String), runtime: ScriptRuntime) {
        if self.runtimes.len() >= self.limits.runtimes.max(1) {
            let oldest = self.runtimes.iter().min_by_key(|(_, (_, used))| *used).map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                self.runtimes.remove(&oldest);
            }
        }
        self.runtimes.insert(key, (runtime, self.tick));
    }
}
