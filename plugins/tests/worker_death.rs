//! A worker process that dies mid-call (an engine abort, the OOM killer) fails that call
//! with a typed error and is replaced. Its own test binary: it kills every worker child of
//! the process, which would disturb tests running beside it.

mod support;

use std::sync::Arc;

use serde_json::json;
use slipway_plugins::{Error, ScriptKind};

#[tokio::test]
async fn a_worker_that_dies_fails_only_its_call() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = support::config();
    config.workers = 1;
    config.call_timeout = std::time::Duration::from_secs(20);
    // The separate worker binary, so this test also covers `worker_binary`.
    config.worker_binary = Some(env!("CARGO_BIN_EXE_slipway-plugin-worker").into());
    let host = Arc::new(support::open_with(dir.path(), config).await);
    let slow = "export function check() { new Array(200000).fill('z'.repeat(100000)).sort(); return { status: 'healthy' }; }";
    host.install_package(support::package("victim", "1.0.0", &[("status", "victim", 1, slow)]))
        .await
        .unwrap();
    let call = {
        let host = host.clone();
        tokio::spawn(async move { host.call(ScriptKind::Status, "victim", None, "check", vec![]).await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let killed = kill_workers();
    assert!(killed > 0, "a worker process was running");
    let err = call.await.unwrap().unwrap_err();
    assert!(matches!(&err, Error::WorkerDied { message, .. } if message.contains("signal")), "{err}");
    assert_eq!(err.triple().unwrap().to_string(), "status/victim/1");
    let out = host.call(
        ScriptKind::Status,
        "tcp",
        None,
        "check",
        vec![json!({}), json!({"tcp": {"connected": true, "latency_ms": 1}, "error": null})],
    );
    assert_eq!(out.await.unwrap().result["status"], "healthy", "a fresh worker took over");
}

/// SIGKILLs this process's worker children, as an engine abort or the OOM killer would.
fn kill_workers() -> usize {
    let me = std::process::id().to_string();
    let mut killed = 0;
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        let Some((comm, rest)) = stat.split_once(") ") else { continue };
        let parent = rest.split_whitespace().nth(1).unwrap_or_default();
        if parent == me && comm.contains("slipway-plugin") {
            let pid = entry.file_name().to_string_lossy().to_string();
            std::process::Command::new("kill").args(["-9", &pid]).status().unwrap();
            killed += 1;
        }
    }
    killed
}
