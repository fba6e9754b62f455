//! A single-level timer wheel: every pending check of every instance lives in one ring of
//! time slots, so 100,000 instances cost 100,000 `u32`s and one timer, not 100,000 timers.
//!
//! Cancellation is lazy: rescheduling an instance just inserts it again, and the owner
//! skips a popped entry whose tick is no longer the instance's due tick.

/// Ring of slots, `resolution_ms` wide each; delays longer than the ring are clamped to it.
#[derive(Debug)]
pub struct TimerWheel {
    resolution_ms: u64,
    slots: Vec<Vec<u32>>,
    /// The last tick whose slot has been drained.
    cursor: u64,
}

impl TimerWheel {
    pub fn new(resolution_ms: u64, slot_count: usize, now_ms: u64) -> Self {
        assert!(resolution_ms > 0 && slot_count > 1, "a wheel needs a resolution and two slots");
        Self { resolution_ms, slots: vec![Vec::new(); slot_count], cursor: now_ms / resolution_ms }
    }

    /// The longest delay the wheel holds without clamping.
    pub fn span_ms(&self) -> u64 {
        (self.slots.len() as u64 - 1) * self.resolution_ms
    }

    /// Schedules `id` at `due_ms` (clamped into `(cursor, cursor + span]`) and returns the
    /// tick it was filed under: the owner keeps it to recognise stale entries.
    pub fn insert(&mut self, due_ms: u64, id: u32) -> u64 {
        let last = self.cursor + self.slots.len() as u64 - 1;
        let tick = (due_ms / self.resolution_ms).clamp(self.cursor + 1, last);
        let n = self.slots.len() as u64;
        self.slots[(tick % n) as usize].push(id);
        tick
    }

    /// Drains every slot up to `now_ms`, calling `f(id, tick)` for each entry.
    pub fn advance(&mut self, now_ms: u64, mut f: impl FnMut(u32, u64)) {
        let target = now_ms / self.resolution_ms;
        let n = self.slots.len() as u64;
        // After a stall longer than the ring every slot is due: drain each once.
        let start = (self.cursor + 1).max(target.saturating_sub(n - 1));
        for tick in start..=target {
            for id in self.slots[(tick % n) as usize].drain(..) {
                f(id, tick);
            }
        }
        self.cursor = self.cursor.max(target);
    }

    pub fn tick_of(&self, ms: u64) -> u64 {
        ms / self.resolution_ms
    }

    pub fn resolution_ms(&self) -> u64 {
        self.resolution_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(w: &mut TimerWheel, now: u64) -> Vec<(u32, u64)> {
        let mut out = Vec::new();
        w.advance(now, |id, tick| out.push((id, tick)));
        out
    }

    #[test]
    fn entries_fire_at_their_tick_not_before() {
        let mut w = TimerWheel::new(100, 64, 0);
        let t = w.insert(1_050, 7);
        assert_eq!(t, 10);
        assert!(drain(&mut w, 999).is_empty());
        assert_eq!(drain(&mut w, 1_000), vec![(7, 10)]);
        assert!(drain(&mut w, 5_000).is_empty());
    }

    #[test]
    fn past_due_fires_on_the_next_advance_and_long_delays_are_clamped() {
        let mut w = TimerWheel::new(100, 64, 10_000);
        assert_eq!(w.insert(0, 1), 101);
        assert_eq!(w.insert(1_000_000, 2), 100 + 63);
        assert_eq!(drain(&mut w, 10_100), vec![(1, 101)]);
        let end = 10_000 + w.span_ms();
        assert_eq!(drain(&mut w, end), vec![(2, 163)]);
    }

    #[test]
    fn a_stall_longer_than_the_ring_drains_everything_once() {
        let mut w = TimerWheel::new(100, 16, 0);
        for i in 0..10 {
            w.insert(i * 150, i as u32);
        }
        let fired = drain(&mut w, 1_000_000);
        let mut ids: Vec<u32> = fired.iter().map(|(id, _)| *id).collect();
        ids.sort();
        assert_eq!(ids, (0..10).collect::<Vec<_>>());
    }
}
