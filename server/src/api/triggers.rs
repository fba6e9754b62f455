//! Triggers: managed with API tokens; deliveries (`POST /v1/triggers/{id}`) authenticated by
//! the trigger's own secret.

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::routes;

use crate::error::{ApiError, ErrorBody, Json};
use crate::openapi::ApiRouter;
use crate::pipeline::BuildView;
use crate::state::AppState;
use crate::triggers::{AuthMode, Delivery, Trigger, TriggerComponent, TriggerConfig};

pub fn routes() -> ApiRouter {
    ApiRouter::new().routes(routes!(list, create)).routes(routes!(get_trigger, deliver, delete_trigger))
}

#[derive(Deserialize, ToSchema)]
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

#[derive(Serialize, ToSchema)]
struct TriggerWithSecret {
    trigger: Trigger,
    /// Shown only in this response: configure it in the CI system's webhook now.
    secret: String,
}

/// Creates a trigger; its secret is in this answer only.
#[utoipa::path(post, path = "/v1/triggers", tag = "triggers", request_body = CreateTrigger, responses(
    (status = 201, body = TriggerWithSecret),
    (status = 400, description = "`invalid_trigger`: `details.problems` lists every problem", body = ErrorBody),
    (status = 404, description = "`plugin_not_found`: no such adapter", body = ErrorBody)))]
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

#[derive(Serialize, ToSchema)]
struct TriggerList {
    triggers: Vec<Trigger>,
}

#[utoipa::path(get, path = "/v1/triggers", tag = "triggers", responses((status = 200, body = TriggerList)))]

async fn list(State(state): State<AppState>) -> Result<Json<TriggerList>, ApiError> {
    Ok(Json(TriggerList { triggers: state.triggers.list().await? }))
}

#[utoipa::path(get, path = "/v1/triggers/{id}", tag = "triggers", params(("id" = String, Path)), responses(
    (status = 200, body = Trigger),
    (status = 404, description = "`trigger_not_found`", body = ErrorBody)))]
async fn get_trigger(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Trigger>, ApiError> {
    Ok(Json(state.triggers.get(&id).await?))
}

#[utoipa::path(delete, path = "/v1/triggers/{id}", tag = "triggers", params(("id" = String, Path)), responses(
    (status = 204, description = "Deleted"),
    (status = 404, description = "`trigger_not_found`", body = ErrorBody)))]
async fn delete_trigger(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.triggers.delete(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize, ToSchema)]
struct DeliveryAnswer {
    /// The build the delivery started (for a replay, the first delivery's); null if ignored.
    build: Option<BuildView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    duplicate: Option<bool>,
    /// Why an authentic delivery started nothing.
    #[serde(skip_serializing_if = "Option::is_none")]
    ignored: Option<String>,
}

/// A webhook delivery: 202 with the build it started, 200 with the first build for a
/// replay, 200 with the reason when it was filtered out.
///
/// Authenticated by the trigger's own secret in the way its `auth` mode names (not by an
/// API token); the body is the CI system's payload, read by the trigger's adapter plugin.
#[utoipa::path(post, path = "/v1/triggers/{id}", tag = "triggers", params(("id" = String, Path)),
    request_body(content = Object, description = "The CI system's webhook payload, as it sends it"),
    security(("trigger_github_signature" = []), ("trigger_gitlab_token" = []), ("trigger_bearer" = [])),
    responses(
    (status = 202, description = "A build was started", body = DeliveryAnswer),
    (status = 200, description = "A replay (`duplicate: true`, the first build) or filtered out (`ignored`)",
        body = DeliveryAnswer),
    (status = 400, description = "`invalid_build_request`: the adapter's build request is invalid", body = ErrorBody),
    (status = 401, description = "`trigger_unauthentic`: signature, token or bearer secret wrong or missing", body = ErrorBody),
    (status = 404, description = "`trigger_not_found`", body = ErrorBody),
    (status = 409, description = "`delivery_in_progress`: the same delivery is being handled", body = ErrorBody),
    (status = 422, description = "`trigger_rejected`, `image_not_found` (a prebuilt image is not in its registry; \
        `details.references`), or `plugin_*` when the adapter failed", body = ErrorBody),
    (status = 429, description = "`rate_limited`: see `Retry-After` and `details.retry_after_s`", body = ErrorBody),
    (status = 502, description = "`image_registry_failed`: a prebuilt image's registry could not be asked", body = ErrorBody),
    (status = 503, description = "`database_failed`", body = ErrorBody)))]
async fn deliver(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<DeliveryAnswer>), ApiError> {
    let built =
        |build, duplicate| DeliveryAnswer { build: Some(build), duplicate: Some(duplicate), ignored: None };
    Ok(match state.triggers.deliver(&id, client.ip(), &headers, &body).await? {
        Delivery::Started(build) => {
            tracing::info!(trigger = %id, build = %build.id, "delivery started a build");
            (StatusCode::ACCEPTED, Json(built(build, false)))
        }
        Delivery::Duplicate(build) => (StatusCode::OK, Json(built(build, true))),
        Delivery::Ignored { reason } => {
            (StatusCode::OK, Json(DeliveryAnswer { build: None, duplicate: None, ignored: Some(reason) }))
        }
    })
}
