//! Build logs: live in memory while a component builds, written to the object store every
//! second meanwhile and once more when it finishes, so they outlive the process even when it
//! is killed mid-build. A component run again (a retry) continues the log of its earlier
//! attempts.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use slipway_builder::BuildLog;

use super::PipelineError;

/// How often a live log is written to the object store.
const FLUSH: Duration = Duration::from_secs(1);

pub struct LogBook {
    store: Arc<dyn ObjectStore>,
    live: Mutex<HashMap<(String, String), LiveLog>>,
}

struct LiveLog {
    log: BuildLog,
    flusher: tokio::task::AbortHandle,
}

fn key(build: &str, component: &str) -> Path {
    Path::from(format!("builds/{build}/logs/{component}.log"))
}

impl LogBook {
    pub fn new(store: Arc<dyn ObjectStore>) -> Self {
        Self { store, live: Mutex::new(HashMap::new()) }
    }

    /// Starts a component's live log, after the lines of its earlier attempts.
    pub async fn open(&self, build: &str, component: &str) -> BuildLog {
        let log = BuildLog::new(component);
        let earlier = self.read(build, component).await.unwrap_or_default();
        if !earlier.is_empty() {
            for line in earlier {
                log.line(line);
            }
            log.line("--- run again ---");
        }
        let (store, path, flushed) = (self.store.clone(), key(build, component), log.clone());
        let flusher = tokio::spawn(async move {
            let mut written = 0;
            loop {
                tokio::time::sleep(FLUSH).await;
                let lines = flushed.lines();
                if lines.len() != written {
                    written = lines.len();
                    let _ = store.put(&path, PutPayload::from(lines.join("\n") + "\n")).await;
                }
            }
        })
        .abort_handle();
        let live = LiveLog { log: log.clone(), flusher };
        self.live.lock().expect("log book lock").insert((build.into(), component.into()), live);
        log
    }

    /// Stores the finished log, then forgets the live one: readers never see a gap.
    pub async fn close(&self, build: &str, component: &str) {
        let live = self.live.lock().expect("log book lock").get(&(build.into(), component.into())).map(|l| {
            l.flusher.abort();
            l.log.clone()
        });
        if let Some(log) = live {
            let text = log.lines().join("\n") + "\n";
            if let Err(e) = self.store.put(&key(build, component), PutPayload::from(text)).await {
                tracing::error!(build, component, error = %e, "could not store the build log");
            }
        }
        self.live.lock().expect("log book lock").remove(&(build.into(), component.into()));
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
        if let Some(log) = live {
            return Ok(log.lines());
        }
        match self.store.get(&key(build, component)).await {
            Ok(found) => {
                let bytes = found.bytes().await?;
                Ok(String::from_utf8_lossy(&bytes).lines().map(str::to_owned).collect())
            }
            Err(object_store::Error::NotFound { .. }) => Ok(Vec::new()),
            Err(e) => Err(e.into()),
        }
    }
}
