//! Builds end to end over the API, against the real registry on loopback: a request with two
//! components becomes a tagged app package whose images the registry serves and Docker runs;
//! a failing component publishes nothing; a bad request is refused whole.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use slipway_tests::pipeline::{registry_and_base as components, start, write};
use slipway_tests::server::TestServer;

#[tokio::test]
async fn two_components_become_a_tagged_app_package() {
    let Some((registry, base)) = components() else { return };
    let source = tempfile::tempdir().unwrap();
    write(
        source.path(),
        "web/Dockerfile",
        "FROM scratch\nCOPY index.html /site/index.html\nLABEL tier=front\n",
    );
    write(source.path(), "web/index.html", "<h1>shop</h1>\n");
    write(
        source.path(),
        "worker/Dockerfile",
        &format!(
            "FROM {base}\nCOPY job.sh /job.sh\nRUN echo built-by-slipway > /built.txt\nCMD [\"/bin/sh\", \"/job.sh\"]\n"
        ),
    );
    write(source.path(), "worker/job.sh", "cat /built.txt\n");
    let server = start(&registry, source.path()).await;

    let dir = json!({"dir": {"path": source.path()}});
    let response = server
        .client()
        .post(server.url("/v1/apps/pipeline-shop/builds"))
        .json(&json!({
            "tags": ["stable", "candidate"],
            "components": [
                {"name": "web", "type": "microservice", "source": dir, "path": "web"},
                {"name": "worker", "type": "microservice", "source": dir, "path": "worker"},
            ],
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let accepted: Value = response.json().await.unwrap();
    assert_eq!(accepted["state"], "queued", "{accepted}");
    let id = accepted["id"].as_str().unwrap();

    let build = server.wait_build(id).await;
    assert_eq!(build["state"], "succeeded", "{build}");
    assert_eq!(build["requested_by"], "initial-admin");
    for component in build["components"].as_array().unwrap() {
        assert_eq!(component["state"], "succeeded", "{component}");
        assert!(component["plugin"].as_str().unwrap().starts_with("component/microservice/"), "{component}");
        assert!(component["digest"].as_str().unwrap().starts_with("sha256:"), "{component}");
    }
    let version = build["package"]["version"].as_str().unwrap();

    let latest: Value =
        server.get_json("/v1/apps/pipeline-shop/packages?tags=stable,candidate&latest=true").await;
    assert!(latest.to_string().contains(version), "{latest}");
    assert!(latest.to_string().contains(build["package"]["digest"].as_str().unwrap()), "{latest}");

    let log: Value = server.get_json(&format!("/v1/builds/{id}/logs?component=worker")).await;
    assert!(
        log["lines"].as_array().unwrap().iter().any(|l| l.as_str().unwrap().contains("pushed sha256:")),
        "{log}"
    );

    // From outside: the registry serves the worker image under the digest the build recorded.
    let worker = &build["components"][1];
    let reference = worker["image"].as_str().unwrap();
    let inspected = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", &format!("docker://{reference}")])
        .output()
        .expect("skopeo");
    assert!(inspected.status.success(), "{}", String::from_utf8_lossy(&inspected.stderr));
    let inspected: Value = serde_json::from_slice(&inspected.stdout).unwrap();
    assert_eq!(inspected["Digest"], worker["digest"]);

    let ran = Command::new("/usr/bin/docker").args(["run", "--rm", reference]).output().expect("docker");
    assert!(ran.status.success(), "{}", String::from_utf8_lossy(&ran.stderr));
    assert_eq!(String::from_utf8_lossy(&ran.stdout).trim(), "built-by-slipway");
}

#[tokio::test]
async fn a_failing_component_fails_the_build_and_publishes_nothing() {
    let Some((registry, base)) = components() else { return };
    let source = tempfile::tempdir().unwrap();
    write(source.path(), "ok/Dockerfile", "FROM scratch\nCOPY a.txt /a.txt\n");
    write(source.path(), "ok/a.txt", "a\n");
    write(source.path(), "broken/Dockerfile", &format!("FROM {base}\nRUN echo about to fail && exit 3\n"));
    let server = start(&registry, source.path()).await;
    let dir = json!({"dir": {"path": source.path()}});
    let accepted: Value = server
        .client()
        .post(server.url("/v1/apps/pipeline-broken/builds"))
        .json(&json!({"tags": ["stable"], "components": [
            {"name": "ok", "type": "microservice", "source": dir, "path": "ok"},
            {"name": "broken", "type": "microservice", "source": dir, "path": "broken"},
        ]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let build = server.wait_build(accepted["id"].as_str().unwrap()).await;
    assert_eq!(build["state"], "failed", "{build}");
    assert!(build["reason"].as_str().unwrap().contains("broken"), "{build}");
    let broken = &build["components"][1];
    assert_eq!(broken["state"], "failed");
    assert!(broken["reason"].as_str().unwrap().contains('3'), "the exit code is named: {broken}");
    assert!(build["package"].is_null(), "{build}");

    let packages = server.client().get(server.url("/v1/apps/pipeline-broken/packages")).send().await.unwrap();
    let text = packages.text().await.unwrap();
    assert!(!text.contains("\"version\""), "nothing published: {text}");
}

#[tokio::test]
async fn a_bad_request_is_refused_whole_and_names_each_problem() {
    let source = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let server = start("127.0.0.1:5000", source.path()).await;
    let response = server
        .client()
        .post(server.url("/v1/apps/shop/builds"))
        .json(&json!({"version": "one", "components": [
            {"name": "web", "type": "no-such-type", "source": {"dir": {"path": source.path()}}},
            {"name": "api", "type": "microservice", "source": {"dir": {"path": outside.path()}}},
        ]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_build_request", "{body}");
    let problems = body["error"]["details"]["problems"].to_string();
    assert!(
        problems.contains("one") && problems.contains("outside the configured source roots"),
        "{problems}"
    );

    let unknown_type = server
        .client()
        .post(server.url("/v1/apps/shop/builds"))
        .json(&json!({"components": [{"name": "web", "type": "no-such-type", "source": {"dir": {"path": source.path()}}}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown_type.status(), 400);
    assert!(unknown_type.text().await.unwrap().contains("no-such-type"));

    let builds: Value = server.get_json("/v1/builds").await;
    assert_eq!(builds["builds"], json!([]), "nothing stored");
}

async fn submit(server: &TestServer, app: &str, source: &Path, components: &[(&str, &str)]) -> String {
    let dir = json!({"dir": {"path": source}});
    let components: Vec<Value> = components
        .iter()
        .map(|(name, path)| json!({"name": name, "type": "microservice", "source": dir, "path": path}))
        .collect();
    slipway_tests::pipeline::submit(server, app, Value::Array(components)).await
}

async fn wait_component_running(server: &TestServer, id: &str, component: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let build: Value = server.get_json(&format!("/v1/builds/{id}")).await;
        if build["components"][component]["state"] == "running" {
            return;
        }
        assert!(Instant::now() < deadline, "component never ran: {build}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_running_build_can_be_cancelled_and_publishes_nothing() {
    let Some((registry, base)) = components() else { return };
    let source = tempfile::tempdir().unwrap();
    write(source.path(), "slow/Dockerfile", &format!("FROM {base}\nRUN sleep 4\n"));
    let server = start(&registry, source.path()).await;
    let id = submit(&server, "pipeline-cancel", source.path(), &[("slow", "slow")]).await;
    wait_component_running(&server, &id, 0).await;

    let cancelled =
        server.client().post(server.url(&format!("/v1/builds/{id}/cancel"))).send().await.unwrap();
    assert_eq!(cancelled.status(), 200);
    let cancelled: Value = cancelled.json().await.unwrap();
    assert_eq!(cancelled["state"], "cancelled", "{cancelled}");
    assert_eq!(cancelled["components"][0]["state"], "cancelled");
    assert_eq!(cancelled["reason"], "cancelled by initial-admin");

    // Past the time the RUN would have taken: still cancelled, nothing published.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let build: Value = server.get_json(&format!("/v1/builds/{id}")).await;
    assert_eq!(build["state"], "cancelled", "{build}");
    assert!(build["package"].is_null());
    let again = server.client().post(server.url(&format!("/v1/builds/{id}/cancel"))).send().await.unwrap();
    assert_eq!(again.status(), 409);
    assert_eq!(again.json::<Value>().await.unwrap()["error"]["code"], "build_state_conflict");
}

#[tokio::test]
async fn retry_rebuilds_only_the_failed_components() {
    let Some((registry, _)) = components() else { return };
    let source = tempfile::tempdir().unwrap();
    write(source.path(), "ok/Dockerfile", "FROM scratch\nCOPY a.txt /a.txt\n");
    write(source.path(), "ok/a.txt", "first\n");
    // Fails until the file it copies exists.
    write(source.path(), "late/Dockerfile", "FROM scratch\nCOPY flag.txt /flag.txt\n");
    let server = start(&registry, source.path()).await;
    let id = submit(&server, "pipeline-retry", source.path(), &[("ok", "ok"), ("late", "late")]).await;
    let failed = server.wait_build(&id).await;
    assert_eq!(failed["state"], "failed", "{failed}");
    assert_eq!(failed["components"][0]["state"], "succeeded");
    let ok_digest = failed["components"][0]["digest"].clone();

    // Were `ok` built again, this change would give it another digest.
    write(source.path(), "ok/a.txt", "second\n");
    write(source.path(), "late/flag.txt", "here now\n");
    let retried = server.client().post(server.url(&format!("/v1/builds/{id}/retry"))).send().await.unwrap();
    assert_eq!(retried.status(), 200);
    let done = server.wait_build(&id).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["components"][0]["digest"], ok_digest, "the succeeded component was reused");
    assert!(done["package"]["version"].is_string());
    let again = server.client().post(server.url(&format!("/v1/builds/{id}/retry"))).send().await.unwrap();
    assert_eq!(again.status(), 409, "a succeeded build is not retried");
}

#[tokio::test]
async fn a_log_can_be_followed_live_until_the_component_finishes() {
    let Some((registry, base)) = components() else { return };
    let source = tempfile::tempdir().unwrap();
    write(source.path(), "svc/Dockerfile", &format!("FROM {base}\nRUN sleep 2 && echo slept\n"));
    let server = start(&registry, source.path()).await;
    let id = submit(&server, "pipeline-follow", source.path(), &[("svc", "svc")]).await;
    wait_component_running(&server, &id, 0).await;
    let stream = server
        .client()
        .get(server.url(&format!("/v1/builds/{id}/logs?component=svc&follow=true")))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.headers()["content-type"], "text/event-stream");
    // The stream ends by itself when the component finishes.
    let text =
        tokio::time::timeout(Duration::from_secs(120), stream.text()).await.expect("stream ended").unwrap();
    let lines: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("data: ")).collect();
    assert!(lines.iter().any(|l| l.contains("planned by component/microservice/")), "{text}");
    assert!(lines.iter().any(|l| l.contains("pushed sha256:")), "{text}");
}
