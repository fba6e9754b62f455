//! What can go wrong in a client command, and the exit code each failure means to a script.

use std::process::ExitCode;

/// Exit codes, as `slipway --help` lists them.
pub const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  the build or operation failed (a failed build, a server error, a conflict)
  2  usage or configuration error (bad arguments or build file, a request the server refused as invalid)
  3  the server cannot be reached
  4  the server refused the token (missing, wrong, expired, revoked, or lacking the scope)
  5  not found (app, package, version, build, plugin, token, trigger, instance)";

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The arguments, a local file or the configuration are wrong; nothing was sent.
    #[error("{0}")]
    Usage(String),
    #[error(
        "cannot reach the Slipway server at {server}: {reason}\n  is `slipway serve` running? Point the CLI at it with --server URL or SLIPWAY_SERVER"
    )]
    Unreachable { server: String, reason: String },
    /// The server answered with an error; `message` is its JSON error message.
    #[error("{message}")]
    Api { status: u16, code: String, message: String, hint: Option<String> },
    /// The server did what was asked and the outcome is a failure (a build failed).
    #[error("{0}")]
    Failed(String),
}

impl CliError {
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(match self {
            CliError::Failed(_) => 1,
            CliError::Usage(_) => 2,
            CliError::Unreachable { .. } => 3,
            CliError::Api { status, .. } => match status {
                401 | 403 => 4,
                404 => 5,
                400 | 413 | 422 => 2,
                _ => 1,
            },
        })
    }

    /// The error as a person reads it: what failed, the server's code, and what to try.
    pub fn report(&self) -> String {
        match self {
            CliError::Api { status, code, message, hint } => {
                let mut text = format!("error: {message} ({status} {code})");
                if let Some(hint) = hint {
                    text.push_str("\n  ");
                    text.push_str(hint);
                }
                text
            }
            other => format!("error: {other}"),
        }
    }
}

pub type CliResult<T = ()> = Result<T, CliError>;

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16) -> CliError {
        CliError::Api { status, code: "x".into(), message: "m".into(), hint: None }
    }

    #[test]
    fn statuses_map_to_documented_codes() {
        for (error, code) in [
            (api(401), 4),
            (api(403), 4),
            (api(404), 5),
            (api(400), 2),
            (api(409), 1),
            (api(503), 1),
            (CliError::Usage("u".into()), 2),
            (CliError::Unreachable { server: "s".into(), reason: "r".into() }, 3),
            (CliError::Failed("f".into()), 1),
        ] {
            assert_eq!(error.exit_code(), ExitCode::from(code), "{error:?}");
            assert!(EXIT_CODES.contains(&format!("  {code}  ")), "{code} is documented");
        }
    }
}
