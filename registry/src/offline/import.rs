//! Import: stage the archive, check every entry against its digest (naming the first that
//! fails), and only then push the images into this site's registry and register the
//! package under the same digest. A refused archive pushes and registers nothing.

use std::collections::BTreeMap;
use std::io::Read;

use bytes::Bytes;
use futures::{Stream, TryStreamExt};
use http::HeaderValue;
use object_store::{GetRange, ObjectStoreExt};
use oci_client::Reference;

use super::export::image_error;
use super::{INDEX_FILE, OFFLINE_FORMAT, OfflineIndex, PACKAGE_FILE, oci_client};
use crate::archive::{HashingReader, check_app_package};
use crate::error::{Error, Result};
use crate::manifest::{AppManifest, ComponentManifest, MAX_MANIFEST_BYTES};
use crate::query::PackageSummary;
use crate::version::parse_version;
use crate::{Registry, blobs, names};

/// Largest image manifest kept in memory for pushing.
const MAX_IMAGE_MANIFEST: u64 = 4 * 1024 * 1024;

/// What the check pass learned: the index, where each blob sits in the staged archive,
/// the manifests' bytes, and the package's own manifests.
struct Checked {
    index: OfflineIndex,
    offsets: BTreeMap<String, std::ops::Range<u64>>,
    manifests: BTreeMap<String, Bytes>,
    package: (AppManifest, Vec<ComponentManifest>),
}

impl Registry {
    /// Imports an offline archive for `app` into this registry and its image registry.
    pub async fn import_offline<E: std::fmt::Display>(
        &self,
        app: &str,
        body: impl Stream<Item = Result<Bytes, E>>,
    ) -> Result<PackageSummary> {
        names::check_app(app)?;
        let staged = blobs::stage_stream(&*self.store, body).await?;
        let result = self.import_staged(app, &staged.key).await;
        let _ = self.store.delete(&staged.key).await;
        result
    }

    async fn import_staged(&self, app: &str, staged: &object_store::path::Path) -> Result<PackageSummary> {
        let checked = blobs::read_blocking(&*self.store, staged, check_archive).await?;
        let (manifest, components) = &checked.package;
        if checked.index.app != app || manifest.app != app {
            return Err(Error::AppMismatch { expected: app.to_owned(), found: manifest.app.clone() });
        }
        self.refuse_existing(app, &parse_version(&manifest.version)?).await?;
        self.push_images(staged, &checked).await?;
        let range = checked.offsets[PACKAGE_FILE].clone();
        let package = blobs::open_key(&*self.store, staged.clone(), Some(GetRange::Bounded(range))).await?;
        let blob =
            blobs::put_stream(&*self.store, package.stream, Some(&checked.index.package_digest)).await?;
        self.register(manifest, components, &blob, None).await
    }

    /// Pushes every image: for each manifest (image manifests before the index that lists
    /// them) its blobs, streamed from the staged archive, then the manifest itself; the
    /// image's tag goes on last so nobody pulls it half pushed.
    async fn push_images(&self, staged: &object_store::path::Path, checked: &Checked) -> Result<()> {
        let client = oci_client(self.config.image_registry_insecure);
        let target = &self.config.image_registry;
        for image in &checked.index.images {
            let at = |d: &str| Reference::with_digest(target.clone(), image.repository.clone(), d.to_owned());
            for manifest in image.manifests.iter().rev() {
                for digest in &manifest.blobs {
                    let reference = at(digest);
                    if client.blob_exists(&reference, digest).await.unwrap_or(false) {
                        continue;
                    }
                    let range = checked.offsets[digest].clone();
                    let size = range.end - range.start;
                    let stream =
                        blobs::open_key(&*self.store, staged.clone(), Some(GetRange::Bounded(range)))
                            .await?
                            .stream
                            .map_err(|e| {
                                oci_client::errors::OciDistributionError::GenericError(Some(e.to_string()))
                            });
                    client
                        .push_blob_stream(&reference, stream, digest, Some(size))
                        .await
                        .map_err(|e| image_error(target, format!("pushing blob {digest}: {e}")))?;
                }
                let reference = match (&image.tag, manifest.digest == image.digest) {
                    (Some(tag), true) => {
                        Reference::with_tag(target.clone(), image.repository.clone(), tag.clone())
                    }
                    _ => at(&manifest.digest),
                };
                let content_type = HeaderValue::from_str(&manifest.media_type)
                    .map_err(|e| image_error(target, format!("media type {}: {e}", manifest.media_type)))?;
                client
                    .push_manifest_raw(&reference, checked.manifests[&manifest.digest].clone(), content_type)
                    .await
                    .map_err(|e| image_error(target, format!("pushing manifest {}: {e}", manifest.digest)))?;
            }
        }
        Ok(())
    }
}

