//! `trigger`: webhook deliveries accepted per second — authenticated, read by the adapter
//! plugin, deduplicated and durably queued as builds — with 64 concurrent clients, their p99
//! latency, and how closely the per-trigger rate limiter holds its configured rate once its
//! burst is spent. The load is `webhook_load.rs`: 64 keep-alive connections, a second of
//! unmeasured warm-up, closed loop, then the same connections open loop at 5,000 offered
//! deliveries/s.

use std::time::Duration;

use serde_json::{Value, json};

use super::trigger_stages::StageHistograms;
use super::webhook_load::{CLIENTS, LoadGenerator, Pace, Target};
use crate::server::TestServer;

/// The offered rate of the open-loop phase: the throughput goal.
const OPEN_LOOP_PER_S: f64 = 5000.0;
/// Unmeasured load before the throughput phase, as the other benches warm up: the first
/// deliveries start the adapter's plugin worker and load its script, and touch every cache
/// and buffer for the first time. Its own latencies are reported apart.
const WARM_UP: Duration = Duration::from_secs(1);

pub async fn run(quick: bool) -> anyhow::Result<Value> {
    let window = if quick { Duration::from_secs(5) } else { Duration::from_secs(20) };
    let load = LoadGenerator::new()?;

    // Throughput: limits far above what the machine can do, builds accepted but not run.
    let server = start(1_000_000).await;
    let target = create_trigger(&server).await?;
    // Connections are made before any clock starts and serve every flood on this server.
    let mut connections = load.connect(server.addr).await?;
    eprintln!("trigger: warm-up, {CLIENTS} clients for {WARM_UP:?}, not measured");
    let warm_up = load.flood(&mut connections, &target, 4, WARM_UP, Pace::Closed).await?;
    eprintln!("trigger: {CLIENTS} clients for {window:?}, unique deliveries, closed loop");
    let (cpu_before, client_before) = (cpu_ticks(), load.cpu_ticks());
    let metrics_before = metrics_text(&server).await?;
    let closed = load.flood(&mut connections, &target, 0, window, Pace::Closed).await?;
    let cpu_ticks_used = cpu_ticks() - cpu_before;
    let client_ticks_used = load.cpu_ticks() - client_before;
    let metrics_after_closed = metrics_text(&server).await?;
    anyhow::ensure!(closed.limited == 0, "no delivery should be limited in the throughput phase");
    let accepted_per_s = closed.accepted as f64 / window.as_secs_f64();
    let queued: Value =
        server.client().get(server.url("/v1/builds?limit=1&state=queued")).send().await?.json().await?;
    anyhow::ensure!(queued["builds"].as_array().is_some_and(|b| !b.is_empty()), "accepted builds are queued");

    // The same connections at a fixed offered rate: a latency that does not follow from the
    // closed loop's queue (Little's law), each measured from its request's scheduled time.
    eprintln!("trigger: {OPEN_LOOP_PER_S}/s offered on {CLIENTS} connections for {window:?}, open loop");
    let pace = Pace::Open { per_s: OPEN_LOOP_PER_S };
    let open = load.flood(&mut connections, &target, 1, window, pace).await?;
    anyhow::ensure!(open.limited == 0, "no delivery should be limited in the open-loop phase");
    let metrics_after_open = metrics_text(&server).await?;

    // Limiter: a configured rate far below the offered load. A first flood drains the burst,
    // so what passes in the measured window after it is the rate the limiter holds.
    let rate = 200u32;
    let limit_window = Duration::from_secs(if quick { 3 } else { 10 });
    let server = start(rate).await;
    let target = create_trigger(&server).await?;
    let mut connections = load.connect(server.addr).await?;
    eprintln!("trigger: limiter at {rate}/s, burst drained, then {limit_window:?}");
    load.flood(&mut connections, &target, 2, Duration::from_secs(1), Pace::Closed).await?;
    let limited = load.flood(&mut connections, &target, 3, limit_window, Pace::Closed).await?;
    let expected = rate as f64 * limit_window.as_secs_f64();
    let limiter_error_pct = ((limited.accepted as f64 - expected).abs() / expected) * 100.0;
    load.shut_down();

    let ms =
        |latencies: &hdrhistogram::Histogram<u64>, q: f64| latencies.value_at_quantile(q) as f64 / 1000.0;
    let per_accepted =
        |ticks: u64| (ticks as f64 * 1e6 / TICKS_PER_S / closed.accepted.max(1) as f64).round();
    Ok(json!({
        "bench": "trigger",
        "clients": CLIENTS,
        "accepted": closed.accepted,
        "accepted_per_s": accepted_per_s.round(),
        "p50_ms": ms(&closed.latencies, 0.50),
        "p99_ms": ms(&closed.latencies, 0.99),
        // CPU time of this process (server and clients) and of its children (the plugin
        // workers) per accepted delivery: unlike the rates, barely moved by other load.
        "cpu_us_per_accepted": per_accepted(cpu_ticks_used),
        // Of that, the load generator's thread: the part that is not the server's.
        "client_cpu_us_per_accepted": per_accepted(client_ticks_used),
        // The first second of the server's life, kept out of the figures above.
        "warm_up": {
            "accepted": warm_up.accepted,
            "p50_ms": ms(&warm_up.latencies, 0.50),
            "p99_ms": ms(&warm_up.latencies, 0.99),
        },
        "open_loop_offered_per_s": OPEN_LOOP_PER_S,
        "open_loop_accepted_per_s": (open.accepted as f64 / window.as_secs_f64()).round(),
        "p50_ms_at_5000_per_s": ms(&open.latencies, 0.50),
        "p99_ms_at_5000_per_s": ms(&open.latencies, 0.99),
        // Where the tail comes from: log flushes past 10 ms and the log's restarts (the
        // writer waits for each), in each phase.
        "stalls": {
            "closed_loop": Stalls::parse(&metrics_after_closed).since(&Stalls::parse(&metrics_before)),
            "open_loop": Stalls::parse(&metrics_after_open).since(&Stalls::parse(&metrics_after_closed)),
        },
        // Where a delivery's time goes on the server, per stage of its path.
        "stages": {
            "closed_loop": StageHistograms::parse(&metrics_after_closed)
                .since(&StageHistograms::parse(&metrics_before)),
            "open_loop": StageHistograms::parse(&metrics_after_open)
                .since(&StageHistograms::parse(&metrics_after_closed)),
        },
        "limiter_rate_per_s": rate,
        "limiter_passed": limited.accepted,
        "limiter_expected": expected,
        "limiter_refused": limited.limited,
        "limiter_error_pct": (limiter_error_pct * 100.0).round() / 100.0,
    }))
}

