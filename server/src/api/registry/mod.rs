//! Registry routes: app packages, tags and tag queries under `/v1/apps/{app}/…`.
//! Streaming transfers (upload, download, offline export and import) live in `transfer.rs`.
//!
//! Who acts is the name of the caller's API token, recorded as package creator and tagger.

mod transfer;

use std::collections::BTreeMap;

use axum::Router;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::routing::{get, put};
use serde::Deserialize;
use serde_json::{Value, json};
use slipway_registry::manifest::{ImageRef, Source};
use slipway_registry::names::parse_tag_list;
use slipway_registry::publish::{ComponentInput, PublishRequest};
use slipway_registry::query::{DEFAULT_PAGE, Order, PackageQuery};
use slipway_registry::range::KeyRange;
use slipway_registry::version::{VersionSpec, parse_version};

use crate::auth::Principal;
use crate::error::{ApiError, Json, Query};
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/apps/{app}/packages", get(list_packages).post(publish))
        .route("/v1/apps/{app}/packages/{version}", get(get_package))
        .route("/v1/apps/{app}/packages/{version}/tags/{tag}", put(add_tag).delete(remove_tag))
        .route("/v1/apps/{app}/components/{component}/packages", get(list_component_packages))
        .route("/v1/apps/{app}/tags", get(list_tags))
        .route("/v1/apps/{app}/tags/{tag}", put(set_tag_mode))
        .route("/v1/apps/{app}/tag-events", get(tag_events))
        .route("/v1/apps/{app}/deletions", get(deletions))
        .merge(transfer::routes())
}

/// The acting person or system: the name of the API token the auth layer accepted.
pub struct Actor(pub String);

