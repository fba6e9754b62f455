//! `status`: the status scaler carrying a simulated fleet on the real clock.
//!
//! The fleet simulator runs beside the server as its own process (`slipway-fleet`), so the
//! figures for the scaler (CPU, memory) are this process plus its plugin worker processes,
//! and the simulator's own cost is not counted. Full: 100,000 instances with the default
//! schedule (5 s tight, 300 s ceiling). `--quick`: 10,000 instances with the schedule
//! compressed (1 s tight, 12 s ceiling) so it fits in two minutes; its ratio to a fixed
//! 15-second poller is then not comparable with the goal. `--phase burst|batchget` runs
//! one measurement alone after a backoff to a 40 s ceiling, to iterate on it in minutes;
//! `--phase capacity` is the burst with more demand than the scaler can serve.
//! How each figure is measured is written in BENCHMARKS.md.

mod client;
mod remote;

use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{Value, json};

use self::client::Api;
use self::remote::{RemoteFleet, clock_ticks_per_s, scaler_cpu_ticks, scaler_rss_kb};
use super::{p99, round1};
use crate::fleet::Layout;
use crate::server::TestServer;

const LAYOUT: Layout = Layout { per_app: 10, apps: 100, clusters: 10 };
const CHUNK: usize = 10_000;

/// One measurement of the full run, alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Phase {
    Burst,
    Batchget,
    /// The burst with a 2 s tight interval: the siblings brought forward (100,000 within
    /// 2 s) are more than the scaler can check, so checks wait and the burst figure is
    /// its capacity. In the full run's burst (100,000 within 5 s) the scaler may keep up.
    Capacity,
}

struct Plan {
    instances: usize,
    tight: Duration,
    ceiling: Duration,
    burst_window: Duration,
    batch_gets: usize,
}

fn plan(quick: bool, phase: Option<Phase>) -> Plan {
    match (quick, phase) {
        (true, _) => Plan {
            instances: 10_000,
            tight: Duration::from_secs(1),
            ceiling: Duration::from_secs(12),
            burst_window: Duration::from_secs(16),
            batch_gets: 40,
        },
        (false, None) => Plan {
            instances: 100_000,
            tight: Duration::from_secs(5),
            ceiling: Duration::from_secs(300),
            burst_window: Duration::from_secs(30),
            batch_gets: 200,
        },
        // The full fleet and tight interval, so the burst's demand is the full run's; a
        // lower ceiling so the backoff before it takes two minutes, not ten.
        (false, Some(Phase::Capacity)) => {
            Plan { tight: Duration::from_secs(2), ..plan(false, Some(Phase::Burst)) }
        }
        (false, Some(_)) => Plan { ceiling: Duration::from_secs(40), ..plan(false, None) },
    }
}

/// The fleet and the server with every instance registered, healthy and backed off to the
/// ceiling.
struct Setup {
    fleet: RemoteFleet,
    api: Api,
    all: Vec<usize>,
    _server: TestServer,
}

async fn setup(p: &Plan) -> anyhow::Result<Setup> {
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
    Ok(Setup { fleet, api, all, _server: server })
}

/// One measurement alone (see the module doc): its figure under the full run's key.
pub async fn run_phase(phase: Phase, quick: bool) -> anyhow::Result<Value> {
    let p = plan(quick, Some(phase));
    let s = setup(&p).await?;
    let (key, figure) = match phase {
        Phase::Burst | Phase::Capacity => ("burst_checks_per_s", burst(&s, &p).await?),
        Phase::Batchget => {
            ("batchget_10k_p99_ms", round1(s.api.batch_get_p99_ms(p.instances, p.batch_gets).await?))
        }
    };
    let mut figures =
        json!({ "bench": "status", "phase": format!("{phase:?}").to_lowercase(), "instances": p.instances });
    figures[key] = figure.into();
    Ok(figures)
}

pub async fn run(quick: bool) -> anyhow::Result<Value> {
    let p = plan(quick, None);
    let s = setup(&p).await?;
    let (fleet, api, all) = (&s.fleet, &s.api, &s.all);
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

    let burst_checks_per_s = burst(&s, &p).await?;
    let batch_p99 = api.batch_get_p99_ms(p.instances, p.batch_gets).await?;
    Ok(json!({
        "bench": "status",
        "instances": p.instances,
        "rss_mb": round1(rss_mb),
        "steady_checks_per_s": round1(steady_checks_per_s),
        "steady_cpu_pct": round1(cpu_s / elapsed * 100.0),
        "burst_checks_per_s": burst_checks_per_s,
        "correlated_p99_s": round1(p99(&correlated_latencies)),
        "isolated_p99_s": round1(p99(&isolated_latencies)),
        "recovery_p99_s": round1(p99(&recovery)),
        "load_ratio_vs_fixed15s": round1(fixed_poller / steady_requests.max(1) as f64),
        "batchget_10k_p99_ms": round1(batch_p99),
    }))
}

/// Burst: 10% anomalous (one component of every app instance), which also brings every
/// healthy sibling forward. The figure is capacity, not demand: checks per second over
/// the seconds in which due checks were left waiting at both ends (the scaler could not
/// keep up), sampled every second. Without such seconds the burst never exceeded what the
/// scaler could do, and the figure (then the best one-second rate) is only a lower bound.
async fn burst(s: &Setup, p: &Plan) -> anyhow::Result<f64> {
    let tenth: Vec<usize> = s.all.iter().copied().filter(|n| n % 10 == 0).collect();
    tokio::time::sleep(p.tight * 2).await;
    s.fleet.fault(&tenth, "fail").await?;
    let (mut saturated_checks, mut saturated_s, mut best) = (0u64, 0.0f64, 0.0f64);
    let mut last = (Instant::now(), s.fleet.total().await?, s.api.waiting().await?);
    let burst_start = Instant::now();
    let mut trace = Vec::new();
    while burst_start.elapsed() < p.burst_window {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = (Instant::now(), s.fleet.total().await?, s.api.waiting().await?);
        let (seconds, checks) = ((now.0 - last.0).as_secs_f64(), now.1 - last.1);
        best = best.max(checks as f64 / seconds);
        if last.2 > 0 && now.2 > 0 {
            saturated_checks += checks;
            saturated_s += seconds;
        }
        trace.push(format!("{:.0}/s ({} waiting)", checks as f64 / seconds, now.2));
        last = now;
    }
    s.fleet.fault(&tenth, "healthy").await?;
    eprintln!("status: burst, each second: {}", trace.join(", "));
    eprintln!("{}", s.api.metrics().await?);
    let figure = if saturated_s > 0.0 {
        eprintln!(
            "status: burst capacity over {saturated_s:.1} s with checks waiting; best second {best:.0}/s"
        );
        saturated_checks as f64 / saturated_s
    } else {
        eprintln!(
            "status: no check waited during the burst: {best:.0}/s is the demand, a lower bound of capacity"
        );
        best
    };
    s.api.wait(&tenth, Duration::from_secs(120), |v| v.status == "healthy").await?;
    tokio::time::sleep(p.tight * 2).await;
    Ok(figure.round())
}
