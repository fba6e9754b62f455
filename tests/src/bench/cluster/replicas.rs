//! Real `slipway serve` replicas on one PostgreSQL database and one object store (Garage S3
//! where `SLIPWAY_TEST_S3_*` names it, else a directory they share), for the `cluster`
//! benchmark and the fault tests: start n, kill one (SIGKILL), stop one (SIGSTOP) and let it
//! continue (SIGCONT), add another while the others work.
//!
//! Replica `i` is `replica-{i}` in the database (`/v1/cluster`, a build's `replica`), keeps
//! its data in `replica-{i}/` and its log (stderr) in `replica-{i}.log`.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

use crate::database::OwnPostgres;
use crate::process::{Slipway, slipway_binary};

pub struct Cluster {
    /// `None` once killed. Declared first: the replicas stop before the database does.
    replicas: Vec<Option<Slipway>>,
    binary: PathBuf,
    /// Every replica's `slipway.toml`.
    config_file: PathBuf,
    /// What every replica is started with besides the database: the object store and lease.
    env: Vec<(String, String)>,
    /// The database every replica shares.
    pub database_url: String,
    /// Started here when no test PostgreSQL was given.
    postgres: Option<OwnPostgres>,
    root: TempDir,
}

impl Cluster {
    /// Starts `n` replicas with leases of `lease_ms` and `config` as their `slipway.toml`.
    pub async fn start(n: usize, lease_ms: u64, config: &str) -> Cluster {
        let binary = slipway_binary();
        let root = tempfile::tempdir().expect("cluster directory");
        // PostgreSQL run as root by postgres.sh is its own user and must reach its directory.
        std::fs::set_permissions(root.path(), std::os::unix::fs::PermissionsExt::from_mode(0o711)).unwrap();
        let (postgres, database_url) = match std::env::var("SLIPWAY_TEST_POSTGRES_URL") {
            Ok(_) => (None, crate::database::create_database().await),
            Err(_) => {
                let own = OwnPostgres::start(root.path());
                let url = own.create("slipway");
                (Some(own), url)
            }
        };
        let config_file = root.path().join("slipway.toml");
        std::fs::write(&config_file, config).unwrap();
        let mut env = vec![("SLIPWAY_CLUSTER__LEASE_MS".to_owned(), lease_ms.to_string())];
        env.extend(object_store_env(root.path()));
        let mut cluster =
            Cluster { replicas: Vec::new(), binary, config_file, env, database_url, postgres, root };
        for _ in 0..n {
            cluster.add().await;
        }
        cluster
    }

    /// Starts one more replica once it answers; returns its index.
    pub async fn add(&mut self) -> usize {
        let i = self.replicas.len();
        let data = self.root.path().join(format!("replica-{i}"));
        std::fs::create_dir_all(&data).unwrap();
        if i > 0 {
            // The first replica made the admin token in the shared database; all use it.
            let token = slipway_server::auth::ADMIN_TOKEN_FILE;
            std::fs::copy(self.root.path().join("replica-0").join(token), data.join(token)).unwrap();
        }
        let id = Self::id(i);
        // Its sessions carry its id in `pg_stat_activity`, so a test can tell them apart.
        let database = format!("{}?application_name={id}", self.database_url);
        let mut env: Vec<(&str, &str)> = self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        env.push(("SLIPWAY_DATABASE__URL", &database));
        env.push(("SLIPWAY_CLUSTER__REPLICA_ID", &id));
        let config = self.config_file.display().to_string();
        let log = File::create(self.log_path(i)).unwrap();
        let replica = Slipway::launch(&self.binary, &data, &["--config", &config], &env, log).await;
        self.replicas.push(Some(replica));
        i
    }

    /// The id replica `i` has in the database.
    pub fn id(i: usize) -> String {
        format!("replica-{i}")
    }

