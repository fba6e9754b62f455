//! The trigger API over real HTTP: GitHub and GitLab push payloads shaped as their public
//! documentation shows, signed for real, start builds from a local git repository; replays
//! return the first build; forged, rejected, filtered and flooding deliveries start nothing.

mod triggers_support;

use serde_json::{Value, json};
use slipway_server::triggers::verify::github_signature;
use slipway_tests::server::TestServer;
use triggers_support::{create_trigger, repository, start};

/// A push event as GitHub documents it (abridged to the fields a receiver reads).
fn github_push(reference: &str, commit: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "ref": reference,
        "before": "0000000000000000000000000000000000000000",
        "after": commit,
        "created": false, "deleted": false, "forced": false,
        "base_ref": null,
        "compare": "https://github.com/acme/shop/compare/000000000000...abcdef",
        "commits": [{"id": commit, "message": "Update README", "timestamp": "2026-11-23T10:00:00Z",
                     "author": {"name": "Octo Cat", "email": "octo@example.com", "username": "octocat"},
                     "added": [], "removed": [], "modified": ["README.md"]}],
        "head_commit": {"id": commit, "message": "Update README",
                        "author": {"name": "Octo Cat", "email": "octo@example.com", "username": "octocat"}},
        "repository": {"id": 1296269, "name": "shop", "full_name": "acme/shop", "private": false,
                       "clone_url": "https://github.com/acme/shop.git", "default_branch": "main"},
        "pusher": {"name": "octocat", "email": "octo@example.com"},
        "sender": {"login": "octocat", "id": 1, "type": "User"},
    }))
    .unwrap()
}

async fn deliver_github(
    server: &TestServer,
    id: &str,
    event: &str,
    delivery: &str,
    body: &[u8],
    secret: &str,
) -> reqwest::Response {
    reqwest::Client::new()
        .post(server.url(&format!("/v1/triggers/{id}")))
        .header("content-type", "application/json")
        .header("x-github-event", event)
        .header("x-github-delivery", delivery)
        .header("x-hub-signature-256", github_signature(secret, body))
        .body(body.to_vec())
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_signed_github_push_builds_once_and_replays_return_the_first_build() {
    let (repo, commit) = repository();
    let server = start(100).await;
    let (id, secret) = create_trigger(&server, "github-push", repo.path()).await;
    let body = github_push("refs/heads/main", &commit);

    let response =
        deliver_github(&server, &id, "push", "72d3162e-cc78-11e3-81ab-4c9367dc0958", &body, &secret).await;
    assert_eq!(response.status(), 202);
    let first: Value = response.json().await.unwrap();
    assert_eq!(first["duplicate"], false);
    let build_id = first["build"]["id"].as_str().unwrap().to_owned();
    assert_eq!(first["build"]["requested_by"], format!("trigger:{id}"));

    // The same delivery again, and the same payload under a new delivery id: the first build.
    for delivery in ["72d3162e-cc78-11e3-81ab-4c9367dc0958", "a-redelivery"] {
        let replay = deliver_github(&server, &id, "push", delivery, &body, &secret).await;
        assert_eq!(replay.status(), 200);
        let replay: Value = replay.json().await.unwrap();
        assert_eq!(replay["duplicate"], true);
        assert_eq!(replay["build"]["id"], build_id.as_str());
    }
    let builds: Value = server.get_json("/v1/builds?app=hooked").await;
    assert_eq!(builds["builds"].as_array().unwrap().len(), 1, "{builds}");

    if std::env::var("SLIPWAY_TEST_REGISTRY").is_err() {
        eprintln!("skipped the build itself: SLIPWAY_TEST_REGISTRY is not set (run through tests/run.sh)");
        return;
    }
    let build = server.wait_build(&build_id).await;
    assert_eq!(build["state"], "succeeded", "{build}");
    assert_eq!(build["tags"], json!(["ci"]));
    let packages: Value = server.get_json("/v1/apps/hooked/packages?tags=ci&latest=true").await;
    assert!(packages.to_string().contains(build["package"]["digest"].as_str().unwrap()), "{packages}");
}

#[tokio::test]
async fn forged_rejected_and_filtered_deliveries_start_nothing() {
    let (repo, commit) = repository();
    let server = start(100).await;
    let (id, secret) = create_trigger(&server, "github-push", repo.path()).await;
    let body = github_push("refs/heads/main", &commit);

    let forged = deliver_github(&server, &id, "push", "d1", &body, "not-the-secret").await;
    assert_eq!(forged.status(), 401);
    assert_eq!(forged.json::<Value>().await.unwrap()["error"]["code"], "trigger_unauthentic");
    let unsigned = reqwest::Client::new()
        .post(server.url(&format!("/v1/triggers/{id}")))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status(), 401);

    let ping = serde_json::to_vec(&json!({"zen": "Keep it logically awesome.", "hook_id": 1})).unwrap();
    let rejected = deliver_github(&server, &id, "ping", "d2", &ping, &secret).await;
    assert_eq!(rejected.status(), 422);
    let rejected: Value = rejected.json().await.unwrap();
    assert_eq!(rejected["error"]["code"], "trigger_rejected");
    assert!(rejected["error"]["details"]["reason"].as_str().unwrap().contains("ping"), "{rejected}");

    let feature = github_push("refs/heads/feature/x", &commit);
    let filtered = deliver_github(&server, &id, "push", "d3", &feature, &secret).await;
    assert_eq!(filtered.status(), 200);
    let filtered: Value = filtered.json().await.unwrap();
    assert!(filtered["ignored"].as_str().unwrap().contains("feature/x"), "{filtered}");

    let unknown =
        reqwest::Client::new().post(server.url("/v1/triggers/nope")).body("{}").send().await.unwrap();
    assert_eq!(unknown.status(), 404);

    let builds: Value = server.get_json("/v1/builds").await;
    assert_eq!(builds["builds"], json!([]), "nothing started");

    // A rejected delivery left no claim: the same delivery id, now a real push, is accepted.
    let accepted = deliver_github(&server, &id, "push", "d2", &body, &secret).await;
    assert_eq!(accepted.status(), 202);
}

