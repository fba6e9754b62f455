//! The real `slipway` binary as a child process on a free loopback port, so a test can kill
//! it with SIGKILL (no shutdown handler, no flush, no rollback runs) and start it again on
//! the same data directory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::server::TestServer;

/// Builds (if needed) and returns the `slipway` binary of the running executable's target
/// dir and profile: a test (`target/debug/deps/<test>`) gets `target/debug/slipway`, the
/// benchmark runner (`target/release/slipway-bench`) gets `target/release/slipway`.
pub fn slipway_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let mut dir = exe.parent().unwrap();
    if dir.ends_with("deps") {
        dir = dir.parent().unwrap();
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(cargo);
    build.args(["build", "--quiet", "-p", "slipway-server", "--bin", "slipway"]);
    if dir.ends_with("release") {
        build.arg("--release");
    }
    let status = build.current_dir(env!("CARGO_MANIFEST_DIR")).status().expect("run cargo build");
    assert!(status.success(), "building the slipway binary failed");
    dir.join("slipway")
}

pub fn admin_token(data_dir: &Path) -> String {
    std::fs::read_to_string(data_dir.join(slipway_server::auth::ADMIN_TOKEN_FILE)).unwrap().trim().to_owned()
}

pub struct Slipway {
    child: Child,
    pub addr: SocketAddr,
    /// Sends the admin token with every request.
    pub client: reqwest::Client,
}

impl Slipway {
    /// Starts `binary serve` on `data_dir` with `args` and `env` added, once it answers; on
    /// the PostgreSQL pass on the database of `data_dir` unless `env` names one.
    pub async fn start(binary: &Path, data_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Slipway {
        let names_database = env.iter().any(|(name, _)| *name == "SLIPWAY_DATABASE__URL");
        let database = if crate::database::postgres_pass() && !names_database {
            Some(crate::database::database_for(data_dir).await)
        } else {
            None
        };
        let mut env = env.to_vec();
        if let Some(url) = &database {
            env.push(("SLIPWAY_DATABASE__URL", url));
        }
        Self::launch(binary, data_dir, args, &env, Stdio::inherit()).await
    }

    /// Starts `binary serve` on `data_dir` with exactly `args` and `env` added, its log
    /// (stderr) going to `log`, once it answers.
    pub async fn launch(
        binary: &Path,
        data_dir: &Path,
        args: &[&str],
        env: &[(&str, &str)],
        log: impl Into<Stdio>,
    ) -> Slipway {
        let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let child = Command::new(binary)
            .args(["serve", "--listen", &addr.to_string(), "--data-dir"])
            .arg(data_dir)
            .args(args)
            .env("SLIPWAY_LOG_FILTER", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start slipway");
        let url = format!("http://{addr}/healthz");
        for _ in 0..400 {
            if reqwest::get(&url).await.is_ok_and(|r| r.status().is_success()) {
                let client = TestServer::client_with_token(&admin_token(data_dir));
                return Slipway { child, addr, client };
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("slipway did not start on {addr}");
    }

    /// The process id, for signals.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `GET path` as the admin, answered with JSON.
    pub async fn get_json(&self, path: &str) -> serde_json::Value {
        self.client.get(self.url(path)).send().await.expect("GET").json().await.expect("a JSON answer")
    }

    /// `POST path` with a JSON body as the admin, answered with JSON.
    pub async fn post_json(&self, path: &str, body: &serde_json::Value) -> serde_json::Value {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("POST")
            .json()
            .await
            .expect("a JSON answer")
    }

    /// Submits a build of `app` with one component, `name`, built from the Dockerfile in
    /// `source/name`, tagged `stable`; returns its id once it is accepted.
    pub async fn submit_dir_build(&self, app: &str, name: &str, source: &Path) -> String {
        let response = self
            .client
            .post(self.url(&format!("/v1/apps/{app}/builds")))
            .json(&serde_json::json!({"tags": ["stable"], "components": [
                {"name": name, "type": "microservice", "source": {"dir": {"path": source}}, "path": name},
            ]}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
        let accepted: serde_json::Value = response.json().await.unwrap();
        accepted["id"].as_str().unwrap().to_owned()
    }

    /// SIGKILL, and wait until the process is gone.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Slipway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
