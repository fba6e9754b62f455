//! A closed-loop HTTP load generator: keep-alive HTTP/1.1 clients, each sending GETs back to
//! back on its own connection, latencies merged into one histogram (microseconds).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

/// Runs `connections` clients for `duration`. `paths(client)` gives each client its own
/// source of request paths; `authorization` is sent as that header when given.
pub async fn run<P>(
    addr: SocketAddr,
    connections: usize,
    duration: Duration,
    authorization: Option<&str>,
    paths: impl Fn(usize) -> P,
) -> anyhow::Result<hdrhistogram::Histogram<u64>>
where
    P: FnMut() -> String + Send + 'static,
{
    let deadline = Instant::now() + duration;
    let mut clients = Vec::with_capacity(connections);
    for client in 0..connections {
        let mut next_path = paths(client);
        let authorization = authorization.map(str::to_owned);
        clients.push(tokio::spawn(async move {
            let mut sender = connect(addr).await?;
            let mut histogram = hdrhistogram::Histogram::<u64>::new(3)?;
            while Instant::now() < deadline {
                let mut request = Request::get(next_path()).header("host", "bench");
                if let Some(value) = &authorization {
                    request = request.header("authorization", value);
                }
                let request = request.body(Empty::<Bytes>::new())?;
                let sent = Instant::now();
                let response = sender.send_request(request).await?;
                anyhow::ensure!(response.status().is_success(), "answered {}", response.status());
                response.into_body().collect().await?;
                histogram.record(sent.elapsed().as_micros() as u64)?;
            }
            anyhow::Ok(histogram)
        }));
    }
    let mut merged = hdrhistogram::Histogram::<u64>::new(3)?;
    for client in clients {
        merged.add(client.await.context("load client")??)?;
    }
    Ok(merged)
}

/// A keep-alive HTTP/1.1 connection to `addr`, Nagle's algorithm off (a request is one
/// small write that must not wait for the previous answer's ACK); its driver runs as a task.
pub async fn connect<B>(addr: SocketAddr) -> anyhow::Result<SendRequest<B>>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    Ok(sender)
}
