//! The trigger API: an external CI system's webhook, authenticated by the trigger's own
//! secret, read by the trigger's adapter plugin, deduplicated and turned into a build.
//!
//! Order of checks for a delivery: rate limits (cheapest, no database work), authenticity,
//! the adapter's verdict, the branch filter; then the delivery writer claims its replay keys
//! and stores its build in one transaction, or finds the build of the delivery it replays.
//! A delivery that starts nothing leaves no claim behind, so the sender may retry it.

mod adapter;
mod batch;
mod branch;
mod budget;
mod checkpoint;
mod sqlite_writer;
mod stages;
mod store;
pub mod verify;
mod wal;
mod writer;

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde_json::Value;
use sha2::{Digest, Sha256};
use slipway_plugins::{PluginHost, ScriptKind};

pub use budget::MIGRATIONS as BUDGET_MIGRATIONS;
pub use stages::{BUCKETS as STAGE_BUCKETS, METRIC as STAGE_METRIC};
pub use store::{MIGRATIONS, Trigger, TriggerComponent, TriggerConfig};
pub use verify::AuthMode;

use crate::config::TriggersConfig;
use crate::pipeline::{BuildSubmission, BuildView, ComponentSpec, Pipeline, PipelineError, SourceRequest};
use crate::storage::{Dialect, now_ms};
use adapter::AdapterCalls;
use budget::Budgets;
use stages::Stage;
use store::TriggerStore;
use writer::DeliveryWriter;

