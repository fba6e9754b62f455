//! Export: the package and every image its components name, pulled with `oci-client`, as
//! one streamed archive. Manifests are pulled (and checked against their digests) before
//! the first byte goes out, so a missing image is a clear error rather than a cut stream;
//! layers are streamed straight from the image registry into the archive.

use std::collections::BTreeMap;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use oci_client::Reference;
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::tar_stream::{self, TarSender};
use super::{
    INDEX_FILE, MANIFEST_TYPES, OFFLINE_FORMAT, OfflineBlob, OfflineImage, OfflineIndex, OfflineManifest,
    PACKAGE_FILE, layout_blob_path, oci_client,
};
use crate::archive::format_digest;
use crate::error::{Error, Result};
use crate::query::PackageSummary;
use crate::{Registry, blobs};

/// Where the exporter gets each blob's bytes.
enum Source {
    /// A manifest, already pulled.
    Manifest(Bytes),
    /// A config or layer, pulled when its turn comes.
    Registry(Reference, OciDescriptor),
}

impl Registry {
    /// Prepares the export of `version` of `app` and returns its archive as a byte stream.
    pub async fn export_offline(
        &self,
        app: &str,
        version: &str,
    ) -> Result<(PackageSummary, impl Stream<Item = std::io::Result<Bytes>> + Send + 'static)> {
        let details = self.get_package(app, version).await?;
        let components: Vec<crate::manifest::ComponentManifest> = {
            let mut all = Vec::new();
            for entry in &details.manifest.components {
                let page =
                    self.list_component_packages(app, &entry.component, None, crate::query::MAX_PAGE).await?;
                all.extend(page.items.into_iter().filter(|c| c.version == entry.version));
            }
            all
        };
        let client = oci_client(self.config.image_registry_insecure);
        let mut images = Vec::new();
        let mut sources: BTreeMap<String, (u64, Source)> = BTreeMap::new();
        for image in components.iter().flat_map(|c| &c.images) {
            if images
                .iter()
                .any(|i: &OfflineImage| i.reference == image.reference && i.digest == image.digest)
            {
                continue;
            }
            images.push(pull_manifests(&client, &image.reference, &image.digest, &mut sources).await?);
        }
        let index = OfflineIndex {
            format: OFFLINE_FORMAT.into(),
            app: app.to_owned(),
            version: details.summary.version.clone(),
            package_digest: details.summary.digest.clone(),
            package_size_bytes: details.summary.size_bytes,
            images,
            blobs: sources
                .iter()
                .map(|(d, (size, _))| OfflineBlob { digest: d.clone(), size_bytes: *size })
                .collect(),
        };
        let (tx, rx) = tar_stream::channel();
        let registry = self.clone();
        tokio::spawn(async move {
            if let Err(e) = write_archive(&registry, &client, &index, sources, &tx).await {
                tracing::warn!(app = %index.app, version = %index.version, error = %e, "offline export failed");
                tx.fail(&e).await;
                return;
            }
            let _ = tx.finish().await;
        });
        let stream =
            futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
        Ok((details.summary, stream))
    }
}

