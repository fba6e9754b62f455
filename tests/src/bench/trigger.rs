//! `trigger`: webhook deliveries accepted per second — authenticated, read by the adapter
//! plugin, deduplicated and durably queued as builds — with 64 concurrent clients, their p99
//! latency, and how closely the per-trigger rate limiter holds its configured rate once its
//! burst is spent.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::server::TestServer;

const CLIENTS: usize = 64;

pub async fn run(quick: bool) -> anyhow::Result<Value> {
    let window = if quick { Duration::from_secs(5) } else { Duration::from_secs(20) };

    // Throughput: limits far above what the machine can do, builds accepted but not run.
    // The clients are made before any clock starts and serve every flood: making one reads
    // the system's root certificates, which is no part of a delivery, and floods meant to
    // follow each other must not have a gap between them.
    let clients: Vec<reqwest::Client> = (0..CLIENTS).map(|_| reqwest::Client::new()).collect();
    let server = start(1_000_000).await;
    let (id, secret) = create_trigger(&server).await?;
    eprintln!("trigger: {CLIENTS} clients for {window:?}, unique deliveries");
    let cpu_before = cpu_ticks();
    let (accepted, limited, latencies) = flood(&clients, &server, &id, &secret, 0, window).await?;
    let cpu_ticks_used = cpu_ticks() - cpu_before;
    anyhow::ensure!(limited == 0, "no delivery should be limited in the throughput phase");
    let accepted_per_s = accepted as f64 / window.as_secs_f64();
    let p99_ms = latencies.value_at_quantile(0.99) as f64 / 1000.0;
    let queued: Value =
        server.client().get(server.url("/v1/builds?limit=1&state=queued")).send().await?.json().await?;
    anyhow::ensure!(queued["builds"].as_array().is_some_and(|b| !b.is_empty()), "accepted builds are queued");

    // Limiter: a configured rate far below the offered load. A first flood drains the burst,
    // so what passes in the measured window after it is the rate the limiter holds.
    let rate = 200u32;
    let limit_window = Duration::from_secs(if quick { 3 } else { 10 });
    let server = start(rate).await;
    let (id, secret) = create_trigger(&server).await?;
    eprintln!("trigger: limiter at {rate}/s, burst drained, then {limit_window:?}");
    flood(&clients, &server, &id, &secret, 1, Duration::from_secs(1)).await?;
    let (passed, limited, _) = flood(&clients, &server, &id, &secret, 2, limit_window).await?;
    let expected = rate as f64 * limit_window.as_secs_f64();
    let limiter_error_pct = ((passed as f64 - expected).abs() / expected) * 100.0;

    Ok(json!({
        "bench": "trigger",
        "clients": CLIENTS,
        "accepted": accepted,
        "accepted_per_s": accepted_per_s.round(),
        "p50_ms": latencies.value_at_quantile(0.50) as f64 / 1000.0,
        "p99_ms": p99_ms,
        // CPU time of this process (server and clients) and of its children (the plugin
        // workers) per accepted delivery: unlike the rates, barely moved by other load.
        "cpu_us_per_accepted": (cpu_ticks_used as f64 * 1e6 / TICKS_PER_S / accepted.max(1) as f64).round(),
        "limiter_rate_per_s": rate,
        "limiter_passed": passed,
        "limiter_expected": expected,
        "limiter_refused": limited,
        "limiter_error_pct": (limiter_error_pct * 100.0).round() / 100.0,
    }))
}

/// `USER_HZ`: the unit of CPU times in `/proc` (100 on Linux).
const TICKS_PER_S: f64 = 100.0;

/// User and system CPU ticks used so far by this process and its live children.
fn cpu_ticks() -> u64 {
    let of = |pid: &str| -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
        let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        rest.split_whitespace().skip(11).take(2).filter_map(|n| n.parse::<u64>().ok()).sum()
    };
    let children: Vec<String> = std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|list| list.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .collect();
    of("self") + children.iter().map(|pid| of(pid)).sum::<u64>()
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

async fn create_trigger(server: &TestServer) -> anyhow::Result<(String, String)> {
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
    Ok((id.to_owned(), body["secret"].as_str().unwrap_or_default().to_owned()))
}

/// Sends deliveries back to back from each of `clients` for `window`, each with a commit of
/// its own (`round` keeps commits of separate floods apart); returns (accepted, refused by the limiter, latency histogram in µs).
async fn flood(
    clients: &[reqwest::Client],
    server: &TestServer,
    id: &str,
    secret: &str,
    round: u8,
    window: Duration,
) -> anyhow::Result<(u64, u64, hdrhistogram::Histogram<u64>)> {
    let url = reqwest::Url::parse(&server.url(&format!("/v1/triggers/{id}")))?;
    let accepted = Arc::new(AtomicU64::new(0));
    let limited = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + window;
    let mut tasks = Vec::new();
    for (client, http) in clients.iter().cloned().enumerate() {
        let (url, secret) = (url.clone(), secret.to_owned());
        let (accepted, limited) = (accepted.clone(), limited.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = hdrhistogram::Histogram::<u64>::new(3)?;
            let mut n = 0u64;
            while Instant::now() < deadline {
                n += 1;
                let commit = format!("{round:02x}{client:04x}{n:034x}");
                let body = json!({"action": "build", "repository": "acme/shop", "ref": "refs/heads/main", "commit": commit});
                let sent = Instant::now();
                let response = http.post(url.clone()).bearer_auth(&secret).json(&body).send().await?;
                match response.status().as_u16() {
                    202 => {
                        accepted.fetch_add(1, Ordering::Relaxed);
                        latencies.record(sent.elapsed().as_micros() as u64)?;
                    }
                    429 => {
                        limited.fetch_add(1, Ordering::Relaxed);
                    }
                    other => anyhow::bail!("delivery answered {other}: {}", response.text().await?),
                }
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut merged = hdrhistogram::Histogram::<u64>::new(3)?;
    for task in tasks {
        merged.add(task.await??)?;
    }
    Ok((accepted.load(Ordering::Relaxed), limited.load(Ordering::Relaxed), merged))
}
