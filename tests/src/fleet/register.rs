//! Bulk registration bodies (`POST /v1/instances`) for simulated instances, shared by the
//! status tests and the benchmark.

use std::ops::Range;

use serde_json::{Value, json};

use super::Endpoints;

/// How simulated instances are grouped: `per_app` components make one app instance; app
/// instances are dealt round-robin to `apps` apps and `clusters` clusters.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    pub per_app: usize,
    pub apps: usize,
    pub clusters: usize,
}

impl Layout {
    pub fn instance_id(n: usize) -> String {
        format!("i{n}")
    }

    pub fn app_instance(&self, n: usize) -> usize {
        n / self.per_app.max(1)
    }

    pub fn app(&self, n: usize) -> String {
        format!("app{}", self.app_instance(n) % self.apps.max(1))
    }

    pub fn cluster(&self, n: usize) -> String {
        format!("c{}", self.app_instance(n) % self.clusters.max(1))
    }

    /// The body registering instances `range` with the `http` check on their health URLs.
    pub fn http_body(&self, fleet: &Endpoints, range: Range<usize>) -> Value {
        self.body(range, |n| json!({ "http": { "url": fleet.http_url(n) } }), "http")
    }

    /// The body registering instances `range` as Deployments of cluster `cluster`, judged
    /// by `status/k8s-deployment`.
    pub fn kube_body(&self, fleet: &Endpoints, range: Range<usize>, cluster: &str) -> Value {
        self.body(
            range,
            |n| {
                let (namespace, name) = fleet.deployment(n);
                json!({ "kubernetes": {
                    "cluster": cluster, "apiVersion": "apps/v1", "kind": "Deployment",
                    "namespace": namespace, "name": name,
                }})
            },
            "k8s-deployment",
        )
    }

    fn body(&self, range: Range<usize>, observe: impl Fn(usize) -> Value, plugin: &str) -> Value {
        let mut app_instances = Vec::new();
        let mut instances = Vec::new();
        for n in range {
            let ai = self.app_instance(n);
            if n == range_start_of(ai, self.per_app) || app_instances.is_empty() {
                app_instances.push(json!({
                    "id": format!("ai{ai}"), "app": self.app(n), "version": "1.4.2",
                    "cluster": self.cluster(n), "namespace": "default", "stage": "prod",
                }));
            }
            instances.push(json!({
                "id": Self::instance_id(n),
                "appInstance": format!("ai{ai}"),
                "component": format!("web{}", n % self.per_app.max(1)),
                "status": { "plugin": plugin, "parameters": {} },
                "observe": observe(n),
            }));
        }
        json!({ "appInstances": app_instances, "instances": instances })
    }
}

fn range_start_of(app_instance: usize, per_app: usize) -> usize {
    app_instance * per_app.max(1)
}
