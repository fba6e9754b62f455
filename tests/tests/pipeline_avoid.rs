//! Build avoidance end to end: a component whose inputs (source tree, Dockerfile, build args,
//! plugin revision, base image) match a component package already published is not built or
//! pushed again; the app package still gets a new version holding the reused package.

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};
use slipway_plugins::pack_package;
use slipway_tests::pipeline::{registry_and_base, start, submit, write};
use slipway_tests::server::TestServer;

const APP: &str = "avoid-shop";

/// `web` (a microservice from scratch) and `worker` (a job on the base image, with a build arg).
fn components(source: &Path, mode: &str) -> Value {
    let dir = json!({"dir": {"path": source}});
    json!([
        {"name": "web", "type": "microservice", "source": dir, "path": "web"},
        {"name": "worker", "type": "job", "source": dir, "path": "worker",
         "params": {"build_args": {"MODE": mode}}},
    ])
}

async fn build(server: &TestServer, source: &Path, mode: &str) -> Value {
    let id = submit(server, APP, components(source, mode)).await;
    let build = server.wait_build(&id).await;
    assert_eq!(build["state"], "succeeded", "{build}");
    build
}

fn states(build: &Value) -> Vec<&str> {
    build["components"].as_array().unwrap().iter().map(|c| c["state"].as_str().unwrap()).collect()
}

/// Whether the registry holds `reference` (skopeo, from outside the server).
fn in_registry(reference: &str) -> bool {
    Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", &format!("docker://{reference}")])
        .output()
        .expect("skopeo")
        .status
        .success()
}

/// A plugin package with `component/job` revision 2: the same plan and package as the
/// built-in, so only the revision differs.
fn job_revision_2() -> Vec<u8> {
    let script = r#"
export function plan(component, ctx) {
  const params = component.params || {};
  return { steps: [{ kind: "image", name: component.name, context: component.path,
    dockerfile: `${component.path}/Dockerfile`, build_args: params.build_args || {}, target: null }] };
}
function packageComponent(component, results, ctx) {
  const image = results.steps.find((s) => s.kind === "image");
  return { type: "job", artifacts: [{ type: "image", name: component.name, reference: image.reference, digest: image.digest }],
           metadata: { revision: 2 } };
}
export { packageComponent as package };
"#;
    let manifest = "[package]\nname = \"job-two\"\nversion = \"2.0.0\"\n\n[[scripts]]\nkind = \"component\"\nname = \"job\"\nrevision = 2\nfile = \"job.js\"\n";
    pack_package(&[("plugin.toml", manifest.as_bytes()), ("job.js", script.as_bytes())]).to_vec()
}

#[tokio::test]
async fn unchanged_components_are_reused_and_changed_ones_rebuilt() {
    let Some((registry, base)) = registry_and_base() else { return };
    let source = tempfile::tempdir().unwrap();
    write(source.path(), "web/Dockerfile", "FROM scratch\nCOPY index.html /index.html\n");
    write(source.path(), "web/index.html", "<h1>one</h1>\n");
    write(
        source.path(),
        "worker/Dockerfile",
        &format!("FROM {base}\nARG MODE\nRUN echo \"mode $MODE\" > /mode.txt\n"),
    );
    let server = start(&registry, source.path()).await;

    let first = build(&server, source.path(), "fast").await;
    assert_eq!(states(&first), ["succeeded", "succeeded"], "{first}");
    let first_version = first["package"]["version"].as_str().unwrap().to_owned();

    // The same request again: nothing is built or pushed, a new app version is published.
    let second = build(&server, source.path(), "fast").await;
    assert_eq!(states(&second), ["skipped", "skipped"], "{second}");
    for (again, before) in
        second["components"].as_array().unwrap().iter().zip(first["components"].as_array().unwrap())
    {
        let reason = again["reason"].as_str().unwrap();
        assert!(
            reason.contains(&format!(
                "reused component package {APP}/{} {first_version}",
                again["name"].as_str().unwrap()
            )),
            "{again}"
        );
        assert_eq!(again["digest"], before["digest"], "the reused image: {again}");
        assert_eq!(again["image"], before["image"]);
    }
    let second_id = second["id"].as_str().unwrap();
    assert!(
        !in_registry(&format!("{registry}/{APP}/web:{second_id}")),
        "nothing pushed for the skipped build"
    );
    let second_version = second["package"]["version"].as_str().unwrap();
    assert_ne!(second_version, first_version);
    let first_package = server.get_json(&format!("/v1/apps/{APP}/packages/{first_version}")).await;
    let second_package = server.get_json(&format!("/v1/apps/{APP}/packages/{second_version}")).await;
    assert_eq!(
        second_package["manifest"]["components"], first_package["manifest"]["components"],
        "the new app package holds the very same component packages"
    );
    let log = server.get_json(&format!("/v1/builds/{second_id}/logs?component=worker")).await;
    assert!(log["lines"].to_string().contains("nothing built"), "{log}");

    // One changed file rebuilds its component only.
    write(source.path(), "web/index.html", "<h1>two</h1>\n");
    let third = build(&server, source.path(), "fast").await;
    assert_eq!(states(&third), ["succeeded", "skipped"], "{third}");
    assert_ne!(third["components"][0]["digest"], first["components"][0]["digest"]);

    // A changed build arg rebuilds the component it goes to.
    let fourth = build(&server, source.path(), "thorough").await;
    assert_eq!(states(&fourth), ["skipped", "succeeded"], "{fourth}");
    assert!(
        fourth["components"][0]["reason"]
            .as_str()
            .unwrap()
            .contains(third["package"]["version"].as_str().unwrap())
    );

    // Activating another revision of the job plugin rebuilds the job only.
    let uploaded = server
        .client()
        .post(server.url("/v1/plugins"))
        .header("content-type", "application/gzip")
        .body(job_revision_2())
        .send()
        .await
        .unwrap();
    assert_eq!(uploaded.status(), 201, "{}", uploaded.text().await.unwrap());
    let activated = server
        .client()
        .put(server.url("/v1/plugins/component/job/active"))
        .json(&json!({"revision": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(activated.status(), 200);
    let fifth = build(&server, source.path(), "thorough").await;
    assert_eq!(states(&fifth), ["skipped", "succeeded"], "{fifth}");
    assert_eq!(fifth["components"][1]["plugin"], "component/job/2");
    let components: Value = server.get_json(&format!("/v1/apps/{APP}/components/worker/packages")).await;
    assert!(
        components.to_string().contains("\"revision\":2"),
        "the job package came from revision 2: {components}"
    );
}
