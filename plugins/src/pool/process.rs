//! One worker process seen from the host: spawn, send a frame, read a frame within a
//! deadline, kill.
//!
//! The answers are read from a non-blocking pipe by this code, not through the async
//! reactor, so that a caller expecting an answer within microseconds can poll for it
//! briefly instead of parking its thread and paying a wake-up; past that it waits on the
//! reactor as any other read.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Read};
use std::ops::Range;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::io::unix::AsyncFd;
use tokio::process::{Child, ChildStdin, Command};

use crate::protocol::{
    Request, Response, WorkerLimits, decode_response, encode_json, encode_request, frame_len,
};

/// Bytes asked of the pipe per read.
const READ_CHUNK: usize = 64 * 1024;
/// Capacity asked for the worker's input pipe (Linux's default is 64 KiB, and 1 MiB the
/// most an unprivileged process may set): the pieces a batch keeps in flight then fit in
/// it, so the host writes each piece in one go instead of waiting for the worker to drain
/// the pipe part by part (a piece of 64 Deployment checks is about 190 KB).
const INPUT_PIPE_BYTES: libc::c_int = 1 << 20;

pub struct WorkerProcess {
    child: Child,
    stdin: ChildStdin,
    answers: Answers,
    /// Code hashes whose bytecode this worker was sent. A hint: the worker may have dropped
    /// some since, and then asks for it again.
    pub sent_code: HashSet<String>,
}

/// Why no answer came.
#[derive(Debug)]
pub enum RecvError {
    /// Nothing within the deadline: the worker is stuck in something the engine cannot interrupt.
    Stuck,
    /// The process ended or broke the protocol (an engine abort, the OS killing it).
    Died(String),
}

/// Why no answer came, before the process's end is looked into.
#[derive(Debug)]
pub enum Lost {
    Stuck,
    Broken(io::Error),
}

/// The worker's output: frames read from a non-blocking pipe.
pub struct Answers {
    pipe: AsyncFd<File>,
    buf: Vec<u8>,
    /// `buf[read..filled]` holds bytes read from the pipe and not yet taken as frames.
    read: usize,
    filled: usize,
}

impl WorkerProcess {
    pub async fn spawn(binary: &Path, limits: &WorkerLimits) -> io::Result<Self> {
        let mut child = Command::new(binary)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .env_clear()
            .env(crate::worker::SELF_HOST_ENV, "1")
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot start {}: {e}", binary.display())))?;
        let stdin = child.stdin.take().expect("stdin is piped");
        widen_pipe(&stdin);
        let stdout = child.stdout.take().expect("stdout is piped").into_owned_fd()?;
        let mut worker = Self { child, stdin, answers: Answers::new(stdout)?, sent_code: HashSet::new() };
        worker.send_encoded(&encode_json(limits)?).await?;
        Ok(worker)
    }

    pub async fn send(&mut self, request: &Request) -> io::Result<()> {
        self.send_encoded(&encode_request(request)?).await
    }

    /// Sends a frame made by [`encode_request`].
    pub async fn send_encoded(&mut self, frame: &[u8]) -> io::Result<()> {
        send(&mut self.stdin, frame).await
    }

    /// The next answer; `spin` is how long to poll for it before waiting on the reactor.
    pub async fn recv(&mut self, deadline: Duration, spin: Duration) -> Result<Response, RecvError> {
        match self.answers.recv(deadline, spin).await {
            Ok(response) => Ok(response),
            Err(lost) => Err(self.explain(lost).await),
        }
    }

    /// The input and the output apart, for sending while answers are read.
    pub fn pipes(&mut self) -> (&mut ChildStdin, &mut Answers) {
        (&mut self.stdin, &mut self.answers)
    }

    /// Names how the process ended (signal or exit code) when it is gone.
    pub async fn explain(&mut self, lost: Lost) -> RecvError {
        let error = match lost {
            Lost::Stuck => return RecvError::Stuck,
            Lost::Broken(error) => error,
        };
        let status = tokio::time::timeout(Duration::from_millis(500), self.child.wait()).await;
        RecvError::Died(match status {
            Ok(Ok(status)) => format!("worker process ended ({status})"),
            _ => format!("worker process stopped answering: {error}"),
        })
    }

    /// SIGKILL: the worker gets no chance to finish the call it is stuck in.
    pub async fn kill(mut self) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(2), self.child.wait()).await;
    }
}

