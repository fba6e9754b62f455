//! Streaming package transfers: upload of a built `.tar.gz`, download with `ETag` (the
//! digest) and single-range `Range` support, offline export and import. Bodies stream
//! through; nothing holds a whole package in memory.

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use slipway_registry::query::ByteRange;

use crate::error::{ApiError, Json, Query};
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/apps/{app}/packages:upload", post(upload).layer(DefaultBodyLimit::disable()))
        .route("/v1/apps/{app}/packages/{version}/download", get(download))
        .route("/v1/apps/{app}/packages:import", post(import).layer(DefaultBodyLimit::disable()))
        .route("/v1/apps/{app}/packages/{version}/export", get(export))
}

/// `POST /v1/apps/{app}/packages:import` with an offline archive as body.
async fn import(
    State(state): State<AppState>,
    Path(app): Path<String>,
    body: Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let imported = state.registry.import_offline(&app, body.into_data_stream()).await?;
    Ok((StatusCode::CREATED, Json(json!(imported))))
}

/// `GET …/packages/{version}/export`: the package and all its images as one tar archive.
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UploadParams {
    /// The digest the client computed; a mismatch refuses the upload.
    digest: Option<String>,
}

/// `POST /v1/apps/{app}/packages:upload[?digest=sha256:…]` with the `.tar.gz` as body.
async fn upload(
    State(state): State<AppState>,
    Path(app): Path<String>,
    Query(params): Query<UploadParams>,
    body: Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let published =
        state.registry.upload_app_package(&app, body.into_data_stream(), params.digest.as_deref()).await?;
    Ok((StatusCode::CREATED, Json(json!(published))))
}

/// `GET …/packages/{version}/download`: the package blob, `ETag` = digest, `Range` honoured.
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
