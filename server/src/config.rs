//! The service configuration: one typed struct, defaults written once, loaded in one place.
//!
//! Layering, lowest first: built-in defaults < `slipway.toml` < `SLIPWAY_*` environment
//! variables (nested keys joined by `__`, e.g. `SLIPWAY_DATABASE__URL`) < command-line flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::Serialized;
use serde::{Deserialize, Serialize};

/// The file read when `--config` is not given (only if it exists).
pub const DEFAULT_CONFIG_FILE: &str = "slipway.toml";
const MASK: &str = "********";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address the HTTP API listens on.
    pub listen: SocketAddr,
    /// Holds the embedded database and the local object store unless configured elsewhere.
    pub data_dir: PathBuf,
    pub log_format: LogFormat,
    /// A `tracing` filter directive such as `info` or `slipway_status=debug,info`.
    pub log_filter: String,
    pub database: DatabaseConfig,
    pub object_store: ObjectStoreConfig,
    pub limits: LimitsConfig,
    pub registry: slipway_registry::RegistryConfig,
    pub plugins: slipway_plugins::HostConfig,
    pub status: slipway_status::StatusConfig,
    pub pipeline: PipelineConfig,
    pub triggers: TriggersConfig,
    pub cluster: ClusterConfig,
}

/// How replicas sharing one database find each other and hand work over.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// This replica's name in `/v1/cluster` and in build leases; empty means one made up at
    /// first start and kept in the data directory (file `replica-id`).
    pub replica_id: String,
    /// The address other replicas and people reach this one at; empty means `listen`.
    pub advertise: String,
    /// How long a build lease (and a replica's heartbeat) holds without renewal, in
    /// milliseconds: a replica silent for longer is taken as gone and its builds are taken
    /// over.
    pub lease_ms: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self { replica_id: String::new(), advertise: String::new(), lease_ms: 15_000 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite://…` or `postgres://…`; empty means `slipway.db` in the data directory.
    pub url: String,
    pub max_connections: u32,
    /// How long a call waits for a database connection before it is refused with 503
    /// `database_failed`: while the database is unreachable, callers hear so quickly
    /// instead of hanging.
    pub acquire_timeout_ms: u64,
    /// How long a SQLite statement waits for another connection's write lock before it fails
    /// with "database is locked".
    pub busy_timeout_ms: u64,
    /// SQLite's `synchronous` setting. `full` (the default) syncs the write-ahead log at
    /// every commit, so an acknowledged write survives a power loss; `normal` syncs only at
    /// checkpoints: still safe against a killed process, but a power loss may drop the last
    /// commits.
    pub sqlite_synchronous: SqliteSynchronous,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SqliteSynchronous {
    Full,
    Normal,
}

impl SqliteSynchronous {
    pub fn as_str(self) -> &'static str {
        match self {
            SqliteSynchronous::Full => "FULL",
            SqliteSynchronous::Normal => "NORMAL",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ObjectStoreConfig {
    pub kind: ObjectStoreKind,
    /// For `local`: the directory; empty means `objects/` in the data directory.
    pub path: String,
    pub s3: S3Config,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ObjectStoreKind {
    Local,
    S3,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct S3Config {
    pub endpoint: String,
    pub bucket: String,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    /// Plain HTTP endpoints (a loopback Garage node) need this.
    pub allow_http: bool,
}

/// The build pipeline: where images go and how much runs at once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PipelineConfig {
    /// The OCI registry images are pushed to, `host:port`.
    pub registry: String,
    /// Registries spoken to over plain HTTP.
    pub insecure_registries: Vec<String>,
    pub backend: BuildBackendKind,
    /// Directories on the server that build requests may name as local sources; none by
    /// default, so a request cannot read the server's files.
    pub source_roots: Vec<PathBuf>,
    /// Whether this process runs builds, or only accepts them for other replicas to run.
    pub run_builds: bool,
    pub max_parallel_builds: usize,
    pub max_parallel_components: usize,
    pub max_context_bytes: u64,
}

/// Webhook deliveries from CI systems.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TriggersConfig {
    /// Deliveries one trigger accepts per second of the database's clock, over all replicas;
    /// at most a tenth of a second's worth at once (the burst), so no one-second span passes
    /// more than 1.1 times this.
    pub per_trigger_per_s: u32,
    /// Deliveries per second one client address may send, over all triggers.
    pub per_client_per_s: u32,
    /// A delivery repeated within this window returns the first build.
    pub dedupe_window_s: u64,
    /// How often replay claims older than the window are deleted.
    pub claim_prune_every_s: u64,
}

impl Default for TriggersConfig {
    fn default() -> Self {
        Self {
            per_trigger_per_s: 100,
            per_client_per_s: 200,
            dedupe_window_s: 24 * 3600,
            claim_prune_every_s: 600,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BuildBackendKind {
    /// Slipway's own daemonless builder.
    Native,
    /// A Docker daemon on its local socket.
    Docker,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            registry: "127.0.0.1:5000".into(),
            insecure_registries: vec!["127.0.0.1:5000".into(), "localhost:5000".into()],
            backend: BuildBackendKind::Native,
            source_roots: Vec::new(),
            run_builds: true,
            max_parallel_builds: 2,
            max_parallel_components: 2,
            max_context_bytes: 1 << 30,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest JSON request body; streamed uploads set their own limits.
    pub max_body_bytes: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7700)),
            data_dir: PathBuf::from(".slipway"),
            log_format: LogFormat::Human,
            log_filter: "info".into(),
            database: DatabaseConfig::default(),
            object_store: ObjectStoreConfig::default(),
            limits: LimitsConfig::default(),
            registry: slipway_registry::RegistryConfig::default(),
            // The server's callers of the plugins (webhook adapters, status checks) run beside
            // request handling that keeps the cores busy under load: a worker or a handler
            // thread polling for a pipe takes a core from it (measured on the trigger flood).
            plugins: slipway_plugins::HostConfig { poll_short_batches: false, ..Default::default() },
            status: slipway_status::StatusConfig::default(),
            pipeline: PipelineConfig::default(),
            triggers: TriggersConfig::default(),
            cluster: ClusterConfig::default(),
        }
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            max_connections: 8,
            acquire_timeout_ms: 5_000,
            busy_timeout_ms: 5_000,
            sqlite_synchronous: SqliteSynchronous::Full,
        }
    }
}

impl Default for ObjectStoreConfig {
    fn default() -> Self {
        Self { kind: ObjectStoreKind::Local, path: String::new(), s3: S3Config::default() }
    }
}

impl Default for S3Config {
    fn default() -> Self {
        Self {
            endpoint: String::new(),
            bucket: "slipway".into(),
            region: "garage".into(),
            access_key_id: String::new(),
            secret_access_key: String::new(),
            allow_http: false,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self { max_body_bytes: 8 * 1024 * 1024 }
    }
}

/// Values given as command-line flags; `None` leaves the lower layers in force.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<LogFormat>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Unreadable { path: PathBuf, source: std::io::Error },
    #[error("{path}:{line}: key `{key}`: {message}")]
    Invalid { path: PathBuf, line: usize, key: String, message: String },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
}

impl Config {
    /// Loads the effective configuration. `explicit` is `--config`: it must exist; without
    /// it `slipway.toml` in the working directory is read when present.
    pub fn load(explicit: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
        Self::load_with_env(explicit, overrides, std::env::vars())
    }

    /// As [`Config::load`], with the environment given explicitly so tests need not mutate
    /// the process environment.
    pub fn load_with_env(
        explicit: Option<&Path>,
        overrides: &Overrides,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let from_file = match explicit {
            Some(path) => Self::from_file(path)?,
            None if Path::new(DEFAULT_CONFIG_FILE).exists() => {
                Self::from_file(Path::new(DEFAULT_CONFIG_FILE))?
            }
            None => Config::default(),
        };
        let known = top_level_keys();
        let mut figment = Figment::from(Serialized::defaults(from_file));
        for (var, value) in env {
            let Some(key) = var.strip_prefix("SLIPWAY_") else { continue };
            let key = key.to_ascii_lowercase();
            if !known.iter().any(|k| Some(k.as_str()) == key.split("__").next()) {
                continue; // SLIPWAY_TOKEN and the like belong to the CLI, not to this struct
            }
            let value: figment::value::Value = value.parse().unwrap_or_else(|e| match e {});
            figment = figment.merge(Serialized::default(&key.replace("__", "."), value));
        }
        // Flags are typed by clap already, so an extraction error can only come from the
        // environment: name the variable a person has to fix.
        figment.merge(Serialized::defaults(overrides)).extract().map_err(|e| {
            let var = format!("SLIPWAY_{}", e.path.join("__").to_ascii_uppercase());
            ConfigError::Env { var, message: e.kind.to_string() }
        })
    }

    fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Unreadable { path: path.into(), source })?;
        toml::from_str(&text).map_err(|e| {
            let offset = e.span().map(|s| s.start).unwrap_or(0).min(text.len());
            let line = text[..offset].matches('\n').count() + 1;
            ConfigError::Invalid {
                path: path.into(),
                line,
                key: key_at(&text, offset),
                message: e.message().trim().to_owned(),
            }
        })
    }

    /// A copy safe to print or return: passwords and secret keys replaced.
    pub fn masked(&self) -> Config {
        let mut c = self.clone();
        c.database.url = mask_url_password(&c.database.url);
        if !c.object_store.s3.secret_access_key.is_empty() {
            c.object_store.s3.secret_access_key = MASK.into();
        }
        c
    }

    pub fn database_url(&self) -> String {
        if self.database.url.is_empty() {
            format!("sqlite://{}?mode=rwc", self.data_dir.join("slipway.db").display())
        } else {
            self.database.url.clone()
        }
    }

    pub fn object_store_path(&self) -> PathBuf {
        if self.object_store.path.is_empty() {
            self.data_dir.join("objects")
        } else {
            PathBuf::from(&self.object_store.path)
        }
    }
}

