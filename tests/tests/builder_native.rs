//! The native backend against the real registry and Docker daemon: build, push, pull, run.

mod builder_support;

use builder_support::*;
use slipway_builder::{BuildBackend, BuildLog, BuildRequest, SourceSpec};

const DOCKERFILE: &str = r#"ARG BASE
FROM ${BASE}
WORKDIR /app
COPY greeting.txt ./
COPY src/ /app/src/
ENV WHO=world GREETING="hello there"
RUN echo "built by $WHO" > /app/built.txt && mkdir -p /var/data && rm -f /app/src/drop.txt
LABEL org.example.name="native test"
EXPOSE 8080
CMD ["sh", "-c", "cat /app/greeting.txt /app/built.txt; ls /app/src"]
"#;

fn context(dir: &std::path::Path) {
    write_tree(
        dir,
        &[
            ("Dockerfile", DOCKERFILE),
            ("greeting.txt", "hello from the context\n"),
            ("src/a.txt", "a\n"),
            ("src/drop.txt", "dropped by RUN\n"),
            ("ignored.log", "never copied\n"),
            (".dockerignore", "*.log\n"),
        ],
    );
}

fn request(dir: &std::path::Path, image: &str) -> BuildRequest {
    let mut request = BuildRequest::new(SourceSpec::Dir(dir.into()), image);
    request.build_args.insert("BASE".into(), base_image());
    request
}

#[tokio::test]
async fn native_image_runs_under_docker_and_is_reproducible() {
    if !registry_ready() || !docker_ready() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let ctx = tmp.path().join("ctx");
    context(&ctx);
    let image = format!("{}:v1", unique("native"));
    let backend = native(&tmp.path().join("a"));
    let log = BuildLog::new("web");
    let outcome = backend
        .build(&request(&ctx, &image), &log)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{:#?}", log.lines()));
    assert!(outcome.push.is_some());
    assert!(log.lines().iter().any(|l| l.contains("| ") || l.contains("RUN")), "{:?}", log.lines());

    let config = inspect_config(&image);
    assert_eq!(config["config"]["WorkingDir"], "/app");
    assert_eq!(config["config"]["Labels"]["org.example.name"], "native test");
    assert!(config["config"]["ExposedPorts"]["8080/tcp"].is_object());
    assert!(config["config"]["Env"].as_array().unwrap().iter().any(|e| e == "GREETING=hello there"));
    assert_eq!(config["created"], "1970-01-01T00:00:00Z");

    run("docker", &["pull", "-q", &image]);
    let output = run("docker", &["run", "--rm", &image]);
    assert_eq!(output, "hello from the context\nbuilt by world\na.txt\n");

    // A second clean build (fresh store and cache) gives the same digest.
    let again =
        native(&tmp.path().join("b")).build(&request(&ctx, &image), &BuildLog::new("web")).await.unwrap();
    assert_eq!(again.digest, outcome.digest);
    let pushed = again.push.unwrap();
    assert_eq!(pushed.uploaded_bytes, 0, "the registry already had every blob");

    // Nothing changed: everything comes from the cache.
    let cached = backend.build(&request(&ctx, &image), &BuildLog::new("web")).await.unwrap();
    assert_eq!((cached.layers_built, cached.digest.clone()), (0, outcome.digest.clone()));
    run("docker", &["rmi", "-f", &image]);
}

#[tokio::test]
async fn failing_run_reports_code_and_output_and_pushes_nothing() {
    if !registry_ready() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let ctx = tmp.path().join("ctx");
    write_tree(&ctx, &[("Dockerfile", "ARG BASE\nFROM $BASE\nRUN echo about to fail; exit 3\n")]);
    let image = format!("{}:v1", unique("failing"));
    let err =
        native(&tmp.path().join("s")).build(&request(&ctx, &image), &BuildLog::new("x")).await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("Dockerfile:3") && text.contains("code 3") && text.contains("about to fail"),
        "{text}"
    );
    let status = std::process::Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", &format!("docker://{image}")])
        .output()
        .unwrap();
    assert!(!status.status.success(), "nothing may be pushed under the tag");
}
