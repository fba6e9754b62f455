//! `GET /v1/health/heatmap` over real HTTP: every registered instance appears once, in its
//! app × cluster group, with the digit of its current status.

use std::time::{Duration, Instant};

use serde_json::Value;
use slipway_tests::fleet::{Fleet, FleetConfig, Layout, Mode};

mod status_support;

const LAYOUT: Layout = Layout { per_app: 2, apps: 2, clusters: 2 };

/// The status of instance `id` as the heatmap answer tells it.
fn status_of(answer: &Value, id: &str) -> Option<String> {
    answer["groups"].as_array()?.iter().find_map(|g| {
        let at = g["ids"].as_array()?.iter().position(|i| i == id)?;
        let digit = g["codes"].as_str()?.as_bytes()[at] - b'0';
        answer["statuses"][usize::from(digit)].as_str().map(str::to_owned)
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn heatmap_groups_every_instance_by_app_and_cluster_with_its_status() {
    let fleet = Fleet::start(FleetConfig { instances: 12, ports: 1, per_namespace: 1_000 }, 0).await.unwrap();
    fleet.state.set_mode(5..6, Mode::Fail, 0);
    let server = status_support::fast_server().await;
    let client = server.client();
    let body = LAYOUT.http_body(&fleet.endpoints, 0..12);
    let r = client.post(server.url("/v1/instances")).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());

    let deadline = Instant::now() + Duration::from_secs(20);
    let answer = loop {
        let answer = server.get_json("/v1/health/heatmap").await;
        let settled = (0..12).all(|n| {
            let want = if n == 5 { "degraded" } else { "healthy" };
            status_of(&answer, &Layout::instance_id(n)).as_deref() == Some(want)
        });
        if settled {
            break answer;
        }
        assert!(Instant::now() < deadline, "heatmap never showed the checked fleet: {answer}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    let groups = answer["groups"].as_array().unwrap();
    let keys: Vec<(String, String)> = groups
        .iter()
        .map(|g| (g["app"].as_str().unwrap().to_owned(), g["cluster"].as_str().unwrap().to_owned()))
        .collect();
    let mut sorted = keys.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(keys, sorted, "one group per app and cluster, in order");
    for g in groups {
        let ids = g["ids"].as_array().unwrap();
        assert_eq!(ids.len(), g["codes"].as_str().unwrap().len(), "one digit per id: {g}");
        for id in ids {
            let n: usize = id.as_str().unwrap()[1..].parse().unwrap();
            assert_eq!(g["app"], LAYOUT.app(n), "{id} in its app's group");
            assert_eq!(g["cluster"], LAYOUT.cluster(n), "{id} in its cluster's group");
        }
    }
    assert_eq!(groups.iter().map(|g| g["ids"].as_array().unwrap().len()).sum::<usize>(), 12);

    let anonymous = reqwest::Client::new().get(server.url("/v1/health/heatmap")).send().await.unwrap();
    assert_eq!(anonymous.status(), 401, "the heatmap needs a token like every read");
}
