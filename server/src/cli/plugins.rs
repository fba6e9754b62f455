//! `slipway plugins install|list|revisions|activate`.

use std::path::PathBuf;

use clap::Subcommand;
use reqwest::Method;
use serde_json::{Value, json};

use super::Ctx;
use super::exit::{CliError, CliResult};
use super::output::{self, Table};

#[derive(Debug, Subcommand)]
pub enum PluginsCommand {
    /// Install a plugin package (`.tar.gz`); its scripts become new revisions.
    Install { file: PathBuf },
    /// Installed packages and their script revisions (* marks the active one).
    List,
    /// Every revision of one script, `kind/name` (e.g. component/microservice).
    Revisions { script: String },
    /// Make a revision the one that runs: `kind/name@revision`.
    Activate { target: String },
}

pub async fn run(ctx: &Ctx, command: PluginsCommand) -> CliResult {
    match command {
        PluginsCommand::Install { file } => {
            let body = std::fs::read(&file)
                .map_err(|e| CliError::Usage(format!("cannot read {}: {e}", file.display())))?;
            let request = ctx
                .client
                .request(Method::POST, "/v1/plugins")
                .header(reqwest::header::CONTENT_TYPE, "application/gzip")
                .body(body);
            let installed = ctx.client.json(request).await?;
            output::emit(ctx.output, &installed, || {
                let scripts: Vec<String> = installed["scripts"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|s| output::text(&s["triple"]))
                    .collect();
                format!(
                    "installed {} {}: {}\n",
                    output::text(&installed["name"]),
                    output::text(&installed["version"]),
                    scripts.join(", ")
                )
            });
        }
        PluginsCommand::List => {
            let answer = ctx.client.get("/v1/plugins", &[]).await?;
            output::emit(ctx.output, &answer, || {
                let mut table = Table::new(&["script", "package", "file", "active"]);
                for package in answer["packages"].as_array().into_iter().flatten() {
                    for script in package["scripts"].as_array().into_iter().flatten() {
                        table.row(vec![
                            output::text(&script["triple"]),
                            format!(
                                "{}@{}",
                                output::text(&package["name"]),
                                output::text(&package["version"])
                            ),
                            output::text(&script["file"]),
                            if script["active"] == true { "*".into() } else { String::new() },
                        ]);
                    }
                }
                table.render()
            });
        }
        PluginsCommand::Revisions { script } => {
            let (kind, name) = split_script(&script)?;
            let answer = ctx.client.get(&format!("/v1/plugins/{kind}/{name}"), &[]).await?;
            output::emit(ctx.output, &answer, || revisions_table(&answer));
        }
        PluginsCommand::Activate { target } => {
            let (script, revision) = target
                .rsplit_once('@')
                .and_then(|(script, revision)| Some((script, revision.parse::<u32>().ok()?)))
                .ok_or_else(|| {
                    CliError::Usage(format!(
                        "`{target}`: expected kind/name@revision, e.g. component/microservice@2"
                    ))
                })?;
            let (kind, name) = split_script(script)?;
            let body = json!({ "revision": revision });
            let answer = ctx
                .client
                .call(Method::PUT, &format!("/v1/plugins/{kind}/{name}/active"), Some(&body))
                .await?;
            output::emit(ctx.output, &answer, || format!("{kind}/{name}: revision {revision} is active\n"));
        }
    }
    Ok(())
}

fn split_script(script: &str) -> CliResult<(&str, &str)> {
    script
        .split_once('/')
        .filter(|(kind, name)| !kind.is_empty() && !name.is_empty() && !name.contains('/'))
        .ok_or_else(|| CliError::Usage(format!("`{script}`: expected kind/name, e.g. status/http")))
}

fn revisions_table(answer: &Value) -> String {
    let mut table = Table::new(&["revision", "package", "file", "installed", "active"]);
    for r in answer["revisions"].as_array().into_iter().flatten() {
        table.row(vec![
            output::text(&r["revision"]),
            format!("{}@{}", output::text(&r["package"]), output::text(&r["package_version"])),
            output::text(&r["file"]),
            output::time(&r["installed_at_ms"]),
            if r["revision"] == answer["active"] { "*".into() } else { String::new() },
        ]);
    }
    table.render()
}
