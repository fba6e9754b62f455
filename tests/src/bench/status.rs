//! `status`: the status scaler carrying a simulated fleet on the real clock.
//!
//! The fleet simulator runs beside the server as its own process (`slipway-fleet`), so the
//! figures for the scaler (CPU, memory) are this process plus its plugin worker processes,
//! and the simulator's own cost is not counted. Full: 100,000 instances with the default
//! schedule (5 s tight, 300 s ceiling). `--quick`: 10,000 instances with the schedule
//! compressed (1 s tight, 12 s ceiling) so it fits in two minutes; its ratio to a fixed
//! 15-second poller is then not comparable with the goal. How each figure is measured is
//! written in BENCHMARKS.md.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{p99, round1};
use crate::fleet::{Endpoints, Layout};
use crate::server::TestServer;

const LAYOUT: Layout = Layout { per_app: 10, apps: 100, clusters: 10 };
const CHUNK: usize = 10_000;

struct Plan {
    instances: usize,
    tight: Duration,
    ceiling: Duration,
    burst_window: Duration,
    batch_gets: usize,
}

fn plan(quick: bool) -> Plan {
    if quick {
        Plan {
            instances: 10_000,
            tight: Duration::from_secs(1),
            ceiling: Duration::from_secs(12),
            burst_window: Duration::from_secs(16),
            batch_gets: 40,
        }
    } else {
        Plan {
            instances: 100_000,
            tight: Duration::from_secs(5),
            ceiling: Duration::from_secs(300),
            burst_window: Duration::from_secs(30),
            batch_gets: 200,
        }
    }
}

pub async fn run(quick: bool) -> anyhow::Result<Value> {
    let p = plan(quick);
    let fleet = RemoteFleet::spawn(p.instances).await?;
    let server = TestServer::start_with(
        |c| {
            c.status.schedule.tight = p.tight;
            c.status.schedule.ceiling = p.ceiling;
            c.limits.max_body_bytes = 32 * 1024 * 1024;
        },
        slipway_server::router::app,
    )
    .await;
    let api = Api { client: server.client(), base: server.url("") };
    let started = Instant::now();
    for from in (0..p.instances).step_by(CHUNK) {
        let body = LAYOUT.http_body(&fleet.endpoints, from..(from + CHUNK).min(p.instances));
        api.post("/v1/instances", &body).await.context("registering instances")?;
    }
    eprintln!("status: registered {} instances in {:.1} s", p.instances, started.elapsed().as_secs_f64());
    let all: Vec<usize> = (0..p.instances).collect();
    api.wait(&all, Duration::from_secs(180), |v| v.status == "healthy").await?;
    eprintln!("status: all healthy after {:.1} s", started.elapsed().as_secs_f64());

    // Backing off from the tight interval to the ceiling: N confirmations, then doublings.
    let mut ramp = p.tight * 3;
    let mut interval = p.tight;
    while interval < p.ceiling {
        interval = (interval * 2).min(p.ceiling);
        ramp += interval;
    }
    let wait = (ramp + p.tight * 2).saturating_sub(started.elapsed());
    eprintln!("status: waiting {:.0} s for every instance to back off to the ceiling", wait.as_secs_f64());
    tokio::time::sleep(wait).await;

    // Steady window: one ceiling period with jitter, so every instance is checked about
    // once; 20 isolated faults (at most 2 per app and per cluster) run meanwhile.
    let isolated: Vec<usize> = (0..20).map(|k| (k * 10 + k % 10) * LAYOUT.per_app + 3).collect();
    let window = p.ceiling * 11 / 10;
    let (cpu0, requests0, steady_start) =
        (scaler_cpu_ticks(fleet.pid()), fleet.total().await?, Instant::now());
    let faulted_at = fleet.fault(&isolated, "fail").await?;
    eprintln!(
        "status: steady window of {:.0} s with {} isolated faults",
        window.as_secs_f64(),
        isolated.len()
    );
    tokio::time::sleep(window).await;
    let elapsed = steady_start.elapsed().as_secs_f64();
    let steady_requests = fleet.total().await? - requests0;
    let cpu_s = (scaler_cpu_ticks(fleet.pid()) - cpu0) as f64 / clock_ticks_per_s();
    let rss_mb = scaler_rss_kb(fleet.pid()) as f64 / 1024.0;
    let steady_checks_per_s = steady_requests as f64 / elapsed;
    let fixed_poller = p.instances as f64 * elapsed / 15.0;
    let isolated_latencies =
        api.latencies(&isolated, faulted_at, p.ceiling * 2, |v| v.status != "healthy").await?;

    let mut recovery = Vec::new();
    let recovered_at = fleet.fault(&isolated, "healthy").await?;
    recovery.extend(
        api.latencies(&isolated, recovered_at, Duration::from_secs(60), |v| v.status == "healthy").await?,
    );

    // Correlated: 1% of the instances of cluster c3.
    let c3: Vec<usize> = all.iter().copied().filter(|&n| LAYOUT.cluster(n) == "c3").collect();
    let correlated: Vec<usize> = c3.iter().copied().step_by(100).collect();
    eprintln!("status: correlated fault in {} of {} instances of cluster c3", correlated.len(), c3.len());
    let at = fleet.fault(&correlated, "fail").await?;
    let correlated_latencies =
        api.latencies(&correlated, at, p.ceiling * 2, |v| v.status != "healthy").await?;
    // Tightening fires at the third detection (the default threshold), so the tail is that
    // moment plus one tight window: the log shows which of the two a slow p99 came from.
    let mut sorted = correlated_latencies.clone();
    sorted.sort_by(f64::total_cmp);
    eprintln!(
        "status: correlated detections (s): first {:?}, third {:.1}, median {:.1}, last {:.1}",
        sorted.first(),
        sorted.get(2).copied().unwrap_or_default(),
        sorted[sorted.len() / 2],
        sorted.last().copied().unwrap_or_default()
    );
    let at = fleet.fault(&correlated, "healthy").await?;
    recovery
        .extend(api.latencies(&correlated, at, Duration::from_secs(60), |v| v.status == "healthy").await?);

    // Burst: 10% anomalous (one component of every app instance), which also brings every
    // healthy sibling forward.
    let tenth: Vec<usize> = all.iter().copied().filter(|n| n % 10 == 0).collect();
    tokio::time::sleep(p.tight * 2).await;
    fleet.fault(&tenth, "fail").await?;
    let mut peak = 0.0f64;
    let mut last = fleet.total().await?;
    let burst_start = Instant::now();
    while burst_start.elapsed() < p.burst_window {
        let t = Instant::now();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let now = fleet.total().await?;
        peak = peak.max((now - last) as f64 / t.elapsed().as_secs_f64());
        last = now;
    }
    fleet.fault(&tenth, "healthy").await?;
    eprintln!("status: burst peak {peak:.0} checks/s");
    eprintln!("{}", api.metrics().await?);
    api.wait(&tenth, Duration::from_secs(120), |v| v.status == "healthy").await?;
    tokio::time::sleep(p.tight * 2).await;

    let batch_p99 = api.batch_get_p99_ms(p.instances, p.batch_gets).await?;
    drop(fleet);
    Ok(json!({
        "bench": "status",
        "instances": p.instances,
        "rss_mb": round1(rss_mb),
        "steady_checks_per_s": round1(steady_checks_per_s),
        "steady_cpu_pct": round1(cpu_s / elapsed * 100.0),
        "burst_checks_per_s": peak.round(),
        "correlated_p99_s": round1(p99(&correlated_latencies)),
        "isolated_p99_s": round1(p99(&isolated_latencies)),
        "recovery_p99_s": round1(p99(&recovery)),
        "load_ratio_vs_fixed15s": round1(fixed_poller / steady_requests.max(1) as f64),
        "batchget_10k_p99_ms": round1(batch_p99),
    }))
}

