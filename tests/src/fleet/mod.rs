//! The fleet simulator: N virtual instances served on loopback for the status scaler's
//! tests and benchmark. Every listener serves every instance:
//!
//! - `GET /instances/{n}/health`: the instance's HTTP health endpoint;
//! - `GET /apis/apps/v1/namespaces/{ns}/deployments`: a Kubernetes-style LIST of the
//!   Deployments in namespace `ns` (instance `n` is Deployment `app-{n}` in namespace
//!   `ns-{n / per_namespace}`), realistic objects a status plugin judges like a real one;
//! - an admin API to make chosen instances fail, slow down, hang, flap or recover, and to
//!   report how many requests each received (see [`admin`]).
//!
//! No kube-apiserver runs here: the Kubernetes path of the status scaler is tested against
//! these LIST endpoints, which answer like the API server for this one resource.

mod admin;
pub mod checkers;
mod kube;
mod register;
mod serve;

use std::net::SocketAddr;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

pub use self::register::Layout;

/// How a virtual instance answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[repr(u8)]
pub enum Mode {
    /// 200 with `{"status":"ok"}`; a Deployment with every replica available.
    Healthy = 0,
    /// 503 with `{"status":"down"}`; a Deployment past its progress deadline.
    Fail = 1,
    /// Healthy, after the instance's delay.
    Slow = 2,
    /// Never answers (the connection stays open).
    Hang = 3,
    /// Alternates between healthy and failing on every request.
    Flap = 4,
}

