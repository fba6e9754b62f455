//! Operational endpoints, open without a token: liveness, readiness and metrics.

use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use bytes::Bytes;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload};
use serde_json::{Value, json};
use utoipa_axum::routes;

use crate::error::{ApiError, ErrorBody, Json};
use crate::openapi::ApiRouter;
use crate::state::AppState;

const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

pub fn routes() -> ApiRouter {
    ApiRouter::new().routes(routes!(healthz)).routes(routes!(readyz)).routes(routes!(metrics))
}

/// Liveness: the process answers. Says nothing of its dependencies, so an orchestrator does
/// not restart a healthy process because the database blinked.
#[utoipa::path(get, path = "/healthz", tag = "ops",
    responses((status = 200, description = "Alive", body = Object, example = json!({ "status": "ok" }))))]
async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Readiness: the database answers and the object store takes a write, a read and a delete.
#[utoipa::path(get, path = "/readyz", tag = "ops", responses(
    (status = 200, description = "Ready", body = Object,
        example = json!({ "status": "ready", "checks": { "database": "ok", "object_store": "ok" } })),
    (status = 503, description = "`not_ready`: `details.checks` says what failed", body = ErrorBody)))]
async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let (database, objects) = tokio::join!(check_database(&state), check_object_store(&state));
    let checks = json!({
        "database": database.as_ref().map_or_else(|e| e.clone(), |_| "ok".to_owned()),
        "object_store": objects.as_ref().map_or_else(|e| e.clone(), |_| "ok".to_owned()),
    });
    let failing: Vec<&str> = [("database", &database), ("object_store", &objects)]
        .into_iter()
        .filter_map(|(name, result)| result.is_err().then_some(name))
        .collect();
    if failing.is_empty() {
        Ok(Json(json!({ "status": "ready", "checks": checks })))
    } else {
        Err(ApiError::NotReady { failing: failing.join(", "), checks })
    }
}

async fn check_database(state: &AppState) -> Result<(), String> {
    let query = sqlx::query("SELECT 1").execute(&state.db);
    match tokio::time::timeout(CHECK_TIMEOUT, query).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {CHECK_TIMEOUT:?}")),
    }
}

async fn check_object_store(state: &AppState) -> Result<(), String> {
    let store = state.objects.clone();
    let probe = async move {
        let path = Path::from(format!("_readyz/{}", uuid::Uuid::new_v4()));
        let payload = Bytes::from_static(b"ready");
        store.put(&path, PutPayload::from(payload.clone())).await?;
        let read = store.get(&path).await?.bytes().await?;
        store.delete(&path).await?;
        if read != payload {
            return Err(object_store::Error::Generic {
                store: "readyz",
                source: "read back different bytes than written".into(),
            });
        }
        Ok(())
    };
    match tokio::time::timeout(CHECK_TIMEOUT, probe).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {CHECK_TIMEOUT:?}")),
    }
}

/// Prometheus text exposition of every counter and histogram.
#[utoipa::path(get, path = "/metrics", tag = "ops",
    responses((status = 200, description = "Prometheus text format 0.0.4", content_type = "text/plain", body = String)))]
async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render())
}
