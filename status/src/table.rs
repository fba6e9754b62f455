//! The in-memory instance table: compact per-instance state for 100,000 instances, with
//! repeated strings (apps, components, plugins, hosts, parameters) interned once.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde_json::Value;
use slipway_plugins::WireValue;

use crate::health::Health;
use crate::model::{AppInstanceSpec, ComponentInstanceSpec, KubeObjectRef, Observe};
use crate::schedule::CheckSchedule;

/// The reason of an instance before its first result.
pub const NOT_CHECKED: &str = "not checked yet";
/// `due_tick` of an instance waiting in the budget queue.
pub const QUEUED: u64 = u64::MAX;
/// `due_tick` of an instance whose check is running.
pub const IN_FLIGHT: u64 = u64::MAX - 1;
/// `due_tick` of an instance another replica checks.
pub const UNOWNED: u64 = u64::MAX - 2;
/// Distinct reasons shared at once. Reasons repeat across a fleet ("HTTP 200 in 1 ms") but
/// some carry an address or a message, so the set is emptied when it reaches this size
/// instead of growing with every one ever seen.
const SHARED_REASONS: usize = 4_096;

/// What to fetch, shared cheaply with the fetch task (reference counts, no copies).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Http { url: Arc<str>, host: u32 },
    Tcp { address: Arc<str>, host: u32 },
    Kube { list: Arc<KubeList>, name: Arc<str>, cluster: u32 },
}

impl Target {
    /// Whether two observations of an unchanged target can be equal, which is when the
    /// plugin host's unchanged-observation shortcut can pay off: an HTTP observation
    /// carries the answer's latency and `Date` header, so it never repeats.
    pub fn observation_repeats(&self) -> bool {
        !matches!(self, Target::Http { .. })
    }
}

/// The objects one Kubernetes LIST returns: everything of one kind in one namespace of
/// one cluster. Instances observing the same `KubeList` share one read per cycle.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KubeList {
    pub cluster: String,
    pub api_version: String,
    pub kind: String,
    pub namespace: String,
}

#[derive(Debug)]
pub struct Instance {
    pub id: Arc<str>,
    pub app_instance: Arc<str>,
    pub component: Arc<str>,
    pub plugin: Arc<str>,
    /// The check's parameters, encoded once for every check (and shared when equal).
    pub params: WireValue,
    pub target: Target,
    pub health: Health,
    /// False until the first check result (the stored health is then a placeholder).
    pub observed: bool,
    /// Shared so reads copy a pointer, not the text, while they hold the scheduler's lock.
    pub reason: Arc<str>,
    /// Wall-clock ms of the last status change and of the last check.
    pub since_ms: i64,
    pub checked_ms: i64,
    pub schedule: CheckSchedule,
    /// The wheel tick this instance is filed under, or [`QUEUED`] / [`IN_FLIGHT`] / [`UNOWNED`].
    pub due_tick: u64,
    /// Bumped on every update so results of checks started before it are ignored.
    pub generation: u32,
    pub checks: u32,
    /// Whether this replica checks it (see [`crate::shard`]); on a single node, always.
    pub owned: bool,
}

#[derive(Debug)]
pub struct AppEntry {
    pub spec: AppInstanceSpec,
    pub app: Arc<str>,
    pub cluster: Option<Arc<str>>,
    pub components: Vec<u32>,
}

#[derive(Debug, Default)]
pub struct InstanceTable {
    slots: Vec<Option<Instance>>,
    free: Vec<u32>,
    /// foldhash: a batchGet looks up 10,000 short ids under the scheduler's lock, and
    /// SipHash was a tenth of its time.
    ids: HashMap<Arc<str>, u32, foldhash::fast::RandomState>,
    pub apps: HashMap<Arc<str>, AppEntry>,
    strings: HashSet<Arc<str>>,
    params: HashMap<String, WireValue>,
    hosts: HashMap<Arc<str>, u32>,
    lists: HashSet<Arc<KubeList>>,
    reasons: HashSet<Arc<str>>,
    generation: u32,
}

impl InstanceTable {
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    pub fn index_of(&self, id: &str) -> Option<u32> {
        self.ids.get(id).copied()
    }

    pub fn get(&self, index: u32) -> Option<&Instance> {
        self.slots.get(index as usize).and_then(Option::as_ref)
    }

    pub fn get_mut(&mut self, index: u32) -> Option<&mut Instance> {
        self.slots.get_mut(index as usize).and_then(Option::as_mut)
    }

    pub fn by_id(&self, id: &str) -> Option<&Instance> {
        self.index_of(id).and_then(|i| self.get(i))
    }

