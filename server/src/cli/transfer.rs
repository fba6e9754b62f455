//! `slipway download`, `slipway export` and `slipway import`: package files and offline
//! archives streamed between the server and local files, never held whole in memory.

use std::path::{Path, PathBuf};

use clap::Args;
use futures::StreamExt;
use reqwest::Method;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::Ctx;
use super::exit::{CliError, CliResult};
use super::output;

const CHUNK_BYTES: usize = 1 << 20;

#[derive(Debug, Args)]
pub struct PackageRef {
    pub app: String,
    /// An exact version; without it, the newest version carrying every `--tag`.
    pub version: Option<String>,
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    /// The file to write [default: named after the package].
    #[arg(long)]
    pub file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    pub app: String,
    /// An offline archive written by `slipway export`.
    pub file: PathBuf,
}

/// The package `.tar.gz` (its manifest and component files; images stay in the registry).
pub async fn download(ctx: &Ctx, args: PackageRef) -> CliResult {
    fetch(ctx, args, "download", "tar.gz").await
}

/// The package with all its images, to carry to a site without access to the registry.
pub async fn export(ctx: &Ctx, args: PackageRef) -> CliResult {
    fetch(ctx, args, "export", "offline.tar").await
}

async fn fetch(ctx: &Ctx, args: PackageRef, action: &str, extension: &str) -> CliResult {
    let version = match &args.version {
        Some(version) => version.clone(),
        None => {
            let query = [("tags", args.tags.join(",")), ("latest", "true".into())];
            let latest = ctx.client.get(&format!("/v1/apps/{}/packages", args.app), &query).await?;
            output::text(&latest["version"])
        }
    };
    let target = args.file.unwrap_or_else(|| format!("{}-{version}.{extension}", args.app).into());
    let path = format!("/v1/apps/{}/packages/{version}/{action}", args.app);
    let response = ctx.client.send(ctx.client.request(Method::GET, &path)).await?;
    let size = write_stream(ctx, response, &target).await?;
    let done = json!({ "app": args.app, "version": version, "file": target, "size_bytes": size });
    output::emit(ctx.output, &done, || {
        format!("{} {version} → {} ({})\n", args.app, target.display(), output::bytes(&done["size_bytes"]))
    });
    Ok(())
}

/// Writes to a temporary name first, so an interrupted transfer never looks complete.
async fn write_stream(ctx: &Ctx, response: reqwest::Response, target: &Path) -> CliResult<u64> {
    let partial = target.with_extension("partial");
    let failed = |e: std::io::Error| CliError::Failed(format!("writing {}: {e}", partial.display()));
    let mut file = tokio::fs::File::create(&partial).await.map_err(failed)?;
    let mut body = response.bytes_stream();
    let mut size = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| ctx.client.transport(e))?;
        size += chunk.len() as u64;
        file.write_all(&chunk).await.map_err(failed)?;
    }
    file.flush().await.map_err(failed)?;
    tokio::fs::rename(&partial, target).await.map_err(failed)?;
    Ok(size)
}

pub async fn import(ctx: &Ctx, args: ImportArgs) -> CliResult {
    let file = tokio::fs::File::open(&args.file)
        .await
        .map_err(|e| CliError::Usage(format!("cannot open {}: {e}", args.file.display())))?;
    let chunks = futures::stream::unfold(file, |mut file| async move {
        let mut buffer = bytes::BytesMut::with_capacity(CHUNK_BYTES);
        match file.read_buf(&mut buffer).await {
            Ok(0) => None,
            Ok(_) => Some((Ok(buffer.freeze()), file)),
            Err(e) => Some((Err(e), file)),
        }
    });
    let path = format!("/v1/apps/{}/packages:import", args.app);
    let request = ctx
        .client
        .request(Method::POST, &path)
        .header(reqwest::header::CONTENT_TYPE, "application/x-tar")
        .body(reqwest::Body::wrap_stream(chunks));
    let imported = ctx.client.json(request).await?;
    output::emit(ctx.output, &imported, || {
        format!("imported {} {}\n", args.app, output::text(&imported["version"]))
    });
    Ok(())
}
