//! Package blobs: upload and download (ETag, Range), digest checks, the garbage collector,
//! an object store that disappears mid-upload, and a server killed mid-publish. The same
//! round trip runs against the local file system and, when the test script started one,
//! a Garage S3 node.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use futures::SinkExt;
use object_store::ObjectStoreExt;
use reqwest::StatusCode;
use serde_json::Value;
use slipway_registry::archive::digest_of;
use slipway_registry::manifest::Source;
use slipway_registry::publish::{ComponentInput, PublishRequest, build_package};
use slipway_registry::version::VersionSpec;
use slipway_server::config::{Config, ObjectStoreKind};

use crate::support::{Api, assert_error};

/// A package built the way a client would, with one file of `payload` bytes.
pub fn package_bytes(app: &str, version: &str, payload: usize) -> Bytes {
    let version = slipway_registry::version::parse_version(version).unwrap();
    let request = PublishRequest {
        app: app.into(),
        version: VersionSpec::Exact(version.clone()),
        tags: vec!["uploaded".into()],
        creator: "client".into(),
        source: Source::default(),
        components: vec![
            ComponentInput {
                files: BTreeMap::from([("blob.bin".to_owned(), incompressible(payload))]),
                ..ComponentInput::new("helm", "web", "component/helm/1")
            }
            .into(),
        ],
    };
    build_package(&request, &version, 1_700_000_000_000).bytes
}

/// Bytes deflate cannot shrink (xorshift), so a package is as large as its payload.
fn incompressible(len: usize) -> Vec<u8> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

async fn upload(api: &Api, app: &str, body: Bytes, digest: Option<&str>) -> (StatusCode, Value) {
    let mut url = api.url(&format!("/v1/apps/{app}/packages:upload"));
    if let Some(d) = digest {
        url.push_str(&format!("?digest={d}"));
    }
    let response = api.client.post(url).body(body).send().await.unwrap();
    (response.status(), response.json().await.unwrap())
}

