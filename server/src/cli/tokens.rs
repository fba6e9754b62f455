//! `slipway tokens create|list|rotate|revoke`: API tokens (the secret is shown once).

use clap::Subcommand;
use reqwest::Method;
use serde_json::{Value, json};

use super::Ctx;
use super::exit::CliResult;
use super::output::{self, Table};

#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// Create a token; its secret is printed once.
    Create {
        name: String,
        /// read, build, publish or admin (repeatable).
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
        /// Lifetime in seconds [default: does not expire].
        #[arg(long)]
        expires_in: Option<u64>,
    },
    List,
    /// Replace a token's secret; the old one stops working at once.
    Rotate {
        id: String,
    },
    Revoke {
        id: String,
    },
}

pub async fn run(ctx: &Ctx, command: TokensCommand) -> CliResult {
    let answer = match command {
        TokensCommand::Create { name, scopes, expires_in } => {
            let body = json!({ "name": name, "scopes": scopes, "expires_in_s": expires_in });
            ctx.client.call(Method::POST, "/v1/tokens", Some(&body)).await?
        }
        TokensCommand::List => ctx.client.get("/v1/tokens", &[]).await?,
        TokensCommand::Rotate { id } => {
            ctx.client.call(Method::POST, &format!("/v1/tokens/{id}/rotate"), None).await?
        }
        TokensCommand::Revoke { id } => {
            let token = ctx.client.call(Method::DELETE, &format!("/v1/tokens/{id}"), None).await?;
            json!({ "token": token })
        }
    };
    output::emit(ctx.output, &answer, || human(&answer));
    Ok(())
}

fn human(answer: &Value) -> String {
    let tokens = match answer.get("tokens") {
        Some(list) => list.as_array().cloned().unwrap_or_default(),
        None => vec![answer["token"].clone()],
    };
    let mut table = Table::new(&["id", "name", "scopes", "created", "expires", "revoked"]);
    for t in &tokens {
        let scopes: Vec<String> = t["scopes"].as_array().into_iter().flatten().map(output::text).collect();
        table.row(vec![
            output::text(&t["id"]),
            output::text(&t["name"]),
            scopes.join(","),
            output::time(&t["created_at_ms"]),
            output::time(&t["expires_at_ms"]),
            output::time(&t["revoked_at_ms"]),
        ]);
    }
    let mut text = table.render();
    if let Some(secret) = answer["secret"].as_str() {
        text.push_str(&format!("\nsecret (shown only now): {secret}\n"));
    }
    text
}
