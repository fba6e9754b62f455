//! `GET /v1/health/heatmap`: every instance's status in one compact answer, grouped by app
//! and cluster, for views that draw the whole fleet (the dashboard's heatmap). Changes after
//! it are read from `/v1/health/events`.

use axum::extract::State;
use serde::Serialize;
use slipway_status::health::Health;
use slipway_status::heatmap::HeatmapGroup;
use utoipa::ToSchema;
use utoipa_axum::routes;

use crate::error::Json;
use crate::openapi::ApiRouter;
use crate::state::AppState;

pub fn routes() -> ApiRouter {
    ApiRouter::new().routes(routes!(heatmap))
}

#[derive(Serialize, ToSchema)]
struct HeatmapAnswer {
    /// What each digit of a group's `codes` means, by position.
    statuses: [Health; 6],
    groups: Vec<HeatmapGroup>,
}

/// Every instance's status, grouped by app and cluster, one digit per instance.
#[utoipa::path(get, path = "/v1/health/heatmap", tag = "health", responses((status = 200, body = HeatmapAnswer)))]
async fn heatmap(State(state): State<AppState>) -> Json<HeatmapAnswer> {
    Json(HeatmapAnswer { statuses: Health::ALL, groups: state.status.heatmap() })
}
