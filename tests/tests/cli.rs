//! The `slipway` CLI run as a real process against a real server: building the example app
//! through the native backend and the loopback registry, package queries, tags, downloads,
//! health, plugins and tokens, with their output and exit codes — and the errors a person
//! meets first (no server, a bad token, a missing build file, a typo in a tag).

mod cli_support;

use std::time::{Duration, Instant};

use cli_support::{Cli, example_app, example_fleet};
use serde_json::{Value, json};
use slipway_tests::server::TestServer;

/// The loopback registry `tests/run.sh` provides, or `None` with the reason printed.
fn registry() -> Option<String> {
    let registry = std::env::var("SLIPWAY_TEST_REGISTRY").ok();
    if registry.is_none() {
        eprintln!("skipped: SLIPWAY_TEST_REGISTRY is not set (run through tests/run.sh)");
    }
    registry
}

async fn server_pushing_to(registry: &str) -> TestServer {
    let registry = registry.to_owned();
    TestServer::start_with(
        move |c| {
            c.pipeline.registry = registry.clone();
            c.pipeline.insecure_registries = vec![registry];
            c.status.schedule.tight = Duration::from_millis(500);
            c.status.fetch.timeout = Duration::from_secs(1);
        },
        slipway_server::router::app,
    )
    .await
}

#[tokio::test]
async fn build_query_tag_and_download_the_example_app() {
    let Some(registry) = registry() else { return };
    let server = server_pushing_to(&registry).await;
    let cli = Cli::new(&server);
    let example = example_app();

    let built = cli.run(&["build", example.to_str().unwrap(), "--tag", "candidate"]).await;
    assert_eq!(built.code, 0, "{built:?}");
    for seen in ["web: ", "worker: ", "succeeded", "pushing 127.0.0.1", "pushed sha256:"] {
        assert!(built.stderr.contains(seen), "stderr lacks {seen:?}: {built:?}");
    }
    assert!(
        built.stdout.contains("hello") && built.stdout.contains("published with tags stable, candidate"),
        "{built:?}"
    );

    let latest = cli
        .run(&["packages", "hello", "--tag", "stable", "--tag", "candidate", "--latest", "-o", "json"])
        .await;
    assert_eq!(latest.code, 0, "{latest:?}");
    let version = latest.json()["version"].as_str().unwrap().to_owned();
    let listed = cli.run(&["packages", "hello"]).await;
    assert!(listed.stdout.starts_with("VERSION") && listed.stdout.contains(&version), "{listed:?}");

    let tagged = cli.run(&["tag", "hello", &version, "+prod", "-candidate"]).await;
    assert_eq!(tagged.code, 0, "{tagged:?}");
    assert_eq!(tagged.stdout.trim(), format!("hello {version}: +prod, -candidate"));
    let prod = server.get_json("/v1/apps/hello/packages?tags=prod&latest=true").await;
    assert_eq!(prod["version"], version.as_str(), "{prod}");
    let candidates = server.get_json("/v1/apps/hello/packages?tags=candidate").await;
    assert_eq!(candidates["items"], json!([]), "{candidates}");

    // A typo in a tag: the server's message, what tags exist, and "not found".
    let typo = cli.run(&["packages", "hello", "--tag", "prdo", "--latest"]).await;
    assert_eq!(typo.code, 5, "{typo:?}");
    assert!(typo.stderr.contains("package_not_found"), "{typo:?}");
    assert!(
        typo.stderr.contains("no version of hello carries tag `prdo`; tags in use: prod, stable"),
        "{typo:?}"
    );
    let invalid = cli.run(&["tag", "hello", &version, "+Prod!"]).await;
    assert_eq!(invalid.code, 2, "{invalid:?}");
    assert!(invalid.stderr.contains("invalid_name"), "{invalid:?}");

    let file = cli.dir().join("hello.tar.gz");
    let download = cli.run(&["download", "hello", "--tag", "prod", "--file", file.to_str().unwrap()]).await;
    assert_eq!(download.code, 0, "{download:?}");
    let bytes = std::fs::read(&file).unwrap();
    assert_eq!(&bytes[..2], &[0x1f, 0x8b], "a gzip file");
    let summary = server.get_json(&format!("/v1/apps/hello/packages/{version}")).await;
    assert!(summary.to_string().contains("worker"), "{summary}");

    // A token without the publish scope cannot tag.
    let created = cli.run(&["tokens", "create", "reader", "--scope", "read", "-o", "json"]).await;
    assert_eq!(created.code, 0, "{created:?}");
    let reader = Cli::with(&format!("http://{}", server.addr), created.json()["secret"].as_str());
    let refused = reader.run(&["tag", "hello", &version, "+stable"]).await;
    assert_eq!(refused.code, 4, "{refused:?}");
    assert!(
        refused.stderr.contains("insufficient_scope") && refused.stderr.contains("lacks the scope"),
        "{refused:?}"
    );
    let tokens = cli.run(&["tokens", "list"]).await;
    assert!(tokens.stdout.contains("reader") && tokens.stdout.contains("initial-admin"), "{tokens:?}");
}

