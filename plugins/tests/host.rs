//! Packages, revisions and the active map through the public host API, on a real SQLite
//! database and local object store, with real worker processes.

mod support;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::json;
use slipway_plugins::{CheckInput, Error, HealthStatus, PluginHost, ScriptKind, WireValue};

fn versioned(revision: u32) -> String {
    format!("export function check() {{ return {{ status: 'healthy', reason: 'rev-{revision}' }}; }}")
}

async fn reason(host: &PluginHost, name: &str, revision: Option<u32>) -> String {
    let out =
        host.call(ScriptKind::Status, name, revision, "check", vec![json!({}), json!({})]).await.unwrap();
    out.result["reason"].as_str().unwrap().to_owned()
}

/// Resolved once at open, so batches do not ask the system (a read of cgroup files) again.
#[tokio::test]
async fn one_worker_per_core_is_resolved_when_the_host_opens() {
    let dir = tempfile::tempdir().unwrap();
    let config = slipway_plugins::HostConfig { workers: 0, ..support::config() };
    let host = support::open_with(dir.path(), config).await;
    assert_eq!(host.config().workers, std::thread::available_parallelism().unwrap().get());
    host.install_package(support::package("acme", "1.0.0", &[("status", "ping", 1, &versioned(1))]))
        .await
        .unwrap();
    assert_eq!(reason(&host, "ping", None).await, "rev-1", "calls run on the resolved pool");
}

#[tokio::test]
async fn builtin_package_is_installed_at_first_start() {
    let dir = tempfile::tempdir().unwrap();
    let host = support::open(dir.path()).await;
    let packages = host.list().await.unwrap();
    let builtin = packages.iter().find(|p| p.name == "builtin").expect("builtin installed");
    assert!(builtin.scripts.iter().all(|s| s.active), "every built-in script starts active");
    let http = builtin.scripts.iter().find(|s| s.triple.to_string() == "status/http/4").unwrap();
    assert_eq!(http.params_schema.as_ref().unwrap()["type"], "object");
    let out = host
        .call(ScriptKind::Status, "http", None, "check", vec![json!({}), support::http_observation(503, 9)])
        .await
        .unwrap();
    assert_eq!(out.triple.to_string(), "status/http/4");
    assert_eq!(out.result["status"], "degraded");
}

#[tokio::test]
async fn revisions_activate_and_persist_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let host = support::open(dir.path()).await;
        host.install_package(support::package("acme", "1.0.0", &[("status", "ping", 1, &versioned(1))]))
            .await
            .unwrap();
        host.install_package(support::package("acme", "1.1.0", &[("status", "ping", 2, &versioned(2))]))
            .await
            .unwrap();
        // The first installed revision became active; a later one waits to be activated.
        assert_eq!(reason(&host, "ping", None).await, "rev-1");
        assert_eq!(reason(&host, "ping", Some(2)).await, "rev-2");
        host.activate(ScriptKind::Status, "ping", 2).await.unwrap();
        assert_eq!(reason(&host, "ping", None).await, "rev-2");
        let err = host.activate(ScriptKind::Status, "ping", 9).await.unwrap_err();
        assert!(matches!(err, Error::UnknownRevision { .. }), "{err}");
    }
    let host = support::open(dir.path()).await;
    assert_eq!(reason(&host, "ping", None).await, "rev-2", "the active map survived the restart");
    let revisions = host.revisions(ScriptKind::Status, "ping").await.unwrap();
    assert_eq!(revisions.active, Some(2));
    let listed: Vec<(u32, &str)> =
        revisions.revisions.iter().map(|r| (r.revision, r.package_version.as_str())).collect();
    assert_eq!(listed, vec![(1, "1.0.0"), (2, "1.1.0")]);
    // Rolling back is activating an older revision.
    host.activate(ScriptKind::Status, "ping", 1).await.unwrap();
    assert_eq!(reason(&host, "ping", None).await, "rev-1");
    // Archives are kept in the object store under their digest.
    let stored = walk(&dir.path().join("objects"));
    assert!(stored.iter().filter(|p| p.ends_with(".tar.gz")).count() >= 3, "{stored:?}");
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path.display().to_string());
        }
    }
    out
}

