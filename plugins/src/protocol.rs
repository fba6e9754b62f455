//! The messages between the host and a worker process, and their framing on the pipes:
//! each frame is a 4-byte little-endian length, a kind byte and the message. Control
//! messages (limits, compile, stats) are JSON; a batch of calls and its results are binary,
//! with every call's arguments and result in the [`crate::wire`] form, because they are the
//! hot path.
//!
//! A worker answers every request with frames in order; a batch may be answered by several
//! `Progress` frames before its `Done`, so the host can tell a slow batch from a stuck call.

use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};

pub use crate::call_list::CallList;
use crate::error::ScriptLocation;
use crate::triple::{PluginTriple, ScriptKind};
use crate::wire::Reader;

/// A batch of at most this many calls is a caller waiting for its answer within
/// microseconds: the host polls for the answer and the worker for the next request briefly
/// before either blocks (a process wake-up costs more than the call). After larger batches
/// neither polls: the next piece is queued already or the host is busy making it.
pub const SHORT_BATCH_CALLS: usize = 4;

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
    /// Whether the worker polls for the next request after a short batch (the host's
    /// `poll_short_batches`).
    pub poll_after_short_batches: bool,
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

#[derive(Debug, Serialize, Deserialize)]
pub struct RunBatch {
    pub triple: PluginTriple,
    pub file: String,
    /// Content hash of the module source; a worker keeps bytecode by it.
    pub code_hash: String,
    /// The bytecode, hex encoded: sent only after the worker asked for it.
    pub bytecode: Option<String>,
    pub function: String,
    /// Report every call as soon as it finishes: used when the host must find which call
    /// of a batch brings its worker down.
    #[serde(default)]
    pub report_each: bool,
    /// Each call's arguments as one array in the wire form; framed in binary after the rest.
    #[serde(skip)]
    pub calls: CallList,
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
    /// Results of the next calls of the running batch, in order (framed in binary).
    #[serde(skip)]
    Progress {
        results: Vec<CallResult>,
    },
    /// The last results of the batch (framed in binary).
    #[serde(skip)]
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

/// One call's outcome (the returned value in the wire form), with what the script logged
/// through `ctx.log`.
#[derive(Debug)]
pub struct CallResult {
    pub outcome: Result<Vec<u8>, ScriptFailure>,
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

const JSON: u8 = 0;
const RUN: u8 = 1;
const PROGRESS: u8 = 2;
const DONE: u8 = 3;

/// A JSON message as one frame: length prefix, kind and text.
pub fn encode_json<T: Serialize>(message: &T) -> io::Result<Vec<u8>> {
    let mut buf = frame_start(JSON, 256);
    serde_json::to_writer(&mut buf, message)?;
    frame_end(buf)
}

pub fn encode_request(request: &Request) -> io::Result<Vec<u8>> {
    match request {
        Request::Run(batch) => encode_run(batch),
        other => encode_json(other),
    }
}

/// A batch as one frame, without moving it into a [`Request`] (the host resends it).
pub fn encode_run(batch: &RunBatch) -> io::Result<Vec<u8>> {
    encode_run_parts(&serde_json::to_vec(batch)?, &batch.calls)
}

/// A batch as one frame from its header (a [`RunBatch`] as JSON, without the calls) and
/// its calls: the host encodes the header once for all the pieces of a batch.
pub fn encode_run_parts(header: &[u8], calls: &CallList) -> io::Result<Vec<u8>> {
    let mut buf = frame_start(RUN, 4 + header.len() + 4 + calls.as_bytes().len());
    put_bytes(&mut buf, header);
    buf.extend_from_slice(&(calls.len() as u32).to_le_bytes());
    buf.extend_from_slice(calls.as_bytes());
    frame_end(buf)
}

pub fn encode_response(response: &Response) -> io::Result<Vec<u8>> {
    let (kind, results) = match response {
        Response::Progress { results } => (PROGRESS, results),
        Response::Done { results } => (DONE, results),
        other => return encode_json(other),
    };
    let mut buf = frame_start(kind, 4096);
    buf.extend_from_slice(&(results.len() as u32).to_le_bytes());
    for result in results {
        match &result.outcome {
            Ok(value) => {
                buf.push(0);
                put_bytes(&mut buf, value);
            }
            Err(failure) => {
                buf.push(1);
                put_bytes(&mut buf, &serde_json::to_vec(failure)?);
            }
        }
        buf.extend_from_slice(&(result.logs.len() as u32).to_le_bytes());
        for line in &result.logs {
            put_bytes(&mut buf, &serde_json::to_vec(line)?);
        }
    }
    frame_end(buf)
}

/// A JSON message (the worker's limits) from a frame's body.
pub fn decode_json<T: for<'de> Deserialize<'de>>(frame: &[u8]) -> io::Result<T> {
    FrameReader::new(frame)?.json()
}

pub fn decode_request(frame: &[u8]) -> io::Result<Request> {
    let mut reader = FrameReader::new(frame)?;
    match reader.kind {
        JSON => reader.json(),
        RUN => {
            let mut batch: RunBatch = serde_json::from_slice(reader.bytes()?).map_err(io::Error::other)?;
            let count = reader.count()?;
            batch.calls = CallList::read(&mut reader.bytes, count)?;
            Ok(Request::Run(batch))
        }
        other => Err(io::Error::other(format!("unknown request kind {other}"))),
    }
}

pub fn decode_response(frame: &[u8]) -> io::Result<Response> {
    let mut reader = FrameReader::new(frame)?;
    let done = match reader.kind {
        JSON => return reader.json(),
        PROGRESS => false,
        DONE => true,
        other => return Err(io::Error::other(format!("unknown response kind {other}"))),
    };
    let count = reader.count()?;
    let mut results = Vec::with_capacity(count);
    for _ in 0..count {
        let ok = reader.bytes.u8().map_err(io::Error::other)? == 0;
        let body = reader.bytes()?;
        let outcome =
            if ok { Ok(body.to_vec()) } else { Err(serde_json::from_slice(body).map_err(io::Error::other)?) };
        let logs = (0..reader.count()?)
            .map(|_| serde_json::from_slice(reader.bytes()?).map_err(io::Error::other))
            .collect::<io::Result<_>>()?;
        results.push(CallResult { outcome, logs });
    }
    Ok(if done { Response::Done { results } } else { Response::Progress { results } })
}

fn frame_start(kind: u8, body: usize) -> Vec<u8> {
    let mut buf = Vec::with_capacity(5 + body);
    buf.extend_from_slice(&[0; 4]);
    buf.push(kind);
    buf
}

fn frame_end(mut buf: Vec<u8>) -> io::Result<Vec<u8>> {
    let len = u32::try_from(buf.len() - 4).map_err(|_| io::Error::other("frame too large"))?;
    buf[..4].copy_from_slice(&len.to_le_bytes());
    Ok(buf)
}

fn put_bytes(buf: &mut Vec<u8>, bytes: &[u8]) {
    buf.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    buf.extend_from_slice(bytes);
}

/// A frame's body after its length: the kind byte, then length-prefixed parts.
struct FrameReader<'a> {
    kind: u8,
    bytes: Reader<'a>,
}

impl<'a> FrameReader<'a> {
    fn new(frame: &'a [u8]) -> io::Result<Self> {
        let mut bytes = Reader::new(frame);
        let kind = bytes.u8().map_err(io::Error::other)?;
        Ok(Self { kind, bytes })
    }

