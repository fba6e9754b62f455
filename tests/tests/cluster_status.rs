//! The status scaler sharded over three real `slipway serve` replicas on PostgreSQL, polling
//! a simulated fleet in this process. Each health request names its replica (user agent),
//! so the fleet's request log shows who checked what: every instance is checked by exactly
//! one replica, any replica answers for every shard, and the instances of a replica that is
//! killed, or frozen for longer than its lease, are taken over within the lease and the
//! tight interval, while the frozen one stops checking when it wakes; a replica joining
//! takes its share from the others. A database outage
//! shorter than the lease does not stop the checks.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use slipway_tests::bench::cluster::replicas::Cluster;
use slipway_tests::database::{OwnPostgres, postgres_pass_or_skip};
use slipway_tests::fleet::checkers::Checks;
use slipway_tests::fleet::{Fleet, FleetConfig, Layout, Logged, Mode};
use slipway_tests::process::{Slipway, slipway_binary};

const LEASE: Duration = Duration::from_secs(3);
/// The default tight interval: taken-over instances get their first check within it.
const TIGHT: Duration = Duration::from_secs(5);
/// Heartbeats land once a second; allow one more for a loaded machine.
const BEAT: Duration = Duration::from_secs(2);
const INSTANCES: usize = 300;
const LAYOUT: Layout = Layout { per_app: 3, apps: 4, clusters: 2 };

fn all() -> Vec<String> {
    (0..INSTANCES).map(Layout::instance_id).collect()
}

