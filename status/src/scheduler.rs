//! The scheduler: the instance table, the timer wheel, the budget and the correlators
//! behind one lock. Pure state transitions over an injected clock (`now_ms` arguments and
//! the budget's `governor` clock), driven by [`crate::runner`] in production and by tests
//! directly.

use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use slipway_plugins::WireValue;

use crate::budget::{Budget, BudgetConfig, Deferred, DueCheck, Priority, TargetKey};
use crate::correlate::Correlator;
use crate::events::{Transition, TransitionEvent};
use crate::handoff::{self, Handoff};
use crate::health::Health;
use crate::model::{AppInstanceSpec, ComponentInstanceSpec};
use crate::peers::Judged;
use crate::schedule::{CheckSchedule, ScheduleConfig, first_check_offset, mix};
use crate::shard::{assign, groups_of};
use crate::table::{IN_FLIGHT, InstanceTable, QUEUED, Target, UNOWNED};
use crate::wheel::TimerWheel;

/// Wheel resolution: due times are kept to a tenth of a second.
const TICK_MS: u64 = 100;

/// Instances taken over that fell due while nobody checked them are checked within this
/// much, most overdue first: soon, without a burst in one tick.
pub const OVERDUE_SPREAD_MS: u64 = 1_000;

/// One check handed to the fetchers and then to the status plugin.
#[derive(Debug, Clone)]
pub struct Job {
    pub index: u32,
    pub generation: u32,
    pub instance_id: Arc<str>,
    pub target: Target,
    pub plugin: Arc<str>,
    /// The `instance` argument of the script's `check(instance, observation, ctx)`:
    /// `{"id", "component", "params"}`.
    pub instance: WireValue,
}

/// The judged outcome of one job.
#[derive(Debug, Clone)]
pub struct Verdict {
    pub index: u32,
    pub generation: u32,
    pub health: Health,
    pub reason: String,
}

pub struct Scheduler<C: Clock = DefaultClock> {
    pub config: ScheduleConfig,
    pub table: InstanceTable,
    wheel: TimerWheel,
    budget: Budget<C>,
    apps: Correlator<Arc<str>>,
    clusters: Correlator<Arc<str>>,
    /// This replica's id when the fleet is sharded over several; `None` checks everything.
    replica: Option<Arc<str>>,
    /// The live replicas of the last [`Scheduler::reshard`].
    replicas: Vec<Arc<str>>,
    owned: usize,
}

/// What a change of the live replicas did here.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reshard {
    pub acquired: usize,
    pub released: usize,
    pub owned: usize,
}

impl Scheduler<DefaultClock> {
    pub fn new(config: ScheduleConfig, budget: BudgetConfig, now_ms: u64) -> Self {
        Self::with_clock(config, budget, now_ms, DefaultClock::default())
    }
}

impl<C: Clock + Clone> Scheduler<C> {
    pub fn with_clock(config: ScheduleConfig, budget: BudgetConfig, now_ms: u64, clock: C) -> Self {
        let window = config.sibling_window.as_millis() as u64;
        let span = config.ceiling.as_millis() as u64 * (100 + u64::from(config.jitter_pct)) / 100;
        Self {
            config,
            table: InstanceTable::default(),
            wheel: TimerWheel::new(TICK_MS, (span / TICK_MS + 2) as usize, now_ms),
            budget: Budget::with_clock(budget, clock),
            apps: Correlator::new(config.sibling_threshold, window),
            clusters: Correlator::new(config.sibling_threshold, window),
            replica: None,
            replicas: Vec::new(),
            owned: 0,
        }
    }

    /// Makes this scheduler one shard of several: from now on it checks only what
    /// [`Scheduler::reshard`] gives it, and nothing before the first call.
    pub fn shard_as(&mut self, replica: &str) {
        self.replica = Some(Arc::from(replica));
        let indices: Vec<u32> = self.table.iter().map(|(index, _)| index).collect();
        indices.into_iter().for_each(|index| self.release(index));
    }

    pub fn is_sharded(&self) -> bool {
        self.replica.is_some()
    }

