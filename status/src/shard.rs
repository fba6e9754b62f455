//! Which replica checks which instance: rendezvous hashing with bounded loads over the
//! live replicas.
//!
//! Instances are placed in groups: a Kubernetes instance by its (cluster, namespace, kind),
//! so one group's LIST is made by one replica, any other instance by itself. Each group
//! ranks the replicas by a hash of (replica, group) and goes to the first that has room
//! under a cap of (1 + [`SLACK`]) × the fair share. Sharding only by whole cluster, as some
//! controllers do, leaves shards as lopsided as the clusters are; the cap keeps every
//! replica near its share whatever the groups weigh, and rendezvous ranks move only the
//! groups whose first choice changed when a replica joins or leaves (about 1/N of them).
//!
//! Every replica computes the same assignment from the same inputs (the table every
//! replica holds and the live replicas from the heartbeats), so no assignment is stored.
//! The hash is spelled out here (FNV-1a, then SplitMix64) rather than taken from the
//! standard library, whose hasher may change between Rust releases: replicas built by
//! different compilers must still agree.

use std::collections::HashMap;
use std::sync::Arc;

use crate::schedule::mix;
use crate::table::{InstanceTable, Target};

/// How far above its fair share a replica may be loaded before groups spill over to
/// their next choice.
pub const SLACK: f64 = 0.05;

/// The unit of placement: all instances of one group are checked by one replica.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum GroupKey {
    /// (cluster, namespace, kind) of a Kubernetes object.
    Kube(Arc<str>, Arc<str>, Arc<str>),
    /// An HTTP or TCP instance, by its id.
    Instance(Arc<str>),
}

impl GroupKey {
    fn hash(&self) -> u64 {
        match self {
            GroupKey::Kube(cluster, namespace, kind) => {
                let h = fnv(fnv(fnv(FNV_OFFSET, b"kube\0"), cluster.as_bytes()), b"\0");
                fnv(fnv(fnv(h, namespace.as_bytes()), b"\0"), kind.as_bytes())
            }
            GroupKey::Instance(id) => fnv(fnv(FNV_OFFSET, b"instance\0"), id.as_bytes()),
        }
    }
}

/// A stable 64-bit key for an instance id, the same on every replica and build (see
/// [`crate::handoff`]).
pub fn id_key(id: &str) -> u64 {
    crate::schedule::mix(fnv(FNV_OFFSET, id.as_bytes()))
}

/// The group of one instance's target.
pub fn group_of(target: &Target, id: &Arc<str>) -> GroupKey {
    match target {
        Target::Kube { list, .. } => GroupKey::Kube(
            Arc::from(list.cluster.as_str()),
            Arc::from(list.namespace.as_str()),
            Arc::from(list.kind.as_str()),
        ),
        Target::Http { .. } | Target::Tcp { .. } => GroupKey::Instance(id.clone()),
    }
}

/// The owner (an index into `replicas`) of every group, given each group's weight in
/// instances. `replicas` must be in the same order on every replica (sorted ids).
pub fn assign(replicas: &[Arc<str>], groups: &HashMap<GroupKey, u32>) -> HashMap<GroupKey, usize> {
    if replicas.is_empty() {
        return HashMap::new();
    }
    let seeds: Vec<u64> = replicas.iter().map(|r| fnv(FNV_OFFSET, r.as_bytes())).collect();
    let total: u64 = groups.values().map(|&w| u64::from(w)).sum();
    let cap = ((total as f64 / replicas.len() as f64) * (1.0 + SLACK)).ceil() as u64;
    // Heavy groups first, so the cap moves the small ones, which spread evenly; ties in
    // hash order, which every replica sees alike.
    let mut order: Vec<(&GroupKey, u32, u64)> = groups.iter().map(|(k, &w)| (k, w, k.hash())).collect();
    order.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.2.cmp(&b.2)));
    let mut load = vec![0u64; replicas.len()];
    let mut owners = HashMap::with_capacity(order.len());
    let mut ranked: Vec<(u64, usize)> = Vec::with_capacity(replicas.len());
    for (key, weight, hash) in order {
        ranked.clear();
        ranked.extend(seeds.iter().enumerate().map(|(r, &seed)| (mix(seed ^ hash), r)));
        ranked.sort_unstable_by(|a, b| b.cmp(a));
        let w = u64::from(weight);
        let owner = ranked
            .iter()
            .map(|&(_, r)| r)
            .find(|&r| load[r] + w <= cap)
            .unwrap_or_else(|| (0..replicas.len()).min_by_key(|&r| (load[r], r)).expect("replicas"));
        load[owner] += w;
        owners.insert(key.clone(), owner);
    }
    owners
}

