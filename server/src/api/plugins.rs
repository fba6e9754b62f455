//! Plugin routes: upload and remove plugin packages, list scripts and revisions, switch the
//! active revision, and the dry run a plugin author uses to try a script before it goes live.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use slipway_plugins::{CallOutput, PackageInfo, ScriptKind, ScriptRevisions};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::routes;

use crate::cluster::Change;
use crate::error::{ApiError, ErrorBody, Json, Query};
use crate::openapi::ApiRouter;
use crate::state::AppState;

pub fn routes() -> ApiRouter {
    ApiRouter::new()
        .routes(routes!(list, upload))
        // `{name}` also matches `name:run`, the dry-run action (axum cannot route a suffix).
        .routes(routes!(revisions, action))
        .routes(routes!(activate))
        .routes(routes!(uninstall))
}

fn kind(text: &str) -> Result<ScriptKind, ApiError> {
    Ok(text.parse::<ScriptKind>()?)
}

/// Installs a plugin package; the body is the package `.tar.gz` itself.
#[utoipa::path(post, path = "/v1/plugins", tag = "plugins",
    request_body(content = Vec<u8>, content_type = "application/gzip", description = "The plugin package"),
    responses(
    (status = 201, body = PackageInfo),
    (status = 400, description = "`invalid_request`: empty body", body = ErrorBody),
    (status = 409, description = "`plugin_revision_conflict`", body = ErrorBody),
    (status = 413, description = "`payload_too_large`", body = ErrorBody),
    (status = 422, description = "`invalid_plugin_package`, `plugin_module_load_failed`", body = ErrorBody)))]
async fn upload(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<(StatusCode, Json<PackageInfo>), ApiError> {
    if body.is_empty() {
        return Err(ApiError::InvalidRequest("the body must be a plugin package (.tar.gz)".into()));
    }
    let installed = state.plugins.install_package(body).await?;
    state.cluster.announce(Change::Plugins).await;
    tracing::info!(package = %installed.name, version = %installed.version, "plugin package installed");
    Ok((StatusCode::CREATED, Json(installed)))
}

#[derive(Serialize, ToSchema)]
struct PackageList {
    packages: Vec<PackageInfo>,
}

/// Installed plugin packages with their scripts.
#[utoipa::path(get, path = "/v1/plugins", tag = "plugins", responses((status = 200, body = PackageList)))]
async fn list(State(state): State<AppState>) -> Result<Json<PackageList>, ApiError> {
    Ok(Json(PackageList { packages: state.plugins.list().await? }))
}

/// Every installed revision of a script and the active one.
#[utoipa::path(get, path = "/v1/plugins/{kind}/{name}", tag = "plugins",
    params(("kind" = ScriptKind, Path), ("name" = String, Path)), responses(
    (status = 200, body = ScriptRevisions),
    (status = 400, description = "`invalid_plugin_triple`: unknown kind", body = ErrorBody),
    (status = 404, description = "`plugin_not_found`", body = ErrorBody)))]
async fn revisions(
    State(state): State<AppState>,
    Path((kind_text, name)): Path<(String, String)>,
) -> Result<Json<ScriptRevisions>, ApiError> {
    Ok(Json(state.plugins.revisions(kind(&kind_text)?, &name).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ActivateRequest {
    revision: u32,
}

/// Switches the revision that runs; the answer shows the revisions afterwards.
#[utoipa::path(put, path = "/v1/plugins/{kind}/{name}/active", tag = "plugins",
    params(("kind" = ScriptKind, Path), ("name" = String, Path)), request_body = ActivateRequest, responses(
    (status = 200, body = ScriptRevisions),
    (status = 400, description = "`invalid_plugin_triple`", body = ErrorBody),
    (status = 404, description = "`plugin_not_found`, `plugin_revision_not_found`", body = ErrorBody)))]
async fn activate(
    State(state): State<AppState>,
    Path((kind_text, name)): Path<(String, String)>,
    Json(request): Json<ActivateRequest>,
) -> Result<Json<ScriptRevisions>, ApiError> {
    let kind = kind(&kind_text)?;
    state.plugins.activate(kind, &name, request.revision).await?;
    state.cluster.announce(Change::Plugins).await;
    tracing::info!(%kind, name, revision = request.revision, "plugin revision activated");
    Ok(Json(state.plugins.revisions(kind, &name).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct RunRequest {
    revision: Option<u32>,
    function: String,
    #[serde(default)]
    args: Vec<Value>,
}

/// The dry run, `POST /v1/plugins/{kind}/{name}:run`: calls one function of a script
/// (the active revision unless one is named) and answers what it returned. The `name`
/// segment must end in `:run`; anything else is 405.
#[utoipa::path(post, path = "/v1/plugins/{kind}/{name}", tag = "plugins",
    params(("kind" = ScriptKind, Path), ("name" = String, Path, description = "`<script name>:run`")),
    request_body = RunRequest, responses(
    (status = 200, body = CallOutput),
    (status = 400, description = "`invalid_plugin_triple`", body = ErrorBody),
    (status = 404, description = "`plugin_not_found`, `plugin_revision_not_found`", body = ErrorBody),
    (status = 405, description = "`method_not_allowed`: the name does not end in `:run`", body = ErrorBody),
    (status = 422, description = "`plugin_threw`, `plugin_timeout`, `plugin_memory_limit`, `plugin_stack_overflow`, \
        `plugin_wrong_shape`, `plugin_unknown_function`, `plugin_worker_died`", body = ErrorBody),
    (status = 503, description = "`plugin_worker_unavailable`", body = ErrorBody)))]
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

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct UninstallQuery {
    /// Uninstall even when one of its scripts is the active revision.
    #[serde(default)]
    force: bool,
}

/// Removes a plugin package and its script revisions.
#[utoipa::path(delete, path = "/v1/plugin-packages/{package}", tag = "plugins",
    params(("package" = String, Path), UninstallQuery), responses(
    (status = 204, description = "Uninstalled"),
    (status = 404, description = "`plugin_package_not_found`", body = ErrorBody),
    (status = 409, description = "`plugin_package_in_use`: a script of it is active; `force=true` to remove anyway",
        body = ErrorBody)))]
async fn uninstall(
    State(state): State<AppState>,
    Path(package): Path<String>,
    Query(query): Query<UninstallQuery>,
) -> Result<StatusCode, ApiError> {
    state.plugins.uninstall_package(&package, query.force).await?;
    state.cluster.announce(Change::Plugins).await;
    tracing::info!(package, force = query.force, "plugin package uninstalled");
    Ok(StatusCode::NO_CONTENT)
}
