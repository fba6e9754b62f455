//! The simulator's admin API:
//!
//! - `POST /admin/faults` `{"mode": "fail|slow|hang|flap|healthy", "ids": [..]}` or with
//!   `"from"`/`"to"` (a range, `to` exclusive), and `"delayMs"` for `slow`;
//!   answers `{"changed": n}`;
//! - `GET /admin/requests?from=&to=`: `{"total", "lists", "counts": [..]}` (health
//!   requests per instance in the range, Kubernetes LISTs served);
//! - `POST /admin/reset-counts`.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, State};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{FleetState, Mode};

pub fn routes() -> Router<Arc<FleetState>> {
    Router::new()
        .route("/admin/faults", post(faults))
        .route("/admin/requests", get(requests))
        .route("/admin/reset-counts", post(reset))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Faults {
    mode: Mode,
    #[serde(default)]
    ids: Vec<usize>,
    from: Option<usize>,
    to: Option<usize>,
    #[serde(default)]
    delay_ms: u32,
}

async fn faults(
    State(state): State<Arc<FleetState>>,
    axum::Json(f): axum::Json<Faults>,
) -> axum::Json<Value> {
    let mut changed = state.set_mode_of(&f.ids, f.mode, f.delay_ms);
    if let (Some(from), Some(to)) = (f.from, f.to) {
        changed += state.set_mode(from..to, f.mode, f.delay_ms);
    }
    axum::Json(json!({ "changed": changed }))
}

#[derive(Deserialize)]
struct Range {
    from: Option<usize>,
    to: Option<usize>,
}

async fn requests(State(state): State<Arc<FleetState>>, Query(r): Query<Range>) -> axum::Json<Value> {
    let range = r.from.unwrap_or(0)..r.to.unwrap_or(usize::MAX);
    axum::Json(json!({
        "total": state.total_requests(),
        "lists": state.lists(),
        "counts": state.requests(range),
    }))
}

async fn reset(State(state): State<Arc<FleetState>>) -> axum::Json<Value> {
    state.reset_counts();
    axum::Json(json!({ "reset": true }))
}
