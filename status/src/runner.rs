//! The runner: one dispatcher loop over the scheduler's timer wheel, fetch tasks bounded by
//! a semaphore, and one judge loop that hands results to the status plugins in batches
//! grouped by plugin name.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use parking_lot::Mutex;
use slipway_plugins::{CheckInput, PluginHost, WireValue};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use crate::events::TransitionEvent;
use crate::fetch::Fetchers;
use crate::health::Health;
use crate::scheduler::{Job, Scheduler, Verdict};

/// How often the dispatcher looks at the wheel (its resolution).
const DISPATCH_EVERY: Duration = Duration::from_millis(100);
/// Most results judged in one batch.
const MAX_JUDGE_BATCH: usize = 2_048;
/// A batch the plugin host has not judged by then is answered `unknown`, so a stuck
/// worker cannot hold instances in flight (and off the schedule) forever.
const JUDGE_TIMEOUT: Duration = Duration::from_secs(10);

/// Monotonic milliseconds since the service started (never zero), for the scheduler.
#[derive(Debug, Clone, Copy)]
pub struct MonoClock(Instant);

impl MonoClock {
    pub fn start() -> Self {
        Self(Instant::now())
    }

    pub fn now_ms(&self) -> u64 {
        self.0.elapsed().as_millis() as u64 + 1
    }

    /// `at` on this clock.
    pub fn ms_at(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.0).as_millis() as u64 + 1
    }
}

/// True when the lease `fence` holds has run out by `now_ms`; everything owned is then let
/// go, so checks in flight are not waited for and nothing is checked until the next
/// placement.
pub fn let_go_if_lapsed(fence: &AtomicU64, scheduler: &Mutex<Scheduler>, now_ms: u64) -> bool {
    if fence.load(Ordering::SeqCst) > now_ms {
        return false;
    }
    let released = scheduler.lock().release_all();
    if released > 0 {
        tracing::warn!(released, "the status lease ran out: stopped checking until the next heartbeat");
    }
    true
}

pub fn wall_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// A fetched check on its way to judgement. It holds its `max_in_flight` permit until
/// then, so when judging falls behind, fetching waits instead of piling up observations in
/// memory (each is a few kilobytes of JSON values).
struct Fetched {
    job: Job,
    observation: WireValue,
    _permit: OwnedSemaphorePermit,
}

pub struct Runner {
    pub scheduler: Arc<Mutex<Scheduler>>,
    pub fetchers: Fetchers,
    pub plugins: PluginHost,
    pub clock: MonoClock,
    pub max_in_flight: usize,
    /// Where transitions go (history and subscribers).
    pub sink: mpsc::UnboundedSender<Vec<TransitionEvent>>,
    /// Checks run and results count only while the clock is before this (see
    /// `service::Sharding`); `u64::MAX` on a single node.
    pub fence: Arc<AtomicU64>,
}

impl Runner {
    /// Runs until the returned handles are aborted.
    pub fn spawn(self) -> Vec<tokio::task::JoinHandle<()>> {
        // Every check in the channel holds a permit, so sends never wait long.
        let (results_tx, results_rx) = mpsc::channel(self.max_in_flight.max(1));
        let this = Arc::new(self);
        vec![tokio::spawn(this.clone().dispatch(results_tx)), tokio::spawn(this.judge(results_rx))]
    }

