//! Token management: create (the secret is shown once), list, rotate, revoke.

use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use serde::{Deserialize, Serialize};

use crate::auth::{Scope, TokenInfo};
use crate::error::{ApiError, Json};
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/tokens", get(list).post(create))
        .route("/v1/tokens/{id}/rotate", post(rotate))
        .route("/v1/tokens/{id}", delete(revoke))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateToken {
    name: String,
    scopes: Vec<Scope>,
    /// Lifetime in seconds; absent means the token does not expire.
    expires_in_s: Option<u64>,
}

#[derive(Serialize)]
struct TokenWithSecret {
    token: TokenInfo,
    /// Shown only in this response; store it now.
    secret: String,
}

#[derive(Serialize)]
struct TokenList {
    tokens: Vec<TokenInfo>,
}

async fn create(
    State(state): State<AppState>,
    Json(body): Json<CreateToken>,
) -> Result<(StatusCode, Json<TokenWithSecret>), ApiError> {
    let expires_in = body.expires_in_s.map(Duration::from_secs);
    let (token, secret) = state.tokens.create(&body.name, &body.scopes, expires_in).await?;
    tracing::info!(token = %token.id, name = %token.name, "API token created");
    Ok((StatusCode::CREATED, Json(TokenWithSecret { token, secret })))
}

async fn list(State(state): State<AppState>) -> Result<Json<TokenList>, ApiError> {
    Ok(Json(TokenList { tokens: state.tokens.list().await? }))
}

async fn rotate(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<TokenWithSecret>, ApiError> {
    let (token, secret) = state.tokens.rotate(&id).await?;
    tracing::info!(token = %token.id, "API token rotated");
    Ok(Json(TokenWithSecret { token, secret }))
}

async fn revoke(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<TokenInfo>, ApiError> {
    let token = state.tokens.revoke(&id).await?;
    tracing::info!(token = %token.id, "API token revoked");
    Ok(Json(token))
}