/// The fields the benchmark reads of a `health:batchGet` answer. Parsing only these keeps
/// the client's own work (100,000 states every 250 ms while waiting) small beside the
/// server's, which shares this process and its memory figure.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct State {
    status: String,
    since_ms: i64,
}

#[derive(Deserialize)]
struct BatchGetAnswer {
    instances: Vec<State>,
}

struct Api {
    client: reqwest::Client,
    base: String,
}

impl Api {
    async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let response = self.client.post(format!("{}{path}", self.base)).json(body).send().await?;
        let status = response.status();
        let body: Value = response.json().await?;
        if !status.is_success() {
            bail!("{path} answered {status}: {body}");
        }
        Ok(body)
    }

    /// The scaler's own lines of `/metrics`, for the log.
    async fn metrics(&self) -> anyhow::Result<String> {
        let text = self.client.get(format!("{}/metrics", self.base)).send().await?.text().await?;
        Ok(text
            .lines()
            .filter(|l| l.starts_with("slipway_status") || l.starts_with("slipway_plugin"))
            .collect::<Vec<_>>()
            .join("\n"))
    }

    async fn states(&self, ns: &[usize]) -> anyhow::Result<Vec<State>> {
        let mut out = Vec::with_capacity(ns.len());
        for chunk in ns.chunks(CHUNK) {
            let ids: Vec<String> = chunk.iter().map(|&n| Layout::instance_id(n)).collect();
            let response = self
                .client
                .post(format!("{}/v1/health:batchGet", self.base))
                .json(&json!({ "ids": ids }))
                .send();
            let answer: BatchGetAnswer = response.await?.error_for_status()?.json().await?;
            out.extend(answer.instances);
        }
        Ok(out)
    }

    async fn wait(
        &self,
        ns: &[usize],
        within: Duration,
        ok: impl Fn(&State) -> bool,
    ) -> anyhow::Result<Vec<State>> {
        let deadline = Instant::now() + within;
        loop {
            let states = self.states(ns).await?;
            if states.len() == ns.len() && states.iter().all(&ok) {
                return Ok(states);
            }
            if Instant::now() > deadline {
                let left = states.iter().filter(|v| !ok(v)).count();
                bail!("{left} of {} instances not there after {within:?}", ns.len());
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Seconds from `since_wall_ms` to each instance's transition into the awaited state.
    async fn latencies(
        &self,
        ns: &[usize],
        since_wall_ms: i64,
        within: Duration,
        ok: impl Fn(&State) -> bool,
    ) -> anyhow::Result<Vec<f64>> {
        let states = self.wait(ns, within, ok).await?;
        Ok(states.iter().map(|v| (v.since_ms - since_wall_ms) as f64 / 1000.0).collect())
    }

    async fn batch_get_p99_ms(&self, instances: usize, rounds: usize) -> anyhow::Result<f64> {
        let mut times = Vec::with_capacity(rounds);
        for round in 0..rounds {
            let ids: Vec<String> =
                (0..CHUNK).map(|k| Layout::instance_id((k * 7_919 + round * 13) % instances)).collect();
            let body = serde_json::to_vec(&json!({ "ids": ids }))?;
            let started = Instant::now();
            // The answer is read, not parsed: the figure is the server's and the wire's.
            let response = self
                .client
                .post(format!("{}/v1/health:batchGet", self.base))
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await?
                .error_for_status()?;
            let bytes = response.bytes().await?;
            times.push(started.elapsed().as_secs_f64() * 1000.0);
            anyhow::ensure!(bytes.len() > CHUNK * 100, "a short batchGet answer: {} bytes", bytes.len());
        }
        Ok(p99(&times))
    }
}

/// The `slipway-fleet` binary as a child process, driven through its admin API.
struct RemoteFleet {
    child: Child,
    endpoints: Endpoints,
    admin: reqwest::Client,
}

impl RemoteFleet {
    async fn spawn(instances: usize) -> anyhow::Result<Self> {
        let exe = std::env::current_exe()?;
        let path = exe.with_file_name("slipway-fleet");
        if !path.exists() {
            // `cargo run --bin slipway-bench` builds only the bench; build the simulator too.
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let release = exe.components().any(|c| c.as_os_str() == "release");
            let mut build = Command::new(cargo);
            build.args(["build", "-p", "slipway-tests", "--bin", "slipway-fleet"]);
            if release {
                build.arg("--release");
            }
            anyhow::ensure!(build.status()?.success(), "cannot build slipway-fleet");
        }
        let mut child = Command::new(&path)
            .args(["--instances", &instances.to_string(), "--ports", "8"])
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", path.display()))?;
        let stdout = child.stdout.take().context("fleet stdout")?;
        let line = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).map(|_| line)
        })
        .await??;
        let endpoints: Endpoints =
            serde_json::from_str(&line).with_context(|| format!("fleet said {line:?}"))?;
        Ok(Self { child, endpoints, admin: reqwest::Client::new() })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.endpoints.addrs[0])
    }

    /// Sets `mode` on `ns` and returns the wall-clock ms when it took effect.
    async fn fault(&self, ns: &[usize], mode: &str) -> anyhow::Result<i64> {
        let body = json!({ "mode": mode, "ids": ns });
        self.admin.post(self.admin_url("/admin/faults")).json(&body).send().await?.error_for_status()?;
        Ok(wall_ms())
    }

    async fn total(&self) -> anyhow::Result<u64> {
        let body: Value =
            self.admin.get(self.admin_url("/admin/requests?from=0&to=0")).send().await?.json().await?;
        body["total"].as_u64().context("fleet request total")
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A run that fails half way must not leave the simulator behind.
impl Drop for RemoteFleet {
    fn drop(&mut self) {
        self.stop();
    }
}

fn wall_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// This process and its children except the fleet: the server and its plugin workers.
fn scaler_pids(fleet: u32) -> Vec<u32> {
    let mut pids = vec![std::process::id()];
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for task in tasks.flatten() {
            let children = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            pids.extend(
                children.split_whitespace().filter_map(|p| p.parse::<u32>().ok()).filter(|&p| p != fleet),
            );
        }
    }
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// utime + stime of the scaler's processes, in clock ticks.
fn scaler_cpu_ticks(fleet: u32) -> u64 {
    scaler_pids(fleet)
        .into_iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .map(|stat| {
            // Fields after the `(comm)`; utime and stime are fields 14 and 15 of the line.
            let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
            let fields: Vec<&str> = rest.split_whitespace().collect();
            fields.get(11).and_then(|u| u.parse::<u64>().ok()).unwrap_or(0)
                + fields.get(12).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0)
        })
        .sum()
}

fn scaler_rss_kb(fleet: u32) -> u64 {
    let mut total = 0;
    for pid in scaler_pids(fleet) {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let field = |name: &str| {
            let line = status.lines().find(|l| l.starts_with(name))?;
            line.split_whitespace().nth(1).map(str::to_owned)
        };
        let rss: u64 = field("VmRSS:").and_then(|v| v.parse().ok()).unwrap_or(0);
        eprintln!("status: pid {pid} ({}) RSS {} MB", field("Name:").unwrap_or_default(), rss / 1024);
        total += rss;
    }
    total
}

fn clock_ticks_per_s() -> f64 {
    100.0 // USER_HZ on Linux
}
