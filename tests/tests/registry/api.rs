//! Versions, tags, tag queries, exclusive tags, retention and bad input over HTTP.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::support::{Api, assert_error};

#[tokio::test]
async fn auto_versions_follow_semver_order_and_explicit_versions_must_be_new() {
    let api = Api::start().await;
    assert_eq!(api.publish_ok("shop", "auto", &[]).await["version"], "0.1.0");
    api.publish_ok("shop", "1.10.0", &[]).await;
    api.publish_ok("shop", "1.9.7", &[]).await; // inserted last, but lower
    api.publish_ok("shop", "2.0.0-rc.1", &[]).await;
    let next = api.publish_ok("shop", "auto", &[]).await;
    assert_eq!(next["version"], "2.0.0", "the release after the highest pre-release");
    assert_eq!(api.publish_ok("shop", "auto", &[]).await["version"], "2.0.1");

    let (status, body) = api.publish("shop", "1.10.0", &[]).await;
    assert_error(status, &body, 409, "version_exists");
    let (_, existing) = api.get("/v1/apps/shop/packages/1.10.0").await;
    assert_eq!(body["error"]["details"]["digest"], existing["digest"], "409 names the existing digest");

    // Build metadata is kept, but ignored for ordering and identity.
    let (status, body) = api.publish("shop", "1.10.0+build.7", &[]).await;
    assert_error(status, &body, 409, "version_exists");
    api.publish_ok("shop", "3.0.0+build.9", &[]).await;
    let (status, found) = api.get("/v1/apps/shop/packages/3.0.0").await;
    assert_eq!(status, 200);
    assert_eq!(found["version"], "3.0.0+build.9");
    assert_eq!(found["manifest"]["format"], "slipway.app-package/v1");
    assert_eq!(found["manifest"]["components"][0]["file"], "components/web.tar.gz");
    assert_eq!(found["creator"], "ci");
    assert!(found["digest"].as_str().unwrap().starts_with("sha256:"));

    let (all, _) = api.versions("/v1/apps/shop/packages").await;
    assert_eq!(all, ["3.0.0+build.9", "2.0.1", "2.0.0", "2.0.0-rc.1", "1.10.0", "1.9.7", "0.1.0"]);
}

#[tokio::test]
async fn concurrent_auto_publishes_get_distinct_versions() {
    let api = Api::start().await;
    let publishes = (0..6).map(|_| api.publish("race", "auto", &[]));
    let results = futures::future::join_all(publishes).await;
    let mut versions: Vec<String> = results
        .iter()
        .map(|(status, body)| {
            assert_eq!(*status, StatusCode::CREATED, "{body}");
            body["version"].as_str().unwrap().to_owned()
        })
        .collect();
    versions.sort();
    versions.dedup();
    assert_eq!(versions.len(), 6, "{versions:?}");
}

#[tokio::test]
async fn tag_queries_match_all_tags_within_a_range_with_stable_cursors() {
    let api = Api::start().await;
    for (version, tags) in [
        ("1.0.0", &["stable"][..]),
        ("1.1.0", &["stable", "prod"]),
        ("1.2.0", &["stable", "prod", "eu"]),
        ("1.3.0-beta.1", &["prod"]),
        ("2.0.0", &["stable", "prod"]),
        ("2.1.0", &["canary"]),
    ] {
        api.publish_ok("shop", version, tags).await;
    }
    let q = |query: &str| format!("/v1/apps/shop/packages?{query}");
    assert_eq!(api.versions(&q("tags=prod,stable")).await.0, ["2.0.0", "1.2.0", "1.1.0"]);
    assert_eq!(api.versions(&q("tags=stable,prod&version=>=1.1.0,<2.0.0")).await.0, ["1.2.0", "1.1.0"]);
    assert_eq!(api.versions(&q("tags=prod&version=^1.2")).await.0, ["1.3.0-beta.1", "1.2.0"]);
    assert_eq!(api.versions(&q("tags=prod,eu,stable")).await.0, ["1.2.0"]);
    assert!(api.versions(&q("tags=prod,canary")).await.0.is_empty());

    let (status, latest) = api.get(&q("tags=prod,stable&latest=true")).await;
    assert_eq!(status, 200);
    assert_eq!(latest["version"], "2.0.0");
    let (status, body) = api.get(&q("tags=prod,canary&latest=true")).await;
    assert_error(status, &body, 404, "package_not_found");

    // Creation order on request: 2.1.0 was published last.
    assert_eq!(api.versions(&q("order=created&limit=2")).await.0, ["2.1.0", "2.0.0"]);

    // Pages of two, with a publish between pages: no version is skipped or repeated.
    let (first, cursor) = api.versions(&q("tags=stable&limit=2")).await;
    assert_eq!(first, ["2.0.0", "1.2.0"]);
    api.publish_ok("shop", "1.2.5", &["stable"]).await; // above the cursor: a new first page would show it
    api.publish_ok("shop", "1.1.5", &["stable"]).await; // below the cursor: this walk meets it
    let (second, cursor) = api.versions(&q(&format!("tags=stable&limit=2&cursor={}", cursor.unwrap()))).await;
    assert_eq!(second, ["1.1.5", "1.1.0"], "keyset pages continue below the last seen key");
    let (third, end) = api.versions(&q(&format!("tags=stable&limit=2&cursor={}", cursor.unwrap()))).await;
    assert_eq!((third, end), (vec!["1.0.0".to_owned()], None));

    let (all_created, cursor) = api.versions(&q("order=created&limit=4")).await;
    let (rest, _) = api.versions(&q(&format!("order=created&limit=4&cursor={}", cursor.unwrap()))).await;
    assert_eq!([all_created, rest].concat().len(), 8);
}

