//! The one error type of the plugin host. Every variant that concerns a script names its
//! triple, and where the engine told us, the script location (`file:line:column`).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::triple::{PluginTriple, ScriptKind};

/// Where in a script something happened, as QuickJS reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScriptLocation {
    pub file: String,
    pub line: u32,
    pub column: u32,
}

impl fmt::Display for ScriptLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// Formats an optional location as ` at file:line:column`.
fn at(location: &Option<ScriptLocation>) -> String {
    location.as_ref().map(|l| format!(" at {l}")).unwrap_or_default()
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{triple}: `{function}` ran past its CPU time limit of {limit_ms} ms{}", at(location))]
    Timeout { triple: PluginTriple, function: String, limit_ms: u64, location: Option<ScriptLocation> },
    #[error("{triple}: `{function}` exceeded the memory limit of {limit_bytes} bytes{}", at(location))]
    MemoryLimit {
        triple: PluginTriple,
        function: String,
        limit_bytes: usize,
        location: Option<ScriptLocation>,
    },
    #[error("{triple}: `{function}` overflowed the stack{}", at(location))]
    StackOverflow { triple: PluginTriple, function: String, location: Option<ScriptLocation> },
    #[error("{triple}: `{function}` threw {message}{}", at(location))]
    Thrown { triple: PluginTriple, function: String, message: String, location: Option<ScriptLocation> },
    #[error("{triple}: `{function}` returned the wrong shape: {message}")]
    WrongShape { triple: PluginTriple, function: String, message: String },
    #[error("{triple}: the worker running `{function}` died: {message}")]
    WorkerDied { triple: PluginTriple, function: String, message: String },
    #[error("{triple}: module failed to load{}: {message}", at(location))]
    ModuleLoad { triple: PluginTriple, message: String, location: Option<ScriptLocation> },
    #[error("{triple} does not export a function `{function}`")]
    UnknownFunction { triple: PluginTriple, function: String },
    #[error("no script {kind}/{name} is installed")]
    UnknownScript { kind: ScriptKind, name: String },
    #[error("script {triple} is not installed")]
    UnknownRevision { triple: PluginTriple },
    #[error("no plugin package `{name}` is installed")]
    UnknownPackage { name: String },
    #[error("`{text}` is not a valid plugin triple: {reason}")]
    InvalidTriple { text: String, reason: String },
    #[error("invalid plugin package: {file}{}: {message}", line.map(|l| format!(":{l}:{}", column.unwrap_or(1))).unwrap_or_default())]
    InvalidPackage { file: String, line: Option<u32>, column: Option<u32>, message: String },
    #[error(
        "{triple} is already installed from package `{package}` with different content; a changed script needs a new revision"
    )]
    RevisionConflict { triple: PluginTriple, package: String },
    #[error(
        "package `{package}` has active scripts ({}); activate other revisions first or force the uninstall",
        join(active)
    )]
    PackageInUse { package: String, active: Vec<PluginTriple> },
    #[error("plugin worker failed: {0}")]
    Worker(String),
    #[error("plugin database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("plugin object store: {0}")]
    ObjectStore(#[from] object_store::Error),
}

fn join(triples: &[PluginTriple]) -> String {
    triples.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

impl Error {
    /// The triple the error is about, when it is about one script.
    pub fn triple(&self) -> Option<&PluginTriple> {
        match self {
            Error::Timeout { triple, .. }
            | Error::MemoryLimit { triple, .. }
            | Error::StackOverflow { triple, .. }
            | Error::Thrown { triple, .. }
            | Error::WrongShape { triple, .. }
            | Error::WorkerDied { triple, .. }
            | Error::ModuleLoad { triple, .. }
            | Error::UnknownFunction { triple, .. }
            | Error::UnknownRevision { triple }
            | Error::RevisionConflict { triple, .. } => Some(triple),
            _ => None,
        }
    }

    /// The script location, when the engine reported one.
    pub fn location(&self) -> Option<&ScriptLocation> {
        match self {
            Error::Timeout { location, .. }
            | Error::MemoryLimit { location, .. }
            | Error::StackOverflow { location, .. }
            | Error::Thrown { location, .. }
            | Error::ModuleLoad { location, .. } => location.as_ref(),
            _ => None,
        }
    }

    /// True when the script itself failed (as opposed to the host or its storage); the
    /// server answers these as an unprocessable request, not as its own fault.
    pub fn is_script_failure(&self) -> bool {
        matches!(
            self,
            Error::Timeout { .. }
                | Error::MemoryLimit { .. }
                | Error::StackOverflow { .. }
                | Error::Thrown { .. }
                | Error::WrongShape { .. }
                | Error::WorkerDied { .. }
                | Error::ModuleLoad { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_triple_and_location() {
        let err = Error::Thrown {
            triple: "status/http/2".parse().unwrap(),
            function: "check".into(),
            message: "\"boom\"".into(),
            location: Some(ScriptLocation { file: "acme/http.js".into(), line: 4, column: 9 }),
        };
        assert_eq!(err.to_string(), "status/http/2: `check` threw \"boom\" at acme/http.js:4:9");
        let err = Error::InvalidPackage {
            file: "status/x.js".into(),
            line: Some(3),
            column: Some(7),
            message: "unexpected token".into(),
        };
        assert_eq!(err.to_string(), "invalid plugin package: status/x.js:3:7: unexpected token");
    }
}
