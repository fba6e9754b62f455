//! The health of one instance as the status scaler stores and ranks it.
//!
//! The plugin host reports a [`slipway_plugins::HealthStatus`]; this crate keeps its own
//! one-byte copy because it owns the *severity order* used by aggregation and the compact
//! per-instance state (100,000 instances are kept in memory).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Health of a component or app instance, ordered by severity:
/// `healthy < suspended < progressing < missing < degraded < unknown`, so the worst of a
/// set is its maximum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[repr(u8)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Health {
    Healthy,
    Suspended,
    Progressing,
    Missing,
    Degraded,
    Unknown,
}

impl Health {
    pub const ALL: [Health; 6] = [
        Health::Healthy,
        Health::Suspended,
        Health::Progressing,
        Health::Missing,
        Health::Degraded,
        Health::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Health::Healthy => "healthy",
            Health::Suspended => "suspended",
            Health::Progressing => "progressing",
            Health::Missing => "missing",
            Health::Degraded => "degraded",
            Health::Unknown => "unknown",
        }
    }

    /// Anything but healthy counts as an anomaly for scheduling: it is checked tightly.
    pub fn is_anomalous(self) -> bool {
        self != Health::Healthy
    }
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<slipway_plugins::HealthStatus> for Health {
    fn from(s: slipway_plugins::HealthStatus) -> Self {
        use slipway_plugins::HealthStatus as P;
        match s {
            P::Healthy => Health::Healthy,
            P::Suspended => Health::Suspended,
            P::Progressing => Health::Progressing,
            P::Missing => Health::Missing,
            P::Degraded => Health::Degraded,
            P::Unknown => Health::Unknown,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("`{0}` is not a health status (healthy, suspended, progressing, missing, degraded, unknown)")]
pub struct UnknownHealth(pub String);

impl FromStr for Health {
    type Err = UnknownHealth;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Health::ALL.into_iter().find(|h| h.as_str() == s).ok_or_else(|| UnknownHealth(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severity_order_is_the_documented_one() {
        let mut shuffled = vec![
            Health::Unknown,
            Health::Healthy,
            Health::Degraded,
            Health::Missing,
            Health::Progressing,
            Health::Suspended,
        ];
        shuffled.sort();
        assert_eq!(shuffled, Health::ALL);
    }

    #[test]
    fn parses_its_own_names_only() {
        for h in Health::ALL {
            assert_eq!(h.as_str().parse::<Health>().unwrap(), h);
        }
        assert!("sick".parse::<Health>().is_err());
    }
}
