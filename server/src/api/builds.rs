//! Builds: submit (answered 202 once stored), look, list, and read component logs.

use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use std::convert::Infallible;

use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::error::RecvError;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::routes;

use crate::auth::Principal;
use crate::error::{ApiError, ErrorBody, Json};
use crate::openapi::ApiRouter;
use crate::pipeline::{BuildState, BuildSubmission, BuildView};
use crate::state::AppState;

pub fn routes() -> ApiRouter {
    ApiRouter::new()
        .routes(routes!(submit))
        .routes(routes!(list))
        .routes(routes!(get_build))
        .routes(routes!(logs))
        .routes(routes!(cancel))
        .routes(routes!(retry))
}

/// Stores a build request and answers at once; the build runs in the background.
#[utoipa::path(post, path = "/v1/apps/{app}/builds", tag = "builds", params(("app" = String, Path)),
    request_body = BuildSubmission, responses(
    (status = 202, description = "Accepted and queued", body = BuildView),
    (status = 400, description = "`invalid_build_request`: `details.problems` lists every problem", body = ErrorBody),
    (status = 422, description = "`image_not_found`: a prebuilt image is not in its registry (`details.references`)", body = ErrorBody),
    (status = 502, description = "`image_registry_failed`: a prebuilt image's registry could not be asked", body = ErrorBody),
    (status = 503, description = "`database_failed`", body = ErrorBody)))]
async fn submit(
    State(state): State<AppState>,
    Path(app): Path<String>,
    Extension(principal): Extension<Principal>,
    Json(body): Json<BuildSubmission>,
) -> Result<(StatusCode, Json<BuildView>), ApiError> {
    let build = state.pipeline.submit(&app, body, &principal.name).await?;
    tracing::info!(build = %build.id, app = %build.app, "build accepted");
    Ok((StatusCode::ACCEPTED, Json(build)))
}

/// Cancels a queued or running build.
#[utoipa::path(post, path = "/v1/builds/{id}/cancel", tag = "builds", params(("id" = String, Path)), responses(
    (status = 200, body = BuildView),
    (status = 404, description = "`build_not_found`", body = ErrorBody),
    (status = 409, description = "`build_state_conflict`: the build already finished", body = ErrorBody)))]
async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Extension(principal): Extension<Principal>,
) -> Result<Json<BuildView>, ApiError> {
    Ok(Json(state.pipeline.cancel(&id, &principal.name).await?))
}

/// Queues a finished build again, same request.
#[utoipa::path(post, path = "/v1/builds/{id}/retry", tag = "builds", params(("id" = String, Path)), responses(
    (status = 200, body = BuildView),
    (status = 404, description = "`build_not_found`", body = ErrorBody),
    (status = 409, description = "`build_state_conflict`: the build has not finished", body = ErrorBody)))]
async fn retry(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<BuildView>, ApiError> {
    Ok(Json(state.pipeline.retry(&id).await?))
}

#[utoipa::path(get, path = "/v1/builds/{id}", tag = "builds", params(("id" = String, Path)), responses(
    (status = 200, body = BuildView),
    (status = 404, description = "`build_not_found`", body = ErrorBody)))]
async fn get_build(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<BuildView>, ApiError> {
    Ok(Json(state.pipeline.get(&id).await?))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct ListParams {
    app: Option<String>,
    /// queued, running, succeeded, failed, cancelled or skipped.
    state: Option<String>,
    /// 1 to 500, default 50.
    limit: Option<i64>,
}

#[derive(Serialize, ToSchema)]
struct BuildList {
    builds: Vec<BuildView>,
}

/// Builds, newest first, optionally of one app and in one state.
#[utoipa::path(get, path = "/v1/builds", tag = "builds", params(ListParams), responses(
    (status = 200, body = BuildList),
    (status = 400, description = "`invalid_request`: unknown state or parameter", body = ErrorBody)))]
async fn list(
    State(state): State<AppState>,
    Query(params): Query<ListParams>,
) -> Result<Json<BuildList>, ApiError> {
    let wanted = match params.state.as_deref() {
        Some(text) => Some(BuildState::parse(text).ok_or_else(|| {
            ApiError::InvalidRequest(format!(
                "unknown build state `{text}`; one of queued, running, succeeded, failed, cancelled, skipped"
            ))
        })?),
        None => None,
    };
    let limit = params.limit.unwrap_or(50).clamp(1, 500);
    Ok(Json(BuildList { builds: state.pipeline.list(params.app.as_deref(), wanted, limit).await? }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct LogParams {
    component: String,
    /// Stream the log as server-sent events until the component finishes.
    #[serde(default)]
    follow: bool,
}

#[derive(Serialize, ToSchema)]
struct LogLines {
    build: String,
    component: String,
    lines: Vec<String>,
}

/// A component's build log: all lines so far, or with `follow=true` a server-sent event
/// stream of `line` events until the component finishes.
#[utoipa::path(get, path = "/v1/builds/{id}/logs", tag = "builds", params(("id" = String, Path), LogParams),
    responses(
    (status = 200, description = "The lines, or with `follow=true` `text/event-stream` of `line` events",
        content((LogLines = "application/json"), (String = "text/event-stream"))),
    (status = 400, description = "`invalid_request`: no `component` parameter", body = ErrorBody),
    (status = 404, description = "`build_not_found`", body = ErrorBody)))]
async fn logs(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(params): Query<LogParams>,
) -> Result<Response, ApiError> {
    if !params.follow {
        let lines = state.pipeline.log(&id, &params.component).await?;
        return Ok(Json(LogLines { build: id, component: params.component, lines }).into_response());
    }
    // A component that is not building (yet, or any more) streams what is stored and ends.
    let (lines, live) = match state.pipeline.follow_log(&id, &params.component).await? {
        Some((lines, receiver)) => (lines, Some(receiver)),
        None => (state.pipeline.log(&id, &params.component).await?, None),
    };
    let so_far = futures::stream::iter(lines);
    let next = futures::stream::unfold(live, |live| async move {
        let mut receiver = live?;
        loop {
            match receiver.recv().await {
                Ok(line) => return Some((line, Some(receiver))),
                Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => return None,
            }
        }
    });
    let events =
        so_far.chain(next).map(|line| Ok::<_, Infallible>(Event::default().event("line").data(line)));
    Ok(Sse::new(events).keep_alive(KeepAlive::default()).into_response())
}
