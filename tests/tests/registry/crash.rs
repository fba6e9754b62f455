//! The real `slipway` binary killed with SIGKILL in the middle of a streaming publish: after
//! a restart the registry holds exactly the packages committed before, every one of them
//! downloadable, and the garbage collector removes what the dead upload left behind.

use slipway_tests::process::{Slipway, admin_token, slipway_binary};
use tokio::io::AsyncWriteExt;

use crate::storage::{has_files, package_bytes, wait_for};

/// Collect every second with no grace, so the test sees the restart clean up.
const GC_EVERY_SECOND: &[(&str, &str)] =
    &[("SLIPWAY_REGISTRY__GC_GRACE_SECS", "0"), ("SLIPWAY_REGISTRY__GC_INTERVAL_SECS", "1")];

#[tokio::test]
async fn a_server_killed_mid_publish_leaves_no_half_package() {
    let binary = slipway_binary();
    let data = tempfile::tempdir().unwrap();
    let server = Slipway::start(&binary, data.path(), &[], GC_EVERY_SECOND).await;
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

    let server = Slipway::start(&binary, data.path(), &[], GC_EVERY_SECOND).await;
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
