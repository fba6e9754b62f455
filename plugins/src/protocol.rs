//! The messages between the host and a worker process, and their framing on the pipes:
//! each frame is a 4-byte little-endian length followed by that many bytes of JSON.
//!
//! A worker answers every request with frames in order; a batch may be answered by several
//! `Progress` frames before its `Done`, so the host can tell a slow batch from a stuck call.

use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::error::ScriptLocation;
use crate::triple::{PluginTriple, ScriptKind};

/// Largest frame either side accepts; a bigger one means a broken peer.
pub const MAX_FRAME_BYTES: usize = 256 * 1024 * 1024;

/// Limits the host imposes on every runtime of a worker, sent once at start.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerLimits {
    pub call_timeout_ms: u64,
    pub memory_limit_bytes: usize,
    pub stack_limit_bytes: usize,
    pub runtimes: usize,
    /// A worker reports finished calls at least this often while a batch runs.
    pub progress_interval_ms: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub enum Request {
    /// Compile a module, evaluate it in a fresh runtime and list its exported functions.
    Compile { kind: ScriptKind, file: String, source: String },
    /// Call one function of one script once per entry of `calls`.
    Run(RunBatch),
    /// Report the live runtimes and their heap use.
    Stats,
}

/// [`Request`] by reference, so the host can resend a batch without copying it.
#[derive(Debug, Serialize)]
pub enum RequestRef<'a> {
    Run(&'a RunBatch),
}

#[derive(Debug, Serialize, Deserialize)]
pub struct RunBatch {
    pub triple: PluginTriple,
    pub file: String,
    /// Content hash of the module source; a worker keeps bytecode by it.
    pub code_hash: String,
    /// The bytecode, hex encoded: sent only after the worker asked for it.
    pub bytecode: Option<String>,
    pub function: String,
    /// Each call's arguments as one JSON array.
    pub calls: Vec<Box<RawValue>>,
    /// Report every call as soon as it finishes: used when the host must find which call
    /// of a batch brings its worker down.
    #[serde(default)]
    pub report_each: bool,
}

#[derive(Debug, Serialize, Deserialize)]
pub enum Response {
    Compiled {
        bytecode: String,
        exports: Vec<String>,
    },
    CompileFailed {
        message: String,
        location: Option<ScriptLocation>,
    },
    /// The worker does not hold the bytecode for `code_hash`: send the batch again with it.
    NeedCode,
    /// Results of the next calls of the running batch, in order.
    Progress {
        results: Vec<CallResult>,
    },
    /// The last results of the batch.
    Done {
        results: Vec<CallResult>,
    },
    Stats(WorkerStats),
}

/// What one worker holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkerStats {
    pub runtimes: usize,
    /// Heap bytes the QuickJS runtimes use, summed.
    pub heap_bytes: i64,
}

/// One call's outcome (the returned value as JSON text), with what the script logged
/// through `ctx.log`.
#[derive(Debug, Serialize, Deserialize)]
pub struct CallResult {
    pub outcome: Result<Box<RawValue>, ScriptFailure>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub logs: Vec<LogLine>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogLine {
    pub level: String,
    pub message: String,
}

/// Why a call failed inside the worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScriptFailure {
    pub kind: FailureKind,
    pub message: String,
    pub location: Option<ScriptLocation>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FailureKind {
    Timeout,
    MemoryLimit,
    StackOverflow,
    Thrown,
    /// The returned value cannot be turned into JSON (cycle, too deep, throwing getter…).
    Unconvertible,
    UnknownFunction,
    ModuleLoad,
}

/// A message as one frame: length prefix and JSON.
pub fn encode_frame<T: Serialize>(message: &T) -> io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(256);
    buf.extend_from_slice(&[0; 4]);
    serde_json::to_writer(&mut buf, message)?;
    let len = u32::try_from(buf.len() - 4).map_err(|_| io::Error::other("frame too large"))?;
    buf[..4].copy_from_slice(&len.to_le_bytes());
    Ok(buf)
}

pub fn write_frame<T: Serialize>(out: &mut impl Write, message: &T) -> io::Result<()> {
    out.write_all(&encode_frame(message)?)?;
    out.flush()
}

/// Reads one frame; `Ok(None)` on a clean end of stream.
pub fn read_frame<T: for<'de> Deserialize<'de>>(input: &mut impl Read) -> io::Result<Option<T>> {
    let mut len = [0u8; 4];
    match input.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME_BYTES {
        return Err(io::Error::other(format!("frame of {len} bytes exceeds the limit")));
    }
    let mut buf = vec![0; len];
    input.read_exact(&mut buf)?;
    serde_json::from_slice(&buf).map(Some).map_err(io::Error::other)
}
