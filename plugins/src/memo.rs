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
use std::sync::{Arc, Mutex, PoisonError};

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
    /// the instance id among them, so two ids sharing a key never share a verdict). An
    /// instance's entry is replaced in place when its observation changes: an insert into
    /// the cache costs several times what the whole host side of a small check does.
    last: moka::sync::Cache<u64, Slot>,
    key: (u64, u64),
}

/// An instance's place in the memo.
type Slot = Arc<Mutex<Entry>>;

/// A memo miss: the instance's slot, when it has one, for [`Memo::remember`] to refill.
pub struct Miss(Option<Slot>);

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

    /// The remembered verdict when `fingerprint` is the instance's last one.
    pub fn get(
        &self,
        instance_id: &str,
        triple: &PluginTriple,
        fingerprint: Fingerprint,
    ) -> Result<CheckVerdict, Miss> {
        let Some(slot) = self.last.get(&key(instance_id)) else { return Err(Miss(None)) };
        let entry = slot.lock().unwrap_or_else(PoisonError::into_inner);
        if entry.fingerprint != fingerprint {
            drop(entry);
            return Err(Miss(Some(slot)));
        }
        Ok(CheckVerdict {
            status: entry.status,
            reason: entry.reason.to_string(),
            details: wire::decode(&entry.details).unwrap_or_default(),
            triple: triple.clone(),
        })
    }

    /// Remembers a verdict whose details are `details` in the wire form, in the slot the
    /// miss found or, for an instance not yet remembered, a new one.
    pub fn remember(
        &self,
        instance_id: &str,
        miss: Miss,
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
        match miss.0 {
            // Evicted meanwhile, the slot is dropped with this write; the next check misses.
            Some(slot) => *slot.lock().unwrap_or_else(PoisonError::into_inner) = entry,
            None => self.last.insert(key(instance_id), Arc::new(Mutex::new(entry))),
        }
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
        let miss = memo.get("i-1", &triple, f1).unwrap_err();
        memo.remember("i-1", miss, f1, &verdict, &details);
        assert_eq!(memo.get("i-1", &triple, f1).ok(), Some(verdict.clone()));
        assert!(memo.get("i-2", &triple, f1).is_err());
        // A changed observation refills the instance's slot: the old verdict is gone.
        let miss = memo.get("i-1", &triple, f2).unwrap_err();
        let changed =
            CheckVerdict { status: HealthStatus::Degraded, reason: "down".into(), ..verdict.clone() };
        memo.remember("i-1", miss, f2, &changed, &details);
        assert_eq!(memo.get("i-1", &triple, f2).ok(), Some(changed));
        assert!(memo.get("i-1", &triple, f1).is_err());
        let next = memo.fingerprinter(&PluginTriple::new(ScriptKind::Status, "http", 2));
        assert_ne!(next.fingerprint(b"observation 1"), f1);
        // Another process (another key) fingerprints the same arguments differently.
        assert_ne!(Memo::new(10).fingerprinter(&triple).fingerprint(b"observation 1"), f1);
    }
}