    pub fn iter(&self) -> impl Iterator<Item = (u32, &Instance)> {
        self.slots.iter().enumerate().filter_map(|(i, s)| s.as_ref().map(|s| (i as u32, s)))
    }

    pub fn app_of(&self, instance: &Instance) -> Option<&AppEntry> {
        self.apps.get(&instance.app_instance)
    }

    pub fn intern(&mut self, s: &str) -> Arc<str> {
        if let Some(existing) = self.strings.get(s) {
            return existing.clone();
        }
        let arc: Arc<str> = Arc::from(s);
        self.strings.insert(arc.clone());
        arc
    }

    /// The reason text as a string shared with the other instances that have it now.
    pub fn shared_reason(&mut self, reason: &str) -> Arc<str> {
        if let Some(existing) = self.reasons.get(reason) {
            return existing.clone();
        }
        if self.reasons.len() >= SHARED_REASONS {
            self.reasons.clear();
        }
        let arc: Arc<str> = Arc::from(reason);
        self.reasons.insert(arc.clone());
        arc
    }

    /// Host id (`host:port`) for per-host budgets; ids are stable for the process.
    fn host_id(&mut self, authority: &str) -> u32 {
        if let Some(&id) = self.hosts.get(authority) {
            return id;
        }
        let id = self.hosts.len() as u32;
        let key = self.intern(authority);
        self.hosts.insert(key, id);
        id
    }

    fn intern_params(&mut self, params: &Value) -> WireValue {
        let key = params.to_string();
        self.params.entry(key).or_insert_with(|| WireValue::from_value(params)).clone()
    }

    fn target(&mut self, observe: &Observe) -> Target {
        match observe {
            Observe::Http { url } => {
                let host = self.host_id(authority_of(url));
                Target::Http { url: Arc::from(url.as_str()), host }
            }
            Observe::Tcp { address } => {
                Target::Tcp { address: Arc::from(address.as_str()), host: self.host_id(address) }
            }
            Observe::Kubernetes(KubeObjectRef { cluster, api_version, kind, namespace, name }) => {
                let list = KubeList {
                    cluster: cluster.clone(),
                    api_version: api_version.clone(),
                    kind: kind.clone(),
                    namespace: namespace.clone(),
                };
                let list = match self.lists.get(&list) {
                    Some(l) => l.clone(),
                    None => {
                        let l = Arc::new(list);
                        self.lists.insert(l.clone());
                        l
                    }
                };
                Target::Kube {
                    list,
                    name: Arc::from(name.as_str()),
                    cluster: self.host_id(&format!("k8s:{cluster}")),
                }
            }
        }
    }

    pub fn upsert_app(&mut self, spec: &AppInstanceSpec) {
        let id = self.intern(&spec.id);
        let app = self.intern(&spec.app);
        let cluster = spec.cluster.as_deref().map(|c| self.intern(c));
        let components = self.apps.remove(&id).map(|a| a.components).unwrap_or_default();
        self.apps.insert(id, AppEntry { spec: spec.clone(), app, cluster, components });
    }

    /// Inserts or updates a component instance; an update keeps the last health (and
    /// whether it is `owned` here) but counts as a change for the schedule. Returns its index.
    pub fn upsert_instance(
        &mut self,
        spec: &ComponentInstanceSpec,
        schedule: CheckSchedule,
        now_ms: i64,
        owned: bool,
    ) -> u32 {
        self.generation = self.generation.wrapping_add(1);
        let generation = self.generation;
        let app_instance = self.intern(&spec.app_instance);
        let component = self.intern(&spec.component);
        let plugin = self.intern(&spec.status.plugin);
        let params = self.intern_params(&spec.status.parameters);
        let target = self.target(&spec.observe);
        if let Some(index) = self.index_of(&spec.id) {
            let previous_app = self.get(index).map(|i| i.app_instance.clone());
            if let Some(prev) = previous_app.filter(|a| *a != app_instance) {
                self.detach(&prev, index);
            }
            let inst = self.get_mut(index).expect("indexed instance exists");
            inst.app_instance = app_instance.clone();
            inst.component = component;
            inst.plugin = plugin;
            inst.params = params;
            inst.target = target;
            inst.schedule = schedule;
            inst.generation = generation;
            self.attach(&app_instance, index);
            return index;
        }
        // Ids and URLs are unique per instance: shared with the id map, never interned.
        let id: Arc<str> = Arc::from(spec.id.as_str());
        let instance = Instance {
            id: id.clone(),
            app_instance: app_instance.clone(),
            component,
            plugin,
            params,
            target,
            health: Health::Unknown,
            observed: false,
            reason: self.intern(NOT_CHECKED),
            since_ms: now_ms,
            checked_ms: 0,
            schedule,
            due_tick: if owned { QUEUED } else { UNOWNED },
            generation,
            checks: 0,
            owned,
        };
        let index = match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = Some(instance);
                i
            }
            None => {
                self.slots.push(Some(instance));
                (self.slots.len() - 1) as u32
            }
        };
        self.ids.insert(id, index);
        self.attach(&app_instance, index);
        index
    }

    fn attach(&mut self, app_instance: &Arc<str>, index: u32) {
        if let Some(app) = self.apps.get_mut(app_instance)
            && !app.components.contains(&index)
        {
            app.components.push(index);
        }
    }

    fn detach(&mut self, app_instance: &Arc<str>, index: u32) {
        let emptied = match self.apps.get_mut(app_instance) {
            Some(app) => {
                app.components.retain(|&c| c != index);
                app.components.is_empty()
            }
            None => false,
        };
        if emptied {
            self.apps.remove(app_instance);
        }
    }

    /// Removes a component instance; its app instance goes too when it was the last one.
    /// Pending wheel entries are skipped lazily (the slot is empty or reused).
    pub fn remove(&mut self, id: &str) -> Option<Instance> {
        let index = self.ids.remove(id)?;
        let instance = self.slots[index as usize].take()?;
        self.detach(&instance.app_instance, index);
        self.free.push(index);
        Some(instance)
    }
}