/// Headers CI systems put a unique delivery id in.
const DELIVERY_HEADERS: &[&str] = &["x-github-delivery", "x-gitlab-event-uuid", "idempotency-key"];
/// How often limiter entries of clients and budgets of triggers that went quiet are dropped.
const LIMITER_PRUNE: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum TriggerError {
    #[error("no trigger with id {id}")]
    NotFound { id: String },
    #[error("the delivery is not authentic: {0}")]
    Unauthentic(String),
    #[error("too many deliveries for {scope}; retry in {retry_after_s} s")]
    RateLimited { scope: &'static str, retry_after_s: u64 },
    #[error("the {adapter} adapter rejected the delivery: {reason}")]
    Rejected { adapter: String, reason: String },
    #[error("the trigger is invalid: {}", problems.join("; "))]
    Invalid { problems: Vec<String> },
    #[error("the delivery writer has stopped")]
    WriterStopped,
    #[error("flushing the database log failed: {0}")]
    Flush(Arc<std::io::Error>),
    #[error("the adapter caller has stopped")]
    AdapterCallsStopped,
    #[error(transparent)]
    Plugin(#[from] slipway_plugins::Error),
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    #[error("trigger storage: {0}")]
    Database(#[from] sqlx::Error),
    #[error("trigger storage (the delivery writer's connection): {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("the delivery writer's thread could not start: {0}")]
    WriterThread(std::io::Error),
    #[error("stored trigger data is unreadable: {0}")]
    Corrupt(String),
}

/// What became of a delivery.
pub enum Delivery {
    /// A build was stored and will run.
    Started(BuildView),
    /// A replay of an earlier delivery: its build, nothing new.
    Duplicate(BuildView),
    /// Authentic and well-formed, but filtered out (e.g. a branch no pattern names).
    Ignored { reason: String },
}

/// What the adapter and the branch filter made of an authentic delivery.
enum Verdict {
    Build(BuildSubmission),
    Ignored { reason: String },
}

#[derive(Clone)]
pub struct Triggers {
    store: TriggerStore,
    plugins: PluginHost,
    adapters: AdapterCalls,
    pipeline: Pipeline,
    writer: DeliveryWriter,
    /// How long a delivery's claims make its replays duplicates.
    window_ms: i64,
    /// Per-trigger limits, held across replicas.
    budgets: Budgets,
    /// A flood guard of this replica: the address a replica sees is its own business (behind
    /// a load balancer, often the balancer's), and it must cost no database work.
    per_client: Arc<DefaultKeyedRateLimiter<IpAddr>>,
}

fn quota(per_s: u32) -> Quota {
    Quota::per_second(NonZeroU32::new(per_s.max(1)).expect("at least one"))
}

impl Triggers {
    /// Opens the triggers and starts their delivery writer and limiter pruning (both end
    /// when the last handle is dropped).
    pub fn new(
        db: sqlx::AnyPool,
        dialect: Dialect,
        plugins: PluginHost,
        pipeline: Pipeline,
        config: &TriggersConfig,
    ) -> Self {
        let window_ms = config.dedupe_window_s as i64 * 1000;
        let triggers = Self {
            store: TriggerStore::new(db.clone()),
            budgets: Budgets::new(db.clone(), dialect, config.per_trigger_per_s),
            adapters: AdapterCalls::spawn(plugins.clone()),
            plugins,
            writer: DeliveryWriter::spawn(
                db,
                dialect,
                pipeline.clone(),
                window_ms,
                Duration::from_secs(config.claim_prune_every_s.max(1)),
            ),
            window_ms,
            pipeline,
            per_client: Arc::new(RateLimiter::keyed(quota(config.per_client_per_s))),
        };
        let (per_client, budgets) = (Arc::downgrade(&triggers.per_client), triggers.budgets.clone());
        tokio::spawn(async move {
            let mut every = tokio::time::interval(LIMITER_PRUNE);
            loop {
                every.tick().await;
                let Some(per_client) = per_client.upgrade() else { break };
                // A key whose bucket refilled is the same as no key: forgetting it bounds the
                // memory a stream of new client addresses can take.
                per_client.retain_recent();
                drop(per_client);
                if let Err(e) = budgets.prune().await {
                    tracing::warn!(error = %e, "pruning the rate budgets of quiet triggers failed");
                }
            }
        });
        triggers
    }

    /// Creates a trigger; the returned secret is the only time it is shown.
    pub async fn create(
        &self,
        app: &str,
        adapter: &str,
        auth: Option<AuthMode>,
        config: TriggerConfig,
    ) -> Result<(Trigger, String), TriggerError> {
        let mut problems = Vec::new();
        if let Err(e) = slipway_registry::names::check_app(app) {
            problems.push(e.to_string());
        }
        if let Err(e) = self.plugins.revisions(ScriptKind::Trigger, adapter).await {
            problems.push(format!("adapter `{adapter}`: {e}"));
        }
        if config.components.is_empty() {
            problems.push("a trigger needs at least one component to build".into());
        }
        if !problems.is_empty() {
            return Err(TriggerError::Invalid { problems });
        }
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).expect("the operating system's random source is available");
        let trigger = Trigger {
            id: uuid::Uuid::now_v7().simple().to_string(),
            app: app.into(),
            adapter: adapter.into(),
            auth: auth.unwrap_or_else(|| AuthMode::for_adapter(adapter)),
            config,
            created_at_ms: now_ms(),
            secret: hex::encode(secret),
        };
        self.store.insert(&trigger).await?;
        let secret = trigger.secret.clone();
        Ok((trigger, secret))
    }

    pub async fn list(&self) -> Result<Vec<Trigger>, TriggerError> {
        self.store.list().await
    }

    pub async fn get(&self, id: &str) -> Result<Trigger, TriggerError> {
        self.store.get(id).await
    }

    pub async fn delete(&self, id: &str) -> Result<(), TriggerError> {
        self.store.delete(id).await
    }

    /// Handles one webhook delivery.
    pub async fn deliver(
        &self,
        id: &str,
        client: IpAddr,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<Delivery, TriggerError> {
        let started = Instant::now();
        // The limits come before the secret is checked or the body read. The client's costs
        // a memory lookup; an id that cannot be a trigger's is refused before any database
        // work; the trigger's budget is leased only for a trigger that exists, and a flood
        // past it costs a memory lookup too.
        limit(&self.per_client, &client, "this client")?;
        let key = trigger_key(id).ok_or_else(|| TriggerError::NotFound { id: id.into() })?;
        let trigger = self.store.cached(id).await?;
        self.budgets.take(key, &trigger.id).await?;
        verify::verify(trigger.auth, &trigger.secret, headers, body).map_err(TriggerError::Unauthentic)?;
        Stage::Checks.done(started);

        let submission = match self.accept(&trigger, headers, body).await? {
            Verdict::Build(submission) => submission,
            Verdict::Ignored { reason } => return Ok(Delivery::Ignored { reason }),
        };
        let verdict_read = Instant::now();
        let keys = delivery_keys(headers, body);
        let prebuilt = submission.components.iter().any(|c| matches!(c.source, SourceRequest::Image { .. }));
        if prebuilt {
            // Looking the images up costs registry round trips, and a replay must answer its
            // first build even if an image was deleted since: replays are found first.
            let cutoff = now_ms() - self.window_ms;
            if let Some(build_id) = self.store.live_claim(&trigger.id, &keys, cutoff).await? {
                self.writer.durable().await?;
                return Ok(Delivery::Duplicate(self.pipeline.get(&build_id).await?));
            }
        }
        let by = format!("trigger:{}", trigger.id);
        let build = self.pipeline.prepare(&trigger.app, submission, &by).await?;
        let delivery = writer::Accepted { trigger_id: trigger.id.clone(), keys, build };
        Stage::Prepare.done(verdict_read);
        Ok(match self.writer.record(delivery).await? {
            writer::Recorded::Started(build) => {
                Stage::Total.done(started);
                Delivery::Started(build)
            }
            writer::Recorded::Duplicate { build_id } => {
                Delivery::Duplicate(self.pipeline.get(&build_id).await?)
            }
            writer::Recorded::TriggerGone => {
                self.store.forget(id);
                return Err(TriggerError::NotFound { id: id.into() });
            }
        })
    }

    /// The adapter's verdict: the build to request, or why the delivery starts nothing.
    async fn accept(
        &self,
        trigger: &Trigger,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<Verdict, TriggerError> {
        let request = adapter::request(headers, body);
        let verdict = self.adapters.parse(&trigger.adapter, request).await?;
        let rejected = |reason: String| TriggerError::Rejected { adapter: trigger.adapter.clone(), reason };
        if verdict["accept"] != Value::Bool(true) {
            let reason = verdict["reason"].as_str().unwrap_or("no reason given").to_owned();
            return Err(rejected(reason));
        }
        let parsed = &verdict["request"];
        let commit =
            parsed["commit"].as_str().ok_or_else(|| rejected("the adapter named no commit".into()))?;
        let version = match parsed["action"].as_str() {
            Some("build") => {
                let branch = parsed["branch"].as_str().unwrap_or_default();
                if !branch::allowed(&trigger.config.branches, branch) {
                    let patterns = trigger.config.branches.join(", ");
                    return Ok(Verdict::Ignored {
                        reason: format!("branch `{branch}` matches none of: {patterns}"),
                    });
                }
                "auto".to_owned()
            }
            Some("publish") => parsed["version"]
                .as_str()
                .ok_or_else(|| rejected("publish without a version".into()))?
                .to_owned(),
            other => return Err(rejected(format!("unknown action {other:?}"))),
        };
        let url = match trigger.config.repository_url.as_str() {
            "" => {
                parsed["clone_url"].as_str().or(parsed["repository"].as_str()).unwrap_or_default().to_owned()
            }
            configured => configured.to_owned(),
        };
        let images = prebuilt_images(&trigger.config.components, &parsed["images"]).map_err(rejected)?;
        let components = trigger
            .config
            .components
            .iter()
            .map(|c| ComponentSpec {
                name: c.name.clone(),
                component_type: c.component_type.clone(),
                source: match images.as_ref() {
                    Some(images) => SourceRequest::Image {
                        reference: images[c.name.as_str()].to_owned(),
                        repository: url.clone(),
                        commit: commit.to_owned(),
                    },
                    None => SourceRequest::Git { url: url.clone(), reference: commit.to_owned() },
                },
                path: ".".into(),
                params: c.params.clone(),
            })
            .collect();
        Ok(Verdict::Build(BuildSubmission { version, tags: trigger.config.tags.clone(), components }))
    }
}

fn limit<K: std::hash::Hash + Eq + Clone>(
    limiter: &DefaultKeyedRateLimiter<K>,
    key: &K,
    scope: &'static str,
) -> Result<(), TriggerError> {
    limiter.check_key(key).map_err(|not_until| {
        let wait = not_until.wait_time_from(DefaultClock::default().now());
        TriggerError::RateLimited { scope, retry_after_s: wait.as_secs_f64().ceil().max(1.0) as u64 }
    })
}

/// The limiter key of a trigger id: ids are 32 lowercase hex digits (a UUID's 128 bits),
/// so any other string names no trigger and is answered without a database read.
fn trigger_key(id: &str) -> Option<u128> {
    let hex = id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    hex.then(|| u128::from_str_radix(id, 16).ok()).flatten()
}

/// The keys that identify a delivery: the CI system's delivery id when it sends one, and
/// always the digest of the payload (same trigger, same commit, same body).
fn delivery_keys(headers: &HeaderMap, body: &[u8]) -> Vec<String> {
    let mut keys: Vec<String> = DELIVERY_HEADERS
        .iter()
        .filter_map(|h| headers.get(*h).and_then(|v| v.to_str().ok()))
        .map(|id| format!("delivery:{}", id.chars().take(200).collect::<String>()))
        .collect();
    keys.push(format!("payload:{}", hex::encode(Sha256::digest(body))));
    keys
}

/// The images an external CI built, by component, when the adapter passed any on
/// (`[{component, reference}]`); then every component of the trigger needs exactly one, so a
/// delivery never mixes prebuilt and built components by accident.
fn prebuilt_images<'a>(
    components: &[TriggerComponent],
    images: &'a Value,
) -> Result<Option<HashMap<&'a str, &'a str>>, String> {
    let listed = match images {
        Value::Null => return Ok(None),
        Value::Array(listed) if listed.is_empty() => return Ok(None),
        Value::Array(listed) => listed,
        _ => return Err("images must be a list of {component, reference}".into()),
    };
    let mut by_component = HashMap::with_capacity(listed.len());
    for image in listed {
        let (Some(component), Some(reference)) = (image["component"].as_str(), image["reference"].as_str())
        else {
            return Err(format!("image {image} needs a component and a reference"));
        };
        if !components.iter().any(|c| c.name == component) {
            return Err(format!("image {reference} is for `{component}`, not a component of this trigger"));
        }
        if by_component.insert(component, reference).is_some() {
            return Err(format!("component `{component}` has more than one image"));
        }
    }
    let missing: Vec<&str> =
        components.iter().map(|c| c.name.as_str()).filter(|name| !by_component.contains_key(name)).collect();
    if !missing.is_empty() {
        return Err(format!(
            "no image for component(s) {}: with images, every component needs one",
            missing.join(", ")
        ));
    }
    Ok(Some(by_component))
}
