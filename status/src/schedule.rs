//! The adaptive check schedule of one instance: pure rules over data, no clock of its own.
//!
//! The exact algorithm is written out in `status/README.md`; every rule there has a test
//! here. Times are milliseconds on the caller's clock, so tests drive them directly.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::flapping::{FlapHistory, FlapThresholds};
use crate::health::Health;

/// Tunables of the schedule, with the defaults the README documents.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ScheduleConfig {
    /// Interval after registration, a deploy event, any change, and while anomalous.
    #[serde(with = "millis")]
    pub tight: Duration,
    /// Longest interval a steadily healthy instance backs off to.
    #[serde(with = "millis")]
    pub ceiling: Duration,
    /// Each confirmed healthy result multiplies the interval by this.
    pub backoff_factor: u32,
    /// Consecutive healthy results needed before backing off.
    pub confirmations: u8,
    /// Spread, in percent of the interval, that keeps instances out of lockstep.
    pub jitter_pct: u8,
    pub flapping: FlapThresholds,
    /// Anomalies in one app or cluster within `sibling_window` that bring the siblings'
    /// next check forward.
    pub sibling_threshold: u16,
    #[serde(with = "millis")]
    pub sibling_window: Duration,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        Self {
            tight: Duration::from_secs(5),
            ceiling: Duration::from_secs(300),
            backoff_factor: 2,
            confirmations: 3,
            jitter_pct: 10,
            flapping: FlapThresholds::default(),
            sibling_threshold: 3,
            sibling_window: Duration::from_secs(60),
        }
    }
}

pub(crate) mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

/// Per-instance schedule state: 12 bytes, kept for every instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckSchedule {
    /// The current base interval before jitter.
    interval_ms: u32,
    /// Consecutive healthy results since the last change or anomaly.
    healthy_streak: u8,
    flapping: bool,
    history: FlapHistory,
}

/// What one result did to the schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Delay until the next check.
    pub delay_ms: u64,
    pub changed: bool,
    pub flapping: bool,
}

impl CheckSchedule {
    /// A newly registered (or restored) instance starts at the tight interval.
    pub fn new(config: &ScheduleConfig) -> Self {
        Self {
            interval_ms: ms(config.tight),
            healthy_streak: 0,
            flapping: false,
            history: FlapHistory::default(),
        }
    }

    /// How far it has backed off: the interval in ms and the healthy streak, what another
    /// replica needs to continue the schedule (see [`crate::handoff`]).
    pub fn backoff(&self) -> (u32, u8) {
        (self.interval_ms, self.healthy_streak)
    }

