//! Tags on app package versions, exclusive tags, and the record of every tag change.
//!
//! Every change opens its transaction with a write to `registry_exclusive_tags` (a no-op
//! `UPDATE` when the tag is not exclusive): on SQLite that takes the write lock before any
//! read, on PostgreSQL it locks the exclusive-tag row, so two concurrent promotions of an
//! exclusive `prod` serialise and exactly one version ends up holding it.

use serde::Serialize;
use sqlx::AnyConnection;

use crate::error::{Error, Result};
use crate::version::{parse_version, version_key};
use crate::{Registry, WriteTx, names, now_ms};

/// What a tag `PUT` changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TagChange {
    /// False when the version already had the tag.
    pub added: bool,
    /// Versions the tag was moved away from (exclusive tags only).
    pub moved_from: Vec<String>,
}

/// One recorded tag change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TagEvent {
    pub tag: String,
    pub version: String,
    /// `added` or `removed`.
    pub action: String,
    pub actor: String,
    pub at_ms: i64,
}

/// A tag in use in an app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TagInfo {
    pub tag: String,
    pub exclusive: bool,
    pub versions: i64,
}

impl Registry {
    /// Adds `tag` to `version` of `app`; for an exclusive tag, in the same transaction,
    /// removes it from whichever version held it.
    pub async fn add_tag(&self, app: &str, version: &str, tag: &str, actor: &str) -> Result<TagChange> {
        let (mut write, key, version) = self.begin_tag_change(app, version, tag, actor).await?;
        let change = apply_tag(&mut write.tx, app, &key, &version, tag, actor).await?;
        write.commit().await?;
        Ok(change)
    }

    /// Removes `tag` from `version`; returns whether the version had it.
    pub async fn remove_tag(&self, app: &str, version: &str, tag: &str, actor: &str) -> Result<bool> {
        let (mut write, key, version) = self.begin_tag_change(app, version, tag, actor).await?;
        let removed = delete_tag(&mut write.tx, app, &key, &version, tag, actor).await?;
        write.commit().await?;
        Ok(removed)
    }

    /// Checks the input, opens the transaction with the tag's lock and finds the package.
    async fn begin_tag_change(
        &self,
        app: &str,
        version: &str,
        tag: &str,
        actor: &str,
    ) -> Result<(WriteTx, String, String)> {
        names::check_app(app)?;
        names::check_tag(tag)?;
        names::check_actor(actor)?;
        let mut write = self.begin_write(app).await?;
        lock_tag(&mut write.tx, app, tag).await?;
        let (key, version) = package_key(&mut write.tx, app, version).await?;
        Ok((write, key, version))
    }

    /// Marks `tag` exclusive in `app` (at most one version holds it after the next `PUT`),
    /// or clears the mark.
    pub async fn set_exclusive(&self, app: &str, tag: &str, exclusive: bool, actor: &str) -> Result<()> {
        names::check_app(app)?;
        names::check_tag(tag)?;
        names::check_actor(actor)?;
        if exclusive {
            sqlx::query(
                "INSERT INTO registry_exclusive_tags (app, tag, set_by, set_at_ms) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (app, tag) DO NOTHING",
            )
            .bind(app)
            .bind(tag)
            .bind(actor)
            .bind(now_ms())
            .execute(&self.db)
            .await?;
        } else {
            sqlx::query("DELETE FROM registry_exclusive_tags WHERE app = $1 AND tag = $2")
                .bind(app)
                .bind(tag)
                .execute(&self.db)
                .await?;
        }
        Ok(())
    }

    /// Every tag of `app` with its exclusive mark and how many versions carry it.
    pub async fn list_tags(&self, app: &str) -> Result<Vec<TagInfo>> {
        names::check_app(app)?;
        let rows: Vec<(String, i64, i64)> = sqlx::query_as(
            "SELECT tag, CAST(MAX(exclusive) AS BIGINT), CAST(SUM(versions) AS BIGINT) FROM (
                SELECT tag, 0 AS exclusive, COUNT(*) AS versions FROM registry_package_tags WHERE app = $1 GROUP BY tag
                UNION ALL
                SELECT tag, 1 AS exclusive, 0 AS versions FROM registry_exclusive_tags WHERE app = $1
             ) t GROUP BY tag ORDER BY tag",
        )
        .bind(app)
        .fetch_all(&self.db)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(tag, exclusive, versions)| TagInfo { tag, exclusive: exclusive == 1, versions })
            .collect())
    }

    /// The tag changes of `app`, newest first.
    pub async fn tag_events(&self, app: &str, limit: u32) -> Result<Vec<TagEvent>> {
        let sql = "SELECT tag, version, action, actor, at_ms FROM registry_tag_events
                   WHERE app = $1 ORDER BY at_ms DESC, id DESC LIMIT $2";
        let rows = recent_rows(&self.db, sql, app, limit).await?;
        Ok(rows
            .into_iter()
            .map(|(tag, version, action, actor, at_ms)| TagEvent { tag, version, action, actor, at_ms })
            .collect())
    }
}

