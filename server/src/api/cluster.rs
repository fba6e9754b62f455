//! `GET /v1/cluster`: the replicas sharing this database, their heartbeats, and the work each
//! one holds, as any replica sees it.

use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::routes;

use crate::cluster::ReplicaView;
use crate::error::{ApiError, ErrorBody, Json};
use crate::openapi::ApiRouter;
use crate::state::AppState;

pub fn routes() -> ApiRouter {
    ApiRouter::new().routes(routes!(cluster))
}

#[derive(Serialize, ToSchema)]
struct ClusterView {
    /// The replica that answered.
    replica: String,
    /// How long a lease or heartbeat holds, in milliseconds.
    lease_ms: u64,
    /// This replica first, then the others by id; replicas silent for a day are forgotten.
    replicas: Vec<ReplicaView>,
}

/// The replicas, their heartbeats (by the database's clock), and what each one runs.
#[utoipa::path(get, path = "/v1/cluster", tag = "cluster", responses(
    (status = 200, body = ClusterView),
    (status = 503, description = "`database_failed`: the database cannot be read", body = ErrorBody)))]
async fn cluster(State(state): State<AppState>) -> Result<Json<ClusterView>, ApiError> {
    Ok(Json(ClusterView {
        replica: state.cluster.id().to_owned(),
        lease_ms: state.cluster.lease().as_millis() as u64,
        replicas: state.cluster.replicas().await?,
    }))
}