    /// Which replica has `id`, if it is one of these.
    pub fn index_of(&self, id: &str) -> Option<usize> {
        (0..self.replicas.len()).find(|&i| Self::id(i) == id)
    }

    /// Replica `i`; panics if it was killed.
    pub fn replica(&self, i: usize) -> &Slipway {
        self.replicas[i].as_ref().unwrap_or_else(|| panic!("replica {i} was killed"))
    }

    /// The replicas not killed, with their indexes.
    pub fn live(&self) -> impl Iterator<Item = (usize, &Slipway)> {
        self.replicas.iter().enumerate().filter_map(|(i, r)| r.as_ref().map(|r| (i, r)))
    }

    /// SIGKILL: no shutdown handler runs, nothing is flushed or rolled back by the process.
    pub fn kill(&mut self, i: usize) {
        self.replicas[i].take().unwrap_or_else(|| panic!("replica {i} was killed already")).kill();
    }

    /// SIGSTOP: the process freezes as if cut off; its connections stay open.
    pub fn stop(&self, i: usize) {
        self.signal(i, "STOP");
    }

    /// SIGCONT after [`Cluster::stop`].
    pub fn cont(&self, i: usize) {
        self.signal(i, "CONT");
    }

    fn signal(&self, i: usize, signal: &str) {
        let pid = self.replica(i).pid().to_string();
        let status = Command::new("kill").args([&format!("-{signal}"), &pid]).status().unwrap();
        assert!(status.success(), "kill -{signal} {pid}");
    }

    /// What replica `i` logged so far.
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.log_path(i)).unwrap_or_default()
    }

    fn log_path(&self, i: usize) -> PathBuf {
        self.root.path().join(format!("replica-{i}.log"))
    }

    /// A pool on the shared database, for checking what the replicas recorded.
    pub async fn database(&self) -> sqlx::AnyPool {
        sqlx::any::install_default_drivers();
        sqlx::any::AnyPoolOptions::new()
            .max_connections(4)
            .connect(&self.database_url)
            .await
            .expect("connect to the cluster's database")
    }

    /// A new, empty database on the cluster's PostgreSQL server, for work beside the
    /// replicas' own.
    pub async fn another_database(&self, name: &str) -> String {
        match &self.postgres {
            Some(own) => own.create(name),
            None => crate::database::create_database().await,
        }
    }

    /// Where the cluster keeps its files (a benchmark puts its sources here).
    pub fn dir(&self) -> &Path {
        self.root.path()
    }
}

impl Drop for Cluster {
    /// A failing test shows what the replicas logged before their directory goes.
    fn drop(&mut self) {
        if std::thread::panicking() {
            for i in 0..self.replicas.len() {
                let log = self.log(i);
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                eprintln!("--- {} (last {} lines)", Self::id(i), tail.len());
                tail.iter().rev().for_each(|line| eprintln!("{line}"));
            }
        }
    }
}

/// The object store every replica shares: the test Garage when there is one.
fn object_store_env(root: &Path) -> Vec<(String, String)> {
    let s3 = |name: &str| std::env::var(format!("SLIPWAY_TEST_S3_{name}")).ok();
    let pairs: Vec<(&str, String)> =
        match (s3("ENDPOINT"), s3("BUCKET"), s3("ACCESS_KEY_ID"), s3("SECRET_ACCESS_KEY")) {
            (Some(endpoint), Some(bucket), Some(key), Some(secret)) => vec![
                ("KIND", "s3".into()),
                ("S3__ENDPOINT", endpoint),
                ("S3__BUCKET", bucket),
                ("S3__REGION", "garage".into()),
                ("S3__ACCESS_KEY_ID", key),
                ("S3__SECRET_ACCESS_KEY", secret),
                ("S3__ALLOW_HTTP", "true".into()),
            ],
            _ => vec![("PATH", root.join("objects").display().to_string())],
        };
    pairs.into_iter().map(|(k, v)| (format!("SLIPWAY_OBJECT_STORE__{k}"), v)).collect()
}
