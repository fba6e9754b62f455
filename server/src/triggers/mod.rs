//! The trigger API: an external CI system's webhook, authenticated by the trigger's own
//! secret, read by the trigger's adapter plugin, deduplicated and turned into a build.
//!
//! Order of checks for a delivery: rate limits (cheapest), authenticity, replay, the
//! adapter's verdict, the branch filter; only then is a build stored. A delivery that starts
//! nothing leaves no claim behind, so the sender may retry it.

mod branch;
mod store;
pub mod verify;

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use axum::http::HeaderMap;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use slipway_plugins::{PluginHost, ScriptKind};

pub use store::{MIGRATIONS, Trigger, TriggerComponent, TriggerConfig};
pub use verify::AuthMode;

use crate::config::TriggersConfig;
use crate::pipeline::{BuildSubmission, BuildView, ComponentSpec, Pipeline, PipelineError, SourceRequest};
use crate::storage::now_ms;
use store::{Claim, TriggerStore};

/// Headers CI systems put a unique delivery id in.
const DELIVERY_HEADERS: &[&str] = &["x-github-delivery", "x-gitlab-event-uuid", "idempotency-key"];
/// How long an in-flight duplicate waits for the first delivery's build id.
const DUPLICATE_WAIT: Duration = Duration::from_secs(5);

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
    #[error("the same delivery is still being accepted; retry shortly")]
    InProgress,
    #[error(transparent)]
    Plugin(#[from] slipway_plugins::Error),
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    #[error("trigger storage: {0}")]
    Database(#[from] sqlx::Error),
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

#[derive(Clone)]
pub struct Triggers {
    store: TriggerStore,
    plugins: PluginHost,
    pipeline: Pipeline,
    window_ms: i64,
    per_trigger: std::sync::Arc<DefaultKeyedRateLimiter<String>>,
    per_client: std::sync::Arc<DefaultKeyedRateLimiter<IpAddr>>,
}

fn quota(per_s: u32) -> Quota {
    Quota::per_second(NonZeroU32::new(per_s.max(1)).expect("at least one"))
}

impl Triggers {
    pub fn new(db: sqlx::AnyPool, plugins: PluginHost, pipeline: Pipeline, config: &TriggersConfig) -> Self {
        Self {
            store: TriggerStore::new(db),
            plugins,
            pipeline,
            window_ms: config.dedupe_window_s as i64 * 1000,
            per_trigger: std::sync::Arc::new(RateLimiter::keyed(quota(config.per_trigger_per_s))),
            per_client: std::sync::Arc::new(RateLimiter::keyed(quota(config.per_client_per_s))),
        }
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
        limit(&self.per_client, &client, "this client")?;
        let trigger = self.store.get(id).await?;
        limit(&self.per_trigger, &trigger.id, "this trigger")?;
        verify::verify(trigger.auth, &trigger.secret, headers, body).map_err(TriggerError::Unauthentic)?;

        let keys = delivery_keys(headers, body);
        for key in &keys {
            if let Claim::Seen { build_id } = self.store.claim(&trigger.id, key, self.window_ms).await? {
                self.store.release(&trigger.id, &keys).await?;
                return self.duplicate(&trigger, key, build_id).await;
            }
        }
        match self.accept(&trigger, headers, body).await {
            Ok(Delivery::Started(build)) => {
                self.store.record_build(&trigger.id, &keys, &build.id).await?;
                Ok(Delivery::Started(build))
            }
            other => {
                self.store.release(&trigger.id, &keys).await?;
                other
            }
        }
    }

    async fn duplicate(
        &self,
        trigger: &Trigger,
        key: &str,
        build_id: Option<String>,
    ) -> Result<Delivery, TriggerError> {
        let deadline = tokio::time::Instant::now() + DUPLICATE_WAIT;
        let mut build_id = build_id;
        while build_id.is_none() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            build_id = match self.store.claim(&trigger.id, key, self.window_ms).await? {
                Claim::Seen { build_id } => build_id,
                // The first delivery started nothing and let go; this one is not a replay.
                Claim::New => {
                    self.store.release(&trigger.id, &[key.to_owned()]).await?;
                    return Err(TriggerError::InProgress);
                }
            };
        }
        let build_id = build_id.ok_or(TriggerError::InProgress)?;
        Ok(Delivery::Duplicate(self.pipeline.get(&build_id).await?))
    }

    async fn accept(
        &self,
        trigger: &Trigger,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<Delivery, TriggerError> {
        let request = adapter_request(headers, body);
        let verdict = self
            .plugins
            .call(ScriptKind::Trigger, &trigger.adapter, None, "parse", vec![request, json!({})])
            .await?;
        let verdict = verdict.result;
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
                    return Ok(Delivery::Ignored {
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
        let components = trigger
            .config
            .components
            .iter()
            .map(|c| ComponentSpec {
                name: c.name.clone(),
                component_type: c.component_type.clone(),
                source: SourceRequest::Git { url: url.clone(), reference: commit.to_owned() },
                path: ".".into(),
                params: c.params.clone(),
            })
            .collect();
        let submission = BuildSubmission { version, tags: trigger.config.tags.clone(), components };
        let build =
            self.pipeline.submit(&trigger.app, submission, &format!("trigger:{}", trigger.id)).await?;
        Ok(Delivery::Started(build))
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

/// The adapter's view of the request: lowercase header names, the body as text and as JSON.
fn adapter_request(headers: &HeaderMap, body: &[u8]) -> Value {
    let headers: serde_json::Map<String, Value> = headers
        .iter()
        .filter(|(name, _)| *name != "authorization" && *name != "x-gitlab-token")
        .filter_map(|(name, value)| {
            Some((name.as_str().to_owned(), Value::String(value.to_str().ok()?.to_owned())))
        })
        .collect();
    let text = String::from_utf8_lossy(body);
    let json = serde_json::from_slice::<Value>(body).unwrap_or(Value::Null);
    json!({ "headers": headers, "body": text, "json": json })
}
