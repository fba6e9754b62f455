//! The OpenAPI document at `/openapi.json` against the server that serves it: every route
//! the router answers is an operation of the document (and the reverse), each with a
//! documented error answer; the document is valid OpenAPI 3.1 whose references resolve;
//! `/docs` is an HTML page that loads nothing from outside the server.

use std::collections::BTreeSet;

use serde_json::Value;
use slipway_tests::server::TestServer;

/// The methods the API uses; HEAD follows GET in axum and is not listed separately.
const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

async fn document(server: &TestServer) -> (String, Value) {
    let response = reqwest::get(server.url("/openapi.json")).await.expect("GET /openapi.json");
    assert_eq!(response.status(), 200, "the document is open without a token");
    let text = response.text().await.unwrap();
    let json = serde_json::from_str(&text).expect("the document is JSON");
    (text, json)
}

/// `/v1/apps/{app}/packages` → `/v1/apps/x/packages`: a concrete path the template matches.
fn concrete(template: &str) -> String {
    let mut path = String::new();
    let mut in_param = false;
    for c in template.chars() {
        match c {
            '{' => in_param = true,
            '}' => {
                in_param = false;
                path.push('x');
            }
            _ if !in_param => path.push(c),
            _ => {}
        }
    }
    path
}

/// Whether the router serves `method path`, asked of the running server without a token:
/// an unrouted method is answered by the router's own 405 `method_not_allowed`, a route
/// always by its auth layer (401) or its handler.
async fn serves(server: &TestServer, method: &str, path: &str) -> (bool, u16) {
    let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
    let response = reqwest::Client::new()
        .request(method, server.url(path))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    let code = body["error"]["code"].as_str().unwrap_or_default().to_owned();
    assert_ne!(code, "route_not_found", "{path}: documented but not routed at all");
    (code != "method_not_allowed", status)
}

#[tokio::test]
async fn every_served_route_is_documented_with_its_errors() {
    let server = TestServer::start().await;
    let (_, doc) = document(&server).await;
    let paths = doc["paths"].as_object().expect("paths");
    assert!(paths.len() >= 30, "only {} paths documented", paths.len());
    let mut documented = BTreeSet::new();
    let mut served = BTreeSet::new();
    for (template, item) in paths {
        let path = concrete(template);
        for method in METHODS {
            let operation = &item[method];
            if operation.is_object() {
                documented.insert(format!("{} {template}", method.to_uppercase()));
            }
            let (is_served, status) = serves(&server, method, &path).await;
            if !is_served {
                continue;
            }
            served.insert(format!("{} {template}", method.to_uppercase()));
            if !operation.is_object() {
                continue; // reported below as served but undocumented
            }
            let errors: Vec<&String> = operation["responses"]
                .as_object()
                .expect("responses")
                .iter()
                .filter(|(status, r)| {
                    status.starts_with(['4', '5'])
                        && r["content"]["application/json"]["schema"]["$ref"]
                            == "#/components/schemas/ApiError"
                })
                .map(|(status, _)| status)
                .collect();
            assert!(!errors.is_empty(), "{method} {template}: no error response with the ApiError body");
            // What the document says of auth is what the server does without a token.
            let token_scheme = operation["security"]
                .as_array()
                .is_some_and(|s| s.iter().any(|requirement| requirement.get("api_token").is_some()));
            assert_eq!(token_scheme, status == 401, "{method} {template}: answered {status} without a token");
            if token_scheme {
                assert!(errors.contains(&&"401".to_owned()), "{method} {template}: 401 undocumented");
            }
        }
    }
    let undocumented: Vec<_> = served.difference(&documented).collect();
    assert!(undocumented.is_empty(), "served but not in /openapi.json: {undocumented:?}");
    let unserved: Vec<_> = documented.difference(&served).collect();
    assert!(unserved.is_empty(), "in /openapi.json but not served: {unserved:?}");
}

