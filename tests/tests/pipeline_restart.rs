//! The real `slipway` binary killed with SIGKILL in the middle of a build. After a restart on
//! the same data directory the replica takes its build over at once and runs it again; killed
//! a second time, the build is failed as `interrupted` with nothing published. The log of
//! every attempt is kept, and a retry through the API finishes it, published once.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use slipway_tests::pipeline::{registry_and_base, stored_log, write, write_config};
use slipway_tests::process::{Slipway, slipway_binary};
use slipway_tests::server::wait_build;

const APP: &str = "restart-shop";

/// Waits until the stored log (what outlives the process) holds `text`.
async fn wait_stored_log(data: &Path, build: &str, text: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !stored_log(&data.join("objects"), build, "slow").contains(text) {
        assert!(Instant::now() < deadline, "the log never reached the object store with {text:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn log_lines(log: &Value) -> Vec<String> {
    log["lines"].as_array().unwrap().iter().map(|l| l.as_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn a_build_killed_mid_run_runs_again_once_then_is_interrupted_and_retries_to_success() {
    let Some((registry, base)) = registry_and_base() else { return };
    let binary = slipway_binary();
    let data = tempfile::tempdir().unwrap();
    let source = tempfile::tempdir().unwrap();
    write(
        source.path(),
        "slow/Dockerfile",
        &format!("FROM {base}\nRUN echo the slow step starts && sleep 8\nRUN echo done > /done.txt\n"),
    );
    let config = data.path().join("slipway.toml");
    write_config(&config, &registry, source.path(), "");
    let args = ["--config", config.to_str().unwrap()];

    let server = Slipway::start(&binary, data.path(), &args, &[]).await;
    let id = server.submit_dir_build(APP, "slow", source.path()).await;
    // The RUN has started (its line is stored) and sleeps: kill the server now.
    wait_stored_log(data.path(), &id, "RUN echo the slow step starts").await;
    let running = server.get_json(&format!("/v1/builds/{id}")).await;
    assert_eq!((&running["state"], &running["attempts"]), (&json!("running"), &json!(1)), "{running}");
    let replica = running["replica"].as_str().expect("the replica holding it").to_owned();
    server.kill();

    // Restarted, the replica knows its build stopped with it: it runs it again at once.
    let server = Slipway::start(&binary, data.path(), &args, &[]).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let build = server.get_json(&format!("/v1/builds/{id}")).await;
        if build["attempts"] == 2 && build["state"] == "running" {
            assert_eq!(build["replica"], replica.as_str(), "the same replica id after a restart: {build}");
            break;
        }
        assert!(Instant::now() < deadline, "the interrupted build did not run again: {build}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let wait_second_run = async {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let log = log_lines(&server.get_json(&format!("/v1/builds/{id}/logs?component=slow")).await);
            let after_marker = log.iter().skip_while(|l| *l != "--- run again ---").skip(1);
            if after_marker.filter(|l| l.contains("RUN echo the slow step starts")).count() > 0 {
                return;
            }
            assert!(Instant::now() < deadline, "the second attempt never reached its RUN: {log:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    wait_second_run.await;
    wait_stored_log(data.path(), &id, "--- run again ---").await;
    server.kill();

    // Interrupted twice: failed as `interrupted`, for a person to retry.
    let server = Slipway::start(&binary, data.path(), &args, &[]).await;
    let build = server.get_json(&format!("/v1/builds/{id}")).await;
    assert_eq!(build["state"], "failed", "{build}");
    assert_eq!(build["reason"], "interrupted");
    assert_eq!(build["components"][0]["state"], "failed");
    assert_eq!(build["components"][0]["reason"], "interrupted");
    assert!(build["package"].is_null(), "{build}");
    let packages = server.get_json(&format!("/v1/apps/{APP}/packages")).await;
    assert_eq!(packages["items"], json!([]), "nothing half-published: {packages}");
    let before = log_lines(&server.get_json(&format!("/v1/builds/{id}/logs?component=slow")).await);
    assert!(before.iter().any(|l| l.contains("planned by component/microservice/")), "{before:?}");
    assert!(before.iter().any(|l| l.contains("RUN echo the slow step starts")), "{before:?}");

    let retried = server.client.post(server.url(&format!("/v1/builds/{id}/retry"))).send().await.unwrap();
    assert_eq!(retried.status(), 200);
    let done = wait_build(&server.client, &server.url(&format!("/v1/builds/{id}"))).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let published = server.get_json(&format!("/v1/apps/{APP}/packages")).await;
    assert_eq!(published["items"].as_array().unwrap().len(), 1, "published once: {published}");
    let version = done["package"]["version"].as_str().unwrap();
    let tagged = server.get_json(&format!("/v1/apps/{APP}/packages?tags=stable&latest=true")).await;
    assert!(tagged.to_string().contains(version), "{tagged}");

    let after = log_lines(&server.get_json(&format!("/v1/builds/{id}/logs?component=slow")).await);
    assert_eq!(after[..before.len()], before[..], "the interrupted attempt's log is kept, then the retry's");
    assert!(after.iter().any(|l| l == "--- run again ---"), "{after:?}");
    assert!(after.iter().any(|l| l.contains("pushed sha256:")), "{after:?}");
    server.kill();
}