impl Mode {
    fn from_u8(v: u8) -> Mode {
        match v {
            1 => Mode::Fail,
            2 => Mode::Slow,
            3 => Mode::Hang,
            4 => Mode::Flap,
            _ => Mode::Healthy,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetConfig {
    pub instances: usize,
    /// Loopback listeners ("hosts"); instance `n` is registered on listener `n % ports`.
    pub ports: usize,
    /// Deployments per namespace in the Kubernetes view.
    pub per_namespace: usize,
}

impl Default for FleetConfig {
    fn default() -> Self {
        Self { instances: 1_000, ports: 4, per_namespace: 1_000 }
    }
}

/// Shared state of every virtual instance: one byte of mode, the slow delay and a request
/// counter each.
pub struct FleetState {
    config: FleetConfig,
    modes: Vec<AtomicU8>,
    delays_ms: Vec<AtomicU32>,
    requests: Vec<AtomicU32>,
    lists: AtomicU64,
    /// Whether health requests are logged with their arrival time (off in benchmarks).
    logging: AtomicBool,
    log: Mutex<Vec<Logged>>,
}

impl FleetState {
    fn new(config: FleetConfig) -> Self {
        let n = config.instances;
        Self {
            config,
            modes: (0..n).map(|_| AtomicU8::new(0)).collect(),
            delays_ms: (0..n).map(|_| AtomicU32::new(0)).collect(),
            requests: (0..n).map(|_| AtomicU32::new(0)).collect(),
            lists: AtomicU64::new(0),
            logging: AtomicBool::new(false),
            log: Mutex::new(Vec::new()),
        }
    }

    fn clamp(&self, range: Range<usize>) -> Range<usize> {
        range.start.min(self.config.instances)..range.end.min(self.config.instances)
    }

    pub fn set_mode(&self, range: Range<usize>, mode: Mode, delay_ms: u32) -> usize {
        let range = self.clamp(range);
        for n in range.clone() {
            self.delays_ms[n].store(delay_ms, Ordering::Relaxed);
            self.modes[n].store(mode as u8, Ordering::Relaxed);
        }
        range.len()
    }

    pub fn set_mode_of(&self, ids: &[usize], mode: Mode, delay_ms: u32) -> usize {
        ids.iter()
            .filter(|&&n| n < self.config.instances)
            .map(|&n| self.set_mode(n..n + 1, mode, delay_ms))
            .sum()
    }

    pub fn mode(&self, n: usize) -> Mode {
        Mode::from_u8(self.modes[n].load(Ordering::Relaxed))
    }

    /// Requests received by each instance in `range` (health endpoint only).
    pub fn requests(&self, range: Range<usize>) -> Vec<u32> {
        self.requests[self.clamp(range)].iter().map(|c| c.load(Ordering::Relaxed)).collect()
    }

    pub fn total_requests(&self) -> u64 {
        self.requests.iter().map(|c| u64::from(c.load(Ordering::Relaxed))).sum()
    }

    /// Kubernetes LIST requests served.
    pub fn lists(&self) -> u64 {
        self.lists.load(Ordering::Relaxed)
    }

    pub fn reset_counts(&self) {
        self.requests.iter().for_each(|c| c.store(0, Ordering::Relaxed));
        self.lists.store(0, Ordering::Relaxed);
    }

    /// Starts logging each health request with the instance and the moment it arrived:
    /// when a test asks how checks of one instance were spaced, the times are taken where
    /// the requests land, not by polling the counters from a task that may be late.
    pub fn log_requests(&self) {
        self.log.lock().expect("request log").clear();
        self.logging.store(true, Ordering::SeqCst);
    }

    /// Stops logging and hands back what was logged since [`FleetState::log_requests`], in
    /// arrival order.
    pub fn take_request_log(&self) -> Vec<Logged> {
        self.logging.store(false, Ordering::SeqCst);
        std::mem::take(&mut *self.log.lock().expect("request log"))
    }

    /// Counts a request and says how the instance answers it.
    fn answer(&self, n: usize, user_agent: &str) -> Option<(Mode, u32)> {
        let count = self.requests.get(n)?.fetch_add(1, Ordering::Relaxed);
        if self.logging.load(Ordering::Relaxed) {
            let replica = replica_of(user_agent).map(Arc::from);
            self.log.lock().expect("request log").push(Logged { instance: n, at: Instant::now(), replica });
        }
        let mode = match self.mode(n) {
            Mode::Flap if count % 2 == 0 => Mode::Fail,
            Mode::Flap => Mode::Healthy,
            other => other,
        };
        Some((mode, self.delays_ms[n].load(Ordering::Relaxed)))
    }
}

/// One logged health request.
#[derive(Debug, Clone)]
pub struct Logged {
    pub instance: usize,
    pub at: Instant,
    /// The replica that asked, from its user agent `slipway/<version> (replica <id>)`.
    pub replica: Option<Arc<str>>,
}

fn replica_of(user_agent: &str) -> Option<&str> {
    user_agent.split_once("(replica ")?.1.strip_suffix(')')
}

/// Where a simulator listens, and where each instance lives on it: enough to register
/// instances, whether the simulator runs in this process or in `slipway-fleet`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoints {
    pub addrs: Vec<SocketAddr>,
    pub per_namespace: usize,
}

impl Endpoints {
    /// The health URL of instance `n`, on its listener.
    pub fn http_url(&self, n: usize) -> String {
        format!("http://{}/instances/{n}/health", self.addrs[n % self.addrs.len()])
    }

    /// Namespace and Deployment name of instance `n` in the Kubernetes view.
    pub fn deployment(&self, n: usize) -> (String, String) {
        kube::placement(self.per_namespace, n)
    }

    /// A kubeconfig pointing at listener 0 as a plain-HTTP API server.
    pub fn kubeconfig(&self) -> String {
        kube::kubeconfig(self.addrs[0])
    }
}

/// A running simulator; stops when dropped.
pub struct Fleet {
    pub state: Arc<FleetState>,
    pub endpoints: Endpoints,
    tasks: Vec<JoinHandle<()>>,
}

impl Fleet {
    /// Binds `config.ports` loopback listeners (ports from `first_port`, or free ones when
    /// it is 0) and serves the fleet on them.
    pub async fn start(config: FleetConfig, first_port: u16) -> std::io::Result<Fleet> {
        let state = Arc::new(FleetState::new(config));
        let mut addrs = Vec::new();
        let mut tasks = Vec::new();
        for p in 0..config.ports.max(1) {
            let port = if first_port == 0 { 0 } else { first_port + p as u16 };
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
            addrs.push(listener.local_addr()?);
            tasks.push(tokio::spawn(serve::run(listener, state.clone())));
        }
        Ok(Fleet { state, endpoints: Endpoints { addrs, per_namespace: config.per_namespace }, tasks })
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.tasks.iter().for_each(JoinHandle::abort);
    }
}
