//! Hostile scripts: each one fails with a typed error naming its triple and location, and
//! the host and other plugins keep working afterwards.

mod support;

use serde_json::json;
use slipway_plugins::{Error, PluginHost, ScriptKind};

/// Installs a status script `name` (revision 1) with `body` as its module source.
async fn install(host: &PluginHost, name: &str, source: &str) {
    host.install_package(support::package(name, "1.0.0", &[("status", name, 1, source)])).await.unwrap();
}

async fn check(host: &PluginHost, name: &str) -> Result<serde_json::Value, Error> {
    host.call(ScriptKind::Status, name, None, "check", vec![json!({}), json!({"n": 1})])
        .await
        .map(|o| o.result)
}

/// The built-in http check still answers: the host survived.
async fn assert_host_alive(host: &PluginHost) {
    let out = host
        .call(ScriptKind::Status, "http", None, "check", vec![json!({}), support::http_observation(200, 3)])
        .await
        .expect("the built-in http check still works");
    assert_eq!(out.result["status"], "healthy");
}

fn location_line(err: &Error) -> u32 {
    err.location().unwrap_or_else(|| panic!("no location in {err}")).line
}

#[tokio::test]
async fn endless_loop_is_interrupted_with_its_location() {
    let dir = tempfile::tempdir().unwrap();
    let host = support::open(dir.path()).await;
    install(&host, "spin", "export function check(i, o, ctx) {\n  for (;;) {}\n}\n").await;
    let err = check(&host, "spin").await.unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    assert_eq!(err.triple().unwrap().to_string(), "status/spin/1");
    // The engine polls the interrupt on a loop's back edge without saving the position, so
    // the location is as precise as the function the loop runs in.
    assert_eq!(err.location().map(|l| l.file.as_str()), Some("spin/status/spin-1.js"), "{err}");
    assert_host_alive(&host).await;
    // The runtime that hit the limit was replaced: the script runs again (and times out again).
    assert!(matches!(check(&host, "spin").await.unwrap_err(), Error::Timeout { .. }));
}

#[tokio::test]
async fn uninterruptible_builtin_gets_its_worker_killed() {
    let dir = tempfile::tempdir().unwrap();
    let host = support::open(dir.path()).await;
    // A default sort compares strings inside the engine without ever polling the interrupt
    // handler: 200,000 comparisons of 100 KB strings run for many seconds.
    let source = "export function check(i, o, ctx) {\n  const s = 'x'.repeat(100000);\n  new Array(200000).fill(s).sort();\n  return { status: 'healthy' };\n}\n";
    install(&host, "sorter", source).await;
    let started = std::time::Instant::now();
    let err = check(&host, "sorter").await.unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    assert_eq!(err.triple().unwrap().to_string(), "status/sorter/1");
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "the worker was killed, not waited for");
    assert_host_alive(&host).await;
}

/// A batch larger than a piece runs pipelined (the next pieces wait in the worker's input
/// while it runs one): a stuck call fails alone, the pieces sent behind it run on the next
/// worker, and every result lands at its input's place.
#[tokio::test]
async fn stuck_calls_in_a_batch_fail_alone_and_the_rest_of_the_batch_runs() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = support::config();
    config.workers = 1;
    let host = support::open_with(dir.path(), config).await;
    let source = "export function check(instance, o, ctx) {\n  if (instance.stuck) new Array(200000).fill('y'.repeat(100000)).sort();\n  return { status: 'healthy', reason: instance.id };\n}\n";
    install(&host, "picky", source).await;
    let stuck = [7, 150];
    let inputs: Vec<_> = (0..300)
        .map(|i| slipway_plugins::CheckInput {
            instance_id: format!("i-{i}").into(),
            instance: json!({"id": format!("i-{i}"), "stuck": stuck.contains(&i)}).into(),
            observation: json!({}).into(),
            memo: true,
        })
        .collect();
    let results = host.check_batch("picky", &inputs).await.unwrap();
    assert_eq!(results.len(), 300);
    for (i, result) in results.iter().enumerate() {
        match result {
            Ok(v) => assert_eq!((stuck.contains(&i), &*v.reason), (false, format!("i-{i}").as_str())),
            Err(e) => assert!(stuck.contains(&i) && matches!(e, Error::Timeout { .. }), "call {i}: {e}"),
        }
    }
    assert!(stuck.iter().all(|&i| results[i].is_err()));
}

