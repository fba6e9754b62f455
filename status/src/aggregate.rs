//! Aggregation: an app instance is as healthy as its worst component instance, and the
//! fleet is summarised by app, cluster or status.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::health::Health;

/// One component's contribution to its app instance.
#[derive(Debug, Clone, Copy)]
pub struct ComponentHealth<'a> {
    pub component: &'a str,
    pub health: Health,
    pub reason: &'a str,
}

/// The health of an app instance with the reasons of the components that made it so.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AppHealth {
    pub status: Health,
    /// `component: reason` of every component at the worst status, in component order.
    pub reasons: Vec<String>,
}

/// The worst status of `components` (unknown when there are none: nothing is observed).
pub fn app_health<'a>(components: impl IntoIterator<Item = ComponentHealth<'a>>) -> AppHealth {
    let mut worst: Option<Health> = None;
    let mut reasons = Vec::new();
    for c in components {
        if worst.is_none_or(|w| c.health > w) {
            worst = Some(c.health);
            reasons.clear();
        }
        if worst == Some(c.health) {
            reasons.push(format!("{}: {}", c.component, c.reason));
        }
    }
    match worst {
        Some(status) => AppHealth { status, reasons },
        None => AppHealth { status: Health::Unknown, reasons: vec!["no component instances".into()] },
    }
}

/// Counts per status, in severity order, for one group of a summary.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StatusCounts {
    pub total: u64,
    #[serde(flatten)]
    pub by_status: BTreeMap<&'static str, u64>,
}

impl StatusCounts {
    pub fn add(&mut self, health: Health) {
        self.total += 1;
        *self.by_status.entry(health.as_str()).or_default() += 1;
    }
}

/// Groups `items` (`(group key, status)`) into counts per group.
pub fn summarize<K: Ord>(items: impl IntoIterator<Item = (K, Health)>) -> BTreeMap<K, StatusCounts> {
    let mut groups: BTreeMap<K, StatusCounts> = BTreeMap::new();
    for (key, health) in items {
        groups.entry(key).or_default().add(health);
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c<'a>(component: &'a str, health: Health, reason: &'a str) -> ComponentHealth<'a> {
        ComponentHealth { component, health, reason }
    }

    #[test]
    fn worst_component_wins_with_all_its_reasons() {
        let h = app_health([
            c("web", Health::Healthy, "HTTP 200"),
            c("api", Health::Degraded, "2 of 3 replicas unavailable"),
            c("db", Health::Progressing, "rolling out"),
            c("worker", Health::Degraded, "container worker in CrashLoopBackOff"),
        ]);
        assert_eq!(h.status, Health::Degraded);
        assert_eq!(
            h.reasons,
            vec!["api: 2 of 3 replicas unavailable", "worker: container worker in CrashLoopBackOff"]
        );
    }

    #[test]
    fn severity_order_decides_between_non_healthy_statuses() {
        let pairs = [
            (Health::Suspended, Health::Healthy, Health::Suspended),
            (Health::Suspended, Health::Progressing, Health::Progressing),
            (Health::Missing, Health::Progressing, Health::Missing),
            (Health::Missing, Health::Degraded, Health::Degraded),
            (Health::Unknown, Health::Degraded, Health::Unknown),
        ];
        for (a, b, worst) in pairs {
            assert_eq!(app_health([c("a", a, ""), c("b", b, "")]).status, worst, "{a} vs {b}");
        }
    }

    #[test]
    fn no_components_is_unknown() {
        assert_eq!(app_health([]).status, Health::Unknown);
    }

    #[test]
    fn summary_counts_per_group() {
        let s = summarize([
            ("shop", Health::Healthy),
            ("shop", Health::Degraded),
            ("blog", Health::Healthy),
            ("shop", Health::Healthy),
        ]);
        assert_eq!(s["shop"].total, 3);
        assert_eq!(s["shop"].by_status["healthy"], 2);
        assert_eq!(s["shop"].by_status["degraded"], 1);
        assert_eq!(s["blog"].total, 1);
    }
}
