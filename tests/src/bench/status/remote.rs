//! The fleet simulator as a child process, and the scaler's own CPU and memory read from
//! `/proc` (this process and its plugin workers, not the simulator).

use std::process::{Child, Command, Stdio};

use anyhow::Context;
use serde_json::{Value, json};

use crate::fleet::Endpoints;

/// The `slipway-fleet` binary as a child process, driven through its admin API.
pub struct RemoteFleet {
    child: Child,
    pub endpoints: Endpoints,
    admin: reqwest::Client,
}

impl RemoteFleet {
    pub async fn spawn(instances: usize) -> anyhow::Result<Self> {
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

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.endpoints.addrs[0])
    }

    /// Sets `mode` on `ns` and returns the wall-clock ms when it took effect.
    pub async fn fault(&self, ns: &[usize], mode: &str) -> anyhow::Result<i64> {
        let body = json!({ "mode": mode, "ids": ns });
        self.admin.post(self.admin_url("/admin/faults")).json(&body).send().await?.error_for_status()?;
        Ok(wall_ms())
    }

    pub async fn total(&self) -> anyhow::Result<u64> {
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

pub fn wall_ms() -> i64 {
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
pub fn scaler_cpu_ticks(fleet: u32) -> u64 {
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

pub fn scaler_rss_kb(fleet: u32) -> u64 {
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

pub fn clock_ticks_per_s() -> f64 {
    100.0 // USER_HZ on Linux
}
