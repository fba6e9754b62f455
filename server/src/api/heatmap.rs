//! `GET /v1/health/heatmap`: every instance's status in one compact answer, grouped by app
//! and cluster, for views that draw the whole fleet (the dashboard's heatmap). Changes after
//! it are read from `/v1/health/events`.

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use serde::Serialize;
use slipway_status::health::Health;
use slipway_status::heatmap::HeatmapGroup;

use crate::error::Json;
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/health/heatmap", get(heatmap))
}

#[derive(Serialize)]
struct HeatmapAnswer {
    /// What each digit of a group's `codes` means, by position.
    statuses: [Health; 6],
    groups: Vec<HeatmapGroup>,
}

async fn heatmap(State(state): State<AppState>) -> Json<HeatmapAnswer> {
    Json(HeatmapAnswer { statuses: Health::ALL, groups: state.status.heatmap() })
}
