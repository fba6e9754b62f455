//! The unchanged-observation shortcut: a status check whose script revision, instance and
//! observation give the same fingerprint as last time returns the last verdict without
//! running the script.
//!
//! The fingerprint is SipHash-1-3 with 128-bit output, keyed with a secret drawn from the OS
//! at start, over the revision and the arguments as encoded for the worker. It need not be
//! a cryptographic digest, but it must not be open to chosen collisions: an instance owner
//! controls much of an observation (an HTTP body, an object's labels), and two observations
//! with a known common hash would let a failing answer be served the verdict of a healthy
//! one. An unkeyed fast hash (xxHash, FNV, CityHash) offers no such guarantee, as its
//! collisions can be computed offline; SipHash is a pseudo-random function of its key (the
//! hash-flooding defence of Rust's `HashMap`), so without the key, which never leaves the
//! process, a collision is no likelier than chance: 2⁻¹²⁸ per comparison. Fingerprints
//! therefore never outlive the process either. SipHash-1-3 over the encoded arguments costs
//! about a third of the instructions SHA-256 did in software, and runs the same everywhere
//! (SHA-256 is fast only where the CPU has SHA extensions).

use std::hash::{DefaultHasher, Hash, Hasher};

use siphasher::sip128::{Hasher128, SipHasher13};

use crate::model::CheckVerdict;
use crate::triple::{HealthStatus, PluginTriple};
use crate::wire;

/// A check's fingerprint: its script revision and arguments, hashed with the memo's key.
pub type Fingerprint = u128;

/// One remembered verdict, kept small because the status scaler keeps one per watched
/// instance (100,000 and more): the details stay in the wire form the worker sent instead
/// of a `Value` tree (which costs a map node of several hundred bytes even for two fields)
/// and are decoded again only on a hit.
struct Entry {
    fingerprint: Fingerprint,
    status: HealthStatus,
    reason: Box<str>,
    details: Box<[u8]>,
}

pub struct Memo {
    /// Keyed by a 64-bit hash of the instance id (the fingerprint covers the arguments,
    /// the instance id among them, so two ids sharing a key never share a verdict).
    last: moka::sync::Cache<u64, std::sync::Arc<Entry>>,
    key: (u64, u64),
}

/// Fingerprints the calls of one script revision: the revision is hashed once per batch.
#[derive(Clone)]
pub struct Fingerprinter(SipHasher13);

impl Fingerprinter {
    pub fn fingerprint(&self, args: &[u8]) -> Fingerprint {
        let mut hasher = self.0;
        hasher.write(args);
        hasher.finish128().as_u128()
    }
}

impl Memo {
    pub fn new(capacity: u64) -> Self {
        let mut key = [0u8; 16];
        // Without the OS's randomness the key is still unique per process, only guessable.
        if getrandom::fill(&mut key).is_err() {
            tracing::warn!("no OS randomness for the memo key; using the process's hash seed");
            let seed = std::collections::hash_map::RandomState::new();
            key[..8].copy_from_slice(&std::hash::BuildHasher::hash_one(&seed, 0u8).to_le_bytes());
            key[8..].copy_from_slice(&std::hash::BuildHasher::hash_one(&seed, 1u8).to_le_bytes());
        }
        let half =
            |range: std::ops::Range<usize>| u64::from_le_bytes(key[range].try_into().expect("8 bytes"));
        Self { last: moka::sync::Cache::new(capacity), key: (half(0..8), half(8..16)) }
    }

    pub fn fingerprinter(&self, triple: &PluginTriple) -> Fingerprinter {
        let mut hasher = SipHasher13::new_with_keys(self.key.0, self.key.1);
        // `Hash` writes the name with a terminator, so revision and arguments cannot run together.
        triple.hash(&mut hasher);
        Fingerprinter(hasher)
    }

    pub fn get(
        &self,
        instance_id: &str,
        triple: &PluginTriple,
        fingerprint: Fingerprint,
    ) -> Option<CheckVerdict> {
        let entry = self.last.get(&key(instance_id))?;
        if entry.fingerprint != fingerprint {
            return None;
        }
        Some(CheckVerdict {
            status: entry.status,
            reason: entry.reason.to_string(),
            details: wire::decode(&entry.details).unwrap_or_default(),
            triple: triple.clone(),
        })
    }

    /// Remembers a verdict whose details are `details` in the wire form.
    pub fn remember(
        &self,
        instance_id: &str,
        fingerprint: Fingerprint,
        verdict: &CheckVerdict,
        details: &[u8],
    ) {
        let entry = Entry {
            fingerprint,
            status: verdict.status,
            reason: verdict.reason.as_str().into(),
            details: details.into(),
        };
        self.last.insert(key(instance_id), std::sync::Arc::new(entry));
    }
}

fn key(instance_id: &str) -> u64 {
    let mut h = DefaultHasher::new();
    instance_id.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::triple::ScriptKind;

    #[test]
    fn same_arguments_and_revision_hit_anything_else_misses() {
        let memo = Memo::new(10);
        let triple = PluginTriple::new(ScriptKind::Status, "http", 1);
        let verdict = CheckVerdict {
            status: HealthStatus::Healthy,
            reason: "ok".into(),
            details: serde_json::json!({ "status": 200, "latency_ms": 3, "why": ["a", null] }),
            triple: triple.clone(),
        };
        let mut details = Vec::new();
        wire::encode(&verdict.details, &mut details).unwrap();
        let fingerprinter = memo.fingerprinter(&triple);
        let (f1, f2) =
            (fingerprinter.fingerprint(b"observation 1"), fingerprinter.fingerprint(b"observation 2"));
        assert_ne!(f1, f2);
        memo.remember("i-1", f1, &verdict, &details);
        assert_eq!(memo.get("i-1", &triple, f1), Some(verdict.clone()));
        assert_eq!(memo.get("i-1", &triple, f2), None);
        assert_eq!(memo.get("i-2", &triple, f1), None);
        let next = memo.fingerprinter(&PluginTriple::new(ScriptKind::Status, "http", 2));
        assert_ne!(next.fingerprint(b"observation 1"), f1);
        // Another process (another key) fingerprints the same arguments differently.
        assert_ne!(Memo::new(10).fingerprinter(&triple).fingerprint(b"observation 1"), f1);
    }
}
