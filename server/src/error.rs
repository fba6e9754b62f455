//! The API's error type: every failure a handler can return, mapped once to an HTTP status
//! and a stable machine-readable `code`, rendered as
//! `{"error":{"code":"…","message":"…","details":{…}}}`.

use axum::extract::rejection::JsonRejection;
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequest, FromRequestParts};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

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
    Registry(#[from] slipway_registry::Error),
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
            ApiError::Registry(e) => registry_status_and_code(e),
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
            _ => json!({}),
        }
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

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        if status.is_server_error() {
            tracing::error!(code, error = %self, "request failed");
        }
        let body =
            json!({ "error": { "code": code, "message": self.to_string(), "details": self.details() } });
        (status, axum::Json(body)).into_response()
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
