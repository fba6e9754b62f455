//! Publishing an app package: build it (or take an uploaded one), write and verify its blob,
//! then commit all its metadata in one transaction. A crash between the two steps leaves
//! at most an orphan blob for the garbage collector, never a package row without its blob.

use std::collections::BTreeMap;

use bytes::Bytes;
use futures::Stream;
use object_store::ObjectStoreExt;
use semver::Version;
use serde_json::Value;
use sqlx::AnyConnection;

use crate::archive::{check_app_package, digest_of, write_tar_gz};
use crate::blobs::{self, StoredBlob};
use crate::error::{Error, Result};
use crate::manifest::{
    APP_FORMAT, AppManifest, COMPONENT_FORMAT, ComponentEntry, ComponentManifest, ImageRef, MANIFEST_FILE,
    Source, component_file,
};
use crate::query::PackageSummary;
use crate::version::{VersionSpec, bump_patch, parse_version, version_key};
use crate::{Registry, names, now_ms, tags};

/// How often `auto` re-reads the highest version when a concurrent publish took it: with
/// n publishes of one app racing, the last wins on its n-th attempt.
const AUTO_ATTEMPTS: usize = 32;
const MAX_FILE_PATH: usize = 255;

/// One component's build result, the input of a component package.
#[derive(Debug, Clone, PartialEq)]
pub struct ComponentInput {
    pub component_type: String,
    pub component: String,
    /// `None`: the app package's version.
    pub version: Option<Version>,
    pub images: Vec<ImageRef>,
    pub parameters: Value,
    /// The plugin that built it, `kind/name/revision`.
    pub plugin: String,
    /// Files the component type adds (a Helm chart, configuration), by relative path.
    pub files: BTreeMap<String, Vec<u8>>,
    /// What the build read, recorded so a build with the same inputs can reuse the package.
    pub inputs_digest: Option<String>,
}

impl ComponentInput {
    /// A component with no images, parameters `{}`, no files, and the app's version.
    pub fn new(component_type: &str, component: &str, plugin: &str) -> Self {
        Self {
            component_type: component_type.into(),
            component: component.into(),
            version: None,
            images: Vec::new(),
            parameters: Value::Object(Default::default()),
            plugin: plugin.into(),
            files: BTreeMap::new(),
            inputs_digest: None,
        }
    }
}

/// A component of a new app package: a new component package made from build results, or
/// one an earlier app package already holds, carried over byte for byte.
#[derive(Debug, Clone, PartialEq)]
pub enum PackageComponent {
    New(ComponentInput),
    Existing(ExistingComponent),
}

impl From<ComponentInput> for PackageComponent {
    fn from(input: ComponentInput) -> Self {
        PackageComponent::New(input)
    }
}

impl PackageComponent {
    pub fn name(&self) -> &str {
        match self {
            PackageComponent::New(input) => &input.component,
            PackageComponent::Existing(existing) => &existing.manifest.component,
        }
    }
}

/// A stored component package, as [`Registry::component_package`] reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct ExistingComponent {
    pub manifest: ComponentManifest,
    pub digest: String,
    /// The component package's `.tar.gz`, exactly as stored.
    pub bytes: Bytes,
}

/// Everything an app package is made from.
#[derive(Debug, Clone, PartialEq)]
pub struct PublishRequest {
    pub app: String,
    pub version: VersionSpec,
    pub tags: Vec<String>,
    pub creator: String,
    pub source: Source,
    pub components: Vec<PackageComponent>,
}

/// A built app package: its manifests and its deterministic `.tar.gz` bytes.
#[derive(Debug, Clone)]
pub struct BuiltPackage {
    pub manifest: AppManifest,
    pub components: Vec<ComponentManifest>,
    pub bytes: Bytes,
}

impl Registry {
    /// Builds the component packages and the app package from `request`, stores the blob
    /// and registers it. `VersionSpec::Auto` takes the highest version and bumps its patch,
    /// retrying if a concurrent publish takes that version first.
    pub async fn publish_app_package(&self, request: PublishRequest) -> Result<PackageSummary> {
        self.publish(request, None).await
    }

