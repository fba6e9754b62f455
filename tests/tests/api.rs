//! The conventions every endpoint shares, checked over real HTTP: the JSON error format,
//! body limits, request ids, readiness, metrics and graceful shutdown.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use serde_json::Value;
use slipway_server::error::Json;
use slipway_server::router::with_layers;
use slipway_server::state::AppState;
use slipway_tests::server::TestServer;

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

fn assert_error(body: &Value, code: &str) {
    let error = &body["error"];
    assert_eq!(error["code"], code, "{body}");
    assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    assert!(error["details"].is_object(), "{body}");
}

/// Set once the slow handler runs, so shutdown is signalled with a request truly in flight
/// (a connection whose request was not read yet is idle, and shutdown closes it).
static SLOW_STARTED: AtomicBool = AtomicBool::new(false);

/// The real routes plus a few of the test's own, so the shared stack is checked on a JSON
/// body, a slow handler and a panicking one.
fn with_test_routes(state: AppState) -> Router {
    async fn echo(Json(body): Json<Value>) -> Json<Value> {
        Json(body)
    }
    async fn slow() -> &'static str {
        SLOW_STARTED.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(800)).await;
        "finished"
    }
    async fn boom() -> &'static str {
        panic!("deliberate test panic")
    }
    let (routes, _) = slipway_server::api::routes().split();
    let routes =
        routes.route("/test/echo", post(echo)).route("/test/slow", get(slow)).route("/test/panic", get(boom));
    with_layers(routes, state)
}

async fn post_json(server: &TestServer, body: impl Into<reqwest::Body>) -> reqwest::Response {
    client()
        .post(server.url("/test/echo"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn unknown_route_and_method_get_json_errors() {
    let server = TestServer::start().await;
    let response = client().get(server.url("/v1/nothing-here")).send().await.unwrap();
    assert_eq!(response.status(), 404);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("application/json"));
    assert_error(&response.json().await.unwrap(), "route_not_found");

    let response = client().delete(server.url("/healthz")).send().await.unwrap();
    assert_eq!(response.status(), 405);
    assert_error(&response.json().await.unwrap(), "method_not_allowed");
}

#[tokio::test]
async fn oversize_body_gets_413_and_the_server_stays_up() {
    let server = TestServer::start_with(|c| c.limits.max_body_bytes = 1024, with_test_routes).await;
    let response = post_json(&server, format!("{{\"pad\":\"{}\"}}", "x".repeat(4096))).await;
    assert_eq!(response.status(), 413);
    let body: Value = response.json().await.unwrap();
    assert_error(&body, "payload_too_large");

    // Without a Content-Length (chunked), the limit still holds.
    let chunks: Vec<Result<bytes::Bytes, std::io::Error>> =
        (0..8).map(|_| Ok(bytes::Bytes::from(vec![b' '; 512]))).collect();
    let response = post_json(&server, reqwest::Body::wrap_stream(futures::stream::iter(chunks))).await;
    assert_eq!(response.status(), 413);
    assert_error(&response.json().await.unwrap(), "payload_too_large");

    let response = post_json(&server, "{\"small\":true}").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<Value>().await.unwrap()["small"], true);
}

#[tokio::test]
async fn malformed_json_and_wrong_content_type_are_clear() {
    let server = TestServer::start_with(|_| {}, with_test_routes).await;
    let response = post_json(&server, "{not json").await;
    assert_eq!(response.status(), 400);
    assert_error(&response.json().await.unwrap(), "invalid_json");

    let response = client().post(server.url("/test/echo")).body("{}").send().await.unwrap();
    assert_eq!(response.status(), 415);
    assert_error(&response.json().await.unwrap(), "unsupported_media_type");
}

#[tokio::test]
async fn a_panicking_handler_is_a_json_500_not_a_dead_server() {
    let server = TestServer::start_with(|_| {}, with_test_routes).await;
    let response = client().get(server.url("/test/panic")).send().await.unwrap();
    assert_eq!(response.status(), 500);
    assert_error(&response.json().await.unwrap(), "internal");
    assert_eq!(client().get(server.url("/healthz")).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn request_ids_are_made_or_kept() {
    let server = TestServer::start().await;
    let response = client().get(server.url("/healthz")).send().await.unwrap();
    let made = response.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(made.len(), 36, "a UUID: {made}");

    let response =
        client().get(server.url("/healthz")).header("x-request-id", "trace-me-42").send().await.unwrap();
    assert_eq!(response.headers()["x-request-id"], "trace-me-42");
}

#[tokio::test]
async fn metrics_count_requests_by_route() {
    let server = TestServer::start().await;
    for _ in 0..3 {
        client().get(server.url("/healthz")).send().await.unwrap();
    }
    let text = client().get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("slipway_http_requests_total") && l.contains("route=\"/healthz\""))
        .unwrap_or_else(|| panic!("no healthz counter in:\n{text}"));
    let count: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(count >= 3.0, "{line}");
    assert!(text.contains("slipway_http_request_duration_seconds_bucket"), "{text}");
}

#[tokio::test]
async fn readyz_turns_unready_when_the_data_directory_is_unwritable() {
    let server = TestServer::start().await;
    let response = client().get(server.url("/readyz")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["checks"]["database"], "ok");
    assert_eq!(body["checks"]["object_store"], "ok");

    // Tests run as root, for whom permission bits do not stop writes: put a file where the
    // object directory was, so nothing can be created below it.
    let objects = server.data_dir.path().join("objects");
    std::fs::remove_dir_all(&objects).unwrap();
    std::fs::write(&objects, b"not a directory").unwrap();
    let response = client().get(server.url("/readyz")).send().await.unwrap();
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.unwrap();
    assert_error(&body, "not_ready");
    assert_eq!(body["error"]["details"]["checks"]["database"], "ok");
    assert_ne!(body["error"]["details"]["checks"]["object_store"], "ok");

    // Liveness is not readiness: the process still answers.
    assert_eq!(client().get(server.url("/healthz")).send().await.unwrap().status(), 200);

    std::fs::remove_file(&objects).unwrap();
    std::fs::create_dir(&objects).unwrap();
    assert_eq!(client().get(server.url("/readyz")).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_requests() {
    let mut server = TestServer::start_with(|_| {}, with_test_routes).await;
    let url = server.url("/test/slow");
    let in_flight = tokio::spawn(async move { client().get(url).send().await });
    while !SLOW_STARTED.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stopped = server.stop();
    let response = in_flight.await.unwrap().expect("in-flight request completes");
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "finished");
    stopped.await.expect("server stops cleanly");
    // Once stopped, new connections are refused.
    assert!(client().get(server.url("/healthz")).send().await.is_err());
}
