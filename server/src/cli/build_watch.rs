//! Following a build to its end: a progress line per component (state and latest log line),
//! state changes and push progress as they happen, and the log tail of a failed component.

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::Value;
use tokio::sync::mpsc;

use super::Ctx;
use super::client::ApiClient;
use super::exit::CliResult;
use super::output::{self, OutputFormat};

const POLL: Duration = Duration::from_millis(300);
/// Lines of a failed component's log shown after the build.
const TAIL_LINES: usize = 20;

fn finished(state: &str) -> bool {
    !matches!(state, "queued" | "running")
}

/// Log lines worth keeping on screen, not only in the progress line.
fn is_push_progress(line: &str) -> bool {
    line.starts_with("pushing ") || line.starts_with("pushed ") || line.starts_with("push error")
}

/// Prints above the progress bars, or plainly when they are not drawn (not a terminal).
fn say(multi: &MultiProgress, line: String) {
    if multi.is_hidden() {
        eprintln!("{line}");
    } else {
        let _ = multi.println(line);
    }
}

pub async fn follow(ctx: &Ctx, id: &str) -> CliResult<Value> {
    let human = ctx.output == OutputFormat::Human;
    let target = if human { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() };
    let multi = MultiProgress::with_draw_target(target);
    let style = ProgressStyle::with_template("{spinner:.cyan} {prefix:<14.bold} {wide_msg}")
        .expect("a valid progress template");
    let mut bars: HashMap<String, (ProgressBar, String)> = HashMap::new();
    let (lines_tx, mut lines) = mpsc::unbounded_channel::<(String, String)>();
    let path = format!("/v1/builds/{id}");
    loop {
        let build = ctx.client.get(&path, &[]).await?;
        for component in build["components"].as_array().into_iter().flatten() {
            let name = output::text(&component["name"]);
            let state = component["state"].as_str().unwrap_or("unknown").to_owned();
            let (bar, known) = bars.entry(name.clone()).or_insert_with(|| {
                let bar =
                    multi.add(ProgressBar::new_spinner().with_style(style.clone()).with_prefix(name.clone()));
                bar.enable_steady_tick(Duration::from_millis(120));
                (bar, String::new())
            });
            if *known == state {
                continue;
            }
            if human {
                let from = if known.is_empty() { String::new() } else { format!("{known} → ") };
                say(&multi, format!("{name}: {from}{}", output::state(&state)));
            }
            if state == "running" {
                tokio::spawn(follow_log(ctx.client.clone(), id.to_owned(), name.clone(), lines_tx.clone()));
            }
            if finished(&state) {
                bar.finish_with_message(output::state(&state));
            } else {
                bar.set_message(output::state(&state));
            }
            *known = state;
        }
        while let Ok((component, line)) = lines.try_recv() {
            if let Some((bar, _)) = bars.get(&component).filter(|(bar, _)| !bar.is_finished()) {
                bar.set_message(line.clone());
            }
            if human && is_push_progress(&line) {
                say(&multi, format!("{component}: {line}"));
            }
        }
        if finished(build["state"].as_str().unwrap_or("unknown")) {
            for (bar, _) in bars.values() {
                bar.finish();
            }
            show_failed_logs(ctx, id, &build).await;
            return Ok(build);
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Streams a running component's log lines into `lines`. The server ends the stream when
/// the component is not (or not yet) building in its process, so it is followed again while
/// the component still runs, skipping lines already sent.
async fn follow_log(
    client: ApiClient,
    id: String,
    component: String,
    lines: mpsc::UnboundedSender<(String, String)>,
) {
    let path = format!("/v1/builds/{id}/logs?component={component}&follow=true");
    let mut sent = 0usize;
    loop {
        if let Ok(events) = client.events(&path).await {
            let mut events = std::pin::pin!(events);
            let mut index = 0usize;
            while let Some(event) = events.next().await {
                if event.event != "line" {
                    continue;
                }
                index += 1;
                if index > sent {
                    sent = index;
                    if lines.send((component.clone(), event.data)).is_err() {
                        return;
                    }
                }
            }
        }
        let Ok(build) = client.get(&format!("/v1/builds/{id}"), &[]).await else { return };
        let still_running = build["components"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["name"] == component.as_str() && c["state"] == "running");
        if !still_running {
            return;
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn show_failed_logs(ctx: &Ctx, id: &str, build: &Value) {
    for component in build["components"].as_array().into_iter().flatten() {
        if component["state"] != "failed" {
            continue;
        }
        let name = output::text(&component["name"]);
        let path = format!("/v1/builds/{id}/logs");
        let Ok(log) = ctx.client.get(&path, &[("component", name.clone())]).await else { continue };
        let lines: Vec<&str> =
            log["lines"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        eprintln!("── last {} log lines of {name} ──", lines.len().min(TAIL_LINES));
        for line in &lines[lines.len().saturating_sub(TAIL_LINES)..] {
            eprintln!("  {line}");
        }
    }
}
