//! The built-in component types and trigger adapters through the public host API.

mod support;

use serde_json::{Value, json};
use slipway_plugins::{Error, PluginHost, ScriptKind, WireValue};

async fn call(
    host: &PluginHost,
    kind: ScriptKind,
    name: &str,
    function: &str,
    args: Vec<Value>,
) -> Result<Value, Error> {
    host.call(kind, name, None, function, args).await.map(|o| o.result)
}

#[tokio::test]
async fn image_components_plan_a_dockerfile_build_and_package_the_image() {
    let dir = tempfile::tempdir().unwrap();
    let host = support::open(dir.path()).await;
    let component = json!({"name": "api", "path": "services/api", "params": {"build_args": {"GIT_SHA": "abc"}, "port": 8080}});
    let plan =
        call(&host, ScriptKind::Component, "microservice", "plan", vec![component.clone()]).await.unwrap();
    assert_eq!(plan["steps"][0]["kind"], "image");
    assert_eq!(plan["steps"][0]["context"], "services/api");
    assert_eq!(plan["steps"][0]["dockerfile"], "services/api/Dockerfile");
    assert_eq!(plan["steps"][0]["build_args"], json!({"GIT_SHA": "abc"}));
    let results = json!({"steps": [{"kind": "image", "reference": "registry.local/api@sha256:1", "digest": "sha256:1"}]});
    let package = call(
        &host,
        ScriptKind::Component,
        "microservice",
        "package",
        vec![component.clone(), results.clone()],
    )
    .await
    .unwrap();
    assert_eq!(package["type"], "microservice");
    assert_eq!(package["artifacts"][0]["digest"], "sha256:1");
    assert_eq!(package["metadata"]["port"], 8080);
    let err =
        call(&host, ScriptKind::Component, "microservice", "package", vec![component, json!({"steps": []})])
            .await
            .unwrap_err();
    assert!(matches!(&err, Error::Thrown { message, .. } if message.contains("no image digest")), "{err}");

    let job = json!({"name": "migrate", "path": ".", "params": {"command": ["migrate", "up"], "dockerfile": "Dockerfile.migrate"}});
    let plan = call(&host, ScriptKind::Component, "job", "plan", vec![job.clone()]).await.unwrap();
    assert_eq!(plan["steps"][0]["dockerfile"], "Dockerfile.migrate");
    let package = call(&host, ScriptKind::Component, "job", "package", vec![job, results]).await.unwrap();
    assert_eq!(
        package["metadata"],
        json!({"command": ["migrate", "up"], "schedule": null, "backoff_limit": 6})
    );
}

#[tokio::test]
async fn helm_component_packages_a_chart_with_a_semantic_version() {
    let dir = tempfile::tempdir().unwrap();
    let host = support::open(dir.path()).await;
    let component = json!({"name": "web", "path": "charts/web", "params": {"values": {"replicas": 2}}});
    let plan = call(&host, ScriptKind::Component, "helm", "plan", vec![component.clone()]).await.unwrap();
    assert_eq!(plan, json!({"steps": [{"kind": "chart", "name": "web", "path": "charts/web"}]}));
    let chart = |version: &str| json!({"steps": [{"kind": "chart", "version": version, "reference": "oci://r/web", "digest": "sha256:2"}]});
    let package =
        call(&host, ScriptKind::Component, "helm", "package", vec![component.clone(), chart("1.2.3")])
            .await
            .unwrap();
    assert_eq!(package["artifacts"][0]["version"], "1.2.3");
    assert_eq!(package["metadata"]["values"], json!({"replicas": 2}));
    let err = call(&host, ScriptKind::Component, "helm", "package", vec![component, chart("one")])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not a semantic version"), "{err}");
}

fn github(event: &str, body: Value) -> Value {
    json!({"headers": {"x-github-event": event, "content-type": "application/json"}, "body": body.to_string(), "json": body})
}

#[tokio::test]
async fn github_push_builds_branches_publishes_version_tags_and_rejects_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let host = support::open(dir.path()).await;
    let push = |r#ref: &str| {
        json!({
            "ref": r#ref, "before": "a1", "after": "b2c3", "deleted": false,
            "repository": {"full_name": "acme/shop", "clone_url": "https://github.com/acme/shop.git"},
            "pusher": {"name": "dana"}, "head_commit": {"id": "b2c3", "message": "fix checkout"}
        })
    };
    let parse = |request: Value| call(&host, ScriptKind::Trigger, "github-push", "parse", vec![request]);
    let build = parse(github("push", push("refs/heads/main"))).await.unwrap();
    assert_eq!(build["accept"], true);
    assert_eq!(build["request"]["action"], "build");
    assert_eq!(build["request"]["branch"], "main");
    assert_eq!(build["request"]["commit"], "b2c3");
    assert_eq!(build["request"]["repository"], "acme/shop");
    let publish = parse(github("push", push("refs/tags/v2.4.1"))).await.unwrap();
    assert_eq!(
        (publish["request"]["action"].as_str(), publish["request"]["version"].as_str()),
        (Some("publish"), Some("2.4.1"))
    );
    for (request, reason) in [
        (github("ping", json!({"zen": "hi"})), "not a push"),
        (github("push", push("refs/tags/nightly")), "not a version"),
        (github("push", json!({"ref": "refs/heads/old", "after": "0000", "deleted": true})), "deleted"),
    ] {
        let rejected = parse(request).await.unwrap();
        assert_eq!(rejected["accept"], false);
        assert!(rejected["reason"].as_str().unwrap().contains(reason), "{rejected}");
    }
}