    /// [`Registry::publish_app_package`] at most once per `key` (a build's id): publishing
    /// again with a key that already published returns that first package, even when two
    /// publishers race.
    pub async fn publish_app_package_once(
        &self,
        request: PublishRequest,
        key: &str,
    ) -> Result<PackageSummary> {
        if let Some(first) = self.published_with(key).await? {
            return Ok(first);
        }
        self.publish(request, Some(key)).await
    }

    async fn published_with(&self, key: &str) -> Result<Option<PackageSummary>> {
        let row: Option<(String, String, String, i64, String, i64)> = sqlx::query_as(
            "SELECT app, version, digest, size_bytes, creator, created_at_ms FROM registry_app_packages
             WHERE publish_key = $1",
        )
        .bind(key)
        .fetch_optional(&self.db)
        .await?;
        Ok(row.map(|(app, version, digest, size, creator, created)| {
            PackageSummary::from_row(&app, version, digest, size, creator, created)
        }))
    }

    async fn publish(&self, request: PublishRequest, key: Option<&str>) -> Result<PackageSummary> {
        check_request(&request)?;
        for attempt in 1..=AUTO_ATTEMPTS {
            let version = match &request.version {
                VersionSpec::Auto => bump_patch(self.highest_version(&request.app).await?.as_ref()),
                VersionSpec::Exact(v) => {
                    self.refuse_existing(&request.app, v).await?;
                    v.clone()
                }
            };
            let built = build_package(&request, &version, now_ms());
            let blob = blobs::put_bytes(&*self.store, built.bytes).await?;
            match self.register(&built.manifest, &built.components, &blob, key).await {
                Err(Error::VersionExists { .. })
                    if request.version == VersionSpec::Auto && attempt < AUTO_ATTEMPTS =>
                {
                    tracing::debug!(app = %request.app, %version, "auto version taken concurrently; retrying")
                }
                other => return other,
            }
        }
        unreachable!("the last attempt returns")
    }

    /// Streams an app package someone built into the store, checks it (digest if given,
    /// layout, component digests, the app it names) and registers it.
    pub async fn upload_app_package<E: std::fmt::Display>(
        &self,
        app: &str,
        body: impl Stream<Item = Result<Bytes, E>>,
        expected_digest: Option<&str>,
    ) -> Result<PackageSummary> {
        names::check_app(app)?;
        let blob = blobs::put_stream(&*self.store, body, expected_digest).await?;
        let checked = blobs::read_blocking(&*self.store, &blob.key, check_app_package).await.and_then(
            |(manifest, components)| {
                if manifest.app == app {
                    Ok((manifest, components))
                } else {
                    Err(Error::AppMismatch { expected: app.to_owned(), found: manifest.app })
                }
            },
        );
        match checked {
            Ok((manifest, components)) => self.register(&manifest, &components, &blob, None).await,
            Err(e) => {
                // A refused upload is not kept around until the collector runs, unless
                // the same bytes already are a package.
                if !blobs::is_referenced(&self.db, &blob.digest).await.unwrap_or(true) {
                    let _ = self.store.delete(&blob.key).await;
                }
                Err(e)
            }
        }
    }

    pub(crate) async fn refuse_existing(&self, app: &str, version: &Version) -> Result<()> {
        let existing: Option<(String, String)> = sqlx::query_as(
            "SELECT version, digest FROM registry_app_packages WHERE app = $1 AND version_key = $2",
        )
        .bind(app)
        .bind(version_key(version))
        .fetch_optional(&self.db)
        .await?;
        match existing {
            Some((version, digest)) => Err(Error::VersionExists { app: app.to_owned(), version, digest }),
            None => Ok(()),
        }
    }

    async fn highest_version(&self, app: &str) -> Result<Option<Version>> {
        let row: Option<(String,)> = sqlx::query_as(
            "SELECT version FROM registry_app_packages WHERE app = $1 ORDER BY version_key DESC LIMIT 1",
        )
        .bind(app)
        .fetch_optional(&self.db)
        .await?;
        row.map(|(v,)| parse_version(&v)).transpose()
    }

