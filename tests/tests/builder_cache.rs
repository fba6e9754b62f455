//! The native layer cache cannot be fooled, and git sources build at a ref with the commit
//! time as the image time. `FROM scratch` only: no registry needed.

mod builder_support;

use std::path::Path;
use std::process::Command;

use builder_support::*;
use slipway_builder::{BuildBackend, BuildLog, BuildRequest, SourceSpec};

const DOCKERFILE: &str = "FROM scratch\nCOPY a.txt /a.txt\nARG V=1\nCOPY b.txt /b.txt\nCOPY . /ctx/\n";

async fn built(backend: &slipway_builder::NativeBackend, ctx: &Path, v: Option<&str>) -> usize {
    let mut request = BuildRequest::new(SourceSpec::Dir(ctx.into()), "unused/cache:latest");
    if let Some(v) = v {
        request.build_args.insert("V".into(), v.into());
    }
    let log = BuildLog::new("cache");
    backend
        .build_local(&request, &log)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{:#?}", log.lines()))
        .layers_built
}

#[tokio::test]
async fn each_change_rebuilds_exactly_the_layers_it_should() {
    let tmp = tempfile::tempdir().unwrap();
    let ctx = tmp.path().join("ctx");
    write_tree(&ctx, &[("Dockerfile", DOCKERFILE), ("a.txt", "aaaa"), ("b.txt", "bbbb"), ("c.txt", "cccc")]);
    let backend = native(&tmp.path().join("store"));
    assert_eq!(built(&backend, &ctx, None).await, 3);
    assert_eq!(built(&backend, &ctx, None).await, 0, "nothing changed");

    // Same size, same mtime, other content: the inode change time still tells.
    let a = ctx.join("a.txt");
    let mtime = std::fs::metadata(&a).unwrap().modified().unwrap();
    std::fs::write(&a, "AAAA").unwrap();
    std::fs::File::options().write(true).open(&a).unwrap().set_modified(mtime).unwrap();
    assert_eq!(built(&backend, &ctx, None).await, 3, "a.txt feeds the first layer, so all rebuild");

    assert_eq!(built(&backend, &ctx, Some("2")).await, 2, "a build arg changes the layers after its ARG");
    assert_eq!(built(&backend, &ctx, Some("2")).await, 0);

    std::fs::write(ctx.join(".dockerignore"), "c.txt\n").unwrap();
    assert_eq!(built(&backend, &ctx, Some("2")).await, 1, "a changed .dockerignore changes only `COPY .`");
}

#[tokio::test]
async fn git_sources_build_at_a_ref_with_the_commit_time() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    write_tree(&repo, &[("Dockerfile", "FROM scratch\nCOPY msg.txt /\n"), ("msg.txt", "tagged\n")]);
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .args(args)
            .current_dir(&repo)
            .env("GIT_COMMITTER_DATE", "2024-01-02T03:04:05Z")
            .env("GIT_AUTHOR_DATE", "2024-01-02T03:04:05Z")
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    git(&["init", "-q", "-b", "main"]);
    git(&["-c", "user.name=t", "-c", "user.email=t@e", "add", "."]);
    git(&["-c", "user.name=t", "-c", "user.email=t@e", "commit", "-qm", "first"]);
    git(&["tag", "v1"]);
    std::fs::write(repo.join("msg.txt"), "later\n").unwrap();
    git(&["-c", "user.name=t", "-c", "user.email=t@e", "commit", "-qam", "second"]);

    let backend = native(&tmp.path().join("store"));
    let source = SourceSpec::Git { url: format!("file://{}", repo.display()), reference: "v1".into() };
    let built = backend
        .build_local(&BuildRequest::new(source, "unused/git:latest"), &BuildLog::new("git"))
        .await
        .unwrap();
    let config: serde_json::Value = serde_json::from_slice(
        &slipway_builder::store::BlobStore::new(std::sync::Arc::new(
            object_store::local::LocalFileSystem::new_with_prefix(tmp.path().join("store/store")).unwrap(),
        ))
        .blob(&built.image.config.digest)
        .await
        .unwrap(),
    )
    .unwrap();
    assert_eq!(config["created"], "2024-01-02T03:04:05Z");

    let missing =
        SourceSpec::Git { url: format!("file://{}", repo.display()), reference: "no-such-ref".into() };
    let err = backend
        .build_local(&BuildRequest::new(missing, "unused/git:latest"), &BuildLog::new("git"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no-such-ref"), "{err}");
}

#[tokio::test]
async fn components_build_in_parallel_with_their_own_logs() {
    let tmp = tempfile::tempdir().unwrap();
    let good = tmp.path().join("good");
    let bad = tmp.path().join("bad");
    write_tree(&good, &[("Dockerfile", "FROM scratch\nCOPY a.txt /\n"), ("a.txt", "a")]);
    write_tree(&bad, &[("Dockerfile", "FROM scratch\nCOPY missing /\n")]);
    let backend = native(&tmp.path().join("store"));
    let mut builds = Vec::new();
    for (name, dir) in [("web", &good), ("worker", &bad), ("api", &good)] {
        let mut request = BuildRequest::new(SourceSpec::Dir(dir.clone()), "unused/parallel:latest");
        request.push = false;
        builds.push(slipway_builder::ComponentBuild { component: name.into(), backend: &backend, request });
    }
    let results = slipway_builder::build_components(builds, 2).await;
    let summary: Vec<(String, bool)> =
        results.iter().map(|r| (r.component.clone(), r.outcome.is_ok())).collect();
    assert_eq!(summary, [("web".into(), true), ("worker".into(), false), ("api".into(), true)]);
    assert!(results[1].log.lines().iter().any(|l| l.contains("build failed") && l.contains("missing")));
    assert!(results[0].log.lines().iter().all(|l| !l.contains("missing")), "logs stay per component");
}

#[tokio::test]
async fn a_changed_base_image_digest_rebuilds_the_layers_above_it() {
    if !registry_ready() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let backend = native(&tmp.path().join("store"));
    let base = format!("{}:latest", unique("cache-base"));
    // Pushes a base image whose content is `text` under the same tag each time.
    let push_base = |text: &'static str| {
        let dir = tmp.path().join(format!("base-{}", text.len()));
        write_tree(&dir, &[("Dockerfile", "FROM scratch\nCOPY base.txt /base.txt\n"), ("base.txt", text)]);
        let request = BuildRequest::new(SourceSpec::Dir(dir), &base);
        let backend = &backend;
        async move {
            let log = BuildLog::new("base");
            backend.build(&request, &log).await.unwrap_or_else(|e| panic!("{e}\n{:#?}", log.lines()))
        }
    };
    let first = push_base("one").await;

    let ctx = tmp.path().join("app");
    write_tree(&ctx, &[("Dockerfile", &format!("FROM {base}\nCOPY app.txt /app.txt\n")), ("app.txt", "app")]);
    let build_app = || async {
        let request = BuildRequest::new(SourceSpec::Dir(ctx.clone()), "unused/app:latest");
        let log = BuildLog::new("app");
        backend
            .build_local(&request, &log)
            .await
            .unwrap_or_else(|e| panic!("{e}\n{:#?}", log.lines()))
            .layers_built
    };
    assert_eq!(build_app().await, 1);
    assert_eq!(build_app().await, 0, "same base digest: all cached");

    let second = push_base("two, longer").await;
    assert_ne!(first.digest, second.digest, "the tag now names another image");
    assert_eq!(build_app().await, 1, "a new base digest rebuilds the layer above it");
    assert_eq!(build_app().await, 0);
}