#[tokio::test]
async fn memory_bomb_hits_the_heap_limit() {
    let dir = tempfile::tempdir().unwrap();
    let host = support::open(dir.path()).await;
    install(&host, "bomb", "export function check() {\n  const hoard = [];\n  for (;;) hoard.push(new ArrayBuffer(1 << 20));\n}\n").await;
    let err = check(&host, "bomb").await.unwrap_err();
    assert!(matches!(err, Error::MemoryLimit { .. }), "{err}");
    assert_eq!(err.triple().unwrap().to_string(), "status/bomb/1");
    assert_host_alive(&host).await;
}

#[tokio::test]
async fn deep_recursion_overflows_the_stack() {
    let dir = tempfile::tempdir().unwrap();
    let host = support::open(dir.path()).await;
    install(
        &host,
        "deep",
        "function down(n) {\n  return down(n + 1) + 1;\n}\nexport function check() {\n  return down(0);\n}\n",
    )
    .await;
    let err = check(&host, "deep").await.unwrap_err();
    assert!(matches!(err, Error::StackOverflow { .. }), "{err}");
    assert_eq!(location_line(&err), 2, "{err}");
    assert_host_alive(&host).await;
}

#[tokio::test]
async fn thrown_values_are_typed_errors_with_locations() {
    let dir = tempfile::tempdir().unwrap();
    let host = support::open(dir.path()).await;
    install(
        &host,
        "thrower",
        "export function check(i, o) {\n  if (o.n === 1) throw 'boom';\n  return null;\n}\n",
    )
    .await;
    let err = check(&host, "thrower").await.unwrap_err();
    let Error::Thrown { message, .. } = &err else { panic!("{err}") };
    assert!(message.contains("\"boom\""), "{err}");
    assert!(err.location().is_some(), "the function's location is reported: {err}");

    install(&host, "error-thrower", "export function check() {\n  const x = null;\n  return x.field;\n}\n")
        .await;
    let err = check(&host, "error-thrower").await.unwrap_err();
    assert!(matches!(&err, Error::Thrown { message, .. } if message.starts_with("TypeError")), "{err}");
    assert_eq!(location_line(&err), 3, "{err}");
    assert_eq!(err.location().unwrap().file, "error-thrower/status/error-thrower-1.js");
    assert_host_alive(&host).await;
}

#[tokio::test]
async fn wrong_shapes_and_unconvertible_results_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let host = support::open(dir.path()).await;
    let cases = [
        ("no-status", "export function check() { return { reason: 'x' }; }", "no `status`"),
        ("bad-status", "export function check() { return { status: 'fine' }; }", "`fine`"),
        ("not-object", "export function check() { return 42; }", "a number"),
        (
            "cycle",
            "export function check() { const a = { status: 'healthy' }; a.self = a; return a; }",
            "cycle",
        ),
        (
            "too-deep",
            "export function check() { let v = {}; for (let i = 0; i < 100; i++) v = { v }; return v; }",
            "deeper",
        ),
        (
            "bigint",
            "export function check() { return { status: 'healthy', details: { n: 10n } }; }",
            "BigInt",
        ),
        ("promise", "export async function check() { return { status: 'healthy' }; }", "Promise"),
    ];
    for (name, source, expected) in cases {
        install(&host, name, source).await;
        let err = check(&host, name).await.unwrap_err();
        assert!(matches!(err, Error::WrongShape { .. }), "{name}: {err}");
        assert!(err.to_string().contains(expected), "{name}: {err}");
        assert!(err.to_string().contains(&format!("status/{name}/1")), "{err}");
    }
    install(
        &host,
        "getter",
        "export function check() {\n  return { get status() { throw new RangeError('no'); } };\n}\n",
    )
    .await;
    let err = check(&host, "getter").await.unwrap_err();
    assert!(matches!(&err, Error::Thrown { message, .. } if message.contains("RangeError")), "{err}");
    assert_host_alive(&host).await;
}

