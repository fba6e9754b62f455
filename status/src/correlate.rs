//! Sibling tightening: anomalies are rarely alone. When enough instances of one app or one
//! cluster turn anomalous within a short window, their healthy siblings are checked early.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

/// Counts recent anomalies per group (an app or a cluster) and says when a group crosses
/// the threshold. A group fires at most once per window, so a spreading fault brings the
/// siblings forward once rather than on every new anomaly.
#[derive(Debug)]
pub struct Correlator<G> {
    threshold: usize,
    window_ms: u64,
    groups: HashMap<G, GroupWindow>,
}

#[derive(Debug, Default)]
struct GroupWindow {
    recent: VecDeque<u64>,
    fired_at: Option<u64>,
}

impl<G: Hash + Eq + Clone> Correlator<G> {
    pub fn new(threshold: u16, window_ms: u64) -> Self {
        Self { threshold: usize::from(threshold.max(1)), window_ms, groups: HashMap::new() }
    }

    /// Records that an instance of `group` turned anomalous at `now_ms`; true when the
    /// group's healthy siblings should be brought forward now.
    pub fn record_anomaly(&mut self, group: &G, now_ms: u64) -> bool {
        let window = self.window_ms;
        let g = self.groups.entry(group.clone()).or_default();
        while g.recent.front().is_some_and(|&t| t + window <= now_ms) {
            g.recent.pop_front();
        }
        g.recent.push_back(now_ms);
        let cooled = g.fired_at.is_none_or(|t| t + window <= now_ms);
        if g.recent.len() >= self.threshold && cooled {
            g.fired_at = Some(now_ms);
            return true;
        }
        false
    }

    /// Forgets groups with nothing recent, so the map does not grow with history.
    pub fn prune(&mut self, now_ms: u64) {
        let window = self.window_ms;
        self.groups.retain(|_, g| {
            g.recent.back().is_some_and(|&t| t + window > now_ms)
                || g.fired_at.is_some_and(|t| t + window > now_ms)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_when_threshold_anomalies_fall_inside_the_window() {
        let mut c = Correlator::new(3, 60_000);
        assert!(!c.record_anomaly(&"eu-1", 0));
        assert!(!c.record_anomaly(&"eu-1", 10_000));
        assert!(c.record_anomaly(&"eu-1", 20_000));
    }

    #[test]
    fn scattered_anomalies_do_not_fire() {
        let mut c = Correlator::new(3, 60_000);
        assert!(!c.record_anomaly(&"eu-1", 0));
        assert!(!c.record_anomaly(&"eu-1", 50_000));
        assert!(!c.record_anomaly(&"eu-1", 115_000), "the first one has left the window");
        assert!(!c.record_anomaly(&"us-1", 116_000), "groups are counted apart");
    }

    #[test]
    fn fires_once_per_window() {
        let mut c = Correlator::new(2, 60_000);
        c.record_anomaly(&1, 0);
        assert!(c.record_anomaly(&1, 1_000));
        assert!(!c.record_anomaly(&1, 2_000));
        assert!(!c.record_anomaly(&1, 60_000));
        assert!(c.record_anomaly(&1, 61_000));
    }

    #[test]
    fn prune_drops_quiet_groups() {
        let mut c = Correlator::new(2, 1_000);
        c.record_anomaly(&1, 0);
        c.prune(5_000);
        assert!(c.groups.is_empty());
    }
}
