//! The unchanged-observation shortcut: a status check whose instance and observation hash
//! to the same digest as last time, on the same script revision, returns the last verdict
//! without running the script.

use std::hash::{DefaultHasher, Hash, Hasher};

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::model::CheckVerdict;
use crate::triple::{HealthStatus, PluginTriple};

pub type ObservationDigest = [u8; 32];

/// One remembered verdict, kept small because the status scaler keeps one per watched
/// instance (100,000 and more): a 64-bit fingerprint instead of the digest and revision,
/// and the details as their JSON text instead of a `Value` tree (which costs a map node of
/// several hundred bytes even for two fields). Details are parsed again only on a hit.
struct Entry {
    fingerprint: u64,
    status: HealthStatus,
    reason: Box<str>,
    details: Box<str>,
}

pub struct Memo {
    /// Keyed by a 64-bit hash of the instance id (the fingerprint covers the arguments,
    /// the instance id among them, so two ids sharing a key never share a verdict).
    last: moka::sync::Cache<u64, std::sync::Arc<Entry>>,
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
        let entry = self.last.get(&key(instance_id))?;
        if entry.fingerprint != fingerprint(triple, digest) {
            return None;
        }
        Some(CheckVerdict {
            status: entry.status,
            reason: entry.reason.to_string(),
            details: serde_json::from_str(&entry.details).unwrap_or(Value::Null),
            triple: triple.clone(),
        })
    }

    pub fn remember(&self, instance_id: String, digest: ObservationDigest, verdict: &CheckVerdict) {
        let entry = Entry {
            fingerprint: fingerprint(&verdict.triple, &digest),
            status: verdict.status,
            reason: verdict.reason.as_str().into(),
            details: verdict.details.to_string().into_boxed_str(),
        };
        self.last.insert(key(&instance_id), std::sync::Arc::new(entry));
    }
}

fn key(instance_id: &str) -> u64 {
    let mut h = DefaultHasher::new();
    instance_id.hash(&mut h);
    h.finish()
}

/// The script revision and the arguments' digest folded into 64 bits: the digest is a
/// SHA-256, so its first eight bytes are as good as any, and a stale verdict needs a
/// 64-bit collision on one instance's own history.
fn fingerprint(triple: &PluginTriple, digest: &ObservationDigest) -> u64 {
    let mut h = DefaultHasher::new();
    triple.hash(&mut h);
    h.finish() ^ u64::from_le_bytes(digest[..8].try_into().expect("a SHA-256 has 32 bytes"))
}

/// SHA-256 of a check's arguments (instance and observation) as encoded for the worker.
pub fn digest(args_json: &[u8]) -> ObservationDigest {
    Sha256::digest(args_json).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::triple::ScriptKind;

    #[test]
    fn same_digest_and_revision_hits_anything_else_misses() {
        let memo = Memo::new(10);
        let triple = PluginTriple::new(ScriptKind::Status, "http", 1);
        let verdict = CheckVerdict {
            status: HealthStatus::Healthy,
            reason: "ok".into(),
            details: serde_json::json!({ "status": 200, "latency_ms": 3, "why": ["a", null] }),
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
