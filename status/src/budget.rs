//! The check budget: a global ceiling on checks per second and per-target limits (per host,
//! per cluster), with a two-class queue of due checks in front of them.
//!
//! When demand exceeds the budget, *urgent* checks (anomalous, settling after a change, or
//! flapping instances) go first; the overflow waits in due order and is taken first on the
//! next round, so it is deferred fairly and never dropped.

use std::collections::VecDeque;
use std::num::NonZeroU32;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::HashMapStateStore;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct BudgetConfig {
    /// Checks per second across all instances.
    pub global_per_s: u32,
    /// Checks per second against one HTTP/TCP host (`host:port`).
    pub per_host_per_s: u32,
    /// Checks per second of objects in one Kubernetes cluster.
    pub per_cluster_per_s: u32,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        Self { global_per_s: 25_000, per_host_per_s: 5_000, per_cluster_per_s: 5_000 }
    }
}

/// Which limiter a due check is counted against besides the global one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TargetKey {
    Host(u32),
    Cluster(u32),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DueCheck {
    pub instance: u32,
    pub target: TargetKey,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    Urgent,
    Routine,
}

/// What one round of [`Budget::take`] left waiting, for the saturation metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Deferred {
    /// Left waiting because the global budget (or this round's share) ran out.
    pub by_global: usize,
    /// Held back by a per-host or per-cluster limit.
    pub by_target: usize,
}

type Direct<C> = RateLimiter<NotKeyed, InMemoryState, C, NoOpMiddleware<<C as Clock>::Instant>>;
type Keyed<C> = RateLimiter<u32, HashMapStateStore<u32>, C, NoOpMiddleware<<C as Clock>::Instant>>;

pub struct Budget<C: Clock = DefaultClock> {
    global: Direct<C>,
    per_host: Keyed<C>,
    per_cluster: Keyed<C>,
    urgent: VecDeque<DueCheck>,
    routine: VecDeque<DueCheck>,
}

impl Budget<DefaultClock> {
    pub fn new(config: BudgetConfig) -> Self {
        Self::with_clock(config, DefaultClock::default())
    }
}

impl<C: Clock + Clone> Budget<C> {
    pub fn with_clock(config: BudgetConfig, clock: C) -> Self {
        let quota = |n: u32| Quota::per_second(NonZeroU32::new(n.max(1)).unwrap_or(NonZeroU32::MIN));
        Self {
            global: RateLimiter::direct_with_clock(quota(config.global_per_s), clock.clone()),
            per_host: RateLimiter::hashmap_with_clock(quota(config.per_host_per_s), clock.clone()),
            per_cluster: RateLimiter::hashmap_with_clock(quota(config.per_cluster_per_s), clock),
            urgent: VecDeque::new(),
            routine: VecDeque::new(),
        }
    }

    pub fn push(&mut self, check: DueCheck, priority: Priority) {
        match priority {
            Priority::Urgent => self.urgent.push_back(check),
            Priority::Routine => self.routine.push_back(check),
        }
    }

    /// Checks waiting for budget: `(urgent, routine)`.
    pub fn waiting(&self) -> (usize, usize) {
        (self.urgent.len(), self.routine.len())
    }

    /// Moves up to `max` checks the budget allows into `out`, urgent ones first, each
    /// class in due order. Checks held back by a per-target limit keep their place.
    pub fn take(&mut self, max: usize, out: &mut Vec<DueCheck>) -> Deferred {
        let mut deferred = Deferred::default();
        let mut global_open = true;
        for queue in [&mut self.urgent, &mut self.routine] {
            let mut held = Vec::new();
            while global_open && out.len() < max {
                let Some(check) = queue.pop_front() else { break };
                let target_ok = match check.target {
                    TargetKey::Host(h) => self.per_host.check_key(&h).is_ok(),
                    TargetKey::Cluster(c) => self.per_cluster.check_key(&c).is_ok(),
                };
                if !target_ok {
                    held.push(check);
                } else if self.global.check().is_ok() {
                    out.push(check);
                } else {
                    queue.push_front(check);
                    global_open = false;
                }
            }
            deferred.by_target += held.len();
            for check in held.into_iter().rev() {
                queue.push_front(check);
            }
        }
        deferred.by_global = self.urgent.len() + self.routine.len() - deferred.by_target;
        deferred
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use governor::clock::FakeRelativeClock;

    use super::*;

    fn check(instance: u32, host: u32) -> DueCheck {
        DueCheck { instance, target: TargetKey::Host(host) }
    }

    fn ids(v: &[DueCheck]) -> Vec<u32> {
        v.iter().map(|c| c.instance).collect()
    }

    #[test]
    fn urgent_checks_go_first_and_overflow_waits_in_order() {
        let clock = FakeRelativeClock::default();
        let config = BudgetConfig { global_per_s: 3, per_host_per_s: 100, per_cluster_per_s: 100 };
        let mut b = Budget::with_clock(config, clock.clone());
        for i in 0..4 {
            b.push(check(i, 0), Priority::Routine);
        }
        b.push(check(10, 0), Priority::Urgent);
        b.push(check(11, 0), Priority::Urgent);
        let mut out = Vec::new();
        let d = b.take(100, &mut out);
        assert_eq!(ids(&out), vec![10, 11, 0]);
        assert_eq!(d, Deferred { by_global: 3, by_target: 0 });
        // Nothing is dropped: the next second serves the oldest routine checks next.
        clock.advance(Duration::from_secs(1));
        out.clear();
        b.take(100, &mut out);
        assert_eq!(ids(&out), vec![1, 2, 3]);
        assert_eq!(b.waiting(), (0, 0));
    }

    #[test]
    fn a_busy_host_does_not_block_others_and_keeps_its_place() {
        let clock = FakeRelativeClock::default();
        let config = BudgetConfig { global_per_s: 100, per_host_per_s: 1, per_cluster_per_s: 1 };
        let mut b = Budget::with_clock(config, clock.clone());
        b.push(check(1, 7), Priority::Routine);
        b.push(check(2, 7), Priority::Routine);
        b.push(check(3, 8), Priority::Routine);
        b.push(DueCheck { instance: 4, target: TargetKey::Cluster(7) }, Priority::Routine);
        let mut out = Vec::new();
        let d = b.take(100, &mut out);
        assert_eq!(ids(&out), vec![1, 3, 4], "host 7 and cluster 7 are separate limits");
        assert_eq!(d.by_target, 1);
        clock.advance(Duration::from_secs(1));
        out.clear();
        b.take(100, &mut out);
        assert_eq!(ids(&out), vec![2]);
    }

    #[test]
    fn take_respects_max() {
        let mut b = Budget::with_clock(BudgetConfig::default(), FakeRelativeClock::default());
        for i in 0..10 {
            b.push(check(i, i), Priority::Routine);
        }
        let mut out = Vec::new();
        b.take(4, &mut out);
        assert_eq!(ids(&out), vec![0, 1, 2, 3]);
        assert_eq!(b.waiting(), (0, 6));
    }
}