#[tokio::test]
async fn syntax_errors_and_missing_exports_fail_the_install_with_file_line_column() {
    let dir = tempfile::tempdir().unwrap();
    let host = support::open(dir.path()).await;
    let broken = support::package(
        "broken",
        "1.0.0",
        &[("status", "broken", 1, "export function check() {\n  return {;\n}\n")],
    );
    let err = host.install_package(broken).await.unwrap_err();
    let Error::InvalidPackage { file, line, column, .. } = &err else { panic!("{err}") };
    assert_eq!((file.as_str(), *line), ("status/broken-1.js", Some(2)), "{err}");
    assert!(column.is_some(), "{err}");

    let wrong = support::package("wrong", "1.0.0", &[("trigger", "wrong", 1, "export function check() {}")]);
    let err = host.install_package(wrong).await.unwrap_err();
    assert!(err.to_string().contains("must export function(s) parse"), "{err}");

    let top_level = support::package(
        "loops",
        "1.0.0",
        &[("status", "loops", 1, "for (;;) {}\nexport function check() {}")],
    );
    let err = host.install_package(top_level).await.unwrap_err();
    assert!(matches!(err, Error::InvalidPackage { .. }), "{err}");
    assert_host_alive(&host).await;
}

#[tokio::test]
async fn scripts_have_no_clock_no_randomness_and_no_shared_state() {
    let dir = tempfile::tempdir().unwrap();
    let host = support::open(dir.path()).await;
    for (name, expr) in
        [("random", "Math.random()"), ("now", "Date.now()"), ("today", "new Date()"), ("call-date", "Date()")]
    {
        install(
            &host,
            name,
            &format!("export function check() {{ return {{ status: 'healthy', reason: String({expr}) }}; }}"),
        )
        .await;
        let err = check(&host, name).await.unwrap_err();
        assert!(
            matches!(&err, Error::Thrown { message, .. } if message.starts_with("TypeError")),
            "{name}: {err}"
        );
    }
    install(
        &host,
        "epoch",
        "export function check() { return { status: 'healthy', reason: new Date(0).toISOString() }; }",
    )
    .await;
    assert_eq!(check(&host, "epoch").await.unwrap()["reason"], "1970-01-01T00:00:00.000Z");
    // Globals one script sets are invisible to another: each has its own runtime.
    install(
        &host,
        "writer",
        "export function check() { globalThis.shared = 'leak'; return { status: 'healthy' }; }",
    )
    .await;
    install(
        &host,
        "reader",
        "export function check() { return { status: 'healthy', reason: typeof globalThis.shared }; }",
    )
    .await;
    check(&host, "writer").await.unwrap();
    assert_eq!(check(&host, "reader").await.unwrap()["reason"], "undefined");
    for (name, expr) in [
        ("no-require", "typeof require"),
        ("no-std", "typeof std"),
        ("no-os", "typeof os"),
        ("no-fetch", "typeof fetch"),
    ] {
        install(
            &host,
            name,
            &format!("export function check() {{ return {{ status: 'healthy', reason: {expr} }}; }}"),
        )
        .await;
        assert_eq!(check(&host, name).await.unwrap()["reason"], "undefined", "{name}");
    }
}

#[tokio::test]
async fn ctx_offers_logging_json_yaml_and_semver() {
    let dir = tempfile::tempdir().unwrap();
    let host = support::open(dir.path()).await;
    let source = r#"export function check(instance, observation, ctx) {
  ctx.log("checking", { n: 1 });
  const doc = ctx.yaml.parse("a: 1\nb: [x, y]\n");
  return {
    status: "healthy",
    reason: ctx.triple,
    details: {
      yaml: doc,
      back: ctx.yaml.stringify({ k: "v" }),
      json: ctx.json.stringify(ctx.json.parse('{"z":2}')),
      cmp: [ctx.semver.compare("1.2.3", "1.10.0"), ctx.semver.compare("2.0.0", "2.0.0")],
      ok: ctx.semver.satisfies("1.4.0", "^1.2"),
    },
  };
}
"#;
    install(&host, "helpers", source).await;
    let out = check(&host, "helpers").await.unwrap();
    assert_eq!(out["reason"], "status/helpers/1");
    assert_eq!(out["details"]["yaml"], json!({"a": 1, "b": ["x", "y"]}));
    assert_eq!(out["details"]["back"], "k: v\n");
    assert_eq!(out["details"]["json"], "{\"z\":2}");
    assert_eq!(out["details"]["cmp"], json!([-1, 0]));
    assert_eq!(out["details"]["ok"], true);
}
