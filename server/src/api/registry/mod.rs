//! Registry routes: app packages, tags and tag queries under `/v1/apps/{app}/…`.
//! Streaming transfers (upload, download, offline export and import) live in `transfer.rs`.
//!
//! Who acts is the name of the caller's API token, recorded as package creator and tagger.

mod transfer;

use std::collections::BTreeMap;

use axum::extract::{FromRequestParts, Path, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use slipway_registry::manifest::{ComponentManifest, ImageRef, Source};
use slipway_registry::names::parse_tag_list;
use slipway_registry::publish::{ComponentInput, PublishRequest};
use slipway_registry::query::{DEFAULT_PAGE, Order, PackageDetails, PackageQuery, PackageSummary, Page};
use slipway_registry::range::KeyRange;
use slipway_registry::retention::Deletion;
use slipway_registry::tags::{TagEvent, TagInfo};
use slipway_registry::version::{VersionSpec, parse_version};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::routes;

use crate::auth::Principal;
use crate::error::{ApiError, ErrorBody, Json, Query};
use crate::openapi::ApiRouter;
use crate::state::AppState;

pub fn routes() -> ApiRouter {
    ApiRouter::new()
        .routes(routes!(list_packages, publish))
        .routes(routes!(get_package))
        .routes(routes!(add_tag, remove_tag))
        .routes(routes!(list_component_packages))
        .routes(routes!(list_tags))
        .routes(routes!(set_tag_mode))
        .routes(routes!(tag_events))
        .routes(routes!(deletions))
        .merge(transfer::routes())
}

/// A list answer without paging (the lists are bounded by `limit` or small by nature).
#[derive(Serialize, ToSchema)]
struct Items<T> {
    items: Vec<T>,
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

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct ListParams {
    /// Comma-separated tags a package must all carry, e.g. `prod,stable`.
    tags: Option<String>,
    /// A version range, e.g. `>=1.2.0 <2.0.0`.
    version: Option<String>,
    /// `version` (default) or `created`; both newest first.
    order: Option<String>,
    /// Answer with the newest match alone.
    latest: Option<bool>,
    cursor: Option<String>,
    limit: Option<u32>,
}

/// A page of packages, or with `latest=true` the newest one alone.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
enum PackageListing {
    Page(Page<PackageSummary>),
    Latest(PackageSummary),
}

/// Packages carrying all `tags`, within the `version` range, newest first; `latest=true`
/// answers with the single newest match (404 if none).
#[utoipa::path(get, path = "/v1/apps/{app}/packages", tag = "packages", params(("app" = String, Path), ListParams),
    responses(
    (status = 200, body = PackageListing),
    (status = 400, description = "`invalid_name`, `invalid_version_range`, `invalid_cursor`, `invalid_request`", body = ErrorBody),
    (status = 404, description = "`package_not_found`: `latest=true` and nothing matches", body = ErrorBody)))]
async fn list_packages(
    State(state): State<AppState>,
    Path(app): Path<String>,
    Query(params): Query<ListParams>,
) -> Result<Json<PackageListing>, ApiError> {
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
        limit: params.limit.unwrap_or(DEFAULT_PAGE),
    };
    if latest {
        let newest = state.registry.latest_package(&app, &query).await?.ok_or_else(|| {
            slipway_registry::Error::PackageNotFound {
                version: format!("latest with tags [{}]", query.tags.join(",")),
                app,
            }
        })?;
        return Ok(Json(PackageListing::Latest(newest)));
    }
    Ok(Json(PackageListing::Page(state.registry.list_packages(&app, &query).await?)))
}

/// One package with its current tags and manifest.
#[utoipa::path(get, path = "/v1/apps/{app}/packages/{version}", tag = "packages",
    params(("app" = String, Path), ("version" = String, Path)), responses(
    (status = 200, body = PackageDetails),
    (status = 404, description = "`package_not_found`", body = ErrorBody)))]
async fn get_package(
    State(state): State<AppState>,
    Path((app, version)): Path<(String, String)>,
) -> Result<Json<PackageDetails>, ApiError> {
    Ok(Json(state.registry.get_package(&app, &version).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
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

#[derive(Debug, Deserialize, ToSchema)]
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

/// Builds and publishes an app package from component build results (what the build
/// pipeline does in-process).
#[utoipa::path(post, path = "/v1/apps/{app}/packages", tag = "packages", params(("app" = String, Path)),
    request_body = PublishBody, responses(
    (status = 201, body = PackageSummary),
    (status = 400, description = "`invalid_name`, `invalid_version`", body = ErrorBody),
    (status = 409, description = "`version_exists`, `component_version_exists`", body = ErrorBody),
    (status = 422, description = "`invalid_package`", body = ErrorBody),
    (status = 503, description = "`database_failed`, `object_store_failed`", body = ErrorBody)))]
async fn publish(
    State(state): State<AppState>,
    Path(app): Path<String>,
    Actor(actor): Actor,
    Json(body): Json<PublishBody>,
) -> Result<(StatusCode, Json<PackageSummary>), ApiError> {
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
    Ok((StatusCode::CREATED, Json(published)))
}

/// A tag change on one version.
#[derive(Serialize, ToSchema)]
struct TagChanged<C> {
    app: String,
    version: String,
    tag: String,
    #[serde(flatten)]
    change: C,
}

#[derive(Serialize, ToSchema)]
struct Added {
    /// False when the version already had the tag.
    added: bool,
    /// Versions an exclusive tag moved away from.
    moved_from: Vec<String>,
}

#[derive(Serialize, ToSchema)]
struct Removed {
    /// False when the version did not have the tag.
    removed: bool,
}

/// Adds the tag (moving it, if exclusive).
#[utoipa::path(put, path = "/v1/apps/{app}/packages/{version}/tags/{tag}", tag = "tags",
    params(("app" = String, Path), ("version" = String, Path), ("tag" = String, Path)), responses(
    (status = 200, body = TagChanged<Added>),
    (status = 400, description = "`invalid_name`", body = ErrorBody),
    (status = 404, description = "`package_not_found`", body = ErrorBody)))]
