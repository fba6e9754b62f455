//! `api`: requests per second and p99 latency of `GET /healthz` with 64 concurrent
//! keep-alive connections, client and server on this machine.

use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::rt::TokioIo;
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

/// Runs `CONNECTIONS` clients, each sending requests back to back on one connection, and
/// returns the merged latency histogram in microseconds.
async fn load(
    addr: std::net::SocketAddr,
    duration: Duration,
) -> anyhow::Result<hdrhistogram::Histogram<u64>> {
    let deadline = Instant::now() + duration;
    let mut clients = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        clients.push(tokio::spawn(async move {
            let stream = tokio::net::TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(connection);
            let mut histogram = hdrhistogram::Histogram::<u64>::new(3)?;
            while Instant::now() < deadline {
                let request = Request::get("/healthz").header("host", "bench").body(Empty::<Bytes>::new())?;
                let sent = Instant::now();
                let response = sender.send_request(request).await?;
                anyhow::ensure!(response.status().is_success(), "healthz answered {}", response.status());
                response.into_body().collect().await?;
                histogram.record(sent.elapsed().as_micros() as u64)?;
            }
            anyhow::Ok(histogram)
        }));
    }
    let mut merged = hdrhistogram::Histogram::<u64>::new(3)?;
    for client in clients {
        merged.add(client.await.context("client task")??)?;
    }
    Ok(merged)
}
