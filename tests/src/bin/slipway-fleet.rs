//! `slipway-fleet`: serves N virtual instances on loopback for tests and benchmarks
//! (HTTP health endpoints, Kubernetes-style Deployment LISTs, an admin API). Prints its
//! [`Endpoints`](slipway_tests::fleet::Endpoints) as one JSON line, then serves until interrupted.

use clap::Parser;
use slipway_tests::fleet::{Fleet, FleetConfig};

#[derive(Parser)]
#[command(about = "Simulates a fleet of instances on loopback for Slipway's status scaler.")]
struct Args {
    /// Virtual instances.
    #[arg(long, default_value_t = 100_000)]
    instances: usize,
    /// Loopback listeners; instance n belongs to listener n % ports.
    #[arg(long, default_value_t = 8)]
    ports: usize,
    /// First port (consecutive ports follow); 0 picks free ports.
    #[arg(long, default_value_t = 0)]
    first_port: u16,
    /// Deployments per namespace in the Kubernetes view.
    #[arg(long, default_value_t = 1_000)]
    per_namespace: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config =
        FleetConfig { instances: args.instances, ports: args.ports, per_namespace: args.per_namespace };
    let fleet = Fleet::start(config, args.first_port).await?;
    println!("{}", serde_json::to_string(&fleet.endpoints)?);
    tokio::signal::ctrl_c().await?;
    Ok(())
}