    async fn dispatch(self: Arc<Self>, results: mpsc::Sender<Fetched>) {
        let permits = Arc::new(Semaphore::new(self.max_in_flight));
        let mut tick = tokio::time::interval(DISPATCH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut last_prune = 0;
        loop {
            tick.tick().await;
            let now = self.clock.now_ms();
            if self.fenced(now) {
                continue;
            }
            let (jobs, deferred, waiting) = {
                let mut s = self.scheduler.lock();
                let (jobs, deferred) = s.take_due(now, permits.available_permits());
                if now - last_prune > 10_000 {
                    s.prune(now);
                    last_prune = now;
                    metrics::gauge!("slipway_status_instances").set(s.table.len() as f64);
                }
                (jobs, deferred, s.waiting())
            };
            metrics::counter!("slipway_status_checks_deferred_total", "limit" => "global")
                .increment(deferred.by_global as u64);
            metrics::counter!("slipway_status_checks_deferred_total", "limit" => "target")
                .increment(deferred.by_target as u64);
            metrics::gauge!("slipway_status_checks_waiting", "priority" => "urgent").set(waiting.0 as f64);
            metrics::gauge!("slipway_status_checks_waiting", "priority" => "routine").set(waiting.1 as f64);
            metrics::gauge!("slipway_status_checks_in_flight")
                .set((self.max_in_flight - permits.available_permits()) as f64);
            for job in jobs {
                let Ok(permit) = permits.clone().try_acquire_owned() else { break };
                let fetchers = self.fetchers.clone();
                let results = results.clone();
                tokio::spawn(async move {
                    let started = Instant::now();
                    let observation = fetchers.observe(&job.target).await;
                    metrics::histogram!("slipway_status_observe_duration_seconds")
                        .record(started.elapsed().as_secs_f64());
                    let _ = results.send(Fetched { job, observation, _permit: permit }).await;
                });
            }
        }
    }

    /// Keeps several batches with the plugin host at once, so the host encodes and decodes
    /// one while the worker processes run the others; verdicts are applied as each batch
    /// comes back, in whatever order.
    async fn judge(self: Arc<Self>, mut results: mpsc::Receiver<Fetched>) {
        let most_in_flight = self.plugins.config().worker_count() + 1;
        let mut in_flight = FuturesUnordered::new();
        let mut open = true;
        while open || !in_flight.is_empty() {
            tokio::select! {
                biased;
                Some(judged) = in_flight.next(), if !in_flight.is_empty() => match judged {
                    Ok(verdicts) => self.settle(verdicts),
                    Err(e) => tracing::error!(error = %e, "a judge task failed; its checks are lost"),
                },
                first = results.recv(), if open && in_flight.len() < most_in_flight => {
                    let Some(first) = first else {
                        open = false;
                        continue;
                    };
                    let mut batch = vec![first];
                    while batch.len() < MAX_JUDGE_BATCH {
                        match results.try_recv() {
                            Ok(item) => batch.push(item),
                            Err(_) => break,
                        }
                    }
                    // A task of its own, so the host's encoding of one batch runs on the
                    // other core while this loop applies another.
                    let this = self.clone();
                    in_flight.push(tokio::spawn(async move {
                        let started = Instant::now();
                        let verdicts = this.verdicts(batch).await;
                        metrics::histogram!("slipway_status_judge_batch_seconds")
                            .record(started.elapsed().as_secs_f64());
                        verdicts
                    }));
                }
            }
        }
    }

    fn fenced(&self, now_ms: u64) -> bool {
        let_go_if_lapsed(&self.fence, &self.scheduler, now_ms)
    }

    /// Applies one judged batch and passes its transitions on. Without a lease the batch
    /// is dropped: the instances may be another replica's by now.
    fn settle(&self, verdicts: Vec<Verdict>) {
        let now = self.clock.now_ms();
        if self.fenced(now) {
            return;
        }
        metrics::counter!("slipway_status_checks_total").increment(verdicts.len() as u64);
        let events = {
            let mut s = self.scheduler.lock();
            let transitions = s.apply(verdicts, now, wall_ms());
            transitions.into_iter().map(|t| s.event(t)).collect::<Vec<_>>()
        };
        if !events.is_empty() {
            metrics::counter!("slipway_status_transitions_total").increment(events.len() as u64);
            let _ = self.sink.send(events);
        }
    }

    /// Judges a batch: one `check_batch` call per status plugin in it. The permits of its
    /// checks are released once it is judged.
    async fn verdicts(&self, batch: Vec<Fetched>) -> Vec<Verdict> {
        let mut by_plugin: HashMap<Arc<str>, Vec<(Job, WireValue)>> = HashMap::new();
        for Fetched { job, observation, .. } in batch {
            by_plugin.entry(job.plugin.clone()).or_default().push((job, observation));
        }
        let mut verdicts = Vec::new();
        for (plugin, items) in by_plugin {
            let keys: Vec<(u32, u32)> = items.iter().map(|(j, _)| (j.index, j.generation)).collect();
            let inputs: Vec<CheckInput> = items
                .into_iter()
                .map(|(job, observation)| CheckInput {
                    instance_id: job.instance_id,
                    memo: job.target.observation_repeats(),
                    instance: job.instance,
                    observation,
                })
                .collect();
            let judged: Vec<(Health, String)> =
                match tokio::time::timeout(JUDGE_TIMEOUT, self.plugins.check_batch(&plugin, &inputs)).await {
                    Err(_) => {
                        let reason =
                            format!("status plugin status/{plugin} gave no verdict within {JUDGE_TIMEOUT:?}");
                        keys.iter().map(|_| (Health::Unknown, reason.clone())).collect()
                    }
                    Ok(Ok(results)) if results.len() == keys.len() => results
                        .into_iter()
                        .map(|r| match r {
                            Ok(v) => (v.status.into(), v.reason.to_string()),
                            Err(e) => (Health::Unknown, format!("status plugin failed: {e}")),
                        })
                        .collect(),
                    Ok(Ok(results)) => {
                        let reason = format!(
                            "status plugin status/{plugin} answered {} of {} checks",
                            results.len(),
                            keys.len()
                        );
                        keys.iter().map(|_| (Health::Unknown, reason.clone())).collect()
                    }
                    Ok(Err(e)) => {
                        let reason = format!("status plugin status/{plugin} failed: {e}");
                        keys.iter().map(|_| (Health::Unknown, reason.clone())).collect()
                    }
                };
            verdicts.extend(keys.into_iter().zip(judged).map(|((index, generation), (health, reason))| {
                Verdict { index, generation, health, reason }
            }));
        }
        verdicts
    }
}