/// `host:port` of an http(s) URL, for the per-host budget.
pub fn authority_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split(['/', '?', '#']).next().unwrap_or(rest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::StatusCheckSpec;
    use crate::schedule::ScheduleConfig;

    fn app(id: &str) -> AppInstanceSpec {
        AppInstanceSpec {
            id: id.into(),
            app: "shop".into(),
            version: "1.0.0".into(),
            unit: String::new(),
            cluster: Some("eu-1".into()),
            namespace: "shop".into(),
            stage: "prod".into(),
            labels: Default::default(),
        }
    }

    fn instance(id: &str, app: &str, url: &str) -> ComponentInstanceSpec {
        ComponentInstanceSpec {
            id: id.into(),
            app_instance: app.into(),
            component: "api".into(),
            status: StatusCheckSpec { plugin: "http".into(), parameters: serde_json::json!({}) },
            observe: Observe::Http { url: url.into() },
        }
    }

    #[test]
    fn strings_params_and_hosts_are_shared() {
        let mut t = InstanceTable::default();
        let s = CheckSchedule::new(&ScheduleConfig::default());
        t.upsert_app(&app("a1"));
        let i = t.upsert_instance(&instance("x", "a1", "http://h:1/x"), s, 0, true);
        let j = t.upsert_instance(&instance("y", "a1", "http://h:1/y"), s, 0, true);
        let (x, y) = (t.get(i).unwrap(), t.get(j).unwrap());
        assert!(Arc::ptr_eq(&x.plugin, &y.plugin));
        assert!(std::ptr::eq(x.params.as_bytes(), y.params.as_bytes()));
        let (Target::Http { host: hx, .. }, Target::Http { host: hy, .. }) = (&x.target, &y.target) else {
            panic!("http targets")
        };
        assert_eq!(hx, hy);
        assert_eq!(t.apps["a1"].components, vec![i, j]);
    }

    #[test]
    fn reasons_are_shared_and_the_set_stays_bounded() {
        let mut t = InstanceTable::default();
        assert!(Arc::ptr_eq(&t.shared_reason("HTTP 200 in 1 ms"), &t.shared_reason("HTTP 200 in 1 ms")));
        for n in 0..SHARED_REASONS * 2 {
            t.shared_reason(&format!("timeout after {n} ms"));
        }
        assert!(t.reasons.len() <= SHARED_REASONS);
        assert_eq!(&*t.shared_reason("HTTP 200 in 1 ms"), "HTTP 200 in 1 ms");
    }

    #[test]
    fn removing_the_last_component_removes_the_app_and_reuses_the_slot() {
        let mut t = InstanceTable::default();
        let s = CheckSchedule::new(&ScheduleConfig::default());
        t.upsert_app(&app("a1"));
        let i = t.upsert_instance(&instance("x", "a1", "http://h:1/x"), s, 0, true);
        assert!(t.remove("x").is_some());
        assert!(t.apps.is_empty());
        assert_eq!(t.len(), 0);
        t.upsert_app(&app("a2"));
        assert_eq!(t.upsert_instance(&instance("z", "a2", "http://h:2/"), s, 0, true), i);
    }

    #[test]
    fn authority_is_host_and_port() {
        assert_eq!(authority_of("http://127.0.0.1:8080/i/1/health?x=1"), "127.0.0.1:8080");
        assert_eq!(authority_of("https://example.com"), "example.com");
    }
}