impl<S: Send + Sync> FromRequestParts<S> for Actor {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let principal = parts
            .extensions
            .get::<Principal>()
            .ok_or_else(|| ApiError::Internal("a registry route ran without the auth layer".into()))?;
        Ok(Actor(principal.name.clone()))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListParams {
    tags: Option<String>,
    version: Option<String>,
    order: Option<String>,
    latest: Option<bool>,
    cursor: Option<String>,
    limit: Option<u32>,
}

/// `GET /v1/apps/{app}/packages`: packages carrying all `tags`, within the `version`
/// range, newest first; `latest=true` answers with the single newest match (404 if none).
async fn list_packages(
    State(state): State<AppState>,
    Path(app): Path<String>,
    Query(params): Query<ListParams>,
) -> Result<Json<Value>, ApiError> {
    let order = match params.order.as_deref() {
        None | Some("version") => Order::Version,
        Some("created") => Order::Created,
        Some(other) => {
            return Err(ApiError::InvalidRequest(format!(
                "order `{other}`: expected `version` or `created`"
            )));
        }
    };
    let latest = params.latest.unwrap_or(false);
    let query = PackageQuery {
        tags: parse_tag_list(params.tags.as_deref().unwrap_or(""))?,
        range: KeyRange::parse(params.version.as_deref().unwrap_or(""))?,
        order,
        cursor: params.cursor.filter(|_| !latest),
        limit: if latest { 1 } else { params.limit.unwrap_or(DEFAULT_PAGE) },
    };
    let page = state.registry.list_packages(&app, &query).await?;
    if latest {
        let newest =
            page.items.into_iter().next().ok_or_else(|| slipway_registry::Error::PackageNotFound {
                app: app.clone(),
                version: format!("latest with tags [{}]", query.tags.join(",")),
            })?;
        return Ok(Json(json!(newest)));
    }
    Ok(Json(json!(page)))
}

async fn get_package(
    State(state): State<AppState>,
    Path((app, version)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!(state.registry.get_package(&app, &version).await?)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishBody {
    /// `auto` or a semantic version.
    version: String,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    source: Source,
    components: Vec<ComponentBody>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ComponentBody {
    component_type: String,
    component: String,
    version: Option<String>,
    #[serde(default)]
    images: Vec<ImageRef>,
    #[serde(default = "empty_object")]
    parameters: Value,
    plugin: String,
    /// Text files by relative path (binary files go in packages built by the client).
    #[serde(default)]
    files: BTreeMap<String, String>,
}

fn empty_object() -> Value {
    json!({})
}

/// `POST /v1/apps/{app}/packages`: builds and publishes an app package from component
/// build results (what the build pipeline does in-process).
async fn publish(
    State(state): State<AppState>,
    Path(app): Path<String>,
    Actor(actor): Actor,
    Json(body): Json<PublishBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let components = body
        .components
        .into_iter()
        .map(|c| {
            Ok(ComponentInput {
                component_type: c.component_type,
                component: c.component,
                version: c.version.as_deref().map(parse_version).transpose()?,
                images: c.images,
                parameters: c.parameters,
                plugin: c.plugin,
                files: c.files.into_iter().map(|(p, text)| (p, text.into_bytes())).collect(),
                inputs_digest: None,
            }
            .into())
        })
        .collect::<Result<Vec<_>, slipway_registry::Error>>()?;
    let request = PublishRequest {
        app,
        version: VersionSpec::parse(&body.version)?,
        tags: body.tags,
        creator: actor,
        source: body.source,
        components,
    };
    let published = state.registry.publish_app_package(request).await?;
    Ok((StatusCode::CREATED, Json(json!(published))))
}

/// `PUT …/packages/{version}/tags/{tag}`: adds the tag (moving it, if exclusive).
async fn add_tag(
    State(state): State<AppState>,
    Path((app, version, tag)): Path<(String, String, String)>,
    Actor(actor): Actor,
) -> Result<Json<Value>, ApiError> {
    let change = state.registry.add_tag(&app, &version, &tag, &actor).await?;
    Ok(Json(
        json!({ "app": app, "version": version, "tag": tag, "added": change.added, "moved_from": change.moved_from }),
    ))
}

async fn remove_tag(
    State(state): State<AppState>,
    Path((app, version, tag)): Path<(String, String, String)>,
    Actor(actor): Actor,
) -> Result<Json<Value>, ApiError> {
    let removed = state.registry.remove_tag(&app, &version, &tag, &actor).await?;
    Ok(Json(json!({ "app": app, "version": version, "tag": tag, "removed": removed })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TagMode {
    exclusive: bool,
}

/// `PUT /v1/apps/{app}/tags/{tag}` with `{"exclusive": true}`: at most one version holds it.
async fn set_tag_mode(
    State(state): State<AppState>,
    Path((app, tag)): Path<(String, String)>,
    Actor(actor): Actor,
    Json(mode): Json<TagMode>,
) -> Result<Json<Value>, ApiError> {
    state.registry.set_exclusive(&app, &tag, mode.exclusive, &actor).await?;
    Ok(Json(json!({ "app": app, "tag": tag, "exclusive": mode.exclusive })))
}

async fn list_tags(State(state): State<AppState>, Path(app): Path<String>) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!({ "items": state.registry.list_tags(&app).await? })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PageParams {
    cursor: Option<String>,
    limit: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitParams {
    limit: Option<u32>,
}

async fn tag_events(
    State(state): State<AppState>,
    Path(app): Path<String>,
    Query(params): Query<LimitParams>,
) -> Result<Json<Value>, ApiError> {
    let limit = params.limit.unwrap_or(100).min(1000);
    Ok(Json(json!({ "items": state.registry.tag_events(&app, limit).await? })))
}

async fn deletions(
    State(state): State<AppState>,
    Path(app): Path<String>,
    Query(params): Query<LimitParams>,
) -> Result<Json<Value>, ApiError> {
    let limit = params.limit.unwrap_or(100).min(1000);
    Ok(Json(json!({ "items": state.registry.deletions(&app, limit).await? })))
}

async fn list_component_packages(
    State(state): State<AppState>,
    Path((app, component)): Path<(String, String)>,
    Query(params): Query<PageParams>,
) -> Result<Json<Value>, ApiError> {
    let page = state
        .registry
        .list_component_packages(
            &app,
            &component,
            params.cursor.as_deref(),
            params.limit.unwrap_or(DEFAULT_PAGE),
        )
        .await?;
    Ok(Json(json!(page)))
}
