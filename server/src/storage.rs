//! Opens the shared state every replica sees: the metadata database (SQLite by default,
//! PostgreSQL by URL) with its versioned migrations, and the object store (local directory
//! by default, S3 by configuration).

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use object_store::ObjectStore;
use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;

use crate::config::{Config, DatabaseConfig, ObjectStoreKind};

/// One crate's ordered migrations: `(id, sql)`. Ids are never reused or edited once
/// released; a change to the schema is a new migration.
pub type Migrations = &'static [(&'static str, &'static str)];

/// Every crate's migrations, in the order they must run.
fn all_migrations() -> Vec<Migrations> {
    vec![
        crate::auth::MIGRATIONS,
        crate::cluster::MIGRATIONS,
        crate::pipeline::MIGRATIONS,
        crate::triggers::MIGRATIONS,
        crate::triggers::BUDGET_MIGRATIONS,
        slipway_plugins::MIGRATIONS,
        slipway_registry::MIGRATIONS,
        slipway_status::MIGRATIONS,
    ]
}

/// The SQL dialect behind the pool, for the few statements portable SQL cannot say alike:
/// the database's own clock, and row locks that skip rows another replica holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    pub fn of(config: &Config) -> Self {
        if config.database_url().starts_with("postgres") { Dialect::Postgres } else { Dialect::Sqlite }
    }

    /// The database's clock in Unix milliseconds. Leases are judged by it, never by a
    /// replica's own clock, so a replica whose clock is off neither steals nor keeps leases.
    pub fn now_ms(self) -> &'static str {
        match self {
            Dialect::Postgres => "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
            Dialect::Sqlite => "CAST((julianday('now') - 2440587.5) * 86400000.0 AS BIGINT)",
        }
    }

    /// Appended to a `SELECT` that picks rows to claim: on PostgreSQL, rows another
    /// transaction is claiming are skipped instead of waited for. SQLite has one writer at
    /// a time, so there is nothing to skip.
    pub fn skip_locked(self) -> &'static str {
        match self {
            Dialect::Postgres => " FOR UPDATE SKIP LOCKED",
            Dialect::Sqlite => "",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("cannot create data directory {path}: {source}")]
    DataDir { path: String, source: std::io::Error },
    #[error("cannot open database {url}: {source}")]
    Database { url: String, source: sqlx::Error },
    #[error("migration {id} failed: {source}")]
    Migration { id: String, source: sqlx::Error },
    #[error("cannot join the cluster: {0}")]
    Cluster(sqlx::Error),
    #[error("cannot open object store: {0}")]
    ObjectStore(#[from] object_store::Error),
}

/// Opens the database and applies any migration not yet recorded in `schema_migrations`.
pub async fn open_database(config: &Config) -> Result<AnyPool, StorageError> {
    sqlx::any::install_default_drivers();
    let url = config.database_url();
    if url.starts_with("sqlite:") {
        std::fs::create_dir_all(&config.data_dir).map_err(|source| StorageError::DataDir {
            path: config.data_dir.display().to_string(),
            source,
        })?;
    }
    let masked = config.masked().database_url();
    let session: Arc<str> = sqlite_session(&config.database).into();
    let pool = AnyPoolOptions::new()
        .max_connections(config.database.max_connections)
        .acquire_timeout(std::time::Duration::from_millis(config.database.acquire_timeout_ms))
        .after_connect(move |conn, _| {
            let session = session.clone();
            Box::pin(async move {
                if conn.backend_name() == SQLITE {
                    sqlx::raw_sql(sqlx::AssertSqlSafe(session)).execute(conn).await?;
                }
                Ok(())
            })
        })
        .connect(&url)
        .await
        .map_err(|source| StorageError::Database { url: masked.clone(), source })?;
    if url.starts_with("sqlite:") {
        // Write-ahead logging lets readers run beside the one writer and makes a commit one
        // append (and one fsync) instead of a rollback journal's several. The mode is stored
        // in the file, so it is set once here, before the pool is shared.
        sqlx::raw_sql("PRAGMA journal_mode = WAL")
            .execute(&pool)
            .await
            .map_err(|source| StorageError::Database { url: masked, source })?;
    }
    migrate(&pool, &all_migrations()).await?;
    Ok(pool)
}

/// The backend name sqlx gives SQLite connections.
const SQLITE: &str = "SQLite";

/// Settings SQLite keeps per connection, run on each new one. The busy timeout replaces
/// sqlx's fixed five seconds with the configured wait.
fn sqlite_session(database: &DatabaseConfig) -> String {
    format!(
        "PRAGMA synchronous = {}; PRAGMA busy_timeout = {}",
        database.sqlite_synchronous.as_str(),
        database.busy_timeout_ms
    )
}