#[tokio::test]
async fn the_document_is_openapi_3_1_and_its_references_resolve() {
    let server = TestServer::start().await;
    let (text, doc) = document(&server).await;
    let spec = oas3::from_json(&text).expect("an OpenAPI 3.1 document");
    assert!(spec.openapi.starts_with("3.1"), "version {}", spec.openapi);
    let mut references = Vec::new();
    collect_refs(&doc, &mut references);
    assert!(references.iter().any(|r| r == "#/components/schemas/ApiError"));
    for reference in references {
        let pointer = reference.strip_prefix('#').expect("a local reference");
        assert!(doc.pointer(pointer).is_some(), "dangling reference {reference}");
    }
    let schemes = doc["components"]["securitySchemes"].as_object().expect("security schemes");
    assert_eq!(schemes["api_token"]["scheme"], "bearer");
    for (template, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            for requirement in operation["security"].as_array().into_iter().flatten() {
                for name in requirement.as_object().unwrap().keys() {
                    assert!(schemes.contains_key(name), "{method} {template}: unknown scheme {name}");
                }
            }
            for param in template.split('{').skip(1).filter_map(|p| p.split_once('}')).map(|(name, _)| name) {
                let declared = operation["parameters"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|p| p["in"] == "path" && p["name"] == param);
                assert!(declared, "{method} {template}: path parameter {param} undeclared");
            }
        }
    }
    let ids: Vec<&str> = spec.operations().filter_map(|(_, _, op)| op.operation_id.as_deref()).collect();
    let unique: BTreeSet<&str> = ids.iter().copied().collect();
    assert_eq!(ids.len(), unique.len(), "operation ids repeat: {ids:?}");
    let deliver = &doc["paths"]["/v1/triggers/{id}"]["post"];
    let trigger_schemes: Vec<&str> = deliver["security"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r.as_object().unwrap().keys())
        .map(String::as_str)
        .collect();
    assert_eq!(trigger_schemes, ["trigger_github_signature", "trigger_gitlab_token", "trigger_bearer"]);
}

fn collect_refs(value: &Value, into: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(reference)) = map.get("$ref") {
                into.push(reference.clone());
            }
            map.values().for_each(|v| collect_refs(v, into));
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, into)),
        _ => {}
    }
}

#[tokio::test]
async fn docs_page_is_html_with_only_local_assets() {
    let server = TestServer::start().await;
    let response = reqwest::get(server.url("/docs")).await.expect("GET /docs");
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(content_type.starts_with("text/html"), "{content_type}");
    let page = response.text().await.unwrap();
    assert!(page.contains("/openapi.json"), "the page renders the server's document");
    for attribute in ["src=", "href=", "url(", "@import", "fetch("] {
        for (at, _) in page.match_indices(attribute) {
            let target: String = page[at + attribute.len()..]
                .trim_start_matches(['"', '\'', '(', ' '])
                .chars()
                .take_while(|c| !matches!(c, '"' | '\'' | ')' | ' ' | '>'))
                .collect();
            let external = target.contains("://") || target.starts_with("//");
            assert!(!external, "/docs loads {target} from outside the server");
        }
    }
}

/// The page rendered by a real browser: every operation of the document appears.
#[tokio::test]
async fn docs_page_renders_every_operation_in_chromium() {
    let Some(chromium) = ["chromium", "chromium-browser"].into_iter().find(|b| which(b)) else {
        eprintln!("SKIP: no chromium on PATH (Debian package `chromium`), /docs not rendered");
        return;
    };
    let server = TestServer::start().await;
    let (_, doc) = document(&server).await;
    let profile = tempfile::tempdir().unwrap();
    let output = tokio::process::Command::new(chromium)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=10000", "--dump-dom"])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(server.url("/docs"))
        .output()
        .await
        .expect("run chromium");
    let dom = String::from_utf8_lossy(&output.stdout);
    assert!(!dom.contains("<p class=\"err\">"), "the page failed to load the document: {dom}");
    for (template, item) in doc["paths"].as_object().unwrap() {
        for method in METHODS.into_iter().filter(|m| item[*m].is_object()) {
            let heading = format!(">{}</span><code>{template}</code>", method.to_uppercase());
            assert!(dom.contains(&heading), "{method} {template} not rendered");
        }
    }
    for name in doc["components"]["schemas"].as_object().unwrap().keys() {
        assert!(dom.contains(&format!("id=\"schema-{name}\"")), "schema {name} not rendered");
    }
}

fn which(binary: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(binary).is_file()))
}
