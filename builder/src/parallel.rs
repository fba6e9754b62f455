//! Building the components of one release side by side: at most `limit` builds run at once,
//! each with its own log, and one failure does not stop the others.

use futures::StreamExt;

use crate::backend::{BuildBackend, BuildOutcome, BuildRequest};
use crate::error::Result;
use crate::log::BuildLog;

/// One component's build within a release.
pub struct ComponentBuild<'a> {
    pub component: String,
    pub backend: &'a dyn BuildBackend,
    pub request: BuildRequest,
}

/// What became of one component: its log and its outcome.
pub struct ComponentResult {
    pub component: String,
    pub log: BuildLog,
    pub outcome: Result<BuildOutcome>,
}

/// Runs every build, `limit` at a time; results come back in the order given.
pub async fn build_components(builds: Vec<ComponentBuild<'_>>, limit: usize) -> Vec<ComponentResult> {
    let runs = builds.into_iter().map(|build| async move {
        let log = BuildLog::new(&build.component);
        log.line(format!("building {} with the {} backend", build.component, build.backend.name()));
        let outcome = build.backend.build(&build.request, &log).await;
        if let Err(e) = &outcome {
            log.line(format!("build failed: {e}"));
        }
        ComponentResult { component: build.component, log, outcome }
    });
    futures::stream::iter(runs).buffered(limit.max(1)).collect().await
}
