//! The routes of the HTTP API, one module per area of the domain.

mod ops;
mod registry;

use axum::Router;

use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new().merge(ops::routes()).merge(registry::routes())
}
