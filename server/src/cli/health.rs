//! `slipway health [<app>] [--watch]`: instance health as a colored table, redrawn in place
//! while watching.

use std::time::Duration;

use clap::Args;
use console::Term;
use serde_json::Value;

use super::Ctx;
use super::exit::CliResult;
use super::output::{self, OutputFormat, Table};

/// Column order: worst first, as a person on call reads it.
const STATUSES: [&str; 6] = ["degraded", "missing", "progressing", "unknown", "suspended", "healthy"];

#[derive(Debug, Args)]
pub struct HealthArgs {
    /// One app's instances; without it, a summary per app.
    pub app: Option<String>,
    /// Redraw until interrupted.
    #[arg(long)]
    pub watch: bool,
    /// Seconds between redraws.
    #[arg(long, default_value_t = 2.0)]
    pub interval: f64,
}

pub async fn run(ctx: &Ctx, args: HealthArgs) -> CliResult {
    let term = Term::stdout();
    let in_place = args.watch && term.is_term() && ctx.output == OutputFormat::Human;
    let mut drawn = 0;
    loop {
        let (answer, text) = fetch(ctx, args.app.as_deref()).await?;
        match ctx.output {
            OutputFormat::Json => output::emit(ctx.output, &answer, String::new),
            OutputFormat::Human if in_place => {
                let _ = term.clear_last_lines(drawn);
                let stamp = output::time(&Value::from(crate::storage::now_ms()));
                let frame =
                    format!("{text}\nupdated {stamp} UTC, every {}s (Ctrl-C to stop)\n", args.interval);
                drawn = frame.lines().count();
                let _ = term.write_str(&frame);
            }
            OutputFormat::Human => print!("{text}"),
        }
        if !args.watch {
            return Ok(());
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs_f64(args.interval.max(0.2))) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
        if !in_place && ctx.output == OutputFormat::Human {
            println!();
        }
    }
}

async fn fetch(ctx: &Ctx, app: Option<&str>) -> CliResult<(Value, String)> {
    Ok(match app {
        None => {
            let answer = ctx.client.get("/v1/health/summary", &[("groupBy", "app".into())]).await?;
            let text = summary_table(&answer);
            (answer, text)
        }
        Some(app) => {
            let answer = ctx.client.get(&format!("/v1/apps/{app}/instances"), &[]).await?;
            let text = app_table(app, &answer);
            (answer, text)
        }
    })
}

fn summary_table(answer: &Value) -> String {
    let mut header = vec!["app", "total"];
    header.extend(STATUSES);
    let mut table = Table::new(&header);
    for (app, counts) in answer["groups"].as_object().into_iter().flatten() {
        let mut row = vec![app.clone(), output::text(&counts["total"])];
        for status in STATUSES {
            row.push(match counts[status].as_u64() {
                Some(n) if n > 0 => output::state(status).replace(status, &n.to_string()),
                _ => "0".into(),
            });
        }
        table.row(row);
    }
    if table.is_empty() {
        "no instances registered (slipway instances register -f FILE)\n".into()
    } else {
        table.render()
    }
}

fn app_table(app: &str, answer: &Value) -> String {
    let mut table =
        Table::new(&["app instance", "version", "cluster", "stage", "status", "components", "reasons"]);
    for ai in answer["appInstances"].as_array().into_iter().flatten() {
        let components: Vec<String> = ai["components"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                format!(
                    "{}:{}",
                    output::text(&c["component"]),
                    output::state(c["status"].as_str().unwrap_or("unknown"))
                )
            })
            .collect();
        let reasons: Vec<String> = ai["reasons"].as_array().into_iter().flatten().map(output::text).collect();
        table.row(vec![
            output::text(&ai["id"]),
            output::text(&ai["version"]),
            output::text(&ai["cluster"]),
            output::text(&ai["stage"]),
            output::state(ai["status"].as_str().unwrap_or("unknown")),
            components.join(" "),
            reasons.join("; "),
        ]);
    }
    if table.is_empty() { format!("no instances of {app} registered\n") } else { table.render() }
}
