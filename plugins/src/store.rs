//! Where plugins live between restarts: each package archive in the object store under a
//! content-addressed key, and scripts, revisions and the active-revision map in the
//! database, so every replica sees the same plugins.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use sqlx::{Any, AnyPool, Transaction};

use crate::error::Error;
use crate::model::{PackageInfo, RevisionInfo, ScriptInfo, ScriptRevisions};
use crate::package::ParsedPackage;
use crate::triple::{PluginTriple, ScriptKind};

/// One installed script revision with its source.
#[derive(Debug, Clone)]
pub struct StoredScript {
    pub triple: PluginTriple,
    pub package: String,
    pub file: String,
    pub source: String,
    pub code_hash: String,
}

impl StoredScript {
    /// The module name the engine reports in stack traces: `package/file`.
    pub fn module_name(&self) -> String {
        format!("{}/{}", self.package, self.file)
    }
}

#[derive(Clone)]
pub struct Store {
    db: AnyPool,
    objects: Arc<dyn ObjectStore>,
}

type ScriptRow = (String, String, i64, String, String, String, String);

fn script_from_row(
    (kind, name, revision, package, file, source, code_hash): ScriptRow,
) -> Result<StoredScript, Error> {
    Ok(StoredScript { triple: triple_from(&kind, name, revision)?, package, file, source, code_hash })
}

