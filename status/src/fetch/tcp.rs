//! The TCP fetcher: can a connection be opened, and how fast.

use std::time::{Duration, Instant};

use slipway_plugins::WireValue;
use tokio::net::TcpStream;

use super::{FetchConfig, ObserveError, io_kind};

#[derive(Debug, Clone)]
pub struct TcpFetcher {
    timeout: Duration,
}

impl TcpFetcher {
    pub fn new(config: &FetchConfig) -> Self {
        Self { timeout: config.connect_timeout.min(config.timeout) }
    }

    /// `{"tcp": {"connected", "latency_ms"}, "error": null | {"kind", "message"}}`.
    pub async fn observe(&self, address: &str) -> WireValue {
        let started = Instant::now();
        let result = match tokio::time::timeout(self.timeout, TcpStream::connect(address)).await {
            Ok(Ok(_stream)) => Ok(()),
            Ok(Err(e)) => Err(ObserveError::new(io_kind(&e).unwrap_or("connect"), format!("{address}: {e}"))),
            Err(_) => Err(ObserveError::new(
                "timeout",
                format!("{address}: no connection within {:?}", self.timeout),
            )),
        };
        let latency_ms = started.elapsed().as_millis() as i64;
        WireValue::object(|o| {
            match &result {
                Ok(()) => o.null("error"),
                Err(e) => e.write(o),
            }
            o.object("tcp", |tcp| {
                tcp.bool("connected", result.is_ok());
                tcp.int("latency_ms", latency_ms);
            });
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn open_and_closed_ports() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let open = listener.local_addr().unwrap().to_string();
        let f = TcpFetcher::new(&FetchConfig::default());
        let ok = f.observe(&open).await.to_value();
        assert_eq!(ok["tcp"]["connected"], true);
        assert!(ok["error"].is_null());
        drop(listener);
        let closed = f.observe(&open).await.to_value();
        assert_eq!(closed["tcp"]["connected"], false);
        assert_eq!(closed["error"]["kind"], "refused");
    }
}
