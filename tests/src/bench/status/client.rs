//! The benchmark's client of the scaler's API: registration, batchGet polling and the
//! saturation gauges of `/metrics`.

use std::time::{Duration, Instant};

use anyhow::bail;
use serde::Deserialize;
use serde_json::{Value, json};

use super::CHUNK;
use crate::bench::{metric_samples, p99};
use crate::fleet::Layout;

/// The fields the benchmark reads of a `health:batchGet` answer. Parsing only these keeps
/// the client's own work (100,000 states every 250 ms while waiting) small beside the
/// server's, which shares this process and its memory figure.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct State {
    pub status: String,
    pub since_ms: i64,
}

#[derive(Deserialize)]
struct BatchGetAnswer {
    instances: Vec<State>,
}

pub struct Api {
    pub client: reqwest::Client,
    pub base: String,
}

impl Api {
    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let response = self.client.post(format!("{}{path}", self.base)).json(body).send().await?;
        let status = response.status();
        let body: Value = response.json().await?;
        if !status.is_success() {
            bail!("{path} answered {status}: {body}");
        }
        Ok(body)
    }

    /// The scaler's own lines of `/metrics`, for the log.
    pub async fn metrics(&self) -> anyhow::Result<String> {
        let text = self.client.get(format!("{}/metrics", self.base)).send().await?.text().await?;
        Ok(text
            .lines()
            .filter(|l| l.starts_with("slipway_status") || l.starts_with("slipway_plugin"))
            .collect::<Vec<_>>()
            .join("\n"))
    }

    /// Due checks waiting for a permit or the budget (urgent + routine), as the dispatcher
    /// last set the gauge.
    pub async fn waiting(&self) -> anyhow::Result<u64> {
        let text = self.client.get(format!("{}/metrics", self.base)).send().await?.text().await?;
        Ok(metric_samples(&text)
            .filter(|(series, _)| series.starts_with("slipway_status_checks_waiting"))
            .map(|(_, value)| value)
            .sum::<f64>() as u64)
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

    pub async fn wait(
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
    pub async fn latencies(
        &self,
        ns: &[usize],
        since_wall_ms: i64,
        within: Duration,
        ok: impl Fn(&State) -> bool,
    ) -> anyhow::Result<Vec<f64>> {
        let states = self.wait(ns, within, ok).await?;
        Ok(states.iter().map(|v| (v.since_ms - since_wall_ms) as f64 / 1000.0).collect())
    }

    pub async fn batch_get_p99_ms(&self, instances: usize, rounds: usize) -> anyhow::Result<f64> {
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
        let mut sorted = times.clone();
        sorted.sort_by(f64::total_cmp);
        eprintln!(
            "status: batchGet of {CHUNK} ids (ms): median {:.1}, p99 {:.1}, max {:.1}",
            sorted[sorted.len() / 2],
            p99(&times),
            sorted.last().copied().unwrap_or_default()
        );
        Ok(p99(&times))
    }
}
