//! The CLI's longer workflows as a person runs them, real binary against real servers: an
//! app built from a git URL and carried to an offline site (`export`, then `import` into a
//! second server with its own image registry), trigger management, and `health --watch`
//! redrawing from the event stream.

mod cli_support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use cli_support::{Cli, example_app, example_fleet};
use serde_json::{Value, json};
use slipway_tests::fleet::Mode;
use slipway_tests::image_registry::ImageRegistry;
use slipway_tests::server::TestServer;
use tokio::io::{AsyncBufReadExt, BufReader};

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=Dev", "-c", "user.email=dev@example.com"])
        .args(args)
        .output()
        .expect("git");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// The example app as a git repository with one commit on `main`, and a second commit on
/// `next` that changes the worker, so building a reference is distinguishable.
fn example_repository() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let copied =
        Command::new("cp").arg("-r").arg(format!("{}/.", example_app().display())).arg(dir.path()).status();
    assert!(copied.unwrap().success());
    git(dir.path(), &["init", "-q", "-b", "main"]);
    git(dir.path(), &["add", "."]);
    git(dir.path(), &["commit", "-q", "-m", "hello"]);
    let main = git(dir.path(), &["rev-parse", "HEAD"]);
    git(dir.path(), &["checkout", "-q", "-b", "next"]);
    std::fs::write(dir.path().join("worker/next.txt"), "next\n").unwrap();
    git(dir.path(), &["add", "."]);
    git(dir.path(), &["commit", "-q", "-m", "next"]);
    git(dir.path(), &["checkout", "-q", "main"]);
    (dir, main)
}

#[tokio::test]
async fn a_git_build_is_exported_and_imported_at_an_offline_site() {
    let Ok(registry) = std::env::var("SLIPWAY_TEST_REGISTRY") else {
        eprintln!("skipped: SLIPWAY_TEST_REGISTRY is not set (run through tests/run.sh)");
        return;
    };
    let Some(site_registry) = ImageRegistry::start().await else { return };
    let origin = TestServer::start_with(
        move |c| {
            c.pipeline.registry = registry.clone();
            c.pipeline.insecure_registries = vec![registry];
        },
        slipway_server::router::app,
    )
    .await;
    let cli = Cli::new(&origin);
    let (repo, main_commit) = example_repository();
    let url = format!("file://{}", repo.path().display());

    let built = cli.run(&["build", &url, "--tag", "offline"]).await;
    assert_eq!(built.code, 0, "{built:?}");
    assert!(built.stdout.contains("published with tags stable, offline"), "{built:?}");
    let package = origin.get_json("/v1/apps/hello/packages?tags=offline&latest=true").await;
    let version = package["version"].as_str().unwrap();
    let manifest = origin.get_json(&format!("/v1/apps/hello/packages/{version}")).await;
    assert!(manifest.to_string().contains(&main_commit), "the package records the commit built: {manifest}");

    // `--ref` pins another branch; the server builds exactly that commit.
    let next = cli.run(&["build", &url, "--ref", "next", "-o", "json"]).await;
    assert_eq!(next.code, 0, "{next:?}");
    let next_commit = git(repo.path(), &["rev-parse", "next"]);
    let latest = origin.get_json("/v1/apps/hello/packages?latest=true").await;
    let manifest =
        origin.get_json(&format!("/v1/apps/hello/packages/{}", latest["version"].as_str().unwrap())).await;
    assert!(manifest.to_string().contains(&next_commit), "{manifest}");
    let missing_ref = cli.run(&["build", &url, "--ref", "no-such-branch"]).await;
    assert_eq!(missing_ref.code, 2, "{missing_ref:?}");

    let archive = cli.dir().join("hello.offline.tar");
    let exported =
        cli.run(&["export", "hello", "--tag", "offline", "--file", archive.to_str().unwrap()]).await;
    assert_eq!(exported.code, 0, "{exported:?}");
    assert!(exported.stdout.starts_with(&format!("hello {version} → ")), "{exported:?}");

    let image_registry = site_registry.host();
    let site = TestServer::start_with(
        move |c| c.registry.image_registry = image_registry,
        slipway_server::router::app,
    )
    .await;
    let at_site = Cli::new(&site);
    let cut = cli.dir().join("cut.offline.tar");
    let bytes = std::fs::read(&archive).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let refused = at_site.run(&["import", "hello", cut.to_str().unwrap()]).await;
    assert_eq!(refused.code, 2, "{refused:?}");
    assert!(refused.stderr.contains("bad_archive"), "{refused:?}");
    assert_eq!(site.get_json("/v1/apps/hello/packages").await["items"], json!([]), "nothing registered");
    let no_file = at_site.run(&["import", "hello", "nowhere.tar"]).await;
    assert_eq!(no_file.code, 2, "{no_file:?}");
    assert!(no_file.stderr.contains("cannot open nowhere.tar"), "{no_file:?}");

    let imported = at_site.run(&["import", "hello", archive.to_str().unwrap()]).await;
    assert_eq!((imported.code, imported.stdout.trim()), (0, format!("imported hello {version}").as_str()));
    let there = site.get_json(&format!("/v1/apps/hello/packages/{version}")).await;
    assert_eq!(there["digest"], package["digest"], "the same package, the same digest: {there}");
    let mut images = 0;
    for component in ["web", "worker"] {
        let packages = site.get_json(&format!("/v1/apps/hello/components/{component}/packages")).await;
        for image in packages["items"][0]["images"].as_array().unwrap() {
            let reference = image["reference"].as_str().unwrap();
            // The manifest keeps the reference it was built with (its digest must not change);
            // the same repository at the site's registry holds the image.
            let (_, path) = reference.split_once('/').unwrap();
            let (repository, _) = path.rsplit_once(':').unwrap();
            let digest = image["digest"].as_str().unwrap();
            let seen = Command::new("skopeo")
                .args(["inspect", "--raw", "--tls-verify=false"])
                .arg(format!("docker://{}/{repository}@{digest}", site_registry.host()))
                .output()
                .expect("skopeo");
            assert!(
                seen.status.success(),
                "{reference} is at the site: {}",
                String::from_utf8_lossy(&seen.stderr)
            );
            images += 1;
        }
    }
    assert_eq!(images, 2, "both components' images moved: {there}");
}