fn triple_from(kind: &str, name: String, revision: i64) -> Result<PluginTriple, Error> {
    let kind: ScriptKind = kind.parse()?;
    Ok(PluginTriple { kind, name, revision: revision as u32 })
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

impl Store {
    pub fn new(db: AnyPool, objects: Arc<dyn ObjectStore>) -> Self {
        Self { db, objects }
    }

    pub async fn script(&self, triple: &PluginTriple) -> Result<Option<StoredScript>, Error> {
        let row: Option<ScriptRow> = sqlx::query_as(
            "SELECT kind, name, revision, package, file, source, code_hash FROM plugin_scripts
             WHERE kind = $1 AND name = $2 AND revision = $3",
        )
        .bind(triple.kind.as_str())
        .bind(&triple.name)
        .bind(i64::from(triple.revision))
        .fetch_optional(&self.db)
        .await?;
        row.map(script_from_row).transpose()
    }

    /// The whole active-revision map (it is small: one row per kind+name).
    pub async fn active_map(&self) -> Result<HashMap<(ScriptKind, String), u32>, Error> {
        let rows: Vec<(String, String, i64)> =
            sqlx::query_as("SELECT kind, name, revision FROM plugin_active").fetch_all(&self.db).await?;
        rows.into_iter().map(|(kind, name, revision)| Ok(((kind.parse()?, name), revision as u32))).collect()
    }

    pub async fn package_digest(&self, name: &str) -> Result<Option<String>, Error> {
        let row: Option<(String,)> = sqlx::query_as("SELECT digest FROM plugin_packages WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.db)
            .await?;
        Ok(row.map(|(d,)| d))
    }

    /// Stores the archive, then registers every script in one transaction: all or none.
    /// A kind+name without an active revision gets this package's revision as active.
    pub async fn install(&self, package: &ParsedPackage, archive: Bytes) -> Result<(), Error> {
        let key =
            Path::from(format!("plugins/packages/{}.tar.gz", package.digest.trim_start_matches("sha256:")));
        self.objects.put(&key, PutPayload::from(archive)).await?;
        let now = now_ms();
        let mut tx = begin_write(&self.db).await?;
        for script in &package.scripts {
            let t = &script.triple;
            let existing: Option<(String, String)> = sqlx::query_as(
                "SELECT package, code_hash FROM plugin_scripts WHERE kind = $1 AND name = $2 AND revision = $3",
            )
            .bind(t.kind.as_str())
            .bind(&t.name)
            .bind(i64::from(t.revision))
            .fetch_optional(&mut *tx)
            .await?;
            match existing {
                Some((owner, hash)) if owner != package.name || hash != script.code_hash => {
                    return Err(Error::RevisionConflict { triple: t.clone(), package: owner });
                }
                Some(_) => continue,
                None => {}
            }
            sqlx::query(
                "INSERT INTO plugin_scripts (kind, name, revision, package, package_version, file, source, code_hash, params_schema, installed_at_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            )
            .bind(t.kind.as_str())
            .bind(&t.name)
            .bind(i64::from(t.revision))
            .bind(&package.name)
            .bind(&package.version)
            .bind(&script.file)
            .bind(&script.source)
            .bind(&script.code_hash)
            .bind(script.params_schema.as_ref().map(|s| s.to_string()))
            .bind(now)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO plugin_active (kind, name, revision, updated_at_ms) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (kind, name) DO NOTHING",
            )
            .bind(t.kind.as_str())
            .bind(&t.name)
            .bind(i64::from(t.revision))
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(
            "INSERT INTO plugin_packages (name, version, description, digest, object_key, installed_at_ms)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (name) DO UPDATE SET version = excluded.version, description = excluded.description,
               digest = excluded.digest, object_key = excluded.object_key, installed_at_ms = excluded.installed_at_ms",
        )
        .bind(&package.name)
        .bind(&package.version)
        .bind(&package.description)
        .bind(&package.digest)
        .bind(key.as_ref())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn activate(&self, triple: &PluginTriple) -> Result<(), Error> {
        if self.script(triple).await?.is_none() {
            return Err(Error::UnknownRevision { triple: triple.clone() });
        }
        sqlx::query(
            "INSERT INTO plugin_active (kind, name, revision, updated_at_ms) VALUES ($1, $2, $3, $4)
             ON CONFLICT (kind, name) DO UPDATE SET revision = excluded.revision, updated_at_ms = excluded.updated_at_ms",
        )
        .bind(triple.kind.as_str())
        .bind(&triple.name)
        .bind(i64::from(triple.revision))
        .bind(now_ms())
        .execute(&self.db)
        .await?;
        Ok(())
    }

    pub async fn list(&self) -> Result<Vec<PackageInfo>, Error> {
        let packages: Vec<(String, String, String, String, i64)> = sqlx::query_as(
            "SELECT name, version, description, digest, installed_at_ms FROM plugin_packages ORDER BY name",
        )
        .fetch_all(&self.db)
        .await?;
        let scripts: Vec<(String, String, i64, String, String, Option<String>)> = sqlx::query_as(
            "SELECT kind, name, revision, package, file, params_schema FROM plugin_scripts ORDER BY kind, name, revision",
        )
        .fetch_all(&self.db)
        .await?;
        let active = self.active_map().await?;
        let mut by_package: BTreeMap<String, Vec<ScriptInfo>> = BTreeMap::new();
        for (kind, name, revision, package, file, schema) in scripts {
            let triple = triple_from(&kind, name, revision)?;
            let is_active = active.get(&(triple.kind, triple.name.clone())) == Some(&triple.revision);
            let params_schema = schema.and_then(|s| serde_json::from_str(&s).ok());
            by_package.entry(package).or_default().push(ScriptInfo {
                triple,
                file,
                active: is_active,
                params_schema,
            });
        }
        Ok(packages
            .into_iter()
            .map(|(name, version, description, digest, installed_at_ms)| PackageInfo {
                scripts: by_package.remove(&name).unwrap_or_default(),
                name,
                version,
                description,
                digest,
                installed_at_ms,
            })
            .collect())
    }

    pub async fn revisions(&self, kind: ScriptKind, name: &str) -> Result<ScriptRevisions, Error> {
        let rows: Vec<(i64, String, String, String, i64)> = sqlx::query_as(
            "SELECT revision, package, package_version, file, installed_at_ms FROM plugin_scripts
             WHERE kind = $1 AND name = $2 ORDER BY revision",
        )
        .bind(kind.as_str())
        .bind(name)
        .fetch_all(&self.db)
        .await?;
        if rows.is_empty() {
            return Err(Error::UnknownScript { kind, name: name.to_owned() });
        }
        let active: Option<(i64,)> =
            sqlx::query_as("SELECT revision FROM plugin_active WHERE kind = $1 AND name = $2")
                .bind(kind.as_str())
                .bind(name)
                .fetch_optional(&self.db)
                .await?;
        Ok(ScriptRevisions {
            kind,
            name: name.to_owned(),
            active: active.map(|(r,)| r as u32),
            revisions: rows
                .into_iter()
                .map(|(revision, package, package_version, file, installed_at_ms)| RevisionInfo {
                    revision: revision as u32,
                    package,
                    package_version,
                    file,
                    installed_at_ms,
                })
                .collect(),
        })
    }

    /// Removes a package and its scripts. Active scripts block it unless `force`; forced,
    /// each kind+name falls back to its highest remaining revision (or none).
    pub async fn uninstall(&self, name: &str, force: bool) -> Result<(), Error> {
        let mut tx = begin_write(&self.db).await?;
        let object_key: Option<(String,)> =
            sqlx::query_as("SELECT object_key FROM plugin_packages WHERE name = $1")
                .bind(name)
                .fetch_optional(&mut *tx)
                .await?;
        let Some((object_key,)) = object_key else {
            return Err(Error::UnknownPackage { name: name.to_owned() });
        };
        let active: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT a.kind, a.name, a.revision FROM plugin_active a JOIN plugin_scripts s
               ON s.kind = a.kind AND s.name = a.name AND s.revision = a.revision
             WHERE s.package = $1 ORDER BY a.kind, a.name",
        )
        .bind(name)
        .fetch_all(&mut *tx)
        .await?;
        if !active.is_empty() && !force {
            let active =
                active.into_iter().map(|(k, n, r)| triple_from(&k, n, r)).collect::<Result<_, _>>()?;
            return Err(Error::PackageInUse { package: name.to_owned(), active });
        }
        sqlx::query("DELETE FROM plugin_scripts WHERE package = $1").bind(name).execute(&mut *tx).await?;
        for (kind, script, _) in &active {
            let fallback: Option<(i64,)> = sqlx::query_as(
                "SELECT MAX(revision) FROM plugin_scripts WHERE kind = $1 AND name = $2 HAVING COUNT(*) > 0",
            )
            .bind(kind)
            .bind(script)
            .fetch_optional(&mut *tx)
            .await?;
            match fallback {
                Some((revision,)) => {
                    sqlx::query("UPDATE plugin_active SET revision = $1, updated_at_ms = $2 WHERE kind = $3 AND name = $4")
                        .bind(revision)
                        .bind(now_ms())
                        .bind(kind)
                        .bind(script)
                        .execute(&mut *tx)
                        .await?;
                }
                None => {
                    sqlx::query("DELETE FROM plugin_active WHERE kind = $1 AND name = $2")
                        .bind(kind)
                        .bind(script)
                        .execute(&mut *tx)
                        .await?;
                }
            }
        }
        sqlx::query("DELETE FROM plugin_packages WHERE name = $1").bind(name).execute(&mut *tx).await?;
        tx.commit().await?;
        // The archive goes last: a failed delete leaves an orphan blob, never a dangling row.
        if let Err(e) = self.objects.delete(&Path::from(object_key.as_str())).await {
            tracing::warn!(package = name, error = %e, "could not delete the package archive");
        }
        Ok(())
    }
}

/// A transaction that reads and then writes. On SQLite it takes the write lock at once
/// (`BEGIN IMMEDIATE`): a plain transaction that read first fails as "database is locked",
/// without waiting, when another connection wrote meanwhile.
async fn begin_write(db: &AnyPool) -> Result<Transaction<'static, Any>, sqlx::Error> {
    if db.connect_options().database_url.scheme() == "sqlite" {
        db.begin_with("BEGIN IMMEDIATE").await
    } else {
        db.begin().await
    }
}
