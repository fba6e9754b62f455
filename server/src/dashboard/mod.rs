//! The dashboard: a browser view of builds, packages, plugins and fleet health, served at
//! `/` by the same process as the API it calls.
//!
//! Every asset is plain HTML, CSS and JavaScript compiled into the binary (no build step,
//! nothing fetched from elsewhere; the content security policy forbids it). Assets are
//! served with an ETag over their content, revalidated on each load (`no-cache`, answered
//! `304` when unchanged), and gzip-compressed once, on first use, for browsers that accept it.
//!
//! The page talks to `/v1` with a bearer token the person types in, kept in
//! `sessionStorage` (gone when the tab closes). Event streams are read with `fetch()` and a
//! streamed body rather than `EventSource`, because `EventSource` cannot send an
//! `Authorization` header; this keeps the token out of URLs (and so out of access logs and
//! history) and needs no second kind of credential on the server.

use std::io::Write;
use std::sync::OnceLock;

use axum::extract::Path;
use axum::http::header::{
    ACCEPT_ENCODING, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_SECURITY_POLICY, CONTENT_TYPE, ETAG,
    IF_NONE_MATCH, VARY, X_CONTENT_TYPE_OPTIONS,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use utoipa_axum::routes;

use crate::error::{ApiError, ErrorBody};
use crate::openapi::ApiRouter;

struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

macro_rules! asset {
    ($name:literal, $type:expr) => {
        Asset { name: $name, content_type: $type, body: include_bytes!(concat!("assets/", $name)) }
    };
}

const JS: &str = "text/javascript; charset=utf-8";

const ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("app.css", "text/css; charset=utf-8"),
    asset!("favicon.svg", "image/svg+xml"),
    asset!("main.js", JS),
    asset!("api.js", JS),
    asset!("dom.js", JS),
    asset!("heatmap.js", JS),
    asset!("health.js", JS),
    asset!("builds.js", JS),
    asset!("packages.js", JS),
    asset!("plugins.js", JS),
];

/// Only this origin's scripts, styles and API: a guard against injected markup, and the
/// proof that the page needs nothing from elsewhere.
const POLICY: &str =
    "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'";

pub fn routes() -> ApiRouter {
    ApiRouter::new().routes(routes!(index)).routes(routes!(asset))
}

/// The dashboard page; it asks for an API token and keeps it for the browser tab.
#[utoipa::path(get, path = "/", tag = "dashboard", responses(
    (status = 200, description = "The page", content_type = "text/html", body = String),
    (status = 304, description = "Unchanged since the ETag sent in `If-None-Match`")))]
async fn index(headers: HeaderMap) -> Response {
    serve(0, &headers)
}

/// A script, style sheet or icon of the dashboard, gzip-compressed when the client accepts it.
#[utoipa::path(get, path = "/assets/{name}", tag = "dashboard",
    params(("name" = String, Path, description = "File name, e.g. `heatmap.js`")),
    responses(
        (status = 200, description = "The asset", body = String),
        (status = 304, description = "Unchanged since the ETag sent in `If-None-Match`"),
        (status = 400, description = "`invalid_request`: no asset of that name", body = ErrorBody)))]
async fn asset(Path(name): Path<String>, headers: HeaderMap) -> Result<Response, ApiError> {
    let position = ASSETS.iter().position(|a| a.name == name && name != "index.html");
    let index =
        position.ok_or_else(|| ApiError::InvalidRequest(format!("the dashboard has no asset `{name}`")))?;
    Ok(serve(index, &headers))
}

/// What is derived from an asset once: its ETag and, when it saves bytes, its gzip form.
struct Prepared {
    etag: HeaderValue,
    gzip: Option<Vec<u8>>,
}

fn prepared() -> &'static [Prepared] {
    static PREPARED: OnceLock<Vec<Prepared>> = OnceLock::new();
    PREPARED.get_or_init(|| {
        ASSETS
            .iter()
            .map(|a| {
                let digest = hex::encode(&Sha256::digest(a.body)[..12]);
                let etag = HeaderValue::from_str(&format!("\"{digest}\"")).expect("hex is a valid header");
                let gzip = gzip(a.body).filter(|z| z.len() < a.body.len());
                Prepared { etag, gzip }
            })
            .collect()
    })
}

fn gzip(body: &[u8]) -> Option<Vec<u8>> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(body).ok()?;
    encoder.finish().ok()
}

fn serve(index: usize, request: &HeaderMap) -> Response {
    let (asset, prepared) = (&ASSETS[index], &prepared()[index]);
    let mut headers = HeaderMap::new();
    headers.insert(ETAG, prepared.etag.clone());
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(VARY, HeaderValue::from_static("accept-encoding"));
    if request.get(IF_NONE_MATCH).is_some_and(|v| etag_matches(v, &prepared.etag)) {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(POLICY));
    match &prepared.gzip {
        Some(z) if accepts_gzip(request) => {
            headers.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            (headers, z.clone()).into_response()
        }
        _ => (headers, asset.body).into_response(),
    }
}

fn etag_matches(if_none_match: &HeaderValue, etag: &HeaderValue) -> bool {
    let Ok(text) = if_none_match.to_str() else { return false };
    text.split(',')
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == "*" || t.as_bytes() == etag.as_bytes())
}

fn accepts_gzip(request: &HeaderMap) -> bool {
    let Some(Ok(text)) = request.get(ACCEPT_ENCODING).map(|v| v.to_str()) else { return false };
    text.split(',').any(|coding| {
        let mut parts = coding.split(';').map(str::trim);
        let refused = |p: &str| p.strip_prefix("q=").and_then(|q| q.parse::<f32>().ok()) == Some(0.0);
        parts.next() == Some("gzip") && !parts.any(refused)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(axum::http::HeaderName, &'static str)]) -> HeaderMap {
        pairs.iter().map(|(k, v)| (k.clone(), HeaderValue::from_static(v))).collect()
    }

    #[test]
    fn gzip_is_sent_only_to_browsers_that_accept_it() {
        assert!(accepts_gzip(&headers(&[(ACCEPT_ENCODING, "gzip, deflate, br")])));
        assert!(accepts_gzip(&headers(&[(ACCEPT_ENCODING, "br;q=1.0, gzip;q=0.5")])));
        assert!(!accepts_gzip(&headers(&[(ACCEPT_ENCODING, "gzip;q=0, br")])));
        assert!(!accepts_gzip(&headers(&[(ACCEPT_ENCODING, "identity")])));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }

    #[test]
    fn every_asset_has_an_etag_and_script_assets_compress() {
        let etag = prepared()[0].etag.clone();
        assert!(etag_matches(&HeaderValue::from_static("W/\"x\", *"), &etag));
        assert!(etag_matches(
            &HeaderValue::from_str(&format!("\"a\", {}", etag.to_str().unwrap())).unwrap(),
            &etag
        ));
        assert!(!etag_matches(&HeaderValue::from_static("\"other\""), &etag));
        let heatmap = ASSETS.iter().position(|a| a.name == "heatmap.js").unwrap();
        assert!(prepared()[heatmap].gzip.is_some(), "text compresses");
    }
}