    /// Continues a schedule another replica kept (its flap history stays there).
    pub fn resumed(config: &ScheduleConfig, interval_ms: u32, healthy_streak: u8) -> Self {
        Self {
            interval_ms: interval_ms.clamp(ms(config.tight), ms(config.ceiling).max(ms(config.tight))),
            healthy_streak,
            ..Self::new(config)
        }
    }

    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms.into())
    }

    pub fn is_flapping(&self) -> bool {
        self.flapping
    }

    /// Whether the instance is still being confirmed after a change (checked tightly):
    /// such instances go first when the budget is short.
    pub fn is_settling(&self, config: &ScheduleConfig) -> bool {
        self.healthy_streak < config.confirmations || self.flapping
    }

    /// A deploy event or trigger: the instance is about to change, watch it tightly again.
    pub fn on_change_event(&mut self, config: &ScheduleConfig) {
        self.interval_ms = ms(config.tight);
        self.healthy_streak = 0;
    }

    /// Applies one check result. `previous` is `None` for the first result ever (which
    /// is not counted as a state change for flap detection). `jitter_seed` varies per
    /// instance and per check so instances never move in lockstep.
    pub fn on_result(
        &mut self,
        config: &ScheduleConfig,
        previous: Option<Health>,
        current: Health,
        jitter_seed: u64,
    ) -> Decision {
        let changed = previous.is_some_and(|p| p != current);
        if previous.is_some() {
            self.history.record(changed);
            self.flapping = self.history.is_flapping(self.flapping, config.flapping);
        }
        let tight = ms(config.tight);
        let was_below_ceiling = self.interval_ms < ms(config.ceiling);
        if current.is_anomalous() || self.flapping {
            self.healthy_streak = 0;
            self.interval_ms = tight;
        } else {
            self.healthy_streak = if changed { 1 } else { self.healthy_streak.saturating_add(1) };
            self.interval_ms = if self.healthy_streak >= config.confirmations {
                self.interval_ms.saturating_mul(config.backoff_factor).clamp(tight, ms(config.ceiling))
            } else {
                tight
            };
        }
        let reached_ceiling = was_below_ceiling && self.interval_ms >= ms(config.ceiling);
        let delay_ms = if reached_ceiling && config.jitter_pct > 0 {
            // First step onto the ceiling: a phase drawn from the whole period, so
            // instances registered together do not keep checking together in waves.
            let (tight, ceiling) = (u64::from(tight), u64::from(ms(config.ceiling)));
            tight + mix(jitter_seed) % (ceiling - tight + 1)
        } else {
            self.jittered(config, jitter_seed)
        };
        Decision { delay_ms, changed, flapping: self.flapping }
    }

    /// Jitter only ever shortens the tight interval (an anomaly is re-checked within it)
    /// and only ever lengthens a stretched one (the ceiling is the least a calm instance
    /// waits, so the load on targets never exceeds one check per ceiling).
    fn jittered(&self, config: &ScheduleConfig, seed: u64) -> u64 {
        let interval = u64::from(self.interval_ms);
        let spread = interval * u64::from(config.jitter_pct) / 100;
        let offset = if spread == 0 { 0 } else { mix(seed) % (spread + 1) };
        if self.interval_ms <= ms(config.tight) { interval - offset } else { interval + offset }
    }
}

/// Where in `[0, window)` the first check of a restored or newly registered instance
/// falls, so a restart with 100,000 instances does not check them all at once.
pub fn first_check_offset(window: Duration, seed: u64) -> u64 {
    let window = ms(window) as u64;
    if window == 0 { 0 } else { mix(seed) % window }
}

