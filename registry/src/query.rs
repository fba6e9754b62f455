//! Reading packages: tag queries with version ranges and keyset cursors, one package with
//! its tags, component packages, and downloads.
//!
//! A tag query is driven by its first tag: the `(app, tag, version_key)` primary key of
//! `registry_package_tags` yields that tag's versions already in version order, each further
//! tag is an `EXISTS` probe on the same key, and `LIMIT` stops the scan at the page size.
//! Cursors are keyset positions (the last row's sort key), so pages stay stable while
//! packages are published or deleted.

use object_store::GetRange;
use serde::Serialize;
use sqlx::AssertSqlSafe;

use crate::blobs::{self, BlobRead};
use crate::error::{Error, Result};
use crate::manifest::{AppManifest, ComponentManifest};
use crate::range::{KeyBound, KeyRange};
use crate::version::{parse_version, version_key};
use crate::{Registry, names};

pub const DEFAULT_PAGE: u32 = 50;
pub const MAX_PAGE: u32 = 500;

/// One app package as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PackageSummary {
    pub app: String,
    pub version: String,
    pub digest: String,
    pub size_bytes: u64,
    pub creator: String,
    pub created_at_ms: i64,
}

impl PackageSummary {
    /// From the columns `registry_app_packages` stores (sizes as BIGINT).
    pub(crate) fn from_row(
        app: &str,
        version: String,
        digest: String,
        size: i64,
        creator: String,
        created_at_ms: i64,
    ) -> Self {
        PackageSummary {
            app: app.to_owned(),
            version,
            digest,
            size_bytes: size as u64,
            creator,
            created_at_ms,
        }
    }
}

/// One app package with its current tags and its manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PackageDetails {
    #[serde(flatten)]
    pub summary: PackageSummary,
    pub tags: Vec<String>,
    pub manifest: AppManifest,
}

/// How a listing is ordered; both newest first.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Order {
    #[default]
    Version,
    Created,
}

/// A tag query: packages carrying all of `tags`, within `range`.
#[derive(Debug, Clone, Default)]
pub struct PackageQuery {
    pub tags: Vec<String>,
    pub range: KeyRange,
    pub order: Order,
    pub cursor: Option<String>,
    pub limit: u32,
}

/// One page of results and where the next one starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

type SummaryRow = (String, String, String, i64, String, i64);

impl Registry {
    /// Packages of `app` carrying every tag in the query, newest first, one page.
    pub async fn list_packages(&self, app: &str, query: &PackageQuery) -> Result<Page<PackageSummary>> {
        names::check_app(app)?;
        for tag in &query.tags {
            names::check_tag(tag)?;
        }
        let limit = query.limit.clamp(1, MAX_PAGE);
        let mut sql = String::from(
            "SELECT p.version, p.version_key, p.digest, p.size_bytes, p.creator, p.created_at_ms FROM ",
        );
        let mut binds: Vec<Bind> = vec![Bind::Text(app.to_owned())];
        // `k` is the column the version order and range use: the driving tag's when there is one.
        let k = match query.tags.first() {
            Some(first) => {
                binds.push(Bind::Text(first.clone()));
                sql.push_str(
                    "registry_package_tags t0 JOIN registry_app_packages p
                     ON p.app = t0.app AND p.version_key = t0.version_key WHERE t0.app = $1 AND t0.tag = $2",
                );
                "t0.version_key"
            }
            None => {
                sql.push_str("registry_app_packages p WHERE p.app = $1");
                "p.version_key"
            }
        };
        for tag in query.tags.iter().skip(1) {
            binds.push(Bind::Text(tag.clone()));
            sql.push_str(&format!(
                " AND EXISTS (SELECT 1 FROM registry_package_tags t WHERE t.app = $1 AND t.tag = ${} AND t.version_key = {k})",
                binds.len()
            ));
        }
        for (bound, lower) in [(&query.range.lower, true), (&query.range.upper, false)] {
            if let Some(KeyBound { key, inclusive }) = bound {
                binds.push(Bind::Text(key.clone()));
                let op = match (lower, inclusive) {
                    (true, true) => ">=",
                    (true, false) => ">",
                    (false, true) => "<=",
                    (false, false) => "<",
                };
                sql.push_str(&format!(" AND {k} {op} ${}", binds.len()));
            }
        }
        let cursor = query.cursor.as_deref().map(|c| Cursor::parse(c, query.order)).transpose()?;
        match cursor {
            Some(Cursor::Version(key)) => {
                binds.push(Bind::Text(key));
                sql.push_str(&format!(" AND {k} < ${}", binds.len()));
            }
            Some(Cursor::Created(ms, key)) => {
                binds.push(Bind::Int(ms));
                binds.push(Bind::Text(key));
                let (m, v) = (binds.len() - 1, binds.len());
                sql.push_str(&format!(
                    " AND (p.created_at_ms < ${m} OR (p.created_at_ms = ${m} AND p.version_key < ${v}))"
                ));
            }
            None => {}
        }
        match query.order {
            Order::Version => sql.push_str(&format!(" ORDER BY {k} DESC")),
            Order::Created => sql.push_str(" ORDER BY p.created_at_ms DESC, p.version_key DESC"),
        }
        // A literal, not a bind: SQLite re-plans a statement on every execution whose LIMIT is
        // a bound parameter (the planner reads its value), which cost more than the query.
        sql.push_str(&format!(" LIMIT {}", limit + 1));

        let mut q = sqlx::query_as::<_, SummaryRow>(AssertSqlSafe(sql));
        for bind in binds {
            q = match bind {
                Bind::Text(t) => q.bind(t),
                Bind::Int(i) => q.bind(i),
            };
        }
        let mut rows = q.fetch_all(&self.db).await?;
        let next_cursor = if rows.len() > limit as usize {
            rows.truncate(limit as usize);
            rows.last().map(|(_, key, _, _, _, created)| match query.order {
                Order::Version => format!("v{key}"),
                Order::Created => format!("c{created}.{key}"),
            })
        } else {
            None
        };
        let items = rows
            .into_iter()
            .map(|(version, _, digest, size, creator, created_at_ms)| {
                PackageSummary::from_row(app, version, digest, size, creator, created_at_ms)
            })
            .collect();
        Ok(Page { items, next_cursor })
    }