#[tokio::test]
async fn triggers_are_created_shown_and_deleted() {
    let server = TestServer::start().await;
    let cli = Cli::new(&server);
    let file = cli.dir().join("trigger.yaml");
    std::fs::write(
        &file,
        "app: hooked\nadapter: github-push\nbranches: [main, release/*]\ntags: [ci]\n\
         repository_url: https://git.example.com/acme/hooked.git\ncomponents:\n  - {name: app, type: microservice}\n",
    )
    .unwrap();

    let created = cli.run(&["triggers", "create", "-f", file.to_str().unwrap()]).await;
    assert_eq!(created.code, 0, "{created:?}");
    let line = created.stdout.lines().find(|l| l.contains("hooked")).expect("a row for the trigger");
    let id = line.split_whitespace().next().unwrap().to_owned();
    assert!(line.contains("github-push") && line.contains("main,release/*"), "{created:?}");
    assert!(created.stdout.contains(&format!("/v1/triggers/{id}")), "the webhook URL: {created:?}");
    let secret = created.stdout.lines().find_map(|l| l.strip_prefix("secret (shown only now): ")).unwrap();
    assert!(secret.len() >= 32, "{created:?}");

    let listed = cli.run(&["triggers", "list", "-o", "json"]).await;
    assert_eq!(listed.code, 0, "{listed:?}");
    let triggers = listed.json()["triggers"].as_array().unwrap().clone();
    assert_eq!(triggers.len(), 1, "{listed:?}");
    assert_eq!(triggers[0]["id"], id.as_str());
    assert!(!listed.stdout.contains(secret), "the secret is never shown again");
    let shown = cli.run(&["triggers", "show", &id]).await;
    assert!(shown.code == 0 && shown.stdout.contains("release/*"), "{shown:?}");

    // The mistakes a person makes first: an unknown adapter, an unreadable file, a wrong id.
    std::fs::write(
        &file,
        "app: hooked\nadapter: jenkins-ish\ncomponents: [{name: app, type: microservice}]\n",
    )
    .unwrap();
    let unknown = cli.run(&["triggers", "create", "-f", file.to_str().unwrap()]).await;
    assert_eq!(unknown.code, 2, "{unknown:?}");
    assert!(
        unknown.stderr.contains("invalid_trigger")
            && unknown.stderr.contains("no script trigger/jenkins-ish"),
        "{unknown:?}"
    );
    let unreadable = cli.run(&["triggers", "create", "-f", "missing.yaml"]).await;
    assert_eq!(unreadable.code, 2, "{unreadable:?}");
    let wrong = cli.run(&["triggers", "show", "0190f3a2-7b1c-7d4e-8f00-000000000000"]).await;
    assert_eq!(wrong.code, 5, "{wrong:?}");

    let deleted = cli.run(&["triggers", "delete", &id]).await;
    assert_eq!((deleted.code, deleted.stdout.trim()), (0, format!("trigger {id} deleted").as_str()));
    let after = cli.run(&["triggers", "list", "-o", "json"]).await;
    assert_eq!(after.json()["triggers"], json!([]), "{after:?}");
    let again = cli.run(&["triggers", "delete", &id]).await;
    assert_eq!(again.code, 5, "{again:?}");
}

