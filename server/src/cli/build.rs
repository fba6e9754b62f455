//! `slipway build <dir|git-url>`: reads the app build file, hands the source to the server
//! (a directory is uploaded as a `.tar.gz`; a git URL is passed on, pinned to the commit the
//! CLI read the build file from), submits the build and follows it to the end.

use std::path::Path;
use std::process::Command;

use clap::Args;
use reqwest::Method;
use serde_json::{Value, json};

use super::Ctx;
use super::archive;
use super::build_watch;
use super::buildfile::AppBuildFile;
use super::exit::{CliError, CliResult};
use super::output::{self, OutputFormat};

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// A local directory, or a git URL (https://, ssh://, git://, file://, git@host:…, or *.git).
    pub source: String,
    /// Branch, tag or commit of a git source [default: its default branch].
    #[arg(long = "ref")]
    pub reference: Option<String>,
    /// A tag to publish, added to the build file's `tags` (repeatable).
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    /// `auto` (the highest version with its patch bumped) or an exact version.
    #[arg(long)]
    pub version: Option<String>,
    /// Print the accepted build and return without following it.
    #[arg(long)]
    pub detach: bool,
}

pub async fn run(ctx: &Ctx, args: BuildArgs) -> CliResult {
    let (file, source) = if is_git_url(&args.source) {
        git_source(&args.source, args.reference.as_deref())?
    } else {
        if args.reference.is_some() {
            return Err(CliError::Usage("--ref applies to git sources only".into()));
        }
        let dir = Path::new(&args.source);
        let (_, file) = AppBuildFile::find(dir)?;
        (file, upload(ctx, dir).await?)
    };
    let mut tags = file.tags.clone();
    tags.extend(args.tags.iter().filter(|t| !file.tags.contains(t)).cloned());
    let request = json!({
        "version": args.version.or(file.version.clone()).unwrap_or_else(|| "auto".into()),
        "tags": tags,
        "components": file.components(&source),
    });
    let path = format!("/v1/apps/{}/builds", file.app);
    let accepted = ctx.client.call(Method::POST, &path, Some(&request)).await?;
    let id = accepted["id"].as_str().unwrap_or_default().to_owned();
    if args.detach {
        output::emit(ctx.output, &accepted, || format!("build {id} accepted ({})\n", ctx.client.server()));
        return Ok(());
    }
    if ctx.output == OutputFormat::Human {
        eprintln!("build {id}: {} with {} components", file.app, file.components.len());
    }
    let finished = build_watch::follow(ctx, &id).await?;
    output::emit(ctx.output, &finished, || summary(&finished));
    match finished["state"].as_str() {
        Some("succeeded") => Ok(()),
        state => Err(CliError::Failed(format!(
            "build {id} {}: {}",
            state.unwrap_or("ended"),
            output::text(&finished["reason"])
        ))),
    }
}

async fn upload(ctx: &Ctx, dir: &Path) -> CliResult<Value> {
    let owned = dir.to_path_buf();
    let packed = tokio::task::spawn_blocking(move || archive::pack(&owned))
        .await
        .map_err(|e| CliError::Failed(format!("packing the source: {e}")))?
        .map_err(|e| CliError::Usage(format!("cannot pack {}: {e}", dir.display())))?;
    if ctx.output == OutputFormat::Human {
        eprintln!("uploading {} ({})", dir.display(), output::bytes(&json!(packed.len())));
    }
    let request = ctx
        .client
        .request(Method::POST, "/v1/sources")
        .header(reqwest::header::CONTENT_TYPE, "application/gzip")
        .body(packed);
    let uploaded = ctx.client.json(request).await?;
    Ok(json!({ "upload": { "id": uploaded["id"] } }))
}

pub fn is_git_url(source: &str) -> bool {
    ["https://", "http://", "ssh://", "git://", "file://", "git@"].iter().any(|p| source.starts_with(p))
        || source.ends_with(".git")
}

/// Clones the repository to read its build file, and names the exact commit read.
fn git_source(url: &str, reference: Option<&str>) -> CliResult<(AppBuildFile, Value)> {
    let dir = tempfile::tempdir().map_err(|e| CliError::Failed(format!("temporary directory: {e}")))?;
    let path = dir.path().to_str().ok_or_else(|| CliError::Failed("temporary path is not UTF-8".into()))?;
    git(url, &["clone", "--quiet", "--no-checkout", url, path])?;
    git(
        url,
        &["-C", path, "-c", "advice.detachedHead=false", "checkout", "--quiet", reference.unwrap_or("HEAD")],
    )?;
    let commit = git(url, &["-C", path, "rev-parse", "HEAD"])?;
    let (_, file) = AppBuildFile::find(dir.path())?;
    Ok((file, json!({ "git": { "url": url, "reference": commit } })))
}

fn git(url: &str, args: &[&str]) -> CliResult<String> {
    let out = Command::new("git")
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .map_err(|e| CliError::Usage(format!("reading {url} needs git: {e}")))?;
    if !out.status.success() {
        let reason = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        return Err(CliError::Usage(format!("git {}: {reason}", args[0])));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn summary(build: &Value) -> String {
    let mut table = output::Table::new(&["component", "state", "image", "digest"]);
    for c in build["components"].as_array().into_iter().flatten() {
        table.row(vec![
            output::text(&c["name"]),
            output::state(c["state"].as_str().unwrap_or("unknown")),
            output::text(&c["image"]),
            output::text(&c["digest"]),
        ]);
    }
    let mut text = table.render();
    let state = build["state"].as_str().unwrap_or("unknown");
    match build["package"]["version"].as_str() {
        Some(version) => text.push_str(&format!(
            "\n{} {} {version} published{}\n",
            output::state(state),
            output::text(&build["app"]),
            tags_suffix(&build["tags"])
        )),
        None => {
            text.push_str(&format!("\nbuild {}: {}\n", output::state(state), output::text(&build["reason"])))
        }
    }
    text
}

fn tags_suffix(tags: &Value) -> String {
    let tags: Vec<&str> = tags.as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    if tags.is_empty() { String::new() } else { format!(" with tags {}", tags.join(", ")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_urls_and_directories() {
        for url in ["https://example.com/shop.git", "git@example.com:shop", "file:///srv/shop", "../shop.git"]
        {
            assert!(is_git_url(url), "{url}");
        }
        for dir in [".", "examples/hello", "/srv/shop"] {
            assert!(!is_git_url(dir), "{dir}");
        }
    }
}
