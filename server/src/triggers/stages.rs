//! Where an accepted delivery's time goes: one histogram per stage of the delivery path on
//! `/metrics` (`slipway_trigger_stage_seconds{stage}`), so a latency tail is traced to the
//! stage that makes it — queueing behind a batch, the batch itself, the log flush — instead
//! of guessed. Only deliveries that reach a stage are counted in it; `total` counts the
//! deliveries that started a build, and what `total` holds beyond the other stages is the
//! time tasks waited to run after they were woken.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The histogram's name; its buckets (`BUCKETS`) are set where the recorder is built.
pub const METRIC: &str = "slipway_trigger_stage_seconds";

/// Bucket bounds in seconds: fine below 30 ms, where the latency goal is.
pub const BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.004, 0.005, 0.006, 0.008, 0.01,
    0.0125, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.1, 0.25, 1.0,
];

/// The stages, in the order a delivery passes them.
#[derive(Clone, Copy, Debug)]
pub enum Stage {
    /// Rate limits, the trigger's row and the secret.
    Checks,
    /// Waiting for the adapter caller to send the delivery's batch to the plugin workers.
    AdapterQueue,
    /// The adapter batch's call into the plugin workers, until its last answer.
    AdapterCall,
    /// From the adapter's verdict to the delivery writer's queue: the build request made and
    /// validated, the replay keys.
    Prepare,
    /// Waiting for the delivery writer to begin the delivery's batch.
    WriterQueue,
    /// The batch's transaction.
    Commit,
    /// From the commit to the answer of the log flush that makes it durable.
    Flush,
    /// The whole of `Triggers::deliver`.
    Total,
}

impl Stage {
    pub fn label(self) -> &'static str {
        match self {
            Stage::Checks => "checks",
            Stage::AdapterQueue => "adapter_queue",
            Stage::AdapterCall => "adapter_call",
            Stage::Prepare => "prepare",
            Stage::WriterQueue => "writer_queue",
            Stage::Commit => "commit",
            Stage::Flush => "flush",
            Stage::Total => "total",
        }
    }

    const ALL: [Stage; 8] = [
        Stage::Checks,
        Stage::AdapterQueue,
        Stage::AdapterCall,
        Stage::Prepare,
        Stage::WriterQueue,
        Stage::Commit,
        Stage::Flush,
        Stage::Total,
    ];

    /// Records `spent` for `deliveries` deliveries (a batch's stage is each delivery's).
    pub fn record(self, spent: Duration, deliveries: usize) {
        // The handles are looked up once: a lookup builds the labelled key and hashes it
        // into the registry, several times per delivery. The first record comes from a
        // delivery, after the server installed its recorder.
        static HISTOGRAMS: OnceLock<[metrics::Histogram; Stage::ALL.len()]> = OnceLock::new();
        let histograms = HISTOGRAMS
            .get_or_init(|| Stage::ALL.map(|stage| metrics::histogram!(METRIC, "stage" => stage.label())));
        histograms[self as usize].record_many(spent.as_secs_f64(), deliveries);
    }

    /// Records the time since `since` for one delivery; returns now, where the next stage
    /// starts.
    pub fn done(self, since: Instant) -> Instant {
        let now = Instant::now();
        self.record(now - since, 1);
        now
    }
}

// `record` indexes its handles by discriminant: each stage sits at its own index in `ALL`.
const _: () = {
    let mut i = 0;
    while i < Stage::ALL.len() {
        assert!(Stage::ALL[i] as usize == i, "Stage::ALL lists the stages in declaration order");
        i += 1;
    }
};
