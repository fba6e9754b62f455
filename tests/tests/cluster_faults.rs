//! Faults of a build cluster, with real `slipway serve` replicas on PostgreSQL and one object
//! store (Garage when the test script started it): a replica frozen (SIGSTOP) for longer
//! than its lease and then let go on, replicas killed (-9) mid-publish on either side of
//! the publish's commit, and a fourth replica joining while builds run. In each case every
//! build ends exactly once, with exactly one app package, and a replica that lost a build
//! writes nothing more about it. Beside them, claimers racing on one queue each get no more
//! builds than they asked for, and no build twice.
//!
//! The publish faults are timed by the database itself: the test holds a row lock the
//! publish (or the build's record after it) needs, sees the replica's session wait on it in
//! `pg_stat_activity` (each replica names its sessions by its id), and kills it there.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use slipway_tests::bench::cluster::builds::{self, APP, TRIVIAL};
use slipway_tests::bench::cluster::claims::Queue;
use slipway_tests::bench::cluster::replicas::Cluster;
use slipway_tests::database::postgres_pass_or_skip;
use slipway_tests::pipeline::{config_toml, registry_and_base, write};
use slipway_tests::server::wait_build;

const LEASE_MS: u64 = 3_000;
const LEASE: Duration = Duration::from_millis(LEASE_MS);

/// The registry and base image, on the PostgreSQL pass only (the replicas share a build
/// queue there; two processes on one SQLite file are not a deployment).
fn components() -> Option<(String, String)> {
    if !postgres_pass_or_skip("replicas share their build queue on PostgreSQL") {
        return None;
    }
    registry_and_base()
}

async fn start(replicas: usize, registry: &str, source: &Path) -> Cluster {
    Cluster::start(replicas, LEASE_MS, &config_toml(registry, source, "")).await
}

/// With the build row locked by the test its lease cannot be renewed: it must outlast the
/// build's run up to the publish, on a busy machine too.
const LONG_LEASE_MS: u64 = 20_000;

/// Build `id` as replica `reader` sees it.
async fn build(cluster: &Cluster, reader: usize, id: &str) -> Value {
    cluster.replica(reader).get_json(&format!("/v1/builds/{id}")).await
}