/// SplitMix64: a cheap, well-spread hash for jitter (not for security).
pub fn mix(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn ms(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIGHT: u64 = 5_000;
    const CEILING: u64 = 300_000;

    fn no_jitter() -> ScheduleConfig {
        ScheduleConfig { jitter_pct: 0, ..ScheduleConfig::default() }
    }

    /// Feeds `results` after an initial healthy result and returns the delays.
    fn delays(config: &ScheduleConfig, s: &mut CheckSchedule, results: &[Health]) -> Vec<u64> {
        let mut prev = Some(Health::Healthy);
        results
            .iter()
            .enumerate()
            .map(|(i, &h)| {
                let d = s.on_result(config, prev, h, i as u64).delay_ms;
                prev = Some(h);
                d
            })
            .collect()
    }

    #[test]
    fn healthy_backs_off_after_confirmation_up_to_the_ceiling() {
        let c = no_jitter();
        let mut s = CheckSchedule::new(&c);
        assert_eq!(s.on_result(&c, None, Health::Healthy, 0).delay_ms, TIGHT, "first result: streak 1");
        let d = delays(&c, &mut s, &[Health::Healthy; 9]);
        assert_eq!(d, vec![TIGHT, 10_000, 20_000, 40_000, 80_000, 160_000, CEILING, CEILING, CEILING]);
    }

    #[test]
    fn anomaly_tightens_at_once_and_confirmation_is_needed_again() {
        let c = no_jitter();
        let mut s = CheckSchedule::new(&c);
        delays(&c, &mut s, &[Health::Healthy; 10]);
        assert_eq!(s.interval().as_millis() as u64, CEILING);
        let d = s.on_result(&c, Some(Health::Healthy), Health::Degraded, 1);
        assert!(d.changed);
        assert_eq!(d.delay_ms, TIGHT);
        // Still degraded: stays tight.
        assert_eq!(s.on_result(&c, Some(Health::Degraded), Health::Degraded, 2).delay_ms, TIGHT);
        // Recovery is a change: N = 3 healthy results at the tight interval, then back off.
        let mut prev = Some(Health::Degraded);
        let mut got = Vec::new();
        for i in 0..5 {
            got.push(s.on_result(&c, prev, Health::Healthy, i).delay_ms);
            prev = Some(Health::Healthy);
        }
        assert_eq!(got, vec![TIGHT, TIGHT, 10_000, 20_000, 40_000]);
    }

    #[test]
    fn confirmations_are_configurable() {
        let c = ScheduleConfig { confirmations: 1, ..no_jitter() };
        let mut s = CheckSchedule::new(&c);
        assert_eq!(s.on_result(&c, None, Health::Healthy, 0).delay_ms, 10_000);
    }

    #[test]
    fn deploy_event_drops_to_tight_and_restarts_confirmation() {
        let c = no_jitter();
        let mut s = CheckSchedule::new(&c);
        delays(&c, &mut s, &[Health::Healthy; 10]);
        s.on_change_event(&c);
        assert!(s.is_settling(&c));
        let d = delays(&c, &mut s, &[Health::Healthy; 3]);
        assert_eq!(d, vec![TIGHT, TIGHT, 10_000]);
    }

    #[test]
    fn flapping_instance_is_kept_tight_even_when_healthy() {
        let c = no_jitter();
        let mut s = CheckSchedule::new(&c);
        let flaps: Vec<Health> =
            (0..20).map(|i| if i % 2 == 0 { Health::Degraded } else { Health::Healthy }).collect();
        delays(&c, &mut s, &flaps);
        assert!(s.is_flapping());
        // Healthy, unchanged results while the flap flag holds stay at the tight interval.
        let d = delays(&c, &mut s, &[Health::Healthy; 4]);
        assert!(d.iter().all(|&d| d == TIGHT), "{d:?}");
        // After enough calm results the flag clears and backoff resumes.
        delays(&c, &mut s, &[Health::Healthy; 20]);
        assert!(!s.is_flapping());
        assert!(s.interval().as_millis() as u64 > TIGHT);
    }

    #[test]
    fn jitter_shortens_tight_and_lengthens_stretched_intervals_within_bounds() {
        let c = ScheduleConfig::default();
        let mut seen_tight = std::collections::HashSet::new();
        for seed in 0..200 {
            let mut s = CheckSchedule::new(&c);
            let d = s.on_result(&c, Some(Health::Healthy), Health::Degraded, seed).delay_ms;
            assert!((4_500..=TIGHT).contains(&d), "{d}");
            seen_tight.insert(d);
        }
        assert!(seen_tight.len() > 50, "instances must not move in lockstep");
        let mut s = CheckSchedule::new(&c);
        delays(&c, &mut s, &[Health::Healthy; 12]);
        for seed in 0..200 {
            let mut copy = s;
            let d = copy.on_result(&c, Some(Health::Healthy), Health::Healthy, seed).delay_ms;
            assert!((CEILING..=330_000).contains(&d), "{d}");
        }
    }

    #[test]
    fn the_first_step_onto_the_ceiling_draws_a_phase_from_the_whole_period() {
        let c = ScheduleConfig::default();
        let first: Vec<u64> = (0..1_000)
            .map(|seed| {
                let mut s = CheckSchedule::new(&c);
                delays(&c, &mut s, &[Health::Healthy; 7]);
                assert_eq!(s.interval().as_millis() as u64, 160_000);
                s.on_result(&c, Some(Health::Healthy), Health::Healthy, seed).delay_ms
            })
            .collect();
        assert!(first.iter().all(|d| (TIGHT..=CEILING).contains(d)));
        for bucket in 0..3 {
            let n = first.iter().filter(|&&d| (d - TIGHT) * 3 / (CEILING - TIGHT + 1) == bucket).count();
            assert!((250..420).contains(&n), "third {bucket}: {n}");
        }
    }

    #[test]
    fn first_round_is_spread_over_the_window() {
        let window = Duration::from_secs(5);
        let offsets: Vec<u64> = (0..10_000).map(|i| first_check_offset(window, i)).collect();
        assert!(offsets.iter().all(|&o| o < 5_000));
        // Every half-second bucket of the window gets roughly a tenth.
        for bucket in 0..10 {
            let n = offsets.iter().filter(|&&o| o / 500 == bucket).count();
            assert!((800..1_200).contains(&n), "bucket {bucket}: {n}");
        }
    }
}