/// Reads the next JSON line `health --watch -o json` prints, or `None` if none comes in time.
async fn next_frame(
    lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    wait: Duration,
) -> Option<Value> {
    let line = tokio::time::timeout(wait, lines.next_line()).await.ok()?.expect("read stdout")?;
    Some(serde_json::from_str(&line).unwrap_or_else(|e| panic!("not one JSON line ({e}): {line}")))
}

fn status_of(frame: &Value, app_instance: &str) -> String {
    let found = frame["appInstances"].as_array().unwrap().iter().find(|a| a["id"] == app_instance);
    found.unwrap_or_else(|| panic!("{app_instance} in {frame}"))["status"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn health_watch_redraws_when_a_status_changes_and_only_then() {
    let server = TestServer::start_with(
        |c| {
            c.status.schedule.tight = Duration::from_millis(300);
            c.status.schedule.ceiling = Duration::from_secs(1);
            c.status.fetch.timeout = Duration::from_secs(1);
        },
        slipway_server::router::app,
    )
    .await;
    let cli = Cli::new(&server);
    let (fleet, file) = example_fleet(&cli).await;
    let registered = cli.run(&["instances", "register", "-f", file.to_str().unwrap()]).await;
    assert_eq!(registered.code, 0, "{registered:?}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.get_json("/v1/health/summary?groupBy=status").await["groups"].get("unknown").is_some() {
        assert!(Instant::now() < deadline, "instances still unchecked");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let mut watch = cli.spawn(&["health", "hello", "--watch", "-o", "json"]);
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    let first = next_frame(&mut lines, Duration::from_secs(10)).await.expect("the first frame");
    assert_eq!(status_of(&first, "hello-staging"), "healthy", "{first}");
    // Checks keep running every second, but nothing changes, so nothing is redrawn.
    assert_eq!(next_frame(&mut lines, Duration::from_secs(3)).await, None, "a redraw without a change");

    fleet.state.set_mode_of(&[5], Mode::Fail, 0);
    let changed = next_frame(&mut lines, Duration::from_secs(10)).await.expect("a redraw after the failure");
    assert_eq!(status_of(&changed, "hello-staging"), "degraded", "{changed}");
    assert_eq!(status_of(&changed, "hello-prod-eu"), "healthy", "{changed}");
    let reasons = changed["appInstances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == "hello-staging")
        .unwrap()["reasons"]
        .to_string();
    assert!(reasons.contains("HTTP 503"), "{reasons}");

    fleet.state.set_mode_of(&[5], Mode::Healthy, 0);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let frame = next_frame(&mut lines, Duration::from_secs(10)).await.expect("a redraw after recovery");
        if status_of(&frame, "hello-staging") == "healthy" {
            break;
        }
        assert!(Instant::now() < deadline, "never redrawn healthy: {frame}");
    }
    watch.kill().await.unwrap();
}
