//! Build sources sent by clients: `POST /v1/sources` with a `.tar.gz` body (at most
//! `pipeline.max_context_bytes`) answers the id a build request names as its source.

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use utoipa_axum::router::UtoipaMethodRouterExt;
use utoipa_axum::routes;

use crate::error::{ApiError, ErrorBody, Json};
use crate::openapi::ApiRouter;
use crate::pipeline::UploadedSource;
use crate::state::AppState;

pub fn routes() -> ApiRouter {
    // The pipeline enforces its own limit while streaming; the JSON body limit does not apply.
    ApiRouter::new().routes(routes!(upload).layer(DefaultBodyLimit::disable()))
}

/// Keeps a source `.tar.gz` for builds to name as `{"upload": {"id": …}}` (what `slipway
/// build <dir>` sends).
#[utoipa::path(post, path = "/v1/sources", tag = "builds",
    request_body(content = Vec<u8>, content_type = "application/gzip", description = "The source tree as .tar.gz"),
    responses(
    (status = 201, body = UploadedSource),
    (status = 400, description = "`invalid_build_request`: an empty or interrupted body", body = ErrorBody),
    (status = 413, description = "`source_too_large`: beyond `pipeline.max_context_bytes`", body = ErrorBody)))]
async fn upload(
    State(state): State<AppState>,
    body: Body,
) -> Result<(StatusCode, Json<UploadedSource>), ApiError> {
    let uploaded = state.pipeline.upload_source(body.into_data_stream()).await?;
    Ok((StatusCode::CREATED, Json(uploaded)))
}
