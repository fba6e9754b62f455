//! The status scaler's Kubernetes path end to end: a cluster registered by kubeconfig, the
//! real `kube` client, the built-in `status/k8s-deployment` check. No kube-apiserver can
//! run on this machine, so the API server is the fleet simulator's Kubernetes-style
//! Deployment LIST endpoint (plain HTTP, bearer token), which answers as the API server
//! does for `GET /apis/apps/v1/namespaces/{ns}/deployments`.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use slipway_tests::fleet::{Fleet, FleetConfig, Layout, Mode};

mod status_support;

const LAYOUT: Layout = Layout { per_app: 5, apps: 2, clusters: 1 };

#[tokio::test(flavor = "multi_thread")]
async fn deployments_in_one_namespace_share_one_list_per_cycle() {
    let fleet = Fleet::start(FleetConfig { instances: 200, ports: 1, per_namespace: 100 }, 0).await.unwrap();
    let server = status_support::fast_server().await;
    let client = server.client();
    let post = |path: &str, body: Value| {
        let request = client.post(server.url(path)).json(&body);
        async move {
            let r = request.send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };

    // The kubeconfig is a secret: accepted, stored, never returned.
    let kubeconfig = fleet.endpoints.kubeconfig();
    let (code, body) = post("/v1/clusters", json!({ "name": "sim", "kubeconfig": kubeconfig })).await;
    assert_eq!(code, 201, "{body}");
    assert!(!body.to_string().contains("fleet-secret-token"), "{body}");
    let listed = client.get(server.url("/v1/clusters")).send().await.unwrap().text().await.unwrap();
    assert!(listed.contains("\"sim\"") && !listed.contains("fleet-secret-token"), "{listed}");
    let (code, body) =
        post("/v1/clusters", json!({ "name": "bad", "kubeconfig": "not: [a kubeconfig" })).await;
    assert_eq!(code, 422, "{body}");

    // 100 Deployments in ns-0 and 100 in ns-1.
    let (code, body) = post("/v1/instances", LAYOUT.kube_body(&fleet.endpoints, 0..200, "sim")).await;
    assert_eq!(code, 200, "{body}");
    let ids: Vec<String> = (0..200).map(Layout::instance_id).collect();
    let batch_get = || async {
        let (_, body) = post("/v1/health:batchGet", json!({ "ids": ids })).await;
        body["instances"].as_array().unwrap().clone()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !batch_get().await.iter().all(|v| v["status"] == "healthy") {
        assert!(Instant::now() < deadline, "{:#?}", batch_get().await);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // 200 instances checked several times each, but the simulator served LISTs, not GETs:
    // at most one per namespace per 2-second cache period (plus the first round).
    let lists = fleet.state.lists();
    assert!(lists < 40, "{lists} LISTs for 200 instances");
    assert_eq!(fleet.state.total_requests(), 0, "no per-instance requests");

    // A Deployment past its progress deadline is degraded with the reason of the rule.
    fleet.state.set_mode(7..8, Mode::Fail, 0);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, body) = post("/v1/health:batchGet", json!({ "ids": ["i7"] })).await;
        let v = &body["instances"][0];
        if v["status"] == "degraded" {
            assert!(v["reason"].as_str().unwrap().contains("progress"), "{v}");
            break;
        }
        assert!(Instant::now() < deadline, "{v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A cluster that is down: every instance of the namespace turns non-healthy with the
    // timeout, and the other namespace is unaffected.
    fleet.state.set_mode(100..101, Mode::Hang, 0);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let all = batch_get().await;
        let ns1_down = all[100..].iter().all(|v| v["status"] != "healthy");
        let ns0_up = all[..100].iter().enumerate().all(|(n, v)| n == 7 || v["status"] == "healthy");
        if ns1_down && ns0_up {
            assert!(all[150]["reason"].as_str().unwrap().contains("timeout"), "{}", all[150]);
            break;
        }
        assert!(Instant::now() < deadline, "{:#?}", &all[95..105]);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
