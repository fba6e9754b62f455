//! The routes of the HTTP API, one module per area of the domain. Each area adds its
//! annotated handlers with `routes!` (see [`crate::openapi`]), so its routes and their
//! OpenAPI operations come from one place.

mod builds;
mod cluster;
mod health;
mod heatmap;
mod instances;
mod ops;
mod plugins;
mod reference;
mod registry;
mod sources;
mod tokens;
mod triggers;

use crate::openapi::ApiRouter;

pub fn routes() -> ApiRouter {
    ApiRouter::new()
        .merge(ops::routes())
        .merge(reference::routes())
        .merge(health::routes())
        .merge(heatmap::routes())
        .merge(instances::routes())
        .merge(plugins::routes())
        .merge(registry::routes())
        .merge(tokens::routes())
        .merge(builds::routes())
        .merge(cluster::routes())
        .merge(sources::routes())
        .merge(triggers::routes())
        .merge(crate::dashboard::routes())
}

/// The OpenAPI document of [`routes`], built once.
pub fn document() -> &'static utoipa::openapi::OpenApi {
    static DOCUMENT: std::sync::OnceLock<utoipa::openapi::OpenApi> = std::sync::OnceLock::new();
    DOCUMENT.get_or_init(|| routes().split().1)
}
