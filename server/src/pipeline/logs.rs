//! Build logs: live in memory while a component builds, then kept in the object store so
//! they outlive the process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use slipway_builder::BuildLog;

use super::PipelineError;

pub struct LogBook {
    store: Arc<dyn ObjectStore>,
    live: Mutex<HashMap<(String, String), BuildLog>>,
}

fn key(build: &str, component: &str) -> Path {
    Path::from(format!("builds/{build}/logs/{component}.log"))
}

impl LogBook {
    pub fn new(store: Arc<dyn ObjectStore>) -> Self {
        Self { store, live: Mutex::new(HashMap::new()) }
    }

    pub fn open(&self, build: &str, component: &str) -> BuildLog {
        let log = BuildLog::new(component);
        self.live.lock().expect("log book lock").insert((build.into(), component.into()), log.clone());
        log
    }

    /// Stores the finished log, then forgets the live one: readers never see a gap.
    pub async fn close(&self, build: &str, component: &str, log: &BuildLog) {
        let text = log.lines().join("\n") + "\n";
        if let Err(e) = self.store.put(&key(build, component), PutPayload::from(text)).await {
            tracing::error!(build, component, error = %e, "could not store the build log");
        }
        self.live.lock().expect("log book lock").remove(&(build.into(), component.into()));
    }

    /// The lines so far and a receiver of the next ones, while the component builds; `None`
    /// once it has finished (the receiver closes when it finishes).
    pub fn follow(
        &self,
        build: &str,
        component: &str,
    ) -> Option<(Vec<String>, tokio::sync::broadcast::Receiver<String>)> {
        let live = self.live.lock().expect("log book lock");
        live.get(&(build.into(), component.into())).map(BuildLog::follow_from_start)
    }

    /// The log so far: live while building, from the object store afterwards.
    pub async fn read(&self, build: &str, component: &str) -> Result<Vec<String>, PipelineError> {
        let live = self.live.lock().expect("log book lock").get(&(build.into(), component.into())).cloned();
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