    /// Commits the metadata of a stored, verified blob in one transaction: the package row
    /// (first, so its primary key and publish key decide a race), component packages, and
    /// tags.
    pub(crate) async fn register(
        &self,
        manifest: &AppManifest,
        components: &[ComponentManifest],
        blob: &StoredBlob,
        publish_key: Option<&str>,
    ) -> Result<PackageSummary> {
        let app = manifest.app.as_str();
        let app_key = version_key(&parse_version(&manifest.version)?);
        let mut write = self.begin_write(app).await?;
        let inserted = sqlx::query(
            "INSERT INTO registry_app_packages
                (app, version_key, version, digest, size_bytes, manifest, creator, created_at_ms, publish_key)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING",
        )
        .bind(app)
        .bind(&app_key)
        .bind(&manifest.version)
        .bind(&blob.digest)
        .bind(blob.size_bytes as i64)
        .bind(serde_json::to_string(manifest).expect("manifest serializes"))
        .bind(&manifest.creator)
        .bind(manifest.created_at_ms)
        .bind(publish_key)
        .execute(&mut *write.tx)
        .await?;
        if inserted.rows_affected() == 0 {
            drop(write);
            if let Some(first) = match publish_key {
                Some(key) => self.published_with(key).await?,
                None => None,
            } {
                tracing::info!(app, key = publish_key, version = %first.version, "already published by this publisher");
                return Ok(first);
            }
            self.refuse_existing(app, &parse_version(&manifest.version)?).await?;
            return Err(Error::VersionExists {
                app: app.into(),
                version: manifest.version.clone(),
                digest: String::new(),
            });
        }
        for (component, entry) in components.iter().zip(&manifest.components) {
            insert_component(&mut write.tx, component, entry, &app_key).await?;
        }
        for tag in &manifest.tags {
            tags::apply_tag(&mut write.tx, app, &app_key, &manifest.version, tag, &manifest.creator).await?;
        }
        write.commit().await?;
        metrics::counter!("slipway_registry_publishes_total").increment(1);
        metrics::counter!("slipway_registry_published_bytes_total").increment(blob.size_bytes);
        tracing::info!(app, version = %manifest.version, digest = %blob.digest, "published app package");
        if self.config.keep_versions > 0 {
            self.apply_retention(app, self.config.keep_versions, &manifest.creator).await?;
        }
        Ok(PackageSummary {
            app: app.to_owned(),
            version: manifest.version.clone(),
            digest: blob.digest.clone(),
            size_bytes: blob.size_bytes,
            creator: manifest.creator.clone(),
            created_at_ms: manifest.created_at_ms,
        })
    }
}

/// Inserts a component package row (or finds the identical one a previous app package
/// brought) and links it to the app package.
async fn insert_component(
    tx: &mut AnyConnection,
    component: &ComponentManifest,
    entry: &ComponentEntry,
    app_key: &str,
) -> Result<()> {
    let key = version_key(&parse_version(&component.version)?);
    sqlx::query(
        "INSERT INTO registry_component_packages
            (app, component, version_key, version, component_type, digest, size_bytes, manifest, created_at_ms,
             inputs_digest)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (app, component, version_key) DO NOTHING",
    )
    .bind(&component.app)
    .bind(&component.component)
    .bind(&key)
    .bind(&component.version)
    .bind(&component.component_type)
    .bind(&entry.digest)
    .bind(entry.size_bytes as i64)
    .bind(serde_json::to_string(component).expect("manifest serializes"))
    .bind(component.created_at_ms)
    .bind(&component.inputs_digest)
    .execute(&mut *tx)
    .await?;
    let (digest,): (String,) = sqlx::query_as(
        "SELECT digest FROM registry_component_packages WHERE app = $1 AND component = $2 AND version_key = $3",
    )
    .bind(&component.app)
    .bind(&component.component)
    .bind(&key)
    .fetch_one(&mut *tx)
    .await?;
    if digest != entry.digest {
        return Err(Error::ComponentVersionExists {
            app: component.app.clone(),
            component: component.component.clone(),
            version: component.version.clone(),
            digest,
        });
    }
    sqlx::query(
        "INSERT INTO registry_app_package_components (app, app_version_key, component, component_version_key)
         VALUES ($1, $2, $3, $4)",
    )
    .bind(&component.app)
    .bind(app_key)
    .bind(&component.component)
    .bind(&key)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

fn check_request(request: &PublishRequest) -> Result<()> {
    names::check_app(&request.app)?;
    names::check_actor(&request.creator)?;
    for tag in &request.tags {
        names::check_tag(tag)?;
    }
    for (i, c) in request.components.iter().enumerate() {
        names::check_component(c.name())?;
        if request.components[..i].iter().any(|o| o.name() == c.name()) {
            return Err(Error::invalid_package(format!("component {} given twice", c.name())));
        }
        match c {
            PackageComponent::New(input) => {
                for path in input.files.keys() {
                    check_file_path(path)?;
                }
            }
            PackageComponent::Existing(existing) if existing.manifest.app != request.app => {
                return Err(Error::AppMismatch {
                    expected: request.app.clone(),
                    found: existing.manifest.app.clone(),
                });
            }
            PackageComponent::Existing(_) => {}
        }
    }
    Ok(())
}

/// Component files are relative paths of plain segments: no `..`, no absolute paths, so
/// unpacking a package can never write outside its directory.
fn check_file_path(path: &str) -> Result<()> {
    let ok = !path.is_empty()
        && path.len() <= MAX_FILE_PATH
        && path.split('/').all(|seg| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && seg.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        });
    if ok {
        Ok(())
    } else {
        Err(Error::invalid_package(format!(
            "file path `{path}`: relative, segments of A-Z a-z 0-9 . _ -, at most {MAX_FILE_PATH} characters"
        )))
    }
}

