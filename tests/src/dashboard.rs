//! The dashboard in headless Chromium over a simulated fleet, shared by the dashboard test
//! and the `dashboard` benchmark: instances registered through the API, the page opened
//! and signed in through its token dialog like a person would, and the heatmap's first
//! render and frame times read from the page (`window.slipwayDashboard`).

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;
use serde_json::json;

use crate::browser::Browser;
use crate::fleet::{Fleet, FleetConfig, Layout, Mode};
use crate::server::TestServer;

/// 10 components per app instance, dealt over 40 apps and 3 clusters: 120 heatmap groups.
pub const LAYOUT: Layout = Layout { per_app: 10, apps: 40, clusters: 3 };
/// Instances per registration request (the API's limit).
const CHUNK: usize = 10_000;

/// A server carrying a simulated fleet, and a browser on its dashboard.
pub struct FleetView {
    pub server: TestServer,
    pub fleet: Fleet,
    pub browser: Browser,
    pub instances: usize,
}

/// How smoothly the page drew while transitions streamed in.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FrameFigures {
    pub frames: usize,
    pub frame_ms_p95: f64,
    pub frame_ms_max: f64,
    /// The fewest frames drawn in any whole second of the window.
    pub min_fps: f64,
    /// Transitions the page applied to the heatmap during the window.
    pub transitions_applied: u64,
}

impl FleetView {
    /// Registers `instances` simulated instances (in requests of 10,000) and opens a
    /// browser. `checks_per_s` caps the status scaler's checks, so the first checks of the
    /// fleet arrive as a steady stream of transitions for `instances / checks_per_s` s.
    pub async fn start(
        instances: usize,
        checks_per_s: u32,
        chromium: &Path,
        driver: &Path,
    ) -> anyhow::Result<FleetView> {
        let fleet = Fleet::start(FleetConfig { instances, ports: 8, per_namespace: 1_000 }, 0).await?;
        let server = TestServer::start_with(
            |c| {
                c.status.budget.global_per_s = checks_per_s;
                c.limits.max_body_bytes = 32 * 1024 * 1024;
            },
            slipway_server::router::app,
        )
        .await;
        let client = server.client();
        let started = Instant::now();
        for from in (0..instances).step_by(CHUNK) {
            let body = LAYOUT.http_body(&fleet.endpoints, from..(from + CHUNK).min(instances));
            register(&client, &server.url("/v1/instances"), &body).await?;
        }
        eprintln!("dashboard: registered {instances} instances in {:.1} s", started.elapsed().as_secs_f64());
        let browser = Browser::start(chromium, driver).await?;
        Ok(FleetView { server, fleet, browser, instances })
    }

    /// The dashboard URL with `fragment` (e.g. `#/plugins`).
    pub fn url(&self, fragment: &str) -> String {
        self.server.url(&format!("/{fragment}"))
    }

    /// Opens the dashboard, which asks for a token; types the admin token and submits it.
    /// With `screenshots`, the dialog is photographed before it is submitted.
    pub async fn sign_in(&self, screenshots: Option<&Path>) -> anyhow::Result<()> {
        self.browser.client.goto(&self.url("#/health")).await?;
        self.browser.type_into("#token-dialog input[name=token]", &self.server.admin_token).await?;
        if let Some(dir) = screenshots {
            self.browser.screenshot(dir, "01-token-dialog").await?;
        }
        self.browser.click("#token-submit").await?;
        self.wait_heatmap().await
    }

    async fn wait_heatmap(&self) -> anyhow::Result<()> {
        let script = "return !!window.slipwayDashboard && window.slipwayDashboard.firstRenderMs !== null";
        self.browser.wait_js("heatmap drawn", Duration::from_secs(60), script, vec![]).await
    }

    /// Reloads the page (the token stays in the tab's session) and returns the time from
    /// the start of navigation to the heatmap's first paint, in ms.
    pub async fn first_render_ms(&self) -> anyhow::Result<f64> {
        self.browser.client.refresh().await?;
        self.wait_heatmap().await?;
        let value =
            self.browser.client.execute("return window.slipwayDashboard.firstRenderMs", vec![]).await?;
        value.as_f64().context("firstRenderMs is a number")
    }

    /// Statuses of the heatmap's cells as the page counts them.
    pub async fn heatmap_counts(&self) -> anyhow::Result<BTreeMap<String, u64>> {
        let value = self.browser.client.execute("return window.slipwayDashboard.counts()", vec![]).await?;
        Ok(serde_json::from_value(value)?)
    }

