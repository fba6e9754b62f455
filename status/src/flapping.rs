//! Flap detection in the manner of Nagios: a weighted history of state changes.
//!
//! The last [`WINDOW`] check results are kept as one bit each ("did the status change on
//! this check?"). Recent changes weigh more than old ones (linearly from 0.8 for the
//! oldest to 1.2 for the newest), and the weighted sum over the window gives a *percent
//! state change*. An instance starts flapping above the high threshold and stops below the
//! low one; the gap between the two keeps the flag itself from flapping.

use serde::{Deserialize, Serialize};

/// Number of check results considered.
pub const WINDOW: u32 = 20;

/// Thresholds in percent state change.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FlapThresholds {
    pub high_pct: f32,
    pub low_pct: f32,
}

impl Default for FlapThresholds {
    fn default() -> Self {
        Self { high_pct: 50.0, low_pct: 25.0 }
    }
}

/// Bit `i` is set when the `i`-th most recent check changed the status (bit 0 = newest).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlapHistory {
    bits: u32,
}

impl FlapHistory {
    pub fn record(&mut self, changed: bool) {
        self.bits = ((self.bits << 1) | u32::from(changed)) & ((1 << WINDOW) - 1);
    }

    /// Weighted percent state change over the window. A history shorter than the window
    /// counts its missing results as unchanged, so a new instance needs many changes before
    /// it can be called flapping.
    pub fn percent_state_change(&self) -> f32 {
        let weighted: f32 = (0..WINDOW)
            .filter(|age| self.bits & (1 << age) != 0)
            .map(|age| {
                let position = (WINDOW - 1 - age) as f32; // 0 = oldest, WINDOW-1 = newest
                0.8 + 0.4 * position / (WINDOW - 1) as f32
            })
            .sum();
        weighted / WINDOW as f32 * 100.0
    }

    /// Whether the instance is flapping after this history, given whether it was before.
    pub fn is_flapping(&self, was_flapping: bool, thresholds: FlapThresholds) -> bool {
        let pct = self.percent_state_change();
        if was_flapping { pct >= thresholds.low_pct } else { pct > thresholds.high_pct }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history(changes: impl IntoIterator<Item = bool>) -> FlapHistory {
        let mut h = FlapHistory::default();
        changes.into_iter().for_each(|c| h.record(c));
        h
    }

    #[test]
    fn steady_instance_has_no_state_change() {
        assert_eq!(history([false; 30]).percent_state_change(), 0.0);
    }

    #[test]
    fn every_check_changing_is_one_hundred_percent() {
        let pct = history([true; 20]).percent_state_change();
        assert!((pct - 100.0).abs() < 0.01, "{pct}");
    }

    #[test]
    fn recent_changes_weigh_more_than_old_ones() {
        let old = history([true].into_iter().chain([false; 19]));
        let new = history([false; 19].into_iter().chain([true]));
        assert!(new.percent_state_change() > old.percent_state_change());
        assert!((old.percent_state_change() - 4.0).abs() < 0.01);
        assert!((new.percent_state_change() - 6.0).abs() < 0.01);
    }

    #[test]
    fn hysteresis_between_start_and_stop() {
        let t = FlapThresholds::default();
        // Alternating every check: 100% → flapping.
        let flapping = history((0..20).map(|_| true));
        assert!(flapping.is_flapping(false, t));
        // Ten recent changes out of twenty: ~60% → starts; 35% keeps an existing flag but
        // does not start one.
        let mid = history([false; 13].into_iter().chain([true; 7]));
        let pct = mid.percent_state_change();
        assert!(pct > t.low_pct && pct < t.high_pct, "{pct}");
        assert!(mid.is_flapping(true, t));
        assert!(!mid.is_flapping(false, t));
        // Calm again: the flag clears.
        assert!(!history([false; 20]).is_flapping(true, t));
    }
}