/// Builds the component packages and the app package holding them, deterministically for
/// the given inputs and time.
pub fn build_package(request: &PublishRequest, version: &Version, now_ms: i64) -> BuiltPackage {
    let mut components = Vec::new();
    let mut entries_meta = Vec::new();
    let mut component_files: Vec<(String, Bytes)> = Vec::new();
    for component in &request.components {
        let (manifest, bytes) = match component {
            PackageComponent::New(input) => new_component(request, input, version, now_ms),
            PackageComponent::Existing(existing) => (existing.manifest.clone(), existing.bytes.clone()),
        };
        entries_meta.push(ComponentEntry {
            component_type: manifest.component_type.clone(),
            component: manifest.component.clone(),
            version: manifest.version.clone(),
            digest: digest_of(&bytes),
            size_bytes: bytes.len() as u64,
            file: component_file(&manifest.component),
        });
        component_files.push((component_file(&manifest.component), bytes));
        components.push(manifest);
    }
    let manifest = AppManifest {
        format: APP_FORMAT.into(),
        app: request.app.clone(),
        version: version.to_string(),
        tags: request.tags.clone(),
        creator: request.creator.clone(),
        created_at_ms: now_ms,
        source: request.source.clone(),
        components: entries_meta,
    };
    let manifest_json = serde_json::to_vec_pretty(&manifest).expect("manifest serializes");
    let mut entries: Vec<(String, &[u8])> = vec![(MANIFEST_FILE.into(), &manifest_json)];
    entries.extend(component_files.iter().map(|(p, c)| (p.clone(), c.as_ref())));
    BuiltPackage { manifest, components, bytes: Bytes::from(write_tar_gz(&entries)) }
}

/// A new component package (manifest and `.tar.gz`) from one component's build results.
fn new_component(
    request: &PublishRequest,
    input: &ComponentInput,
    version: &Version,
    now_ms: i64,
) -> (ComponentManifest, Bytes) {
    let manifest = ComponentManifest {
        format: COMPONENT_FORMAT.into(),
        app: request.app.clone(),
        component_type: input.component_type.clone(),
        component: input.component.clone(),
        version: input.version.as_ref().unwrap_or(version).to_string(),
        images: input.images.clone(),
        parameters: input.parameters.clone(),
        source: request.source.clone(),
        plugin: input.plugin.clone(),
        created_at_ms: now_ms,
        creator: request.creator.clone(),
        inputs_digest: input.inputs_digest.clone(),
    };
    let manifest_json = serde_json::to_vec_pretty(&manifest).expect("manifest serializes");
    let mut entries: Vec<(String, &[u8])> = vec![(MANIFEST_FILE.into(), &manifest_json)];
    entries.extend(input.files.iter().map(|(p, c)| (format!("files/{p}"), c.as_slice())));
    let bytes = Bytes::from(write_tar_gz(&entries));
    (manifest, bytes)
}
