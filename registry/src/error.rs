//! Everything the registry can refuse or fail at, each variant naming what it concerns.

/// The registry's error type; the server maps each variant to an HTTP status and code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid {what} `{value}`: {rule}")]
    InvalidName { what: &'static str, value: String, rule: &'static str },
    #[error("invalid version `{value}`: {reason}")]
    InvalidVersion { value: String, reason: String },
    #[error("invalid version range `{value}`: {reason}")]
    InvalidRange { value: String, reason: String },
    #[error("invalid cursor `{0}`")]
    InvalidCursor(String),
    #[error("invalid package: {0}")]
    InvalidPackage(String),
    #[error("app {app} has no package {version}")]
    PackageNotFound { app: String, version: String },
    #[error("app {app} has no component package {component} {version}")]
    ComponentNotFound { app: String, component: String, version: String },
    #[error("app {app} already has version {version} (digest {digest})")]
    VersionExists { app: String, version: String, digest: String },
    #[error("app {app} already has component package {component} {version} with digest {digest}")]
    ComponentVersionExists { app: String, component: String, version: String, digest: String },
    #[error("upload digest mismatch: expected {expected}, received {actual}")]
    DigestMismatch { expected: String, actual: String },
    #[error("package is for app {found}, not {expected}")]
    AppMismatch { expected: String, found: String },
    #[error("offline archive refused: {reason}")]
    BadArchive { reason: String, digest: Option<String> },
    #[error("requested range is not inside the {size_bytes}-byte package")]
    RangeNotSatisfiable { size_bytes: u64 },
    #[error("image registry {registry}: {message}")]
    ImageRegistry { registry: String, message: String },
    #[error("object store at {key}: {source}")]
    ObjectStore { key: String, source: object_store::Error },
    #[error("reading upload body: {0}")]
    Body(String),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn store(key: &object_store::path::Path) -> impl FnOnce(object_store::Error) -> Error {
        let key = key.to_string();
        move |source| Error::ObjectStore { key, source }
    }

    pub(crate) fn invalid_package(reason: impl Into<String>) -> Error {
        Error::InvalidPackage(reason.into())
    }
}