/// Asks for [`INPUT_PIPE_BYTES`] of capacity; a smaller pipe only costs more wake-ups.
fn widen_pipe(pipe: &impl AsRawFd) {
    #[cfg(target_os = "linux")]
    // SAFETY: fcntl on a descriptor the caller holds open, with no pointers involved.
    if unsafe { libc::fcntl(pipe.as_raw_fd(), libc::F_SETPIPE_SZ, INPUT_PIPE_BYTES) } < 0 {
        tracing::debug!(error = %io::Error::last_os_error(), "the worker's input pipe keeps its default size");
    }
}

/// Writes a whole frame to a worker's input.
pub async fn send(stdin: &mut ChildStdin, frame: &[u8]) -> io::Result<()> {
    stdin.write_all(frame).await?;
    stdin.flush().await
}

impl Answers {
    fn new(pipe: OwnedFd) -> io::Result<Self> {
        // The pipe is this process's alone, so its flags concern no one else.
        // SAFETY: fcntl on a descriptor this function owns, with no pointers involved.
        let flags = unsafe { libc::fcntl(pipe.as_raw_fd(), libc::F_GETFL) };
        if flags < 0 || unsafe { libc::fcntl(pipe.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0
        {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the `File` owns the descriptor and is neither replaced nor closed while registered.
        let pipe = unsafe { AsyncFd::register(File::from(pipe))? };
        Ok(Self { pipe, buf: vec![0; READ_CHUNK], read: 0, filled: 0 })
    }

    /// The next frame, polled for up to `spin` before waiting on the reactor, all within `deadline`.
    pub async fn recv(&mut self, deadline: Duration, spin: Duration) -> Result<Response, Lost> {
        let spin_until = Instant::now() + spin;
        let frame = async {
            loop {
                if let Some(frame) = self.buffered_frame()? {
                    return decode_response(&self.buf[frame]);
                }
                match self.fill() {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        if Instant::now() < spin_until {
                            std::hint::spin_loop();
                            continue;
                        }
                        // Read directly, the pipe's readiness may be stale: clear it and read
                        // again before waiting, so no edge is missed.
                        self.pipe.readable().await?.clear_ready();
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        match tokio::time::timeout(deadline, frame).await {
            Err(_) => Err(Lost::Stuck),
            Ok(Err(e)) => Err(Lost::Broken(e)),
            Ok(Ok(response)) => Ok(response),
        }
    }

    /// A whole frame's body when the buffer holds one.
    fn buffered_frame(&mut self) -> io::Result<Option<Range<usize>>> {
        let held = &self.buf[self.read..self.filled];
        let Some(prefix) = held.first_chunk::<4>() else { return Ok(None) };
        let len = frame_len(*prefix)?;
        if held.len() < 4 + len {
            if self.buf.len() < 4 + len + READ_CHUNK {
                self.buf.resize(4 + len + READ_CHUNK, 0);
            }
            return Ok(None);
        }
        let body = self.read + 4..self.read + 4 + len;
        self.read = body.end;
        Ok(Some(body))
    }

    /// One read from the pipe into the buffer; `WouldBlock` when it is empty.
    fn fill(&mut self) -> io::Result<()> {
        if self.read > 0 {
            self.buf.copy_within(self.read..self.filled, 0);
            self.filled -= self.read;
            self.read = 0;
        }
        if self.buf.len() - self.filled < READ_CHUNK / 4 {
            self.buf.resize(self.filled + READ_CHUNK, 0);
        }
        match self.pipe.get_ref().read(&mut self.buf[self.filled..])? {
            0 => Err(io::ErrorKind::UnexpectedEof.into()),
            n => {
                self.filled += n;
                Ok(())
            }
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn a_widened_pipe_holds_the_pieces_in_flight() {
        let (_reader, writer) = io::pipe().unwrap();
        // SAFETY: F_GETPIPE_SZ on a pipe this test holds open.
        let size = || unsafe { libc::fcntl(writer.as_raw_fd(), libc::F_GETPIPE_SZ) };
        assert_eq!(size(), 64 * 1024, "Linux's default");
        widen_pipe(&writer);
        let limit: libc::c_int =
            std::fs::read_to_string("/proc/sys/fs/pipe-max-size").unwrap().trim().parse().unwrap();
        assert!(size() >= INPUT_PIPE_BYTES.min(limit), "{} bytes", size());
    }
}