    /// Takes the instances the live `replicas` (sorted ids) leave to this one and lets go
    /// of the rest. Instances taken on get their first check spread over the tight
    /// interval from now (or when due, if sooner), except those their last owner's
    /// `handed` schedule says fell due while nobody checked them: they go first, in the
    /// order they fell due, spread over [`OVERDUE_SPREAD_MS`]. Either way the handed
    /// backoff carries on after that first check, so a takeover does not restart calm
    /// instances at the tight interval. A replica missing from the list (its heartbeat
    /// lapsed) owns nothing. Nothing to do when the replicas are the same as last time
    /// (instances added or removed since were placed by [`Scheduler::rebalance`]), or on a
    /// single node.
    pub fn reshard(&mut self, replicas: &[Arc<str>], handed: &Handoff, now_ms: u64) -> Reshard {
        if !self.needs_placing(replicas) {
            return Reshard { owned: self.owned, ..Reshard::default() };
        }
        self.place(replicas, handed, now_ms)
    }

    /// Whether [`Scheduler::reshard`] over `replicas` would place anything.
    pub fn needs_placing(&self, replicas: &[Arc<str>]) -> bool {
        self.replica.is_none() || replicas != self.replicas.as_slice()
    }

    /// Places again over the same replicas, after instances were added or removed.
    pub fn rebalance(&mut self, now_ms: u64) -> Reshard {
        let replicas = self.replicas.clone();
        self.place(&replicas, &Handoff::default(), now_ms)
    }

    /// Writes the schedule of every instance this replica checks (see [`crate::handoff`]).
    pub fn handoff(&self, now_ms: u64) -> Vec<u8> {
        let owned: Vec<_> = self.table.iter().filter(|(_, i)| i.owned).collect();
        handoff::write(owned.into_iter().map(|(_, i)| {
            let due_in = match i.due_tick {
                QUEUED | IN_FLIGHT | UNOWNED => 0,
                tick => (tick * TICK_MS) as i64 - now_ms as i64,
            };
            let (interval, streak) = i.schedule.backoff();
            (&*i.id, due_in, interval, streak)
        }))
    }

    fn place(&mut self, replicas: &[Arc<str>], handed: &Handoff, now_ms: u64) -> Reshard {
        let Some(me) = self.replica.clone() else {
            return Reshard { owned: self.table.len(), ..Reshard::default() };
        };
        if replicas != self.replicas {
            self.replicas = replicas.to_vec();
        }
        let mine = replicas.iter().position(|r| *r == me);
        let (members, weights) = groups_of(&self.table);
        let owners = if mine.is_some() { assign(replicas, &weights) } else { Default::default() };
        let mut outcome = Reshard::default();
        let mut overdue = Vec::new();
        for (index, key) in members {
            let owned = mine.is_some() && owners.get(&key).copied() == mine;
            let was = self.table.get(index).is_some_and(|i| i.owned);
            match (was, owned) {
                (false, true) => {
                    let config = &self.config;
                    let Some(i) = self.table.get_mut(index) else { continue };
                    i.owned = true;
                    i.due_tick = QUEUED;
                    let handed = handed.get(&i.id);
                    if let Some(h) = handed {
                        i.schedule = CheckSchedule::resumed(config, h.interval_ms, h.healthy_streak);
                    }
                    match handed {
                        Some(h) if h.due_ms <= now_ms => overdue.push((h.due_ms, index)),
                        _ => {
                            let offset = first_check_offset(config.tight, mix(u64::from(index) ^ now_ms));
                            let due = handed.map_or(u64::MAX, |h| h.due_ms);
                            self.refile(index, (now_ms + offset).min(due));
                        }
                    }
                    outcome.acquired += 1;
                }
                (true, false) => {
                    self.release(index);
                    outcome.released += 1;
                }
                _ => {}
            }
            outcome.owned += usize::from(owned);
        }
        overdue.sort_unstable();
        let count = overdue.len() as u64;
        for (k, (_, index)) in overdue.into_iter().enumerate() {
            self.refile(index, now_ms + k as u64 * OVERDUE_SPREAD_MS / count);
        }
        self.owned = outcome.owned;
        outcome
    }

    /// A transition as streamed: with its app and cluster.
    pub fn event(&self, transition: Transition) -> TransitionEvent {
        let app = self.table.apps.get(&*transition.app_instance);
        TransitionEvent {
            app: app.map_or_else(|| Arc::from(""), |a| a.app.clone()),
            cluster: app.and_then(|a| a.cluster.clone()),
            transition,
        }
    }

