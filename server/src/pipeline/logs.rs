//! Build logs: live in memory while a component builds, written to the object store every
//! second meanwhile and once more when it finishes, so they outlive the process even when it
//! is killed mid-build. A component run again (a retry, a take-over) continues the log of
//! its earlier runs.
//!
//! Each run writes an object of its own, `builds/{build}/logs/{component}/{run}.log` (run ids
//! are time-ordered), and a reader joins them: a replica that lost a build while it was cut
//! off, and writes a last flush before it notices, can only touch its own run's lines, never
//! the log the replica that took the build over is writing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use slipway_builder::BuildLog;

use super::PipelineError;

/// How often a live log is written to the object store.
const FLUSH: Duration = Duration::from_secs(1);
/// Between the lines of two runs of a component.
const RUN_AGAIN: &str = "--- run again ---";

pub struct LogBook {
    store: Arc<dyn ObjectStore>,
    live: Mutex<HashMap<(String, String), LiveLog>>,
}

struct LiveLog {
    log: BuildLog,
    flusher: tokio::task::AbortHandle,
    /// This run's object.
    path: Path,
    /// The lines of earlier runs at the top of `log`, stored already in theirs.
    earlier: usize,
}

impl LiveLog {
    fn this_run(&self) -> PutPayload {
        this_run(&self.log, self.earlier)
    }
}

fn this_run(log: &BuildLog, earlier: usize) -> PutPayload {
    PutPayload::from(log.lines()[earlier..].join("\n") + "\n")
}

/// Where the runs of a component keep their logs.
fn runs(build: &str, component: &str) -> Path {
    Path::from(format!("builds/{build}/logs/{component}"))
}

/// The single log object of a component, as versions before per-run objects wrote it.
fn single(build: &str, component: &str) -> Path {
    Path::from(format!("builds/{build}/logs/{component}.log"))
}

impl LogBook {
    pub fn new(store: Arc<dyn ObjectStore>) -> Self {
        Self { store, live: Mutex::new(HashMap::new()) }
    }

    /// Starts a component's live log, after the lines of its earlier runs.
    pub async fn open(&self, build: &str, component: &str) -> BuildLog {
        let log = BuildLog::new(component);
        let earlier = self.stored(build, component).await.unwrap_or_default();
        if !earlier.is_empty() {
            for line in earlier {
                log.line(line);
            }
            log.line(RUN_AGAIN);
        }
        let earlier = log.lines().len();
        let run = uuid::Uuid::now_v7();
        let path = runs(build, component).join(format!("{run}.log"));
        let (store, at, flushed) = (self.store.clone(), path.clone(), log.clone());
        let flusher = tokio::spawn(async move {
            let mut written = earlier;
            loop {
                tokio::time::sleep(FLUSH).await;
                let lines = flushed.lines().len();
                if lines != written {
                    written = lines;
                    let _ = store.put(&at, this_run(&flushed, earlier)).await;
                }
            }
        })
        .abort_handle();
        let live = LiveLog { log: log.clone(), flusher, path, earlier };
        self.live.lock().expect("log book lock").insert((build.into(), component.into()), live);
        log
    }

    /// Stores the finished run's log, then forgets the live one: readers never see a gap.
    pub async fn close(&self, build: &str, component: &str) {
        let live = self.live.lock().expect("log book lock").get(&(build.into(), component.into())).map(|l| {
            l.flusher.abort();
            (l.path.clone(), l.this_run())
        });
        if let Some((path, text)) = live
            && let Err(e) = self.store.put(&path, text).await
        {
            tracing::error!(build, component, error = %e, "could not store the build log");
        }
        self.live.lock().expect("log book lock").remove(&(build.into(), component.into()));
    }

    /// Forgets the live logs of a build this replica lost to another, writing nothing more:
    /// what they hold past the last flush was not this replica's to record.
    pub fn abandon_build(&self, build: &str) {
        self.live.lock().expect("log book lock").retain(|(b, _), live| {
            let keep = b != build;
            if !keep {
                live.flusher.abort();
            }
            keep
        });
    }

    /// Closes every live log of a build whose task was stopped (a cancel).
    pub async fn close_build(&self, build: &str) {
        let components: Vec<String> = self
            .live
            .lock()
            .expect("log book lock")
            .keys()
            .filter(|(b, _)| b == build)
            .map(|(_, c)| c.clone())
            .collect();
        for component in components {
            self.close(build, &component).await;
        }
    }

    /// The lines so far and a receiver of the next ones, while the component builds; `None`
    /// once it has finished (the receiver closes when it finishes).
    pub fn follow(
        &self,
        build: &str,
        component: &str,
    ) -> Option<(Vec<String>, tokio::sync::broadcast::Receiver<String>)> {
        let live = self.live.lock().expect("log book lock");
        live.get(&(build.into(), component.into())).map(|l| l.log.follow_from_start())
    }

    /// The log so far: live while building, from the object store afterwards.
    pub async fn read(&self, build: &str, component: &str) -> Result<Vec<String>, PipelineError> {
        let live = self
            .live
            .lock()
            .expect("log book lock")
            .get(&(build.into(), component.into()))
            .map(|l| l.log.clone());
        match live {
            Some(log) => Ok(log.lines()),
            None => self.stored(build, component).await,
        }
    }

    /// Every stored run's lines, oldest run first.
    async fn stored(&self, build: &str, component: &str) -> Result<Vec<String>, PipelineError> {
        let mut objects = vec![single(build, component)];
        let mut listed: Vec<Path> =
            self.store.list(Some(&runs(build, component))).map_ok(|meta| meta.location).try_collect().await?;
        listed.sort();
        objects.extend(listed);
        let mut lines = Vec::new();
        for object in objects {
            let bytes = match self.store.get(&object).await {
                Ok(found) => found.bytes().await?,
                Err(object_store::Error::NotFound { .. }) => continue,
                Err(e) => return Err(e.into()),
            };
            if !lines.is_empty() {
                lines.push(RUN_AGAIN.to_owned());
            }
            lines.extend(String::from_utf8_lossy(&bytes).lines().map(str::to_owned));
        }
        Ok(lines)
    }
}