fn bad(reason: String, digest: Option<&str>) -> Error {
    Error::BadArchive { reason, digest: digest.map(str::to_owned) }
}

/// Reads the staged archive once, checking each entry as it passes.
fn check_archive(reader: Box<dyn Read + Send>) -> Result<Checked> {
    let mut archive = tar::Archive::new(reader);
    let mut entries = archive.entries().map_err(|e| bad(format!("not a tar archive: {e}"), None))?;
    let mut first = entries
        .next()
        .ok_or_else(|| bad("empty archive".into(), None))?
        .map_err(|e| bad(format!("not a tar archive: {e}"), None))?;
    if first.path().map(|p| p.to_string_lossy() != INDEX_FILE).unwrap_or(true)
        || first.size() > MAX_MANIFEST_BYTES
    {
        return Err(bad(format!("the first entry must be {INDEX_FILE}"), None));
    }
    let mut text = Vec::new();
    first.read_to_end(&mut text).map_err(|e| bad(format!("{INDEX_FILE}: {e}"), None))?;
    let index: OfflineIndex =
        serde_json::from_slice(&text).map_err(|e| bad(format!("{INDEX_FILE}: {e}"), None))?;
    if index.format != OFFLINE_FORMAT {
        return Err(bad(
            format!("unknown format `{}` (this registry reads {OFFLINE_FORMAT})", index.format),
            None,
        ));
    }
    let is_manifest = |d: &str| index.images.iter().flat_map(|i| &i.manifests).any(|m| m.digest == d);
    let mut offsets = BTreeMap::new();
    let mut manifests = BTreeMap::new();
    let mut package = None;
    let mut last = INDEX_FILE.to_owned();
    for entry in entries {
        let entry = entry.map_err(|e| bad(format!("truncated or corrupt after {last}: {e}"), None))?;
        let path = entry.path().map_err(|e| bad(e.to_string(), None))?.to_string_lossy().into_owned();
        let range = entry.raw_file_position()..entry.raw_file_position() + entry.size();
        let expected = match path.as_str() {
            "oci-layout" | "index.json" => None,
            PACKAGE_FILE => Some(index.package_digest.clone()),
            p => match p.strip_prefix("blobs/sha256/") {
                Some(hex) => Some(format!("sha256:{hex}")),
                None => return Err(bad(format!("unexpected entry {p}"), None)),
            },
        };
        let mut hashing = HashingReader::new(entry);
        let mut kept = Vec::new();
        if path == PACKAGE_FILE {
            // The package must be a sound app package too, not only the right bytes.
            package = Some(
                check_app_package(&mut hashing)
                    .map_err(|e| bad(format!("{PACKAGE_FILE}: {e}"), Some(&index.package_digest)))?,
            );
        } else if expected.as_deref().is_some_and(|d| is_manifest(d))
            && range.end - range.start <= MAX_IMAGE_MANIFEST
        {
            hashing.read_to_end(&mut kept).map_err(|e| bad(format!("{path}: {e}"), expected.as_deref()))?;
        }
        std::io::copy(&mut hashing, &mut std::io::sink())
            .map_err(|e| bad(format!("{path}: truncated: {e}"), expected.as_deref()))?;
        let (actual, size) = hashing.finish();
        if let Some(expected) = expected {
            if actual != expected || size != range.end - range.start {
                return Err(bad(format!("{path} holds content with digest {actual}"), Some(&expected)));
            }
            if !kept.is_empty() {
                manifests.insert(expected.clone(), Bytes::from(kept));
            }
            offsets.insert(if path == PACKAGE_FILE { path.clone() } else { expected }, range);
        }
        last = path;
    }
    let listed = index.blobs.iter().map(|b| &b.digest);
    let referenced =
        index.images.iter().flat_map(|i| &i.manifests).flat_map(|m| m.blobs.iter().chain([&m.digest]));
    for digest in listed.chain(referenced) {
        if !offsets.contains_key(digest) || (is_manifest(digest) && !manifests.contains_key(digest)) {
            return Err(bad(format!("blob {digest} is listed but missing"), Some(digest)));
        }
    }
    let package =
        package.ok_or_else(|| bad(format!("{PACKAGE_FILE} is missing"), Some(&index.package_digest)))?;
    Ok(Checked { index, offsets, manifests, package })
}
