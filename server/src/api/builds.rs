//! Builds: submit (answered 202 once stored), look, list, and read component logs.

use axum::Router;
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use std::convert::Infallible;

use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::error::RecvError;

use crate::auth::Principal;
use crate::error::{ApiError, Json};
use crate::pipeline::{BuildState, BuildSubmission, BuildView};
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/apps/{app}/builds", post(submit))
        .route("/v1/builds", get(list))
        .route("/v1/builds/{id}", get(get_build))
        .route("/v1/builds/{id}/logs", get(logs))
        .route("/v1/builds/{id}/cancel", post(cancel))
        .route("/v1/builds/{id}/retry", post(retry))
}

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

async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Extension(principal): Extension<Principal>,
) -> Result<Json<BuildView>, ApiError> {
    Ok(Json(state.pipeline.cancel(&id, &principal.name).await?))
}

async fn retry(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<BuildView>, ApiError> {
    Ok(Json(state.pipeline.retry(&id).await?))
}

async fn get_build(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<BuildView>, ApiError> {
    Ok(Json(state.pipeline.get(&id).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListParams {
    app: Option<String>,
    state: Option<String>,
    limit: Option<i64>,
}

#[derive(Serialize)]
struct BuildList {
    builds: Vec<BuildView>,
}

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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LogParams {
    component: String,
    /// Stream the log as server-sent events until the component finishes.
    #[serde(default)]
    follow: bool,
}

#[derive(Serialize)]
struct LogLines {
    build: String,
    component: String,
    lines: Vec<String>,
}

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
