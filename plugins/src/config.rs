//! Limits and sizes of the plugin host, with their defaults written once.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How the host runs scripts. The server fills it from its configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HostConfig {
    /// Worker processes; 0 means one per CPU core.
    pub workers: usize,
    /// A separate worker executable (`slipway-plugin-worker`); unset means the current
    /// executable serves as its own worker (Linux).
    pub worker_binary: Option<PathBuf>,
    /// CPU time one call may take before the engine interrupts it.
    #[serde(with = "millis")]
    pub call_timeout: Duration,
    /// Extra time the host grants past the call timeout before it kills a worker that
    /// did not answer (a builtin the engine cannot interrupt).
    #[serde(with = "millis")]
    pub kill_slack: Duration,
    /// Heap limit of one script runtime.
    pub memory_limit_bytes: usize,
    /// Native stack a script may use.
    pub stack_limit_bytes: usize,
    /// Script runtimes kept alive per worker (least recently used are dropped).
    pub runtimes_per_worker: usize,
    /// Most calls sent to a worker in one message.
    pub max_batch: usize,
    /// Instances whose last verdict is remembered for the unchanged-observation shortcut.
    pub memo_capacity: u64,
    /// Whether the host polls for the answer to a short batch, and a worker for the next
    /// request after one, before blocking (see [`crate::protocol::SHORT_BATCH_CALLS`]). A
    /// poll saves a process wake-up per call while the machine has a core to spare; where
    /// other work keeps every core busy (a server under a webhook flood), each poll takes a
    /// core from that work instead.
    pub poll_short_batches: bool,
}

impl Default for HostConfig {
    fn default() -> Self {
        Self {
            workers: 0,
            worker_binary: None,
            call_timeout: Duration::from_millis(50),
            kill_slack: Duration::from_millis(250),
            memory_limit_bytes: 32 * 1024 * 1024,
            stack_limit_bytes: 512 * 1024,
            runtimes_per_worker: 64,
            max_batch: 512,
            memo_capacity: 1_000_000,
            poll_short_batches: true,
        }
    }
}

impl HostConfig {
    pub fn worker_count(&self) -> usize {
        if self.workers > 0 {
            self.workers
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        }
    }
}

mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}
