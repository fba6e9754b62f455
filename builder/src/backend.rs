//! What a build is asked to do and what it reports, and the seam between the two real
//! backends (`docker` through a daemon, `native` daemonless).

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

use crate::context::SourceSpec;
use crate::error::Result;
use crate::log::BuildLog;
use crate::registry::{Credentials, PushReport};

/// One component's build.
#[derive(Debug, Clone)]
pub struct BuildRequest {
    pub source: SourceSpec,
    /// The build context's directory inside the source (a component's path; empty = root).
    pub context_dir: String,
    /// The Dockerfile's path inside the context.
    pub dockerfile: String,
    pub build_args: BTreeMap<String, String>,
    /// The stage to build; the last one when `None`.
    pub target: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// Where the image goes: `registry/repository:tag`.
    pub image: String,
    /// Push after building (the docker backend always tags locally as `image`).
    pub push: bool,
    pub credentials: Option<Credentials>,
    /// Fixed time for layer entries and the config; the git commit time or 0 when unset.
    pub source_date_epoch: Option<i64>,
}

impl BuildRequest {
    pub fn new(source: SourceSpec, image: &str) -> Self {
        BuildRequest {
            source,
            context_dir: String::new(),
            dockerfile: "Dockerfile".into(),
            build_args: BTreeMap::new(),
            target: None,
            labels: BTreeMap::new(),
            image: image.into(),
            push: true,
            credentials: None,
            source_date_epoch: None,
        }
    }
}

/// What a finished build produced.
#[derive(Debug, Clone, Default)]
pub struct BuildOutcome {
    pub image: String,
    /// The manifest digest (the registry's, when pushed).
    pub digest: String,
    pub layers_built: usize,
    pub layers_cached: usize,
    pub push: Option<PushReport>,
}

pub type BuildFuture<'a> = Pin<Box<dyn Future<Output = Result<BuildOutcome>> + Send + 'a>>;

/// A way to turn a source and Dockerfile into an image.
pub trait BuildBackend: Send + Sync {
    fn name(&self) -> &'static str;
    fn build<'a>(&'a self, request: &'a BuildRequest, log: &'a BuildLog) -> BuildFuture<'a>;
}
