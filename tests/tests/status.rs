//! End-to-end tests of the status scaler over real HTTP: a Slipway server in-process, the
//! fleet simulator on loopback, real fetchers and the built-in status plugins. The schedule
//! is shortened (tight 500 ms, ceiling 4 s) so the tests run in seconds; the rules
//! themselves are unit-tested in `status/src/scheduler.rs` on a simulated clock.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use slipway_tests::fleet::{Fleet, FleetConfig, Layout, Mode};
use slipway_tests::server::TestServer;

mod status_support;

const LAYOUT: Layout = Layout { per_app: 2, apps: 3, clusters: 2 };

struct Env {
    server: TestServer,
    fleet: Fleet,
    client: reqwest::Client,
}

async fn start(instances: usize) -> Env {
    let fleet = Fleet::start(FleetConfig { instances, ports: 2, per_namespace: 1_000 }, 0).await.unwrap();
    let server = status_support::fast_server().await;
    let client = server.client();
    Env { server, fleet, client }
}

impl Env {
    async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let r = self.client.post(self.server.url(path)).json(body).send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let r = self.client.get(self.server.url(path)).send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    async fn batch_get(&self, ids: &[String]) -> Vec<Value> {
        let (code, body) = self.post("/v1/health:batchGet", &json!({ "ids": ids })).await;
        assert_eq!(code, 200, "{body}");
        body["instances"].as_array().unwrap().clone()
    }

