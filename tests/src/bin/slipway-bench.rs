//! `slipway-bench <name> [--quick]`: runs one benchmark; progress goes to stderr, the
//! figures as one JSON object on the last stdout line.

use clap::Parser;

#[derive(Parser)]
#[command(about = "Runs a Slipway benchmark and prints its figures as one JSON line.")]
struct Args {
    /// Which benchmark to run.
    #[arg(value_parser = clap::builder::PossibleValuesParser::new(slipway_tests::bench::NAMES))]
    name: String,
    /// A smaller size of the same work, in under two minutes.
    #[arg(long)]
    quick: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let mut figures = runtime.block_on(slipway_tests::bench::run(&args.name, args.quick))?;
    if let Some(object) = figures.as_object_mut() {
        object.insert("quick".into(), args.quick.into());
    }
    println!("{}", serde_json::to_string(&figures)?);
    Ok(())
}