    fn json<T: for<'de> Deserialize<'de>>(&mut self) -> io::Result<T> {
        let rest = self.bytes.take(self.bytes_left()).map_err(io::Error::other)?;
        serde_json::from_slice(rest).map_err(io::Error::other)
    }

    fn bytes_left(&self) -> usize {
        self.bytes.len()
    }

    fn count(&mut self) -> io::Result<usize> {
        self.bytes.u32().map(|n| n as usize).map_err(io::Error::other)
    }

    fn bytes(&mut self) -> io::Result<&'a [u8]> {
        let len = self.count()?;
        self.bytes.take(len).map_err(io::Error::other)
    }
}

pub fn write_response(out: &mut impl Write, response: &Response) -> io::Result<()> {
    out.write_all(&encode_response(response)?)?;
    out.flush()
}

/// Reads one frame's body; `Ok(None)` on a clean end of stream.
pub fn read_frame(input: &mut impl Read, buf: &mut Vec<u8>) -> io::Result<Option<()>> {
    let mut len = [0u8; 4];
    match input.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = frame_len(len)?;
    buf.resize(len, 0);
    input.read_exact(buf)?;
    Ok(Some(()))
}

/// The length a frame's prefix announces, refused past [`MAX_FRAME_BYTES`].
pub fn frame_len(prefix: [u8; 4]) -> io::Result<usize> {
    let len = u32::from_le_bytes(prefix) as usize;
    if len > MAX_FRAME_BYTES {
        return Err(io::Error::other(format!("frame of {len} bytes exceeds the limit")));
    }
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_and_results_survive_their_frames() {
        let mut batch = RunBatch {
            triple: PluginTriple::new(ScriptKind::Status, "http", 3),
            file: "builtin/status/http.js".into(),
            code_hash: "abc".into(),
            bytecode: None,
            function: "check".into(),
            report_each: true,
            calls: CallList::default(),
        };
        for call in [&[1u8, 2, 3][..], &[]] {
            batch
                .calls
                .push_with(|buf| {
                    buf.extend_from_slice(call);
                    Ok::<_, ()>(())
                })
                .unwrap();
        }
        let frame = encode_request(&Request::Run(batch)).unwrap();
        let Request::Run(back) = decode_request(&frame[4..]).unwrap() else { panic!("not a batch") };
        assert_eq!(
            (back.calls.iter().collect::<Vec<_>>(), back.report_each, back.triple.to_string()),
            (vec![&[1u8, 2, 3][..], &[]], true, "status/http/3".into())
        );
        let failure = ScriptFailure { kind: FailureKind::Timeout, message: "slow".into(), location: None };
        let results = vec![
            CallResult {
                outcome: Ok(vec![0]),
                logs: vec![LogLine { level: "warn".into(), message: "w".into() }],
            },
            CallResult { outcome: Err(failure.clone()), logs: Vec::new() },
        ];
        let frame = encode_response(&Response::Done { results }).unwrap();
        let Response::Done { results } = decode_response(&frame[4..]).unwrap() else { panic!("not done") };
        assert_eq!(results[0].outcome.as_ref().unwrap(), &vec![0]);
        assert_eq!(results[0].logs[0].message, "w");
        assert_eq!(results[1].outcome.as_ref().unwrap_err(), &failure);
        let frame = encode_response(&Response::NeedCode).unwrap();
        assert!(matches!(decode_response(&frame[4..]).unwrap(), Response::NeedCode));
    }
}
