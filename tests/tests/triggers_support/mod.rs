//! Shared by the trigger tests: a local git repository to build from, a server that pushes
//! to the test registry, and trigger creation.

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};
use slipway_tests::server::TestServer;

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git").arg("-C").arg(dir).args(args).output().expect("git");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// A repository with a Dockerfile at its root and one commit on `main`.
pub fn repository() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("Dockerfile"), "FROM scratch\nCOPY hello.txt /hello.txt\n").unwrap();
    std::fs::write(dir.path().join("hello.txt"), "hello from a trigger\n").unwrap();
    git(dir.path(), &["init", "-q", "-b", "main"]);
    git(dir.path(), &["-c", "user.name=Octo Cat", "-c", "user.email=octo@example.com", "add", "."]);
    git(
        dir.path(),
        &[
            "-c",
            "user.name=Octo Cat",
            "-c",
            "user.email=octo@example.com",
            "commit",
            "-q",
            "-m",
            "Update README",
        ],
    );
    let commit = git(dir.path(), &["rev-parse", "HEAD"]);
    (dir, commit)
}

pub async fn start(per_trigger_per_s: u32) -> TestServer {
    let registry = std::env::var("SLIPWAY_TEST_REGISTRY").unwrap_or_else(|_| "127.0.0.1:5000".into());
    TestServer::start_with(
        move |c| {
            c.pipeline.insecure_registries = vec![registry.clone()];
            c.pipeline.registry = registry;
            c.triggers.per_trigger_per_s = per_trigger_per_s;
        },
        slipway_server::router::app,
    )
    .await
}

pub async fn create_trigger(server: &TestServer, adapter: &str, repository: &Path) -> (String, String) {
    create_trigger_with(
        server,
        json!({
            "app": "hooked", "adapter": adapter, "branches": ["main", "release/*"], "tags": ["ci"],
            "repository_url": format!("file://{}", repository.display()),
            "components": [{"name": "app", "type": "microservice"}],
        }),
    )
    .await
}

/// Creates the trigger `body` describes; returns its id and secret.
pub async fn create_trigger_with(server: &TestServer, body: Value) -> (String, String) {
    let response = server.client().post(server.url("/v1/triggers")).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    assert!(body["trigger"].get("secret").is_none(), "the secret is not part of the trigger: {body}");
    (body["trigger"]["id"].as_str().unwrap().to_owned(), body["secret"].as_str().unwrap().to_owned())
}
