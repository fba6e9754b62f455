//! Adapter calls, coalesced: deliveries waiting for their adapter's verdict go to the plugin
//! workers together, one batch per adapter, while the previous batch runs — the shape of
//! the delivery writer's group commit. Under load one worker round trip serves many
//! deliveries; a delivery arriving alone waits for nothing but its own call.

use std::collections::HashMap;
use std::time::Instant;

use serde_json::{Value, json};
use slipway_plugins::{PluginHost, ScriptKind};
use tokio::sync::{mpsc, oneshot};

use super::TriggerError;
use super::stages::Stage;

/// Most deliveries in one batch.
const MAX_BATCH: usize = 128;
/// Deliveries waiting for a verdict before senders wait too.
const QUEUE: usize = 4096;

struct Job {
    adapter: String,
    request: Value,
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
    pub async fn parse(&self, adapter: &str, request: Value) -> Result<Value, TriggerError> {
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
    let (requests, answers): (Vec<Vec<Value>>, Vec<_>) =
        jobs.into_iter().map(|job| (vec![job.request, json!({})], job.answer)).unzip();
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
                let result = plugins.call(ScriptKind::Trigger, &adapter, None, "parse", args).await;
                let _ = answer.send(result.map(|output| output.result));
            }
        }
    }
}