    /// Polls until every id satisfies `ok`, or fails after `within`.
    async fn wait_for(&self, ids: &[String], within: Duration, ok: impl Fn(&Value) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + within;
        loop {
            let got = self.batch_get(ids).await;
            if got.len() == ids.len() && got.iter().all(&ok) {
                return got;
            }
            assert!(Instant::now() < deadline, "not reached within {within:?}: {got:#?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn ids(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(Layout::instance_id).collect()
}

fn status_is(s: &'static str) -> impl Fn(&Value) -> bool {
    move |v| v["status"] == s
}

#[tokio::test(flavor = "multi_thread")]
async fn registered_instances_are_checked_and_read_in_bulk() {
    let env = start(20).await;
    let (code, body) = env.post("/v1/instances", &LAYOUT.http_body(&env.fleet.endpoints, 0..20)).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["upserted_instances"], 20);
    let all = ids(0..20);
    let got = env.wait_for(&all, Duration::from_secs(15), status_is("healthy")).await;
    assert!(got[0]["reason"].as_str().unwrap().starts_with("HTTP 200"), "{}", got[0]);
    assert!(env.fleet.state.requests(0..20).iter().all(|&c| c >= 1), "every target was really asked");

    // Unknown ids are listed apart, in a request naming the literal `:batchGet` route.
    let (code, body) = env.post("/v1/health:batchGet", &json!({ "ids": ["i3", "nope"] })).await;
    assert_eq!(code, 200);
    assert_eq!(body["instances"][0]["id"], "i3");
    assert_eq!(body["notFound"], json!(["nope"]));

    let (_, summary) = env.get("/v1/health/summary?groupBy=status").await;
    assert_eq!(summary["groups"]["healthy"]["total"], 20, "{summary}");
    let (_, by_cluster) = env.get("/v1/health/summary?groupBy=cluster").await;
    assert_eq!(
        by_cluster["groups"]["c0"]["total"], 5,
        "10 app instances dealt over 2 clusters: {by_cluster}"
    );
    let (code, _) = env.get("/v1/health/summary?groupBy=colour").await;
    assert_eq!(code, 400);

    let (_, apps) = env.get("/v1/apps/app0/instances").await;
    let list = apps["appInstances"].as_array().unwrap();
    assert_eq!(list.len(), 4, "{apps}");
    assert!(list.iter().all(|a| a["status"] == "healthy" && a["components"].as_array().unwrap().len() == 2));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fault_is_detected_rechecked_tightly_and_its_recovery_noticed() {
    let env = start(10).await;
    let (code, body) = env.post("/v1/instances", &LAYOUT.http_body(&env.fleet.endpoints, 0..10)).await;
    assert_eq!(code, 200, "{body}");
    env.wait_for(&ids(0..10), Duration::from_secs(15), status_is("healthy")).await;

    env.fleet.state.set_mode(4..5, Mode::Fail, 0);
    let got = env.wait_for(&ids(4..5), Duration::from_secs(15), status_is("degraded")).await;
    assert!(got[0]["reason"].as_str().unwrap().contains("503"), "{}", got[0]);
    // App-instance health is the worst component's, with its reason.
    let (_, apps) = env.get("/v1/apps/app2/instances?status=degraded").await;
    let app = &apps["appInstances"][0];
    assert_eq!(app["id"], "ai2", "{apps}");
    assert!(app["reasons"][0].as_str().unwrap().starts_with("web0: "), "{app}");

    // Anomalous: re-checked at the tight interval.
    let before = env.fleet.state.requests(4..5)[0];
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rechecks = env.fleet.state.requests(4..5)[0] - before;
    assert!(rechecks >= 5, "{rechecks} re-checks in 3 s at a 500 ms tight interval");

    env.fleet.state.set_mode(4..5, Mode::Healthy, 0);
    env.wait_for(&ids(4..5), Duration::from_secs(5), status_is("healthy")).await;

    // The history is written behind the in-memory status, in batches: give it a moment.
    let expected = vec![("unknown", "healthy"), ("healthy", "degraded"), ("degraded", "healthy")];
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (code, history) = env.get("/v1/instances/i4/history").await;
        assert_eq!(code, 200);
        let t = history["transitions"].as_array().unwrap();
        let path: Vec<(&str, &str)> =
            t.iter().rev().map(|t| (t["from"].as_str().unwrap(), t["to"].as_str().unwrap())).collect();
        if path == expected {
            break;
        }
        assert!(Instant::now() < deadline && path.len() < 3, "{history}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (code, _) = env.get("/v1/instances/nope/history").await;
    assert_eq!(code, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hanging_target_times_out_and_nothing_else_slows_down() {
    let env = start(10).await;
    env.post("/v1/instances", &LAYOUT.http_body(&env.fleet.endpoints, 0..10)).await;
    env.wait_for(&ids(0..10), Duration::from_secs(15), status_is("healthy")).await;
    env.fleet.state.set_mode(0..1, Mode::Hang, 0);
    // A target that cannot be observed is `unknown` with the reason, not `degraded`.
    let got = env.wait_for(&ids(0..1), Duration::from_secs(15), status_is("unknown")).await;
    assert!(got[0]["reason"].as_str().unwrap().starts_with("timeout: "), "{}", got[0]);
    // The others are still checked on their schedule meanwhile.
    let before = env.fleet.state.requests(1..10);
    tokio::time::sleep(Duration::from_secs(6)).await;
    let after = env.fleet.state.requests(1..10);
    assert!(before.iter().zip(&after).all(|(b, a)| a > b), "{before:?} -> {after:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_bulk_request_is_refused_whole_naming_each_bad_item() {
    let env = start(4).await;
    let mut body = LAYOUT.http_body(&env.fleet.endpoints, 0..4);
    body["instances"][0]["status"]["plugin"] = json!("no-such-check");
    body["instances"][1]["status"]["parameters"] = json!({ "expect_status": ["abc"] });
    body["instances"][2]["observe"] = json!({ "kubernetes": { "cluster": "ghost", "apiVersion": "apps/v1", "kind": "Deployment", "namespace": "x", "name": "y" } });
    let duplicate = body["instances"][3].clone();
    body["instances"].as_array_mut().unwrap().push(duplicate);
    let (code, err) = env.post("/v1/instances", &body).await;
    assert_eq!(code, 422, "{err}");
    assert_eq!(err["error"]["code"], "invalid_instances");
    let problems = err["error"]["details"]["problems"].as_array().unwrap();
    let items: Vec<&str> = problems.iter().map(|p| p["item"].as_str().unwrap()).collect();
    assert_eq!(items, vec!["instances[0]", "instances[1]", "instances[2]", "instances[4]"], "{err}");
    assert!(problems[0]["message"].as_str().unwrap().contains("status/no-such-check"));
    assert!(problems[1]["message"].as_str().unwrap().contains("expect_status"), "{}", problems[1]);
    assert!(problems[2]["message"].as_str().unwrap().contains("cluster `ghost` is not registered"));
    assert!(problems[3]["message"].as_str().unwrap().contains("duplicate"));
    // All or nothing: the good items were not registered either.
    let (_, got) = env.post("/v1/health:batchGet", &json!({ "ids": ids(0..4) })).await;
    assert_eq!(got["notFound"].as_array().unwrap().len(), 4, "{got}");

    let (code, err) = env.post("/v1/instances", &json!({ "delete": ["never-registered"] })).await;
    assert_eq!(code, 422, "{err}");

    // More than 10,000 instances in one request is refused before anything is looked at.
    let ids: Vec<String> = (0..10_001).map(|n| format!("x{n}")).collect();
    let (code, err) = env.post("/v1/instances", &json!({ "delete": ids })).await;
    assert_eq!(code, 413, "{err}");
    assert_eq!(err["error"]["details"], json!({ "count": 10_001, "limit": 10_000 }));
}

#[tokio::test(flavor = "multi_thread")]
async fn deploy_events_and_deletes() {
    let env = start(4).await;
    env.post("/v1/instances", &LAYOUT.http_body(&env.fleet.endpoints, 0..4)).await;
    env.wait_for(&ids(0..4), Duration::from_secs(15), status_is("healthy")).await;
    // Let the instances back off, then a deploy event brings ai1's components back to tight.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (code, body) = env
        .post("/v1/instances/ai1/events", &json!({ "type": "deploy", "detail": { "version": "1.4.3" } }))
        .await;
    assert_eq!(code, 202, "{body}");
    assert_eq!(body["instances"], 2);
    let got = env.batch_get(&ids(2..4)).await;
    assert!(got.iter().all(|v| v["intervalMs"] == 500), "{got:#?}");
    let (code, _) = env.post("/v1/instances/nope/events", &json!({ "type": "deploy" })).await;
    assert_eq!(code, 404);

    let (code, body) = env.post("/v1/instances", &json!({ "delete": ["i2", "i3"] })).await;
    assert_eq!(code, 200, "{body}");
    let (_, got) = env.post("/v1/health:batchGet", &json!({ "ids": ["i2", "i3", "i0"] })).await;
    assert_eq!(got["notFound"], json!(["i2", "i3"]));
    let (_, apps) = env.get("/v1/apps/app1/instances").await;
    assert_eq!(apps["appInstances"], json!([]), "the emptied app instance is gone");
}

#[tokio::test(flavor = "multi_thread")]
async fn transitions_are_streamed_filtered_by_app() {
    let env = start(12).await;
    env.post("/v1/instances", &LAYOUT.http_body(&env.fleet.endpoints, 0..12)).await;
    env.wait_for(&ids(0..12), Duration::from_secs(15), status_is("healthy")).await;
    let mut response = env.client.get(env.server.url("/v1/health/events?app=app1")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    // i2 (ai1 → app1) and i0 (ai0 → app0) fail; only app1's transition must arrive.
    env.fleet.state.set_mode_of(&[0, 2], Mode::Fail, 0);
    let mut text = String::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while !text.contains("\"to\":\"degraded\"") {
        let chunk =
            tokio::time::timeout_at(deadline.into(), response.chunk()).await.expect("an event in time");
        text.push_str(&String::from_utf8_lossy(&chunk.unwrap().unwrap()));
    }
    assert!(text.contains("event: transition"), "{text}");
    assert!(text.contains("\"instanceId\":\"i2\"") && text.contains("\"app\":\"app1\""), "{text}");
    assert!(!text.contains("\"instanceId\":\"i0\""), "filtered out: {text}");
}