    /// Instances this replica checks.
    pub fn owned(&self) -> usize {
        if self.replica.is_none() { self.table.len() } else { self.owned }
    }

    /// Lets go of every instance: this replica can no longer prove it holds its share.
    /// It owns nothing until the next [`Scheduler::reshard`].
    pub fn release_all(&mut self) -> usize {
        self.replicas.clear();
        self.owned = 0;
        let owned: Vec<u32> = self.table.iter().filter(|(_, i)| i.owned).map(|(index, _)| index).collect();
        owned.iter().for_each(|&index| self.release(index));
        owned.len()
    }

    fn release(&mut self, index: u32) {
        if let Some(i) = self.table.get_mut(index) {
            i.owned = false;
            // A check in flight is dropped when it returns; wheel entries are skipped.
            i.due_tick = UNOWNED;
        }
    }

    /// The status another replica judged for an instance it checks. Returns the
    /// transition when it changed here, and feeds the correlators, so an anomaly seen
    /// anywhere brings forward the siblings this replica checks.
    pub fn apply_foreign(&mut self, judged: Judged, now_ms: u64) -> Option<Transition> {
        let (id, to, reason, at_ms) = judged;
        let index = self.table.index_of(&id)?;
        let i = self.table.get_mut(index)?;
        if i.owned || (i.observed && (i.since_ms > at_ms || (i.since_ms == at_ms && i.health == to))) {
            return None; // this replica's own judgement, older than what it has, or known
        }
        let from = i.health;
        let turned_anomalous = !from.is_anomalous() && to.is_anomalous();
        if *i.reason != *reason {
            i.reason = Arc::from(reason);
        }
        i.checked_ms = i.checked_ms.max(at_ms);
        i.observed = true;
        if from == to {
            return None;
        }
        i.health = to;
        i.since_ms = at_ms;
        let transition = Transition::of(i, from, at_ms);
        if turned_anomalous {
            self.correlate(&transition.app_instance, now_ms);
        }
        Some(transition)
    }

    pub fn upsert_app(&mut self, spec: &AppInstanceSpec) {
        self.table.upsert_app(spec);
    }

    /// Registers or updates an instance; its first check falls somewhere in the tight
    /// window from `now_ms`, so a bulk registration or a restart is spread out.
    pub fn upsert_instance(&mut self, spec: &ComponentInstanceSpec, now_ms: u64, wall_ms: i64) -> u32 {
        let owned = self.replica.is_none();
        let index = self.table.upsert_instance(spec, CheckSchedule::new(&self.config), wall_ms, owned);
        let offset = first_check_offset(self.config.tight, mix(u64::from(index) ^ wall_ms as u64));
        self.file(index, now_ms + offset);
        index
    }

    /// Puts back the last known health of a restored instance.
    pub fn restore_health(&mut self, index: u32, health: Health, reason: &str, since_ms: i64) {
        let reason = self.table.shared_reason(reason);
        if let Some(i) = self.table.get_mut(index) {
            i.health = health;
            i.reason = reason;
            i.since_ms = since_ms;
            i.observed = true;
        }
    }

    pub fn remove(&mut self, id: &str) -> bool {
        self.table.remove(id).is_some()
    }

    fn file(&mut self, index: u32, due_ms: u64) {
        let Some(instance) = self.table.get(index) else { return };
        if instance.due_tick == IN_FLIGHT || !instance.owned {
            return; // its result reschedules it, or another replica checks it
        }
        self.refile(index, due_ms);
    }

    /// A deploy event or trigger for an app instance (or one component instance): its
    /// components are checked now and watched tightly until confirmed again.
    pub fn change_event(&mut self, id: &str, now_ms: u64) -> usize {
        let indices: Vec<u32> = match self.table.apps.get(id) {
            Some(app) => app.components.clone(),
            None => self.table.index_of(id).into_iter().collect(),
        };
        for &index in &indices {
            if let Some(i) = self.table.get_mut(index) {
                i.schedule.on_change_event(&self.config);
            }
            self.file(index, now_ms);
        }
        indices.len()
    }

