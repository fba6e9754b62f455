//! `dashboard`: the health heatmap in headless Chromium over a simulated fleet. Full:
//! 100,000 instances; `--quick`: 20,000. The status scaler's checks are capped at 2,000/s,
//! so the fleet's first checks stream in as transitions while the page is measured, and
//! 2 % of the instances start failing during the frame window.
//!
//! Figures: `first_render_ms` (median of three page loads: navigation start to the heatmap's
//! first paint, snapshot fetched and parsed, every cell drawn), and over the frame window
//! the 95th percentile and worst interval between animation frames, the fewest frames in
//! any whole second (`min_fps`), and the transitions applied to the heatmap.

use std::time::Duration;

use serde_json::{Value, json};

use crate::browser;
use crate::dashboard::FleetView;

const LOADS: usize = 3;

pub async fn run(quick: bool) -> anyhow::Result<Value> {
    let (chromium, driver) = browser::installed().map_err(anyhow::Error::msg)?;
    let instances = if quick { 20_000 } else { 100_000 };
    let window = Duration::from_secs(if quick { 5 } else { 10 });
    let view = FleetView::start(instances, 2_000, &chromium, &driver).await?;
    view.sign_in(None).await?;
    let mut renders = Vec::with_capacity(LOADS);
    for _ in 0..LOADS {
        renders.push(view.first_render_ms().await?);
    }
    eprintln!("dashboard: first renders {renders:?} ms");
    renders.sort_by(f64::total_cmp);
    let frames = view.frames_during(window, 0..instances / 50).await?;
    eprintln!("dashboard: {frames:?}");
    let FleetView { browser, .. } = view;
    browser.close().await?;
    Ok(json!({
        "bench": "dashboard",
        "instances": instances,
        "first_render_ms": renders[LOADS / 2].round(),
        "first_render_ms_max": renders[LOADS - 1].round(),
        "frame_ms_p95": frames.frame_ms_p95,
        "frame_ms_max": frames.frame_ms_max,
        "min_fps": frames.min_fps,
        "transitions_applied": frames.transitions_applied,
        "transitions_per_s": (frames.transitions_applied as f64 / window.as_secs_f64()).round(),
    }))
}
