//! API tokens over real HTTP: the first-start admin token, scopes, expiry, rotation and
//! revocation, and the routes that stay open.

use std::os::unix::fs::PermissionsExt;

use serde_json::{Value, json};
use slipway_tests::server::TestServer;

async fn create_token(server: &TestServer, body: Value) -> (String, String) {
    let response = server.client().post(server.url("/v1/tokens")).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    assert!(body["token"].get("secret_hash").is_none(), "the hash never leaves the server: {body}");
    (body["token"]["id"].as_str().unwrap().to_owned(), body["secret"].as_str().unwrap().to_owned())
}

async fn code_of(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    (status, body["error"]["code"].as_str().unwrap_or_default().to_owned())
}

#[tokio::test]
async fn first_start_writes_a_private_admin_token_once() {
    let server = TestServer::start().await;
    let file = server.data_dir.path().join("admin-token");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert!(server.admin_token.starts_with("slw_"));

    let tokens: Value =
        server.client().get(server.url("/v1/tokens")).send().await.unwrap().json().await.unwrap();
    let names: Vec<&str> =
        tokens["tokens"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["initial-admin"]);

    // Reopening the same data directory keeps the one token and the file as they were.
    let again = slipway_server::state::AppState::open(server.state.config.clone()).await.unwrap();
    assert_eq!(again.tokens.list().await.unwrap().len(), 1);
    assert_eq!(std::fs::read_to_string(&file).unwrap().trim(), server.admin_token);
}

#[tokio::test]
async fn v1_needs_a_valid_token_but_operations_stay_open() {
    let server = TestServer::start().await;
    let anonymous = reqwest::Client::new();
    let response = anonymous.get(server.url("/v1/tokens")).send().await.unwrap();
    assert_eq!(response.headers()["www-authenticate"], "Bearer realm=\"slipway\"");
    assert_eq!(code_of(response).await, (401, "unauthenticated".into()));

    let forged = TestServer::client_with_token("slw_000000000000_deadbeef");
    assert_eq!(code_of(forged.get(server.url("/v1/tokens")).send().await.unwrap()).await.0, 401);
    let wrong_secret = format!("{}0", server.admin_token);
    let wrong = TestServer::client_with_token(&wrong_secret);
    assert_eq!(code_of(wrong.get(server.url("/v1/tokens")).send().await.unwrap()).await.0, 401);

    for open in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(anonymous.get(server.url(open)).send().await.unwrap().status(), 200, "{open}");
    }
}

#[tokio::test]
async fn a_scope_that_does_not_allow_the_call_is_403() {
    let server = TestServer::start().await;
    let (_, secret) = create_token(&server, json!({"name": "ci-reader", "scopes": ["read"]})).await;
    let reader = TestServer::client_with_token(&secret);
    let response = reader
        .post(server.url("/v1/tokens"))
        .json(&json!({"name": "escalate", "scopes": ["admin"]}))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, 403);
    assert_eq!(body["error"]["code"], "insufficient_scope");
    assert_eq!(body["error"]["details"]["needed"], "admin");
    assert_eq!(body["error"]["details"]["granted"], json!(["read"]));
}

#[tokio::test]
async fn expired_revoked_and_rotated_tokens() {
    let server = TestServer::start().await;
    let (_, expired) =
        create_token(&server, json!({"name": "short", "scopes": ["admin"], "expires_in_s": 0})).await;
    let response =
        TestServer::client_with_token(&expired).get(server.url("/v1/tokens")).send().await.unwrap();
    assert_eq!(code_of(response).await, (401, "token_expired".into()));

    let (id, secret) = create_token(&server, json!({"name": "deployer", "scopes": ["admin"]})).await;
    let deployer = TestServer::client_with_token(&secret);
    assert_eq!(deployer.get(server.url("/v1/tokens")).send().await.unwrap().status(), 200);

    let rotated: Value = server
        .client()
        .post(server.url(&format!("/v1/tokens/{id}/rotate")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let new_secret = rotated["secret"].as_str().unwrap();
    assert_ne!(new_secret, secret);
    assert_eq!(code_of(deployer.get(server.url("/v1/tokens")).send().await.unwrap()).await.0, 401);
    let rotated_client = TestServer::client_with_token(new_secret);
    assert_eq!(rotated_client.get(server.url("/v1/tokens")).send().await.unwrap().status(), 200);

    let revoked = server.client().delete(server.url(&format!("/v1/tokens/{id}"))).send().await.unwrap();
    assert_eq!(revoked.status(), 200);
    let response = rotated_client.get(server.url("/v1/tokens")).send().await.unwrap();
    assert_eq!(code_of(response).await, (401, "token_revoked".into()));

    let missing = server.client().delete(server.url("/v1/tokens/nope")).send().await.unwrap();
    assert_eq!(code_of(missing).await, (404, "token_not_found".into()));
}

#[tokio::test]
async fn bad_token_requests_are_refused_clearly() {
    let server = TestServer::start().await;
    let client = server.client();
    let response =
        client.post(server.url("/v1/tokens")).json(&json!({"name": "x", "scopes": []})).send().await.unwrap();
    assert_eq!(code_of(response).await, (400, "invalid_request".into()));
    let response = client
        .post(server.url("/v1/tokens"))
        .json(&json!({"name": "x", "scopes": ["root"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(code_of(response).await, (400, "invalid_json".into()));
}
