//! The benchmarks run by `slipway-bench <name> [--quick]`. Each prints progress to stderr
//! and returns the figures its issue names; the runner prints them as the last stdout line.

mod api;
mod builder;
pub mod cluster;
mod dashboard;
mod http_load;
mod plugins;
mod registry;
mod registry_transfer;
mod status;
mod trigger;
mod trigger_stages;
mod webhook_load;

use serde_json::Value;

/// Every benchmark by name, for `--help` and dispatch.
pub const NAMES: &[&str] =
    &["api", "builder", "cluster", "dashboard", "plugins", "registry", "status", "trigger"];

pub use plugins::{FixedCheck, run_fixed as run_plugins_fixed};
pub use status::{Phase as StatusPhase, run_phase as run_status_phase};

pub async fn run(name: &str, quick: bool) -> anyhow::Result<Value> {
    match name {
        "api" => api::run(quick).await,
        "builder" => builder::run(quick).await,
        "cluster" => cluster::run(quick).await,
        "dashboard" => dashboard::run(quick).await,
        "plugins" => plugins::run(quick).await,
        "registry" => registry::run(quick).await,
        "status" => status::run(quick).await,
        "trigger" => trigger::run(quick).await,
        other => anyhow::bail!("unknown benchmark `{other}`; known: {}", NAMES.join(", ")),
    }
}

/// The 99th percentile (nearest rank); 0 for no values.
pub(crate) fn p99(values: &[f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 * 0.99).ceil() as usize).clamp(1, v.len()) - 1]
}

/// The samples of a Prometheus text exposition: each series (name and labels) with its value.
pub(crate) fn metric_samples(text: &str) -> impl Iterator<Item = (&str, f64)> {
    text.lines().filter_map(|line| {
        let mut parts = line.split_whitespace();
        Some((parts.next()?, parts.next()?.parse().ok()?))
    })
}

pub(crate) fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}
