//! Plugin routes: upload and remove plugin packages, list scripts and revisions, switch the
//! active revision, and the dry run a plugin author uses to try a script before it goes live.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, put};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};
use slipway_plugins::{CallOutput, PackageInfo, ScriptKind, ScriptRevisions};

use crate::error::{ApiError, Json, Query};
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/plugins", get(list).post(upload))
        // `{name}` also matches `name:run`, the dry-run action (axum cannot route a suffix).
        .route("/v1/plugins/{kind}/{name}", get(revisions).post(action))
        .route("/v1/plugins/{kind}/{name}/active", put(activate))
        .route("/v1/plugin-packages/{package}", delete(uninstall))
}

fn kind(text: &str) -> Result<ScriptKind, ApiError> {
    Ok(text.parse::<ScriptKind>()?)
}

/// The body is the package `.tar.gz` itself.
async fn upload(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<(StatusCode, Json<PackageInfo>), ApiError> {
    if body.is_empty() {
        return Err(ApiError::InvalidRequest("the body must be a plugin package (.tar.gz)".into()));
    }
    let installed = state.plugins.install_package(body).await?;
    tracing::info!(package = %installed.name, version = %installed.version, "plugin package installed");
    Ok((StatusCode::CREATED, Json(installed)))
}

async fn list(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!({ "packages": state.plugins.list().await? })))
}

async fn revisions(
    State(state): State<AppState>,
    Path((kind_text, name)): Path<(String, String)>,
) -> Result<Json<ScriptRevisions>, ApiError> {
    Ok(Json(state.plugins.revisions(kind(&kind_text)?, &name).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ActivateRequest {
    revision: u32,
}

async fn activate(
    State(state): State<AppState>,
    Path((kind_text, name)): Path<(String, String)>,
    Json(request): Json<ActivateRequest>,
) -> Result<Json<ScriptRevisions>, ApiError> {
    let kind = kind(&kind_text)?;
    state.plugins.activate(kind, &name, request.revision).await?;
    tracing::info!(%kind, name, revision = request.revision, "plugin revision activated");
    Ok(Json(state.plugins.revisions(kind, &name).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RunRequest {
    revision: Option<u32>,
    function: String,
    #[serde(default)]
    args: Vec<Value>,
}

/// `POST /v1/plugins/{kind}/{name}:run`.
async fn action(
    State(state): State<AppState>,
    Path((kind_text, name_action)): Path<(String, String)>,
    Json(request): Json<RunRequest>,
) -> Result<Json<CallOutput>, ApiError> {
    let Some((name, "run")) = name_action.rsplit_once(':') else {
        return Err(ApiError::MethodNotAllowed {
            method: "POST".into(),
            path: format!("/v1/plugins/{kind_text}/{name_action}"),
        });
    };
    let output = state
        .plugins
        .call(kind(&kind_text)?, name, request.revision, &request.function, request.args)
        .await?;
    Ok(Json(output))
}

#[derive(Debug, Deserialize)]
struct UninstallQuery {
    #[serde(default)]
    force: bool,
}

async fn uninstall(
    State(state): State<AppState>,
    Path(package): Path<String>,
    Query(query): Query<UninstallQuery>,
) -> Result<StatusCode, ApiError> {
    state.plugins.uninstall_package(&package, query.force).await?;
    tracing::info!(package, force = query.force, "plugin package uninstalled");
    Ok(StatusCode::NO_CONTENT)
}
