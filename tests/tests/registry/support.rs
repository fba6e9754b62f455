//! A test server with a small JSON client for the registry routes.

use std::collections::HashMap;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use slipway_server::auth::Scope;
use slipway_server::config::Config;
use slipway_tests::server::TestServer;
use tokio::sync::Mutex;

pub struct Api {
    pub server: TestServer,
    /// Sends the admin token.
    pub client: reqwest::Client,
    /// A client per actor, each with a token of that name.
    actors: Mutex<HashMap<String, reqwest::Client>>,
}

impl Api {
    pub async fn start() -> Api {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(edit: impl FnOnce(&mut Config)) -> Api {
        let server = TestServer::start_with(edit, slipway_server::router::app).await;
        Api { client: server.client(), server, actors: Mutex::default() }
    }

    pub fn url(&self, path: &str) -> String {
        self.server.url(path)
    }

    /// Sends a request as `actor` (with a token of that name), returning status and JSON
    /// body (`null` when empty).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        actor: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self.client_for(actor).await.request(method, self.url(path));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let bytes = response.bytes().await.unwrap();
        let value = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap() };
        (status, value)
    }

    async fn client_for(&self, actor: &str) -> reqwest::Client {
        let mut actors = self.actors.lock().await;
        if let Some(client) = actors.get(actor) {
            return client.clone();
        }
        let (_, token) = self.server.state.tokens.create(actor, &[Scope::Admin], None).await.unwrap();
        let client = TestServer::client_with_token(&token);
        actors.insert(actor.to_owned(), client.clone());
        client
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, "tester", None).await
    }

    /// Publishes one `web` component as `version` with `tags`; returns status and body.
    pub async fn publish(&self, app: &str, version: &str, tags: &[&str]) -> (StatusCode, Value) {
        let body = json!({
            "version": version,
            "tags": tags,
            "source": { "repository": "https://git.example/shop", "commit": "4f2a9c1" },
            "components": [component("web")],
        });
        self.call(Method::POST, &format!("/v1/apps/{app}/packages"), "ci", Some(body)).await
    }

    pub async fn publish_ok(&self, app: &str, version: &str, tags: &[&str]) -> Value {
        let (status, body) = self.publish(app, version, tags).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body
    }

    /// Versions of a listing page, in the order given.
    pub async fn versions(&self, path: &str) -> (Vec<String>, Option<String>) {
        let (status, body) = self.get(path).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        let versions =
            body["items"].as_array().unwrap().iter().map(|p| p["version"].as_str().unwrap().to_owned());
        (versions.collect(), body["next_cursor"].as_str().map(str::to_owned))
    }
}

/// A component build result as the JSON publish body takes it.
pub fn component(name: &str) -> Value {
    json!({
        "component_type": "helm",
        "component": name,
        "images": [{ "reference": format!("127.0.0.1:5000/shop/{name}:1"), "digest": format!("sha256:{}", "a".repeat(64)), "architectures": ["amd64"] }],
        "parameters": { "replicas": 2 },
        "plugin": "component/helm/1",
        "files": { "chart/Chart.yaml": "apiVersion: v2\nname: web\n", "chart/values.yaml": "replicas: 2\n" },
    })
}

pub fn assert_error(status: StatusCode, body: &Value, expected_status: u16, code: &str) {
    assert_eq!(status.as_u16(), expected_status, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
}
