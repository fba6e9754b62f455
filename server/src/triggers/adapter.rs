//! Adapter calls, coalesced: deliveries waiting for their adapter's verdict go to the plugin
//! workers together, one batch per adapter, while the previous batch runs — the shape of
//! the delivery writer's group commit. Under load one worker round trip serves many
//! deliveries; a delivery arriving alone waits for nothing but its own call.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use axum::http::HeaderMap;
use serde_json::Value;
use slipway_plugins::{PluginHost, ScriptKind, WireValue};
use tokio::sync::{mpsc, oneshot};

use super::TriggerError;
use super::stages::Stage;

/// Most deliveries in one batch.
const MAX_BATCH: usize = 128;
/// Deliveries waiting for a verdict before senders wait too.
const QUEUE: usize = 4096;

struct Job {
    adapter: String,
    request: WireValue,
    queued: Instant,
    answer: oneshot::Sender<Result<Value, slipway_plugins::Error>>,
}

#[derive(Clone)]
pub struct AdapterCalls {
    jobs: mpsc::Sender<Job>,
}

impl AdapterCalls {
    /// Starts the caller task; it ends when the last handle is dropped.
    pub fn spawn(plugins: PluginHost) -> Self {
        let (jobs, queue) = mpsc::channel(QUEUE);
        tokio::spawn(run(plugins, queue));
        Self { jobs }
    }

    /// What `parse` of the active revision of `trigger/<adapter>` makes of `request`.
    pub async fn parse(&self, adapter: &str, request: WireValue) -> Result<Value, TriggerError> {
        let (answer, answered) = oneshot::channel();
        let job = Job { adapter: adapter.to_owned(), request, queued: Instant::now(), answer };
        self.jobs.send(job).await.map_err(|_| TriggerError::AdapterCallsStopped)?;
        Ok(answered.await.map_err(|_| TriggerError::AdapterCallsStopped)??)
    }
}

async fn run(plugins: PluginHost, mut queue: mpsc::Receiver<Job>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let mut by_adapter: HashMap<String, Vec<Job>> = HashMap::new();
        let sent = Instant::now();
        for job in batch.drain(..) {
            Stage::AdapterQueue.record(sent - job.queued, 1);
            by_adapter.entry(job.adapter.clone()).or_default().push(job);
        }
        let calls = by_adapter.into_iter().map(|(adapter, jobs)| call(&plugins, adapter, jobs));
        futures::future::join_all(calls).await;
    }
}

async fn call(plugins: &PluginHost, adapter: String, jobs: Vec<Job>) {
    // `parse(request, ctx)`: the adapters are given an empty context.
    let context = WireValue::object(|_| {});
    let (requests, answers): (Vec<Vec<WireValue>>, Vec<_>) =
        jobs.into_iter().map(|job| (vec![job.request, context.clone()], job.answer)).unzip();
    let started = Instant::now();
    match plugins.call_batch(ScriptKind::Trigger, &adapter, None, "parse", &requests).await {
        Ok(results) => {
            Stage::AdapterCall.record(started.elapsed(), results.len());
            for (answer, result) in answers.into_iter().zip(results) {
                let _ = answer.send(result.map(|output| output.result));
            }
        }
        // A failure of the whole batch (the adapter is gone, a worker would not start): each
        // delivery is called alone, so each gets its own typed error.
        Err(_) => {
            for (answer, args) in answers.into_iter().zip(requests) {
                let alone = plugins.call_batch(ScriptKind::Trigger, &adapter, None, "parse", &[args]).await;
                let result = alone.and_then(|mut results| results.pop().expect("one result per call"));
                let _ = answer.send(result.map(|output| output.result));
            }
        }
    }
}

/// The adapter's view of the request: lowercase header names without the trigger's
/// secrets, the body as text and as JSON (null when it is not). Written in the wire form
/// the workers read, with keys in the order a `serde_json` object keeps them (sorted), so
/// a script sees exactly what it saw when this was built as a `Value` first.
pub fn request(headers: &HeaderMap, body: &[u8]) -> WireValue {
    // A name sent more than once keeps its last readable value, as a map collected from
    // the list keeps it.
    let headers: BTreeMap<&str, &str> = headers
        .iter()
        .filter(|(name, _)| *name != "authorization" && *name != "x-gitlab-token")
        .filter_map(|(name, value)| Some((name.as_str(), value.to_str().ok()?)))
        .collect();
    let json = serde_json::from_slice::<Value>(body).unwrap_or(Value::Null);
    WireValue::object(|request| {
        request.str("body", &String::from_utf8_lossy(body));
        request.object("headers", |fields| {
            for (name, value) in &headers {
                fields.str(name, value);
            }
        });
        request.value("json", &json);
    })
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;
    use serde_json::json;

    use super::*;

    /// Compared byte for byte with the `Value` it replaced: the script's objects are built
    /// from these bytes, key order included.
    #[test]
    fn the_request_is_the_wire_form_of_the_json_view() {
        let mut headers = HeaderMap::new();
        headers.insert("x-github-event", HeaderValue::from_static("push"));
        headers.insert("authorization", HeaderValue::from_static("Bearer s3cret"));
        headers.insert("x-gitlab-token", HeaderValue::from_static("s3cret"));
        headers.append("accept", HeaderValue::from_static("text/plain"));
        headers.append("accept", HeaderValue::from_static("application/json"));
        headers.append("accept", HeaderValue::from_bytes(b"\xff").unwrap());
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        let body = br#"{"ref": "refs/heads/main", "n": [1, 2.5, null], "big": 4294967296}"#;
        let expected = json!({
            "headers": {"accept": "application/json", "content-type": "application/json", "x-github-event": "push"},
            "body": std::str::from_utf8(body).unwrap(),
            "json": {"ref": "refs/heads/main", "n": [1, 2.5, null], "big": 4294967296u64},
        });
        assert_eq!(request(&headers, body), WireValue::from_value(&expected));

        let text = b"not json \xf0";
        let expected = json!({"headers": {}, "body": String::from_utf8_lossy(text), "json": null});
        assert_eq!(request(&HeaderMap::new(), text), WireValue::from_value(&expected));
    }
}
