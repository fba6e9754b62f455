//! The unchanged-observation shortcut: a status check whose instance and observation hash
//! to the same digest as last time, on the same script revision, returns the last verdict
//! without running the script.

use std::io::{self, Write};
use std::sync::Arc;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::model::CheckVerdict;
use crate::triple::PluginTriple;

pub type ObservationDigest = [u8; 32];

struct Entry {
    triple: PluginTriple,
    digest: ObservationDigest,
    verdict: CheckVerdict,
}

pub struct Memo {
    last: moka::sync::Cache<String, Arc<Entry>>,
}

impl Memo {
    pub fn new(capacity: u64) -> Self {
        Self { last: moka::sync::Cache::new(capacity) }
    }

    pub fn get(
        &self,
        instance_id: &str,
        triple: &PluginTriple,
        digest: &ObservationDigest,
    ) -> Option<CheckVerdict> {
        let entry = self.last.get(instance_id)?;
        (entry.triple == *triple && entry.digest == *digest).then(|| entry.verdict.clone())
    }

    pub fn remember(&self, instance_id: String, digest: ObservationDigest, verdict: &CheckVerdict) {
        let entry = Entry { triple: verdict.triple.clone(), digest, verdict: verdict.clone() };
        self.last.insert(instance_id, Arc::new(entry));
    }
}

/// SHA-256 of the JSON text of the instance and the observation, hashed as it is written.
pub fn digest(instance: &Value, observation: &Value) -> ObservationDigest {
    struct HashWriter(Sha256);
    impl Write for HashWriter {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.update(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let mut hasher = HashWriter(Sha256::new());
    // Writing JSON into a hasher cannot fail: `Value` always serializes.
    let _ = serde_json::to_writer(&mut hasher, instance);
    hasher.0.update([0]);
    let _ = serde_json::to_writer(&mut hasher, observation);
    hasher.0.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::triple::{HealthStatus, ScriptKind};

    #[test]
    fn same_digest_and_revision_hits_anything_else_misses() {
        let memo = Memo::new(10);
        let triple = PluginTriple::new(ScriptKind::Status, "http", 1);
        let verdict = CheckVerdict {
            status: HealthStatus::Healthy,
            reason: "ok".into(),
            details: Value::Null,
            triple: triple.clone(),
        };
        let d1 = digest(&serde_json::json!({"a": 1}), &serde_json::json!({"http": {"status": 200}}));
        let d2 = digest(&serde_json::json!({"a": 1}), &serde_json::json!({"http": {"status": 500}}));
        assert_ne!(d1, d2);
        memo.remember("i-1".into(), d1, &verdict);
        assert_eq!(memo.get("i-1", &triple, &d1), Some(verdict.clone()));
        assert_eq!(memo.get("i-1", &triple, &d2), None);
        assert_eq!(memo.get("i-2", &triple, &d1), None);
        assert_eq!(memo.get("i-1", &PluginTriple::new(ScriptKind::Status, "http", 2), &d1), None);
    }
}