fn top_level_keys() -> Vec<String> {
    match toml::Table::try_from(Config::default()) {
        Ok(table) => table.keys().cloned().collect(),
        Err(_) => Vec::new(),
    }
}

/// The dotted key whose line holds `offset`, with the enclosing `[table]` header.
fn key_at(text: &str, offset: usize) -> String {
    let before = &text[..offset];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or_default().trim();
    let table = before[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('[') && l.ends_with(']'))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_owned());
    let key = match line.split_once('=') {
        Some((k, _)) => k.trim().to_owned(),
        None => line.trim_matches(|c| c == '[' || c == ']').trim().to_owned(),
    };
    match table {
        Some(t) if !line.starts_with('[') => format!("{t}.{key}"),
        _ => key,
    }
}

fn mask_url_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let Some((userinfo, host)) = rest.split_once('@') else { return url.to_owned() };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:{MASK}@{host}"),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("slipway.toml");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn file_then_env_then_flags() {
        let (_d, path) = write(
            "listen = \"127.0.0.1:9000\"\ndata_dir = \"/from/file\"\nlog_filter = \"debug\"\n[database]\nmax_connections = 3\n",
        );
        let only_file = Config::load_with_env(Some(&path), &Overrides::default(), env(&[])).unwrap();
        assert_eq!(only_file.listen.port(), 9000);
        assert_eq!(only_file.data_dir, PathBuf::from("/from/file"));
        assert_eq!(only_file.database.max_connections, 3);

        let with_env = Config::load_with_env(
            Some(&path),
            &Overrides::default(),
            env(&[
                ("SLIPWAY_LISTEN", "127.0.0.1:9100"),
                ("SLIPWAY_DATABASE__MAX_CONNECTIONS", "5"),
                ("SLIPWAY_TOKEN", "not-a-config-key"),
            ]),
        )
        .unwrap();
        assert_eq!(with_env.listen.port(), 9100);
        assert_eq!(with_env.database.max_connections, 5);
        assert_eq!(with_env.log_filter, "debug", "file value kept where env is silent");

        let flags = Overrides {
            listen: Some("127.0.0.1:9200".parse().unwrap()),
            data_dir: Some("/from/flag".into()),
            log_format: None,
        };
        let with_flags = Config::load_with_env(
            Some(&path),
            &flags,
            env(&[("SLIPWAY_LISTEN", "127.0.0.1:9100"), ("SLIPWAY_DATA_DIR", "/from/env")]),
        )
        .unwrap();
        assert_eq!(with_flags.listen.port(), 9200);
        assert_eq!(with_flags.data_dir, PathBuf::from("/from/flag"));
    }

    #[test]
    fn malformed_file_names_file_line_and_key() {
        let (_d, path) = write("listen = \"127.0.0.1:1\"\n\n[database]\nmax_connections = \"many\"\n");
        let err = Config::load_with_env(Some(&path), &Overrides::default(), env(&[])).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("slipway.toml:4:"), "{text}");
        assert!(text.contains("database.max_connections"), "{text}");
        assert_eq!(text.lines().count(), 1, "one line: {text}");

        let (_d, path) = write("listen = \"127.0.0.1:1\"\nlisten_port = 7\n");
        let err = Config::load_with_env(Some(&path), &Overrides::default(), env(&[])).unwrap_err();
        assert!(err.to_string().contains(":2: key `listen_port`"), "{err}");

        let (_d, path) = write("listen = \n");
        let err = Config::load_with_env(Some(&path), &Overrides::default(), env(&[])).unwrap_err();
        assert!(err.to_string().contains(":1: key `listen`"), "{err}");
    }

    #[test]
    fn unreadable_file_is_named() {
        let err = Config::load_with_env(
            Some(Path::new("/nonexistent/slipway.toml")),
            &Overrides::default(),
            env(&[]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/slipway.toml"), "{err}");
    }

    #[test]
    fn bad_env_value_is_named() {
        let err = Config::load_with_env(None, &Overrides::default(), env(&[("SLIPWAY_LISTEN", "nowhere")]))
            .unwrap_err();
        assert!(err.to_string().starts_with("environment variable SLIPWAY_LISTEN:"), "{err}");
    }

    #[test]
    fn secrets_are_masked() {
        let mut c = Config::default();
        c.database.url = "postgres://slipway:hunter2@db:5432/slipway".into();
        c.object_store.s3.secret_access_key = "s3cr3t".into();
        let printed = toml::to_string(&c.masked()).unwrap();
        assert!(!printed.contains("hunter2") && !printed.contains("s3cr3t"), "{printed}");
        assert!(printed.contains("postgres://slipway:********@db:5432/slipway"), "{printed}");
    }
}
