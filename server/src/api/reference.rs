//! The API reference: the OpenAPI document and a page that renders it, both open without a
//! token and served from the binary (the page and its script are one file, no CDN).

use axum::http::header;
use axum::response::{Html, IntoResponse};
use utoipa_axum::routes;

use crate::error::ApiError;
use crate::openapi::ApiRouter;

/// The page behind `/docs`: plain HTML and JavaScript that fetch `/openapi.json` and render it.
const DOCS_PAGE: &str = include_str!("reference.html");

pub fn routes() -> ApiRouter {
    ApiRouter::new().routes(routes!(openapi_json)).routes(routes!(docs))
}

/// This document: OpenAPI 3.1, generated from the server's code.
#[utoipa::path(get, path = "/openapi.json", tag = "reference",
    responses((status = 200, description = "The OpenAPI document", body = Object)))]
async fn openapi_json() -> Result<impl IntoResponse, ApiError> {
    let json = super::document()
        .to_pretty_json()
        .map_err(|e| ApiError::Internal(format!("serialising the OpenAPI document: {e}")))?;
    Ok(([(header::CONTENT_TYPE, "application/json")], json))
}

/// A browsable reference of this document: operations by tag, their parameters, bodies,
/// responses with error codes, and the schemas.
#[utoipa::path(get, path = "/docs", tag = "reference",
    responses((status = 200, description = "HTML page", content_type = "text/html", body = String)))]
async fn docs() -> Html<&'static str> {
    Html(DOCS_PAGE)
}
