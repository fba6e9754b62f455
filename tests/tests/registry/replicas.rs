//! The "latest with these tags" cache across replicas: two registries, each with its own
//! pool and cache, over one SQLite database and object store, as two server processes
//! would be. A change committed on one is seen by the next query on the other.

use std::sync::Arc;

use slipway_registry::manifest::Source;
use slipway_registry::publish::{ComponentInput, PackageComponent, PublishRequest};
use slipway_registry::query::{Order, PackageQuery};
use slipway_registry::range::KeyRange;
use slipway_registry::version::VersionSpec;
use slipway_registry::{Registry, RegistryConfig};
use slipway_server::config::Config;

struct Replicas {
    a: Registry,
    b: Registry,
    _dir: tempfile::TempDir,
}

/// A registry with its own pool over the database and object store in `dir`.
async fn open(dir: &tempfile::TempDir, latest_cache_entries: u64) -> Registry {
    let mut config = Config { data_dir: dir.path().into(), ..Config::default() };
    slipway_tests::database::assign(&mut config).await;
    let db = slipway_server::storage::open_database(&config).await.unwrap();
    let store = slipway_server::storage::open_object_store(&config).unwrap();
    Registry::new(db, store, RegistryConfig { latest_cache_entries, ..RegistryConfig::default() })
}

async fn replicas() -> Replicas {
    let dir = tempfile::tempdir().unwrap();
    let cache = RegistryConfig::default().latest_cache_entries;
    Replicas { a: open(&dir, cache).await, b: open(&dir, cache).await, _dir: dir }
}

fn request(version: &str, tags: &[&str]) -> PublishRequest {
    PublishRequest {
        app: "shop".into(),
        version: VersionSpec::parse(version).unwrap(),
        tags: tags.iter().map(|t| t.to_string()).collect(),
        creator: "ci".into(),
        source: Source::default(),
        components: vec![PackageComponent::New(ComponentInput::new("helm", "web", "component/helm/1"))],
    }
}

async fn publish(registry: &Registry, version: &str, tags: &[&str]) {
    registry.publish_app_package(request(version, tags)).await.unwrap();
}

#[tokio::test]
async fn a_publish_key_publishes_once_even_when_two_replicas_race() {
    let Replicas { a, b, _dir } = replicas().await;
    for round in 0..5 {
        let key = format!("build-{round}");
        let (first, second) = tokio::join!(
            a.publish_app_package_once(request("auto", &["stable"]), &key),
            b.publish_app_package_once(request("auto", &["stable"]), &key),
        );
        let (first, second) = (first.unwrap(), second.unwrap());
        assert_eq!((&first.version, &first.digest), (&second.version, &second.digest), "round {round}");
        // Once more, later: still the first package.
        let again = b.publish_app_package_once(request("auto", &["stable"]), &key).await.unwrap();
        assert_eq!(again.version, first.version);
    }
    let everything = PackageQuery { limit: 100, ..query(&[]) };
    let all = a.list_packages("shop", &everything).await.unwrap();
    assert_eq!(all.items.len(), 5, "one package per key: {:?}", all.items);
    // Without a key, publishing again is a new version.
    publish(&a, "auto", &[]).await;
    assert_eq!(a.list_packages("shop", &everything).await.unwrap().items.len(), 6);
}

fn query(tags: &[&str]) -> PackageQuery {
    PackageQuery { tags: tags.iter().map(|t| t.to_string()).collect(), ..PackageQuery::default() }
}

async fn latest(registry: &Registry, tags: &[&str]) -> Option<String> {
    registry.latest_package("shop", &query(tags)).await.unwrap().map(|p| p.version)
}

#[tokio::test]
async fn every_change_on_one_replica_is_seen_by_the_next_query_on_the_other() {
    let Replicas { a, b, _dir } = replicas().await;
    assert_eq!(latest(&b, &["prod"]).await, None);
    publish(&a, "1.0.0", &["prod", "stable"]).await;
    // Asked twice: the second answer comes from the cache, and must still be right.
    for _ in 0..2 {
        assert_eq!(latest(&b, &["stable", "prod"]).await.as_deref(), Some("1.0.0"));
    }
    publish(&a, "1.1.0", &["prod", "stable"]).await;
    assert_eq!(latest(&b, &["prod", "stable"]).await.as_deref(), Some("1.1.0"), "a publish");

    a.remove_tag("shop", "1.1.0", "stable", "ops").await.unwrap();
    assert_eq!(latest(&b, &["prod", "stable"]).await.as_deref(), Some("1.0.0"), "a tag removed");
    a.add_tag("shop", "1.1.0", "stable", "ops").await.unwrap();
    assert_eq!(latest(&b, &["prod", "stable"]).await.as_deref(), Some("1.1.0"), "a tag added");

    a.set_exclusive("shop", "prod", true, "ops").await.unwrap();
    a.add_tag("shop", "1.0.0", "prod", "ops").await.unwrap();
    assert_eq!(latest(&b, &["prod"]).await.as_deref(), Some("1.0.0"), "an exclusive tag moved");
    assert_eq!(latest(&b, &["prod", "stable"]).await.as_deref(), Some("1.0.0"));

    // Creation order and ranges are answers of their own.
    let created = PackageQuery { order: Order::Created, ..query(&["stable"]) };
    assert_eq!(b.latest_package("shop", &created).await.unwrap().unwrap().version, "1.1.0");
    let below = PackageQuery { range: KeyRange::parse("<1.1.0").unwrap(), ..query(&["stable"]) };
    assert_eq!(b.latest_package("shop", &below).await.unwrap().unwrap().version, "1.0.0");

    publish(&a, "1.2.0", &["canary"]).await;
    a.apply_retention("shop", 1, "ops").await.unwrap();
    b.remove_tag("shop", "1.0.0", "prod", "ops").await.unwrap();
    assert_eq!(latest(&a, &["prod"]).await, None, "a change on the other replica");
    assert_eq!(latest(&a, &["canary"]).await.as_deref(), Some("1.2.0"));
}

/// Concurrent queries share one counter read; each must still see every change committed
/// before it was asked.
#[tokio::test]
async fn concurrent_queries_never_see_a_tag_before_its_last_move() {
    let Replicas { a, b, _dir } = replicas().await;
    let versions: Vec<String> = (0..8).map(|i| format!("1.{i}.0")).collect();
    for version in &versions {
        publish(&a, version, &["stable"]).await;
    }
    a.set_exclusive("shop", "prod", true, "ops").await.unwrap();
    let b = Arc::new(b);
    for round in 0..40 {
        let version = &versions[(round * 5) % versions.len()];
        a.add_tag("shop", version, "prod", "ops").await.unwrap();
        let answers = futures::future::join_all((0..24).map(|_| {
            let b = b.clone();
            async move { latest(&b, &["prod", "stable"]).await }
        }))
        .await;
        for answer in answers {
            assert_eq!(answer.as_deref(), Some(version.as_str()), "round {round}");
        }
    }
}

#[tokio::test]
async fn a_registry_without_the_cache_answers_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let uncached = open(&dir, 0).await;
    publish(&uncached, "1.0.0", &["prod"]).await;
    publish(&uncached, "2.0.0", &["prod"]).await;
    assert_eq!(latest(&uncached, &["prod"]).await.as_deref(), Some("2.0.0"));
    uncached.remove_tag("shop", "2.0.0", "prod", "ops").await.unwrap();
    assert_eq!(latest(&uncached, &["prod"]).await.as_deref(), Some("1.0.0"));
}
