//! `api`: requests per second and p99 latency of `GET /healthz` with 64 concurrent
//! keep-alive connections, client and server on this machine.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::server::TestServer;

const CONNECTIONS: usize = 64;

pub async fn run(quick: bool) -> anyhow::Result<Value> {
    let duration = if quick { Duration::from_secs(5) } else { Duration::from_secs(20) };
    let server = TestServer::start().await;
    eprintln!("api: {CONNECTIONS} connections for {duration:?} against {}", server.addr);
    // Warm up so connection set-up and first-touch allocations are not measured.
    load(server.addr, Duration::from_millis(500)).await?;
    let started = Instant::now();
    let histogram = load(server.addr, duration).await?;
    let elapsed = started.elapsed().as_secs_f64();
    let requests = histogram.len();
    let result = json!({
        "bench": "api",
        "connections": CONNECTIONS,
        "duration_s": elapsed,
        "requests": requests,
        "requests_per_s": (requests as f64 / elapsed).round(),
        "p50_ms": histogram.value_at_quantile(0.50) as f64 / 1000.0,
        "p99_ms": histogram.value_at_quantile(0.99) as f64 / 1000.0,
    });
    Ok(result)
}

async fn load(
    addr: std::net::SocketAddr,
    duration: Duration,
) -> anyhow::Result<hdrhistogram::Histogram<u64>> {
    super::http_load::run(addr, CONNECTIONS, duration, None, |_| || "/healthz".to_owned()).await
}
