//! Registry I/O with `oci-client`: pulling base images into the blob store, and pushing built
//! images blob by blob. A push uploads only the blobs the registry lacks and writes the tag
//! last, after every blob and the manifest (by digest) are in, so a failed push never leaves a
//! half image behind a tag.

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::manifest::OciManifest;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

use crate::error::{Error, Result};
use crate::image::{Descriptor, ImageConfig, LayerRef, MANIFEST_MEDIA_TYPE};
use crate::store::BlobStore;

/// Credentials for one registry.
#[derive(Clone, Debug, Default)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

/// A base image resolved to its manifest digest, config and layers (now in the blob store).
#[derive(Debug, Clone)]
pub struct BaseImage {
    pub manifest_digest: String,
    pub config: ImageConfig,
    pub layers: Vec<LayerRef>,
}

/// A finished image ready to push: the manifest bytes and the blobs it names.
#[derive(Debug, Clone)]
pub struct ImageToPush {
    pub manifest: Vec<u8>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

/// What a push did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PushReport {
    pub manifest_digest: String,
    pub uploaded_blobs: usize,
    pub uploaded_bytes: u64,
    pub skipped_blobs: usize,
}

/// An image its registry serves: the manifest (or index) digest and the architectures it
/// runs on.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedImage {
    pub digest: String,
    pub architectures: Vec<String>,
}

pub struct RegistryClient {
    client: Client,
    auth: RegistryAuth,
}

impl RegistryClient {
    /// `insecure` registries (host:port) are spoken to over plain HTTP, as loopback test
    /// registries need.
    pub fn new(insecure: Vec<String>, credentials: Option<Credentials>) -> Self {
        let config = ClientConfig { protocol: ClientProtocol::HttpsExcept(insecure), ..Default::default() };
        let auth =
            credentials.map_or(RegistryAuth::Anonymous, |c| RegistryAuth::Basic(c.username, c.password));
        RegistryClient { client: Client::new(config), auth }
    }

    /// Resolves `image` and copies the layers the store lacks.
    pub async fn pull(&self, image: &str, store: &BlobStore) -> Result<BaseImage> {
        let bad = |reason: String| Error::BaseImage { image: image.to_string(), reason };
        let reference: Reference = image.parse().map_err(|e| bad(format!("not an image reference: {e}")))?;
        let (manifest, manifest_digest, config) = self
            .client
            .pull_manifest_and_config(&reference, &self.auth)
            .await
            .map_err(|e| bad(e.to_string()))?;
        let config: ImageConfig =
            serde_json::from_str(&config).map_err(|e| bad(format!("unreadable image config: {e}")))?;
        if config.rootfs.diff_ids.len() != manifest.layers.len() {
            return Err(bad("config and manifest disagree on the number of layers".into()));
        }
        let mut layers = Vec::new();
        for (layer, diff_id) in manifest.layers.iter().zip(&config.rootfs.diff_ids) {
            if !store.has_blob(&layer.digest).await? {
                let mut data = Vec::with_capacity(layer.size.max(0) as usize);
                self.client.pull_blob(&reference, layer, &mut data).await.map_err(|e| bad(e.to_string()))?;
                store.put_blob(&layer.digest, data.into()).await?;
            }
            layers.push(LayerRef {
                digest: layer.digest.clone(),
                diff_id: diff_id.clone(),
                size: layer.size as u64,
            });
        }
        Ok(BaseImage { manifest_digest, config, layers })
    }

    /// The manifest digest `image` resolves to now, without pulling anything.
    pub async fn manifest_digest(&self, image: &str) -> Result<String> {
        let bad = |reason: String| Error::BaseImage { image: image.to_string(), reason };
        let reference: Reference = image.parse().map_err(|e| bad(format!("not an image reference: {e}")))?;
        self.client.fetch_manifest_digest(&reference, &self.auth).await.map_err(|e| bad(e.to_string()))
    }

    /// Whether the registry still serves `image`'s repository at manifest `digest`.
    pub async fn has_manifest(&self, image: &str, digest: &str) -> Result<bool> {
        let bad = |reason: String| Error::BaseImage { image: image.to_string(), reason };
        let reference: Reference = image.parse().map_err(|e| bad(format!("not an image reference: {e}")))?;
        let pinned =
            Reference::with_digest(reference.registry().into(), reference.repository().into(), digest.into());
        let found =
            self.client.fetch_manifest_digest(&pinned, &self.auth).await.map_err(|e| bad(e.to_string()))?;
        Ok(found == digest)
    }

