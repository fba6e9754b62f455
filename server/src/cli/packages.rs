//! `slipway packages` (tag queries) and `slipway tag` (adding and removing tags).

use clap::Args;
use reqwest::Method;
use serde_json::{Value, json};

use super::Ctx;
use super::exit::{CliError, CliResult};
use super::output::{self, Table};

#[derive(Debug, Args)]
pub struct PackagesArgs {
    pub app: String,
    /// Only packages carrying this tag (repeatable: all of them).
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    /// Only the newest match.
    #[arg(long)]
    pub latest: bool,
    /// A version range, e.g. `>=1.2.0 <2.0.0`.
    #[arg(long)]
    pub version: Option<String>,
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
}

#[derive(Debug, Args)]
pub struct TagArgs {
    pub app: String,
    pub version: String,
    /// `+tag` adds (moving an exclusive tag), `-tag` removes.
    #[arg(required = true, allow_hyphen_values = true, value_name = "+TAG|-TAG")]
    pub changes: Vec<String>,
}

pub async fn list(ctx: &Ctx, args: PackagesArgs) -> CliResult {
    let mut query = vec![("tags", args.tags.join(",")), ("limit", args.limit.to_string())];
    if let Some(range) = &args.version {
        query.push(("version", range.clone()));
    }
    if args.latest {
        query.push(("latest", "true".into()));
    }
    let path = format!("/v1/apps/{}/packages", args.app);
    let answer = match ctx.client.get(&path, &query).await {
        Err(CliError::Api { status: 404, code, message, hint: None }) => {
            let hint = unknown_tags(ctx, &args.app, &args.tags).await;
            return Err(CliError::Api { status: 404, code, message, hint });
        }
        other => other?,
    };
    let items: Vec<Value> = if args.latest {
        vec![answer.clone()]
    } else {
        answer["items"].as_array().cloned().unwrap_or_default()
    };
    if items.is_empty()
        && let Some(hint) = unknown_tags(ctx, &args.app, &args.tags).await
    {
        eprintln!("{hint}");
    }
    output::emit(ctx.output, &answer, || {
        let mut table = Table::new(&["version", "digest", "size", "created", "by"]);
        for p in &items {
            table.row(vec![
                output::text(&p["version"]),
                short_digest(&p["digest"]),
                output::bytes(&p["size_bytes"]),
                output::time(&p["created_at_ms"]),
                output::text(&p["creator"]),
            ]);
        }
        if table.is_empty() { format!("no packages of {} match\n", args.app) } else { table.render() }
    });
    Ok(())
}

/// The hint for a query naming a tag no version of the app carries, most often a typo.
async fn unknown_tags(ctx: &Ctx, app: &str, wanted: &[String]) -> Option<String> {
    let known = ctx.client.get(&format!("/v1/apps/{app}/tags"), &[]).await.ok()?;
    let known: Vec<&str> = known["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| t["versions"].as_i64().unwrap_or(0) > 0)
        .filter_map(|t| t["tag"].as_str())
        .collect();
    let unknown: Vec<&str> = wanted.iter().map(String::as_str).filter(|t| !known.contains(t)).collect();
    if unknown.is_empty() {
        return None;
    }
    let known = if known.is_empty() { "none".to_owned() } else { known.join(", ") };
    Some(format!("no version of {app} carries tag `{}`; tags in use: {known}", unknown.join("`, `")))
}

pub async fn tag(ctx: &Ctx, args: TagArgs) -> CliResult {
    let mut changes = Vec::new();
    for change in &args.changes {
        let (method, tag) = match change.split_at_checked(1) {
            Some(("+", tag)) if !tag.is_empty() => (Method::PUT, tag),
            Some(("-", tag)) if !tag.is_empty() => (Method::DELETE, tag),
            _ => {
                return Err(CliError::Usage(format!(
                    "`{change}`: write +TAG to add a tag or -TAG to remove one"
                )));
            }
        };
        changes.push((method, tag));
    }
    let mut results = Vec::new();
    let mut lines = Vec::new();
    for (method, tag) in changes {
        let adding = method == Method::PUT;
        let path = format!("/v1/apps/{}/packages/{}/tags/{tag}", args.app, args.version);
        let answer = ctx.client.call(method, &path, None).await?;
        lines.push(match (adding, &answer["moved_from"], answer["removed"].as_bool()) {
            (true, Value::String(from), _) => format!("+{tag} (moved from {from})"),
            (true, _, _) => format!("+{tag}"),
            (false, _, Some(false)) => format!("-{tag} (it was not on {})", args.version),
            (false, _, _) => format!("-{tag}"),
        });
        results.push(answer);
    }
    output::emit(ctx.output, &json!(results), || {
        format!("{} {}: {}\n", args.app, args.version, lines.join(", "))
    });
    Ok(())
}

fn short_digest(digest: &Value) -> String {
    let text = output::text(digest);
    match text.strip_prefix("sha256:") {
        Some(hex) if hex.len() > 12 => format!("sha256:{}", &hex[..12]),
        _ => text,
    }
}
