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
//!
//! The verdicts are kept per instance in a fixed number of shards, each a hash table
//! behind its own lock: one lookup and one write per check, no access bookkeeping. A moka
//! cache did the same job at several times the cost of the rest of the host's side of a
//! small check (its read recording, clock reads and housekeeping), for an eviction policy
//! the memo does not need: it holds one entry per watched instance, and its capacity is
//! set above the fleet's size; past it, an arbitrary entry of the shard makes room, and
//! that instance's next check runs its script.

use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use siphasher::sip128::{Hasher128, SipHasher13};

use crate::model::{CheckVerdict, Details};
use crate::triple::{HealthStatus, PluginTriple};

/// A check's fingerprint: its script revision and arguments, hashed with the memo's key.
pub type Fingerprint = u128;

/// Which instance a verdict belongs to: its id hashed once per check. Two ids sharing a
/// key share a slot, never a verdict of other arguments: the fingerprint covers those.
pub type InstanceKey = u64;

/// Shards of the memo: enough that callers judging batches at once rarely meet on a lock.
const SHARDS: usize = 64;

/// One remembered verdict, kept small because the status scaler keeps one per watched
/// instance (100,000 and more); reason and details are the verdict's own, shared.
struct Entry {
    fingerprint: Fingerprint,
    status: HealthStatus,
    reason: Arc<str>,
    details: Details,
}

/// The instance keys are hashes already: the tables use them as they are.
#[derive(Default)]
struct KeyAsHash(u64);

impl Hasher for KeyAsHash {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `u64` keys are hashed here; anything else folds in all the same.
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }

    fn write_u64(&mut self, key: u64) {
        self.0 = key;
    }
}

type Shard = hashbrown::HashMap<InstanceKey, Entry, BuildHasherDefault<KeyAsHash>>;

