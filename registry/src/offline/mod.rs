//! Offline packages: an app package together with all its images, as one archive for a site
//! with no network path to this registry.
//!
//! The archive is an uncompressed tar (image layers are compressed already):
//! `slipway/offline.json` first (app, version, package digest and size, every image and
//! every blob with its size), then an OCI image layout (`oci-layout`, `index.json`,
//! `blobs/sha256/<hex>`), then `slipway/package.tar.gz`. Every entry except the two layout
//! files is content addressed, so an importer checks each one against its name before it
//! pushes a single image or registers anything.

mod export;
mod import;
mod tar_stream;

use serde::{Deserialize, Serialize};

pub const OFFLINE_FORMAT: &str = "slipway.offline-package/v1";
pub const INDEX_FILE: &str = "slipway/offline.json";
pub const PACKAGE_FILE: &str = "slipway/package.tar.gz";

/// `slipway/offline.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OfflineIndex {
    pub format: String,
    pub app: String,
    pub version: String,
    pub package_digest: String,
    pub package_size_bytes: u64,
    pub images: Vec<OfflineImage>,
    /// Every blob under `blobs/sha256/`, manifests included.
    pub blobs: Vec<OfflineBlob>,
}

/// One image of the package: where it came from and its manifests (an index first, then
/// the image manifests it lists, or just one image manifest).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OfflineImage {
    pub reference: String,
    /// Repository path without the registry host, e.g. `shop/web`.
    pub repository: String,
    pub tag: Option<String>,
    pub digest: String,
    pub manifests: Vec<OfflineManifest>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OfflineManifest {
    pub digest: String,
    pub media_type: String,
    /// Config and layer blobs this manifest refers to (empty for an index).
    pub blobs: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OfflineBlob {
    pub digest: String,
    pub size_bytes: u64,
}

/// The media types an offline export accepts when it pulls a manifest.
pub(crate) const MANIFEST_TYPES: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

pub(crate) fn oci_client(insecure: bool) -> oci_client::Client {
    let protocol = if insecure {
        oci_client::client::ClientProtocol::Http
    } else {
        oci_client::client::ClientProtocol::Https
    };
    oci_client::Client::new(oci_client::client::ClientConfig { protocol, ..Default::default() })
}

/// The path of a content-addressed blob inside the layout.
pub(crate) fn layout_blob_path(digest: &str) -> crate::Result<String> {
    Ok(format!("blobs/sha256/{}", crate::archive::digest_hex(digest)?))
}
