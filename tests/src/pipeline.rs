//! Helpers of the pipeline tests: the registry and base image the test script provides,
//! source trees written file by file, a server whose builds may read them, and build
//! requests over such a tree.

use std::path::Path;

use serde_json::{Value, json};

use crate::server::TestServer;

/// The registry and base image `tests/run.sh` provides; `None` (with the reason printed)
/// when they are not there.
pub fn registry_and_base() -> Option<(String, String)> {
    let (Ok(registry), Ok(base)) =
        (std::env::var("SLIPWAY_TEST_REGISTRY"), std::env::var("SLIPWAY_TEST_BASE_IMAGE"))
    else {
        eprintln!(
            "skipped: SLIPWAY_TEST_REGISTRY and SLIPWAY_TEST_BASE_IMAGE are not set (run through tests/run.sh)"
        );
        return None;
    };
    Some((registry, base))
}

/// Writes `text` at `path` under `root`, creating directories on the way.
pub fn write(root: &Path, path: &str, text: &str) {
    let path = root.join(path);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// A `slipway.toml` for a server (a real process) that pushes to `registry` and whose builds
/// may read directories under `root`; `extra` is appended as it is.
pub fn config_toml(registry: &str, root: &Path, extra: &str) -> String {
    format!(
        "[pipeline]\nregistry = {registry:?}\ninsecure_registries = [{registry:?}]\nsource_roots = [{:?}]\n{extra}",
        root.display().to_string()
    )
}

/// Writes [`config_toml`] at `path`.
pub fn write_config(path: &Path, registry: &str, root: &Path, extra: &str) {
    std::fs::write(path, config_toml(registry, root, extra)).unwrap();
}

/// A server pushing to `registry` whose builds may read directories under `root`.
pub async fn start(registry: &str, root: &Path) -> TestServer {
    let registry = registry.to_owned();
    let root = root.to_path_buf();
    TestServer::start_with(
        move |c| {
            c.pipeline.registry = registry.clone();
            c.pipeline.insecure_registries = vec![registry];
            c.pipeline.source_roots = vec![root];
        },
        slipway_server::router::app,
    )
    .await
}

/// Submits a build of `components` (JSON component specs) and returns the build id.
pub async fn submit(server: &TestServer, app: &str, components: Value) -> String {
    let response = server
        .client()
        .post(server.url(&format!("/v1/apps/{app}/builds")))
        .json(&json!({ "components": components }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned()
}

/// What a local object store under `objects` holds of a component's build log: every run's
/// object, oldest first, joined as the API joins them (what a killed process flushed last
/// is there).
pub fn stored_log(objects: &Path, build: &str, component: &str) -> String {
    let dir = objects.join(format!("builds/{build}/logs/{component}"));
    let mut runs: Vec<_> = std::fs::read_dir(dir).into_iter().flatten().flatten().map(|e| e.path()).collect();
    runs.sort();
    let texts: Vec<String> = runs.iter().filter_map(|run| std::fs::read_to_string(run).ok()).collect();
    texts.join("--- run again ---\n")
}
