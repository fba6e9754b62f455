//! The plugin API over real HTTP: upload, list, revisions, activation, dry runs (including
//! hostile scripts and a built-in Kubernetes check on a real manifest) and uninstall.

use serde_json::{Value, json};
use slipway_plugins::pack_package;
use slipway_tests::server::TestServer;

/// A package `name` holding status scripts `(script name, revision, source)`.
fn package(name: &str, version: &str, scripts: &[(&str, u32, &str)]) -> Vec<u8> {
    let mut manifest = format!("[package]\nname = \"{name}\"\nversion = \"{version}\"\n");
    let files: Vec<(String, &str)> = scripts
        .iter()
        .map(|(script, revision, source)| {
            manifest.push_str(&format!(
                "\n[[scripts]]\nkind = \"status\"\nname = \"{script}\"\nrevision = {revision}\nfile = \"{script}-{revision}.js\"\n"
            ));
            (format!("{script}-{revision}.js"), *source)
        })
        .collect();
    let mut all: Vec<(&str, &[u8])> = vec![("plugin.toml", manifest.as_bytes())];
    all.extend(files.iter().map(|(p, s)| (p.as_str(), s.as_bytes())));
    pack_package(&all).to_vec()
}

fn reporting(revision: u32) -> String {
    format!(
        "export function check(instance, observation) {{ return {{ status: 'healthy', reason: 'rev {revision}', details: {{ seen: observation }} }}; }}"
    )
}

