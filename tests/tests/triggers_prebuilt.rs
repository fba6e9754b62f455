//! The `generic` adapter over real HTTP: its branch filter, and images an external CI built
//! already — looked up in the real loopback registry, recorded by digest and packaged
//! without building; a missing image is refused and starts nothing.

mod triggers_support;

use bytes::Bytes;
use serde_json::{Value, json};
use slipway_tests::server::TestServer;
use triggers_support::{create_trigger, create_trigger_with, repository, start};

async fn deliver(server: &TestServer, id: &str, secret: &str, delivery: &str, body: &Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(server.url(&format!("/v1/triggers/{id}")))
        .bearer_auth(secret)
        .header("idempotency-key", delivery)
        .json(body)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

/// Pushes a one-layer amd64 image holding `layer` as `reference` (`host:port/repo:tag`, a
/// loopback registry over plain HTTP) with `oci-client`; returns its manifest digest.
async fn push_image(reference: &str, layer: &bytes::Bytes) -> String {
    use slipway_registry::archive::digest_of;
    const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
    let protocol = oci_client::client::ClientProtocol::Http;
    let client = oci_client::Client::new(oci_client::client::ClientConfig { protocol, ..Default::default() });
    let config = bytes::Bytes::from(
        serde_json::to_vec(&json!({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [digest_of(layer)]}}))
            .unwrap(),
    );
    let reference: oci_client::Reference = reference.parse().unwrap();
    for blob in [&config, layer] {
        client.push_blob(&reference, blob.clone(), &digest_of(blob)).await.unwrap();
    }
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest_of(&config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest_of(layer), "size": layer.len()}],
    }))
    .unwrap();
    client.push_manifest_raw(&reference, manifest.clone(), MANIFEST_TYPE.parse().unwrap()).await.unwrap();
    digest_of(&manifest)
}

#[tokio::test]
async fn generic_deliveries_are_filtered_by_the_branch_their_ref_names() {
    let (repo, commit) = repository();
    let server = TestServer::start_with(|c| c.pipeline.run_builds = false, slipway_server::router::app).await;
    // Branch patterns `main` and `release/*`.
    let (id, secret) = create_trigger(&server, "generic", repo.path()).await;
    let push = |reference: &str| json!({"action": "build", "repository": "acme/shop", "ref": reference, "commit": commit});

    let (status, ignored) = deliver(&server, &id, &secret, "d1", &push("refs/heads/feature/x")).await;
    assert_eq!(status, 200, "{ignored}");
    assert!(ignored["ignored"].as_str().unwrap().contains("feature/x"), "{ignored}");
    for (delivery, reference) in [("d2", "refs/heads/main"), ("d3", "release/1.2")] {
        let (status, started) = deliver(&server, &id, &secret, delivery, &push(reference)).await;
        assert_eq!(status, 202, "{reference}: {started}");
    }
    let builds: Value = server.get_json("/v1/builds?app=hooked").await;
    assert_eq!(builds["builds"].as_array().unwrap().len(), 2, "{builds}");
}

#[tokio::test]
async fn prebuilt_images_are_verified_pinned_and_packaged_without_building() {
    let Ok(registry) = std::env::var("SLIPWAY_TEST_REGISTRY") else {
        eprintln!("skipped: SLIPWAY_TEST_REGISTRY is not set (run through tests/run.sh)");
        return;
    };
    let server = start(100).await;
    // A fresh repository per run, so the digests are this test's own.
    let run = format!(
        "{:x}",
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
    );
    let image = |component: &str, tag: &str| format!("{registry}/ci-{run}/{component}:{tag}");
    let web_digest = push_image(&image("web", "1.0"), &Bytes::from(format!("web layer {run}"))).await;
    let worker_digest =
        push_image(&image("worker", "1.0"), &Bytes::from(format!("worker layer {run}"))).await;
    let (id, secret) = create_trigger_with(
        &server,
        json!({
            "app": "prebuilt", "adapter": "generic", "branches": ["main"], "tags": ["ci"],
            "components": [{"name": "web", "type": "microservice", "params": {"port": 8080}},
                           {"name": "worker", "type": "job"}],
        }),
    )
    .await;
    let commit = "8d3f1c2b4a5e6f708192a3b4c5d6e7f8091a2b3c";
    let delivery = |web: String, worker: String| {
        json!({"action": "build", "repository": "https://git.example/acme/shop.git", "ref": "refs/heads/main",
               "commit": commit, "images": [{"component": "web", "reference": web},
                                            {"component": "worker", "reference": worker}]})
    };

    // Missing images (an unknown tag of a known repository, an unknown repository) are
    // refused with every one named, before anything is stored.
    let missing = delivery(image("web", "9.9"), image("nothing-here", "1.0"));
    let (status, refused) = deliver(&server, &id, &secret, "first", &missing).await;
    assert_eq!(status, 422, "{refused}");
    assert_eq!(refused["error"]["code"], "image_not_found");
    assert_eq!(
        refused["error"]["details"]["references"],
        json!([image("web", "9.9"), image("nothing-here", "1.0")])
    );
    let builds: Value = server.get_json("/v1/builds?app=prebuilt").await;
    assert_eq!(builds["builds"], json!([]), "a refused delivery starts nothing");

    // The same delivery id, now naming images the registry has: it left no claim behind.
    let body = delivery(image("web", "1.0"), image("worker", "1.0"));
    let (status, started) = deliver(&server, &id, &secret, "first", &body).await;
    assert_eq!(status, 202, "{started}");
    let build_id = started["build"]["id"].as_str().unwrap().to_owned();
    for (delivery_id, what) in [("first", "the same delivery"), ("second", "the same payload")] {
        let (status, replay) = deliver(&server, &id, &secret, delivery_id, &body).await;
        assert_eq!(status, 200, "{what}: {replay}");
        assert_eq!(replay["duplicate"], true);
        assert_eq!(replay["build"]["id"], build_id.as_str(), "{what} answers the first build");
    }

    let build = server.wait_build(&build_id).await;
    assert_eq!(build["state"], "succeeded", "{build}");
    let pinned = |component: &str, digest: &str| format!("{registry}/ci-{run}/{component}@{digest}");
    for (component, digest) in [("web", &web_digest), ("worker", &worker_digest)] {
        let view = build["components"].as_array().unwrap().iter().find(|c| c["name"] == component).unwrap();
        assert_eq!(view["state"], "skipped", "{view}");
        assert!(view["reason"].as_str().unwrap().starts_with("prebuilt image"), "{view}");
        assert_eq!(view["image"], pinned(component, digest));
        assert_eq!(view["digest"], digest.as_str());
    }

    let version = build["package"]["version"].as_str().unwrap();
    let package: Value = server.get_json(&format!("/v1/apps/prebuilt/packages/{version}")).await;
    assert_eq!(
        package["manifest"]["source"],
        json!({"repository": "https://git.example/acme/shop.git", "commit": commit})
    );
    assert_eq!(package["tags"], json!(["ci"]));
    for (component, digest) in [("web", &web_digest), ("worker", &worker_digest)] {
        let page: Value =
            server.get_json(&format!("/v1/apps/prebuilt/components/{component}/packages")).await;
        let published = &page["items"][0];
        assert_eq!(
            published["images"],
            json!([{"reference": pinned(component, digest), "digest": digest, "architectures": ["amd64"]}]),
            "{published}"
        );
        assert_eq!(published["source"]["commit"], commit);
    }
    let log = server
        .client()
        .get(server.url(&format!("/v1/builds/{build_id}/logs?component=web")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(log.contains("nothing built") && !log.contains("building"), "{log}");
}
