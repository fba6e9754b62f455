//! The simulator's Kubernetes view: instance `n` is Deployment `app-{n}` with three
//! replicas in namespace `ns-{n / per_namespace}`, listed like the API server lists them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{FleetState, Mode};

pub fn placement(per_namespace: usize, n: usize) -> (String, String) {
    (format!("ns-{}", n / per_namespace.max(1)), format!("app-{n}"))
}

/// `GET /apis/apps/v1/namespaces/{ns}/deployments`. A namespace holding a hanging instance
/// never answers (a cluster that is down); a slow one answers after its delay.
pub async fn list_deployments(State(state): State<Arc<FleetState>>, Path(ns): Path<String>) -> Response {
    let lists = state.lists.fetch_add(1, Ordering::Relaxed);
    let per = state.config.per_namespace.max(1);
    let Some(k) = ns.strip_prefix("ns-").and_then(|k| k.parse::<usize>().ok()) else {
        return (StatusCode::OK, axum::Json(list(&ns, Vec::new()))).into_response();
    };
    let range = (k * per).min(state.config.instances)..((k + 1) * per).min(state.config.instances);
    let modes: Vec<(usize, Mode)> = range.map(|n| (n, state.mode(n))).collect();
    if modes.iter().any(|&(_, m)| m == Mode::Hang) {
        std::future::pending::<()>().await;
    }
    let delay = modes
        .iter()
        .filter(|&&(_, m)| m == Mode::Slow)
        .map(|&(n, _)| state.delays_ms[n].load(Ordering::Relaxed))
        .max();
    if let Some(ms) = delay {
        tokio::time::sleep(Duration::from_millis(ms.into())).await;
    }
    let items = modes
        .into_iter()
        .map(|(n, mode)| {
            let failing = mode == Mode::Fail || mode == Mode::Flap && lists % 2 == 0;
            deployment(&ns, n, failing)
        })
        .collect();
    axum::Json(list(&ns, items)).into_response()
}

fn list(ns: &str, items: Vec<Value>) -> Value {
    json!({
        "kind": "DeploymentList",
        "apiVersion": "apps/v1",
        "metadata": { "resourceVersion": "1000", "selfLink": format!("/apis/apps/v1/namespaces/{ns}/deployments") },
        "items": items,
    })
}

/// A Deployment as the API server lists it (items carry no apiVersion/kind).
fn deployment(ns: &str, n: usize, failing: bool) -> Value {
    let name = format!("app-{n}");
    let (ready, conditions) = if failing {
        (
            1,
            json!([
                { "type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable",
                  "message": "Deployment does not have minimum availability.",
                  "lastUpdateTime": "2026-11-23T10:00:00Z", "lastTransitionTime": "2026-11-23T10:00:00Z" },
                { "type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
                  "message": format!("ReplicaSet \"{name}-7d4b9c8f6\" has timed out progressing."),
                  "lastUpdateTime": "2026-11-23T10:10:00Z", "lastTransitionTime": "2026-11-23T10:10:00Z" }
            ]),
        )
    } else {
        (
            3,
            json!([
                { "type": "Available", "status": "True", "reason": "MinimumReplicasAvailable",
                  "message": "Deployment has minimum availability.",
                  "lastUpdateTime": "2026-11-23T09:00:00Z", "lastTransitionTime": "2026-11-23T09:00:00Z" },
                { "type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable",
                  "message": format!("ReplicaSet \"{name}-7d4b9c8f6\" has successfully progressed."),
                  "lastUpdateTime": "2026-11-23T09:00:00Z", "lastTransitionTime": "2026-11-23T08:59:00Z" }
            ]),
        )
    };
    let mut status = json!({
        "observedGeneration": 4, "replicas": 3, "updatedReplicas": 3, "readyReplicas": ready,
        "availableReplicas": ready, "conditions": conditions,
    });
    if ready < 3 {
        status["unavailableReplicas"] = json!(3 - ready);
    }
    json!({
        "metadata": {
            "name": name, "namespace": ns, "uid": format!("00000000-0000-4000-8000-{n:012}"),
            "resourceVersion": format!("{}", 1000 + n), "generation": 4,
            "creationTimestamp": "2026-11-01T08:00:00Z",
            "labels": { "app": name, "app.kubernetes.io/managed-by": "slipway" },
            "annotations": { "deployment.kubernetes.io/revision": "4" }
        },
        "spec": {
            "replicas": 3,
            "selector": { "matchLabels": { "app": name } },
            "template": {
                "metadata": { "labels": { "app": name } },
                "spec": { "containers": [{
                    "name": "api", "image": format!("registry.local/{name}:1.4.2"),
                    "ports": [{ "containerPort": 8080, "protocol": "TCP" }],
                    "resources": { "requests": { "cpu": "100m", "memory": "128Mi" } },
                    "readinessProbe": { "httpGet": { "path": "/health", "port": 8080 }, "periodSeconds": 5 }
                }]}
            },
            "strategy": { "type": "RollingUpdate", "rollingUpdate": { "maxUnavailable": "25%", "maxSurge": "25%" } },
            "revisionHistoryLimit": 10, "progressDeadlineSeconds": 600
        },
        "status": status,
    })
}

/// A kubeconfig for the simulator as a plain-HTTP API server with a bearer token.
pub fn kubeconfig(addr: SocketAddr) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: fleet\n  cluster:\n    server: http://{addr}\ncontexts:\n- name: fleet\n  context:\n    cluster: fleet\n    user: fleet\ncurrent-context: fleet\nusers:\n- name: fleet\n  user:\n    token: fleet-secret-token\n"
    )
}