pub struct Memo {
    shards: Box<[Mutex<Shard>]>,
    /// Entries one shard holds at most.
    shard_capacity: usize,
    /// Hashes instance ids (seeded per process, so ids cannot be chosen to pile up in one
    /// shard).
    ids: hashbrown::DefaultHashBuilder,
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
    /// A memo of at most `capacity` verdicts (at least one per shard).
    pub fn new(capacity: u64) -> Self {
        let mut key = [0u8; 16];
        // Without the OS's randomness the key is still unique per process, only guessable.
        if getrandom::fill(&mut key).is_err() {
            tracing::warn!("no OS randomness for the memo key; using the process's hash seed");
            let seed = std::collections::hash_map::RandomState::new();
            key[..8].copy_from_slice(&seed.hash_one(0u8).to_le_bytes());
            key[8..].copy_from_slice(&seed.hash_one(1u8).to_le_bytes());
        }
        let half =
            |range: std::ops::Range<usize>| u64::from_le_bytes(key[range].try_into().expect("8 bytes"));
        let shard_capacity = usize::try_from(capacity).unwrap_or(usize::MAX).div_ceil(SHARDS).max(1);
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            shard_capacity,
            ids: hashbrown::DefaultHashBuilder::default(),
            key: (half(0..8), half(8..16)),
        }
    }

    pub fn fingerprinter(&self, triple: &PluginTriple) -> Fingerprinter {
        let mut hasher = SipHasher13::new_with_keys(self.key.0, self.key.1);
        // `Hash` writes the name with a terminator, so revision and arguments cannot run together.
        triple.hash(&mut hasher);
        Fingerprinter(hasher)
    }

    pub fn instance_key(&self, instance_id: &str) -> InstanceKey {
        self.ids.hash_one(instance_id)
    }

    /// The remembered verdict when `fingerprint` is the instance's last one.
    pub fn get(
        &self,
        instance: InstanceKey,
        fingerprint: Fingerprint,
        triple: &Arc<PluginTriple>,
    ) -> Option<CheckVerdict> {
        let shard = self.shard(instance);
        let entry = shard.get(&instance).filter(|entry| entry.fingerprint == fingerprint)?;
        Some(CheckVerdict {
            status: entry.status,
            reason: entry.reason.clone(),
            details: entry.details.clone(),
            triple: triple.clone(),
        })
    }

    /// Remembers `verdict` as the instance's last, given under `fingerprint`.
    pub fn remember(&self, instance: InstanceKey, fingerprint: Fingerprint, verdict: &CheckVerdict) {
        let entry = Entry {
            fingerprint,
            status: verdict.status,
            reason: verdict.reason.clone(),
            details: verdict.details.clone(),
        };
        let mut shard = self.shard(instance);
        if shard.len() >= self.shard_capacity && !shard.contains_key(&instance) {
            // The table's first entry: where the seeded id hash happened to put it.
            if let Some(&evicted) = shard.keys().next() {
                shard.remove(&evicted);
            }
        }
        shard.insert(instance, entry);
    }

    fn shard(&self, instance: InstanceKey) -> MutexGuard<'_, Shard> {
        // Bits the tables do not use for their own placement (low bits, top seven).
        let index = (instance >> 40) as usize % SHARDS;
        self.shards[index].lock().unwrap_or_else(PoisonError::into_inner)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards.iter().map(|shard| shard.lock().unwrap().len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::triple::ScriptKind;

    fn verdict(triple: &Arc<PluginTriple>, status: HealthStatus, reason: &str) -> CheckVerdict {
        let details = json!({ "status": 200, "latency_ms": 3, "why": ["a", null] });
        CheckVerdict {
            status,
            reason: reason.into(),
            details: Details::from_value(&details).unwrap(),
            triple: triple.clone(),
        }
    }

    #[test]
    fn same_arguments_and_revision_hit_anything_else_misses() {
        let memo = Memo::new(10);
        let triple = Arc::new(PluginTriple::new(ScriptKind::Status, "http", 1));
        let healthy = verdict(&triple, HealthStatus::Healthy, "ok");
        let fingerprinter = memo.fingerprinter(&triple);
        let (f1, f2) =
            (fingerprinter.fingerprint(b"observation 1"), fingerprinter.fingerprint(b"observation 2"));
        assert_ne!(f1, f2);
        let (i1, i2) = (memo.instance_key("i-1"), memo.instance_key("i-2"));
        assert_ne!(i1, i2);
        assert_eq!(i1, memo.instance_key("i-1"));
        assert!(memo.get(i1, f1, &triple).is_none());
        memo.remember(i1, f1, &healthy);
        assert_eq!(memo.get(i1, f1, &triple), Some(healthy.clone()));
        assert!(memo.get(i2, f1, &triple).is_none());
        // A changed observation replaces the instance's verdict: the old one is gone.
        assert!(memo.get(i1, f2, &triple).is_none());
        let degraded = verdict(&triple, HealthStatus::Degraded, "down");
        memo.remember(i1, f2, &degraded);
        assert_eq!(memo.get(i1, f2, &triple), Some(degraded));
        assert!(memo.get(i1, f1, &triple).is_none());
        assert_eq!(memo.len(), 1);
        let next = memo.fingerprinter(&PluginTriple::new(ScriptKind::Status, "http", 2));
        assert_ne!(next.fingerprint(b"observation 1"), f1);
        // Another process (another key) fingerprints the same arguments differently.
        assert_ne!(Memo::new(10).fingerprinter(&triple).fingerprint(b"observation 1"), f1);
    }

    #[test]
    fn the_memo_stays_within_its_capacity_and_keeps_the_newest_verdict() {
        let memo = Memo::new(SHARDS as u64 * 2);
        let triple = Arc::new(PluginTriple::new(ScriptKind::Status, "http", 1));
        let fingerprinter = memo.fingerprinter(&triple);
        for i in 0..10_000 {
            let instance = memo.instance_key(&format!("i-{i}"));
            let fingerprint = fingerprinter.fingerprint(format!("observation {i}").as_bytes());
            memo.remember(instance, fingerprint, &verdict(&triple, HealthStatus::Healthy, &i.to_string()));
            let newest = memo.get(instance, fingerprint, &triple).expect("the verdict just remembered");
            assert_eq!(&*newest.reason, i.to_string());
        }
        assert!(memo.len() <= SHARDS * 2, "{} entries", memo.len());
        assert!(memo.len() >= SHARDS, "{} entries: shards left empty", memo.len());
    }
}
