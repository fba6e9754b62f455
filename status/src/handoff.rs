//! Schedule handoff between the replicas of a sharded fleet.
//!
//! Each replica writes, every few seconds, when each instance it checks is next due and how
//! far it has backed off. A replica that takes instances over — their owner stopped
//! heartbeating, or a replica joined and the fleet was placed again — continues that
//! schedule instead of starting over: the instances that fell due while nobody checked them
//! go first, in the order they fell due, and the others when they are due. Without it the
//! taker could only spread its first checks over the tight interval, so an instance that
//! fell due just after its owner died waited the lease *and* up to the tight interval.
//!
//! A snapshot is a compact binary list, 17 bytes per instance: the instance's key (a hash of
//! its id), when it is due relative to the moment the snapshot was taken, and its backoff
//! (interval and healthy streak). The server stores snapshots in the database and says how
//! old each is by the database's clock, so replicas' own clocks never enter.

use std::collections::HashMap;

use crate::shard::id_key;

const VERSION: u8 = 1;
const ENTRY: usize = 17;

/// One instance's schedule as its last owner left it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Handed {
    /// When it is due, on the taker's clock (ms).
    pub due_ms: u64,
    pub interval_ms: u32,
    pub healthy_streak: u8,
}

/// The schedules of the instances other replicas checked, by instance key.
#[derive(Debug, Default)]
pub struct Handoff {
    entries: HashMap<u64, Handed>,
}

impl Handoff {
    /// Reads snapshots, each with its age in ms, into schedules on the clock where
    /// `now_ms` is now. Where two snapshots hold one instance, the newer wins (the instance
    /// moved since the older one was taken). A snapshot that is not well formed is skipped
    /// and named in the error list.
    pub fn read(snapshots: &[(i64, Vec<u8>)], now_ms: u64) -> (Self, Vec<String>) {
        let mut ordered: Vec<&(i64, Vec<u8>)> = snapshots.iter().collect();
        ordered.sort_by_key(|(age, _)| std::cmp::Reverse(*age));
        let mut handoff = Handoff::default();
        let mut errors = Vec::new();
        for (age_ms, body) in ordered {
            let taken_ms = now_ms as i64 - (*age_ms).max(0);
            match entries(body) {
                Ok(entries) => {
                    handoff.entries.extend(entries.map(|(key, due_in, interval_ms, healthy_streak)| {
                        let due_ms = (taken_ms + i64::from(due_in)).max(0) as u64;
                        (key, Handed { due_ms, interval_ms, healthy_streak })
                    }))
                }
                Err(e) => errors.push(e),
            }
        }
        (handoff, errors)
    }

    pub fn get(&self, id: &str) -> Option<Handed> {
        self.entries.get(&id_key(id)).copied()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Writes a snapshot: `(id, due in ms from now, interval ms, healthy streak)` per instance.
pub fn write<'a>(schedules: impl ExactSizeIterator<Item = (&'a str, i64, u32, u8)>) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + schedules.len() * ENTRY);
    out.push(VERSION);
    for (id, due_in_ms, interval_ms, streak) in schedules {
        out.extend_from_slice(&id_key(id).to_le_bytes());
        let due_in = due_in_ms.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32;
        out.extend_from_slice(&due_in.to_le_bytes());
        out.extend_from_slice(&interval_ms.to_le_bytes());
        out.push(streak);
    }
    out
}

/// The entries of a well-formed snapshot.
fn entries(body: &[u8]) -> Result<impl Iterator<Item = (u64, i32, u32, u8)> + '_, String> {
    match body.split_first() {
        Some((&VERSION, rest)) if rest.len() % ENTRY == 0 => Ok(rest.chunks_exact(ENTRY).map(|e| {
            let u64_at = |at: usize| u64::from_le_bytes(e[at..at + 8].try_into().expect("8 bytes"));
            let u32_at = |at: usize| u32::from_le_bytes(e[at..at + 4].try_into().expect("4 bytes"));
            (u64_at(0), u32_at(8) as i32, u32_at(12), e[16])
        })),
        Some((&VERSION, rest)) => {
            Err(format!("{} bytes of entries is not a whole number of entries", rest.len()))
        }
        Some((version, _)) => Err(format!("snapshot version {version} is not known here")),
        None => Err("empty snapshot".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_reads_back_on_the_takers_clock() {
        let body = write([("a", 1_500, 30_000, 3), ("b", -2_000, 5_000, 0)].into_iter());
        assert_eq!(body.len(), 1 + 2 * ENTRY);
        // Taken 1 s ago; on the taker's clock it is now 10,000.
        let (handoff, errors) = Handoff::read(&[(1_000, body)], 10_000);
        assert!(errors.is_empty());
        assert_eq!(handoff.get("a"), Some(Handed { due_ms: 10_500, interval_ms: 30_000, healthy_streak: 3 }));
        assert_eq!(handoff.get("b"), Some(Handed { due_ms: 7_000, interval_ms: 5_000, healthy_streak: 0 }));
        assert_eq!(handoff.get("c"), None);
    }

    #[test]
    fn the_newer_snapshot_wins() {
        let older = write([("a", 0, 5_000, 0)].into_iter());
        let newer = write([("a", 0, 20_000, 2)].into_iter());
        for snapshots in
            [vec![(5_000, older.clone()), (100, newer.clone())], vec![(100, newer), (5_000, older)]]
        {
            let (handoff, _) = Handoff::read(&snapshots, 60_000);
            assert_eq!(handoff.get("a").map(|h| (h.due_ms, h.interval_ms)), Some((59_900, 20_000)));
        }
    }

    #[test]
    fn malformed_snapshots_are_skipped_and_named() {
        let good = write([("a", 0, 5_000, 0)].into_iter());
        let mut torn = good.clone();
        torn.pop();
        let mut future = good.clone();
        future[0] = 9;
        let (handoff, errors) = Handoff::read(&[(0, good), (0, torn), (0, future), (0, vec![])], 1_000);
        assert_eq!(handoff.len(), 1);
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(errors.iter().any(|e| e.contains("version 9")), "{errors:?}");
    }
}