#[tokio::test]
async fn a_package_with_one_broken_script_registers_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let host = support::open(dir.path()).await;
    let before = host.list().await.unwrap();
    let package = support::package(
        "half",
        "1.0.0",
        &[
            ("status", "good-one", 1, &versioned(1)),
            ("trigger", "fine", 1, "export function parse() { return { accept: false, reason: 'x' }; }"),
            ("status", "bad-one", 1, "export function check() {\n  let = ;\n}\n"),
        ],
    );
    let err = host.install_package(package).await.unwrap_err();
    assert!(err.to_string().contains("status/bad-one-1.js:2:"), "{err}");
    assert_eq!(host.list().await.unwrap(), before, "nothing was registered");
    let err = host.call(ScriptKind::Status, "good-one", None, "check", vec![]).await.unwrap_err();
    assert!(matches!(err, Error::UnknownScript { .. }), "{err}");
    assert!(matches!(host.revisions(ScriptKind::Status, "good-one").await, Err(Error::UnknownScript { .. })));
}

#[tokio::test]
async fn changed_content_under_an_existing_revision_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let host = support::open(dir.path()).await;
    host.install_package(support::package("acme", "1.0.0", &[("status", "ping", 1, &versioned(1))]))
        .await
        .unwrap();
    // The same content again is fine (idempotent re-upload).
    host.install_package(support::package("acme", "1.0.0", &[("status", "ping", 1, &versioned(1))]))
        .await
        .unwrap();
    let err = host
        .install_package(support::package("acme", "1.0.1", &[("status", "ping", 1, &versioned(7))]))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::RevisionConflict { .. }), "{err}");
    let err = host
        .install_package(support::package("other", "1.0.0", &[("status", "http", 4, &versioned(1))]))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("package `builtin`"), "{err}");
}

#[tokio::test]
async fn uninstall_refuses_active_scripts_unless_forced() {
    let dir = tempfile::tempdir().unwrap();
    let host = support::open(dir.path()).await;
    host.install_package(support::package("old", "1.0.0", &[("status", "ping", 1, &versioned(1))]))
        .await
        .unwrap();
    host.install_package(support::package("new", "1.0.0", &[("status", "ping", 2, &versioned(2))]))
        .await
        .unwrap();
    let err = host.uninstall_package("old", false).await.unwrap_err();
    let Error::PackageInUse { active, .. } = &err else { panic!("{err}") };
    assert_eq!(active.iter().map(ToString::to_string).collect::<Vec<_>>(), ["status/ping/1"]);
    host.activate(ScriptKind::Status, "ping", 2).await.unwrap();
    host.uninstall_package("old", false).await.unwrap();
    assert!(matches!(
        host.call(ScriptKind::Status, "ping", Some(1), "check", vec![]).await,
        Err(Error::UnknownRevision { .. })
    ));
    host.uninstall_package("new", true).await.unwrap();
    assert!(matches!(
        host.call(ScriptKind::Status, "ping", None, "check", vec![]).await,
        Err(Error::UnknownScript { .. })
    ));
    assert!(matches!(host.uninstall_package("new", true).await, Err(Error::UnknownPackage { .. })));
}

