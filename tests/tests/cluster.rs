//! Real `slipway serve` replicas sharing one database and one object store (SQLite and a
//! local directory here; PostgreSQL on the second test pass): each sees the others at
//! `/v1/cluster` by their heartbeats, and when the replica running a build is killed, another
//! takes the build over within the lease time and publishes it once.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use slipway_tests::database::{OwnPostgres, postgres_pass_or_skip};
use slipway_tests::pipeline::{registry_and_base, stored_log, write, write_config};
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

/// Two replicas that accept builds but leave them queued, with their directories.
struct Replicas {
    a: Slipway,
    b: Slipway,
    _dirs: [tempfile::TempDir; 3],
}

async fn two_replicas() -> Replicas {
    let binary = slipway_binary();
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let [shared, data_a, data_b] = &dirs;
    let config = shared.path().join("slipway.toml");
    std::fs::write(&config, "[pipeline]\nrun_builds = false\n").unwrap();
    let a = replica(&binary, data_a.path(), shared.path(), &config).await;
    // The second replica shares the database, so the first one's admin token works on it.
    std::fs::copy(data_a.path().join("admin-token"), data_b.path().join("admin-token")).unwrap();
    let b = replica(&binary, data_b.path(), shared.path(), &config).await;
    Replicas { a, b, _dirs: dirs }
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
    write_config(&config, &registry, source.path(), "");

    let a = replica(&binary, data_a.path(), shared.path(), &config).await;
    let id = a.submit_dir_build(APP, "slow", source.path()).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    // Running, and its log (flushed every second) holds the RUN in the shared object store.
    let replica_a = loop {
        let build = a.get_json(&format!("/v1/builds/{id}")).await;
        let log = stored_log(&shared.path().join("objects"), &id, "slow");
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

/// Package `acme` at `version`, holding revision `revision` of status script `ping`.
fn ping_package(version: &str, revision: u32) -> Vec<u8> {
    let manifest = format!(
        "[package]\nname = \"acme\"\nversion = \"{version}\"\n\n[[scripts]]\nkind = \"status\"\nname = \"ping\"\nrevision = {revision}\nfile = \"ping.js\"\n"
    );
    let script =
        format!("export function check() {{ return {{ status: 'healthy', reason: 'rev {revision}' }}; }}");
    slipway_plugins::pack_package(&[("plugin.toml", manifest.as_bytes()), ("ping.js", script.as_bytes())])
        .to_vec()
}

/// The revision of `status/ping` a replica runs when none is named.
async fn active_on(server: &Slipway) -> Option<String> {
    let response = server
        .client
        .post(server.url("/v1/plugins/status/ping:run"))
        .json(&json!({"function": "check", "args": [{}, {}]}))
        .send()
        .await
        .unwrap();
    let body: Value = response.json().await.unwrap();
    body["triple"].as_str().map(str::to_owned)
}

#[tokio::test]
async fn a_plugin_switch_through_one_replica_is_active_on_the_others_at_once() {
    if !postgres_pass_or_skip("replicas hear each other's changes through PostgreSQL LISTEN/NOTIFY") {
        return;
    }
    let Replicas { a, b, .. } = &two_replicas().await;

    for (version, revision) in [("1.0.0", 1), ("1.1.0", 2)] {
        let installed = a
            .client
            .post(a.url("/v1/plugins"))
            .header("content-type", "application/gzip")
            .body(ping_package(version, revision))
            .send()
            .await
            .unwrap();
        assert_eq!(installed.status(), 201, "{}", installed.text().await.unwrap());
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while active_on(&b).await.as_deref() != Some("status/ping/1") {
        assert!(Instant::now() < deadline, "the install never reached the other replica");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    for revision in [2, 1, 2] {
        let switched = a
            .client
            .put(a.url("/v1/plugins/status/ping/active"))
            .json(&json!({"revision": revision}))
            .send()
            .await
            .unwrap();
        assert_eq!(switched.status(), 200);
        let at = Instant::now();
        let wanted = format!("status/ping/{revision}");
        while active_on(&b).await.as_deref() != Some(wanted.as_str()) {
            assert!(at.elapsed() < Duration::from_secs(5), "revision {revision} never became active on B");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        eprintln!("revision {revision} active on the other replica after {:?}", at.elapsed());
    }
}

#[tokio::test]
async fn a_database_outage_refuses_writes_clearly_and_loses_no_accepted_build() {
    if !postgres_pass_or_skip("the database outage test stops a PostgreSQL of its own") {
        return;
    }
    let Some((registry, base)) = registry_and_base() else { return };
    let binary = slipway_binary();
    let root = tempfile::tempdir().unwrap();
    std::fs::set_permissions(root.path(), std::os::unix::fs::PermissionsExt::from_mode(0o711)).unwrap();
    // Its own server: the outage must not reach other tests' databases.
    let postgres = OwnPostgres::start(root.path());
    let database = postgres.create("slipway");

    let data = root.path().join("replica");
    std::fs::create_dir_all(&data).unwrap();
    let source = root.path().join("source");
    write(
        &source,
        "app/Dockerfile",
        &format!("FROM {base}\nRUN echo started && sleep 4\nRUN echo done > /done.txt\n"),
    );
    let config = root.path().join("slipway.toml");
    write_config(&config, &registry, &source, "\n[cluster]\nlease_ms = 3000\n");
    let env = [("SLIPWAY_DATABASE__URL", database.as_str())];
    let server = Slipway::start(&binary, &data, &["--config", config.to_str().unwrap()], &env).await;
    let request = json!({"components": [
        {"name": "app", "type": "microservice", "source": {"dir": {"path": source}}, "path": "app"},
    ]});
    let submit = || server.client.post(server.url(&format!("/v1/apps/{APP}/builds"))).json(&request).send();
    let accepted = submit().await.unwrap();
    assert_eq!(accepted.status(), 202);
    let id = accepted.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(60);
    while server.get_json(&format!("/v1/builds/{id}")).await["state"] != "running" {
        assert!(Instant::now() < deadline, "the build never started");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The database goes away while the build runs.
    postgres.run("stop");
    let refused = submit().await.unwrap();
    assert_eq!(refused.status(), 503, "a write is refused, not lost silently");
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "database_failed", "{body}");
    let ready = server.client.get(server.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503, "not ready without its database");
    let alive = server.client.get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(alive.status(), 200, "but alive: nothing to restart");
    tokio::time::sleep(Duration::from_secs(3)).await;
    postgres.run("resume");

    // Reconnected by itself: the build accepted before the outage still finishes, once.
    let done = wait_build(&server.client, &server.url(&format!("/v1/builds/{id}"))).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let packages = server.get_json(&format!("/v1/apps/{APP}/packages")).await;
    assert_eq!(packages["items"].as_array().unwrap().len(), 1, "{packages}");
    let after = submit().await.unwrap();
    assert_eq!(after.status(), 202, "writes are accepted again");
}

#[tokio::test]
async fn a_revoked_token_and_a_replayed_delivery_hold_on_every_replica() {
    let Replicas { a, b, .. } = &two_replicas().await;

    // A token made through A works on B; revoked through A, B refuses it within a second.
    let created = a.post_json("/v1/tokens", &json!({"name": "ci", "scopes": ["read"]})).await;
    let (token, secret) = (created["token"]["id"].as_str().unwrap(), created["secret"].as_str().unwrap());
    let on_b = || reqwest::Client::new().get(b.url("/v1/cluster")).bearer_auth(secret).send();
    assert_eq!(on_b().await.unwrap().status(), 200);
    let revoked = a.client.delete(a.url(&format!("/v1/tokens/{token}"))).send().await.unwrap();
    assert!(revoked.status().is_success(), "{}", revoked.status());
    // PostgreSQL carries the announcement at once; two processes on one SQLite file (not a
    // deployment, only this test's second pass) rely on the one-second token cache.
    let within = if slipway_tests::database::postgres_pass() {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(3)
    };
    let at = Instant::now();
    loop {
        let response = on_b().await.unwrap();
        if response.status() == 401 {
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["error"]["code"], "token_revoked", "{body}");
            break;
        }
        assert!(at.elapsed() < within, "B still accepts a token revoked through A");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("the revocation held on the other replica after {:?}", at.elapsed());

    // A delivery accepted by A and replayed to B returns A's build.
    let trigger = a
        .post_json(
            "/v1/triggers",
            &json!({"app": "hooked", "adapter": "generic", "branches": ["main"],
                    "repository_url": "https://git.example/acme/shop.git",
                    "components": [{"name": "app", "type": "microservice"}]}),
        )
        .await;
    let (id, secret) = (trigger["trigger"]["id"].as_str().unwrap(), trigger["secret"].as_str().unwrap());
    let push = json!({"action": "build", "repository": "acme/shop", "ref": "refs/heads/main",
                      "commit": "8d3f1c2b4a5e6f708192a3b4c5d6e7f8091a2b3c"});
    let deliver = |server: &Slipway| {
        reqwest::Client::new()
            .post(server.url(&format!("/v1/triggers/{id}")))
            .bearer_auth(secret)
            .header("idempotency-key", "delivery-1")
            .json(&push)
            .send()
    };
    let first = deliver(&a).await.unwrap();
    assert_eq!(first.status(), 202);
    let first: Value = first.json().await.unwrap();
    let replay = deliver(&b).await.unwrap();
    assert_eq!(replay.status(), 200);
    let replay: Value = replay.json().await.unwrap();
    assert_eq!(
        (&replay["duplicate"], &replay["build"]["id"]),
        (&json!(true), &first["build"]["id"]),
        "{replay}"
    );
    let builds = b.get_json("/v1/builds?app=hooked").await;
    assert_eq!(builds["builds"].as_array().unwrap().len(), 1, "{builds}");
}