    /// One package of `app` by version (build metadata may be left out: `1.0.0` finds
    /// `1.0.0+abc`), with its current tags.
    pub async fn get_package(&self, app: &str, version: &str) -> Result<PackageDetails> {
        names::check_app(app)?;
        let key = version_key(&parse_version(version)?);
        let row: Option<(String, String, i64, String, i64, String)> = sqlx::query_as(
            "SELECT version, digest, size_bytes, creator, created_at_ms, manifest
             FROM registry_app_packages WHERE app = $1 AND version_key = $2",
        )
        .bind(app)
        .bind(&key)
        .fetch_optional(&self.db)
        .await?;
        let (version, digest, size, creator, created_at_ms, manifest) =
            row.ok_or_else(|| Error::PackageNotFound { app: app.to_owned(), version: version.to_owned() })?;
        let tags: Vec<(String,)> = sqlx::query_as(
            "SELECT tag FROM registry_package_tags WHERE app = $1 AND version_key = $2 ORDER BY tag",
        )
        .bind(app)
        .bind(&key)
        .fetch_all(&self.db)
        .await?;
        Ok(PackageDetails {
            summary: PackageSummary::from_row(app, version, digest, size, creator, created_at_ms),
            tags: tags.into_iter().map(|(t,)| t).collect(),
            manifest: AppManifest::from_json(manifest.as_bytes())?,
        })
    }

