//! `slipway instances register -f fleet.yaml` and the deploy events that make the status
//! scaler look closely at an instance again.

use std::path::PathBuf;

use clap::Subcommand;
use reqwest::Method;
use serde_json::json;

use super::Ctx;
use super::document;
use super::exit::CliResult;
use super::output;

#[derive(Debug, Subcommand)]
pub enum InstancesCommand {
    /// Register, update or delete instances in one step, from a file (YAML or JSON:
    /// `appInstances`, `instances`, `delete`; see examples/hello/fleet.yaml).
    Register {
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
    },
    /// Record a deploy of an app instance (or one component instance): checked now and then
    /// closely until healthy again.
    Deployed {
        id: String,
        /// Free text kept with the event (e.g. the version deployed).
        #[arg(long)]
        detail: Option<String>,
    },
}

pub async fn run(ctx: &Ctx, command: InstancesCommand) -> CliResult {
    match command {
        InstancesCommand::Register { file } => {
            let body = document::read(&file)?;
            let outcome = ctx.client.call(Method::POST, "/v1/instances", Some(&body)).await?;
            output::emit(ctx.output, &outcome, || {
                format!(
                    "registered {} app instances and {} component instances, deleted {}\n",
                    output::text(&outcome["upserted_app_instances"]),
                    output::text(&outcome["upserted_instances"]),
                    output::text(&outcome["deleted_instances"])
                )
            });
        }
        InstancesCommand::Deployed { id, detail } => {
            let body = json!({ "type": "deploy", "detail": detail });
            let answer =
                ctx.client.call(Method::POST, &format!("/v1/instances/{id}/events"), Some(&body)).await?;
            output::emit(ctx.output, &answer, || {
                format!(
                    "{id}: deploy recorded, {} instances checked now\n",
                    output::text(&answer["instances"])
                )
            });
        }
    }
    Ok(())
}
