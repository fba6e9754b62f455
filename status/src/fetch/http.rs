//! The HTTP fetcher: one pooled client shared by every instance (keep-alive connections
//! per host, rustls for https), with a whole-request deadline, a cap on the body read and
//! a bound on the requests in flight per host.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use reqwest::header::HeaderMap;
use serde_json::Value;
use slipway_plugins::WireValue;
use tokio::sync::Semaphore;

use super::{FetchConfig, ObserveError, chain, io_kind};

#[derive(Debug, Clone)]
pub struct HttpFetcher {
    client: reqwest::Client,
    max_body_bytes: usize,
    timeout: Duration,
    per_host: usize,
    /// Requests in flight per host id (the instance table's `host:port` ids): hyper's pool
    /// has no bound of its own and opens a connection for every request it cannot serve
    /// from an idle one.
    hosts: Arc<Mutex<HashMap<u32, Arc<Semaphore>>>>,
}

impl HttpFetcher {
    /// `user_agent` tells the instance's owner who is asking (with the replica, when the
    /// fleet is sharded).
    pub fn new(config: &FetchConfig, user_agent: &str) -> Result<Self, crate::Error> {
        let client = reqwest::Client::builder()
            .user_agent(user_agent)
            .timeout(config.timeout)
            .connect_timeout(config.connect_timeout)
            .pool_max_idle_per_host(config.max_connections_per_host)
            .pool_idle_timeout(config.idle_timeout)
            .tcp_nodelay(true)
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| crate::Error::Fetcher(chain(&e)))?;
        Ok(Self {
            client,
            max_body_bytes: config.max_body_bytes,
            timeout: config.timeout,
            per_host: config.max_connections_per_host.max(1),
            hosts: Arc::default(),
        })
    }

    /// `{"http": {"status", "headers", "body", "json", "latency_ms"}, "error": null}`, or
    /// `{"http": null, "error": {"kind", "message"}}` when no answer came. `host` is the
    /// id of the URL's `host:port`; the wait for one of its request slots counts against
    /// the check's deadline.
    pub async fn observe(&self, url: &str, host: u32) -> WireValue {
        let started = Instant::now();
        let slots =
            self.hosts.lock().entry(host).or_insert_with(|| Arc::new(Semaphore::new(self.per_host))).clone();
        let slot = tokio::time::timeout(self.timeout, slots.acquire_owned()).await;
        let left = self.timeout.saturating_sub(started.elapsed());
        // A slot freed as the deadline ends (its holder timed out) leaves no time for a
        // request: what the check ran out of was the wait, and its reason says so.
        if !matches!(slot, Ok(Ok(_))) || left < self.timeout / 10 {
            let error = ObserveError::new(
                "timeout",
                format!("GET {url}: no free request slot for this host within {:?}", self.timeout),
            );
            return error.observation("http");
        }
        match self.fetch(url, left).await {
            Ok((status, headers, body)) => {
                let json = parse_json(&body);
                let latency_ms = started.elapsed().as_millis() as i64;
                // Keys in sorted order (see `fetch`'s module comment).
                WireValue::object(|o| {
                    o.null("error");
                    o.object("http", |http| {
                        http.str("body", &body);
                        // One entry per name, the last value of a repeated header.
                        http.object("headers", |fields| {
                            for name in headers.keys() {
                                if let Some(value) = headers.get_all(name).iter().next_back() {
                                    fields.str(name.as_str(), &String::from_utf8_lossy(value.as_bytes()));
                                }
                            }
                        });
                        http.value("json", &json);
                        http.int("latency_ms", latency_ms);
                        http.int("status", i64::from(status));
                    });
                })
            }
            Err(e) => e.observation("http"),
        }
    }

    async fn fetch(&self, url: &str, timeout: Duration) -> Result<(u16, HeaderMap, String), ObserveError> {
        let mut response =
            self.client.get(url).timeout(timeout).send().await.map_err(|e| classify(url, &e))?;
        let status = response.status().as_u16();
        let headers = std::mem::take(response.headers_mut());
        let mut body = Vec::new();
        while body.len() < self.max_body_bytes {
            match response.chunk().await.map_err(|e| classify(url, &e))? {
                Some(chunk) => body.extend_from_slice(&chunk),
                None => break,
            }
        }
        body.truncate(self.max_body_bytes);
        Ok((status, headers, String::from_utf8_lossy(&body).into_owned()))
    }
}

