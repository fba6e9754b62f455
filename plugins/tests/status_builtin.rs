//! The built-in `status/http` and `status/tcp` checks on the observations the status
//! scaler's fetchers produce: a target that answers is judged by its answer; a target that
//! could not be observed (timeout, refused or reset connection, DNS, TLS, garbage) is
//! `unknown` with that reason.

mod support;

use serde_json::{Value, json};
use slipway_plugins::{
    CheckInput, CheckVerdict, HealthStatus, HostConfig, PluginHost, ScriptKind, WireValue,
};

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

/// The expected statuses and the JSON field rules of `status/http`, with the reasons it gives.
#[tokio::test]
async fn http_expected_statuses_and_json_field_rules() {
    let dir = tempfile::tempdir().unwrap();
    let host = support::open(dir.path()).await;
    let with_json = |status: u16, body: Value| json!({"http": {"status": status, "headers": {}, "body": body.to_string(), "json": body, "latency_ms": 4}, "error": null});
    let cases = [
        (
            json!({"expect_status": [204, 200]}),
            with_json(200, json!({})),
            HealthStatus::Healthy,
            "HTTP 200 in 4 ms",
        ),
        (
            json!({"expect_status": [204]}),
            with_json(200, json!({})),
            HealthStatus::Degraded,
            "HTTP 200 is not an expected status",
        ),
        (
            json!({"expect_status": ["5xx"]}),
            with_json(503, json!({})),
            HealthStatus::Healthy,
            "HTTP 503 in 4 ms",
        ),
        (
            json!({"expect_status": ["4xx", 301]}),
            with_json(302, json!({})),
            HealthStatus::Degraded,
            "HTTP 302 is not an expected status",
        ),
        (
            json!({"expect_status": []}),
            with_json(404, json!({})),
            HealthStatus::Degraded,
            "HTTP 404 is not an expected status",
        ),
        (
            json!({"json": [{"path": "status", "equals": "ok"}]}),
            with_json(200, json!({"status": "ok"})),
            HealthStatus::Healthy,
            "HTTP 200 in 4 ms",
        ),
        (
            json!({"json": [{"path": "status", "equals": "ok"}]}),
            with_json(200, json!({"status": "down"})),
            HealthStatus::Degraded,
            "field status is \"down\", expected \"ok\"",
        ),
        (
            json!({"json": [{"path": "db.up", "in": [true, "yes"]}]}),
            with_json(200, json!({"db": {"up": "yes"}})),
            HealthStatus::Healthy,
            "HTTP 200 in 4 ms",
        ),
        (
            json!({"json": [{"path": "db.up", "in": [true]}]}),
            with_json(200, json!({"db": {"up": false}})),
            HealthStatus::Degraded,
            "field db.up is false, expected one of [true]",
        ),
        (
            json!({"json": [{"path": "db.up.x", "equals": 1}]}),
            with_json(200, json!({"db": {"up": 1}})),
            HealthStatus::Degraded,
            "field db.up.x is missing",
        ),
        (
            json!({"json": [{"path": "a.b", "exists": true}]}),
            with_json(200, json!({"a": {"b": null}})),
            HealthStatus::Healthy,
            "HTTP 200 in 4 ms",
        ),
        (
            json!({"json": [{"path": "a.b", "exists": true}]}),
            with_json(200, json!({"a": {}})),
            HealthStatus::Degraded,
            "field a.b is missing",
        ),
        (
            json!({"json": [{"path": "debug", "exists": false}]}),
            with_json(200, json!({"debug": 1})),
            HealthStatus::Degraded,
            "field debug is present",
        ),
        (
            json!({"json": [{"path": "list.1", "equals": "b"}]}),
            with_json(200, json!({"list": ["a", "b"]})),
            HealthStatus::Healthy,
            "HTTP 200 in 4 ms",
        ),
        (
            json!({"json": [{"path": "v", "exists": true}, {"path": "w", "equals": 2}]}),
            with_json(200, json!({"v": 1, "w": 3})),
            HealthStatus::Degraded,
            "field w is 3, expected 2",
        ),
        // Observations of 1 KiB or more reach the script as lazy objects: the same rules.
        (
            json!({"json": [{"path": "db.up", "equals": true}, {"path": "db.pad.x", "exists": false}]}),
            with_json(200, json!({"db": {"up": true, "pad": "p".repeat(1200)}})),
            HealthStatus::Healthy,
            "HTTP 200 in 4 ms",
        ),
        (
            json!({"json": [{"path": "db.up", "in": [true]}]}),
            with_json(200, json!({"db": {"up": null, "pad": "p".repeat(1200)}})),
            HealthStatus::Degraded,
            "field db.up is null, expected one of [true]",
        ),
        (
            json!({"json": [{"path": "db.list.1.name", "exists": true}]}),
            with_json(200, json!({"db": {"list": [{"name": "a"}], "pad": "p".repeat(1200)}})),
            HealthStatus::Degraded,
            "field db.list.1.name is missing",
        ),
        (
            json!({"json": [{"path": "v", "equals": 1}]}),
            support::http_observation(200, 4)
                .as_object()
                .map(|o| {
                    let mut o = o.clone();
                    o["http"]["json"] = Value::Null;
                    Value::Object(o)
                })
                .unwrap(),
            HealthStatus::Degraded,
            "the body is not JSON but JSON field rules are set",
        ),
    ];
    for (params, observation, status, reason) in cases {
        let got = judge(&host, "http", params.clone(), observation).await;
        assert_eq!(got, (status, reason.to_owned()), "{params}");
    }
}

/// `status/http` keeps each rule path it has split for the next calls, at most 1,024 of
/// them: checks whose rules name ever new paths neither grow the script's heap without end
/// nor lose their verdicts when the kept paths are let go (after thousands of paths, a path
/// seen first is split again and judged as before).
#[tokio::test]
async fn http_rule_paths_kept_between_calls_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let host = support::open_with(dir.path(), HostConfig { workers: 1, ..support::config() }).await;
    let observation = WireValue::from_value(
        &json!({"http": {"status": 200, "headers": {}, "body": "", "json": {"s": "down"}, "latency_ms": 4}, "error": null}),
    );
    let judge_paths = |paths: std::ops::Range<usize>| {
        let inputs: Vec<_> = paths
            .map(|i| CheckInput {
                instance_id: format!("web-{i}").into(),
                instance: json!({"params": {"json": [{"path": format!("k{i}.x"), "exists": false}, {"path": "s", "equals": "ok"}]}}).into(),
                observation: observation.clone(),
                memo: false,
            })
            .collect();
        let host = &host;
        async move { host.check_batch("http", &inputs).await.unwrap() }
    };
    let heap = || async { host.worker_stats().await.unwrap().heap_bytes };
    let check = |verdicts: Vec<Result<CheckVerdict, slipway_plugins::Error>>| {
        for verdict in verdicts {
            let verdict = verdict.unwrap();
            assert_eq!(
                (verdict.status, &*verdict.reason),
                (HealthStatus::Degraded, "field s is \"down\", expected \"ok\"")
            );
        }
    };
    check(judge_paths(0..1_500).await);
    let filled = heap().await;
    check(judge_paths(1_500..9_500).await);
    let grown = heap().await - filled;
    // Kept without a bound, 8,000 more paths take about 1.5 MB here; bounded, the kept
    // paths at any time are at most 1,024 (about 200 KB).
    assert!(grown < 512 * 1024, "the script's heap grew by {grown} bytes over 8,000 new rule paths");
    check(judge_paths(0..10).await);
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