#[tokio::test]
async fn gitlab_push_and_generic_payloads() {
    let dir = tempfile::tempdir().unwrap();
    let host = support::open(dir.path()).await;
    let body = json!({
        "object_kind": "push", "ref": "refs/heads/develop", "before": "1", "after": "9f8e", "checkout_sha": "9f8e",
        "user_username": "lee", "project": {"path_with_namespace": "acme/shop", "git_http_url": "https://gitlab.com/acme/shop.git"},
        "commits": [{"id": "9f8e", "message": "add cart"}]
    });
    let request = json!({"headers": {"x-gitlab-event": "Push Hook"}, "body": body.to_string(), "json": body});
    let parsed = call(&host, ScriptKind::Trigger, "gitlab-push", "parse", vec![request]).await.unwrap();
    assert_eq!(parsed["request"]["branch"], "develop");
    assert_eq!(parsed["request"]["message"], "add cart");
    let deleted = json!({"object_kind": "push", "ref": "refs/heads/x", "after": "0000000000000000000000000000000000000000"});
    let request =
        json!({"headers": {"x-gitlab-event": "Push Hook"}, "body": deleted.to_string(), "json": deleted});
    let parsed = call(&host, ScriptKind::Trigger, "gitlab-push", "parse", vec![request]).await.unwrap();
    assert_eq!(parsed["accept"], false);

    let generic = |body: Value| json!({"headers": {}, "body": body.to_string(), "json": body});
    let ok = json!({"action": "publish", "repository": "acme/shop", "commit": "c0ffee", "version": "3.0.0"});
    let parsed = call(&host, ScriptKind::Trigger, "generic", "parse", vec![generic(ok)]).await.unwrap();
    assert_eq!(
        parsed["request"],
        json!({"action": "publish", "repository": "acme/shop", "ref": null, "commit": "c0ffee", "version": "3.0.0"})
    );
    let parsed =
        call(&host, ScriptKind::Trigger, "generic", "parse", vec![generic(json!({"action": "deploy"}))])
            .await
            .unwrap();
    assert_eq!(parsed["accept"], false);
    assert!(parsed["reason"].as_str().unwrap().contains("build"), "{parsed}");
}

#[tokio::test]
async fn generic_reads_the_branch_from_ref_and_passes_images_on() {
    let dir = tempfile::tempdir().unwrap();
    let host = support::open(dir.path()).await;
    let generic = |body: Value| json!({"headers": {}, "body": body.to_string(), "json": body});
    let parse = |body: Value| call(&host, ScriptKind::Trigger, "generic", "parse", vec![generic(body)]);
    let base = json!({"action": "build", "repository": "acme/shop", "commit": "c0ffee"});
    let with = |extra: Value| {
        let mut body = base.clone();
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        body
    };

    let full = parse(with(json!({"ref": "refs/heads/release/2.0"}))).await.unwrap();
    assert_eq!(full["request"]["branch"], "release/2.0", "{full}");
    let bare = parse(with(json!({"ref": "main"}))).await.unwrap();
    assert_eq!(bare["request"]["branch"], "main", "a bare name is a branch: {bare}");
    let tag = parse(with(json!({"ref": "refs/tags/v2.0.0"}))).await.unwrap();
    assert_eq!(tag["request"]["tag"], "v2.0.0");
    assert!(tag["request"].get("branch").is_none(), "a tag is not a branch: {tag}");

    let images = json!([{"component": "web", "reference": "127.0.0.1:5000/ci/web:2.0", "extra": 1}]);
    let prebuilt = parse(with(json!({"ref": "main", "images": images}))).await.unwrap();
    assert_eq!(
        prebuilt["request"]["images"],
        json!([{"component": "web", "reference": "127.0.0.1:5000/ci/web:2.0"}])
    );
    for (images, reason) in [
        (json!("web=ci/web:2.0"), "must be a list"),
        (json!([{"component": "web"}]), "needs a component and a reference"),
    ] {
        let rejected = parse(with(json!({ "images": images }))).await.unwrap();
        assert_eq!(rejected["accept"], false);
        assert!(rejected["reason"].as_str().unwrap().contains(reason), "{rejected}");
    }
}

#[tokio::test]
async fn a_batch_of_calls_answers_each_in_order_and_fails_each_alone() {
    let dir = tempfile::tempdir().unwrap();
    let host = support::open(dir.path()).await;
    let echo = "export function parse(request, ctx) {\n  if (request.fail) throw new Error(`refused ${request.n}`);\n  return { accept: true, request: { n: request.n } };\n}\n";
    host.install_package(support::package("acme", "1.0.0", &[("trigger", "echo", 1, echo)])).await.unwrap();
    let calls: Vec<Vec<WireValue>> =
        (0..40).map(|n| vec![json!({"n": n, "fail": n % 7 == 3}).into(), json!({}).into()]).collect();
    let results = host.call_batch(ScriptKind::Trigger, "echo", None, "parse", &calls).await.unwrap();
    assert_eq!(results.len(), 40);
    for (n, result) in results.into_iter().enumerate() {
        match result {
            Ok(output) if n % 7 != 3 => {
                assert_eq!(output.result["request"]["n"], n, "answers keep the order of the calls");
                assert_eq!(output.triple.to_string(), "trigger/echo/1");
            }
            Err(e) if n % 7 == 3 => assert!(e.to_string().contains(&format!("refused {n}")), "{e}"),
            other => panic!("call {n}: {other:?}"),
        }
    }
    let unknown = host.call_batch(ScriptKind::Trigger, "nope", None, "parse", &calls).await;
    assert!(matches!(unknown, Err(Error::UnknownScript { .. })), "a batch for an unknown script fails whole");
}
