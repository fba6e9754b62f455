//! The real `slipway` binary: configuration layering as a person meets it, the errors of a
//! bad config file or a taken port, and shutdown on SIGTERM.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn slipway() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_slipway"));
    // The developer's own environment must not leak into what is checked.
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("SLIPWAY_")) {
        command.env_remove(key);
    }
    command
}

fn run(command: &mut Command) -> (Output, String) {
    let output = command.output().expect("run slipway");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output, stderr)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn config_prints_layered_values_with_secrets_masked() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("custom.toml");
    std::fs::write(
        &file,
        "listen = \"127.0.0.1:7001\"\nlog_filter = \"debug\"\n[database]\nurl = \"postgres://app:hunter2@db/slipway\"\n",
    )
    .unwrap();
    let (output, stderr) = run(slipway()
        .args(["config", "--config"])
        .arg(&file)
        .args(["--data-dir", "/srv/slipway"])
        .env("SLIPWAY_LISTEN", "127.0.0.1:7002")
        .env("SLIPWAY_OBJECT_STORE__S3__SECRET_ACCESS_KEY", "topsecret"));
    assert!(output.status.success(), "{stderr}");
    let printed = String::from_utf8(output.stdout).unwrap();
    let config: toml::Table = toml::from_str(&printed).unwrap();
    assert_eq!(config["listen"].as_str(), Some("127.0.0.1:7002"), "env beats file");
    assert_eq!(config["data_dir"].as_str(), Some("/srv/slipway"), "flag beats default");
    assert_eq!(config["log_filter"].as_str(), Some("debug"), "file beats default");
    assert!(!printed.contains("hunter2") && !printed.contains("topsecret"), "{printed}");
}

#[test]
fn malformed_config_is_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("slipway.toml");
    std::fs::write(&file, "# data\n[limits]\nmax_body_bytes = \"lots\"\n").unwrap();
    let (output, stderr) = run(slipway().arg("serve").arg("--config").arg(&file));
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    let line = stderr.trim();
    assert_eq!(line.lines().count(), 1, "{stderr}");
    assert!(line.contains(&format!("{}:3:", file.display())), "{line}");
    assert!(line.contains("limits.max_body_bytes"), "{line}");

    let (output, stderr) = run(slipway().args(["serve", "--config", "/no/such/slipway.toml"]));
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("/no/such/slipway.toml"), "{stderr}");
}

#[test]
fn occupied_port_is_a_clear_error_not_a_panic() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (output, stderr) =
        run(slipway().args(["serve", "--listen", &addr.to_string(), "--data-dir"]).arg(dir.path()));
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("address already in use"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
    }
}

#[test]
fn serves_then_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let mut child = Running(
        slipway()
            .args(["serve", "--log-format", "json", "--listen", &addr, "--data-dir"])
            .arg(dir.path())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut logs = BufReader::new(child.0.stderr.take().unwrap()).lines();
    let first = logs.next().expect("a log line").unwrap();
    let event: serde_json::Value = serde_json::from_str(&first).expect("JSON log line");
    assert!(event["message"].as_str().is_some(), "{first}");
    let listening =
        std::iter::once(first).chain(logs.by_ref().map_while(Result::ok)).find(|l| l.contains("listening"));
    assert!(listening.is_some(), "server never said it was listening");

    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(Instant::now() < deadline, "server did not accept connections");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(dir.path().join("slipway.db").exists(), "embedded database created in the data dir");
    assert!(dir.path().join("objects").is_dir(), "local object store created in the data dir");

    let pid = child.0.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "no exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "exit status {status}");
    let rest: Vec<String> = logs.map_while(Result::ok).collect();
    assert!(rest.iter().any(|l| l.contains("slipway stopped")), "{rest:?}");
}
