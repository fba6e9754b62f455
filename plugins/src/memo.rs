//! The unchanged-observation shortcut: a status check whose instance and observation hash
//! to the same digest as last time, on the same script revision, returns the last verdict
//! without running the script.

use std::sync::Arc;

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

/// SHA-256 of the JSON text of a check's arguments (instance and observation).
pub fn digest(args_json: &[u8]) -> ObservationDigest {
    Sha256::digest(args_json).into()
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
            details: serde_json::Value::Null,
            triple: triple.clone(),
        };
        let d1 = digest(br#"[{"a":1},{"http":{"status":200}}]"#);
        let d2 = digest(br#"[{"a":1},{"http":{"status":500}}]"#);
        assert_ne!(d1, d2);
        memo.remember("i-1".into(), d1, &verdict);
        assert_eq!(memo.get("i-1", &triple, &d1), Some(verdict.clone()));
        assert_eq!(memo.get("i-1", &triple, &d2), None);
        assert_eq!(memo.get("i-2", &triple, &d1), None);
        assert_eq!(memo.get("i-1", &PluginTriple::new(ScriptKind::Status, "http", 2), &d1), None);
    }
}
