//! An answered delivery outlives the process that answered it: the real `slipway` binary
//! under a flood of deliveries is killed with SIGKILL while answers are still going out, and
//! after a restart on the same data directory every build a `202` named is stored, and the
//! delivery that started it is a replay of it. On SQLite this covers the delivery writer's
//! order of commit, log flush and answer (`server/src/triggers/wal.rs`); a power loss,
//! which SIGKILL does not simulate, is argued there.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use slipway_tests::process::{Slipway, slipway_binary};

const CLIENTS: usize = 16;
/// Answers to wait for before the kill, so it lands in the middle of the flood.
const ANSWERED_BEFORE_KILL: usize = 300;

fn push(client: usize, n: u64) -> Value {
    json!({"action": "build", "repository": "acme/shop", "ref": "refs/heads/main",
           "commit": format!("{client:04x}{n:036x}")})
}

#[tokio::test]
async fn every_answered_delivery_is_stored_after_a_kill_during_a_flood() {
    let binary = slipway_binary();
    let data = tempfile::tempdir().unwrap();
    let config = data.path().join("slipway.toml");
    let settings = "[pipeline]\nrun_builds = false\n[triggers]\nper_trigger_per_s = 1000000\nper_client_per_s = 1000000\n";
    std::fs::write(&config, settings).unwrap();
    let args = ["--config", config.to_str().unwrap()];
    let server = Slipway::start(&binary, data.path(), &args, &[]).await;
    let trigger = server
        .post_json(
            "/v1/triggers",
            &json!({"app": "crashed", "adapter": "generic",
                    "repository_url": "https://git.example/acme/shop.git",
                    "components": [{"name": "app", "type": "microservice"}]}),
        )
        .await;
    let (id, secret) = (trigger["trigger"]["id"].as_str().unwrap(), trigger["secret"].as_str().unwrap());

    // (client, delivery number, build id) of every 202 received.
    let answered = Arc::new(Mutex::new(Vec::<(usize, u64, String)>::new()));
    let url = server.url(&format!("/v1/triggers/{id}"));
    let mut clients = Vec::new();
    for client in 0..CLIENTS {
        let (url, secret, answered) = (url.clone(), secret.to_owned(), answered.clone());
        clients.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            for n in 0.. {
                // After the kill a request fails: its delivery was never answered.
                let Ok(response) = http.post(&url).bearer_auth(&secret).json(&push(client, n)).send().await
                else {
                    return;
                };
                let status = response.status().as_u16();
                let Ok(body) = response.json::<Value>().await else { return };
                assert_eq!(status, 202, "{body}");
                let build = body["build"]["id"].as_str().unwrap().to_owned();
                answered.lock().unwrap().push((client, n, build));
            }
        }));
    }
    while answered.lock().unwrap().len() < ANSWERED_BEFORE_KILL {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.kill();
    for client in clients {
        client.await.unwrap();
    }
    let answered = answered.lock().unwrap().clone();
    eprintln!("{} deliveries answered before the kill", answered.len());

    let server = Slipway::start(&binary, data.path(), &args, &[]).await;
    for (_, _, build) in &answered {
        let response = server.client.get(server.url(&format!("/v1/builds/{build}"))).send().await.unwrap();
        assert_eq!(response.status(), 200, "build {build} was answered but is gone after the kill");
    }
    // The claims were stored with their builds: the last answered delivery of each client,
    // sent again, is a replay of its build.
    let (http, url) = (reqwest::Client::new(), server.url(&format!("/v1/triggers/{id}")));
    for client in 0..CLIENTS {
        let Some((_, n, build)) = answered.iter().rev().find(|(c, _, _)| *c == client) else { continue };
        let response = http.post(&url).bearer_auth(secret).json(&push(client, *n)).send().await.unwrap();
        let body: Value = response.json().await.unwrap();
        assert_eq!((&body["duplicate"], &body["build"]["id"]), (&json!(true), &json!(build)), "{body}");
    }
}
