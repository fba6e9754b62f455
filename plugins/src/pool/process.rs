//! One worker process seen from the host: spawn, send a frame, read a frame within a
//! deadline, kill.

use std::io;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use crate::protocol::{
    Request, Response, WorkerLimits, decode_response, encode_json, encode_request, frame_len,
};

pub struct WorkerProcess {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    buf: Vec<u8>,
}

/// Why no answer came.
#[derive(Debug)]
pub enum RecvError {
    /// Nothing within the deadline: the worker is stuck in something the engine cannot interrupt.
    Stuck,
    /// The process ended or broke the protocol (an engine abort, the OS killing it).
    Died(String),
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
        let stdout = BufReader::with_capacity(64 * 1024, child.stdout.take().expect("stdout is piped"));
        let mut worker = Self { child, stdin, stdout, buf: Vec::with_capacity(4096) };
        worker.send_encoded(&encode_json(limits)?).await?;
        Ok(worker)
    }

    pub async fn send(&mut self, request: &Request) -> io::Result<()> {
        self.send_encoded(&encode_request(request)?).await
    }

    /// Sends a frame made by [`encode_request`].
    pub async fn send_encoded(&mut self, frame: &[u8]) -> io::Result<()> {
        self.stdin.write_all(frame).await?;
        self.stdin.flush().await
    }

    pub async fn recv(&mut self, deadline: Duration) -> Result<Response, RecvError> {
        match tokio::time::timeout(deadline, self.read_frame()).await {
            Err(_) => Err(RecvError::Stuck),
            Ok(Err(e)) => Err(RecvError::Died(self.describe_death(e).await)),
            Ok(Ok(response)) => Ok(response),
        }
    }

    async fn read_frame(&mut self) -> io::Result<Response> {
        let mut prefix = [0u8; 4];
        self.stdout.read_exact(&mut prefix).await?;
        self.buf.resize(frame_len(prefix)?, 0);
        self.stdout.read_exact(&mut self.buf).await?;
        decode_response(&self.buf)
    }

    /// Names how the process ended (signal or exit code) when it is gone.
    async fn describe_death(&mut self, error: io::Error) -> String {
        let status = tokio::time::timeout(Duration::from_millis(500), self.child.wait()).await;
        match status {
            Ok(Ok(status)) => format!("worker process ended ({status})"),
            _ => format!("worker process stopped answering: {error}"),
        }
    }

    /// SIGKILL: the worker gets no chance to finish the call it is stuck in.
    pub async fn kill(mut self) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(2), self.child.wait()).await;
    }
}