    /// Moves due instances into the budget queue and returns up to `max` jobs the budget
    /// allows now, with what it had to defer.
    pub fn take_due(&mut self, now_ms: u64, max: usize) -> (Vec<Job>, Deferred) {
        let Self { wheel, table, budget, config, .. } = self;
        wheel.advance(now_ms, |index, tick| {
            let Some(i) = table.get_mut(index) else { return };
            if i.due_tick != tick || !i.owned {
                return; // rescheduled or handed over since: a stale entry
            }
            i.due_tick = QUEUED;
            let urgent = !i.observed || i.health.is_anomalous() || i.schedule.is_settling(config);
            let target = match i.target {
                Target::Http { host, .. } | Target::Tcp { host, .. } => TargetKey::Host(host),
                Target::Kube { cluster, .. } => TargetKey::Cluster(cluster),
            };
            budget.push(
                DueCheck { instance: index, target },
                if urgent { Priority::Urgent } else { Priority::Routine },
            );
        });
        let mut taken = Vec::new();
        let deferred = self.budget.take(max, &mut taken);
        let jobs = taken
            .into_iter()
            .filter_map(|due| {
                let i = self.table.get_mut(due.instance)?;
                if i.due_tick != QUEUED {
                    return None; // removed and the slot reused meanwhile
                }
                i.due_tick = IN_FLIGHT;
                Some(Job {
                    index: due.instance,
                    generation: i.generation,
                    instance_id: i.id.clone(),
                    target: i.target.clone(),
                    plugin: i.plugin.clone(),
                    instance: WireValue::object(|o| {
                        o.str("id", &i.id);
                        o.str("component", &i.component);
                        o.wire("params", &i.params);
                    }),
                })
            })
            .collect();
        (jobs, deferred)
    }

    /// Applies judged results: updates health, reschedules, brings siblings forward when
    /// anomalies cluster, and returns the status transitions.
    pub fn apply(&mut self, verdicts: Vec<Verdict>, now_ms: u64, wall_ms: i64) -> Vec<Transition> {
        let mut transitions = Vec::new();
        for v in verdicts {
            let Some((transition, turned_anomalous)) = self.apply_one(v, now_ms, wall_ms) else { continue };
            if turned_anomalous {
                self.correlate(&transition.app_instance, now_ms);
            }
            transitions.push(transition);
        }
        transitions
    }

    /// Counts a new anomaly in `app_instance`'s app and cluster, and brings the siblings
    /// forward when it is one too many.
    fn correlate(&mut self, app_instance: &str, now_ms: u64) {
        let app = self.table.apps.get(app_instance);
        let (app, cluster) = (app.map(|a| a.app.clone()), app.and_then(|a| a.cluster.clone()));
        if let Some(app) = app.filter(|a| self.apps.record_anomaly(a, now_ms)) {
            self.bring_forward(now_ms, |e| e.app == app);
        }
        if let Some(cluster) = cluster.filter(|c| self.clusters.record_anomaly(c, now_ms)) {
            self.bring_forward(now_ms, |e| e.cluster.as_ref() == Some(&cluster));
        }
    }

    /// One result; `Some` with the transition (and whether a healthy instance turned
    /// anomalous) when the status changed.
    fn apply_one(&mut self, v: Verdict, now_ms: u64, wall_ms: i64) -> Option<(Transition, bool)> {
        let config = self.config;
        let reason = self.table.shared_reason(&v.reason);
        let i = self.table.get_mut(v.index)?;
        if i.due_tick != IN_FLIGHT || !i.owned {
            return None; // handed over while in flight: the new owner judges it
        }
        if i.generation != v.generation {
            // Updated while in flight: check the new definition soon instead.
            i.due_tick = QUEUED;
            self.refile(v.index, now_ms);
            return None;
        }
        let previous = i.observed.then_some(i.health);
        i.checks = i.checks.wrapping_add(1);
        let seed = mix(u64::from(v.index) << 32 | u64::from(i.checks));
        let decision = i.schedule.on_result(&config, previous, v.health, seed);
        let old = i.health;
        i.observed = true;
        i.checked_ms = wall_ms;
        i.reason = reason;
        let transition = (old != v.health).then(|| {
            i.health = v.health;
            i.since_ms = wall_ms;
            (
                Transition::of(i, old, wall_ms),
                previous.is_some_and(|p| !p.is_anomalous()) && v.health.is_anomalous(),
            )
        });
        self.refile(v.index, now_ms + decision.delay_ms);
        transition
    }

