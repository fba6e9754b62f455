//! Retention: keep the newest N versions of an app, never a tagged one, and record every
//! deletion. The package blobs become orphans and the garbage collector removes them, so a
//! download already streaming a deleted version finishes or fails cleanly, never mixes.

use serde::Serialize;

use crate::error::Result;
use crate::{Registry, names, now_ms};

/// One deleted app package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Deletion {
    pub app: String,
    pub version: String,
    pub digest: String,
    pub reason: String,
    pub actor: String,
    pub at_ms: i64,
}

impl Registry {
    /// Deletes the untagged versions of `app` beyond the newest `keep`; returns them.
    pub async fn apply_retention(&self, app: &str, keep: u32, actor: &str) -> Result<Vec<Deletion>> {
        names::check_app(app)?;
        let mut write = self.begin_write(app).await?;
        let doomed: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT p.version_key, p.version, p.digest FROM registry_app_packages p
             WHERE p.app = $1
               AND NOT EXISTS (SELECT 1 FROM registry_package_tags t WHERE t.app = p.app AND t.version_key = p.version_key)
               AND p.version_key < COALESCE((SELECT MIN(version_key) FROM
                    (SELECT version_key FROM registry_app_packages WHERE app = $1 ORDER BY version_key DESC LIMIT $2) newest), '')
             ORDER BY p.version_key",
        )
        .bind(app)
        .bind(i64::from(keep))
        .fetch_all(&mut *write.tx)
        .await?;
        let reason = format!("retention: keep the newest {keep} versions");
        let at_ms = now_ms();
        let mut deleted = Vec::new();
        for (key, version, digest) in doomed {
            for statement in [
                "DELETE FROM registry_app_packages WHERE app = $1 AND version_key = $2",
                "DELETE FROM registry_app_package_components WHERE app = $1 AND app_version_key = $2",
            ] {
                sqlx::query(statement).bind(app).bind(&key).execute(&mut *write.tx).await?;
            }
            sqlx::query(
                "INSERT INTO registry_deletions (id, app, version, digest, reason, actor, at_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(uuid::Uuid::now_v7().to_string())
            .bind(app)
            .bind(&version)
            .bind(&digest)
            .bind(&reason)
            .bind(actor)
            .bind(at_ms)
            .execute(&mut *write.tx)
            .await?;
            deleted.push(Deletion {
                app: app.into(),
                version,
                digest,
                reason: reason.clone(),
                actor: actor.into(),
                at_ms,
            });
        }
        // Component packages no remaining app package refers to go with the last one.
        sqlx::query(
            "DELETE FROM registry_component_packages WHERE app = $1 AND NOT EXISTS (
                SELECT 1 FROM registry_app_package_components l
                WHERE l.app = registry_component_packages.app
                  AND l.component = registry_component_packages.component
                  AND l.component_version_key = registry_component_packages.version_key)",
        )
        .bind(app)
        .execute(&mut *write.tx)
        .await?;
        write.commit().await?;
        if !deleted.is_empty() {
            metrics::counter!("slipway_registry_retention_deletions_total").increment(deleted.len() as u64);
            tracing::info!(app, deleted = deleted.len(), keep, "retention deleted app packages");
        }
        Ok(deleted)
    }

    /// The recorded deletions of `app`, newest first.
    pub async fn deletions(&self, app: &str, limit: u32) -> Result<Vec<Deletion>> {
        let sql = "SELECT version, digest, reason, actor, at_ms FROM registry_deletions
                   WHERE app = $1 ORDER BY at_ms DESC, id DESC LIMIT $2";
        let rows = crate::tags::recent_rows(&self.db, sql, app, limit).await?;
        Ok(rows
            .into_iter()
            .map(|(version, digest, reason, actor, at_ms)| Deletion {
                app: app.into(),
                version,
                digest,
                reason,
                actor,
                at_ms,
            })
            .collect())
    }
}
