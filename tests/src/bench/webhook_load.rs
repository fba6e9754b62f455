//! The trigger bench's load generator: keep-alive HTTP/1.1 connections (hyper's client
//! connection: no pool, no TLS stack, no redirect or cookie handling), each sending one
//! delivery at a time, on a runtime thread of their own so the CPU the load costs is
//! measured apart from the server's.
//!
//! Closed loop: each connection sends its next delivery as soon as the previous one is
//! answered. Open loop: deliveries are due at a fixed offered rate, spread evenly over the
//! connections, and each latency runs from the time its delivery was due, so an answer that
//! holds up the connection's next delivery counts against that one too (coordinated
//! omission is not hidden).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST};

use super::http_load::connect;

pub const CLIENTS: usize = 64;

type Connection = SendRequest<Full<Bytes>>;

#[derive(Clone, Copy)]
pub enum Pace {
    Closed,
    Open { per_s: f64 },
}

/// Where deliveries go: the trigger's path and its `Authorization` header.
pub struct Target {
    pub path: String,
    pub authorization: String,
}

/// What one flood got back.
pub struct Flood {
    pub accepted: u64,
    /// Refused by a rate limiter (429).
    pub limited: u64,
    /// Latencies of accepted deliveries, in microseconds.
    pub latencies: hdrhistogram::Histogram<u64>,
}

pub struct LoadGenerator {
    runtime: tokio::runtime::Runtime,
    /// The Linux thread id of the runtime's one worker.
    thread: Arc<AtomicU64>,
}

impl LoadGenerator {
    pub fn new() -> anyhow::Result<LoadGenerator> {
        let thread = Arc::new(AtomicU64::new(0));
        let started = thread.clone();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("bench-load")
            .on_thread_start(move || {
                // `/proc/thread-self` links to `<pid>/task/<tid>`.
                let link = std::fs::read_link("/proc/thread-self").unwrap_or_default();
                let tid = link.file_name().and_then(|n| n.to_str()?.parse().ok()).unwrap_or(0);
                started.compare_exchange(0, tid, Ordering::Relaxed, Ordering::Relaxed).ok();
            })
            .enable_all()
            .build()?;
        Ok(LoadGenerator { runtime, thread })
    }

    /// User and system CPU ticks the load generator's thread used so far.
    pub fn cpu_ticks(&self) -> u64 {
        super::trigger::thread_cpu_ticks(&format!("self/task/{}", self.thread.load(Ordering::Relaxed)))
    }

    pub async fn connect(&self, addr: SocketAddr) -> anyhow::Result<Vec<Connection>> {
        let connecting = self.runtime.spawn(async move {
            let mut connections = Vec::with_capacity(CLIENTS);
            for _ in 0..CLIENTS {
                connections.push(connect(addr).await?);
            }
            anyhow::Ok(connections)
        });
        connecting.await?
    }

    /// Sends unique deliveries on every connection for `window` (`round` keeps the commits of
    /// separate floods apart); the connections are handed back for the next flood.
    pub async fn flood(
        &self,
        connections: &mut Vec<Connection>,
        target: &Target,
        round: u8,
        window: Duration,
        pace: Pace,
    ) -> anyhow::Result<Flood> {
        let target =
            Arc::new(Target { path: target.path.clone(), authorization: target.authorization.clone() });
        let started = Instant::now();
        let deadline = started + window;
        let clients = connections.len();
        let tasks: Vec<_> = connections
            .drain(..)
            .enumerate()
            .map(|(client, connection)| {
                let target = target.clone();
                self.runtime.spawn(async move {
                    let due = |n: u64| match pace {
                        Pace::Closed => Instant::now(),
                        Pace::Open { per_s } => {
                            started
                                + Duration::from_secs_f64(
                                    (client as f64 + (n * clients as u64) as f64) / per_s,
                                )
                        }
                    };
                    send_until(connection, &target, deadline, due, |n| {
                        format!("{round:02x}{client:04x}{n:034x}")
                    })
                    .await
                })
            })
            .collect();
        let mut flood = Flood { accepted: 0, limited: 0, latencies: hdrhistogram::Histogram::new(3)? };
        for task in tasks {
            let (connection, part) = task.await.context("load client")??;
            connections.push(connection);
            flood.accepted += part.accepted;
            flood.limited += part.limited;
            flood.latencies.add(part.latencies)?;
        }
        Ok(flood)
    }

    pub fn shut_down(self) {
        self.runtime.shutdown_background();
    }
}

/// One connection's share of a flood: delivery `n` is due at `due(n)` and carries the commit
/// `commit(n)`.
async fn send_until(
    mut connection: Connection,
    target: &Target,
    deadline: Instant,
    due: impl Fn(u64) -> Instant,
    commit: impl Fn(u64) -> String,
) -> anyhow::Result<(Connection, Flood)> {
    let mut flood = Flood { accepted: 0, limited: 0, latencies: hdrhistogram::Histogram::new(3)? };
    for n in 0.. {
        let due = due(n);
        if due >= deadline {
            break;
        }
        if due > Instant::now() {
            tokio::time::sleep_until(due.into()).await;
        }
        let body = format!(
            r#"{{"action":"build","repository":"acme/shop","ref":"refs/heads/main","commit":"{}"}}"#,
            commit(n)
        );
        let request = Request::post(target.path.as_str())
            .header(HOST, "bench")
            .header(AUTHORIZATION, target.authorization.as_str())
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))?;
        connection.ready().await?;
        let response = connection.send_request(request).await?;
        let status = response.status().as_u16();
        let answer = response.into_body().collect().await?.to_bytes();
        match status {
            202 => {
                flood.accepted += 1;
                flood.latencies.record(due.elapsed().as_micros() as u64)?;
            }
            429 => flood.limited += 1,
            other => anyhow::bail!("delivery answered {other}: {}", String::from_utf8_lossy(&answer)),
        }
    }
    Ok((connection, flood))
}
