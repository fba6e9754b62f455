//! The real `slipway` binary killed with SIGKILL in the middle of a streaming publish: after
//! a restart the registry holds exactly the packages committed before, every one of them
//! downloadable, and the garbage collector removes what the dead upload left behind.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use slipway_tests::server::TestServer;
use tokio::io::AsyncWriteExt;

use crate::storage::{has_files, package_bytes, wait_for};

/// Builds (if needed) and returns the `slipway` binary next to this test's target dir.
fn slipway_binary() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--quiet", "-p", "slipway-server", "--bin", "slipway"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("run cargo build");
    assert!(status.success(), "building the slipway binary failed");
    // target/debug/deps/<this test> -> target/debug/slipway
    let exe = std::env::current_exe().unwrap();
    exe.parent().and_then(Path::parent).unwrap().join("slipway")
}

fn admin_token(data_dir: &Path) -> String {
    std::fs::read_to_string(data_dir.join(slipway_server::auth::ADMIN_TOKEN_FILE)).unwrap().trim().to_owned()
}

struct Slipway {
    child: Child,
    addr: SocketAddr,
    client: reqwest::Client,
}

impl Slipway {
    async fn start(binary: &Path, data_dir: &Path) -> Slipway {
        let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let child = Command::new(binary)
            .args(["serve", "--listen", &addr.to_string(), "--data-dir"])
            .arg(data_dir)
            // Collect every second with no grace, so the test sees the restart clean up.
            .env("SLIPWAY_REGISTRY__GC_GRACE_SECS", "0")
            .env("SLIPWAY_REGISTRY__GC_INTERVAL_SECS", "1")
            .env("SLIPWAY_LOG_FILTER", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("start slipway");
        let url = format!("http://{addr}/healthz");
        for _ in 0..200 {
            if reqwest::get(&url).await.is_ok_and(|r| r.status().is_success()) {
                let client = TestServer::client_with_token(&admin_token(data_dir));
                return Slipway { child, addr, client };
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("slipway did not start on {addr}");
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn kill(mut self) {
        // SIGKILL: no shutdown handler, no flush, no rollback runs in the process.
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

#[tokio::test]
async fn a_server_killed_mid_publish_leaves_no_half_package() {
    let binary = slipway_binary();
    let data = tempfile::tempdir().unwrap();
    let server = Slipway::start(&binary, data.path()).await;
    let client = server.client.clone();
    let committed = package_bytes("shop", "1.0.0", 50_000);
    let response = client
        .post(server.url("/v1/apps/shop/packages:upload"))
        .body(committed.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);

    // A large upload, streamed slowly by hand so the server is mid-write when it dies.
    let big = package_bytes("shop", "2.0.0", 8 << 20);
    let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let head = format!(
        "POST /v1/apps/shop/packages:upload HTTP/1.1\r\nhost: {}\r\nauthorization: Bearer {}\r\ncontent-length: {}\r\n\r\n",
        server.addr,
        admin_token(data.path()),
        big.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&big[..big.len() / 2]).await.unwrap();
    let uploads = data.path().join("objects/uploads");
    wait_for(|| has_files(&uploads)).await;
    server.kill();
    drop(stream);
    assert!(has_files(&uploads), "the dead upload left its staging file");

    let server = Slipway::start(&binary, data.path()).await;
    let client = server.client.clone();
    let listing: serde_json::Value =
        client.get(server.url("/v1/apps/shop/packages")).send().await.unwrap().json().await.unwrap();
    let versions: Vec<&str> =
        listing["items"].as_array().unwrap().iter().map(|p| p["version"].as_str().unwrap()).collect();
    assert_eq!(versions, ["1.0.0"], "only the committed package exists");
    wait_for(|| !has_files(&uploads)).await;
    let downloaded = client.get(server.url("/v1/apps/shop/packages/1.0.0/download")).send().await.unwrap();
    assert_eq!(downloaded.status(), 200);
    assert_eq!(downloaded.bytes().await.unwrap(), committed, "the committed blob survived collection");
    // The interrupted version can be published now, in full.
    let response = client.post(server.url("/v1/apps/shop/packages:upload")).body(big).send().await.unwrap();
    assert_eq!(response.status(), 201);
    server.kill();
}