/// Pulls the manifest of `reference` pinned to `digest` (and, for an index, every image
/// manifest it lists), recording every blob they need.
async fn pull_manifests(
    client: &oci_client::Client,
    reference: &str,
    digest: &str,
    sources: &mut BTreeMap<String, (u64, Source)>,
) -> Result<OfflineImage> {
    let parsed: Reference =
        reference.parse().map_err(|e| image_error(reference, format!("bad reference: {e}")))?;
    let pinned =
        |d: &str| Reference::with_digest(parsed.registry().into(), parsed.repository().into(), d.into());
    let mut manifests = Vec::new();
    let mut queue = vec![digest.to_owned()];
    while let Some(want) = queue.pop() {
        let (bytes, got) = client
            .pull_manifest_raw(&pinned(&want), &RegistryAuth::Anonymous, MANIFEST_TYPES)
            .await
            .map_err(|e| image_error(reference, format!("pulling manifest {want}: {e}")))?;
        if got != want || format_digest(Sha256::digest(&bytes)) != want {
            return Err(image_error(reference, format!("manifest {want} arrived with digest {got}")));
        }
        let json: Value = serde_json::from_slice(&bytes)
            .map_err(|e| image_error(reference, format!("manifest {want} is not JSON: {e}")))?;
        let mut blob_digests = Vec::new();
        if let Some(children) = json.get("manifests").and_then(Value::as_array) {
            queue.extend(children.iter().filter_map(|c| c.get("digest")?.as_str().map(str::to_owned)));
        } else {
            let config = json.get("config").into_iter();
            let layers = json.get("layers").and_then(Value::as_array).into_iter().flatten();
            for descriptor in config.chain(layers) {
                let descriptor: OciDescriptor = serde_json::from_value(descriptor.clone())
                    .map_err(|e| image_error(reference, format!("manifest {want}: bad descriptor: {e}")))?;
                blob_digests.push(descriptor.digest.clone());
                let size = u64::try_from(descriptor.size).unwrap_or(0);
                sources
                    .insert(descriptor.digest.clone(), (size, Source::Registry(pinned(&want), descriptor)));
            }
        }
        let media_type =
            json.get("mediaType").and_then(Value::as_str).unwrap_or(MANIFEST_TYPES[1]).to_owned();
        manifests.push(OfflineManifest { digest: want.clone(), media_type, blobs: blob_digests });
        sources.insert(want, (bytes.len() as u64, Source::Manifest(bytes)));
    }
    Ok(OfflineImage {
        reference: reference.to_owned(),
        repository: parsed.repository().to_owned(),
        tag: parsed.tag().map(str::to_owned),
        digest: digest.to_owned(),
        manifests,
    })
}

async fn write_archive(
    registry: &Registry,
    client: &oci_client::Client,
    index: &OfflineIndex,
    sources: BTreeMap<String, (u64, Source)>,
    tx: &TarSender,
) -> Result<()> {
    let index_json = serde_json::to_vec_pretty(index).expect("index serializes");
    tx.file(INDEX_FILE, Bytes::from(index_json)).await?;
    tx.file("oci-layout", Bytes::from_static(br#"{"imageLayoutVersion":"1.0.0"}"#)).await?;
    tx.file("index.json", Bytes::from(layout_index(index, &sources))).await?;
    for (digest, (size, source)) in sources {
        let path = layout_blob_path(&digest)?;
        match source {
            Source::Manifest(bytes) => tx.file(&path, bytes).await?,
            Source::Registry(reference, descriptor) => {
                tx.begin_entry(&path, size).await?;
                let mut stream = client
                    .pull_blob_stream(&reference, &descriptor)
                    .await
                    .map_err(|e| image_error(&reference.whole(), format!("pulling blob {digest}: {e}")))?;
                let (mut hasher, mut sent) = (Sha256::new(), 0u64);
                while let Some(chunk) = stream.next().await {
                    let chunk =
                        chunk.map_err(|e| image_error(&reference.whole(), format!("blob {digest}: {e}")))?;
                    hasher.update(&chunk);
                    sent += chunk.len() as u64;
                    tx.send(chunk).await?;
                }
                if sent != size || format_digest(hasher.finalize()) != digest {
                    return Err(image_error(&reference.whole(), format!("blob {digest} arrived altered")));
                }
                tx.end_entry(size).await?;
            }
        }
    }
    tx.begin_entry(PACKAGE_FILE, index.package_size_bytes).await?;
    let mut package = blobs::open(&*registry.store, &index.package_digest, None).await?.stream;
    while let Some(chunk) = package.next().await {
        tx.send(chunk?).await?;
    }
    tx.end_entry(index.package_size_bytes).await
}

/// The OCI layout's `index.json`: one entry per image, named by its original reference.
fn layout_index(index: &OfflineIndex, sources: &BTreeMap<String, (u64, Source)>) -> Vec<u8> {
    let manifests: Vec<Value> = index
        .images
        .iter()
        .map(|image| {
            let top = &image.manifests[0];
            serde_json::json!({
                "mediaType": top.media_type,
                "digest": image.digest,
                "size": sources.get(&image.digest).map_or(0, |(s, _)| *s),
                "annotations": { "org.opencontainers.image.ref.name": image.reference },
            })
        })
        .collect();
    serde_json::to_vec_pretty(&serde_json::json!({ "schemaVersion": 2, "manifests": manifests }))
        .expect("index serializes")
}

pub(crate) fn image_error(registry: &str, message: String) -> Error {
    Error::ImageRegistry { registry: registry.to_owned(), message }
}