#[tokio::test]
async fn revision_switch_under_load_fails_no_call_and_mixes_no_revisions() {
    let dir = tempfile::tempdir().unwrap();
    let host = support::open(dir.path()).await;
    // Each revision answers with its own number in every field it returns: a call that saw
    // two revisions would return mixed numbers.
    let script = |r: u32| {
        format!(
            "export function check(i, o) {{ return {{ status: 'healthy', reason: 'rev-{r}', details: {{ a: {r}, b: {r}, n: o.n }} }}; }}"
        )
    };
    host.install_package(support::package("flip", "1.0.0", &[("status", "flip", 1, &script(1))]))
        .await
        .unwrap();
    host.install_package(support::package("flip", "2.0.0", &[("status", "flip", 2, &script(2))]))
        .await
        .unwrap();
    // Loads run until the switching is over, however fast their batches go.
    let switched = Arc::new(AtomicBool::new(false));
    let load = |host: PluginHost, worker: usize, switched: Arc<AtomicBool>| async move {
        let mut seen = HashSet::new();
        for round in 0.. {
            if round >= 40 && switched.load(Ordering::Relaxed) {
                break;
            }
            let inputs: Vec<_> = (0..25)
                .map(|i| CheckInput {
                    instance_id: format!("w{worker}-{i}").into(),
                    instance: json!({}).into(),
                    observation: json!({"n": round * 100 + i}).into(),
                    memo: true,
                })
                .collect();
            for verdict in host.check_batch("flip", &inputs).await.expect("no batch fails") {
                let verdict = verdict.expect("no call fails");
                let r = verdict.triple.revision;
                assert_eq!(&*verdict.reason, format!("rev-{r}"));
                let details = verdict.details.value();
                assert_eq!((details["a"].as_u64(), details["b"].as_u64()), (Some(r as u64), Some(r as u64)));
                seen.insert(r);
            }
        }
        seen
    };
    let loads: Vec<_> = (0..4).map(|w| tokio::spawn(load(host.clone(), w, switched.clone()))).collect();
    let switcher = {
        let host = host.clone();
        tokio::spawn(async move {
            for i in 0..30 {
                host.activate(ScriptKind::Status, "flip", 1 + (i % 2)).await.unwrap();
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        })
    };
    switcher.await.unwrap();
    switched.store(true, Ordering::Relaxed);
    let mut seen = HashSet::new();
    for load in loads {
        seen.extend(load.await.unwrap());
    }
    assert_eq!(seen, HashSet::from([1, 2]), "both revisions served during the switch");
}

#[tokio::test]
async fn an_unchanged_observation_reuses_the_verdict_without_running_the_script() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = support::config();
    config.workers = 1;
    let host = support::open_with(dir.path(), config).await;
    // The module counts its own calls: a reused verdict shows the old count.
    let counter = "let calls = 0;\nexport function check() { calls += 1; return { status: 'healthy', reason: String(calls) }; }";
    host.install_package(support::package("count", "1.0.0", &[("status", "count", 1, counter)]))
        .await
        .unwrap();
    host.install_package(support::package(
        "count",
        "1.1.0",
        &[("status", "count", 2, &counter.replace("healthy", "degraded"))],
    ))
    .await
    .unwrap();
    let check_with = |observation: serde_json::Value, memo: bool| {
        let host = host.clone();
        async move {
            let input = CheckInput {
                instance_id: "web-1".into(),
                instance: json!({"params": {}}).into(),
                observation: observation.into(),
                memo,
            };
            host.check_batch("count", &[input]).await.unwrap().pop().unwrap().unwrap()
        }
    };
    let check = |observation| check_with(observation, true);
    assert_eq!(&*check(json!({"v": 1})).await.reason, "1");
    assert_eq!(&*check(json!({"v": 1})).await.reason, "1", "same observation: not run again");
    assert_eq!(&*check(json!({"v": 2})).await.reason, "2", "changed observation: run");
    // An input that opts out neither reuses a verdict nor leaves one behind.
    assert_eq!(&*check_with(json!({"v": 2}), false).await.reason, "3", "memo off: run");
    assert_eq!(&*check(json!({"v": 2})).await.reason, "2", "the remembered verdict is still the last one");
    assert_eq!(&*check_with(json!({"v": 3}), false).await.reason, "4");
    assert_eq!(&*check(json!({"v": 3})).await.reason, "5", "nothing was remembered for v3");
    host.activate(ScriptKind::Status, "count", 2).await.unwrap();
    let verdict = check(json!({"v": 2})).await;
    assert_eq!((verdict.status, verdict.triple.revision), (HealthStatus::Degraded, 2), "new revision: run");
}

/// Arguments in the wire form: written field by field, shared, or from a `Value`, the
/// script reads the same; one nested too deep fails alone and names its instance.
#[tokio::test]
async fn wire_form_arguments_reach_the_script_and_too_deep_ones_fail_alone() {
    let dir = tempfile::tempdir().unwrap();
    let host = support::open(dir.path()).await;
    let echo = "export function check(instance, o) {\n  return { status: 'healthy', reason: JSON.stringify([instance, o]) };\n}\n";
    host.install_package(support::package("echo", "1.0.0", &[("status", "echo", 1, echo)])).await.unwrap();
    let shared = WireValue::from_value(&json!({"params": {"expect_status": [200]}}));
    let written = WireValue::object(|o| {
        o.object("tcp", |tcp| {
            tcp.bool("connected", true);
            tcp.int("latency_ms", 4);
        });
        o.null("error");
    });
    let mut deep = json!(1);
    for _ in 0..200 {
        deep = json!([deep]);
    }
    let input = |id: &str, observation: WireValue| CheckInput {
        instance_id: id.into(),
        instance: shared.clone(),
        observation,
        memo: true,
    };
    let inputs = [
        input("written", written),
        input("too-deep", WireValue::object(|o| o.value("deep", &deep))),
        input("from-value", json!({"tcp": {"connected": false, "latency_ms": 2.5}, "error": null}).into()),
    ];
    let results = host.check_batch("echo", &inputs).await.unwrap();
    let reason = |i: usize| -> serde_json::Value {
        serde_json::from_str(&results[i].as_ref().expect("judged").reason).unwrap()
    };
    let instance = json!({"params": {"expect_status": [200]}});
    assert_eq!(reason(0), json!([instance, {"tcp": {"connected": true, "latency_ms": 4}, "error": null}]));
    assert_eq!(reason(2), json!([instance, {"tcp": {"connected": false, "latency_ms": 2.5}, "error": null}]));
    let error = results[1].as_ref().unwrap_err().to_string();
    assert!(error.contains("too-deep") && error.contains("deeper than 128"), "{error}");
}