/// `USER_HZ`: the unit of CPU times in `/proc` (100 on Linux).
const TICKS_PER_S: f64 = 100.0;

/// User and system CPU ticks used so far by this process and its live children.
fn cpu_ticks() -> u64 {
    let children: Vec<String> = std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|list| list.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .collect();
    thread_cpu_ticks("self") + children.iter().map(|pid| thread_cpu_ticks(pid)).sum::<u64>()
}

/// User and system CPU ticks of `/proc/<task>` (a process, or `self/task/<tid>`).
pub(super) fn thread_cpu_ticks(task: &str) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{task}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    rest.split_whitespace().skip(11).take(2).filter_map(|n| n.parse::<u64>().ok()).sum()
}

/// The server's `/metrics` text. The recorder is process-wide: every server of this process
/// adds to it, so phases are told apart by differences.
async fn metrics_text(server: &TestServer) -> anyhow::Result<String> {
    Ok(server.client().get(server.url("/metrics")).send().await?.text().await?)
}

/// The server's counters of what stalls deliveries.
struct Stalls {
    flushes: f64,
    flushes_within_10ms: f64,
    restarts: f64,
    restart_seconds: f64,
}

impl Stalls {
    fn parse(text: &str) -> Stalls {
        let value = |series: &str| -> f64 {
            super::metric_samples(text).find(|(name, _)| *name == series).map_or(0.0, |(_, value)| value)
        };
        Stalls {
            flushes: value("slipway_trigger_wal_flush_seconds_count"),
            flushes_within_10ms: value("slipway_trigger_wal_flush_seconds_bucket{le=\"0.01\"}"),
            restarts: value("slipway_trigger_checkpoint_seconds_count{mode=\"RESTART\"}"),
            restart_seconds: value("slipway_trigger_checkpoint_seconds_sum{mode=\"RESTART\"}"),
        }
    }

    fn since(&self, before: &Stalls) -> Value {
        let flushes = self.flushes - before.flushes;
        let slow = flushes - (self.flushes_within_10ms - before.flushes_within_10ms);
        let restarts = self.restarts - before.restarts;
        let restart_ms = (self.restart_seconds - before.restart_seconds) * 1000.0;
        json!({
            "log_flushes": flushes,
            "log_flushes_over_10ms": slow,
            "log_restarts": restarts,
            "restart_ms_mean": if restarts > 0.0 { (restart_ms / restarts * 10.0).round() / 10.0 } else { 0.0 },
        })
    }
}

async fn start(per_trigger_per_s: u32) -> TestServer {
    TestServer::start_with(
        move |c| {
            c.pipeline.run_builds = false;
            c.triggers.per_trigger_per_s = per_trigger_per_s;
            c.triggers.per_client_per_s = 1_000_000;
        },
        slipway_server::router::app,
    )
    .await
}

async fn create_trigger(server: &TestServer) -> anyhow::Result<Target> {
    let body: Value = server
        .client()
        .post(server.url("/v1/triggers"))
        .json(&json!({
            "app": "bench", "adapter": "generic", "tags": ["ci"],
            "repository_url": "file:///srv/bench.git",
            "components": [{"name": "app", "type": "microservice"}],
        }))
        .send()
        .await?
        .json()
        .await?;
    let id = body["trigger"]["id"].as_str().ok_or_else(|| anyhow::anyhow!("no trigger: {body}"))?;
    let secret = body["secret"].as_str().unwrap_or_default();
    Ok(Target { path: format!("/v1/triggers/{id}"), authorization: format!("Bearer {secret}") })
}
