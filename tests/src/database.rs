//! Which database a test server uses. By default the embedded SQLite file in its data
//! directory; with `SLIPWAY_TEST_DATABASE=postgres`, a database of its own on the PostgreSQL
//! server `SLIPWAY_TEST_POSTGRES_URL` names (tests/run.sh starts one and runs the suite once
//! per backend, so the two never drift).
//!
//! The database belongs to the data directory: a server restarted on the same directory
//! finds the same database again, as it would find the same SQLite file.

use std::path::{Path, PathBuf};
use std::process::Command;

use slipway_server::config::Config;
use sqlx::Connection;

/// Names the PostgreSQL database chosen for a data directory, inside that directory.
const DATABASE_FILE: &str = "test-database-url";

/// True when this test run is the PostgreSQL pass.
pub fn postgres_pass() -> bool {
    std::env::var("SLIPWAY_TEST_DATABASE").is_ok_and(|v| v == "postgres")
}

/// True on the PostgreSQL pass; otherwise says why the test does not run on this one.
pub fn postgres_pass_or_skip(why: &str) -> bool {
    let on = postgres_pass();
    if !on {
        eprintln!("skipped on the SQLite pass: {why} (the PostgreSQL pass runs it)");
    }
    on
}

/// Points `config` at the database for its data directory, unless the test chose one itself.
pub async fn assign(config: &mut Config) {
    if !config.database.url.is_empty() || !postgres_pass() {
        return;
    }
    config.database.url = database_for(&config.data_dir).await;
}

/// The database URL for `data_dir` on the test PostgreSQL server, created on first use.
pub async fn database_for(data_dir: &Path) -> String {
    let file = data_dir.join(DATABASE_FILE);
    if let Ok(url) = std::fs::read_to_string(&file) {
        return url;
    }
    let url = create_database().await;
    std::fs::create_dir_all(data_dir).expect("create data dir");
    std::fs::write(&file, &url).expect("remember the test database");
    url
}

/// A new, empty database on the test PostgreSQL server.
pub async fn create_database() -> String {
    let admin = std::env::var("SLIPWAY_TEST_POSTGRES_URL")
        .expect("SLIPWAY_TEST_DATABASE=postgres needs SLIPWAY_TEST_POSTGRES_URL (tests/run.sh sets both)");
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(&admin)
        .await
        .unwrap_or_else(|e| panic!("cannot reach the test PostgreSQL at {admin}: {e}"));
    let name = format!("t_{}", uuid_like());
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .expect("create test database");
    let (base, _) = admin.rsplit_once('/').expect("a URL ending in /<database>");
    format!("{base}/{name}")
}

/// Unique enough across the test processes of one run: time, process and a counter.
fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{nanos:x}_{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// A database several replicas share, kept with `dir`: a SQLite file in it, or on the
/// PostgreSQL pass a database of its own.
pub async fn shared_url(dir: &Path) -> String {
    if postgres_pass() {
        database_for(dir).await
    } else {
        format!("sqlite://{}?mode=rwc", dir.join("shared.db").display())
    }
}

/// A PostgreSQL server of a test's or benchmark's own, started by `tests/postgres.sh` with
/// its data under a directory the caller keeps: an outage test stops it without reaching
/// other tests' databases, and a cluster benchmark runs where no test server was started.
/// Stopped when dropped.
pub struct OwnPostgres {
    dir: PathBuf,
    /// The server's `postgres` database, for creating others.
    pub url: String,
}

impl OwnPostgres {
    fn script() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("postgres.sh")
    }

    /// Starts it in `parent/postgres`; as root, `parent` must let the `postgres` user through
    /// (mode 0711).
    pub fn start(parent: &Path) -> OwnPostgres {
        let dir = parent.join("postgres");
        let out = Command::new("bash").arg(Self::script()).arg("start").arg(&dir).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let env = String::from_utf8(out.stdout).unwrap();
        let url = env.lines().find_map(|l| l.strip_prefix("export SLIPWAY_TEST_POSTGRES_URL=")).unwrap();
        OwnPostgres { dir, url: url.to_owned() }
    }

    /// `stop` (fast shutdown) or `resume` (start again on the same port).
    pub fn run(&self, command: &str) {
        assert!(
            Command::new("bash").arg(Self::script()).arg(command).arg(&self.dir).status().unwrap().success()
        );
    }

    /// Creates database `name` and returns its URL.
    pub fn create(&self, name: &str) -> String {
        let status = Command::new("psql")
            .arg(&self.url)
            .args(["-qc", &format!("CREATE DATABASE {name}")])
            .status()
            .unwrap();
        assert!(status.success(), "creating database {name}");
        format!("{}/{name}", self.url.rsplit_once('/').unwrap().0)
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        self.run("stop");
    }
}
