//! Slipway plugin host: loads, sandboxes, versions and runs the JavaScript plugin scripts
//! (component types, status checks, trigger adapters) with QuickJS.
//!
//! Owns: plugin identity ([`PluginTriple`]: `kind/name/revision`), plugin packages
//! (`.tar.gz` with a `plugin.toml`), the active-revision map, the built-in package, and the
//! sandbox. Must not know: HTTP, builds, registries or scheduling; the database and object
//! store are handed in by the server, and observations are made by the status crate.
//!
//! Scripts never run in the calling process. [`PluginHost`] keeps a pool of
//! `slipway-plugin-worker` processes and sends them batches of calls over pipes: QuickJS's
//! interrupt handler is cooperative and an engine assertion aborts a process, so the host
//! enforces the time limit from outside (it kills a worker that overruns) and replaces any
//! worker that dies, and batching is what keeps the call path fast.
//!
//! ```no_run
//! # async fn example(db: sqlx::AnyPool, objects: std::sync::Arc<dyn object_store::ObjectStore>) -> Result<(), slipway_plugins::Error> {
//! use slipway_plugins::{CheckInput, HostConfig, PluginHost, WireValue};
//! let host = PluginHost::open(db, objects, HostConfig::default()).await?;
//! let verdicts = host
//!     .check_batch("http", &[CheckInput {
//!         instance_id: "web-1".into(),
//!         instance: serde_json::json!({"params": {"expect_status": [200]}}).into(),
//!         observation: WireValue::object(|o| {
//!             o.object("http", |http| {
//!                 http.int("status", 200);
//!                 http.object("headers", |_| {});
//!                 http.str("body", "");
//!                 http.null("json");
//!                 http.int("latency_ms", 3);
//!             });
//!             o.null("error");
//!         }),
//!         memo: false,
//!     }])
//!     .await?;
//! # Ok(()) }
//! ```

mod builtin;
mod call_list;
mod config;
mod error;
mod host;
mod memo;
mod model;
mod package;
mod pool;
mod protocol;
mod store;
mod triple;
mod verdict;
mod wire;
mod wire_value;
pub mod worker;

pub use config::HostConfig;
pub use error::{Error, ScriptLocation};
pub use host::PluginHost;
pub use model::{
    CallOutput, CheckInput, CheckVerdict, Details, PackageInfo, RevisionInfo, ScriptInfo, ScriptRevisions,
};
pub use package::{builtin_package, pack as pack_package};
pub use protocol::WorkerStats;
pub use triple::{HealthStatus, PluginTriple, ScriptKind};
pub use wire_value::{ObjectWriter, WireValue};

/// Database migrations of this crate, applied in order by the server at start.
pub const MIGRATIONS: &[(&str, &str)] = &[(
    "plugins-0001-packages-scripts-active",
    "CREATE TABLE plugin_packages (
        name TEXT PRIMARY KEY,
        version TEXT NOT NULL,
        description TEXT NOT NULL,
        digest TEXT NOT NULL,
        object_key TEXT NOT NULL,
        installed_at_ms BIGINT NOT NULL
    );
    CREATE TABLE plugin_scripts (
        kind TEXT NOT NULL,
        name TEXT NOT NULL,
        revision BIGINT NOT NULL,
        package TEXT NOT NULL,
        package_version TEXT NOT NULL,
        file TEXT NOT NULL,
        source TEXT NOT NULL,
        code_hash TEXT NOT NULL,
        params_schema TEXT,
        installed_at_ms BIGINT NOT NULL,
        PRIMARY KEY (kind, name, revision)
    );
    CREATE INDEX plugin_scripts_package ON plugin_scripts (package);
    CREATE TABLE plugin_active (
        kind TEXT NOT NULL,
        name TEXT NOT NULL,
        revision BIGINT NOT NULL,
        updated_at_ms BIGINT NOT NULL,
        PRIMARY KEY (kind, name)
    )",
)];