    /// Component packages of one component of `app`, newest version first.
    pub async fn list_component_packages(
        &self,
        app: &str,
        component: &str,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<Page<ComponentManifest>> {
        names::check_app(app)?;
        names::check_component(component)?;
        let after = match cursor.map(|c| Cursor::parse(c, Order::Version)).transpose()? {
            Some(Cursor::Version(key)) => Some(key),
            _ => None,
        };
        let limit = limit.clamp(1, MAX_PAGE);
        let sql = format!(
            "SELECT version_key, manifest FROM registry_component_packages
             WHERE app = $1 AND component = $2 {} ORDER BY version_key DESC LIMIT {}",
            if after.is_some() { "AND version_key < $3" } else { "" },
            limit + 1, // a literal: see `list_packages`
        );
        let mut q = sqlx::query_as(AssertSqlSafe(sql)).bind(app).bind(component);
        if let Some(after) = after {
            q = q.bind(after);
        }
        let mut rows: Vec<(String, String)> = q.fetch_all(&self.db).await?;
        let next_cursor = (rows.len() > limit as usize).then(|| {
            rows.truncate(limit as usize);
            format!("v{}", rows[rows.len() - 1].0)
        });
        let items = rows
            .into_iter()
            .map(|(_, m)| serde_json::from_str(&m).map_err(|e| Error::invalid_package(e.to_string())))
            .collect::<Result<_>>()?;
        Ok(Page { items, next_cursor })
    }

    /// Opens the package blob of `version` for download, whole or the byte `range`.
    pub async fn open_package(
        &self,
        app: &str,
        version: &str,
        range: Option<ByteRange>,
    ) -> Result<(PackageSummary, BlobRead)> {
        let summary = self.get_package(app, version).await?.summary;
        let range = range.map(|r| r.resolve(summary.size_bytes)).transpose()?;
        let blob = blobs::open(&*self.store, &summary.digest, range.map(GetRange::Bounded)).await?;
        Ok((summary, blob))
    }
}

/// A requested byte range, as HTTP `Range: bytes=…` spells its three forms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// `first-last`, both inclusive (`last` past the end means to the end).
    FromTo(u64, u64),
    /// `first-`: from `first` to the end.
    From(u64),
    /// `-n`: the last `n` bytes.
    Last(u64),
}

impl ByteRange {
    /// The half-open byte range inside a blob of `size` bytes, or not satisfiable.
    pub fn resolve(self, size: u64) -> Result<std::ops::Range<u64>> {
        let range = match self {
            ByteRange::FromTo(first, last) if first <= last => first..last.saturating_add(1).min(size),
            ByteRange::From(first) => first..size,
            ByteRange::Last(n) => size.saturating_sub(n)..size,
            ByteRange::FromTo(..) => 1..0,
        };
        if range.start < range.end { Ok(range) } else { Err(Error::RangeNotSatisfiable { size_bytes: size }) }
    }
}

enum Bind {
    Text(String),
    Int(i64),
}

/// A keyset position: `v<version_key>` in version order, `c<created_ms>.<version_key>` in
/// creation order. Opaque to clients; checked strictly because it is spliced into a bound.
enum Cursor {
    Version(String),
    Created(i64, String),
}

impl Cursor {
    fn parse(text: &str, order: Order) -> Result<Cursor> {
        let invalid = || Error::InvalidCursor(text.chars().take(200).collect());
        let is_key =
            |k: &str| !k.is_empty() && k.bytes().all(|b| b.is_ascii_digit() || b.is_ascii_lowercase());
        match (order, text.split_at_checked(1)) {
            (Order::Version, Some(("v", key))) if is_key(key) => Ok(Cursor::Version(key.to_owned())),
            (Order::Created, Some(("c", rest))) => {
                let (ms, key) = rest.split_once('.').ok_or_else(invalid)?;
                let ms = ms.parse().map_err(|_| invalid())?;
                if is_key(key) { Ok(Cursor::Created(ms, key.to_owned())) } else { Err(invalid()) }
            }
            _ => Err(invalid()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_ranges_resolve_inside_the_blob() {
        assert_eq!(ByteRange::FromTo(0, 9).resolve(100).unwrap(), 0..10);
        assert_eq!(ByteRange::FromTo(90, 200).resolve(100).unwrap(), 90..100);
        assert_eq!(ByteRange::From(99).resolve(100).unwrap(), 99..100);
        assert_eq!(ByteRange::Last(10).resolve(100).unwrap(), 90..100);
        assert_eq!(ByteRange::Last(500).resolve(100).unwrap(), 0..100);
        for bad in
            [ByteRange::From(100), ByteRange::FromTo(5, 4), ByteRange::Last(0), ByteRange::FromTo(100, 120)]
        {
            assert!(
                matches!(bad.resolve(100), Err(Error::RangeNotSatisfiable { size_bytes: 100 })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn cursors_are_checked_for_their_order() {
        assert!(matches!(Cursor::parse("v0001z", Order::Version), Ok(Cursor::Version(k)) if k == "0001z"));
        assert!(
            matches!(Cursor::parse("c17.00ab", Order::Created), Ok(Cursor::Created(17, k)) if k == "00ab")
        );
        for (bad, order) in [
            ("c17.00ab", Order::Version),
            ("v00", Order::Created),
            ("v", Order::Version),
            ("v0' OR 1=1", Order::Version),
            ("cx.00", Order::Created),
        ] {
            assert!(Cursor::parse(bad, order).is_err(), "{bad}");
        }
    }
}
