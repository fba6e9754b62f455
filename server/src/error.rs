//! The API's error type: every failure a handler can return, mapped once to an HTTP status
//! and a stable machine-readable `code`, rendered as
//! `{"error":{"code":"…","message":"…","details":{…}}}`.

use axum::extract::rejection::JsonRejection;
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequest, FromRequestParts};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::auth::AuthError;
use crate::pipeline::PipelineError;
use crate::triggers::TriggerError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("no route for {method} {path}")]
    RouteNotFound { method: String, path: String },
    #[error("method {method} is not allowed on {path}")]
    MethodNotAllowed { method: String, path: String },
    #[error("request body is larger than the limit{}", limit.map(|l| format!(" of {l} bytes")).unwrap_or_default())]
    PayloadTooLarge { limit: Option<usize> },
    #[error("request body is not valid JSON for this call: {0}")]
    InvalidJson(String),
    #[error("request body must be sent with Content-Type: application/json")]
    UnsupportedMediaType,
    #[error("{0}")]
    InvalidRequest(String),
    #[error("service is not ready: {failing}")]
    NotReady { failing: String, checks: Value },
    #[error("internal error: {0}")]
    Internal(String),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Registry(#[from] slipway_registry::Error),
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    #[error(transparent)]
    Trigger(#[from] TriggerError),
    #[error(transparent)]
    Plugin(#[from] slipway_plugins::Error),
    #[error(transparent)]
    Status(#[from] slipway_status::Error),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

impl ApiError {
    /// The one place where errors meet HTTP: status and stable code per variant.
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::RouteNotFound { .. } => (StatusCode::NOT_FOUND, "route_not_found"),
            ApiError::MethodNotAllowed { .. } => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::PayloadTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ApiError::InvalidJson(_) => (StatusCode::BAD_REQUEST, "invalid_json"),
            ApiError::UnsupportedMediaType => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
            ApiError::InvalidRequest(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
            ApiError::NotReady { .. } => (StatusCode::SERVICE_UNAVAILABLE, "not_ready"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            ApiError::Database(_) => (StatusCode::SERVICE_UNAVAILABLE, "database_failed"),
            ApiError::Auth(e) => match e {
                AuthError::Missing | AuthError::Invalid => (StatusCode::UNAUTHORIZED, "unauthenticated"),
                AuthError::Expired { .. } => (StatusCode::UNAUTHORIZED, "token_expired"),
                AuthError::Revoked { .. } => (StatusCode::UNAUTHORIZED, "token_revoked"),
                AuthError::Forbidden { .. } => (StatusCode::FORBIDDEN, "insufficient_scope"),
                AuthError::NotFound { .. } => (StatusCode::NOT_FOUND, "token_not_found"),
                AuthError::BadRequest(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
                AuthError::Storage(_) => (StatusCode::SERVICE_UNAVAILABLE, "database_failed"),
                AuthError::AdminFile { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            },
            ApiError::Registry(e) => registry_status_and_code(e),
            ApiError::Trigger(e) => match e {
                TriggerError::NotFound { .. } => (StatusCode::NOT_FOUND, "trigger_not_found"),
                TriggerError::Unauthentic(_) => (StatusCode::UNAUTHORIZED, "trigger_unauthentic"),
                TriggerError::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
                TriggerError::Rejected { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "trigger_rejected"),
                TriggerError::Invalid { .. } => (StatusCode::BAD_REQUEST, "invalid_trigger"),
                TriggerError::Plugin(e) => plugin_status_and_code(e),
                TriggerError::Pipeline(e) => pipeline_status_and_code(e),
                TriggerError::Database(_)
                | TriggerError::Sqlite(_)
                | TriggerError::WriterThread(_)
                | TriggerError::Flush(_)
                | TriggerError::WriterStopped
                | TriggerError::AdapterCallsStopped => (StatusCode::SERVICE_UNAVAILABLE, "database_failed"),
                TriggerError::Corrupt(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            },
            ApiError::Pipeline(e) => pipeline_status_and_code(e),
            ApiError::Plugin(e) => plugin_status_and_code(e),
            ApiError::Status(e) => status_status_and_code(e),
        }
    }

    fn details(&self) -> Value {
        match self {
            ApiError::PayloadTooLarge { limit } => json!({ "limit_bytes": limit }),
            ApiError::NotReady { checks, .. } => json!({ "checks": checks }),
            ApiError::RouteNotFound { method, path } | ApiError::MethodNotAllowed { method, path } => {
                json!({ "method": method, "path": path })
            }
            ApiError::Registry(e) => registry_details(e),
            ApiError::Trigger(TriggerError::RateLimited { scope, retry_after_s }) => {
                json!({ "scope": scope, "retry_after_s": retry_after_s })
            }
            ApiError::Trigger(TriggerError::Rejected { adapter, reason }) => {
                json!({ "adapter": adapter, "reason": reason })
            }
            ApiError::Trigger(TriggerError::Invalid { problems }) => json!({ "problems": problems }),
            ApiError::Pipeline(e) | ApiError::Trigger(TriggerError::Pipeline(e)) => pipeline_details(e),
            ApiError::Plugin(e) => plugin_details(e),
            ApiError::Status(e) => status_details(e),
            ApiError::Auth(AuthError::Forbidden { needed, granted }) => {
                json!({ "needed": needed, "granted": granted })
            }
            ApiError::Auth(
                AuthError::Expired { id } | AuthError::Revoked { id } | AuthError::NotFound { id },
            ) => {
                json!({ "token_id": id })
            }
            _ => json!({}),
        }
    }
}

fn pipeline_status_and_code(e: &PipelineError) -> (StatusCode, &'static str) {
    match e {
        PipelineError::InvalidRequest { .. } => (StatusCode::BAD_REQUEST, "invalid_build_request"),
        PipelineError::NotFound { .. } => (StatusCode::NOT_FOUND, "build_not_found"),
        PipelineError::WrongState { .. } => (StatusCode::CONFLICT, "build_state_conflict"),
        PipelineError::SourceTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "source_too_large"),
        PipelineError::ImageNotFound { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "image_not_found"),
        PipelineError::ImageRegistry { .. } => (StatusCode::BAD_GATEWAY, "image_registry_failed"),
        PipelineError::Registry(e) => registry_status_and_code(e),
        PipelineError::Database(_) => (StatusCode::SERVICE_UNAVAILABLE, "database_failed"),
        PipelineError::ObjectStore(_) => (StatusCode::SERVICE_UNAVAILABLE, "object_store_failed"),
        PipelineError::Backend(_) | PipelineError::Corrupt(_) => {
            (StatusCode::INTERNAL_SERVER_ERROR, "internal")
        }
    }
}

fn pipeline_details(e: &PipelineError) -> Value {
    match e {
        PipelineError::InvalidRequest { problems } => json!({ "problems": problems }),
        PipelineError::NotFound { id } => json!({ "build": id }),
        PipelineError::SourceTooLarge { limit_bytes } => json!({ "limit_bytes": limit_bytes }),
        PipelineError::ImageNotFound { references } => json!({ "references": references }),
        PipelineError::ImageRegistry { reference, .. } => json!({ "reference": reference }),
        _ => json!({}),
    }
}

fn registry_status_and_code(e: &slipway_registry::Error) -> (StatusCode, &'static str) {
    use slipway_registry::Error as E;
    match e {
        E::InvalidName { .. } => (StatusCode::BAD_REQUEST, "invalid_name"),
        E::InvalidVersion { .. } => (StatusCode::BAD_REQUEST, "invalid_version"),
        E::InvalidRange { .. } => (StatusCode::BAD_REQUEST, "invalid_version_range"),
        E::InvalidCursor(_) => (StatusCode::BAD_REQUEST, "invalid_cursor"),
        E::InvalidPackage(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_package"),
        E::PackageNotFound { .. } => (StatusCode::NOT_FOUND, "package_not_found"),
        E::ComponentNotFound { .. } => (StatusCode::NOT_FOUND, "component_package_not_found"),
        E::VersionExists { .. } => (StatusCode::CONFLICT, "version_exists"),
        E::ComponentVersionExists { .. } => (StatusCode::CONFLICT, "component_version_exists"),
        E::DigestMismatch { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "digest_mismatch"),
        E::AppMismatch { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "app_mismatch"),
        E::BadArchive { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "bad_archive"),
        E::RangeNotSatisfiable { .. } => (StatusCode::RANGE_NOT_SATISFIABLE, "range_not_satisfiable"),
        E::ImageRegistry { .. } => (StatusCode::BAD_GATEWAY, "image_registry_failed"),
        E::ObjectStore { .. } => (StatusCode::SERVICE_UNAVAILABLE, "object_store_failed"),
        E::Body(_) => (StatusCode::BAD_REQUEST, "upload_interrupted"),
        E::Database(_) => (StatusCode::SERVICE_UNAVAILABLE, "database_failed"),
        E::Io(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
    }
}

fn registry_details(e: &slipway_registry::Error) -> Value {
    use slipway_registry::Error as E;
    match e {
        E::InvalidName { what, value, rule } => json!({ "what": what, "value": value, "rule": rule }),
        E::InvalidVersion { value, .. } | E::InvalidRange { value, .. } => json!({ "value": value }),
        E::PackageNotFound { app, version } => json!({ "app": app, "version": version }),
        E::ComponentNotFound { app, component, version } => {
            json!({ "app": app, "component": component, "version": version })
        }
        E::VersionExists { app, version, digest } => {
            json!({ "app": app, "version": version, "digest": digest })
        }
        E::ComponentVersionExists { app, component, version, digest } => {
            json!({ "app": app, "component": component, "version": version, "digest": digest })
        }
        E::DigestMismatch { expected, actual } => json!({ "expected": expected, "actual": actual }),
        E::BadArchive { digest, .. } => json!({ "digest": digest }),
        E::RangeNotSatisfiable { size_bytes } => json!({ "size_bytes": size_bytes }),
        E::ObjectStore { key, .. } => json!({ "key": key }),
        _ => json!({}),
    }
}

fn status_status_and_code(e: &slipway_status::Error) -> (StatusCode, &'static str) {
    use slipway_status::Error as E;
    match e {
        E::InvalidItems { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_instances"),
        E::TooManyItems { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "too_many_items"),
        E::NotFound { .. } => (StatusCode::NOT_FOUND, "instance_not_found"),
        E::InvalidCluster { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_cluster"),
        E::Plugin(p) => plugin_status_and_code(p),
        E::Database(_) => (StatusCode::SERVICE_UNAVAILABLE, "database_failed"),
        E::Fetcher(_) | E::Corrupt { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
    }
}

fn status_details(e: &slipway_status::Error) -> Value {
    use slipway_status::Error as E;
    match e {
        E::InvalidItems { problems } => json!({ "problems": problems }),
        E::TooManyItems { count, limit } => json!({ "count": count, "limit": limit }),
        E::NotFound { what, id } => json!({ "what": what, "id": id }),
        E::InvalidCluster { name, .. } => json!({ "cluster": name }),
        E::Plugin(p) => plugin_details(p),
        _ => json!({}),
    }
}

fn plugin_status_and_code(e: &slipway_plugins::Error) -> (StatusCode, &'static str) {
    use slipway_plugins::Error as E;
    // A script that fails is the plugin author's problem, not the server's: 422.
    match e {
        E::Timeout { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "plugin_timeout"),
        E::MemoryLimit { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "plugin_memory_limit"),
        E::StackOverflow { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "plugin_stack_overflow"),
        E::Thrown { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "plugin_threw"),
        E::WrongShape { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "plugin_wrong_shape"),
        E::WorkerDied { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "plugin_worker_died"),
        E::ModuleLoad { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "plugin_module_load_failed"),
        E::UnknownFunction { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "plugin_unknown_function"),
        E::InvalidPackage { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_plugin_package"),
        E::UnknownScript { .. } => (StatusCode::NOT_FOUND, "plugin_not_found"),
        E::UnknownRevision { .. } => (StatusCode::NOT_FOUND, "plugin_revision_not_found"),
        E::UnknownPackage { .. } => (StatusCode::NOT_FOUND, "plugin_package_not_found"),
        E::InvalidTriple { .. } => (StatusCode::BAD_REQUEST, "invalid_plugin_triple"),
        E::RevisionConflict { .. } => (StatusCode::CONFLICT, "plugin_revision_conflict"),
        E::PackageInUse { .. } => (StatusCode::CONFLICT, "plugin_package_in_use"),
        E::Worker(_) => (StatusCode::SERVICE_UNAVAILABLE, "plugin_worker_unavailable"),
        E::Database(_) => (StatusCode::SERVICE_UNAVAILABLE, "database_failed"),
        E::ObjectStore(_) => (StatusCode::SERVICE_UNAVAILABLE, "object_store_failed"),
    }
}

fn plugin_details(e: &slipway_plugins::Error) -> Value {
    use slipway_plugins::Error as E;
    let mut details = serde_json::Map::new();
    if let Some(triple) = e.triple() {
        details.insert("triple".into(), json!(triple));
    }
    if let Some(location) = e.location() {
        details.insert("location".into(), json!(location));
    }
    match e {
        E::InvalidPackage { file, line, column, .. } => {
            details.insert("location".into(), json!({ "file": file, "line": line, "column": column }));
        }
        E::UnknownScript { kind, name } => {
            details.insert("kind".into(), json!(kind));
            details.insert("name".into(), json!(name));
        }
        E::UnknownPackage { name } => {
            details.insert("package".into(), json!(name));
        }
        E::PackageInUse { package, active } => {
            details.insert("package".into(), json!(package));
            details.insert("active".into(), json!(active));
        }
        _ => {}
    }
    Value::Object(details)
}

/// The body of every error answer (the `ApiError` schema of the OpenAPI document).
#[derive(serde::Serialize, utoipa::ToSchema)]
#[schema(as = ApiError)]
pub struct ErrorBody {
    error: ErrorDetail,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
struct ErrorDetail {
    /// Stable and machine-readable, e.g. `package_not_found`; each error response of an
    /// operation lists the codes it may carry.
    code: &'static str,
    /// For people; the wording may change.
    message: String,
    /// Facts about this failure that depend on the code, e.g. `problems` or `retry_after_s`.
    details: Value,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        if status.is_server_error() {
            tracing::error!(code, error = %self, "request failed");
        }
        let body =
            ErrorBody { error: ErrorDetail { code, message: self.to_string(), details: self.details() } };
        let mut response = (status, axum::Json(body)).into_response();
        if let ApiError::Trigger(TriggerError::RateLimited { retry_after_s, .. }) = &self {
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, (*retry_after_s).into());
        }
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer realm=\"slipway\""),
            );
        }
        response
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection.status() {
            StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge { limit: None },
            StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::UnsupportedMediaType,
            _ => ApiError::InvalidJson(rejection.body_text()),
        }
    }
}

/// `axum::Json`, but a rejected body becomes an [`ApiError`] so clients always get the
/// JSON error format.
#[derive(Debug, Clone, Copy, Default, FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct Json<T>(pub T);

impl<T: serde::Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::InvalidRequest(rejection.body_text())
    }
}

/// `axum::extract::Query`, but a malformed query string becomes an [`ApiError`].
#[derive(Debug, Clone, Copy, Default, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct Query<T>(pub T);
