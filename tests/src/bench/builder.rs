//! `builder`: the native backend against `docker build` (legacy builder), BuildKit (Docker
//! 20.10's embedded one through `/usr/bin/docker`) and `buildah bud --layers`, in the same
//! run on the same generated context (2,000 files, 100 MB, half random bytes, half text):
//! cold build, rebuild with nothing changed, rebuild with one file changed; then pushes of
//! layers the registry already has, and where the native cold build's time goes.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use serde_json::{Value, json};
use slipway_builder::{BuildLog, BuildRequest, NativeBackend, NativeSettings, SourceSpec};

const DOCKERFILE: &str =
    "ARG BASE\nFROM ${BASE}\nWORKDIR /app\nCOPY src/ /app/src/\nENV APP=bench\nCMD [\"ls\", \"/app/src\"]\n";
/// Debian's 20.10 client drives the daemon's embedded BuildKit; the 28.x client on PATH does not.
const DOCKER_20: &str = "/usr/bin/docker";

pub async fn run(quick: bool) -> anyhow::Result<Value> {
    let registry = std::env::var("SLIPWAY_TEST_REGISTRY").unwrap_or_else(|_| "127.0.0.1:5000".into());
    let base = std::env::var("SLIPWAY_TEST_BASE_IMAGE")
        .unwrap_or_else(|_| format!("{registry}/slipway-test/busybox:latest"));
    let local_base =
        std::env::var("SLIPWAY_TEST_LOCAL_BASE").unwrap_or_else(|_| "slipway-test/busybox:latest".into());
    prerequisites()?;
    let (files, total) = if quick { (500, 25 << 20) } else { (2000, 100 << 20) };
    let dir = tempfile::tempdir()?;
    let ctx = dir.path().join("ctx");
    generate(&ctx, files, total)?;
    eprintln!("builder: context of {files} files, {} MB", total >> 20);

    // Native.
    let native = |name: &str| native_backend(&dir.path().join(name), &registry);
    let run_id = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis();
    // A repository of its own per run, so the first push really uploads.
    let image = format!("{registry}/slipway-bench/native-{run_id}:latest");
    let mut request = BuildRequest::new(SourceSpec::Dir(ctx.clone()), &image);
    request.build_args.insert("BASE".into(), base.clone());
    let first = native("a");
    // Pull the base once so the cold figure is the build, not the network (the peers have it locally).
    native("warm").build_local(&request, &BuildLog::new("bench")).await?;
    drop_caches_of(&dir.path().join("warm"));
    let started = Instant::now();
    let cold = first.build_local(&request, &BuildLog::new("bench")).await?;
    let cold_native = started.elapsed().as_secs_f64();
    eprintln!("builder: native cold {cold_native:.3} s");
    let started = Instant::now();
    let nochange = first.build_local(&request, &BuildLog::new("bench")).await?;
    let nochange_ms = started.elapsed().as_secs_f64() * 1000.0;
    anyhow::ensure!(
        nochange.layers_built == 0,
        "an unchanged rebuild built {} layers",
        nochange.layers_built
    );
    eprintln!("builder: native nothing changed {nochange_ms:.1} ms");
    let second = native("b").build_local(&request, &BuildLog::new("bench")).await?;
    let reproducible = second.manifest_digest == cold.manifest_digest;

    let log = BuildLog::new("bench");
    let pushed =
        slipway_builder::BuildBackend::build(&first, &request, &log).await?.push.context("pushed")?;
    let started = Instant::now();
    let repush =
        slipway_builder::BuildBackend::build(&native("c"), &request, &log).await?.push.context("pushed")?;
    let repush_s = started.elapsed().as_secs_f64();
    eprintln!(
        "builder: first push {} bytes, second push {} bytes",
        pushed.uploaded_bytes, repush.uploaded_bytes
    );

    touch_one(&ctx)?;
    let started = Instant::now();
    let onefile = first.build_local(&request, &BuildLog::new("bench")).await?;
    let onefile_native = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let onefile_push =
        slipway_builder::BuildBackend::build(&first, &request, &log).await?.push.context("pushed")?;
    let onefile_push_s = started.elapsed().as_secs_f64();
    eprintln!(
        "builder: native one file changed {onefile_native:.3} s, {} layers rebuilt",
        onefile.layers_built
    );

    // Peers, on the same context (reset to its first state).
    generate(&ctx, files, total)?;
    let docker_args = [("BASE", local_base.as_str())];
    let legacy = peer_rounds(
        &ctx,
        |ctx| docker_build(ctx, false, &docker_args, true),
        |ctx| docker_build(ctx, false, &docker_args, false),
    )?;
    eprintln!("builder: docker legacy {legacy:?}");
    generate(&ctx, files, total)?;
    let buildkit = peer_rounds(
        &ctx,
        |ctx| {
            sh(DOCKER_20, &["builder", "prune", "-af"], &[])?;
            docker_build(ctx, true, &docker_args, false)
        },
        |ctx| docker_build(ctx, true, &docker_args, false),
    )?;
    eprintln!("builder: buildkit {buildkit:?}");
    generate(&ctx, files, total)?;
    let buildah = match which("buildah") {
        true => Some(peer_rounds(
            &ctx,
            |ctx| buildah_build(ctx, &base, true),
            |ctx| buildah_build(ctx, &base, false),
        )?),
        false => None,
    };
    eprintln!("builder: buildah {buildah:?}");

    let stages = stage_breakdown(&ctx)?;
    let best_peer = [Some(legacy.0), Some(buildkit.0), buildah.map(|b| b.0)]
        .into_iter()
        .flatten()
        .fold(f64::MAX, f64::min);
    Ok(json!({
        "bench": "builder",
        "files": files,
        "context_bytes": total,
        "cold_native_s": round3(cold_native),
        "cold_docker_s": round3(legacy.0),
        "cold_speedup": round3(legacy.0 / cold_native),
        "cold_buildkit_s": round3(buildkit.0),
        "cold_buildah_s": buildah.map(|b| round3(b.0)),
        "cold_speedup_vs_best_peer": round3(best_peer / cold_native),
        "nochange_rebuild_ms": round3(nochange_ms),
        "nochange_docker_ms": round3(legacy.1 * 1000.0),
        "nochange_buildkit_ms": round3(buildkit.1 * 1000.0),
        "nochange_buildah_ms": buildah.map(|b| round3(b.1 * 1000.0)),
        "onefile_rebuild_s": round3(onefile_native),
        "onefile_native_s": round3(onefile_native),
        "onefile_docker_s": round3(legacy.2),
        "onefile_buildkit_s": round3(buildkit.2),
        "onefile_buildah_s": buildah.map(|b| round3(b.2)),
        "onefile_layers_rebuilt": onefile.layers_built,
        "first_push_bytes": pushed.uploaded_bytes,
        "repush_layer_bytes": repush.uploaded_bytes,
        "repush_s": round3(repush_s),
        "onefile_push_bytes": onefile_push.uploaded_bytes,
        "onefile_push_blobs": onefile_push.uploaded_blobs,
        "onefile_push_s": round3(onefile_push_s),
        "reproducible": reproducible,
        "stages": stages,
    }))
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

fn native_backend(dir: &Path, registry: &str) -> NativeBackend {
    std::fs::create_dir_all(dir.join("store")).expect("scratch directory");
    let store =
        object_store::local::LocalFileSystem::new_with_prefix(dir.join("store")).expect("local store");
    NativeBackend::new(
        Arc::new(store),
        NativeSettings {
            work_dir: dir.join("work"),
            max_context_bytes: 1 << 30,
            insecure_registries: vec![registry.to_string()],
        },
    )
}

/// The warm-up store is not needed after it fetched the base image once.
fn drop_caches_of(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
}

fn which(tool: &str) -> bool {
    Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().is_ok_and(|o| o.status.success())
}

fn prerequisites() -> anyhow::Result<()> {
    for tool in [DOCKER_20, "skopeo"] {
        anyhow::ensure!(
            Path::new(tool).exists() || which(tool),
            "`{tool}` is missing (tests/run.sh installs it)"
        );
    }
    if !which("buildah") {
        eprintln!("builder: buildah is missing (apt-get install buildah); its figures will be null");
    }
    Ok(())
}

/// Writes the context: half the bytes random, half text, in `files` files under `src/`.
fn generate(ctx: &Path, files: usize, total: usize) -> anyhow::Result<()> {
    let _ = std::fs::remove_dir_all(ctx);
    std::fs::create_dir_all(ctx.join("src"))?;
    std::fs::write(ctx.join("Dockerfile"), DOCKERFILE)?;
    let size = total / files;
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut random = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for i in 0..files {
        let dir = ctx.join("src").join(format!("d{:02}", i % 40));
        std::fs::create_dir_all(&dir)?;
        let data: Vec<u8> = if i % 2 == 0 {
            (0..size / 8).flat_map(|_| random().to_le_bytes()).collect()
        } else {
            let line = format!("line of text number {i} for the builder benchmark, fairly compressible\n");
            line.bytes().cycle().take(size).collect()
        };
        std::fs::write(dir.join(format!("f{i:05}.dat")), data)?;
    }
    Ok(())
}

fn touch_one(ctx: &Path) -> anyhow::Result<()> {
    let path = ctx.join("src/d07/f00007.dat");
    let mut data = std::fs::read(&path)?;
    data.extend_from_slice(b"one more line\n");
    std::fs::write(path, data)?;
    Ok(())
}

/// (cold, nothing changed, one file changed) seconds for one peer.
fn peer_rounds(
    ctx: &Path,
    cold: impl Fn(&Path) -> anyhow::Result<()>,
    warm: impl Fn(&Path) -> anyhow::Result<()>,
) -> anyhow::Result<(f64, f64, f64)> {
    let time = |f: &dyn Fn(&Path) -> anyhow::Result<()>| -> anyhow::Result<f64> {
        let started = Instant::now();
        f(ctx)?;
        Ok(started.elapsed().as_secs_f64())
    };
    let c = time(&cold)?;
    let n = time(&warm)?;
    touch_one(ctx)?;
    let o = time(&warm)?;
    Ok((c, n, o))
}

fn sh(cmd: &str, args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<()> {
    let out =
        Command::new(cmd).args(args).envs(env.iter().copied()).output().with_context(|| cmd.to_string())?;
    if !out.status.success() {
        bail!("{cmd} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

fn docker_build(ctx: &Path, buildkit: bool, args: &[(&str, &str)], no_cache: bool) -> anyhow::Result<()> {
    let mut argv = vec!["build".to_string(), "-q".into(), "-t".into(), "slipway-bench/peer:latest".into()];
    for (k, v) in args {
        argv.extend(["--build-arg".into(), format!("{k}={v}")]);
    }
    if no_cache {
        argv.push("--no-cache".into());
    }
    argv.push(ctx.to_string_lossy().into_owned());
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    sh(DOCKER_20, &argv, &[("DOCKER_BUILDKIT", if buildkit { "1" } else { "0" })])
}

fn buildah_build(ctx: &Path, base: &str, fresh: bool) -> anyhow::Result<()> {
    let root = std::env::temp_dir().join("slipway-bench-buildah");
    if fresh {
        let _ = Command::new("buildah").args(["--root", &root.to_string_lossy(), "rmi", "-af"]).output();
        let _ = std::fs::remove_dir_all(&root);
        sh("buildah", &["--root", &root.to_string_lossy(), "pull", "--tls-verify=false", "-q", base], &[])?;
    }
    let ctx_s = ctx.to_string_lossy();
    let build_arg = format!("BASE={base}");
    sh(
        "buildah",
        &[
            "--root",
            &root.to_string_lossy(),
            "bud",
            "--layers",
            "-q",
            "--tls-verify=false",
            "--build-arg",
            &build_arg,
            "-t",
            "slipway-bench/peer",
            &ctx_s,
        ],
        &[],
    )
}

/// Where a cold COPY of the context goes, stage by stage, and the machine's floor.
fn stage_breakdown(ctx: &Path) -> anyhow::Result<Value> {
    use slipway_builder::layer::{Content, LayerEntry, compress, write_tar};
    let mut paths = Vec::new();
    for entry in walk(&ctx.join("src"))? {
        paths.push(entry);
    }
    paths.sort();
    let started = Instant::now();
    let mut bytes = 0usize;
    for p in &paths {
        bytes += std::fs::read(p)?.len();
    }
    let read_s = started.elapsed().as_secs_f64();
    let started = Instant::now();
    for p in &paths {
        slipway_builder::digest::sha256_file(p)?;
    }
    let hash_s = started.elapsed().as_secs_f64();
    let entries: Vec<LayerEntry> = paths
        .iter()
        .map(|p| LayerEntry {
            path: p.strip_prefix(ctx).unwrap_or(p).to_string_lossy().into_owned(),
            content: Content::File(p.clone()),
            mode: 0o644,
            uid: 0,
            gid: 0,
        })
        .collect();
    let started = Instant::now();
    let tar = write_tar(&entries, 0)?;
    let tar_s = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let blob = compress(&tar);
    let compress_s = started.elapsed().as_secs_f64();
    let scratch = tempfile::NamedTempFile::new()?;
    let started = Instant::now();
    std::fs::write(scratch.path(), &blob.blob)?;
    let write_s = started.elapsed().as_secs_f64();
    let started = Instant::now();
    std::fs::File::open(scratch.path())?.sync_all()?;
    let fsync_s = started.elapsed().as_secs_f64();
    Ok(json!({
        "bytes": bytes,
        "read_page_cache_s": round3(read_s),
        "sha256_files_1core_s": round3(hash_s),
        "tar_s": round3(tar_s),
        "gzip_and_digests_all_cores_s": round3(compress_s),
        "compressed_bytes": blob.layer.size,
        "write_blob_s": round3(write_s),
        "fsync_blob_s": round3(fsync_s),
    }))
}

fn walk(dir: &Path) -> anyhow::Result<Vec<std::path::PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() { out.extend(walk(&path)?) } else { out.push(path) }
    }
    Ok(out)
}
