//! A build log per component: lines kept for later reading and broadcast to live followers.

use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

/// The log of one component's build; cheap to clone, every clone writes to the same log.
#[derive(Clone, Debug)]
pub struct BuildLog {
    component: Arc<str>,
    lines: Arc<Mutex<Vec<String>>>,
    live: broadcast::Sender<String>,
}

impl BuildLog {
    pub fn new(component: &str) -> Self {
        BuildLog { component: component.into(), lines: Arc::default(), live: broadcast::channel(1024).0 }
    }

    pub fn component(&self) -> &str {
        &self.component
    }

    /// Appends one line.
    pub fn line(&self, text: impl Into<String>) {
        let text = text.into();
        tracing::debug!(component = %self.component, "{text}");
        // Sent under the lock, so `follow_from_start` never sees a line twice or misses one.
        let mut lines = self.lines.lock().expect("build log poisoned");
        lines.push(text.clone());
        let _ = self.live.send(text);
    }

    /// Every line so far, and the lines written after them.
    pub fn follow_from_start(&self) -> (Vec<String>, broadcast::Receiver<String>) {
        let lines = self.lines.lock().expect("build log poisoned");
        (lines.clone(), self.live.subscribe())
    }

    /// Every line so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().expect("build log poisoned").clone()
    }

    /// Follows new lines as they are written.
    pub fn follow(&self) -> broadcast::Receiver<String> {
        self.live.subscribe()
    }
}
