//! Who checked which simulated instance, and when: the sharding figures read from the
//! fleet's request log (each request names its replica in its user agent), shared by the
//! cluster tests and the `cluster` benchmark.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Logged;

/// The log, per instance, in arrival order.
pub struct Checks {
    by_instance: HashMap<usize, Vec<(Instant, Arc<str>)>>,
}

impl Checks {
    pub fn new(log: Vec<Logged>) -> Self {
        let mut by_instance: HashMap<usize, Vec<(Instant, Arc<str>)>> = HashMap::new();
        for l in log {
            let replica = l.replica.unwrap_or_else(|| Arc::from("(none)"));
            by_instance.entry(l.instance).or_default().push((l.at, replica));
        }
        by_instance.values_mut().for_each(|checks| checks.sort_by_key(|c| c.0));
        Self { by_instance }
    }

    fn between(&self, n: usize, from: Instant, to: Instant) -> impl Iterator<Item = &(Instant, Arc<str>)> {
        self.by_instance.get(&n).into_iter().flatten().filter(move |(at, _)| (from..to).contains(at))
    }

    /// Instances checked in `[from, to)`.
    pub fn checked(&self, from: Instant, to: Instant) -> HashSet<usize> {
        self.by_instance.keys().copied().filter(|&n| self.between(n, from, to).next().is_some()).collect()
    }

    /// Instances `replica` checked in `[from, to)`.
    pub fn checked_by(&self, replica: &str, from: Instant, to: Instant) -> HashSet<usize> {
        self.by_instance
            .keys()
            .copied()
            .filter(|&n| self.between(n, from, to).any(|(_, r)| &**r == replica))
            .collect()
    }

    /// Instances checked by more than one replica in `[from, to)`: with no replica joining
    /// or leaving in that time, each must have exactly one.
    pub fn double_checked(&self, from: Instant, to: Instant) -> Vec<usize> {
        let mut doubles: Vec<usize> = self
            .by_instance
            .keys()
            .copied()
            .filter(|&n| {
                let replicas: HashSet<&Arc<str>> = self.between(n, from, to).map(|(_, r)| r).collect();
                replicas.len() > 1
            })
            .collect();
        doubles.sort_unstable();
        doubles
    }

    /// Instances checked in `[from, to)`, by the replica that checked each last.
    pub fn last_checker(&self, from: Instant, to: Instant) -> HashMap<usize, Arc<str>> {
        self.by_instance
            .keys()
            .filter_map(|&n| self.between(n, from, to).last().map(|(_, r)| (n, r.clone())))
            .collect()
    }

    /// Instances checked in `[from, to)`, by the replica that checked each first.
    pub fn first_checker(&self, from: Instant, to: Instant) -> HashMap<usize, Arc<str>> {
        self.by_instance
            .keys()
            .filter_map(|&n| self.between(n, from, to).next().map(|(_, r)| (n, r.clone())))
            .collect()
    }

    /// For each instance `replica` checked last before `at`: how long after `at` another
    /// replica first checked it (`None`: nobody did in the log).
    pub fn takeover(&self, replica: &str, at: Instant) -> Vec<Option<Duration>> {
        self.by_instance
            .values()
            .filter(|checks| checks.iter().rev().find(|(t, _)| *t < at).is_some_and(|(_, r)| &**r == replica))
            .map(|checks| checks.iter().find(|(t, r)| *t >= at && &**r != replica).map(|(t, _)| *t - at))
            .collect()
    }

    /// Instances of `all` left unchecked for longer than `bound` somewhere in `[from, to)`,
    /// counting from `from` and up to `to`.
    pub fn missed(
        &self,
        all: impl Iterator<Item = usize>,
        from: Instant,
        to: Instant,
        bound: Duration,
    ) -> usize {
        all.filter(|&n| {
            let mut last = from;
            for (at, _) in self.between(n, from, to) {
                if *at - last > bound {
                    return true;
                }
                last = *at;
            }
            to - last > bound
        })
        .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(entries: &[(usize, u64, &str)], start: Instant) -> Checks {
        Checks::new(
            entries
                .iter()
                .map(|&(instance, ms, r)| Logged {
                    instance,
                    at: start + Duration::from_millis(ms),
                    replica: Some(Arc::from(r)),
                })
                .collect(),
        )
    }

    #[test]
    fn figures_from_a_log() {
        let t = Instant::now();
        let at = |ms| t + Duration::from_millis(ms);
        let c = log(&[(1, 0, "a"), (2, 10, "b"), (1, 500, "a"), (2, 900, "c"), (1, 2_000, "b")], t);
        assert_eq!(c.double_checked(at(0), at(1_000)), vec![2]);
        assert_eq!(c.checked_by("a", at(0), at(3_000)), HashSet::from([1]));
        assert!(c.double_checked(at(0), at(600)).is_empty());
        assert_eq!(c.takeover("a", at(1_000)), vec![Some(Duration::from_millis(1_000))]);
        assert_eq!(c.missed([1, 2, 3].into_iter(), at(0), at(2_100), Duration::from_millis(1_200)), 2);
        assert_eq!(&*c.first_checker(at(600), at(3_000))[&1], "b");
        assert_eq!(&*c.last_checker(at(0), at(1_000))[&1], "a");
    }
}