fn parse_json(body: &str) -> Value {
    let trimmed = body.trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        serde_json::from_str(trimmed).unwrap_or(Value::Null)
    } else {
        Value::Null
    }
}

fn classify(url: &str, e: &reqwest::Error) -> ObserveError {
    let message = format!("GET {url}: {}", chain(e));
    let lower = message.to_ascii_lowercase();
    let kind = if e.is_timeout() {
        "timeout"
    } else if lower.contains("dns error") || lower.contains("failed to lookup address") {
        "dns"
    } else if lower.contains("certificate") || lower.contains("tls") || lower.contains("handshake") {
        "tls"
    } else {
        io_kind(e).unwrap_or(if e.is_connect() { "connect" } else { "http" })
    };
    ObserveError::new(kind, message)
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// A one-shot raw TCP server answering every connection with `reply` (or hanging).
    async fn serve(reply: Option<&'static [u8]>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else { return };
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = socket.read(&mut buf).await;
                    match reply {
                        Some(r) => {
                            let _ = socket.write_all(r).await;
                        }
                        None => tokio::time::sleep(std::time::Duration::from_secs(30)).await,
                    }
                });
            }
        });
        format!("http://{addr}/health")
    }

    fn fetcher() -> HttpFetcher {
        let config = FetchConfig { timeout: std::time::Duration::from_millis(500), ..FetchConfig::default() };
        HttpFetcher::new(&config, "slipway-test").unwrap()
    }

    #[tokio::test]
    async fn json_answer_is_parsed() {
        let url = serve(Some(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nx-seen: one\r\nx-seen: two\r\ncontent-length: 15\r\n\r\n{\"status\":\"ok\"}")).await;
        let o = fetcher().observe(&url, 0).await.to_value();
        assert_eq!(o["http"]["status"], 200);
        assert_eq!(o["http"]["json"]["status"], "ok");
        assert_eq!(o["http"]["body"], "{\"status\":\"ok\"}");
        assert!(o["http"]["latency_ms"].is_u64(), "{o}");
        let headers = o["http"]["headers"].as_object().unwrap();
        assert_eq!(headers["content-type"], "application/json");
        assert_eq!(headers["x-seen"], "two", "a repeated header is one field, its last value");
        assert_eq!(headers.len(), 3, "{headers:?}");
        assert!(o["error"].is_null());
    }

    #[tokio::test]
    async fn hanging_garbage_and_refused_targets_are_observations() {
        let hang = fetcher().observe(&serve(None).await, 0).await.to_value();
        assert_eq!(hang["error"]["kind"], "timeout", "{hang}");
        let garbage = fetcher().observe(&serve(Some(b"SSH-2.0-OpenSSH\r\n\r\n")).await, 1).await.to_value();
        assert!(garbage["http"].is_null());
        assert_eq!(garbage["error"]["kind"], "http", "{garbage}");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        drop(listener);
        let refused = fetcher().observe(&url, 2).await.to_value();
        assert_eq!(refused["error"]["kind"], "refused", "{refused}");
    }

    #[tokio::test]
    async fn a_host_gets_at_most_its_request_slots_and_others_are_not_held_up() {
        let config = FetchConfig {
            timeout: std::time::Duration::from_millis(400),
            max_connections_per_host: 1,
            ..FetchConfig::default()
        };
        let f = HttpFetcher::new(&config, "slipway-test").unwrap();
        let hanging = serve(None).await;
        let ok = serve(Some(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")).await;
        let (first, second, other) =
            tokio::join!(f.observe(&hanging, 7), f.observe(&hanging, 7), f.observe(&ok, 8));
        let (first, second, other) = (first.to_value(), second.to_value(), other.to_value());
        let messages =
            [&first, &second].map(|o| o["error"]["message"].as_str().unwrap_or_default().to_owned());
        assert!(messages.iter().any(|m| m.contains("no free request slot")), "{messages:?}");
        assert!([&first, &second].iter().all(|o| o["error"]["kind"] == "timeout"), "{first} {second}");
        assert_eq!(other["http"]["status"], 200, "{other}");
    }
}
