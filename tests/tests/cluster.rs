//! Real `slipway serve` replicas sharing one database and one object store (SQLite and a
//! local directory here; PostgreSQL on the second test pass): each sees the others at
//! `/v1/cluster` by their heartbeats, and when the replica running a build is killed, another
//! takes the build over within the lease time and publishes it once.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use slipway_tests::pipeline::{registry_and_base, write};
use slipway_tests::process::{Slipway, slipway_binary};
use slipway_tests::server::wait_build;

const APP: &str = "cluster-shop";
const LEASE_MS: u64 = 3_000;

/// Starts a replica on its own data directory, over the database and objects in `shared`.
async fn replica(binary: &Path, data: &Path, shared: &Path, config: &Path) -> Slipway {
    let database = slipway_tests::database::shared_url(shared).await;
    let objects = shared.join("objects").display().to_string();
    let lease = LEASE_MS.to_string();
    let env = [
        ("SLIPWAY_DATABASE__URL", database.as_str()),
        ("SLIPWAY_OBJECT_STORE__PATH", objects.as_str()),
        ("SLIPWAY_CLUSTER__LEASE_MS", lease.as_str()),
    ];
    Slipway::start(binary, data, &["--config", config.to_str().unwrap()], &env).await
}

async fn replicas_seen_by(server: &Slipway) -> Vec<Value> {
    server.get_json("/v1/cluster").await["replicas"].as_array().unwrap().clone()
}

#[tokio::test]
async fn a_build_whose_replica_is_killed_is_taken_over_and_published_once() {
    let Some((registry, base)) = registry_and_base() else { return };
    let binary = slipway_binary();
    let shared = tempfile::tempdir().unwrap();
    let (data_a, data_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let source = tempfile::tempdir().unwrap();
    write(
        source.path(),
        "slow/Dockerfile",
        &format!("FROM {base}\nRUN echo the slow step starts && sleep 6\nRUN echo done > /done.txt\n"),
    );
    let config = shared.path().join("slipway.toml");
    let toml = format!(
        "[pipeline]\nregistry = {registry:?}\ninsecure_registries = [{registry:?}]\nsource_roots = [{:?}]\n",
        source.path().display().to_string()
    );
    std::fs::write(&config, toml).unwrap();

    let a = replica(&binary, data_a.path(), shared.path(), &config).await;
    let response = a
        .client
        .post(a.url(&format!("/v1/apps/{APP}/builds")))
        .json(&json!({"tags": ["stable"], "components": [
            {"name": "slow", "type": "microservice", "source": {"dir": {"path": source.path()}}, "path": "slow"},
        ]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let id = response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(60);
    // Running, and its log (flushed every second) holds the RUN in the shared object store.
    let stored_log = shared.path().join(format!("objects/builds/{id}/logs/slow.log"));
    let replica_a = loop {
        let build = a.get_json(&format!("/v1/builds/{id}")).await;
        let log = std::fs::read_to_string(&stored_log).unwrap_or_default();
        if build["state"] == "running" && log.contains("the slow step starts") {
            break build["replica"].as_str().unwrap().to_owned();
        }
        assert!(Instant::now() < deadline, "the build never reached its RUN: {build}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    // The second replica shares the database, so the first one's admin token works on it.
    std::fs::copy(data_a.path().join("admin-token"), data_b.path().join("admin-token")).unwrap();
    let b = replica(&binary, data_b.path(), shared.path(), &config).await;
    let seen = replicas_seen_by(&b).await;
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0]["answering"], true, "the answering replica first: {seen:?}");
    let a_seen = seen.iter().find(|r| r["id"] == replica_a.as_str()).expect("A is listed");
    assert_eq!((&a_seen["alive"], &a_seen["running_builds"]), (&json!(true), &json!(1)), "{seen:?}");

    a.kill();
    let killed = Instant::now();
    let deadline = killed + Duration::from_secs(30);
    let replica_b = loop {
        let build = b.get_json(&format!("/v1/builds/{id}")).await;
        if build["attempts"] == 2 && build["replica"].is_string() {
            break build["replica"].as_str().unwrap().to_owned();
        }
        assert!(Instant::now() < deadline, "nobody took the build over: {build}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let took = killed.elapsed();
    assert_ne!(replica_b, replica_a);
    // Lease time, plus one renewal round and one dispatcher poll.
    assert!(took < Duration::from_millis(LEASE_MS) * 3, "taken over after {took:?}");

    let done = wait_build(&b.client, &b.url(&format!("/v1/builds/{id}"))).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let packages = b.get_json(&format!("/v1/apps/{APP}/packages")).await;
    assert_eq!(packages["items"].as_array().unwrap().len(), 1, "published once: {packages}");
    let log = b.get_json(&format!("/v1/builds/{id}/logs?component=slow")).await.to_string();
    assert!(log.contains("--- run again ---"), "the first attempt's log is kept: {log}");

    let seen = replicas_seen_by(&b).await;
    let a_seen = seen.iter().find(|r| r["id"] == replica_a.as_str()).expect("A is still listed");
    assert_eq!(a_seen["alive"], false, "{seen:?}");
    assert!(a_seen["heartbeat_age_ms"].as_i64().unwrap() > LEASE_MS as i64, "{seen:?}");
    assert_eq!(seen[0]["running_builds"], 0, "{seen:?}");
}