#[tokio::test]
async fn tags_change_with_who_and_when_and_exclusive_tags_move() {
    let api = Api::start().await;
    for v in ["1.0.0", "1.1.0", "1.2.0"] {
        api.publish_ok("shop", v, &[]).await;
    }
    let tag = |v: &str, t: &str| format!("/v1/apps/shop/packages/{v}/tags/{t}");
    let (status, body) = api.call(Method::PUT, &tag("1.0.0", "qa"), "alice", None).await;
    assert_eq!((status.as_u16(), body["added"].clone()), (200, json!(true)), "{body}");
    let (_, again) = api.call(Method::PUT, &tag("1.0.0", "qa"), "alice", None).await;
    assert_eq!(again["added"], false, "a repeated PUT changes nothing");
    api.call(Method::PUT, &tag("1.1.0", "qa"), "alice", None).await;
    let (_, removed) = api.call(Method::DELETE, &tag("1.0.0", "qa"), "bob", None).await;
    assert_eq!(removed["removed"], true);
    let (_, package) = api.get("/v1/apps/shop/packages/1.1.0").await;
    assert_eq!(package["tags"], json!(["qa"]));

    // prod is exclusive: promoting 1.1.0 and then 1.2.0 moves it.
    let (status, _) =
        api.call(Method::PUT, "/v1/apps/shop/tags/prod", "ops", Some(json!({"exclusive": true}))).await;
    assert_eq!(status, 200);
    api.call(Method::PUT, &tag("1.1.0", "prod"), "ops", None).await;
    let (_, moved) = api.call(Method::PUT, &tag("1.2.0", "prod"), "carol", None).await;
    assert_eq!(moved["moved_from"], json!(["1.1.0"]), "{moved}");
    let (holders, _) = api.versions("/v1/apps/shop/packages?tags=prod").await;
    assert_eq!(holders, ["1.2.0"]);
    let (_, tags) = api.get("/v1/apps/shop/tags").await;
    assert_eq!(
        tags["items"],
        json!([{"tag": "prod", "exclusive": true, "versions": 1}, {"tag": "qa", "exclusive": false, "versions": 1}])
    );

    // Concurrent promotions of an exclusive tag leave exactly one holder.
    let paths = ["1.0.0", "1.1.0", "1.2.0"].map(|v| tag(v, "prod"));
    let promotions = paths.iter().map(|path| api.call(Method::PUT, path, "ops", None));
    for (status, body) in futures::future::join_all(promotions).await {
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(api.versions("/v1/apps/shop/packages?tags=prod").await.0.len(), 1);

    let (_, events) = api.get("/v1/apps/shop/tag-events").await;
    let events = events["items"].as_array().unwrap();
    let moved_by_carol = events.iter().find(|e| e["actor"] == "carol" && e["action"] == "removed").unwrap();
    assert_eq!(
        (moved_by_carol["version"].clone(), moved_by_carol["tag"].clone()),
        (json!("1.1.0"), json!("prod"))
    );
    assert!(events.iter().any(|e| e["actor"] == "bob" && e["action"] == "removed" && e["tag"] == "qa"));
    assert!(events.iter().all(|e| e["at_ms"].as_i64().unwrap() > 1_700_000_000_000));
}

#[tokio::test]
async fn retention_keeps_the_newest_and_every_tagged_version() {
    let api = Api::start_with(|c| c.registry.keep_versions = 2).await;
    api.publish_ok("shop", "1.0.0", &["prod"]).await;
    for v in ["1.1.0", "1.2.0", "1.3.0", "1.4.0"] {
        api.publish_ok("shop", v, &[]).await;
    }
    assert_eq!(api.versions("/v1/apps/shop/packages").await.0, ["1.4.0", "1.3.0", "1.0.0"]);
    let (_, deletions) = api.get("/v1/apps/shop/deletions").await;
    let deleted: Vec<&str> =
        deletions["items"].as_array().unwrap().iter().map(|d| d["version"].as_str().unwrap()).collect();
    assert_eq!(deleted.len(), 2);
    assert!(deleted.contains(&"1.1.0") && deleted.contains(&"1.2.0"), "{deleted:?}");
    let (status, body) = api.get("/v1/apps/shop/packages/1.1.0/download").await;
    assert_error(status, &body, 404, "package_not_found");
    // Component packages go with the last app package that held them.
    let (_, components) = api.get("/v1/apps/shop/components/web/packages").await;
    let versions: Vec<&str> =
        components["items"].as_array().unwrap().iter().map(|c| c["version"].as_str().unwrap()).collect();
    assert_eq!(versions, ["1.4.0", "1.3.0", "1.0.0"]);
    assert_eq!(components["items"][0]["plugin"], "component/helm/1");
    assert_eq!(components["items"][0]["images"][0]["architectures"], json!(["amd64"]));
}

#[tokio::test]
async fn bad_input_gets_clear_errors_and_changes_nothing() {
    let api = Api::start().await;
    api.publish_ok("shop", "1.0.0", &[]).await;
    let cases = [
        ("/v1/apps/Shop/packages", 400, "invalid_name"),
        ("/v1/apps/shop-/packages", 400, "invalid_name"),
        ("/v1/apps/shop/packages?tags=prod,Bad!", 400, "invalid_name"),
        ("/v1/apps/shop/packages?version=>=1.2.0,<", 400, "invalid_version_range"),
        ("/v1/apps/shop/packages?cursor=zzz", 400, "invalid_cursor"),
        ("/v1/apps/shop/packages?order=size", 400, "invalid_request"),
        ("/v1/apps/shop/packages?limit=many", 400, "invalid_request"),
        ("/v1/apps/shop/packages/1.0", 400, "invalid_version"),
        ("/v1/apps/shop/packages/9.9.9", 404, "package_not_found"),
        ("/v1/apps/shop/packages/9.9.9/download", 404, "package_not_found"),
    ];
    for (path, status_code, code) in cases {
        let (status, body) = api.get(path).await;
        assert_error(status, &body, status_code, code);
    }
    let (status, body) = api.publish("shop", "v2", &[]).await;
    assert_error(status, &body, 400, "invalid_version");
    let (status, body) = api.publish("shop", "2.0.0", &["-bad"]).await;
    assert_error(status, &body, 400, "invalid_name");
    let (status, body) = api.call(Method::PUT, "/v1/apps/shop/packages/1.0.0/tags/UPPER", "x", None).await;
    assert_error(status, &body, 400, "invalid_name");
    let (status, body) = api.call(Method::PUT, "/v1/apps/shop/packages/7.0.0/tags/prod", "x", None).await;
    assert_error(status, &body, 404, "package_not_found");
    let mut escape = crate::support::component("web");
    escape["files"] = json!({ "../../etc/passwd": "x" });
    let body = json!({ "version": "2.0.0", "components": [escape] });
    let (status, body) = api.call(Method::POST, "/v1/apps/shop/packages", "ci", Some(body)).await;
    assert_error(status, &body, 422, "invalid_package");
    assert_eq!(api.versions("/v1/apps/shop/packages").await.0, ["1.0.0"], "nothing was registered");
}
