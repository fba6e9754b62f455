//! Opens a real plugin host for the crate's integration tests: SQLite database and local
//! object store in a temporary directory; the test binary itself serves as the worker.

#![allow(dead_code)] // each test file uses a different part of this module

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};
use slipway_plugins::{HostConfig, MIGRATIONS, PluginHost, pack_package};
use sqlx::AnyPool;

pub fn config() -> HostConfig {
    HostConfig {
        workers: 2,
        // Debug builds of the engine are slow; keep the budget generous but finite.
        call_timeout: Duration::from_millis(200),
        ..HostConfig::default()
    }
}

pub async fn database(dir: &Path) -> AnyPool {
    sqlx::any::install_default_drivers();
    let url = format!("sqlite://{}?mode=rwc", dir.join("slipway.db").display());
    let pool = AnyPool::connect(&url).await.unwrap();
    let (applied,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM sqlite_master WHERE name = 'plugin_packages'")
            .fetch_one(&pool)
            .await
            .unwrap();
    if applied == 0 {
        for (_, sql) in MIGRATIONS {
            sqlx::raw_sql(sqlx::AssertSqlSafe(*sql)).execute(&pool).await.unwrap();
        }
    }
    pool
}

pub async fn open_with(dir: &Path, config: HostConfig) -> PluginHost {
    let db = database(dir).await;
    std::fs::create_dir_all(dir.join("objects")).unwrap();
    let objects =
        Arc::new(object_store::local::LocalFileSystem::new_with_prefix(dir.join("objects")).unwrap());
    PluginHost::open(db, objects, config).await.unwrap()
}

pub async fn open(dir: &Path) -> PluginHost {
    open_with(dir, config()).await
}

/// A package named `name` holding one script per `(kind, script name, revision, source)`.
pub fn package(name: &str, version: &str, scripts: &[(&str, &str, u32, &str)]) -> Bytes {
    let mut manifest = format!("[package]\nname = \"{name}\"\nversion = \"{version}\"\n");
    let files: Vec<(String, &str)> = scripts
        .iter()
        .map(|(kind, script, revision, source)| {
            manifest.push_str(&format!(
                "\n[[scripts]]\nkind = \"{kind}\"\nname = \"{script}\"\nrevision = {revision}\nfile = \"{kind}/{script}-{revision}.js\"\n"
            ));
            (format!("{kind}/{script}-{revision}.js"), *source)
        })
        .collect();
    let mut all: Vec<(&str, &[u8])> = vec![("plugin.toml", manifest.as_bytes())];
    all.extend(files.iter().map(|(p, s)| (p.as_str(), s.as_bytes())));
    pack_package(&all)
}

pub fn http_observation(status: u16, latency_ms: u64) -> Value {
    json!({
        "http": {"status": status, "headers": {"content-type": "application/json"}, "body": "{\"status\":\"ok\"}", "json": {"status": "ok"}, "latency_ms": latency_ms},
        "error": null
    })
}