/// Instances each live replica reports it checks, by replica id, once each has placed the
/// fleet and they add up to it over `count` replicas.
async fn shard_sizes(cluster: &Cluster, count: usize) -> Vec<(String, i64)> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, any) = cluster.live().next().expect("a live replica");
        let view = any.get_json("/v1/cluster").await;
        let sizes: Vec<(String, i64)> = view["replicas"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["alive"] == true)
            .map(|r| (r["id"].as_str().unwrap().to_owned(), r["status_instances"].as_i64().unwrap()))
            .collect();
        // Each one placed (a replica that just joined reports 0 until it has), all of them.
        if sizes.len() == count
            && sizes.iter().all(|s| s.1 > 0)
            && sizes.iter().map(|s| s.1).sum::<i64>() == INSTANCES as i64
        {
            return sizes;
        }
        assert!(Instant::now() < deadline, "shards never added up: {view}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until `replica` shows every id in `ids` with `status`.
async fn wait_status(cluster: &Cluster, replica: usize, ids: &[String], status: &str) {
    wait_shown(cluster.replica(replica), ids, status).await
}

/// Waits until `server` shows every id in `ids` with `status`.
async fn wait_shown(server: &Slipway, ids: &[String], status: &str) {
    let deadline = Instant::now() + TIGHT * 3;
    loop {
        let answer = server.post_json("/v1/health:batchGet", &json!({ "ids": ids })).await;
        let instances = answer["instances"].as_array().unwrap();
        if instances.len() == ids.len() && instances.iter().all(|i| i["status"] == status) {
            return;
        }
        assert!(Instant::now() < deadline, "{} does not show {ids:?} {status}: {answer}", server.addr);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Everything the fleet logged since logging started, logging on.
fn checks_so_far(fleet: &Fleet, log: &mut Vec<Logged>) -> Checks {
    log.extend(fleet.state.take_request_log());
    fleet.state.log_requests();
    Checks::new(log.clone())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_fleet_is_shared_out_answered_everywhere_and_taken_over() {
    if !postgres_pass_or_skip("sharding needs PostgreSQL") {
        return;
    }
    let fleet =
        Fleet::start(FleetConfig { instances: INSTANCES, ports: 2, per_namespace: 100 }, 0).await.unwrap();
    let mut cluster = Cluster::start(3, LEASE.as_millis() as u64, "").await;
    fleet.state.log_requests();
    let mut log = Vec::new();
    let registered = cluster
        .replica(0)
        .post_json("/v1/instances", &LAYOUT.http_body(&fleet.endpoints, 0..INSTANCES))
        .await;
    assert_eq!(registered["upserted_instances"], INSTANCES, "{registered}");

    // Shared out: each replica near a third (the cap is 5 % over the fair share).
    let sizes = shard_sizes(&cluster, 3).await;
    assert!(sizes.iter().all(|(_, n)| (90..=105).contains(n)), "{sizes:?}");
    // Every instance checked, each by exactly one replica.
    let steady = Instant::now();
    tokio::time::sleep(TIGHT + BEAT).await;
    let checks = checks_so_far(&fleet, &mut log);
    let settled = Instant::now();
    assert_eq!(checks.checked(steady, settled).len(), INSTANCES);
    assert_eq!(
        checks.double_checked(steady, settled),
        Vec::<usize>::new(),
        "instances checked by two replicas"
    );

    // Any replica answers for every shard: failures judged by their owners show everywhere,
    // and stream from every replica.
    let mut events =
        cluster.replica(2).client.get(cluster.replica(2).url("/v1/health/events")).send().await.unwrap();
    let failing: Vec<usize> = (0..INSTANCES).step_by(50).collect();
    fleet.state.set_mode_of(&failing, Mode::Fail, 0);
    let failing_ids: Vec<String> = failing.iter().map(|&n| Layout::instance_id(n)).collect();
    for replica in 0..3 {
        wait_status(&cluster, replica, &failing_ids, "degraded").await;
    }
    let streamed = read_events(&mut events, failing_ids.len()).await;
    let streamed_ids: HashSet<&str> = streamed.iter().map(|e| e["instanceId"].as_str().unwrap()).collect();
    assert_eq!(streamed_ids, failing_ids.iter().map(String::as_str).collect::<HashSet<_>>());
    fleet.state.set_mode_of(&failing, Mode::Healthy, 0);
    wait_status(&cluster, 1, &all(), "healthy").await;

    // Killed: its instances are checked by the others within the lease and the tight
    // interval, and the two survivors share the fleet.
    let killed_at = Instant::now();
    cluster.kill(2);
    tokio::time::sleep(LEASE + TIGHT + BEAT * 2).await;
    let checks = checks_so_far(&fleet, &mut log);
    let takeover = checks.takeover(&Cluster::id(2), killed_at);
    assert!(!takeover.is_empty());
    let bound = LEASE + TIGHT + BEAT;
    assert!(
        takeover.iter().all(|t| t.is_some_and(|t| t <= bound)),
        "takeover times over {bound:?}: {takeover:?}"
    );
    let sizes = shard_sizes(&cluster, 2).await;
    assert!(sizes.iter().all(|(_, n)| (140..=158).contains(n)), "{sizes:?}");

    // Frozen for longer than its lease: the other takes everything; on waking, the frozen
    // one lets go before it checks anything, then takes its share back.
    cluster.stop(1);
    tokio::time::sleep(LEASE * 2 + BEAT).await;
    shard_sizes_of(&cluster, 0, INSTANCES as i64).await;
    cluster.cont(1);
    let woke = Instant::now();
    tokio::time::sleep(TIGHT + BEAT * 2).await;
    assert!(cluster.log(1).contains("the status lease ran out"), "{}", cluster.log(1));
    let checks = checks_so_far(&fleet, &mut log);
    let after = Instant::now();
    let handover = woke + BEAT;
    assert_eq!(checks.double_checked(handover, after), Vec::<usize>::new());
    // It took its share back, and checked all of it within the tight interval.
    let sizes = shard_sizes(&cluster, 2).await;
    let share = sizes.iter().find(|(id, _)| *id == Cluster::id(1)).map(|s| s.1 as usize);
    assert_eq!(Some(checks.checked_by(&Cluster::id(1), woke, after).len()), share, "{sizes:?}");

    // Another replica joins: the instances that change hands move to it, and it checks its
    // share within the tight interval.
    let joining = Instant::now();
    let newcomer = Cluster::id(cluster.add().await);
    let sizes = shard_sizes(&cluster, 3).await;
    let joined = Instant::now();
    tokio::time::sleep(TIGHT + BEAT * 2).await;
    let checks = checks_so_far(&fleet, &mut log);
    let end = Instant::now();
    assert_eq!(checks.double_checked(joined + BEAT, end), Vec::<usize>::new());
    let (before, since) = (checks.last_checker(handover, joining), checks.last_checker(joined + BEAT, end));
    let moved: Vec<usize> =
        before.keys().copied().filter(|n| since.get(n).is_some_and(|r| *r != before[n])).collect();
    // The cap on loads (5 % over the fair share, which 300 instances reach by chance) may
    // move a few between the others too.
    let to_newcomer = moved.iter().filter(|n| *since[n] == *newcomer).count();
    assert!(!moved.is_empty() && to_newcomer * 10 >= moved.len() * 9, "{to_newcomer} of {moved:?}");
    let share = sizes.iter().find(|(id, _)| *id == newcomer).map(|s| s.1 as usize);
    assert_eq!(Some(checks.checked_by(&newcomer, joining, end).len()), share, "{sizes:?}");
}

/// Waits until replica `i` reports checking `count` instances.
async fn shard_sizes_of(cluster: &Cluster, i: usize, count: i64) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let view = cluster.replica(i).get_json("/v1/cluster").await;
        let own = view["replicas"].as_array().unwrap().iter().find(|r| r["answering"] == true).cloned();
        if own.as_ref().is_some_and(|r| r["status_instances"] == count) {
            return;
        }
        assert!(Instant::now() < deadline, "replica {i} never checked {count}: {view}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Reads server-sent transitions to `degraded` until `count` arrived.
async fn read_events(response: &mut reqwest::Response, count: usize) -> Vec<Value> {
    let deadline = Instant::now() + TIGHT * 3;
    let mut text = String::new();
    loop {
        let events: Vec<Value> = text
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
            .filter(|e| e["to"] == "degraded")
            .collect();
        if events.len() >= count {
            return events;
        }
        let chunk = tokio::time::timeout_at(deadline.into(), response.chunk()).await.expect("events in time");
        text.push_str(&String::from_utf8_lossy(&chunk.unwrap().unwrap()));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_database_outage_shorter_than_the_lease_does_not_stop_the_checks() {
    if !postgres_pass_or_skip("the outage test stops a PostgreSQL of its own") {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    std::fs::set_permissions(root.path(), std::os::unix::fs::PermissionsExt::from_mode(0o711)).unwrap();
    let postgres = OwnPostgres::start(root.path());
    let database = postgres.create("slipway");
    let fleet = Fleet::start(FleetConfig { instances: 100, ports: 1, per_namespace: 100 }, 0).await.unwrap();
    let data = root.path().join("replica");
    std::fs::create_dir_all(&data).unwrap();
    let config = root.path().join("slipway.toml");
    std::fs::write(&config, "[cluster]\nlease_ms = 15000\n").unwrap();
    let env = [("SLIPWAY_DATABASE__URL", database.as_str())];
    let server =
        Slipway::start(&slipway_binary(), &data, &["--config", config.to_str().unwrap()], &env).await;
    let registered = server.post_json("/v1/instances", &LAYOUT.http_body(&fleet.endpoints, 0..100)).await;
    assert_eq!(registered["upserted_instances"], 100, "{registered}");
    let ids: Vec<String> = (0..100).map(Layout::instance_id).collect();
    wait_shown(&server, &ids, "healthy").await;

    // The database goes away; ten instances fail meanwhile. The replica's lease outlasts
    // the outage, so it keeps checking, judges the failures, and serves reads from memory.
    postgres.run("stop");
    let failing: Vec<usize> = (0..100).step_by(10).collect();
    fleet.state.set_mode_of(&failing, Mode::Fail, 0);
    fleet.state.log_requests();
    let stopped = Instant::now();
    let failing_ids: Vec<String> = failing.iter().map(|&n| Layout::instance_id(n)).collect();
    wait_shown(&server, &failing_ids, "degraded").await;
    tokio::time::sleep((stopped + TIGHT).saturating_duration_since(Instant::now())).await;
    let during = checks_so_far(&fleet, &mut Vec::new());
    let resumed = Instant::now();
    postgres.run("resume");
    assert!(
        failing.iter().all(|n| during.checked(stopped, resumed).contains(n)),
        "the failing instances were re-checked during the outage"
    );

    // Back: the heartbeat lands again and the replica still checks all of them.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let view = server.get_json("/v1/cluster").await;
        if view["replicas"][0]["status_instances"] == 100
            && view["replicas"][0]["heartbeat_age_ms"].as_i64() < Some(2_000)
        {
            break;
        }
        assert!(Instant::now() < deadline, "the heartbeat never came back: {view}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    fleet.state.set_mode_of(&failing, Mode::Healthy, 0);
    wait_shown(&server, &failing_ids, "healthy").await;
}
