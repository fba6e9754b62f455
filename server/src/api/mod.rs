//! The routes of the HTTP API, one module per area of the domain.

mod builds;
mod health;
mod heatmap;
mod instances;
mod ops;
mod plugins;
mod registry;
mod tokens;
mod triggers;

use axum::Router;

use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .merge(ops::routes())
        .merge(health::routes())
        .merge(heatmap::routes())
        .merge(instances::routes())
        .merge(plugins::routes())
        .merge(registry::routes())
        .merge(tokens::routes())
        .merge(builds::routes())
        .merge(triggers::routes())
}