async fn add_tag(
    State(state): State<AppState>,
    Path((app, version, tag)): Path<(String, String, String)>,
    Actor(actor): Actor,
) -> Result<Json<TagChanged<Added>>, ApiError> {
    let change = state.registry.add_tag(&app, &version, &tag, &actor).await?;
    let change = Added { added: change.added, moved_from: change.moved_from };
    Ok(Json(TagChanged { app, version, tag, change }))
}

#[utoipa::path(delete, path = "/v1/apps/{app}/packages/{version}/tags/{tag}", tag = "tags",
    params(("app" = String, Path), ("version" = String, Path), ("tag" = String, Path)), responses(
    (status = 200, body = TagChanged<Removed>),
    (status = 400, description = "`invalid_name`", body = ErrorBody),
    (status = 404, description = "`package_not_found`", body = ErrorBody)))]
async fn remove_tag(
    State(state): State<AppState>,
    Path((app, version, tag)): Path<(String, String, String)>,
    Actor(actor): Actor,
) -> Result<Json<TagChanged<Removed>>, ApiError> {
    let removed = state.registry.remove_tag(&app, &version, &tag, &actor).await?;
    Ok(Json(TagChanged { app, version, tag, change: Removed { removed } }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct TagMode {
    exclusive: bool,
}

#[derive(Serialize, ToSchema)]
struct TagModeSet {
    app: String,
    tag: String,
    exclusive: bool,
}

/// Makes a tag exclusive (`{"exclusive": true}`: at most one version holds it) or not.
#[utoipa::path(put, path = "/v1/apps/{app}/tags/{tag}", tag = "tags",
    params(("app" = String, Path), ("tag" = String, Path)), request_body = TagMode, responses(
    (status = 200, body = TagModeSet),
    (status = 400, description = "`invalid_name`", body = ErrorBody)))]
async fn set_tag_mode(
    State(state): State<AppState>,
    Path((app, tag)): Path<(String, String)>,
    Actor(actor): Actor,
    Json(mode): Json<TagMode>,
) -> Result<Json<TagModeSet>, ApiError> {
    state.registry.set_exclusive(&app, &tag, mode.exclusive, &actor).await?;
    Ok(Json(TagModeSet { app, tag, exclusive: mode.exclusive }))
}

/// The tags in use in an app, with how many versions carry each.
#[utoipa::path(get, path = "/v1/apps/{app}/tags", tag = "tags", params(("app" = String, Path)), responses(
    (status = 200, body = Items<TagInfo>),
    (status = 400, description = "`invalid_name`", body = ErrorBody)))]
async fn list_tags(
    State(state): State<AppState>,
    Path(app): Path<String>,
) -> Result<Json<Items<TagInfo>>, ApiError> {
    Ok(Json(Items { items: state.registry.list_tags(&app).await? }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct PageParams {
    cursor: Option<String>,
    limit: Option<u32>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct LimitParams {
    /// Default 100, at most 1000.
    limit: Option<u32>,
}

/// Every tag change of an app, newest first.
#[utoipa::path(get, path = "/v1/apps/{app}/tag-events", tag = "tags", params(("app" = String, Path), LimitParams),
    responses(
    (status = 200, body = Items<TagEvent>),
    (status = 400, description = "`invalid_name`, `invalid_request`", body = ErrorBody)))]
async fn tag_events(
    State(state): State<AppState>,
    Path(app): Path<String>,
    Query(params): Query<LimitParams>,
) -> Result<Json<Items<TagEvent>>, ApiError> {
    let limit = params.limit.unwrap_or(100).min(1000);
    Ok(Json(Items { items: state.registry.tag_events(&app, limit).await? }))
}

/// Packages removed by retention, newest first.
#[utoipa::path(get, path = "/v1/apps/{app}/deletions", tag = "packages", params(("app" = String, Path), LimitParams),
    responses(
    (status = 200, body = Items<Deletion>),
    (status = 400, description = "`invalid_name`, `invalid_request`", body = ErrorBody)))]
async fn deletions(
    State(state): State<AppState>,
    Path(app): Path<String>,
    Query(params): Query<LimitParams>,
) -> Result<Json<Items<Deletion>>, ApiError> {
    let limit = params.limit.unwrap_or(100).min(1000);
    Ok(Json(Items { items: state.registry.deletions(&app, limit).await? }))
}

/// Component packages of one component of an app, newest first.
#[utoipa::path(get, path = "/v1/apps/{app}/components/{component}/packages", tag = "packages",
    params(("app" = String, Path), ("component" = String, Path), PageParams), responses(
    (status = 200, body = Page<ComponentManifest>),
    (status = 400, description = "`invalid_name`, `invalid_cursor`, `invalid_request`", body = ErrorBody)))]
async fn list_component_packages(
    State(state): State<AppState>,
    Path((app, component)): Path<(String, String)>,
    Query(params): Query<PageParams>,
) -> Result<Json<Page<ComponentManifest>>, ApiError> {
    let page = state
        .registry
        .list_component_packages(
            &app,
            &component,
            params.cursor.as_deref(),
            params.limit.unwrap_or(DEFAULT_PAGE),
        )
        .await?;
    Ok(Json(page))
}
