//! Observation: the host side of a check. Fetchers pull the state of a target and turn it
//! into the observation shape of the plugin contract; a failure (timeout, refused
//! connection, DNS, TLS, a garbled answer, a cluster that is down) is itself an
//! observation, with `error` set, that the status plugin judges. Observations are written
//! straight into the plugin host's wire form ([`WireValue`]): the host copies them into its
//! batches as they are, without walking a `serde_json::Value` tree per check. Their keys
//! come in sorted order, as `serde_json` maps kept them before: the worker keeps argument
//! objects and their shapes from call to call, and measured on `status/http` the sorted
//! order cost it ≈ 560 instructions per check less than the contract's order.

mod http;
mod kube;
mod tcp;

use std::time::Duration;

use serde::{Deserialize, Serialize};
use slipway_plugins::{ObjectWriter, WireValue};

pub use self::http::HttpFetcher;
pub use self::kube::{ClusterRegistry, KubeFetcher};
pub use self::tcp::TcpFetcher;
use crate::table::Target;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FetchConfig {
    /// Whole-check deadline (connect, request and body).
    #[serde(with = "crate::schedule::millis")]
    pub timeout: Duration,
    #[serde(with = "crate::schedule::millis")]
    pub connect_timeout: Duration,
    /// HTTP requests in flight per host (`host:port`), which is also the most connections
    /// opened to it and the idle ones kept for the next round. Each connection costs about
    /// 30 kB of buffers and channels: without this bound a burst against a few hosts opened
    /// one connection per check in flight (thousands, over 100 MB at 100,000 instances).
    pub max_connections_per_host: usize,
    /// How long an idle connection is kept. Every kept connection is an open file: over
    /// many distinct hosts the idle ones number about checks per second × this.
    #[serde(with = "crate::schedule::millis")]
    pub idle_timeout: Duration,
    /// Bytes of a response body handed to the plugin; the rest is not read.
    pub max_body_bytes: usize,
    /// How long one Kubernetes LIST answers for every instance of its group.
    #[serde(with = "crate::schedule::millis")]
    pub kube_list_ttl: Duration,
}

impl Default for FetchConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(4),
            connect_timeout: Duration::from_secs(2),
            max_connections_per_host: 128,
            idle_timeout: Duration::from_secs(15),
            max_body_bytes: 64 * 1024,
            kube_list_ttl: Duration::from_secs(2),
        }
    }
}

/// Why an observation failed, in the contract's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObserveError {
    pub kind: &'static str,
    pub message: String,
}

impl ObserveError {
    pub fn new(kind: &'static str, message: impl Into<String>) -> Self {
        Self { kind, message: message.into() }
    }

    /// The observation's `error` field: `{"kind", "message"}`.
    pub fn write(&self, observation: &mut ObjectWriter<'_>) {
        observation.object("error", |error| {
            error.str("kind", self.kind);
            error.str("message", &self.message);
        });
    }

    /// An observation with no answer: `{"error": {"kind", "message"}, <shape>: null}`
    /// (every shape's name sorts after `error`).
    pub fn observation(&self, shape: &str) -> WireValue {
        WireValue::object(|o| {
            self.write(o);
            o.null(shape);
        })
    }
}

/// Every fetcher, chosen by target.
#[derive(Clone)]
pub struct Fetchers {
    pub http: HttpFetcher,
    pub tcp: TcpFetcher,
    pub kube: KubeFetcher,
}

impl Fetchers {
    pub fn new(
        config: FetchConfig,
        clusters: ClusterRegistry,
        user_agent: &str,
    ) -> Result<Self, crate::Error> {
        Ok(Self {
            http: HttpFetcher::new(&config, user_agent)?,
            tcp: TcpFetcher::new(&config),
            kube: KubeFetcher::new(&config, clusters),
        })
    }

    /// Observes `target`; never fails: failures are observations.
    pub async fn observe(&self, target: &Target) -> WireValue {
        match target {
            Target::Http { url, host } => self.http.observe(url, *host).await,
            Target::Tcp { address, .. } => self.tcp.observe(address).await,
            Target::Kube { list, name, .. } => self.kube.observe(list, name).await,
        }
    }
}

/// The most specific cause of an I/O failure in an error's source chain.
fn io_kind(error: &(dyn std::error::Error + 'static)) -> Option<&'static str> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return Some(match io.kind() {
                std::io::ErrorKind::ConnectionRefused => "refused",
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted => "reset",
                std::io::ErrorKind::TimedOut => "timeout",
                _ => "io",
            });
        }
        current = e.source();
    }
    None
}

/// The error and its causes on one line (reqwest's top-level message hides the cause).
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![error.to_string()];
    let mut current = error.source();
    while let Some(e) = current {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        current = e.source();
    }
    parts.join(": ")
}
