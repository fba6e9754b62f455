//! Offline packages between two Slipway servers and two real `docker-registry` instances:
//! export pulls the image from the first, import pushes it into the second and registers
//! the package with the same digest; tampered and truncated archives are refused naming
//! the first bad digest, with nothing pushed or registered.

use bytes::Bytes;
use oci_client::Reference;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use slipway_registry::archive::digest_of;
use slipway_tests::image_registry::ImageRegistry;

use crate::support::{Api, assert_error};

const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";

fn oci() -> oci_client::Client {
    oci_client::Client::new(ClientConfig { protocol: ClientProtocol::Http, ..Default::default() })
}

/// Pushes a one-layer image to `registry` as `shop/web:1.0`; returns (manifest digest, layer).
async fn push_image(registry: &ImageRegistry) -> (String, Bytes) {
    let client = oci();
    let layer = Bytes::from(
        (0..200_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect::<Vec<u8>>(),
    );
    let config = Bytes::from(
        serde_json::to_vec(&json!({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [digest_of(&layer)]}}))
            .unwrap(),
    );
    let reference: Reference = format!("{}/shop/web:1.0", registry.host()).parse().unwrap();
    for blob in [&config, &layer] {
        client.push_blob(&reference, blob.clone(), &digest_of(blob)).await.unwrap();
    }
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest_of(&config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest_of(&layer), "size": layer.len()}],
    }))
    .unwrap();
    client.push_manifest_raw(&reference, manifest.clone(), MANIFEST_TYPE.parse().unwrap()).await.unwrap();
    (digest_of(&manifest), layer)
}

async fn import(api: &Api, archive: Bytes) -> (StatusCode, Value) {
    let response =
        api.client.post(api.url("/v1/apps/shop/packages:import")).body(archive).send().await.unwrap();
    (response.status(), response.json().await.unwrap())
}

async fn manifest_exists(registry: &ImageRegistry, digest: &str) -> bool {
    let reference = Reference::with_digest(registry.host(), "shop/web".into(), digest.into());
    oci().pull_manifest_raw(&reference, &RegistryAuth::Anonymous, &[MANIFEST_TYPE]).await.is_ok()
}

#[tokio::test]
async fn export_then_import_moves_the_package_and_its_images() {
    let (Some(source), Some(target)) = (ImageRegistry::start().await, ImageRegistry::start().await) else {
        return;
    };
    let (manifest_digest, layer) = push_image(&source).await;

    let origin = Api::start().await;
    let mut web = crate::support::component("web");
    web["images"] = json!([{ "reference": format!("{}/shop/web:1.0", source.host()), "digest": manifest_digest, "architectures": ["amd64"] }]);
    let body = json!({ "version": "1.4.0", "tags": ["prod"], "components": [web] });
    let (status, published) = origin.call(Method::POST, "/v1/apps/shop/packages", "ci", Some(body)).await;
    assert_eq!(status, 201, "{published}");
    let response = origin.client.get(origin.url("/v1/apps/shop/packages/1.4.0/export")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let archive = response.bytes().await.unwrap();

    let site = Api::start_with(|c| c.registry.image_registry = target.host()).await;
    let layer_at = archive.windows(64).position(|w| w == &layer[..64]).expect("the layer is in the archive");

    let mut tampered = archive.to_vec();
    tampered[layer_at + 1000] ^= 0xff;
    let (status, body) = import(&site, tampered.into()).await;
    assert_error(status, &body, 422, "bad_archive");
    assert_eq!(body["error"]["details"]["digest"], digest_of(&layer), "names the bad blob: {body}");

    let (status, body) = import(&site, archive.slice(..layer_at + 5000)).await;
    assert_error(status, &body, 422, "bad_archive");
    assert_eq!(body["error"]["details"]["digest"], digest_of(&layer), "names the cut blob: {body}");
    assert!(site.versions("/v1/apps/shop/packages").await.0.is_empty(), "nothing registered");
    assert!(!manifest_exists(&target, &manifest_digest).await, "nothing pushed");

    let (status, imported) = import(&site, archive.clone()).await;
    assert_eq!(status, 201, "{imported}");
    assert_eq!(imported["digest"], published["digest"], "the same package, the same digest");
    assert!(manifest_exists(&target, &manifest_digest).await);
    let by_tag: Reference = format!("{}/shop/web:1.0", target.host()).parse().unwrap();
    let (_, digest) =
        oci().pull_manifest_raw(&by_tag, &RegistryAuth::Anonymous, &[MANIFEST_TYPE]).await.unwrap();
    assert_eq!(digest, manifest_digest, "the tag was pushed too");
    let mut pulled = Vec::new();
    let layer_ref = Reference::with_digest(target.host(), "shop/web".into(), manifest_digest.clone());
    let descriptor = oci_client::manifest::OciDescriptor {
        digest: digest_of(&layer),
        size: layer.len() as i64,
        ..Default::default()
    };
    oci().pull_blob(&layer_ref, &descriptor, &mut pulled).await.unwrap();
    assert_eq!(pulled, layer);
    let (tagged, _) = site.versions("/v1/apps/shop/packages?tags=prod").await;
    assert_eq!(tagged, ["1.4.0"]);

    let (status, again) = import(&site, archive).await;
    assert_error(status, &again, 409, "version_exists");
}