async fn upload(server: &TestServer, body: Vec<u8>) -> (u16, Value) {
    let response = server
        .client()
        .post(server.url("/v1/plugins"))
        .header("content-type", "application/gzip")
        .body(body)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

async fn run(server: &TestServer, path: &str, body: Value) -> (u16, Value) {
    let response = server.client().post(server.url(path)).json(&body).send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

#[tokio::test]
async fn upload_activate_dry_run_and_uninstall() {
    let server = TestServer::start().await;
    let (status, body) = upload(&server, package("acme", "1.0.0", &[("ping", 1, &reporting(1))])).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["name"], "acme");
    assert_eq!(body["scripts"][0]["triple"], "status/ping/1");
    let (status, _) = upload(&server, package("acme", "1.1.0", &[("ping", 2, &reporting(2))])).await;
    assert_eq!(status, 201);

    let listed: Value =
        server.client().get(server.url("/v1/plugins")).send().await.unwrap().json().await.unwrap();
    let names: Vec<&str> =
        listed["packages"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["acme", "builtin"]);

    let revisions: Value = server.get_json("/v1/plugins/status/ping").await;
    assert_eq!(revisions["active"], 1);
    assert_eq!(revisions["revisions"].as_array().unwrap().len(), 2);

    let observation = json!({"http": {"status": 200}, "error": null});
    let (status, body) =
        run(&server, "/v1/plugins/status/ping:run", json!({"function": "check", "args": [{}, observation]}))
            .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["triple"], "status/ping/1");
    assert_eq!(body["result"]["reason"], "rev 1");
    assert_eq!(body["result"]["details"]["seen"], observation);
    let (_, body) = run(
        &server,
        "/v1/plugins/status/ping:run",
        json!({"revision": 2, "function": "check", "args": [{}, {}]}),
    )
    .await;
    assert_eq!(body["triple"], "status/ping/2", "a dry run of a revision that is not active");

    let response = server
        .client()
        .put(server.url("/v1/plugins/status/ping/active"))
        .json(&json!({"revision": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let (_, body) =
        run(&server, "/v1/plugins/status/ping:run", json!({"function": "check", "args": [{}, {}]})).await;
    assert_eq!(body["triple"], "status/ping/2", "the switch took effect at once");

    let response = server.client().delete(server.url("/v1/plugin-packages/acme")).send().await.unwrap();
    assert_eq!(response.status(), 409);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "plugin_package_in_use");
    assert_eq!(body["error"]["details"]["active"], json!(["status/ping/2"]));
    let response =
        server.client().delete(server.url("/v1/plugin-packages/acme?force=true")).send().await.unwrap();
    assert_eq!(response.status(), 204);
    let response = server.client().get(server.url("/v1/plugins/status/ping")).send().await.unwrap();
    assert_eq!(response.status(), 404);
}

#[tokio::test]
async fn a_broken_package_is_refused_with_its_location_and_registers_nothing() {
    let server = TestServer::start().await;
    let broken = package(
        "half",
        "1.0.0",
        &[("fine", 1, &reporting(1)), ("broken", 1, "export function check() {\n  return {;\n}\n")],
    );
    let (status, body) = upload(&server, broken).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "invalid_plugin_package");
    assert_eq!(body["error"]["details"]["location"]["file"], "broken-1.js");
    assert_eq!(body["error"]["details"]["location"]["line"], 2);
    let response = server.client().get(server.url("/v1/plugins/status/fine")).send().await.unwrap();
    assert_eq!(response.status(), 404, "the good script of the package was not registered either");
}

#[tokio::test]
async fn hostile_scripts_answer_typed_errors_and_the_server_keeps_working() {
    let server = TestServer::start().await;
    let hostile = package(
        "hostile",
        "1.0.0",
        &[
            ("spin", 1, "export function check() { for (;;) {} }"),
            (
                "sorter",
                1,
                "export function check() { new Array(200000).fill('q'.repeat(100000)).sort(); return { status: 'healthy' }; }",
            ),
            (
                "bomb",
                1,
                "export function check() { const a = []; for (;;) a.push(new ArrayBuffer(1 << 20)); }",
            ),
            ("deep", 1, "function f(n) { return f(n + 1) + 1; }\nexport function check() { return f(0); }"),
            ("thrower", 1, "export function check() { throw 42; }"),
            ("shapeless", 1, "export function check() { return { status: 'great' }; }"),
        ],
    );
    let (status, body) = upload(&server, hostile).await;
    assert_eq!(status, 201, "{body}");
    for (script, code) in [
        ("spin", "plugin_timeout"),
        ("sorter", "plugin_timeout"),
        ("bomb", "plugin_memory_limit"),
        ("deep", "plugin_stack_overflow"),
        ("thrower", "plugin_threw"),
        ("shapeless", "plugin_wrong_shape"),
    ] {
        let (status, body) = run(
            &server,
            &format!("/v1/plugins/status/{script}:run"),
            json!({"function": "check", "args": [{}, {}]}),
        )
        .await;
        assert_eq!((status, body["error"]["code"].as_str()), (422, Some(code)), "{script}: {body}");
        assert_eq!(body["error"]["details"]["triple"], format!("status/{script}/1"), "{body}");
    }
    let (status, body) = run(
        &server,
        "/v1/plugins/status/tcp:run",
        json!({"function": "check", "args": [{}, {"tcp": {"connected": true, "latency_ms": 2}, "error": null}]}),
    )
    .await;
    assert_eq!((status, body["result"]["status"].as_str()), (200, Some("healthy")), "{body}");
}

#[tokio::test]
async fn a_builtin_kubernetes_check_can_be_tried_on_a_real_object() {
    let server = TestServer::start().await;
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../plugins/tests/fixtures/k8s/pod-crashloopbackoff.json"
    ))
    .unwrap();
    let pod: Value = serde_json::from_str(&text).unwrap();
    let (status, body) = run(
        &server,
        "/v1/plugins/status/k8s:run",
        json!({"function": "check", "args": [{}, {"object": pod, "error": null}]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["triple"], "status/k8s/1");
    assert_eq!(body["result"]["status"], "degraded");
    assert!(body["result"]["reason"].as_str().unwrap().contains("back-off"), "{body}");
}

#[tokio::test]
async fn bad_kinds_names_and_actions_are_client_errors() {
    let server = TestServer::start().await;
    let response = server.client().get(server.url("/v1/plugins/widget/http")).send().await.unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_plugin_triple");
    let (status, body) = run(&server, "/v1/plugins/status/nothing:run", json!({"function": "check"})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("plugin_not_found")), "{body}");
    let (status, body) = run(&server, "/v1/plugins/status/http:run", json!({"function": "nope"})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (422, Some("plugin_unknown_function")), "{body}");
    let (status, _) = run(&server, "/v1/plugins/status/http:explode", json!({"function": "check"})).await;
    assert_eq!(status, 405);
    let (status, body) = upload(&server, b"not a tarball".to_vec()).await;
    assert_eq!((status, body["error"]["code"].as_str()), (422, Some("invalid_plugin_package")), "{body}");
}
