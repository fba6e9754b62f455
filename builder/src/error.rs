//! The builder's error type: every variant names what failed (file and position, path, image
//! reference, exit code) so a build log can say why a build ended without a debugger.

use std::path::PathBuf;

/// Why a build, or one of its steps, failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{file}:{line}:{column}: {message}")]
    Dockerfile { file: String, line: usize, column: usize, message: String },
    #[error("build target stage `{0}` is not defined in the Dockerfile")]
    UnknownTarget(String),
    #[error("{file}:{line}: variable expansion failed: {message}")]
    Expansion { file: String, line: usize, message: String },
    #[error("build context: {path}: {reason}")]
    Context { path: PathBuf, reason: String },
    #[error("build context is larger than the limit of {limit} bytes")]
    ContextTooLarge { limit: u64 },
    #[error("{file}:{line}: COPY source `{source_path}` {reason}")]
    CopySource { file: String, line: usize, source_path: String, reason: String },
    #[error("symlink loop while resolving `{0}`")]
    SymlinkLoop(PathBuf),
    #[error("{file}:{line}: ADD from a remote URL `{url}` is not supported: builds have no network")]
    RemoteAdd { file: String, line: usize, url: String },
    #[error("{file}:{line}: RUN exited with code {code}; last output:\n{tail}")]
    RunFailed { file: String, line: usize, code: i32, tail: String },
    #[error(
        "RUN needs Linux namespaces and chroot as root, which this host refuses ({0}); use the `docker` backend"
    )]
    IsolationUnavailable(String),
    #[error("base image `{image}`: {reason}")]
    BaseImage { image: String, reason: String },
    #[error("registry `{registry}`: {reason}")]
    Registry { registry: String, reason: String },
    #[error("component `{component}`: build plan: {reason}")]
    Plan { component: String, reason: String },
    #[error("docker daemon: {0}")]
    Docker(String),
    #[error("git source `{url}`: {reason}")]
    Git { url: String, reason: String },
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
    #[error("I/O on {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("image data: {0}")]
    ImageData(String),
}

impl Error {
    /// Wraps an I/O error with the path it happened on.
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
