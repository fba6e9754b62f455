//! The simulator's HTTP server: one axum router per listener over the shared state.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::header::USER_AGENT;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;

use super::{FleetState, Mode, admin, kube};

pub async fn run(listener: TcpListener, state: Arc<FleetState>) {
    let app = Router::new()
        .route("/instances/{n}/health", get(health))
        .route("/apis/apps/v1/namespaces/{ns}/deployments", get(kube::list_deployments))
        .merge(admin::routes())
        .with_state(state);
    let _ = axum::serve(listener, app).await;
}

async fn health(State(state): State<Arc<FleetState>>, Path(n): Path<usize>, headers: HeaderMap) -> Response {
    let agent = headers.get(USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or("");
    let Some((mode, delay_ms)) = state.answer(n, agent) else {
        return (StatusCode::NOT_FOUND, "no such instance").into_response();
    };
    let json = [("content-type", "application/json")];
    match mode {
        Mode::Healthy | Mode::Flap => (json, r#"{"status":"ok"}"#).into_response(),
        Mode::Fail => (StatusCode::SERVICE_UNAVAILABLE, json, r#"{"status":"down"}"#).into_response(),
        Mode::Slow => {
            tokio::time::sleep(Duration::from_millis(delay_ms.into())).await;
            (json, r#"{"status":"ok"}"#).into_response()
        }
        Mode::Hang => {
            std::future::pending::<()>().await;
            StatusCode::GATEWAY_TIMEOUT.into_response()
        }
    }
}