/// Waits until `id` runs (and its log holds `logged`, when given); returns the replica
/// running it.
async fn running_on(cluster: &Cluster, id: &str, logged: Option<&str>) -> usize {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let seen = build(cluster, 0, id).await;
        if seen["state"] == "running"
            && let Some(owner) = seen["replica"].as_str().and_then(|r| cluster.index_of(r))
        {
            let Some(text) = logged else { return owner };
            let log = log_of(cluster, owner, id, &seen).await;
            if log.iter().any(|l| l.contains(text)) {
                return owner;
            }
        }
        assert!(Instant::now() < deadline, "the build never got going: {seen}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The log of the build's only component, as replica `reader` serves it.
async fn log_of(cluster: &Cluster, reader: usize, id: &str, build: &Value) -> Vec<String> {
    let component = build["components"][0]["name"].as_str().unwrap();
    let log = cluster.replica(reader).get_json(&format!("/v1/builds/{id}/logs?component={component}")).await;
    serde_json::from_value(log["lines"].clone()).unwrap()
}

/// The app packages of [`APP`] with the key each was published under.
async fn packages(db: &sqlx::AnyPool) -> Vec<(String, Option<String>)> {
    sqlx::query_as("SELECT version, publish_key FROM registry_app_packages WHERE app = $1")
        .bind(APP)
        .fetch_all(db)
        .await
        .unwrap()
}

/// Sessions replica `name` has open on the cluster's database, and how many of them wait on
/// a lock.
async fn sessions_of(db: &sqlx::AnyPool, name: &str) -> (i64, i64) {
    sqlx::query_as(
        "SELECT COUNT(*), CAST(COALESCE(SUM(CASE WHEN wait_event_type = 'Lock' THEN 1 ELSE 0 END), 0) AS BIGINT)
         FROM pg_stat_activity WHERE datname = current_database() AND application_name = $1",
    )
    .bind(name)
    .fetch_one(db)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_replica_stopped_past_its_lease_loses_its_build_and_changes_nothing_after_sigcont() {
    let Some((registry, base)) = components() else { return };
    let source = tempfile::tempdir().unwrap();
    write(
        source.path(),
        "slow/Dockerfile",
        // Unique to the run: the layer cache in a shared object store outlives test runs.
        &format!(
            "FROM {base}\nRUN echo the slow step starts {} && sleep 5\nRUN echo done > /done.txt\n",
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
        ),
    );
    let cluster = start(3, &registry, source.path()).await;
    let db = cluster.database().await;
    let id = cluster.replica(0).submit_dir_build(APP, "slow", source.path()).await;
    let stopped = running_on(&cluster, &id, Some("the slow step starts")).await;
    // A run's log reaches the object store once a second: let the first run's lines get
    // there (the step sleeps 5 s), so the joined log shows both runs.
    tokio::time::sleep(Duration::from_millis(1_500)).await;

    cluster.stop(stopped);
    let at = Instant::now();
    let reader = (stopped + 1) % 3;
    let deadline = at + Duration::from_secs(30);
    let taker = loop {
        let seen = build(&cluster, reader, &id).await;
        if seen["attempts"] == 2 && seen["replica"].is_string() {
            break seen["replica"].as_str().unwrap().to_owned();
        }
        assert!(Instant::now() < deadline, "nobody took the build over: {seen}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_ne!(taker, Cluster::id(stopped));
    // Lease time, plus one renewal round and one dispatcher poll.
    assert!(at.elapsed() < LEASE * 3, "taken over after {:?}", at.elapsed());
    let done = wait_build(
        &cluster.replica(reader).client,
        &cluster.replica(reader).url(&format!("/v1/builds/{id}")),
    )
    .await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let log = log_of(&cluster, reader, &id, &done).await;
    assert_eq!(log.iter().filter(|l| *l == "--- run again ---").count(), 1, "{log:?}");

    // Let go on: it must notice the lease is gone before it writes anything about the build.
    cluster.cont(stopped);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cluster.log(stopped).contains("lost the lease") {
        assert!(Instant::now() < deadline, "the stopped replica never noticed: {}", cluster.log(stopped));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Anything it still meant to write would land within a renewal round or two.
    tokio::time::sleep(LEASE).await;
    assert_eq!(build(&cluster, reader, &id).await, done, "the build record is untouched");
    // Its own run's log may gain the lines of a last flush; the new owner's is untouched.
    let owners_run = |log: &[String]| log.rsplit(|l| l == "--- run again ---").next().unwrap().to_vec();
    let after = log_of(&cluster, reader, &id, &done).await;
    assert_eq!(owners_run(&after), owners_run(&log), "the new owner's log is not overwritten: {after:?}");
    let published = packages(&db).await;
    assert_eq!(published, vec![(done["package"]["version"].as_str().unwrap().to_owned(), Some(id.clone()))]);
    let seen = cluster.replica(stopped).get_json("/v1/cluster").await;
    assert_eq!(seen["replicas"][0]["id"], Cluster::id(stopped).as_str(), "{seen}");
    assert_eq!(seen["replicas"][0]["running_builds"], 0, "it holds nothing: {seen}");
}

/// Where in its publish the replica running a build is killed.
#[derive(PartialEq)]
enum Moment {
    /// The publish's first statement bumps the app's change counter: an uncommitted row of
    /// the test's makes it wait there, after the package blob is stored, inside its
    /// transaction.
    InsidePublish,
    /// The build row locked by the test (after the claim, which would skip a locked row):
    /// the publish commits, then recording the build's success waits.
    AfterPublishCommitted,
}

/// Starts three replicas, kills the one running a trivial build at `moment`, lets go of the
/// lock, and checks that another replica finished the build with exactly one package.
async fn killed_mid_publish(moment: Moment) {
    let Some((registry, _)) = components() else { return };
    let source = tempfile::tempdir().unwrap();
    builds::write_sources(source.path(), 1, TRIVIAL);
    let lease = if moment == Moment::AfterPublishCommitted { LONG_LEASE_MS } else { LEASE_MS };
    let mut cluster = Cluster::start(3, lease, &config_toml(&registry, source.path(), "")).await;
    let db = cluster.database().await;
    let mut held = db.begin().await.unwrap();
    if moment == Moment::InsidePublish {
        sqlx::query("INSERT INTO registry_app_changes (app, changes) VALUES ($1, 1)")
            .bind(APP)
            .execute(&mut *held)
            .await
            .unwrap();
    }
    let id = cluster.replica(0).submit_dir_build(APP, "c0", source.path()).await;
    let owner = running_on(&cluster, &id, None).await;
    if moment == Moment::AfterPublishCommitted {
        // Taken after the claim, which would otherwise skip the locked row.
        sqlx::query("SELECT id FROM builds WHERE id = $1 FOR UPDATE")
            .bind(&id)
            .execute(&mut *held)
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while packages(&db).await.is_empty() {
            assert!(Instant::now() < deadline, "the build never published");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let name = Cluster::id(owner);
    let deadline = Instant::now() + Duration::from_secs(60);
    while sessions_of(&db, &name).await.1 == 0 {
        assert!(Instant::now() < deadline, "the replica never reached the held lock");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cluster.kill(owner);
    // Its sessions die with it, the waiting ones too (tests/postgres.sh has PostgreSQL check
    // for closed connections), so nothing it sent runs once the lock frees.
    let deadline = Instant::now() + Duration::from_secs(10);
    while sessions_of(&db, &name).await.0 > 0 {
        assert!(Instant::now() < deadline, "the killed replica's sessions live on");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let published_before_kill = packages(&db).await;
    held.rollback().await.unwrap();

    let reader = (owner + 1) % 3;
    let done = wait_build(
        &cluster.replica(reader).client,
        &cluster.replica(reader).url(&format!("/v1/builds/{id}")),
    )
    .await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["attempts"], 2, "{done}");
    let published = packages(&db).await;
    assert_eq!(published, vec![(done["package"]["version"].as_str().unwrap().to_owned(), Some(id.clone()))]);
    match moment {
        Moment::InsidePublish => assert!(published_before_kill.is_empty(), "{published_before_kill:?}"),
        Moment::AfterPublishCommitted => {
            assert_eq!(published_before_kill, published, "the first replica's package is the one kept")
        }
    }
}

#[tokio::test]
async fn a_replica_killed_inside_its_publish_transaction_leaves_it_to_another_that_publishes_once() {
    killed_mid_publish(Moment::InsidePublish).await;
}

#[tokio::test]
async fn a_replica_killed_after_its_publish_committed_leaves_one_package_that_the_next_finds() {
    killed_mid_publish(Moment::AfterPublishCommitted).await;
}

#[tokio::test]
async fn a_fourth_replica_started_under_load_takes_builds_and_none_is_lost_or_run_twice() {
    let Some((registry, base)) = components() else { return };
    const BUILDS: usize = 40;
    let source = tempfile::tempdir().unwrap();
    builds::write_sources(
        source.path(),
        BUILDS,
        &format!("FROM {base}\nCOPY file.txt /file.txt\nRUN sleep 1\n"),
    );
    let mut cluster = start(3, &registry, source.path()).await;
    let db = cluster.database().await;
    builds::submit(&cluster, source.path(), BUILDS).await.unwrap();
    while builds::progress(&db).await.unwrap().0 < 6 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let fourth = cluster.add().await;

    let mut fourth_ran = 0;
    let deadline = Instant::now() + Duration::from_secs(300);
    while builds::progress(&db).await.unwrap().1 > 0 {
        let seen = cluster.replica(fourth).get_json("/v1/cluster").await;
        let mine = seen["replicas"][0]["running_builds"].as_i64().unwrap();
        fourth_ran = fourth_ran.max(mine);
        assert!(Instant::now() < deadline, "builds unfinished after 300 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(fourth_ran > 0, "the fourth replica took no build");
    let checked = builds::check(&cluster, &db).await.unwrap();
    // A replica slowed past its lease (two cores shared by everything here) may lose a
    // build to another; it then stops it before it completes, so each still completes once.
    assert_eq!((checked.completed_once, checked.packages), (BUILDS, BUILDS as i64), "{checked:?}");
}

#[tokio::test]
async fn concurrent_claims_take_no_more_builds_than_asked_and_no_build_twice() {
    const QUEUED: usize = 3_000;
    const CLAIMERS: usize = 8;
    const PER_CLAIM: usize = 3;
    let dir = tempfile::tempdir().unwrap();
    let url = slipway_tests::database::shared_url(dir.path()).await;
    let queue = Queue::fill(&url, QUEUED, CLAIMERS).await.unwrap();
    let mut claimers = Vec::new();
    for k in 0..CLAIMERS {
        let store = queue.claimer(k).await.unwrap();
        claimers.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let got = store.claim_queued(PER_CLAIM).await.unwrap();
                assert!(got.len() <= PER_CLAIM, "asked for {PER_CLAIM}, claimed {}", got.len());
                if got.is_empty() {
                    return mine;
                }
                mine.extend(got);
            }
        }));
    }
    let mut claimed = Vec::new();
    for claimer in claimers {
        claimed.extend(claimer.await.unwrap());
    }
    let total = claimed.len();
    claimed.sort();
    claimed.dedup();
    assert_eq!((total, claimed.len()), (QUEUED, QUEUED), "every build claimed once");
}