#[tokio::test]
async fn a_failed_component_shows_its_log_tail() {
    let Some(registry) = registry() else { return };
    let Ok(base) = std::env::var("SLIPWAY_TEST_BASE_IMAGE") else {
        eprintln!("skipped: SLIPWAY_TEST_BASE_IMAGE is not set (run through tests/run.sh)");
        return;
    };
    let server = server_pushing_to(&registry).await;
    let cli = Cli::new(&server);
    let app = cli.dir().join("app");
    let write = |path: &str, text: &str| {
        let path = app.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    write(
        "slipway.app.yaml",
        "app: broken\ncomponents:\n  - {name: ok, type: microservice, path: ok}\n  - {name: bad, type: job, path: bad}\n",
    );
    write("ok/Dockerfile", &format!("FROM {base}\nRUN echo fine > /fine.txt\n"));
    write("bad/Dockerfile", &format!("FROM {base}\nRUN echo about to fail && exit 3\n"));

    let run = cli.run(&["build", app.to_str().unwrap()]).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains("bad: running → failed") || run.stderr.contains("bad: queued → failed"),
        "{run:?}"
    );
    assert!(run.stderr.contains("log lines of bad"), "{run:?}");
    assert!(run.stderr.contains("about to fail"), "the failing step's output is in the tail: {run:?}");
    assert!(run.stderr.contains("error: build") && run.stderr.contains("failed"), "{run:?}");
    let packages = server.get_json("/v1/apps/broken/packages").await;
    assert_eq!(packages["items"], json!([]), "nothing published: {packages}");
}