    /// Looks `image` up in its registry with one manifest GET (and, for a single-platform
    /// image, its config blob for the architecture); `None` when the registry has no such
    /// repository, tag or digest. Other failures (unreachable, unauthorised) are errors, so a
    /// caller never mistakes an outage for a missing image.
    pub async fn resolve(&self, image: &str) -> Result<Option<ResolvedImage>> {
        let reference: Reference = image.parse().map_err(|e| Error::Registry {
            registry: image.to_string(),
            reason: format!("not an image reference: {e}"),
        })?;
        let fail = |e: OciDistributionError| Error::Registry {
            registry: reference.registry().to_string(),
            reason: format!("{image}: {e}"),
        };
        let (manifest, digest) = match self.client.pull_manifest(&reference, &self.auth).await {
            Ok(found) => found,
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(fail(e)),
        };
        let mut architectures: Vec<String> = match manifest {
            // Attestation entries in an index carry `unknown/unknown`: not a platform.
            OciManifest::ImageIndex(index) => index
                .manifests
                .iter()
                .filter_map(|entry| entry.platform.as_ref())
                .map(|platform| platform.architecture.to_string())
                .filter(|arch| arch != "unknown")
                .collect(),
            OciManifest::Image(manifest) => {
                let mut config = Vec::new();
                self.client.pull_blob(&reference, &manifest.config, &mut config).await.map_err(fail)?;
                let config: ImageConfig = serde_json::from_slice(&config)
                    .map_err(|e| Error::ImageData(format!("{image}: unreadable image config: {e}")))?;
                vec![config.architecture]
            }
        };
        architectures.sort();
        architectures.dedup();
        Ok(Some(ResolvedImage { digest, architectures }))
    }

    /// Pushes `image` to `target` (`registry/repo:tag`).
    pub async fn push(&self, target: &str, image: &ImageToPush, store: &BlobStore) -> Result<PushReport> {
        let reference: Reference = target.parse().map_err(|e| Error::Registry {
            registry: target.to_string(),
            reason: format!("not an image reference: {e}"),
        })?;
        let fail = |e: oci_client::errors::OciDistributionError| Error::Registry {
            registry: reference.registry().to_string(),
            reason: e.to_string(),
        };
        self.client.auth(&reference, &self.auth, oci_client::RegistryOperation::Push).await.map_err(&fail)?;
        let mut report = PushReport::default();
        for blob in image.layers.iter().chain(std::iter::once(&image.config)) {
            if self.client.blob_exists(&reference, &blob.digest).await.map_err(&fail)? {
                report.skipped_blobs += 1;
                continue;
            }
            let data = store.blob(&blob.digest).await?;
            self.client.push_blob(&reference, data, &blob.digest).await.map_err(&fail)?;
            report.uploaded_blobs += 1;
            report.uploaded_bytes += blob.size;
        }
        let digest = crate::digest::sha256_digest(&image.manifest);
        let content_type = http_header(MANIFEST_MEDIA_TYPE);
        let by_digest = Reference::with_digest(
            reference.registry().into(),
            reference.repository().into(),
            digest.clone(),
        );
        self.client
            .push_manifest_raw(&by_digest, image.manifest.clone(), content_type.clone())
            .await
            .map_err(&fail)?;
        self.client
            .push_manifest_raw(&reference, image.manifest.clone(), content_type)
            .await
            .map_err(&fail)?;
        report.manifest_digest = digest;
        Ok(report)
    }
}

/// Whether `image` is an image reference (`registry/repository[:tag][@digest]`).
pub fn check_reference(image: &str) -> std::result::Result<(), String> {
    image.parse::<Reference>().map(|_| ()).map_err(|e| format!("`{image}` is not an image reference: {e}"))
}

/// `image` pinned to `digest`: `registry/repository@digest`, any tag dropped (the digest is
/// what was verified; a tag may move).
pub fn pin(image: &str, digest: &str) -> std::result::Result<String, String> {
    let reference: Reference =
        image.parse().map_err(|e| format!("`{image}` is not an image reference: {e}"))?;
    Ok(format!("{}/{}@{digest}", reference.registry(), reference.repository()))
}

/// A registry's answer that the repository or manifest does not exist (as opposed to an
/// outage or a refusal).
fn is_not_found(e: &OciDistributionError) -> bool {
    match e {
        OciDistributionError::ImageManifestNotFoundError(_) => true,
        OciDistributionError::ServerError { code, .. } => *code == 404,
        OciDistributionError::RegistryError { envelope, .. } => envelope
            .errors
            .iter()
            .any(|e| matches!(e.code, OciErrorCode::ManifestUnknown | OciErrorCode::NameUnknown)),
        _ => false,
    }
}

fn http_header(value: &'static str) -> http::HeaderValue {
    http::HeaderValue::from_static(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pinned_reference_keeps_registry_and_repository_and_drops_the_tag() {
        let digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let pinned = format!("127.0.0.1:5000/ci/web@{digest}");
        assert_eq!(pin("127.0.0.1:5000/ci/web:1.4.0", digest).unwrap(), pinned);
        assert_eq!(pin(&pinned, digest).unwrap(), pinned);
        assert_eq!(pin("busybox", digest).unwrap(), format!("docker.io/library/busybox@{digest}"));
        assert!(check_reference("Not A Reference!").is_err());
    }
}
