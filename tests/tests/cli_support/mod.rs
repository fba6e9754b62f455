//! Runs the real `slipway` binary (built once per test process by cargo, into the same
//! target directory as the tests) against a test server.

// Each test binary that includes this module uses only part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use slipway_tests::server::TestServer;

/// The `slipway` binary, built by cargo for this test run's profile: cargo builds
/// binaries only for the package under test, and the CLI lives in `slipway-server`.
pub fn slipway_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let exe = std::env::current_exe().expect("test executable path");
        let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile>/deps/<test>");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build.args(["build", "--quiet", "-p", "slipway-server", "--bin", "slipway"]);
        if profile_dir.ends_with("release") {
            build.arg("--release");
        }
        let target_dir = profile_dir.parent().expect("target directory");
        let status = build.env("CARGO_TARGET_DIR", target_dir).status().expect("run cargo build");
        assert!(status.success(), "building the slipway binary failed");
        profile_dir.join("slipway")
    })
}

/// What one CLI run printed and how it ended.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }
}

/// A CLI pointed at `server` with `token`, run in an empty directory (so no slipway.toml
/// or data directory of the developer's is picked up).
pub struct Cli {
    server: String,
    token: Option<String>,
    cwd: tempfile::TempDir,
}

impl Cli {
    pub fn new(server: &TestServer) -> Self {
        Self::with(&format!("http://{}", server.addr), Some(&server.admin_token))
    }

    pub fn with(server: &str, token: Option<&str>) -> Self {
        Self { server: server.into(), token: token.map(str::to_owned), cwd: tempfile::tempdir().unwrap() }
    }

    pub fn dir(&self) -> &Path {
        self.cwd.path()
    }

    pub async fn run(&self, args: &[&str]) -> Run {
        let out = self.command(args).output().await.expect("run slipway");
        let run = Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        eprintln!("$ slipway {}\n-> exit {}\n{}{}", args.join(" "), run.code, run.stdout, run.stderr);
        run
    }

    /// Starts a long-running command (`health --watch`) with its stdout piped, killed when
    /// dropped.
    pub fn spawn(&self, args: &[&str]) -> tokio::process::Child {
        eprintln!("$ slipway {} &", args.join(" "));
        self.command(args).stdout(Stdio::piped()).kill_on_drop(true).spawn().expect("start slipway")
    }

    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(slipway_binary());
        command
            .args(args)
            .current_dir(self.cwd.path())
            .env("SLIPWAY_SERVER", &self.server)
            .env("NO_COLOR", "1");
        match &self.token {
            Some(token) => command.env("SLIPWAY_TOKEN", token),
            None => command.env_remove("SLIPWAY_TOKEN"),
        };
        command
    }
}

/// The example app of the README's main command.
pub fn example_app() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/hello").canonicalize().unwrap()
}

/// A fleet simulator serving the example app's six instances, and the example's
/// `fleet.yaml` rewritten to point at it (in the CLI's directory), ready to register.
pub async fn example_fleet(cli: &Cli) -> (slipway_tests::fleet::Fleet, PathBuf) {
    use slipway_tests::fleet::{Fleet, FleetConfig};
    let fleet = Fleet::start(FleetConfig { instances: 6, ports: 1, per_namespace: 1_000 }, 0).await.unwrap();
    let example = std::fs::read_to_string(example_app().join("fleet.yaml")).unwrap();
    let file = cli.dir().join("fleet.yaml");
    std::fs::write(&file, example.replace("127.0.0.1:7710", &fleet.endpoints.addrs[0].to_string())).unwrap();
    (fleet, file)
}
