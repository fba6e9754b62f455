//! The built-in `status/http` and `status/tcp` checks on the observations the status
//! scaler's fetchers produce: a target that answers is judged by its answer; a target that
//! could not be observed (timeout, refused or reset connection, DNS, TLS, garbage) is
//! `unknown` with that reason.

mod support;

use serde_json::{Value, json};
use slipway_plugins::{HealthStatus, PluginHost, ScriptKind};

async fn judge(host: &PluginHost, name: &str, params: Value, observation: Value) -> (HealthStatus, String) {
    let out = host
        .call(ScriptKind::Status, name, None, "check", vec![json!({ "params": params }), observation])
        .await
        .unwrap();
    let status = out.result["status"].as_str().unwrap().parse().unwrap();
    (status, out.result["reason"].as_str().unwrap().to_owned())
}

fn failed(kind: &str, message: &str, shape: &str) -> Value {
    json!({ shape: null, "error": { "kind": kind, "message": message } })
}

#[tokio::test]
async fn http_answers_are_judged_and_unobservable_targets_are_unknown() {
    let dir = tempfile::tempdir().unwrap();
    let host = support::open(dir.path()).await;
    let (status, reason) = judge(&host, "http", json!({}), support::http_observation(200, 3)).await;
    assert_eq!((status, reason.as_str()), (HealthStatus::Healthy, "HTTP 200 in 3 ms"));
    let (status, reason) = judge(&host, "http", json!({}), support::http_observation(503, 3)).await;
    assert_eq!(status, HealthStatus::Degraded, "an answer that says unhealthy: {reason}");
    let slow = judge(&host, "http", json!({ "slow_ms": 100 }), support::http_observation(200, 250)).await;
    assert_eq!(slow.0, HealthStatus::Degraded, "{}", slow.1);
    for kind in ["timeout", "refused", "reset", "dns", "tls", "connect", "http"] {
        let message = format!("GET http://10.0.0.1:80/health: {kind} happened");
        let (status, reason) = judge(&host, "http", json!({}), failed(kind, &message, "http")).await;
        assert_eq!(status, HealthStatus::Unknown, "{kind}: {reason}");
        assert_eq!(reason, format!("{kind}: {message}"));
    }
}

#[tokio::test]
async fn tcp_connections_are_judged_and_unobservable_targets_are_unknown() {
    let dir = tempfile::tempdir().unwrap();
    let host = support::open(dir.path()).await;
    let ok = json!({ "tcp": { "connected": true, "latency_ms": 2 }, "error": null });
    assert_eq!(judge(&host, "tcp", json!({}), ok).await, (HealthStatus::Healthy, "connected in 2 ms".into()));
    let slow = json!({ "tcp": { "connected": true, "latency_ms": 90 }, "error": null });
    assert_eq!(judge(&host, "tcp", json!({ "slow_ms": 50 }), slow).await.0, HealthStatus::Degraded);
    for kind in ["timeout", "refused", "reset"] {
        let observation = json!({
            "tcp": { "connected": false, "latency_ms": 1 },
            "error": { "kind": kind, "message": "10.0.0.1:5432: no" },
        });
        let (status, reason) = judge(&host, "tcp", json!({}), observation).await;
        assert_eq!(
            (status, reason.as_str()),
            (HealthStatus::Unknown, format!("{kind}: 10.0.0.1:5432: no").as_str())
        );
    }
    let (status, _) = judge(&host, "tcp", json!({}), failed("timeout", "x", "tcp")).await;
    assert_eq!(status, HealthStatus::Unknown);
}