/// Each instance's group and the groups' weights, for [`assign`].
pub fn groups_of(table: &InstanceTable) -> (Vec<(u32, GroupKey)>, HashMap<GroupKey, u32>) {
    let mut weights: HashMap<GroupKey, u32> = HashMap::with_capacity(table.len());
    let members: Vec<(u32, GroupKey)> = table
        .iter()
        .map(|(index, i)| {
            let key = group_of(&i.target, &i.id);
            *weights.entry(key.clone()).or_default() += 1;
            (index, key)
        })
        .collect();
    (members, weights)
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replicas(n: usize) -> Vec<Arc<str>> {
        (0..n).map(|r| Arc::from(format!("replica-{r}"))).collect()
    }

    fn singletons(n: usize) -> HashMap<GroupKey, u32> {
        (0..n).map(|i| (GroupKey::Instance(Arc::from(format!("shop-{i}/web"))), 1)).collect()
    }

    fn loads(owners: &HashMap<GroupKey, usize>, groups: &HashMap<GroupKey, u32>, n: usize) -> Vec<u64> {
        let mut load = vec![0; n];
        owners.iter().for_each(|(k, &r)| load[r] += u64::from(groups[k]));
        load
    }

    fn max_deviation(load: &[u64]) -> f64 {
        let fair = load.iter().sum::<u64>() as f64 / load.len() as f64;
        load.iter().map(|&l| (l as f64 - fair).abs() / fair).fold(0.0, f64::max)
    }

    #[test]
    fn every_replica_carries_near_its_share() {
        let groups = singletons(30_000);
        let owners = assign(&replicas(3), &groups);
        let dev = max_deviation(&loads(&owners, &groups, 3));
        assert!(dev <= SLACK, "deviation {dev}");
    }

    #[test]
    fn lopsided_groups_are_capped() {
        // Kubernetes groups of very different sizes: one huge namespace and many small ones.
        let mut groups: HashMap<GroupKey, u32> = (0..200)
            .map(|g| {
                let key = GroupKey::Kube("eu-1".into(), format!("ns-{g}").into(), "Deployment".into());
                (key, 50)
            })
            .collect();
        groups.insert(GroupKey::Kube("eu-1".into(), "big".into(), "Deployment".into()), 4_000);
        groups.extend(singletons(20_000));
        let owners = assign(&replicas(3), &groups);
        let dev = max_deviation(&loads(&owners, &groups, 3));
        assert!(dev <= 0.10, "deviation {dev}");
    }

    #[test]
    fn a_joining_replica_moves_about_one_nth() {
        let groups = singletons(30_000);
        let before = assign(&replicas(3), &groups);
        let after = assign(&replicas(4), &groups);
        let moved = groups.keys().filter(|k| before[*k] != after[*k]).count();
        let fraction = moved as f64 / groups.len() as f64;
        assert!(fraction <= 1.2 / 4.0, "moved {fraction}");
        // Whatever moved, moved to the new replica.
        assert!(groups.keys().filter(|k| before[*k] != after[*k]).all(|k| after[k] == 3));
    }

    #[test]
    fn a_leaving_replica_moves_only_its_own() {
        let groups = singletons(10_000);
        let before = assign(&replicas(3), &groups);
        // replica-1 leaves: the survivors keep their positions in a new list.
        let survivors: Vec<Arc<str>> = vec!["replica-0".into(), "replica-2".into()];
        let after = assign(&survivors, &groups);
        let name = |r: usize, list: &[Arc<str>]| list[r].clone();
        let all = replicas(3);
        for k in groups.keys() {
            if &*name(before[k], &all) != "replica-1" {
                assert_eq!(name(before[k], &all), name(after[k], &survivors), "{k:?} moved");
            }
        }
    }

    #[test]
    fn kubernetes_instances_are_grouped_by_cluster_namespace_and_kind() {
        use crate::model::{ComponentInstanceSpec, KubeObjectRef, Observe, StatusCheckSpec};
        use crate::schedule::{CheckSchedule, ScheduleConfig};
        let mut table = InstanceTable::default();
        let schedule = CheckSchedule::new(&ScheduleConfig::default());
        let kube = |n: usize, namespace: &str, kind: &str| ComponentInstanceSpec {
            id: format!("{namespace}-{kind}-{n}"),
            app_instance: "a".into(),
            component: "web".into(),
            status: StatusCheckSpec { plugin: "k8s-deployment".into(), parameters: serde_json::json!({}) },
            observe: Observe::Kubernetes(KubeObjectRef {
                cluster: "eu-1".into(),
                api_version: "apps/v1".into(),
                kind: kind.into(),
                namespace: namespace.into(),
                name: format!("d{n}"),
            }),
        };
        for n in 0..50 {
            table.upsert_instance(&kube(n, "shop", "Deployment"), schedule, 0, false);
            table.upsert_instance(&kube(n, "blog", "Deployment"), schedule, 0, false);
            table.upsert_instance(&kube(n, "shop", "StatefulSet"), schedule, 0, false);
        }
        let (members, weights) = groups_of(&table);
        assert_eq!(members.len(), 150);
        let mut sizes: Vec<u32> = weights.values().copied().collect();
        sizes.sort();
        // One group per (cluster, namespace, kind): one replica makes each group's LIST.
        assert_eq!(sizes, vec![50, 50, 50]);
    }

    #[test]
    fn the_assignment_does_not_depend_on_map_order() {
        let groups = singletons(1_000);
        let mut entries: Vec<(GroupKey, u32)> = groups.iter().map(|(k, &w)| (k.clone(), w)).collect();
        entries.reverse();
        let copy: HashMap<GroupKey, u32> = entries.into_iter().collect();
        assert_eq!(assign(&replicas(3), &groups), assign(&replicas(3), &copy));
    }
}
