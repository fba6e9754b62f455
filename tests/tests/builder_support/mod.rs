//! Shared set-up for the builder tests: the loopback registry and base image the test script
//! prepared, builders over a fresh object store, and `docker`/`skopeo` helpers.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use slipway_builder::{NativeBackend, NativeSettings};

/// `SLIPWAY_TEST_REGISTRY` (default `127.0.0.1:5000`).
pub fn registry() -> String {
    std::env::var("SLIPWAY_TEST_REGISTRY").unwrap_or_else(|_| "127.0.0.1:5000".into())
}

/// `SLIPWAY_TEST_BASE_IMAGE` (default the imported busybox in the test registry).
pub fn base_image() -> String {
    std::env::var("SLIPWAY_TEST_BASE_IMAGE")
        .unwrap_or_else(|_| format!("{}/slipway-test/busybox:latest", registry()))
}

/// Whether the registry answers and the base image is there; prints why not.
pub fn registry_ready() -> bool {
    let (repo, tag) = base_image().rsplit_once(':').map(|(r, t)| (r.to_string(), t.to_string())).unwrap();
    let path = repo.split_once('/').map(|(_, p)| p.to_string()).unwrap();
    let url = format!("http://{}/v2/{path}/manifests/{tag}", registry());
    let ok = Command::new("curl")
        .args([
            "-sf",
            "-o",
            "/dev/null",
            "-H",
            "Accept: application/vnd.docker.distribution.manifest.v2+json",
            &url,
        ])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!(
            "skipping: registry {} or base image {} not available (run tests/run.sh)",
            registry(),
            base_image()
        );
    }
    ok
}

/// Whether a Docker daemon answers; prints why not.
pub fn docker_ready() -> bool {
    let ok = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("skipping: no Docker daemon");
    }
    ok
}

/// A native backend over a fresh local object store in `dir`.
pub fn native(dir: &Path) -> NativeBackend {
    std::fs::create_dir_all(dir.join("store")).unwrap();
    let store = object_store::local::LocalFileSystem::new_with_prefix(dir.join("store")).unwrap();
    NativeBackend::new(
        Arc::new(store),
        NativeSettings {
            work_dir: dir.join("work"),
            max_context_bytes: 1 << 30,
            insecure_registries: vec![registry()],
        },
    )
}

/// Runs a command and returns its stdout, failing the test with stderr otherwise.
pub fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(out.status.success(), "{cmd} {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `skopeo inspect --config` of an image in the test registry, as JSON.
pub fn inspect_config(image: &str) -> serde_json::Value {
    let text = run("skopeo", &["inspect", "--tls-verify=false", "--config", &format!("docker://{image}")]);
    serde_json::from_str(&text).unwrap()
}

/// A unique repository name per test run.
pub fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{}/slipway-test/{name}-{nanos:x}", registry())
}

/// Writes `files` (path, content) under `dir`.
pub fn write_tree(dir: &Path, files: &[(&str, &str)]) {
    for (path, content) in files {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
}