/// The newest `limit` rows of an app's record table (tag events, deletions): four text
/// columns and a time.
pub(crate) async fn recent_rows(
    db: &sqlx::AnyPool,
    sql: &'static str,
    app: &str,
    limit: u32,
) -> Result<Vec<(String, String, String, String, i64)>> {
    names::check_app(app)?;
    Ok(sqlx::query_as(sql).bind(app).bind(i64::from(limit)).fetch_all(db).await?)
}

/// The version key and published version string of `version` in `app`, or not found.
pub(crate) async fn package_key(
    tx: &mut AnyConnection,
    app: &str,
    version: &str,
) -> Result<(String, String)> {
    names::check_app(app)?;
    let key = version_key(&parse_version(version)?);
    let row: Option<(String,)> =
        sqlx::query_as("SELECT version FROM registry_app_packages WHERE app = $1 AND version_key = $2")
            .bind(app)
            .bind(&key)
            .fetch_optional(&mut *tx)
            .await?;
    match row {
        Some((published,)) => Ok((key, published)),
        None => Err(Error::PackageNotFound { app: app.to_owned(), version: version.to_owned() }),
    }
}

/// Takes the write lock for `tag` (see the module comment); returns whether it is exclusive.
async fn lock_tag(tx: &mut AnyConnection, app: &str, tag: &str) -> Result<bool> {
    let locked =
        sqlx::query("UPDATE registry_exclusive_tags SET set_at_ms = set_at_ms WHERE app = $1 AND tag = $2")
            .bind(app)
            .bind(tag)
            .execute(&mut *tx)
            .await?;
    Ok(locked.rows_affected() > 0)
}

/// Adds a tag inside a caller's transaction (publish and `PUT` share it).
pub(crate) async fn apply_tag(
    tx: &mut AnyConnection,
    app: &str,
    key: &str,
    version: &str,
    tag: &str,
    actor: &str,
) -> Result<TagChange> {
    let exclusive = lock_tag(tx, app, tag).await?;
    let mut change = TagChange::default();
    if exclusive {
        let holders: Vec<(String, String)> = sqlx::query_as(
            "SELECT t.version_key, p.version FROM registry_package_tags t
             JOIN registry_app_packages p ON p.app = t.app AND p.version_key = t.version_key
             WHERE t.app = $1 AND t.tag = $2 AND t.version_key <> $3",
        )
        .bind(app)
        .bind(tag)
        .bind(key)
        .fetch_all(&mut *tx)
        .await?;
        for (holder_key, holder_version) in holders {
            delete_tag(tx, app, &holder_key, &holder_version, tag, actor).await?;
            change.moved_from.push(holder_version);
        }
    }
    let inserted = sqlx::query(
        "INSERT INTO registry_package_tags (app, tag, version_key, tagged_by, tagged_at_ms)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (app, tag, version_key) DO NOTHING",
    )
    .bind(app)
    .bind(tag)
    .bind(key)
    .bind(actor)
    .bind(now_ms())
    .execute(&mut *tx)
    .await?;
    change.added = inserted.rows_affected() > 0;
    if change.added {
        record(tx, app, tag, version, "added", actor).await?;
    }
    Ok(change)
}

async fn delete_tag(
    tx: &mut AnyConnection,
    app: &str,
    key: &str,
    version: &str,
    tag: &str,
    actor: &str,
) -> Result<bool> {
    let deleted =
        sqlx::query("DELETE FROM registry_package_tags WHERE app = $1 AND tag = $2 AND version_key = $3")
            .bind(app)
            .bind(tag)
            .bind(key)
            .execute(&mut *tx)
            .await?;
    let removed = deleted.rows_affected() > 0;
    if removed {
        record(tx, app, tag, version, "removed", actor).await?;
    }
    Ok(removed)
}

async fn record(
    tx: &mut AnyConnection,
    app: &str,
    tag: &str,
    version: &str,
    action: &str,
    actor: &str,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO registry_tag_events (id, app, tag, version, action, actor, at_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(uuid::Uuid::now_v7().to_string())
    .bind(app)
    .bind(tag)
    .bind(version)
    .bind(action)
    .bind(actor)
    .bind(now_ms())
    .execute(&mut *tx)
    .await?;
    Ok(())
}
