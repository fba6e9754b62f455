//! A restart of the status scaler with many registered instances, end to end: a server on
//! a data directory is shut down and a new one started on it, against the fleet simulator
//! over real HTTP. The restored instances keep their statuses and history, and the first
//! round of checks is spread over the tight interval instead of hitting every target at
//! once.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use slipway_server::config::Config;
use slipway_tests::fleet::{Fleet, FleetConfig, Layout, Logged, Mode};
use slipway_tests::server::TestServer;

const INSTANCES: usize = 2_000;
const LAYOUT: Layout = Layout { per_app: 4, apps: 10, clusters: 4 };
const TIGHT: Duration = Duration::from_secs(1);
/// Quarters of the tight window the first round is watched in.
const SLICES: usize = 4;

fn schedule(c: &mut Config) {
    c.status.schedule.tight = TIGHT;
    c.status.schedule.ceiling = Duration::from_secs(4);
}

async fn post(server: &TestServer, path: &str, body: &Value) -> Value {
    let response = server.client().post(server.url(path)).json(body).send().await.unwrap();
    assert!(response.status().is_success(), "{path}: {}", response.status());
    response.json().await.unwrap()
}

async fn states(server: &TestServer) -> Vec<Value> {
    let ids: Vec<String> = (0..INSTANCES).map(Layout::instance_id).collect();
    let body = post(server, "/v1/health:batchGet", &json!({ "ids": ids })).await;
    body["instances"].as_array().unwrap().clone()
}

async fn wait_until(server: &TestServer, within: Duration, ok: impl Fn(&[Value]) -> bool) {
    let deadline = Instant::now() + within;
    while !ok(&states(server).await) {
        assert!(Instant::now() < deadline, "not reached within {within:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn history(server: &TestServer, id: &str) -> Vec<(String, String)> {
    let body = server.get_json(&format!("/v1/instances/{id}/history")).await;
    let transitions = body["transitions"].as_array().unwrap();
    transitions.iter().rev().map(|t| (t["from"].to_string(), t["to"].to_string())).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_restores_statuses_and_history_and_spreads_the_first_round() {
    let fleet =
        Fleet::start(FleetConfig { instances: INSTANCES, ports: 4, per_namespace: 1_000 }, 0).await.unwrap();
    let server = TestServer::start_with(schedule, slipway_server::router::app).await;
    for from in (0..INSTANCES).step_by(1_000) {
        post(&server, "/v1/instances", &LAYOUT.http_body(&fleet.endpoints, from..from + 1_000)).await;
    }
    wait_until(&server, Duration::from_secs(30), |s| s.iter().all(|v| v["status"] == "healthy")).await;
    // i7 fails and recovers, i9 stays failing: both have history to keep.
    fleet.state.set_mode_of(&[7, 9], Mode::Fail, 0);
    let failing = |s: &[Value]| s[7]["status"] == "degraded" && s[9]["status"] == "degraded";
    wait_until(&server, Duration::from_secs(20), failing).await;
    fleet.state.set_mode(7..8, Mode::Healthy, 0);
    wait_until(&server, Duration::from_secs(20), |s| s[7]["status"] == "healthy").await;
    // Every instance backs off to the ceiling (1, 1, 1, 2, 4 s), so the checks seen after
    // the restart are the restart's own.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let (history_7, history_9) = (history(&server, "i7").await, history(&server, "i9").await);
    let step = |from: &str, to: &str| (format!("\"{from}\""), format!("\"{to}\""));
    assert_eq!(history_7.last(), Some(&step("degraded", "healthy")), "{history_7:?}");
    assert_eq!(history_9.last(), Some(&step("healthy", "degraded")), "{history_9:?}");
    let last_seen = states(&server).await;

    let data_dir = server.shut_down().await;
    // A fetch the old server started just before it stopped may still land.
    tokio::time::sleep(Duration::from_millis(500)).await;
    fleet.state.log_requests();
    let before = fleet.state.requests(0..INSTANCES);
    let started = Instant::now();
    let server = TestServer::start_in(data_dir, schedule, slipway_server::router::app).await;
    let opened = started.elapsed();

    // Statuses are restored before anything is checked again: an instance not yet checked
    // by this server shows what the last one stored.
    let restored = states(&server).await;
    let unchecked: Vec<&Value> = restored.iter().filter(|v| v["checkedAtMs"] == 0).collect();
    assert!(!unchecked.is_empty(), "some instances are read before their first check");
    // The status is the stored one; the reason is that of the last transition (the store
    // is written on changes, not on every check).
    for v in &unchecked {
        let n: usize = v["id"].as_str().unwrap()[1..].parse().unwrap();
        assert_eq!(v["status"], last_seen[n]["status"], "{v}");
    }
    assert!(restored[9]["reason"].as_str().unwrap().contains("503"), "{}", restored[9]);

    // The first round, from the moment the new server started opening: when the fleet was
    // asked about each instance. The reads above may take a second on a loaded machine, so
    // the fleet logs the requests as they land. The round is awaited to its end, however
    // long a loaded machine makes it (the spread is what is tested, not speed), and then
    // one tight interval more, so re-checks are seen too.
    let round = Instant::now();
    loop {
        let now = fleet.state.requests(0..INSTANCES);
        let never = now.iter().zip(&before).filter(|(n, b)| n == b).count();
        if never == 0 {
            break;
        }
        let waited = round.elapsed();
        assert!(
            waited < Duration::from_secs(30),
            "{never} instances not checked within {waited:?} of the reads (opened in {opened:?})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(TIGHT).await;
    let mut asked: Vec<Vec<Duration>> = vec![Vec::new(); INSTANCES];
    for Logged { instance: n, at, .. } in fleet.state.take_request_log() {
        asked[n].push(at - started);
    }
    // A re-check comes at the tight interval less its jitter (at most 10 %), measured from
    // the verdict on the check before, which comes after that check's request; the timer
    // wheel fires up to one slot (100 ms) before the due time. Two requests closer than
    // that are one instance checked twice.
    let least = TIGHT * 9 / 10 - Duration::from_millis(100);
    let too_close: Vec<(usize, &Vec<Duration>)> =
        asked.iter().enumerate().filter(|(_, a)| a.windows(2).any(|w| w[1] - w[0] < least)).collect();
    assert!(too_close.is_empty(), "instances checked twice within {least:?}: {too_close:?}");
    let slice = TIGHT / SLICES as u32;
    let last_first = asked.iter().map(|a| a[0]).max().unwrap();
    let mut per_slice = vec![0usize; (last_first.as_millis() / slice.as_millis()) as usize + 1];
    for a in &asked {
        per_slice[(a[0].as_millis() / slice.as_millis()) as usize] += 1;
    }
    assert!(
        per_slice.iter().all(|&n| n <= INSTANCES / 2),
        "the first round is spread over the tight window, not fired at once: {per_slice:?} per {slice:?}"
    );

    // The history survived, and a restored status the first check confirms is no transition.
    wait_until(&server, Duration::from_secs(10), |s| s.iter().all(|v| v["checkedAtMs"] != 0)).await;
    assert_eq!(history(&server, "i7").await, history_7);
    assert_eq!(history(&server, "i9").await, history_9);
}
