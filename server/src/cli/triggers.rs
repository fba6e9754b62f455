//! `slipway triggers create|list|show|delete`: webhooks from CI systems that start builds.

use std::path::PathBuf;

use clap::Subcommand;
use reqwest::Method;
use serde_json::{Value, json};

use super::Ctx;
use super::document;
use super::exit::CliResult;
use super::output::{self, Table};

#[derive(Debug, Subcommand)]
pub enum TriggersCommand {
    /// Create a trigger from a file (YAML or JSON: app, adapter, branches, tags,
    /// repository_url, components); its secret is printed once.
    Create {
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
    },
    List,
    Show {
        id: String,
    },
    Delete {
        id: String,
    },
}

pub async fn run(ctx: &Ctx, command: TriggersCommand) -> CliResult {
    let answer = match command {
        TriggersCommand::Create { file } => {
            let body = document::read(&file)?;
            ctx.client.call(Method::POST, "/v1/triggers", Some(&body)).await?
        }
        TriggersCommand::List => ctx.client.get("/v1/triggers", &[]).await?,
        TriggersCommand::Show { id } => {
            json!({ "trigger": ctx.client.get(&format!("/v1/triggers/{id}"), &[]).await? })
        }
        TriggersCommand::Delete { id } => {
            ctx.client.call(Method::DELETE, &format!("/v1/triggers/{id}"), None).await?;
            json!({ "deleted": id })
        }
    };
    output::emit(ctx.output, &answer, || human(ctx, &answer));
    Ok(())
}

fn human(ctx: &Ctx, answer: &Value) -> String {
    if let Some(id) = answer["deleted"].as_str() {
        return format!("trigger {id} deleted\n");
    }
    let triggers = match answer.get("triggers") {
        Some(list) => list.as_array().cloned().unwrap_or_default(),
        None => vec![answer["trigger"].clone()],
    };
    let mut table = Table::new(&["id", "app", "adapter", "branches", "tags", "components"]);
    for t in &triggers {
        let list =
            |v: &Value| v.as_array().into_iter().flatten().map(output::text).collect::<Vec<_>>().join(",");
        let components: Vec<String> =
            t["components"].as_array().into_iter().flatten().map(|c| output::text(&c["name"])).collect();
        table.row(vec![
            output::text(&t["id"]),
            output::text(&t["app"]),
            output::text(&t["adapter"]),
            list(&t["branches"]),
            list(&t["tags"]),
            components.join(","),
        ]);
    }
    let mut text = table.render();
    if let Some(secret) = answer["secret"].as_str() {
        let id = output::text(&answer["trigger"]["id"]);
        text.push_str(&format!(
            "\nwebhook URL: {}/v1/triggers/{id}\nsecret (shown only now): {secret}\n",
            ctx.client.server()
        ));
    }
    text
}
