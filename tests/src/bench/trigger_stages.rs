//! The server's per-stage latency histograms of accepted deliveries
//! (`slipway_trigger_stage_seconds{stage}` on `/metrics`), differenced between two scrapes
//! so each bench phase gets its own p50, p99 and mean per stage.

use std::collections::BTreeMap;

use serde_json::{Value, json};

const BUCKET: &str = "slipway_trigger_stage_seconds_bucket{stage=\"";
const SUM: &str = "slipway_trigger_stage_seconds_sum{stage=\"";

/// Cumulative bucket counts (by upper bound in seconds) and the sum of seconds, per stage.
#[derive(Default)]
pub struct StageHistograms {
    stages: BTreeMap<String, (Vec<(f64, f64)>, f64)>,
}

impl StageHistograms {
    /// Reads the stage series out of a Prometheus text exposition.
    pub fn parse(text: &str) -> StageHistograms {
        let mut histograms = StageHistograms::default();
        for (series, value) in super::metric_samples(text) {
            if let Some(rest) = series.strip_prefix(BUCKET) {
                let Some((stage, rest)) = rest.split_once('"') else { continue };
                let le = rest.trim_start_matches(",le=\"").trim_end_matches("\"}");
                let bound = if le == "+Inf" { f64::INFINITY } else { le.parse().unwrap_or(f64::NAN) };
                histograms.stages.entry(stage.to_owned()).or_default().0.push((bound, value));
            } else if let Some(rest) = series.strip_prefix(SUM) {
                let stage = rest.trim_end_matches("\"}");
                histograms.stages.entry(stage.to_owned()).or_default().1 = value;
            }
        }
        histograms
    }

    /// `{stage: {count, mean_ms, p50_ms, p99_ms}}` of what was recorded after `before`;
    /// quantiles are interpolated within their bucket, the mean is exact. `unaccounted_ms`
    /// is the mean of `total` beyond the means of the other stages.
    pub fn since(&self, before: &StageHistograms) -> Value {
        let mut out = serde_json::Map::new();
        let mut means = 0.0;
        for (stage, (buckets, sum)) in &self.stages {
            let (earlier, earlier_sum) =
                before.stages.get(stage).map_or((&[][..], 0.0), |(b, s)| (b.as_slice(), *s));
            let counts: Vec<(f64, f64)> = buckets
                .iter()
                .map(|&(bound, count)| {
                    let old = earlier.iter().find(|(b, _)| *b == bound).map_or(0.0, |(_, c)| *c);
                    (bound, count - old)
                })
                .collect();
            let count = counts.last().map_or(0.0, |(_, c)| *c);
            if count == 0.0 {
                continue;
            }
            let mean_ms = (sum - earlier_sum) / count * 1000.0;
            if stage != "total" {
                means += mean_ms;
            }
            out.insert(
                stage.clone(),
                json!({
                    "count": count,
                    "mean_ms": round2(mean_ms),
                    "p50_ms": round2(quantile(&counts, 0.50) * 1000.0),
                    "p99_ms": round2(quantile(&counts, 0.99) * 1000.0),
                }),
            );
        }
        if let Some(total) = out.get("total").and_then(|t| t["mean_ms"].as_f64()) {
            out.insert("unaccounted_ms".into(), json!(round2(total - means)));
        }
        Value::Object(out)
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// The `q` quantile of cumulative `(upper bound, count)` buckets, linear within a bucket; the
/// last finite bound when it falls in `+Inf`.
fn quantile(cumulative: &[(f64, f64)], q: f64) -> f64 {
    let total = cumulative.last().map_or(0.0, |(_, c)| *c);
    let rank = q * total;
    let (mut lower, mut below) = (0.0, 0.0);
    for &(bound, count) in cumulative {
        if count >= rank {
            if bound.is_infinite() {
                return lower;
            }
            let within = count - below;
            let share = if within > 0.0 { (rank - below) / within } else { 1.0 };
            return lower + (bound - lower) * share;
        }
        (lower, below) = (bound, count);
    }
    lower
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_are_differenced_and_their_quantiles_interpolated() {
        let before = StageHistograms::parse(
            "slipway_trigger_stage_seconds_bucket{stage=\"commit\",le=\"0.001\"} 10\n\
             slipway_trigger_stage_seconds_bucket{stage=\"commit\",le=\"0.002\"} 10\n\
             slipway_trigger_stage_seconds_bucket{stage=\"commit\",le=\"+Inf\"} 10\n\
             slipway_trigger_stage_seconds_sum{stage=\"commit\"} 0.005\n",
        );
        let after = StageHistograms::parse(
            "# TYPE slipway_trigger_stage_seconds histogram\n\
             slipway_trigger_stage_seconds_bucket{stage=\"commit\",le=\"0.001\"} 60\n\
             slipway_trigger_stage_seconds_bucket{stage=\"commit\",le=\"0.002\"} 110\n\
             slipway_trigger_stage_seconds_bucket{stage=\"commit\",le=\"+Inf\"} 110\n\
             slipway_trigger_stage_seconds_sum{stage=\"commit\"} 0.105\n\
             slipway_trigger_stage_seconds_count{stage=\"commit\"} 110\n\
             slipway_trigger_stage_seconds_bucket{stage=\"total\",le=\"0.001\"} 0\n\
             slipway_trigger_stage_seconds_bucket{stage=\"total\",le=\"0.004\"} 100\n\
             slipway_trigger_stage_seconds_bucket{stage=\"total\",le=\"+Inf\"} 100\n\
             slipway_trigger_stage_seconds_sum{stage=\"total\"} 0.25\n",
        );
        let stages = after.since(&before);
        // 100 new commits: 50 up to 1 ms, 50 in (1, 2] ms; 0.1 s in all.
        assert_eq!(stages["commit"], json!({"count": 100.0, "mean_ms": 1.0, "p50_ms": 1.0, "p99_ms": 1.98}));
        assert_eq!(stages["total"]["p50_ms"], json!(2.5));
        assert_eq!(stages["unaccounted_ms"], json!(1.5));
    }
}
