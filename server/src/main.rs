use std::process::ExitCode;

use clap::Parser;
use slipway_server::cli::{Cli, Command};
use slipway_server::config::Config;

/// Exit codes are listed in `slipway --help` ([`slipway_server::cli::EXIT_CODES`]).
fn main() -> ExitCode {
    let cli = Cli::parse();
    let (Command::Serve(args) | Command::Config(args)) = &cli.command else {
        return slipway_server::cli::run_client(cli);
    };
    let config = match Config::load(cli.config.as_deref(), &cli.overrides(args)) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    match cli.command {
        Command::Config(_) => {
            match toml::to_string_pretty(&config.masked()) {
                Ok(text) => print!("{text}"),
                Err(e) => {
                    eprintln!("error: cannot print configuration: {e}");
                    return ExitCode::from(1);
                }
            }
            ExitCode::SUCCESS
        }
        _ => serve(config),
    }
}
fn serve(config: Config) -> ExitCode {
    slipway_server::telemetry::init_logging(config.log_format, &config.log_filter);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let served = runtime.block_on(async {
        let shutdown = slipway_server::serve::shutdown_signal();
        slipway_server::serve::run(config, shutdown).await
    });
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}