#[tokio::test]
async fn a_gitlab_push_with_its_token_starts_a_build() {
    let (repo, commit) = repository();
    let server = start(100).await;
    let (id, secret) = create_trigger(&server, "gitlab-push", repo.path()).await;
    // Shaped as GitLab's "Push events" documentation shows.
    let body = serde_json::to_vec(&json!({
        "object_kind": "push", "event_name": "push",
        "before": "95790bf891e76fee5e1747ab589903a6a1f80f22", "after": commit,
        "ref": "refs/heads/main", "ref_protected": true, "checkout_sha": commit,
        "user_id": 4, "user_name": "John Smith", "user_username": "jsmith", "user_email": "john@example.com",
        "project_id": 15,
        "project": {"id": 15, "name": "Diaspora", "path_with_namespace": "mike/diaspora",
                    "git_http_url": "http://example.com/mike/diaspora.git", "default_branch": "main"},
        "commits": [{"id": commit, "message": "Update Catalan translation to e38cb41.", "title": "Update Catalan translation",
                     "timestamp": "2011-12-12T14:27:31+02:00", "author": {"name": "Jordi Mallach", "email": "jordi@softcatala.org"},
                     "added": ["CHANGELOG"], "modified": ["app/controller/application.rb"], "removed": []}],
        "total_commits_count": 1,
    }))
    .unwrap();
    let send = |token: &str| {
        reqwest::Client::new()
            .post(server.url(&format!("/v1/triggers/{id}")))
            .header("content-type", "application/json")
            .header("x-gitlab-event", "Push Hook")
            .header("x-gitlab-token", token)
            .body(body.clone())
            .send()
    };
    assert_eq!(send("wrong").await.unwrap().status(), 401);
    let accepted = send(&secret).await.unwrap();
    assert_eq!(accepted.status(), 202);
    let accepted: Value = accepted.json().await.unwrap();
    assert_eq!(accepted["build"]["components"][0]["name"], "app");
}

