//! The built-in Kubernetes checks on real object manifests (`fixtures/k8s/`), each with the
//! status the Argo CD health rules give it. Every fixture is judged twice: by its kind's
//! check and by the `k8s` dispatcher, which must agree.

mod support;

use serde_json::{Value, json};
use slipway_plugins::{CheckInput, HealthStatus, PluginHost};

use HealthStatus::{Degraded, Healthy, Missing, Progressing, Suspended, Unknown};

/// (fixture, check, expected status, a word the reason must hold)
const CASES: &[(&str, &str, HealthStatus, &str)] = &[
    ("deployment-healthy", "k8s-deployment", Healthy, "available"),
    ("deployment-mid-rollout", "k8s-deployment", Progressing, "1 out of 3 new replicas"),
    (
        "deployment-old-replicas-terminating",
        "k8s-deployment",
        Progressing,
        "old replicas are pending termination",
    ),
    (
        "deployment-updated-not-available",
        "k8s-deployment",
        Progressing,
        "1 of 3 updated replicas are available",
    ),
    ("deployment-progress-deadline-exceeded", "k8s-deployment", Degraded, "exceeded its progress deadline"),
    ("deployment-paused", "k8s-deployment", Suspended, "paused"),
    ("deployment-generation-not-observed", "k8s-deployment", Progressing, "generation"),
    ("deployment-deletion-pending", "k8s-deployment", Progressing, "Pending deletion"),
    ("pod-running-ready", "k8s-pod", Healthy, ""),
    ("pod-crashloopbackoff", "k8s-pod", Degraded, "back-off"),
    ("pod-imagepullbackoff", "k8s-pod", Degraded, "pulling image"),
    ("pod-pending-unschedulable", "k8s-pod", Progressing, ""),
    ("pod-failed-oomkilled", "k8s-pod", Degraded, "OOMKilled"),
    ("pod-running-not-ready-restarted", "k8s-pod", Degraded, ""),
    ("pod-running-restart-never", "k8s-pod", Progressing, ""),
    ("pod-succeeded", "k8s-pod", Healthy, ""),
    ("job-running", "k8s-job", Progressing, ""),
    ("job-complete", "k8s-job", Healthy, ""),
    ("job-failed", "k8s-job", Degraded, "backoff limit"),
    ("job-suspended", "k8s-job", Suspended, "suspended"),
    ("pvc-pending", "k8s-pvc", Progressing, "pending"),
    ("pvc-bound", "k8s-pvc", Healthy, "bound"),
    ("pvc-lost", "k8s-pvc", Degraded, "lost"),
    ("service-loadbalancer-without-ingress", "k8s-service", Progressing, "load balancer"),
    ("service-loadbalancer-with-ingress", "k8s-service", Healthy, ""),
    ("service-clusterip", "k8s-service", Healthy, "ClusterIP"),
    ("ingress-without-address", "k8s-ingress", Progressing, ""),
    ("ingress-with-address", "k8s-ingress", Healthy, ""),
    ("hpa-v2-healthy", "k8s-hpa", Healthy, "recommended size"),
    ("hpa-v2-scaling-active-progressing", "k8s-hpa", Progressing, "Waiting to Autoscale"),
    ("hpa-v2-failed-get-resource-metric", "k8s-hpa", Degraded, "unable to compute"),
    ("hpa-v1-conditions-annotation-healthy", "k8s-hpa", Healthy, "update the target scale"),
    ("hpa-v1-without-conditions", "k8s-hpa", Progressing, "Waiting to Autoscale"),
    ("apiservice-available", "k8s-apiservice", Healthy, "Passed"),
    ("apiservice-failed-discovery", "k8s-apiservice", Progressing, "FailedDiscoveryCheck"),
    ("statefulset-healthy", "k8s-statefulset", Healthy, "roll out complete"),
    ("statefulset-pods-not-ready", "k8s-statefulset", Progressing, "1 pods to be ready"),
    ("statefulset-rolling-update", "k8s-statefulset", Progressing, "rolling update"),
    ("statefulset-partitioned-complete", "k8s-statefulset", Healthy, "partitioned roll out complete"),
    ("daemonset-healthy", "k8s-daemonset", Healthy, ""),
    ("daemonset-rolling-out", "k8s-daemonset", Progressing, "2 out of 5"),
    ("replicaset-healthy", "k8s-replicaset", Healthy, ""),
    ("replicaset-replica-failure", "k8s-replicaset", Degraded, "exceeded quota"),
];

fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/k8s/{name}.json", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))).unwrap()
}

async fn judge(
    host: &PluginHost,
    check: &str,
    observations: Vec<(String, Value)>,
) -> Vec<(HealthStatus, String)> {
    let inputs: Vec<_> = observations
        .into_iter()
        .map(|(id, observation)| CheckInput {
            instance_id: id.into(),
            instance: json!({}).into(),
            observation: observation.into(),
            memo: true,
        })
        .collect();
    let verdicts = host.check_batch(check, &inputs).await.unwrap();
    verdicts
        .into_iter()
        .map(|v| v.map(|v| (v.status, v.reason.to_string())).unwrap_or_else(|e| panic!("{check}: {e}")))
        .collect()
}

#[tokio::test]
async fn every_fixture_gets_the_argo_cd_status() {
    let dir = tempfile::tempdir().unwrap();
    let host = support::open(dir.path()).await;
    let mut failures = Vec::new();
    for (name, check, expected, word) in CASES {
        let observation = json!({"object": fixture(name), "error": null});
        let own = judge(&host, check, vec![(name.to_string(), observation.clone())]).await.remove(0);
        let dispatched = judge(&host, "k8s", vec![(name.to_string(), observation)]).await.remove(0);
        if own.0 != *expected || !own.1.contains(word) {
            failures.push(format!(
                "{name} via {check}: expected {expected} with `{word}`, got {} `{}`",
                own.0, own.1
            ));
        }
        if dispatched != own {
            failures.push(format!("{name}: k8s dispatcher said {dispatched:?}, {check} said {own:?}"));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[tokio::test]
async fn missing_objects_unknown_kinds_and_failed_reads() {
    let dir = tempfile::tempdir().unwrap();
    let host = support::open(dir.path()).await;
    let cases = vec![
        ("gone".to_string(), json!({"object": null, "error": null})),
        ("configmap".to_string(), json!({"object": fixture("configmap-no-rule"), "error": null})),
        (
            "unreachable".to_string(),
            json!({"object": null, "error": {"kind": "timeout", "message": "no answer in 5s"}}),
        ),
    ];
    let verdicts = judge(&host, "k8s", cases.clone()).await;
    assert_eq!(verdicts[0].0, Missing);
    assert_eq!(verdicts[1].0, Unknown);
    assert!(verdicts[1].1.contains("no health rule for ConfigMap"), "{}", verdicts[1].1);
    assert_eq!(verdicts[2].0, Unknown);
    assert!(verdicts[2].1.contains("timeout"), "{}", verdicts[2].1);
    let pod_check_on_deployment = json!({"object": fixture("deployment-healthy"), "error": null});
    let wrong_kind = judge(&host, "k8s-pod", vec![("d".into(), pod_check_on_deployment)]).await;
    assert_eq!(wrong_kind[0].0, Unknown);
    assert!(wrong_kind[0].1.contains("expected a Pod"), "{}", wrong_kind[0].1);
    assert_eq!(judge(&host, "k8s-deployment", vec![cases[0].clone()]).await[0].0, Missing);
}
