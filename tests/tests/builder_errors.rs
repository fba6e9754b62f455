//! Bad input ends a native build with a clear reason and nothing under the tag.

mod builder_support;

use builder_support::*;
use slipway_builder::{BuildBackend, BuildLog, BuildRequest, Error, SourceSpec};

async fn fail(files: &[(&str, &str)], image: &str) -> Error {
    let tmp = tempfile::tempdir().unwrap();
    let ctx = tmp.path().join("ctx");
    write_tree(&ctx, files);
    fail_in(&ctx, image, tmp.path()).await
}

async fn fail_in(ctx: &std::path::Path, image: &str, scratch: &std::path::Path) -> Error {
    let mut request = BuildRequest::new(SourceSpec::Dir(ctx.into()), image);
    request.build_args.insert("BASE".into(), base_image());
    native(&scratch.join("store")).build(&request, &BuildLog::new("bad")).await.unwrap_err()
}

fn nothing_under(image: &str) {
    let out = std::process::Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", &format!("docker://{image}")])
        .output()
        .unwrap();
    assert!(!out.status.success(), "{image} must not exist");
}

#[tokio::test]
async fn dockerfile_errors_name_file_line_and_column() {
    let err = fail(&[("Dockerfile", "FROM scratch\nCOPY a /a\nFROBNICATE now\n")], "unused/x:y").await;
    assert!(matches!(err, Error::Dockerfile { line: 3, column: 1, .. }), "{err}");
    let err = fail(&[("Dockerfile", "FROM scratch\nENV A=${B\n")], "unused/x:y").await;
    assert!(err.to_string().starts_with("Dockerfile:2: variable expansion failed"), "{err}");
}

#[tokio::test]
async fn copy_sources_must_exist_and_stay_inside() {
    let missing = fail(&[("Dockerfile", "FROM scratch\nCOPY nope.txt /\n")], "unused/x:y").await;
    assert!(missing.to_string().contains("`nope.txt` not found"), "{missing}");
    let escape = fail(&[("Dockerfile", "FROM scratch\nCOPY ../../etc/passwd /\n")], "unused/x:y").await;
    assert!(escape.to_string().contains("escapes the build context"), "{escape}");
    let remote = fail(&[("Dockerfile", "FROM scratch\nADD https://example.com/x /x\n")], "unused/x:y").await;
    assert!(matches!(remote, Error::RemoteAdd { line: 2, .. }), "{remote}");

    let tmp = tempfile::tempdir().unwrap();
    let ctx = tmp.path().join("ctx");
    write_tree(&ctx, &[("Dockerfile", "FROM scratch\nCOPY a /a\n")]);
    std::os::unix::fs::symlink("b", ctx.join("a")).unwrap();
    std::os::unix::fs::symlink("a", ctx.join("b")).unwrap();
    let looped = fail_in(&ctx, "unused/x:y", tmp.path()).await;
    assert!(matches!(looped, Error::SymlinkLoop(_)), "{looped}");
}

#[tokio::test]
async fn missing_base_image_and_unreachable_registry() {
    if !registry_ready() {
        return;
    }
    let image = format!("{}:v1", unique("nobase"));
    let missing = format!("{}/slipway-test/does-not-exist:latest", registry());
    let err = fail(&[("Dockerfile", &format!("FROM {missing}\n"))], &image).await;
    let text = err.to_string();
    assert!(matches!(err, Error::BaseImage { .. }) && text.contains("does-not-exist"), "{text}");
    assert!(text.to_lowercase().contains("unknown") || text.to_lowercase().contains("not found"), "{text}");
    nothing_under(&image);

    let err =
        fail(&[("Dockerfile", "FROM scratch\nCOPY a /a\n"), ("a", "a")], "127.0.0.1:9/slipway-test/x:v1")
            .await;
    assert!(matches!(err, Error::Registry { .. }), "{err}");
}
