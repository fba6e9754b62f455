//! Runs plugin scripts for a Slipway plugin host over stdin/stdout; started by the host.

fn main() -> std::process::ExitCode {
    match slipway_plugins::worker::main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("slipway-plugin-worker: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
