//! Finding the component package a build would make again, and reading it back out of an
//! app package that holds it, so a new app package carries it unchanged (same bytes, same
//! digest) instead of a rebuilt copy.

use std::io::Read;

use bytes::Bytes;

use crate::archive::digest_of;
use crate::blobs;
use crate::error::{Error, Result};
use crate::manifest::{ComponentManifest, component_file};
use crate::publish::ExistingComponent;
use crate::version::{parse_version, version_key};
use crate::{Registry, names};

/// Largest component package read back for reuse; they hold manifests and small files.
const MAX_COMPONENT_BYTES: u64 = 256 * 1024 * 1024;

impl Registry {
    /// The manifest of the newest component package of `component` in `app` built from
    /// `inputs_digest`; [`Registry::component_package`] reads its bytes.
    pub async fn component_by_inputs(
        &self,
        app: &str,
        component: &str,
        inputs_digest: &str,
    ) -> Result<Option<ComponentManifest>> {
        let row: Option<(String,)> = sqlx::query_as(
            "SELECT manifest FROM registry_component_packages
             WHERE app = $1 AND component = $2 AND inputs_digest = $3 ORDER BY version_key DESC LIMIT 1",
        )
        .bind(app)
        .bind(component)
        .bind(inputs_digest)
        .fetch_optional(&self.db)
        .await?;
        row.map(|(manifest,)| {
            serde_json::from_str(&manifest).map_err(|e| Error::invalid_package(e.to_string()))
        })
        .transpose()
    }

    /// One stored component package with its bytes, read from the newest app package that
    /// holds it and checked against the digest recorded for it.
    pub async fn component_package(
        &self,
        app: &str,
        component: &str,
        version: &str,
    ) -> Result<ExistingComponent> {
        names::check_app(app)?;
        names::check_component(component)?;
        let key = version_key(&parse_version(version)?);
        let row: Option<(String, String, String)> = sqlx::query_as(
            "SELECT c.digest, c.manifest, p.digest FROM registry_component_packages c
             JOIN registry_app_package_components l
               ON l.app = c.app AND l.component = c.component AND l.component_version_key = c.version_key
             JOIN registry_app_packages p ON p.app = l.app AND p.version_key = l.app_version_key
             WHERE c.app = $1 AND c.component = $2 AND c.version_key = $3
             ORDER BY p.version_key DESC LIMIT 1",
        )
        .bind(app)
        .bind(component)
        .bind(&key)
        .fetch_optional(&self.db)
        .await?;
        let (digest, manifest, app_digest) = row.ok_or_else(|| Error::ComponentNotFound {
            app: app.into(),
            component: component.into(),
            version: version.into(),
        })?;
        let manifest: ComponentManifest =
            serde_json::from_str(&manifest).map_err(|e| Error::invalid_package(e.to_string()))?;
        let file = component_file(component);
        let blob = blobs::blob_key(&app_digest)?;
        let bytes =
            blobs::read_blocking(&*self.store, &blob, move |reader| entry_bytes(reader, &file)).await?;
        let found = digest_of(&bytes);
        if found != digest {
            return Err(Error::invalid_package(format!(
                "component package {component} {version} in app package {app_digest} has digest {found}, recorded {digest}"
            )));
        }
        Ok(ExistingComponent { manifest, digest, bytes: Bytes::from(bytes) })
    }
}

/// The bytes of the entry at `path` of an app package archive.
fn entry_bytes(reader: Box<dyn Read + Send>, path: &str) -> Result<Vec<u8>> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(reader));
    for entry in archive.entries()? {
        let entry = entry?;
        if entry.path()?.to_string_lossy() != path {
            continue;
        }
        if entry.size() > MAX_COMPONENT_BYTES {
            return Err(Error::invalid_package(format!("{path} is larger than {MAX_COMPONENT_BYTES} bytes")));
        }
        let mut bytes = Vec::with_capacity(entry.size() as usize);
        entry.take(MAX_COMPONENT_BYTES).read_to_end(&mut bytes)?;
        return Ok(bytes);
    }
    Err(Error::invalid_package(format!("the app package holds no {path}")))
}
