//! The memory half of the `registry` benchmark: a valid app package of the requested size
//! (one component whose file is incompressible noise) is built on disk, uploaded through
//! `POST …/packages:upload` and downloaded again, while this process's resident set is
//! sampled. Server and client both stream, so the growth is what the registry buffers.

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use serde_json::json;
use sha2::{Digest, Sha256};
use slipway_registry::manifest::{
    APP_FORMAT, AppManifest, COMPONENT_FORMAT, ComponentEntry, ComponentManifest, MANIFEST_FILE, Source,
    component_file,
};

use super::registry::rss_kb;
use crate::server::TestServer;

/// Uploads and downloads a package of about `bytes`; returns the largest RSS growth in MB.
pub async fn measure(server: &TestServer, client: &reqwest::Client, bytes: u64) -> anyhow::Result<f64> {
    let dir = tempfile::tempdir()?;
    let package = dir.path().join("package.tar.gz");
    let (path, digest) = (package.clone(), dir.path().to_owned());
    let digest = tokio::task::spawn_blocking(move || build_package(&digest, &path, bytes)).await??;

    let baseline = rss_kb();
    let peak = Arc::new(AtomicU64::new(baseline));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, done) = (peak.clone(), done.clone());
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(rss_kb(), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    let file = tokio::fs::File::open(&package).await?;
    let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024));
    let url = server.url(&format!("/v1/apps/big/packages:upload?digest={digest}"));
    let response = client.post(url).body(body).send().await?;
    anyhow::ensure!(
        response.status() == 201,
        "upload answered {}: {}",
        response.status(),
        response.text().await?
    );
    eprintln!(
        "registry: uploaded; peak growth so far {} MB",
        (peak.load(Ordering::Relaxed) - baseline) / 1024
    );

    let response = client.get(server.url("/v1/apps/big/packages/1.0.0/download")).send().await?;
    anyhow::ensure!(response.status() == 200, "download answered {}", response.status());
    let mut stream = response.bytes_stream();
    let mut hasher = Sha256::new();
    while let Some(chunk) = stream.next().await {
        hasher.update(&chunk?);
    }
    let downloaded = format!("sha256:{}", hex::encode(hasher.finalize()));
    anyhow::ensure!(downloaded == digest, "downloaded {downloaded}, uploaded {digest}");

    done.store(true, Ordering::Relaxed);
    sampler.await?;
    let growth_kb = peak.load(Ordering::Relaxed).saturating_sub(baseline);
    Ok((growth_kb as f64 / 1024.0 * 10.0).round() / 10.0)
}

/// Writes a valid app package `big` 1.0.0 to `out` through temporary files in `dir`
/// (gzip level 0: the payload is noise) and returns its digest.
fn build_package(dir: &std::path::Path, out: &std::path::Path, bytes: u64) -> anyhow::Result<String> {
    let component_path = dir.join("component.tar.gz");
    let component = ComponentManifest {
        format: COMPONENT_FORMAT.into(),
        app: "big".into(),
        component_type: "helm".into(),
        component: "web".into(),
        version: "1.0.0".into(),
        images: vec![],
        parameters: json!({}),
        source: Source::default(),
        plugin: "component/helm/1".into(),
        created_at_ms: 0,
        creator: "bench".into(),
        inputs_digest: None,
    };
    write_tar_gz(
        &component_path,
        &serde_json::to_vec(&component)?,
        "files/noise.bin",
        bytes,
        Noise::new(bytes),
    )?;
    let component_digest = file_digest(&component_path)?;
    let component_size = std::fs::metadata(&component_path)?.len();
    let manifest = AppManifest {
        format: APP_FORMAT.into(),
        app: "big".into(),
        version: "1.0.0".into(),
        tags: vec![],
        creator: "bench".into(),
        created_at_ms: 0,
        source: Source::default(),
        components: vec![ComponentEntry {
            component_type: "helm".into(),
            component: "web".into(),
            version: "1.0.0".into(),
            digest: component_digest,
            size_bytes: component_size,
            file: component_file("web"),
        }],
    };
    let component_file_reader = std::fs::File::open(&component_path)?;
    write_tar_gz(
        out,
        &serde_json::to_vec(&manifest)?,
        &component_file("web"),
        component_size,
        component_file_reader,
    )?;
    std::fs::remove_file(&component_path)?;
    file_digest(out)
}

/// A `.tar.gz` of `manifest.json` and one entry of `size` bytes read from `content`.
fn write_tar_gz(
    out: &std::path::Path,
    manifest: &[u8],
    path: &str,
    size: u64,
    content: impl Read,
) -> anyhow::Result<()> {
    let gz = flate2::write::GzEncoder::new(std::fs::File::create(out)?, flate2::Compression::none());
    let mut tar = tar::Builder::new(gz);
    for (name, len, reader) in [
        (MANIFEST_FILE, manifest.len() as u64, Box::new(manifest) as Box<dyn Read>),
        (path, size, Box::new(content)),
    ] {
        let mut header = tar::Header::new_gnu();
        header.set_size(len);
        header.set_mode(0o644);
        tar.append_data(&mut header, name, reader)?;
    }
    tar.into_inner()?.finish()?.sync_all()?;
    Ok(())
}

/// `len` incompressible bytes (xorshift), generated as they are read.
struct Noise {
    state: u64,
    left: u64,
}

impl Noise {
    fn new(len: u64) -> Noise {
        Noise { state: 0x2545_f491_4f6c_dd1d, left: len }
    }
}

impl Read for Noise {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (buf.len() as u64).min(self.left) as usize;
        for chunk in buf[..n].chunks_mut(8) {
            self.state ^= self.state << 13;
            self.state ^= self.state >> 7;
            self.state ^= self.state << 17;
            chunk.copy_from_slice(&self.state.to_le_bytes()[..chunk.len()]);
        }
        self.left -= n as u64;
        Ok(n)
    }
}

fn file_digest(path: &std::path::Path) -> anyhow::Result<String> {
    let mut hasher = Sha256::new();
    std::io::copy(&mut std::fs::File::open(path)?, &mut hasher)?;
    Ok(format!("sha256:{}", hex::encode(hasher.finalize())))
}
