//! Triggers: managed with API tokens; deliveries (`POST /v1/triggers/{id}`) authenticated by
//! the trigger's own secret.

use std::net::SocketAddr;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::error::{ApiError, Json};
use crate::state::AppState;
use crate::triggers::{AuthMode, Delivery, Trigger, TriggerComponent, TriggerConfig};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/triggers", get(list).post(create))
        .route("/v1/triggers/{id}", get(get_trigger).post(deliver).delete(delete_trigger))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateTrigger {
    app: String,
    /// The adapter plugin's name: `github-push`, `gitlab-push`, `generic`, or an installed one.
    adapter: String,
    /// How deliveries prove they are authentic; by default the adapter's CI system's way.
    auth: Option<AuthMode>,
    #[serde(default)]
    branches: Vec<String>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    repository_url: String,
    components: Vec<TriggerComponent>,
}

#[derive(Serialize)]
struct TriggerWithSecret {
    trigger: Trigger,
    /// Shown only in this response: configure it in the CI system's webhook now.
    secret: String,
}

async fn create(
    State(state): State<AppState>,
    Json(body): Json<CreateTrigger>,
) -> Result<(StatusCode, Json<TriggerWithSecret>), ApiError> {
    let config = TriggerConfig {
        branches: body.branches,
        tags: body.tags,
        repository_url: body.repository_url,
        components: body.components,
    };
    let (trigger, secret) = state.triggers.create(&body.app, &body.adapter, body.auth, config).await?;
    tracing::info!(trigger = %trigger.id, app = %trigger.app, adapter = %trigger.adapter, "trigger created");
    Ok((StatusCode::CREATED, Json(TriggerWithSecret { trigger, secret })))
}

async fn list(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!({ "triggers": state.triggers.list().await? })))
}

async fn get_trigger(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Trigger>, ApiError> {
    Ok(Json(state.triggers.get(&id).await?))
}

async fn delete_trigger(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.triggers.delete(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A webhook delivery: 202 with the build it started, 200 with the first build for a
/// replay, 200 with the reason when it was filtered out.
async fn deliver(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    Ok(match state.triggers.deliver(&id, client.ip(), &headers, &body).await? {
        Delivery::Started(build) => {
            tracing::info!(trigger = %id, build = %build.id, "delivery started a build");
            (StatusCode::ACCEPTED, Json(json!({ "build": build, "duplicate": false })))
        }
        Delivery::Duplicate(build) => (StatusCode::OK, Json(json!({ "build": build, "duplicate": true }))),
        Delivery::Ignored { reason } => (StatusCode::OK, Json(json!({ "build": null, "ignored": reason }))),
    })
}
