//! The parity corpus: every case under `tests/fixtures/dockerfiles/<name>/` is built by the
//! native backend and by the docker backend, both pushed to the loopback registry, and the
//! image configs (as `skopeo inspect --config` reads them) and flattened file trees compared.
//! A case may hold `build-args` (`KEY=value` lines) and `target` (a stage name).

mod builder_support;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use builder_support::*;
use serde_json::Value;
use slipway_builder::{BuildBackend, BuildLog, BuildRequest, DockerBackend, DockerSettings, SourceSpec};

/// The config fields the issue names; absent, null and empty count as the same.
const FIELDS: &[&str] = &[
    "Env",
    "Cmd",
    "Entrypoint",
    "WorkingDir",
    "User",
    "ExposedPorts",
    "Labels",
    "Volumes",
    "StopSignal",
    "Healthcheck",
    "OnBuild",
];

fn cases() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/dockerfiles");
    let mut cases: Vec<PathBuf> =
        std::fs::read_dir(&root).unwrap().map(|e| e.unwrap().path()).filter(|p| p.is_dir()).collect();
    cases.sort();
    cases
}

fn request(case: &Path, image: &str) -> BuildRequest {
    let mut request = BuildRequest::new(SourceSpec::Dir(case.into()), image);
    request.build_args.insert("BASE".into(), base_image());
    if let Ok(text) = std::fs::read_to_string(case.join("build-args")) {
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let (k, v) = line.split_once('=').unwrap();
            request.build_args.insert(k.into(), v.into());
        }
    }
    request.target = std::fs::read_to_string(case.join("target")).ok().map(|t| t.trim().to_string());
    request
}

fn normalised(config: &Value) -> BTreeMap<&'static str, Value> {
    FIELDS
        .iter()
        .filter_map(|field| {
            let value = config["config"].get(*field).cloned().unwrap_or(Value::Null);
            let empty = match &value {
                Value::Null => true,
                Value::String(s) => s.is_empty(),
                Value::Array(a) => a.is_empty(),
                Value::Object(o) => o.is_empty(),
                _ => false,
            };
            (!empty).then_some((*field, value))
        })
        .collect()
}

/// The image's flattened file tree: path → (type, mode, uid, gid, content digest or target).
fn file_tree(image: &str, scratch: &Path) -> BTreeMap<String, String> {
    let layout = scratch.join("oci");
    std::fs::create_dir_all(scratch).unwrap();
    run(
        "skopeo",
        &[
            "copy",
            "-q",
            "--src-tls-verify=false",
            &format!("docker://{image}"),
            &format!("dir:{}", layout.display()),
        ],
    );
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(layout.join("manifest.json")).unwrap()).unwrap();
    let root = scratch.join("root");
    std::fs::create_dir_all(&root).unwrap();
    for layer in manifest["layers"].as_array().unwrap() {
        let digest = layer["digest"].as_str().unwrap().trim_start_matches("sha256:");
        let blob = std::fs::read(layout.join(digest)).unwrap();
        slipway_builder::rootfs::apply_layer(&root, &blob).unwrap();
    }
    let mut tree = BTreeMap::new();
    for item in walkdir(&root) {
        let rel = item.strip_prefix(&root).unwrap().to_string_lossy().into_owned();
        let meta = item.symlink_metadata().unwrap();
        let what = if meta.is_dir() {
            "dir".to_string()
        } else if meta.file_type().is_symlink() {
            format!("link {}", std::fs::read_link(&item).unwrap().display())
        } else {
            format!("file {}", slipway_builder::digest::sha256_file(&item).unwrap())
        };
        tree.insert(rel, format!("{what} {:o} {}:{}", meta.mode() & 0o7777, meta.uid(), meta.gid()));
    }
    tree
}

fn walkdir(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.symlink_metadata().unwrap().is_dir() {
                stack.push(path.clone());
            }
            out.push(path);
        }
    }
    out
}

async fn check_case(
    case: PathBuf,
    native: Arc<slipway_builder::NativeBackend>,
    docker: Arc<DockerBackend>,
) -> Result<(), String> {
    let name = case.file_name().unwrap().to_string_lossy().into_owned();
    let tmp = tempfile::tempdir().unwrap();
    let mut trees = Vec::new();
    let mut configs = Vec::new();
    for (label, backend) in [
        ("native", native.clone() as Arc<dyn BuildBackend>),
        ("docker", docker.clone() as Arc<dyn BuildBackend>),
    ] {
        let image = format!("{}:v1", unique(&format!("parity-{name}-{label}")));
        let log = BuildLog::new(&name);
        backend
            .build(&request(&case, &image), &log)
            .await
            .map_err(|e| format!("{name}: {label} build failed: {e}\n{}", log.lines().join("\n")))?;
        configs.push(normalised(&inspect_config(&image)));
        trees.push(file_tree(&image, &tmp.path().join(label)));
        if label == "docker" {
            let _ = std::process::Command::new("docker").args(["rmi", "-f", &image]).output();
        }
    }
    if configs[0] != configs[1] {
        return Err(format!("{name}: configs differ\nnative: {:#?}\ndocker: {:#?}", configs[0], configs[1]));
    }
    if trees[0] != trees[1] {
        let diff: Vec<String> = trees[0]
            .iter()
            .filter(|(k, v)| trees[1].get(*k) != Some(v))
            .map(|(k, v)| format!("  native {k}: {v} / docker: {:?}", trees[1].get(k)))
            .chain(
                trees[1]
                    .iter()
                    .filter(|(k, _)| !trees[0].contains_key(*k))
                    .map(|(k, v)| format!("  docker only {k}: {v}")),
            )
            .collect();
        return Err(format!("{name}: file trees differ\n{}", diff.join("\n")));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn native_and_docker_images_agree_on_the_corpus() {
    if !registry_ready() || !docker_ready() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let native = Arc::new(native(&tmp.path().join("native")));
    let docker = Arc::new(
        DockerBackend::connect(DockerSettings {
            work_dir: tmp.path().join("docker"),
            max_context_bytes: 1 << 30,
        })
        .unwrap(),
    );
    let cases = cases();
    assert!(cases.len() >= 30, "the corpus holds {} cases", cases.len());
    let only = std::env::var("SLIPWAY_PARITY_ONLY").ok();
    let mut set = tokio::task::JoinSet::new();
    let permits = Arc::new(tokio::sync::Semaphore::new(4));
    for case in cases.into_iter().filter(|c| only.as_ref().is_none_or(|o| c.ends_with(o))) {
        let (native, docker, permits) = (native.clone(), docker.clone(), permits.clone());
        set.spawn(async move {
            let _permit = permits.acquire().await.unwrap();
            check_case(case, native, docker).await
        });
    }
    let mut failures = Vec::new();
    let mut passed = 0;
    while let Some(result) = set.join_next().await {
        match result.unwrap() {
            Ok(()) => passed += 1,
            Err(e) => failures.push(e),
        }
    }
    assert!(
        failures.is_empty(),
        "{passed} cases agree; {} differ:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}
