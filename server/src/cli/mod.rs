//! The `slipway` binary's command line: `serve` and `config` run the server; every other
//! command is a client of a running server's HTTP API, one module per command group.

mod archive;
mod build;
mod build_watch;
mod buildfile;
mod client;
mod document;
mod exit;
mod health;
mod instances;
mod output;
mod packages;
mod plugins;
mod tokens;
mod transfer;
mod triggers;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::config::{Config, LogFormat, Overrides};
pub use exit::{CliError, EXIT_CODES};
use output::OutputFormat;

#[derive(Debug, Parser)]
#[command(
    name = "slipway",
    version,
    about = "Builds apps into versioned packages and watches every deployed instance.",
    after_help = EXIT_CODES
)]
pub struct Cli {
    /// Configuration file (default: ./slipway.toml when present).
    #[arg(long, global = true, env = "SLIPWAY_CONFIG")]
    pub config: Option<PathBuf>,
    /// Log output format.
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormat>,
    /// The server a client command talks to [default: http://<listen> of the configuration,
    /// http://127.0.0.1:7700]. The API token comes from SLIPWAY_TOKEN, or else from the
    /// admin-token file in the configured data directory.
    #[arg(long, global = true, env = "SLIPWAY_SERVER")]
    pub server: Option<String>,
    /// `human` tables or `json` for scripts.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t)]
    pub output: OutputFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP API and the background workers.
    Serve(ServerArgs),
    /// Print the effective configuration (secrets masked) and exit.
    Config(ServerArgs),
    /// Build an app from a directory or git URL holding slipway.app.toml (or .yaml), and
    /// follow the build.
    Build(build::BuildArgs),
    /// List an app's packages, filtered by tags and version range.
    Packages(packages::PackagesArgs),
    /// Add (+tag) and remove (-tag) tags of a package version.
    Tag(packages::TagArgs),
    /// Download a package's .tar.gz.
    Download(transfer::PackageRef),
    /// Export a package with all its images as one offline archive.
    Export(transfer::PackageRef),
    /// Import an offline archive written by `slipway export`.
    Import(transfer::ImportArgs),
    /// Plugin packages and the active revision of each script.
    #[command(subcommand)]
    Plugins(plugins::PluginsCommand),
    /// Webhook triggers that start builds from CI systems.
    #[command(subcommand)]
    Triggers(triggers::TriggersCommand),
    /// API tokens.
    #[command(subcommand)]
    Tokens(tokens::TokensCommand),
    /// Deployed instances whose health Slipway checks.
    #[command(subcommand)]
    Instances(instances::InstancesCommand),
    /// Instance health: a summary per app, or one app's instances.
    Health(health::HealthArgs),
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

/// What every client command gets: the API client and how to show results.
pub struct Ctx {
    client: client::ApiClient,
    output: OutputFormat,
}

/// Runs a client command (anything but `serve` and `config`) and prints its error, if any.
pub fn run_client(cli: Cli) -> ExitCode {
    let result = tokio::runtime::Runtime::new()
        .map_err(|e| CliError::Failed(format!("cannot start the async runtime: {e}")))
        .and_then(|runtime| runtime.block_on(dispatch(cli)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{}", e.report());
            e.exit_code()
        }
    }
}

async fn dispatch(cli: Cli) -> Result<(), CliError> {
    let ctx = context(&cli)?;
    match cli.command {
        Command::Serve(_) | Command::Config(_) => Err(CliError::Usage("not a client command".into())),
        Command::Build(args) => build::run(&ctx, args).await,
        Command::Packages(args) => packages::list(&ctx, args).await,
        Command::Tag(args) => packages::tag(&ctx, args).await,
        Command::Download(args) => transfer::download(&ctx, args).await,
        Command::Export(args) => transfer::export(&ctx, args).await,
        Command::Import(args) => transfer::import(&ctx, args).await,
        Command::Plugins(command) => plugins::run(&ctx, command).await,
        Command::Triggers(command) => triggers::run(&ctx, command).await,
        Command::Tokens(command) => tokens::run(&ctx, command).await,
        Command::Instances(command) => instances::run(&ctx, command).await,
        Command::Health(args) => health::run(&ctx, args).await,
    }
}

/// The server and token: flags and environment first, then the configuration a local
/// server uses (its listen address and the admin token in its data directory).
fn context(cli: &Cli) -> Result<Ctx, CliError> {
    let overrides = Overrides { log_format: cli.log_format, ..Overrides::default() };
    let config =
        Config::load(cli.config.as_deref(), &overrides).map_err(|e| CliError::Usage(e.to_string()))?;
    let server = cli.server.clone().unwrap_or_else(|| {
        let mut listen = config.listen;
        if listen.ip().is_unspecified() {
            listen.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        format!("http://{listen}")
    });
    let token_file = config.data_dir.join(crate::auth::ADMIN_TOKEN_FILE);
    let (token, origin) = match std::env::var("SLIPWAY_TOKEN") {
        Ok(token) if !token.trim().is_empty() => (Some(token.trim().to_owned()), "SLIPWAY_TOKEN".to_owned()),
        _ => match std::fs::read_to_string(&token_file) {
            Ok(token) => (Some(token.trim().to_owned()), token_file.display().to_string()),
            Err(_) => (None, format!("no SLIPWAY_TOKEN and no {}", token_file.display())),
        },
    };
    Ok(Ctx { client: client::ApiClient::new(&server, token, origin)?, output: cli.output })
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn arguments_are_consistent() {
        // Catches clashes such as a subcommand flag reusing a global one's name.
        super::Cli::command().debug_assert();
    }
}