    /// Records frames for `window` while the instances in `faults` start failing, one
    /// slice a second; a deploy event for each affected app instance has them checked at
    /// once, so their transitions stream in through the whole window.
    pub async fn frames_during(
        &self,
        window: Duration,
        faults: Range<usize>,
    ) -> anyhow::Result<FrameFigures> {
        let seconds = window.as_secs().max(1) as usize;
        let slice = faults.len().div_ceil(seconds);
        let client = self.server.client();
        self.browser.client.execute("window.slipwayDashboard.record()", vec![]).await?;
        let started = Instant::now();
        for second in 0..seconds {
            let from = faults.start + second * slice;
            let part = from..(from + slice).min(faults.end);
            self.fleet.state.set_mode(part.clone(), Mode::Fail, 0);
            let mut app_instances: Vec<usize> = part.map(|n| LAYOUT.app_instance(n)).collect();
            app_instances.dedup();
            for ai in app_instances {
                let url = self.server.url(&format!("/v1/instances/ai{ai}/events"));
                client.post(url).json(&json!({ "type": "deploy" })).send().await?.error_for_status()?;
            }
            tokio::time::sleep(
                (started + Duration::from_secs(second as u64 + 1)).saturating_duration_since(Instant::now()),
            )
            .await;
        }
        let recorded = self.browser.client.execute("return window.slipwayDashboard.stop()", vec![]).await?;
        let frames: Vec<f64> = serde_json::from_value(recorded["frames"].clone())?;
        Ok(frame_figures(&frames, recorded["applied"].as_u64().unwrap_or(0)))
    }

    /// Where instance `id`'s cell is on the heatmap canvas, in CSS pixels.
    pub async fn cell_center(&self, id: &str) -> anyhow::Result<(f64, f64)> {
        let at = self
            .browser
            .client
            .execute("return window.slipwayDashboard.cellCenter(arguments[0])", vec![json!(id)])
            .await?;
        match (at["x"].as_f64(), at["y"].as_f64()) {
            (Some(x), Some(y)) => Ok((x, y)),
            _ => bail!("instance {id} has no cell on the heatmap: {at}"),
        }
    }
}

/// One all-or-nothing registration request. SQLite can refuse the token lookup with
/// "database is locked" while the scaler records a burst of transitions; such a refusal
/// registered nothing, so it is sent again (up to ten times).
async fn register(client: &reqwest::Client, url: &str, body: &serde_json::Value) -> anyhow::Result<()> {
    for attempt in 1.. {
        let response = client.post(url).json(body).send().await?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let text = response.text().await?;
        if attempt == 10 || !text.contains("database is locked") {
            bail!("registering instances answered {status}: {text}");
        }
        eprintln!("dashboard: registration refused ({text}); again in 2 s");
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    unreachable!("the loop returns or fails by its tenth attempt")
}

/// Figures from the intervals between animation frames (ms) over a recording window.
pub fn frame_figures(frames: &[f64], applied: u64) -> FrameFigures {
    let mut sorted = frames.to_vec();
    sorted.sort_by(f64::total_cmp);
    let p95 = sorted.get((sorted.len() * 95).div_ceil(100).saturating_sub(1)).copied().unwrap_or(0.0);
    let mut min_fps = f64::INFINITY;
    let (mut count, mut elapsed) = (0usize, 0.0f64);
    for &dt in frames {
        count += 1;
        elapsed += dt;
        if elapsed >= 1000.0 {
            min_fps = min_fps.min(count as f64 * 1000.0 / elapsed);
            (count, elapsed) = (0, 0.0);
        }
    }
    FrameFigures {
        frames: frames.len(),
        frame_ms_p95: round1(p95),
        frame_ms_max: round1(sorted.last().copied().unwrap_or(0.0)),
        min_fps: if min_fps.is_finite() { round1(min_fps) } else { 0.0 },
        transitions_applied: applied,
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_frame_shows_in_the_worst_second_and_the_tail() {
        let mut frames = vec![16.7; 120];
        frames[70] = 400.0;
        let f = frame_figures(&frames, 5);
        assert_eq!(f.frames, 120);
        assert_eq!(f.frame_ms_max, 400.0);
        assert_eq!(f.frame_ms_p95, 16.7);
        assert!(f.min_fps < 40.0 && f.min_fps > 30.0, "{f:?}");
        assert_eq!(frame_figures(&[], 0).min_fps, 0.0);
    }
}