    fn refile(&mut self, index: u32, due_ms: u64) {
        let tick = self.wheel.insert(due_ms, index);
        if let Some(i) = self.table.get_mut(index) {
            i.due_tick = tick;
        }
    }

    /// Checks the healthy siblings in the matching apps within the tight window from now
    /// (spread over it), unless they are due sooner anyway.
    fn bring_forward(&mut self, now_ms: u64, matches: impl Fn(&crate::table::AppEntry) -> bool) -> usize {
        let tight = self.config.tight;
        let horizon = self.wheel.tick_of(now_ms + tight.as_millis() as u64);
        let siblings: Vec<u32> = self
            .table
            .apps
            .values()
            .filter(|a| matches(a))
            .flat_map(|a| a.components.iter().copied())
            .filter(|&index| {
                self.table.get(index).is_some_and(|i| {
                    i.owned
                        && !i.health.is_anomalous()
                        && i.due_tick != QUEUED
                        && i.due_tick != IN_FLIGHT
                        && i.due_tick > horizon
                })
            })
            .collect();
        for &index in &siblings {
            self.file(index, now_ms + first_check_offset(tight, mix(u64::from(index) ^ now_ms)));
        }
        metrics::counter!("slipway_status_sibling_checks_brought_forward_total")
            .increment(siblings.len() as u64);
        siblings.len()
    }

    /// Drops correlator groups with nothing recent.
    pub fn prune(&mut self, now_ms: u64) {
        self.apps.prune(now_ms);
        self.clusters.prune(now_ms);
    }

    pub fn waiting(&self) -> (usize, usize) {
        self.budget.waiting()
    }

