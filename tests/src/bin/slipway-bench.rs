//! `slipway-bench <name> [--quick]`: runs one benchmark; progress goes to stderr, the
//! figures as one JSON object on the last stdout line.
//!
//! `slipway-bench plugins --fixed <http|k8s|http-floor|k8s-floor> <rounds> <batch>` runs a fixed number of
//! status checks instead, for instruction counting under callgrind; `slipway-bench status
//! --phase <burst|batchget|capacity>` runs one measurement of the status benchmark alone.

use anyhow::Context;
use clap::Parser;
use slipway_tests::bench;

#[derive(Parser)]
#[command(about = "Runs a Slipway benchmark and prints its figures as one JSON line.")]
struct Args {
    /// Which benchmark to run.
    #[arg(value_parser = clap::builder::PossibleValuesParser::new(slipway_tests::bench::NAMES))]
    name: String,
    /// A smaller size of the same work, in under two minutes.
    #[arg(long)]
    quick: bool,
    /// `plugins` only: run CHECK on ROUNDS batches of BATCH changed observations with one
    /// worker and no clock, for `valgrind --tool=callgrind --trace-children=yes`.
    #[arg(long, num_args = 3, value_names = ["CHECK", "ROUNDS", "BATCH"])]
    fixed: Option<Vec<String>>,
    /// `status` only: run one measurement alone, after a shorter backoff.
    #[arg(long, value_enum)]
    phase: Option<bench::StatusPhase>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let mut figures = match &args.fixed {
        Some(fixed) => {
            anyhow::ensure!(args.name == "plugins", "--fixed is an option of the plugins benchmark");
            let check = <bench::FixedCheck as clap::ValueEnum>::from_str(&fixed[0], true)
                .map_err(|e| anyhow::anyhow!("--fixed CHECK: {e}"))?;
            let rounds = fixed[1].parse().context("--fixed ROUNDS")?;
            let batch = fixed[2].parse().context("--fixed BATCH")?;
            runtime.block_on(bench::run_plugins_fixed(check, rounds, batch))?
        }
        None => match args.phase {
            Some(phase) => {
                anyhow::ensure!(args.name == "status", "--phase is an option of the status benchmark");
                runtime.block_on(bench::run_status_phase(phase, args.quick))?
            }
            None => runtime.block_on(bench::run(&args.name, args.quick))?,
        },
    };
    if let Some(object) = figures.as_object_mut() {
        object.insert("quick".into(), args.quick.into());
    }
    println!("{}", serde_json::to_string(&figures)?);
    Ok(())
}
