//! The Kubernetes fetcher: reads objects of registered clusters with `kube`, one LIST per
//! (cluster, namespace, kind) per cycle. The LIST is cached for `kube_list_ttl` with
//! `moka`, and concurrent requests for the same group wait for the one read in progress,
//! so 10,000 Deployments in one namespace cost one LIST, not 10,000 GETs. A failed LIST
//! (cluster down) is cached the same way: every instance of the group sees the error
//! without each one waiting for its own timeout.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use parking_lot::RwLock;
use slipway_plugins::WireValue;

use super::{FetchConfig, ObserveError, chain, io_kind};
use crate::table::KubeList;

/// Clients of the registered clusters by name. The kubeconfig itself is not kept here.
#[derive(Clone, Default)]
pub struct ClusterRegistry {
    clients: Arc<RwLock<HashMap<String, kube::Client>>>,
}

impl ClusterRegistry {
    /// Builds a client from a kubeconfig (its current context) and returns it with the API
    /// server URL. Errors never quote the kubeconfig, which holds credentials.
    pub async fn connect(name: &str, kubeconfig: &str) -> Result<(kube::Client, String), crate::Error> {
        let invalid = |message: String| crate::Error::InvalidCluster { name: name.to_owned(), message };
        let parsed =
            Kubeconfig::from_yaml(kubeconfig).map_err(|e| invalid(format!("not a kubeconfig: {e}")))?;
        let config = kube::Config::from_custom_kubeconfig(parsed, &KubeConfigOptions::default())
            .await
            .map_err(|e| invalid(e.to_string()))?;
        let server = config.cluster_url.to_string();
        let client = kube::Client::try_from(config).map_err(|e| invalid(e.to_string()))?;
        Ok((client, server))
    }

    pub fn insert(&self, name: &str, client: kube::Client) {
        self.clients.write().insert(name.to_owned(), client);
    }

    pub fn contains(&self, name: &str) -> bool {
        self.clients.read().contains_key(name)
    }

    fn get(&self, name: &str) -> Option<kube::Client> {
        self.clients.read().get(name).cloned()
    }
}

/// A LIST's objects by name, each encoded once for every check that reads it.
type Listed = Arc<Result<HashMap<String, WireValue>, ObserveError>>;

#[derive(Clone)]
pub struct KubeFetcher {
    clusters: ClusterRegistry,
    lists: moka::future::Cache<Arc<KubeList>, Listed>,
    timeout: Duration,
}

impl KubeFetcher {
    pub fn new(config: &FetchConfig, clusters: ClusterRegistry) -> Self {
        let lists =
            moka::future::Cache::builder().max_capacity(10_000).time_to_live(config.kube_list_ttl).build();
        Self { clusters, lists, timeout: config.timeout }
    }

    /// `{"object": <the object> | null, "error": null | {"kind", "message"}}`.
    pub async fn observe(&self, list: &Arc<KubeList>, name: &str) -> WireValue {
        let listed = self.lists.get_with_by_ref(list, self.list(list)).await;
        match &*listed {
            Ok(objects) => WireValue::object(|o| {
                o.null("error");
                match objects.get(name) {
                    Some(object) => o.wire("object", object),
                    None => o.null("object"),
                }
            }),
            Err(e) => e.observation("object"),
        }
    }

    async fn list(&self, list: &KubeList) -> Listed {
        metrics::counter!("slipway_status_kube_lists_total").increment(1);
        let Some(client) = self.clusters.get(&list.cluster) else {
            let message = format!("cluster {} is not registered", list.cluster);
            return Arc::new(Err(ObserveError::new("cluster", message)));
        };
        let (group, version) = match list.api_version.split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", list.api_version.as_str()),
        };
        let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, &list.kind));
        let api: Api<DynamicObject> = if list.namespace.is_empty() {
            Api::all_with(client, &resource)
        } else {
            Api::namespaced_with(client, &list.namespace, &resource)
        };
        let what = format!("LIST {} in {}/{}", list.kind, list.cluster, list.namespace);
        let result = match tokio::time::timeout(self.timeout, api.list(&ListParams::default())).await {
            Err(_) => {
                Err(ObserveError::new("timeout", format!("{what}: no answer within {:?}", self.timeout)))
            }
            Ok(Err(e)) => Err(ObserveError::new(kind_of(&e), format!("{what}: {}", chain(&e)))),
            Ok(Ok(objects)) => Ok(objects
                .items
                .into_iter()
                .filter_map(|mut o| {
                    // LIST items carry no type; a GET would, and scripts dispatch on `kind`.
                    o.types = Some(kube::api::TypeMeta {
                        api_version: list.api_version.clone(),
                        kind: list.kind.clone(),
                    });
                    let name = o.metadata.name.clone()?;
                    Some((name, WireValue::from_value(&serde_json::to_value(o).ok()?)))
                })
                .collect()),
        };
        Arc::new(result)
    }
}

fn kind_of(e: &kube::Error) -> &'static str {
    match e {
        kube::Error::Api(_) => "http",
        other => io_kind(other).unwrap_or("connect"),
    }
}