/// Applies migrations in order, each in its own transaction with its record, so a crash
/// never leaves a migration half applied and recorded.
pub async fn migrate(pool: &AnyPool, sets: &[Migrations]) -> Result<(), StorageError> {
    let wrap = |id: &str| {
        let id = id.to_owned();
        move |source| StorageError::Migration { id, source }
    };
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS schema_migrations (id TEXT PRIMARY KEY, applied_at_ms BIGINT NOT NULL)",
    )
    .execute(pool)
    .await
    .map_err(wrap("schema_migrations"))?;
    for (id, sql) in sets.iter().flat_map(|set| set.iter()) {
        let mut tx = pool.begin().await.map_err(wrap(id))?;
        let applied: Option<(String,)> = sqlx::query_as("SELECT id FROM schema_migrations WHERE id = $1")
            .bind(*id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(wrap(id))?;
        if applied.is_some() {
            continue;
        }
        sqlx::raw_sql(*sql).execute(&mut *tx).await.map_err(wrap(id))?;
        sqlx::query("INSERT INTO schema_migrations (id, applied_at_ms) VALUES ($1, $2)")
            .bind(*id)
            .bind(now_ms())
            .execute(&mut *tx)
            .await
            .map_err(wrap(id))?;
        tx.commit().await.map_err(wrap(id))?;
        tracing::info!(migration = id, "applied migration");
    }
    Ok(())
}

pub fn open_object_store(config: &Config) -> Result<Arc<dyn ObjectStore>, StorageError> {
    Ok(match config.object_store.kind {
        ObjectStoreKind::Local => {
            let path = config.object_store_path();
            std::fs::create_dir_all(&path)
                .map_err(|source| StorageError::DataDir { path: path.display().to_string(), source })?;
            Arc::new(object_store::local::LocalFileSystem::new_with_prefix(&path)?)
        }
        ObjectStoreKind::S3 => {
            let s3 = &config.object_store.s3;
            Arc::new(
                object_store::aws::AmazonS3Builder::new()
                    .with_endpoint(&s3.endpoint)
                    .with_bucket_name(&s3.bucket)
                    .with_region(&s3.region)
                    .with_access_key_id(&s3.access_key_id)
                    .with_secret_access_key(&s3.secret_access_key)
                    .with_allow_http(s3.allow_http)
                    .with_virtual_hosted_style_request(false)
                    .build()?,
            )
        }
    })
}

/// Most rows one multi-row statement writes. Far below the bound-parameter limits of SQLite
/// (32,766) and PostgreSQL (65,535), and small because SQLite finds a `$N` parameter by
/// scanning a list of all of them, both when it parses a statement and when sqlx binds it,
/// so a statement's cost grows with the square of its parameters (at 500 rows that scan was
/// about 4 % of the CPU of a trigger delivery); a full chunk also has the same text every
/// time, so its prepared statement is reused from the connection's cache.
pub const ROWS_PER_STATEMENT: usize = 64;

/// `($1, $2, …), ($n+1, …)`: `rows` rows of `columns` numbered placeholders, the form both
/// SQLite and PostgreSQL read.
pub fn value_rows(rows: usize, columns: usize) -> String {
    let mut sql = String::with_capacity(rows * columns * 6);
    for row in 0..rows {
        sql.push_str(if row == 0 { "(" } else { ", (" });
        for column in 1..=columns {
            if column > 1 {
                sql.push_str(", ");
            }
            sql.push('$');
            sql.push_str(&(row * columns + column).to_string());
        }
        sql.push(')');
    }
    sql
}

pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn migrations_are_versioned_and_run_once() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config { data_dir: dir.path().into(), ..Config::default() };
        let pool = open_database(&config).await.unwrap();
        const EXTRA: Migrations =
            &[("test-0001", "CREATE TABLE t (id BIGINT PRIMARY KEY); INSERT INTO t (id) VALUES (1)")];
        migrate(&pool, &[EXTRA]).await.unwrap();
        // A second run must not re-run it (the INSERT would violate the primary key).
        migrate(&pool, &[EXTRA]).await.unwrap();
        let (count,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM t").fetch_one(&pool).await.unwrap();
        assert_eq!(count, 1);
        let (recorded,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM schema_migrations WHERE id = $1")
            .bind("test-0001")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(recorded, 1);
    }

    #[tokio::test]
    async fn sqlite_runs_in_wal_mode_with_the_configured_sync_and_busy_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config { data_dir: dir.path().into(), ..Config::default() };
        config.database.busy_timeout_ms = 1234;
        let pool = open_database(&config).await.unwrap();
        // Every connection of the pool, not only the first, carries the settings.
        let mut held = Vec::new();
        for _ in 0..3 {
            let mut conn = pool.acquire().await.unwrap();
            let (mode,): (String,) =
                sqlx::query_as("PRAGMA journal_mode").fetch_one(&mut *conn).await.unwrap();
            let (sync,): (i64,) = sqlx::query_as("PRAGMA synchronous").fetch_one(&mut *conn).await.unwrap();
            let (busy,): (i64,) = sqlx::query_as("PRAGMA busy_timeout").fetch_one(&mut *conn).await.unwrap();
            assert_eq!((mode.as_str(), sync, busy), ("wal", 2, 1234), "2 is FULL");
            held.push(conn);
        }
    }
}
