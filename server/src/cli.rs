//! Command-line arguments of the `slipway` binary.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{LogFormat, Overrides};

#[derive(Debug, Parser)]
#[command(
    name = "slipway",
    version,
    about = "Builds apps into versioned packages and watches every deployed instance."
)]
pub struct Cli {
    /// Configuration file (default: ./slipway.toml when present).
    #[arg(long, global = true, env = "SLIPWAY_CONFIG")]
    pub config: Option<PathBuf>,
    /// Log output format.
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormat>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP API and the background workers.
    Serve(ServerArgs),
    /// Print the effective configuration (secrets masked) and exit.
    Config(ServerArgs),
}

#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Address to listen on [default: 127.0.0.1:7700].
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Data directory for the embedded database and object store [default: ./.slipway].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

impl Cli {
    pub fn overrides(&self, args: &ServerArgs) -> Overrides {
        Overrides { listen: args.listen, data_dir: args.data_dir.clone(), log_format: self.log_format }
    }
}