#[tokio::test]
async fn a_flood_is_limited_with_retry_after() {
    let (repo, _) = repository();
    let server = start(3).await;
    let (id, _) = create_trigger(&server, "generic", repo.path()).await;
    let client = reqwest::Client::new();
    let mut limited = None;
    for _ in 0..20 {
        let response =
            client.post(server.url(&format!("/v1/triggers/{id}"))).body("{}").send().await.unwrap();
        if response.status() == 429 {
            limited = Some(response);
            break;
        }
        assert_eq!(response.status(), 401, "unsigned deliveries are refused while under the limit");
    }
    let limited = limited.expect("the limiter answered 429 within 20 deliveries at 3 per second");
    let retry_after: u64 = limited.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry_after >= 1);
    assert_eq!(limited.json::<Value>().await.unwrap()["error"]["code"], "rate_limited");
}

#[tokio::test]
async fn managing_triggers_needs_an_admin_token() {
    let (repo, _) = repository();
    let server = start(100).await;
    let anonymous = reqwest::Client::new();
    let response = anonymous.post(server.url("/v1/triggers")).json(&json!({})).send().await.unwrap();
    assert_eq!(response.status(), 401);
    let bad = server
        .client()
        .post(server.url("/v1/triggers"))
        .json(&json!({"app": "hooked", "adapter": "no-such-adapter", "components": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let problems = bad.json::<Value>().await.unwrap()["error"]["details"]["problems"].to_string();
    assert!(
        problems.contains("no-such-adapter") && problems.contains("at least one component"),
        "{problems}"
    );
    let (id, _) = create_trigger(&server, "generic", repo.path()).await;
    let listed: Value = server.get_json("/v1/triggers").await;
    assert_eq!(listed["triggers"][0]["id"], id.as_str());
    assert_eq!(
        server.client().delete(server.url(&format!("/v1/triggers/{id}"))).send().await.unwrap().status(),
        204
    );
}

#[tokio::test]
async fn concurrent_deliveries_commit_together_and_a_replay_racing_its_original_starts_nothing() {
    let (repo, commit) = repository();
    // Acceptance only: the builds stay queued, so the test needs no registry.
    // 42 deliveries at once: the rate's burst (a tenth of a second's worth) must hold them.
    let server = TestServer::start_with(
        |c| {
            c.pipeline.run_builds = false;
            c.triggers.per_trigger_per_s = 1000;
        },
        slipway_server::router::app,
    )
    .await;
    let (id, secret) = create_trigger(&server, "github-push", repo.path()).await;
    let send = |delivery: String, commit: String| {
        let (server, id, secret) = (&server, id.clone(), secret.clone());
        async move {
            let body = github_push("refs/heads/main", &commit);
            let response = deliver_github(server, &id, "push", &delivery, &body, &secret).await;
            (response.status().as_u16(), response.json::<Value>().await.unwrap())
        }
    };
    // Twelve copies of one delivery race each other and thirty distinct deliveries, so
    // copies land in the same batch as their original and in later ones.
    let copies: Vec<_> = (0..12).map(|_| send("the-delivery".into(), commit.clone())).collect();
    let distinct: Vec<_> = (0..30).map(|n| send(format!("delivery-{n}"), format!("{n:040x}"))).collect();
    let (copies, distinct) =
        futures::future::join(futures::future::join_all(copies), futures::future::join_all(distinct)).await;

    let mut first = None;
    let mut replayed = Vec::new();
    for copy in copies {
        match copy {
            (202, body) => {
                assert!(first.replace(body["build"]["id"].clone()).is_none(), "a second copy started")
            }
            (200, body) => {
                assert_eq!(body["duplicate"], true, "{body}");
                replayed.push(body["build"]["id"].clone());
            }
            other => panic!("unexpected answer {other:?}"),
        }
    }
    let first = first.expect("one copy started the build");
    assert_eq!(replayed.len(), 11);
    assert!(replayed.iter().all(|id| *id == first), "every copy answers the first build: {replayed:?}");
    let mut started = std::collections::HashSet::new();
    for (status, body) in distinct {
        assert_eq!(status, 202, "{body}");
        assert_eq!(body["build"]["state"], "queued");
        started.insert(body["build"]["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(started.len(), 30, "each distinct delivery has its own build");
    let builds: Value = server.get_json("/v1/builds?app=hooked&limit=100").await;
    assert_eq!(builds["builds"].as_array().unwrap().len(), 31, "{builds}");

    // Claims and builds were written together: every claim names a stored build.
    let (orphans,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM trigger_deliveries d LEFT JOIN builds b ON b.id = d.build_id WHERE b.id IS NULL",
    )
    .fetch_one(&server.state.db)
    .await
    .unwrap();
    assert_eq!(orphans, 0);
    let (claims,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM trigger_deliveries").fetch_one(&server.state.db).await.unwrap();
    assert_eq!(claims, 2 * 31, "a delivery id and a payload digest per started build");

    // Each started build passed every stage of the delivery path, timed on /metrics (the
    // recorder is process-wide, so other tests of this process may add to the counts).
    let metrics = server.client().get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let stages =
        ["checks", "adapter_queue", "adapter_call", "prepare", "writer_queue", "commit", "flush", "total"];
    for stage in stages {
        let series = format!("slipway_trigger_stage_seconds_count{{stage=\"{stage}\"}}");
        let count = metrics
            .lines()
            .find_map(|line| line.strip_prefix(series.as_str())?.trim().parse::<f64>().ok())
            .unwrap_or(0.0);
        assert!(count >= 31.0, "{series} is {count}");
    }
}

#[tokio::test]
async fn claims_older_than_the_replay_window_are_pruned_and_live_ones_kept() {
    let (repo, commit) = repository();
    let server = TestServer::start_with(
        |c| {
            c.pipeline.run_builds = false;
            c.triggers.claim_prune_every_s = 1;
        },
        slipway_server::router::app,
    )
    .await;
    let (id, secret) = create_trigger(&server, "github-push", repo.path()).await;
    let body = github_push("refs/heads/main", &commit);
    assert_eq!(deliver_github(&server, &id, "push", "live", &body, &secret).await.status(), 202);

    // Claims a delivery of 25 hours ago left behind, backdated by hand.
    let now_ms =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    for n in 0..3 {
        sqlx::query(
            "INSERT INTO trigger_deliveries (trigger_id, delivery_key, build_id, created_at_ms) VALUES ($1, $2, $3, $4)",
        )
        .bind(&id)
        .bind(format!("delivery:old-{n}"))
        .bind("a-build-of-yesterday")
        .bind(now_ms - 25 * 3600 * 1000)
        .execute(&server.state.db)
        .await
        .unwrap();
    }
    let db = &server.state.db;
    let count = |sql: &'static str| async move {
        let (n,): (i64,) = sqlx::query_as(sql).fetch_one(db).await.unwrap();
        n
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while count("SELECT COUNT(*) FROM trigger_deliveries WHERE build_id = 'a-build-of-yesterday'").await > 0 {
        assert!(std::time::Instant::now() < deadline, "expired claims were not pruned within 30 s");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(count("SELECT COUNT(*) FROM trigger_deliveries").await, 2, "the live delivery's claims stay");
    let replay = deliver_github(&server, &id, "push", "live", &body, &secret).await;
    assert_eq!(replay.status(), 200, "the live delivery is still a replay");
}

#[tokio::test]
async fn a_trigger_deleted_elsewhere_starts_nothing_though_this_replica_cached_it() {
    let (repo, commit) = repository();
    let server = TestServer::start_with(|c| c.pipeline.run_builds = false, slipway_server::router::app).await;
    let (id, secret) = create_trigger(&server, "github-push", repo.path()).await;
    let body = github_push("refs/heads/main", &commit);
    assert_eq!(deliver_github(&server, &id, "push", "cached", &body, &secret).await.status(), 202);

    // Deleted the way another replica sharing the database deletes it: this server's cache
    // still holds the trigger.
    for table in ["trigger_deliveries WHERE trigger_id = $1", "triggers WHERE id = $1"] {
        sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM {table}")))
            .bind(&id)
            .execute(&server.state.db)
            .await
            .unwrap();
    }
    let other = github_push("refs/heads/main", &format!("{:040x}", 7));
    let refused = deliver_github(&server, &id, "push", "after-delete", &other, &secret).await;
    assert_eq!(refused.status(), 404);
    let builds: Value = server.get_json("/v1/builds?app=hooked").await;
    assert_eq!(builds["builds"].as_array().unwrap().len(), 1, "nothing new started: {builds}");
    let (claims,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM trigger_deliveries").fetch_one(&server.state.db).await.unwrap();
    assert_eq!(claims, 0, "the refused delivery left no claim");
}
