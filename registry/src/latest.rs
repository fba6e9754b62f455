//! "Latest package with these tags": the deploy systems' hot query, answered from a cache
//! that is never stale.
//!
//! An answer is cached with the app's change counter read *before* the query ran (see
//! [`crate::changes`]). A later request reads the counter again and takes the cached answer
//! only if it is unchanged: any publish, tag change or deletion of that app, on any replica,
//! bumps the counter in the same transaction, so the cache can answer with a newer state
//! than its label says (an extra miss later) but never with an older one.

use std::sync::Arc;

use moka::sync::Cache;

use crate::error::Result;
use crate::query::{Order, PackageQuery, PackageSummary};
use crate::range::KeyBound;
use crate::{Registry, names};

/// Cached answers, by app and query.
pub(crate) type LatestCache = Cache<String, Arc<Latest>>;

pub(crate) struct Latest {
    changes: i64,
    package: Option<PackageSummary>,
}

/// A cache holding at most `entries` answers (`None` when 0 disables it).
pub(crate) fn cache(entries: u64) -> Option<LatestCache> {
    (entries > 0).then(|| Cache::new(entries))
}

impl Registry {
    /// The newest package of `app` carrying all of the query's tags within its range, in
    /// its order (its cursor and limit are ignored); `None` when nothing matches.
    pub async fn latest_package(&self, app: &str, query: &PackageQuery) -> Result<Option<PackageSummary>> {
        names::check_app(app)?;
        for tag in &query.tags {
            names::check_tag(tag)?;
        }
        let query = PackageQuery { cursor: None, limit: 1, ..query.clone() };
        let Some(cache) = &self.latest else {
            return Ok(self.list_packages(app, &query).await?.items.into_iter().next());
        };
        let key = cache_key(app, &query);
        let changes = self.changes.current(app).await?;
        if let Some(hit) = cache.get(&key)
            && hit.changes == changes
        {
            metrics::counter!("slipway_registry_latest_cache_hits_total").increment(1);
            return Ok(hit.package.clone());
        }
        metrics::counter!("slipway_registry_latest_cache_misses_total").increment(1);
        let package = self.list_packages(app, &query).await?.items.into_iter().next();
        cache.insert(key, Arc::new(Latest { changes, package: package.clone() }));
        Ok(package)
    }
}

/// The answer's identity: app, the tag set (order and repeats do not change "all of"),
/// range and order. Names and keys cannot hold the separators used here.
fn cache_key(app: &str, query: &PackageQuery) -> String {
    let mut tags: Vec<&str> = query.tags.iter().map(String::as_str).collect();
    tags.sort_unstable();
    tags.dedup();
    let bound = |b: &Option<KeyBound>| match b {
        Some(KeyBound { key, inclusive: true }) => format!("={key}"),
        Some(KeyBound { key, inclusive: false }) => format!(">{key}"),
        None => String::new(),
    };
    let order = match query.order {
        Order::Version => 'v',
        Order::Created => 'c',
    };
    format!("{app} {} {} {} {order}", tags.join(","), bound(&query.range.lower), bound(&query.range.upper))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::range::KeyRange;

    fn query(tags: &[&str], range: &str, order: Order) -> PackageQuery {
        PackageQuery {
            tags: tags.iter().map(|t| t.to_string()).collect(),
            range: KeyRange::parse(range).unwrap(),
            order,
            ..PackageQuery::default()
        }
    }

    #[test]
    fn the_key_is_the_tag_set_range_and_order() {
        let key = |q: &PackageQuery| cache_key("web", q);
        assert_eq!(
            key(&query(&["stable", "t0"], "", Order::Version)),
            key(&query(&["t0", "stable", "t0"], "", Order::Version))
        );
        let distinct = [
            key(&query(&["stable"], "", Order::Version)),
            key(&query(&["stable", "t0"], "", Order::Version)),
            key(&query(&["stable", "t0"], "", Order::Created)),
            key(&query(&["stable", "t0"], ">=1.0.0", Order::Version)),
            key(&query(&["stable", "t0"], ">1.0.0", Order::Version)),
            key(&query(&["stable", "t0"], "<=1.0.0", Order::Version)),
            cache_key("api", &query(&["stable", "t0"], "", Order::Version)),
        ];
        for (i, a) in distinct.iter().enumerate() {
            for b in &distinct[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }
}