#[tokio::test]
async fn health_of_registered_instances_and_plugins() {
    let server = TestServer::start_with(
        |c| {
            c.status.schedule.tight = Duration::from_millis(500);
            c.status.fetch.timeout = Duration::from_secs(1);
        },
        slipway_server::router::app,
    )
    .await;
    let cli = Cli::new(&server);
    let (fleet, file) = example_fleet(&cli).await;
    fleet.state.set_mode_of(&[5], slipway_tests::fleet::Mode::Fail, 0);

    let registered = cli.run(&["instances", "register", "-f", file.to_str().unwrap()]).await;
    assert_eq!(registered.code, 0, "{registered:?}");
    assert_eq!(registered.stdout.trim(), "registered 3 app instances and 6 component instances, deleted 0");

    let deadline = Instant::now() + Duration::from_secs(60);
    let health = loop {
        let run = cli.run(&["health", "hello", "-o", "json"]).await;
        let statuses: Vec<Value> =
            run.json()["appInstances"].as_array().unwrap().iter().map(|a| a["status"].clone()).collect();
        if statuses.iter().all(|s| s != "unknown") {
            break run.json();
        }
        assert!(Instant::now() < deadline, "instances still unchecked: {statuses:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let status_of = |id: &str| {
        health["appInstances"].as_array().unwrap().iter().find(|a| a["id"] == id).unwrap()["status"].clone()
    };
    assert_eq!(status_of("hello-prod-eu"), "healthy", "{health}");
    assert_eq!(status_of("hello-staging"), "degraded", "{health}");

    let table = cli.run(&["health", "hello"]).await;
    assert_eq!(table.code, 0, "{table:?}");
    let staging = table.stdout.lines().find(|l| l.starts_with("hello-staging")).unwrap();
    assert!(
        staging.contains("degraded") && staging.contains("worker:degraded") && staging.contains("HTTP 503"),
        "{table:?}"
    );
    let summary = cli.run(&["health"]).await;
    assert!(summary.stdout.starts_with("APP") && summary.stdout.contains("hello"), "{summary:?}");
    let unknown_app = cli.run(&["health", "nothing-here"]).await;
    assert_eq!((unknown_app.code, unknown_app.stdout.trim()), (0, "no instances of nothing-here registered"));

    let plugins = cli.run(&["plugins", "list"]).await;
    assert_eq!(plugins.code, 0, "{plugins:?}");
    let microservice = plugins.stdout.lines().find(|l| l.starts_with("component/microservice/1")).unwrap();
    assert!(microservice.trim_end().ends_with('*'), "the active revision is marked: {plugins:?}");
    let activated = cli.run(&["plugins", "activate", "component/microservice@1"]).await;
    assert_eq!(
        (activated.code, activated.stdout.trim()),
        (0, "component/microservice: revision 1 is active")
    );
    let missing = cli.run(&["plugins", "activate", "component/microservice@9"]).await;
    assert_eq!(missing.code, 5, "{missing:?}");
    let malformed = cli.run(&["plugins", "activate", "microservice"]).await;
    assert_eq!(malformed.code, 2, "{malformed:?}");
    assert!(malformed.stderr.contains("kind/name@revision"), "{malformed:?}");
}

#[tokio::test]
async fn first_contact_errors_say_what_to_do() {
    let help = Cli::with("http://127.0.0.1:9", None).run(&["--help"]).await;
    assert_eq!(help.code, 0);
    assert!(
        help.stdout.contains("Exit codes:") && help.stdout.contains("3  the server cannot be reached"),
        "{help:?}"
    );

    // No server: port 9 (discard) is not served on loopback.
    let down = Cli::with("http://127.0.0.1:9", None).run(&["packages", "hello"]).await;
    assert_eq!(down.code, 3, "{down:?}");
    assert!(down.stderr.contains("cannot reach the Slipway server at http://127.0.0.1:9"), "{down:?}");
    assert!(down.stderr.contains("is `slipway serve` running?"), "{down:?}");

    let server = TestServer::start().await;
    let address = format!("http://{}", server.addr);
    let bad_token = Cli::with(&address, Some("not-a-token")).run(&["packages", "hello"]).await;
    assert_eq!(bad_token.code, 4, "{bad_token:?}");
    assert!(bad_token.stderr.contains("(401 unauthenticated)"), "{bad_token:?}");
    assert!(bad_token.stderr.contains("the token from SLIPWAY_TOKEN was refused"), "{bad_token:?}");
    let no_token = Cli::with(&address, None).run(&["packages", "hello"]).await;
    assert_eq!(no_token.code, 4, "{no_token:?}");
    assert!(no_token.stderr.contains("no API token: set SLIPWAY_TOKEN"), "{no_token:?}");

    let cli = Cli::new(&server);
    let empty = cli.dir().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let no_file = cli.run(&["build", empty.to_str().unwrap()]).await;
    assert_eq!(no_file.code, 2, "{no_file:?}");
    assert!(
        no_file.stderr.contains("no build file in") && no_file.stderr.contains("slipway.app.toml"),
        "{no_file:?}"
    );

    // A typo in a tag, on a package published straight through the API.
    let published = server
        .client()
        .post(server.url("/v1/apps/shop/packages"))
        .json(&json!({"version": "1.0.0", "tags": ["prod"], "components": [
            {"component_type": "microservice", "component": "web", "plugin": "component/microservice/1"}
        ]}))
        .send()
        .await
        .unwrap();
    assert_eq!(published.status(), 201, "{}", published.text().await.unwrap());
    let typo = cli.run(&["packages", "shop", "--tag", "prdo", "--latest"]).await;
    assert_eq!(typo.code, 5, "{typo:?}");
    assert!(typo.stderr.contains("error: no app package shop") || typo.stderr.contains("shop"), "{typo:?}");
    assert!(typo.stderr.contains("tags in use: prod"), "{typo:?}");
    let empty_list = cli.run(&["packages", "shop", "--tag", "prdo"]).await;
    assert_eq!(empty_list.code, 0, "an empty list is an answer: {empty_list:?}");
    assert!(empty_list.stderr.contains("no version of shop carries tag `prdo`"), "{empty_list:?}");
    let bad_change = cli.run(&["tag", "shop", "1.0.0", "prod"]).await;
    assert_eq!(bad_change.code, 2, "{bad_change:?}");
    assert!(bad_change.stderr.contains("write +TAG to add a tag or -TAG to remove one"), "{bad_change:?}");
}

#[tokio::test]
async fn uploaded_sources_are_limited_and_checked() {
    let server =
        TestServer::start_with(|c| c.pipeline.max_context_bytes = 1024, slipway_server::router::app).await;
    let upload = |body: Vec<u8>| server.client().post(server.url("/v1/sources")).body(body).send();
    let too_large = upload(vec![7; 4096]).await.unwrap();
    assert_eq!(too_large.status(), 413);
    let error: Value = too_large.json().await.unwrap();
    assert_eq!(error["error"]["code"], "source_too_large", "{error}");
    assert_eq!(error["error"]["details"]["limit_bytes"], 1024, "{error}");

    let stored = upload(vec![7; 512]).await.unwrap();
    assert_eq!(stored.status(), 201);
    let stored: Value = stored.json().await.unwrap();
    assert_eq!(stored["size_bytes"], 512, "{stored}");

    let build = |id: &str| json!({"components": [{"name": "web", "type": "microservice", "source": {"upload": {"id": id}}}]});
    // A well-formed id never uploaded, and one that tries to leave `sources/`.
    let never_uploaded = "0190f3a2-7b1c-7d4e-8f00-000000000000";
    for (id, problem) in
        [(never_uploaded, "no uploaded source"), ("../../etc", "is not an uploaded source id")]
    {
        let refused =
            server.client().post(server.url("/v1/apps/shop/builds")).json(&build(id)).send().await.unwrap();
        assert_eq!(refused.status(), 400);
        let error: Value = refused.json().await.unwrap();
        assert!(error.to_string().contains(problem), "{error}");
    }
    let accepted = server
        .client()
        .post(server.url("/v1/apps/shop/builds"))
        .json(&build(stored["id"].as_str().unwrap()))
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status(), 202, "{}", accepted.text().await.unwrap());
}
