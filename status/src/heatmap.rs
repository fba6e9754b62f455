//! The whole fleet's health in one compact answer, for a view that draws one cell per
//! instance (the dashboard's heatmap at 100,000 instances).
//!
//! Each group (app × cluster) lists its instance ids once and their statuses as one string
//! of digits, each the index of the status in [`Health::ALL`]: about ten bytes per instance
//! instead of the ~250 of a full [`crate::InstanceView`]. Later changes arrive on the
//! transition stream, which names the instance, its app and cluster.

use std::sync::Arc;

use serde::Serialize;

use crate::health::Health;
use crate::table::InstanceTable;

/// The instances of one app in one cluster, ordered by id so a view keeps its layout
/// between reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HeatmapGroup {
    pub app: String,
    /// `None` for app instances registered without a cluster.
    pub cluster: Option<String>,
    pub ids: Vec<String>,
    /// One digit per id: the index of its status in [`Health::ALL`].
    pub codes: String,
}

/// The digit of `health` in [`HeatmapGroup::codes`].
pub fn code(health: Health) -> char {
    char::from(b'0' + health as u8)
}

/// One instance as the heatmap needs it: app, cluster, id and status.
pub type Cell = (Arc<str>, Option<Arc<str>>, Arc<str>, Health);

/// The cells of `table`, copied cheaply (shared strings) so the caller can release the
/// table's lock before grouping. Instances whose app instance is not registered (never the
/// case after validation) are left out rather than guessed.
pub fn cells(table: &InstanceTable) -> Vec<Cell> {
    table
        .iter()
        .filter_map(|(_, i)| {
            let app = table.app_of(i)?;
            Some((app.app.clone(), app.cluster.clone(), i.id.clone(), i.health))
        })
        .collect()
}

/// `cells` grouped by app and cluster, groups in (app, cluster) order.
pub fn group(mut cells: Vec<Cell>) -> Vec<HeatmapGroup> {
    cells.sort_unstable_by(|a, b| (&a.0, &a.1, &a.2).cmp(&(&b.0, &b.1, &b.2)));
    let mut groups: Vec<HeatmapGroup> = Vec::new();
    for (app, cluster, id, health) in cells {
        let same =
            groups.last().is_some_and(|g| *g.app == *app && g.cluster.as_deref() == cluster.as_deref());
        if !same {
            groups.push(HeatmapGroup {
                app: app.to_string(),
                cluster: cluster.map(|c| c.to_string()),
                ids: Vec::new(),
                codes: String::new(),
            });
        }
        let last = groups.last_mut().expect("a group was just pushed");
        last.ids.push(id.to_string());
        last.codes.push(code(health));
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AppInstanceSpec, ComponentInstanceSpec, Observe, StatusCheckSpec};
    use crate::schedule::{CheckSchedule, ScheduleConfig};

    fn app(id: &str, app: &str, cluster: Option<&str>) -> AppInstanceSpec {
        AppInstanceSpec {
            id: id.into(),
            app: app.into(),
            version: "1.0.0".into(),
            unit: String::new(),
            cluster: cluster.map(Into::into),
            namespace: "default".into(),
            stage: "prod".into(),
            labels: Default::default(),
        }
    }

    fn instance(id: &str, app_instance: &str) -> ComponentInstanceSpec {
        ComponentInstanceSpec {
            id: id.into(),
            app_instance: app_instance.into(),
            component: "web".into(),
            status: StatusCheckSpec { plugin: "http".into(), parameters: serde_json::json!({}) },
            observe: Observe::Http { url: format!("http://h:1/{id}") },
        }
    }

    #[test]
    fn groups_by_app_and_cluster_with_one_digit_per_instance() {
        let mut t = InstanceTable::default();
        let s = CheckSchedule::new(&ScheduleConfig::default());
        t.upsert_app(&app("a1", "shop", Some("eu")));
        t.upsert_app(&app("a2", "shop", Some("us")));
        t.upsert_app(&app("a3", "blog", None));
        for (id, ai) in [("x2", "a1"), ("x1", "a1"), ("y1", "a2"), ("z1", "a3")] {
            t.upsert_instance(&instance(id, ai), s, 0, true);
        }
        let x1 = t.index_of("x1").unwrap();
        t.get_mut(x1).unwrap().health = Health::Degraded;
        let x2 = t.index_of("x2").unwrap();
        t.get_mut(x2).unwrap().health = Health::Healthy;

        let groups = group(cells(&t));
        let keys: Vec<(&str, Option<&str>)> =
            groups.iter().map(|g| (g.app.as_str(), g.cluster.as_deref())).collect();
        assert_eq!(keys, [("blog", None), ("shop", Some("eu")), ("shop", Some("us"))]);
        let eu = &groups[1];
        assert_eq!(eu.ids, ["x1", "x2"]);
        assert_eq!(eu.codes, format!("{}{}", code(Health::Degraded), code(Health::Healthy)));
        assert_eq!(Health::ALL[usize::from(eu.codes.as_bytes()[0] - b'0')], Health::Degraded);
    }
}
