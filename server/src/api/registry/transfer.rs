//! Streaming package transfers: upload of a built `.tar.gz`, download with `ETag` (the
//! digest) and single-range `Range` support, offline export and import. Bodies stream
//! through; nothing holds a whole package in memory.

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use slipway_registry::query::{ByteRange, PackageSummary};
use utoipa::IntoParams;
use utoipa_axum::router::UtoipaMethodRouterExt;
use utoipa_axum::routes;

use crate::error::{ApiError, ErrorBody, Json, Query};
use crate::openapi::ApiRouter;
use crate::state::AppState;

pub fn routes() -> ApiRouter {
    ApiRouter::new()
        .routes(routes!(upload).layer(DefaultBodyLimit::disable()))
        .routes(routes!(download))
        .routes(routes!(import).layer(DefaultBodyLimit::disable()))
        .routes(routes!(export))
}

/// Imports an offline archive (from `export`): the package and its images.
#[utoipa::path(post, path = "/v1/apps/{app}/packages:import", tag = "packages", params(("app" = String, Path)),
    request_body(content = Vec<u8>, content_type = "application/x-tar", description = "An offline archive"),
    responses(
    (status = 201, body = PackageSummary),
    (status = 400, description = "`invalid_name`, `upload_interrupted`", body = ErrorBody),
    (status = 409, description = "`version_exists`", body = ErrorBody),
    (status = 422, description = "`bad_archive`, `invalid_package`, `app_mismatch`, `digest_mismatch`", body = ErrorBody),
    (status = 502, description = "`image_registry_failed`", body = ErrorBody)))]
async fn import(
    State(state): State<AppState>,
    Path(app): Path<String>,
    body: Body,
) -> Result<(StatusCode, Json<PackageSummary>), ApiError> {
    let imported = state.registry.import_offline(&app, body.into_data_stream()).await?;
    Ok((StatusCode::CREATED, Json(imported)))
}

/// The package and all its images as one tar archive, for an offline site.
#[utoipa::path(get, path = "/v1/apps/{app}/packages/{version}/export", tag = "packages",
    params(("app" = String, Path), ("version" = String, Path)), responses(
    (status = 200, description = "The offline archive", content_type = "application/x-tar", body = Vec<u8>),
    (status = 404, description = "`package_not_found`", body = ErrorBody),
    (status = 502, description = "`image_registry_failed`", body = ErrorBody)))]
async fn export(
    State(state): State<AppState>,
    Path((app, version)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let (package, stream) = state.registry.export_offline(&app, &version).await?;
    let mut response = Body::from_stream(stream).into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-tar"));
    let disposition = format!("attachment; filename=\"{}-{}.offline.tar\"", package.app, package.version);
    h.insert(header::CONTENT_DISPOSITION, header_value(&disposition)?);
    Ok(response)
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct UploadParams {
    /// The digest the client computed; a mismatch refuses the upload.
    digest: Option<String>,
}

/// Publishes an app package built by the client (`.tar.gz` body, streamed).
#[utoipa::path(post, path = "/v1/apps/{app}/packages:upload", tag = "packages",
    params(("app" = String, Path), UploadParams),
    request_body(content = Vec<u8>, content_type = "application/gzip", description = "The package `.tar.gz`"),
    responses(
    (status = 201, body = PackageSummary),
    (status = 400, description = "`invalid_name`, `upload_interrupted`", body = ErrorBody),
    (status = 409, description = "`version_exists`, `component_version_exists`", body = ErrorBody),
    (status = 422, description = "`bad_archive`, `invalid_package`, `app_mismatch`, `digest_mismatch`", body = ErrorBody)))]
async fn upload(
    State(state): State<AppState>,
    Path(app): Path<String>,
    Query(params): Query<UploadParams>,
    body: Body,
) -> Result<(StatusCode, Json<PackageSummary>), ApiError> {
    let published =
        state.registry.upload_app_package(&app, body.into_data_stream(), params.digest.as_deref()).await?;
    Ok((StatusCode::CREATED, Json(published)))
}

/// The package blob: `ETag` is its digest (`If-None-Match` answers 304), a single `Range`
/// is honoured (206).
#[utoipa::path(get, path = "/v1/apps/{app}/packages/{version}/download", tag = "packages",
    params(("app" = String, Path), ("version" = String, Path),
        ("Range" = Option<String>, Header, description = "One `bytes=` range"),
        ("If-None-Match" = Option<String>, Header, description = "The digest in quotes, as `ETag` gave it")),
    responses(
    (status = 200, description = "The package", content_type = "application/gzip", body = Vec<u8>),
    (status = 206, description = "The requested range", content_type = "application/gzip", body = Vec<u8>),
    (status = 304, description = "Not modified"),
    (status = 404, description = "`package_not_found`", body = ErrorBody),
    (status = 416, description = "`range_not_satisfiable`", body = ErrorBody)))]
async fn download(
    State(state): State<AppState>,
    Path((app, version)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok()).and_then(parse_range);
    let (package, blob) = state.registry.open_package(&app, &version, range).await?;
    let etag = format!("\"{}\"", package.digest);
    let not_modified = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let mut response = if not_modified {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let length = blob.range.end - blob.range.start;
        let partial = range.is_some();
        let mut response = Body::from_stream(blob.stream).into_response();
        if partial {
            *response.status_mut() = StatusCode::PARTIAL_CONTENT;
        }
        let h = response.headers_mut();
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/gzip"));
        if partial {
            let content_range =
                format!("bytes {}-{}/{}", blob.range.start, blob.range.end - 1, blob.size_bytes);
            h.insert(header::CONTENT_RANGE, header_value(&content_range)?);
        }
        let disposition = format!("attachment; filename=\"{}-{}.tar.gz\"", package.app, package.version);
        h.insert(header::CONTENT_DISPOSITION, header_value(&disposition)?);
        response
    };
    let h = response.headers_mut();
    h.insert(header::ETAG, header_value(&etag)?);
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    metrics::counter!("slipway_registry_downloads_total").increment(1);
    Ok(response)
}

fn header_value(text: &str) -> Result<HeaderValue, ApiError> {
    HeaderValue::from_str(text).map_err(|e| ApiError::Internal(format!("header value {text:?}: {e}")))
}

/// One `bytes=` range. Anything else (several ranges, other units, malformed) is ignored,
/// as RFC 9110 allows, and the whole package is sent.
fn parse_range(value: &str) -> Option<ByteRange> {
    let spec = value.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (first, last) = spec.split_once('-')?;
    match (first.trim(), last.trim()) {
        ("", n) => n.parse().ok().map(ByteRange::Last),
        (f, "") => f.parse().ok().map(ByteRange::From),
        (f, l) => Some(ByteRange::FromTo(f.parse().ok()?, l.parse().ok()?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_headers() {
        assert_eq!(parse_range("bytes=0-99"), Some(ByteRange::FromTo(0, 99)));
        assert_eq!(parse_range("bytes=100-"), Some(ByteRange::From(100)));
        assert_eq!(parse_range("bytes=-20"), Some(ByteRange::Last(20)));
        for ignored in ["bytes=0-1,5-6", "items=0-1", "bytes=x-1", "bytes=5", "bytes=-"] {
            assert_eq!(parse_range(ignored), None, "{ignored}");
        }
    }
}
