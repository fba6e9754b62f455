//! `slipway health [<app>] [--watch]`: instance health as a colored table, redrawn in place
//! on every change the server's event stream announces while watching.

use std::time::Duration;

use clap::Args;
use console::Term;
use futures::{FutureExt, StreamExt};
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
    /// Redraw whenever a status changes, until interrupted (follows the server's event
    /// stream; with `-o json`, one compact JSON line per redraw).
    #[arg(long)]
    pub watch: bool,
}

/// Transitions arriving this close together are drawn as one redraw: a correlated fault
/// flips hundreds of instances within a moment.
const SETTLE: Duration = Duration::from_millis(250);
/// Wait before reopening an event stream the server ended.
const RECONNECT: Duration = Duration::from_secs(2);

pub async fn run(ctx: &Ctx, args: HealthArgs) -> CliResult {
    if !args.watch {
        let (answer, text) = fetch(ctx, args.app.as_deref()).await?;
        output::emit(ctx.output, &answer, || text);
        return Ok(());
    }
    let term = Term::stdout();
    let in_place = term.is_term() && ctx.output == OutputFormat::Human;
    let events_path = match &args.app {
        Some(app) => format!("/v1/health/events?app={app}"),
        None => "/v1/health/events".to_owned(),
    };
    let mut drawn = 0;
    loop {
        // The stream opens before the snapshot is read, so no change falls between the two.
        let mut events = Box::pin(ctx.client.events(&events_path).await?);
        let mut live = true;
        while live {
            let (answer, text) = fetch(ctx, args.app.as_deref()).await?;
            match ctx.output {
                OutputFormat::Json => println!("{}", serde_json::to_string(&answer).unwrap_or_default()),
                OutputFormat::Human if in_place => {
                    let _ = term.clear_last_lines(drawn);
                    let stamp = output::time(&Value::from(crate::storage::now_ms()));
                    let frame = format!("{text}\nupdated {stamp} UTC, live (Ctrl-C to stop)\n");
                    drawn = frame.lines().count();
                    let _ = term.write_str(&frame);
                }
                OutputFormat::Human => println!("{text}"),
            }
            tokio::select! {
                event = events.next() => {
                    live = event.is_some();
                    tokio::time::sleep(SETTLE).await;
                    // Whatever else arrived meanwhile is covered by the one redraw.
                    while live {
                        match events.next().now_or_never() {
                            Some(Some(_)) => {}
                            Some(None) => live = false,
                            None => break,
                        }
                    }
                }
                _ = tokio::signal::ctrl_c() => return Ok(()),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(RECONNECT) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
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