    pub fn tight(&self) -> Duration {
        self.config.tight
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use governor::clock::FakeRelativeClock;

    use serde_json::json;

    use super::*;
    use crate::model::{Observe, StatusCheckSpec};

    struct Sim {
        s: Scheduler<FakeRelativeClock>,
        clock: FakeRelativeClock,
        now: u64,
        /// (time, index) of every check run.
        checks: Vec<(u64, u32)>,
    }

    fn sim(budget: BudgetConfig, apps: &[(&str, &str, usize)]) -> Sim {
        let clock = FakeRelativeClock::default();
        let mut s = Scheduler::with_clock(ScheduleConfig::default(), budget, 0, clock.clone());
        for &(app, cluster, n) in apps {
            for k in 0..n {
                let id = format!("{app}-{k}");
                s.upsert_app(&AppInstanceSpec {
                    id: id.clone(),
                    app: app.into(),
                    version: "1".into(),
                    unit: String::new(),
                    cluster: Some(cluster.into()),
                    namespace: "ns".into(),
                    stage: "prod".into(),
                    labels: Default::default(),
                });
                let spec = ComponentInstanceSpec {
                    id: format!("{id}/web"),
                    app_instance: id,
                    component: "web".into(),
                    status: StatusCheckSpec { plugin: "http".into(), parameters: json!({}) },
                    observe: Observe::Http { url: format!("http://{app}-{k}.{cluster}:80/health") },
                };
                s.upsert_instance(&spec, 0, 0);
            }
        }
        Sim { s, clock, now: 0, checks: Vec::new() }
    }

    impl Sim {
        /// Steps the clock in 100 ms ticks until `until`, judging every due check.
        fn run(&mut self, until: u64, judge: impl Fn(&str) -> Health) {
            while self.now < until {
                self.now += TICK_MS;
                self.clock.advance(Duration::from_millis(TICK_MS));
                let (jobs, _) = self.s.take_due(self.now, usize::MAX);
                let verdicts = jobs
                    .iter()
                    .map(|j| {
                        self.checks.push((self.now, j.index));
                        let health = judge(&j.instance_id);
                        Verdict {
                            index: j.index,
                            generation: j.generation,
                            health,
                            reason: health.to_string(),
                        }
                    })
                    .collect();
                self.s.apply(verdicts, self.now, self.now as i64);
            }
        }

        fn checked_between(&self, from: u64, to: u64) -> HashSet<u32> {
            self.checks.iter().filter(|(t, _)| (from..to).contains(t)).map(|&(_, i)| i).collect()
        }

        fn index(&self, id: &str) -> u32 {
            self.s.table.index_of(id).unwrap()
        }
    }

    #[test]
    fn registration_is_spread_over_the_tight_window() {
        let mut sim = sim(BudgetConfig::default(), &[("a", "c", 1_000)]);
        sim.run(2_500, |_| Health::Healthy);
        let first_half = sim.checks.len();
        assert!((350..650).contains(&first_half), "{first_half}");
        sim.run(5_000, |_| Health::Healthy);
        assert_eq!(sim.checked_between(0, 5_001).len(), 1_000);
    }

    #[test]
    fn correlated_anomalies_bring_healthy_siblings_forward() {
        let mut sim = sim(BudgetConfig::default(), &[("shop", "eu-1", 30), ("blog", "us-1", 30)]);
        sim.run(700_000, |_| Health::Healthy);
        let faulty: HashSet<String> = (0..10).map(|k| format!("shop-{k}/web")).collect();
        let start = sim.now;
        sim.run(start + 400_000, |id| if faulty.contains(id) { Health::Degraded } else { Health::Healthy });
        let mut detected: Vec<u64> = faulty
            .iter()
            .map(|id| {
                let index = sim.index(id);
                sim.checks.iter().find(|&&(t, i)| t > start && i == index).unwrap().0
            })
            .collect();
        detected.sort();
        // The correlator fires at the first detection that is the third within 60 s.
        let fired = detected.windows(3).find(|w| w[2] - w[0] < 60_000).expect("three within a minute")[2];
        let window = sim.checked_between(fired, fired + 5_100);
        let healthy_shop: Vec<u32> = (10..30).map(|k| sim.index(&format!("shop-{k}/web"))).collect();
        assert!(
            healthy_shop.iter().all(|i| window.contains(i)),
            "every healthy sibling is checked within 5 s"
        );
        let blog = (0..30).filter(|k| window.contains(&sim.index(&format!("blog-{k}/web")))).count();
        assert!(blog < 10, "the other cluster keeps its schedule ({blog} of 30 checked)");
    }

    #[test]
    fn isolated_anomaly_does_not_move_siblings() {
        let mut sim = sim(BudgetConfig::default(), &[("shop", "eu-1", 30)]);
        sim.run(700_000, |_| Health::Healthy);
        let start = sim.now;
        sim.run(start + 400_000, |id| if id == "shop-0/web" { Health::Degraded } else { Health::Healthy });
        let index = sim.index("shop-0/web");
        let detected = sim.checks.iter().find(|&&(t, i)| t > start && i == index).unwrap().0;
        let window = sim.checked_between(detected + 1, detected + 5_100);
        assert!(window.len() < 6, "{} siblings checked", window.len());
        // The faulty one is re-checked at the tight interval.
        let rechecks: Vec<u64> =
            sim.checks.iter().filter(|&&(t, i)| t >= detected && i == index).map(|&(t, _)| t).collect();
        assert!(rechecks.windows(2).all(|w| w[1] - w[0] <= 5_000), "{rechecks:?}");
    }

    #[test]
    fn deploy_event_checks_now_then_tightly() {
        let mut sim = sim(BudgetConfig::default(), &[("shop", "eu-1", 3)]);
        sim.run(700_000, |_| Health::Healthy);
        let index = sim.index("shop-1/web");
        assert_eq!(sim.s.change_event("shop-1", sim.now), 1);
        let at = sim.now;
        sim.run(at + 30_000, |_| Health::Healthy);
        let times: Vec<u64> =
            sim.checks.iter().filter(|&&(t, i)| t > at && i == index).map(|&(t, _)| t).collect();
        assert_eq!(times[0], at + TICK_MS, "checked on the next tick");
        assert!(times[1] - times[0] <= 5_000 && times[2] - times[1] <= 5_000, "{times:?}");
        assert!(times.len() >= 4, "backs off only after confirmation: {times:?}");
    }

    #[test]
    fn anomalous_instances_get_the_budget_first() {
        let budget = BudgetConfig { global_per_s: 10, per_host_per_s: 1_000, per_cluster_per_s: 1_000 };
        let mut sim = sim(budget, &[("shop", "eu-1", 200)]);
        sim.run(200_000, |id| if id == "shop-7/web" { Health::Degraded } else { Health::Healthy });
        let index = sim.index("shop-7/web");
        // 200 new instances want 40 checks/s, all urgent while they settle, and the budget
        // allows 10: the first minute is a queue in due order. Once the healthy ones are
        // confirmed they are routine, and the anomalous one is checked every tight interval.
        let times: Vec<u64> =
            sim.checks.iter().filter(|&&(t, i)| i == index && t > 60_000).map(|&(t, _)| t).collect();
        assert!(times.windows(2).all(|w| w[1] - w[0] <= 5_100), "{times:?}");
        // Nobody is dropped: every instance was checked several times.
        let mut per: HashMap<u32, usize> = HashMap::new();
        sim.checks.iter().for_each(|&(_, i)| *per.entry(i).or_default() += 1);
        assert_eq!(per.len(), 200);
        assert!(per.values().all(|&n| n >= 2));
    }

    fn replicas(ids: &[&str]) -> Vec<Arc<str>> {
        ids.iter().map(|&r| Arc::from(r)).collect()
    }

    #[test]
    fn shards_split_the_fleet_and_a_survivor_takes_over_within_the_tight_interval() {
        let (mut a, mut b) = (
            sim(BudgetConfig::default(), &[("shop", "eu-1", 1_000)]),
            sim(BudgetConfig::default(), &[("shop", "eu-1", 1_000)]),
        );
        a.s.shard_as("a");
        b.s.shard_as("b");
        // Sharded and not yet placed: nothing is checked.
        a.run(6_000, |_| Health::Healthy);
        assert!(a.checks.is_empty());
        let both = replicas(&["a", "b"]);
        let (ra, rb) =
            (a.s.reshard(&both, &Handoff::default(), a.now), b.s.reshard(&both, &Handoff::default(), b.now));
        assert_eq!(ra.owned + rb.owned, 1_000);
        assert!(ra.owned.abs_diff(rb.owned) < 100, "{ra:?} {rb:?}");
        let start = a.now;
        a.run(start + 60_000, |_| Health::Healthy);
        b.run(start + 60_000, |_| Health::Healthy);
        let (ca, cb) = (a.checked_between(start, a.now + 1), b.checked_between(start, b.now + 1));
        assert_eq!(ca.len(), ra.owned);
        assert_eq!(cb.len(), rb.owned);
        assert!(ca.is_disjoint(&cb), "an instance checked by both replicas");
        // `a` leaves: `b` checks every instance within the tight interval, `a`'s first.
        let left = b.now;
        let rb = b.s.reshard(&replicas(&["b"]), &Handoff::default(), left);
        assert_eq!((rb.acquired, rb.owned), (ra.owned, 1_000));
        b.run(left + 5_100, |_| Health::Healthy);
        assert!(ca.is_subset(&b.checked_between(left, left + 5_101)));
    }

    #[test]
    fn a_survivor_checks_the_most_overdue_first_and_keeps_the_handed_backoff() {
        let (mut a, mut b) = (
            sim(BudgetConfig::default(), &[("shop", "eu-1", 1_000)]),
            sim(BudgetConfig::default(), &[("shop", "eu-1", 1_000)]),
        );
        a.s.shard_as("a");
        b.s.shard_as("b");
        let both = replicas(&["a", "b"]);
        let ra = a.s.reshard(&both, &Handoff::default(), a.now);
        b.s.reshard(&both, &Handoff::default(), b.now);
        a.run(900_000, |_| Health::Healthy);
        b.run(900_000, |_| Health::Healthy);
        // `a` dies right after a snapshot; `b` takes over when the lease has run out.
        let snapshot = a.s.handoff(a.now);
        let (as_left, _) = Handoff::read(&[(0, snapshot.clone())], a.now);
        let (died, lease) = (a.now, 15_000);
        b.run(died + lease, |_| Health::Healthy);
        let taken = b.now;
        let (handed, errors) = Handoff::read(&[(lease as i64, snapshot)], taken);
        assert!(errors.is_empty() && handed.len() == ra.owned, "{errors:?}");
        assert_eq!(b.s.reshard(&replicas(&["b"]), &handed, taken).acquired, ra.owned);
        b.run(taken + 800_000, |_| Health::Healthy);

        let mut overdue = Vec::new();
        for n in 0..1_000 {
            let id = format!("shop-{n}/web");
            let Some(left) = as_left.get(&id) else { continue };
            let index = b.index(&id);
            let checks: Vec<u64> =
                b.checks.iter().filter(|&&(t, i)| i == index && t >= taken).map(|&(t, _)| t).collect();
            let first = checks[0];
            if left.due_ms <= taken {
                assert!(
                    first <= taken + OVERDUE_SPREAD_MS + TICK_MS,
                    "{id}: overdue, first check at {first}"
                );
                overdue.push((left.due_ms, first));
            } else {
                assert!(
                    first <= (taken + 5_000 + TICK_MS).min(left.due_ms),
                    "{id}: due {} checked {first}",
                    left.due_ms
                );
            }
            // The backoff carries on: a calm instance is not re-checked at the tight interval.
            assert!(checks[1] - first >= 300_000, "{id}: {checks:?}");
        }
        assert!(!overdue.is_empty());
        overdue.sort_unstable();
        assert!(overdue.windows(2).all(|w| w[0].1 <= w[1].1), "the most overdue go first");
    }

    #[test]
    fn a_replica_without_its_lease_checks_nothing_and_drops_results_in_flight() {
        let mut a = sim(BudgetConfig::default(), &[("shop", "eu-1", 100)]);
        a.s.shard_as("a");
        a.s.reshard(&replicas(&["a"]), &Handoff::default(), 0);
        let (jobs, _) = a.s.take_due(5_000, usize::MAX);
        assert_eq!(jobs.len(), 100);
        assert_eq!(a.s.release_all(), 100);
        let verdicts = jobs
            .iter()
            .map(|j| Verdict {
                index: j.index,
                generation: j.generation,
                health: Health::Degraded,
                reason: "x".into(),
            })
            .collect();
        assert!(
            a.s.apply(verdicts, 5_100, 5_100).is_empty(),
            "a result after the release counts for nothing"
        );
        a.now = 5_100;
        a.run(20_000, |_| Health::Healthy);
        assert!(a.checks.is_empty());
        // Placed again: checked again, in flight or not before.
        a.s.reshard(&replicas(&["a"]), &Handoff::default(), a.now);
        a.run(a.now + 5_100, |_| Health::Healthy);
        assert_eq!(a.checked_between(0, a.now + 1).len(), 100);
    }

    #[test]
    fn foreign_statuses_update_the_table_and_bring_siblings_forward() {
        let mut a = sim(BudgetConfig::default(), &[("shop", "eu-1", 30)]);
        a.s.shard_as("a");
        // `a` owns the odd instances of the app (as if by placement), the rest are another's.
        a.s.reshard(&replicas(&["a"]), &Handoff::default(), 0);
        a.run(700_000, |_| Health::Healthy);
        let others: Vec<u32> = (0..30).step_by(2).map(|k| a.index(&format!("shop-{k}/web"))).collect();
        others.iter().for_each(|&i| a.s.release(i));
        let at = a.now;
        for k in [0, 2, 4] {
            let t =
                a.s.apply_foreign((format!("shop-{k}/web"), Health::Degraded, "503".into(), at as i64), at);
            assert_eq!(t.map(|t| (t.from, t.to)), Some((Health::Healthy, Health::Degraded)));
        }
        assert_eq!(a.s.table.by_id("shop-0/web").unwrap().health, Health::Degraded);
        // An older report does not undo a newer one.
        assert!(
            a.s.apply_foreign(("shop-0/web".into(), Health::Healthy, "ok".into(), at as i64 - 1), at)
                .is_none()
        );
        a.run(at + 5_100, |_| Health::Healthy);
        let mine: HashSet<u32> = (1..30).step_by(2).map(|k| a.index(&format!("shop-{k}/web"))).collect();
        assert_eq!(
            a.checked_between(at, at + 5_101),
            mine,
            "the third anomaly anywhere brings this replica's siblings forward"
        );
    }
}