/// Everything a storage backend must get right, over HTTP.
async fn round_trip(api: &Api) {
    let bytes = package_bytes("shop", "1.0.0", 300_000);
    let digest = digest_of(&bytes);
    let wrong = digest_of(b"something else");
    let (status, body) = upload(api, "shop", bytes.clone(), Some(&wrong)).await;
    assert_error(status, &body, 422, "digest_mismatch");
    assert_eq!(
        (body["error"]["details"]["expected"].as_str(), body["error"]["details"]["actual"].as_str()),
        (Some(wrong.as_str()), Some(digest.as_str()))
    );
    let (status, body) = api.get("/v1/apps/shop/packages/1.0.0").await;
    assert_error(status, &body, 404, "package_not_found");

    let (status, body) = upload(api, "other", bytes.clone(), None).await;
    assert_error(status, &body, 422, "app_mismatch");
    let (status, body) = upload(api, "shop", bytes.slice(..bytes.len() / 2), None).await;
    assert_error(status, &body, 422, "invalid_package");

    let (status, body) = upload(api, "shop", bytes.clone(), Some(&digest)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["digest"], digest.as_str(), "the client's bytes are the package: same digest");
    let (tagged, _) = api.versions("/v1/apps/shop/packages?tags=uploaded").await;
    assert_eq!(tagged, ["1.0.0"], "tags at publish time are applied");

    let url = api.url("/v1/apps/shop/packages/1.0.0/download");
    let full = api.client.get(&url).send().await.unwrap();
    assert_eq!(full.status(), 200);
    assert_eq!(full.headers()["etag"], format!("\"{digest}\"").as_str());
    assert_eq!(full.headers()["accept-ranges"], "bytes");
    assert_eq!(full.bytes().await.unwrap(), bytes);

    let part = api.client.get(&url).header("range", "bytes=100-199").send().await.unwrap();
    assert_eq!(part.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(part.headers()["content-range"], format!("bytes 100-199/{}", bytes.len()).as_str());
    assert_eq!(part.bytes().await.unwrap(), bytes.slice(100..200));
    let tail = api.client.get(&url).header("range", "bytes=-10").send().await.unwrap();
    assert_eq!(tail.bytes().await.unwrap(), bytes.slice(bytes.len() - 10..));
    let beyond =
        api.client.get(&url).header("range", format!("bytes={}-", bytes.len())).send().await.unwrap();
    assert_eq!(beyond.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    let cached = api.client.get(&url).header("if-none-match", format!("\"{digest}\"")).send().await.unwrap();
    assert_eq!(cached.status(), StatusCode::NOT_MODIFIED);

    // Orphans: an unreferenced blob (a crash after the blob write) is collected after the
    // grace period; referenced blobs stay.
    let registry = &api.server.state.registry;
    let orphan = digest_of(b"orphan");
    let orphan_key = slipway_registry::blobs::blob_key(&orphan).unwrap();
    api.server.state.objects.put(&orphan_key, Bytes::from_static(b"orphan").into()).await.unwrap();
    assert!(
        registry.collect_garbage().await.unwrap().orphan_blobs.is_empty(),
        "young orphans are left alone"
    );
    let report = registry.collect_garbage_older_than(Duration::ZERO).await.unwrap();
    assert_eq!(report.orphan_blobs, [orphan.clone()]);
    assert!(api.server.state.objects.head(&orphan_key).await.is_err());
    let again = api.client.get(&url).send().await.unwrap().bytes().await.unwrap();
    assert_eq!(again, bytes, "the package's own blob survived collection");
}

#[tokio::test]
async fn local_file_system_round_trip() {
    let api = Api::start().await;
    round_trip(&api).await;
}

/// The Garage node `tests/garage.sh` starts, from `SLIPWAY_TEST_S3_*`.
pub fn garage() -> Option<impl FnOnce(&mut Config)> {
    let var = |name: &str| std::env::var(format!("SLIPWAY_TEST_S3_{name}")).ok();
    let (endpoint, key, secret) = (var("ENDPOINT")?, var("ACCESS_KEY_ID")?, var("SECRET_ACCESS_KEY")?);
    let bucket = var("BUCKET").unwrap_or_else(|| "slipway".into());
    Some(move |c: &mut Config| {
        c.object_store.kind = ObjectStoreKind::S3;
        c.object_store.s3.endpoint = endpoint;
        c.object_store.s3.bucket = bucket;
        c.object_store.s3.region = "garage".into();
        c.object_store.s3.access_key_id = key;
        c.object_store.s3.secret_access_key = secret;
        c.object_store.s3.allow_http = true;
    })
}

#[tokio::test]
async fn garage_s3_round_trip() {
    let Some(configure) = garage() else {
        eprintln!(
            "skipped: SLIPWAY_TEST_S3_ENDPOINT/ACCESS_KEY_ID/SECRET_ACCESS_KEY not set (tests/garage.sh starts a node)"
        );
        return;
    };
    let _lock = crate::s3_uploads::exclusive_uploads();
    let api = Api::start_with(configure).await;
    round_trip(&api).await;
}

#[tokio::test]
async fn an_object_store_that_disappears_mid_upload_leaves_nothing_registered() {
    let api = Api::start().await;
    let objects = api.server.data_dir.path().join("objects");
    let (tx, rx) = futures::channel::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let url = api.url("/v1/apps/shop/packages:upload");
    let client = api.client.clone();
    let request =
        tokio::spawn(async move { client.post(url).body(reqwest::Body::wrap_stream(rx)).send().await });
    let mut tx = tx;
    for _ in 0..4 {
        tx.send(Ok(Bytes::from(vec![1u8; 1 << 20]))).await.unwrap();
    }
    // Wait until the upload is being written, then take the store away.
    wait_for(|| has_files(&objects.join("uploads"))).await;
    std::fs::rename(&objects, objects.with_extension("gone")).unwrap();
    tx.send(Ok(Bytes::from(vec![1u8; 1 << 20]))).await.unwrap();
    drop(tx);
    let response = request.await.unwrap().unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_error(status, &body, 503, "object_store_failed");
    std::fs::rename(objects.with_extension("gone"), &objects).unwrap();
    assert!(api.versions("/v1/apps/shop/packages").await.0.is_empty());
    api.publish_ok("shop", "1.0.0", &[]).await;
}

pub async fn wait_for(mut done: impl FnMut() -> bool) {
    for _ in 0..400 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("condition not reached within 20 s");
}

pub fn has_files(dir: &std::path::Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some())
}
