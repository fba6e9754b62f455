//! Token management: create (the secret is shown once), list, rotate, revoke.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::routes;

use crate::auth::{Scope, TokenInfo};
use crate::cluster::Change;
use crate::error::{ApiError, ErrorBody, Json};
use crate::openapi::ApiRouter;
use crate::state::AppState;

pub fn routes() -> ApiRouter {
    ApiRouter::new().routes(routes!(list, create)).routes(routes!(rotate)).routes(routes!(revoke))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateToken {
    name: String,
    scopes: Vec<Scope>,
    /// Lifetime in seconds; absent means the token does not expire.
    expires_in_s: Option<u64>,
}

#[derive(Serialize, ToSchema)]
struct TokenWithSecret {
    token: TokenInfo,
    /// Shown only in this response; store it now.
    secret: String,
}

#[derive(Serialize, ToSchema)]
struct TokenList {
    tokens: Vec<TokenInfo>,
}

/// Creates a token; its secret is in this answer only.
#[utoipa::path(post, path = "/v1/tokens", tag = "tokens", request_body = CreateToken, responses(
    (status = 201, body = TokenWithSecret),
    (status = 400, description = "`invalid_request`: no name or no scope, `invalid_json`", body = ErrorBody)))]
async fn create(
    State(state): State<AppState>,
    Json(body): Json<CreateToken>,
) -> Result<(StatusCode, Json<TokenWithSecret>), ApiError> {
    let expires_in = body.expires_in_s.map(Duration::from_secs);
    let (token, secret) = state.tokens.create(&body.name, &body.scopes, expires_in).await?;
    tracing::info!(token = %token.id, name = %token.name, "API token created");
    Ok((StatusCode::CREATED, Json(TokenWithSecret { token, secret })))
}

#[utoipa::path(get, path = "/v1/tokens", tag = "tokens", responses((status = 200, body = TokenList)))]
async fn list(State(state): State<AppState>) -> Result<Json<TokenList>, ApiError> {
    Ok(Json(TokenList { tokens: state.tokens.list().await? }))
}

/// Replaces the token's secret; the old one stops working at once.
#[utoipa::path(post, path = "/v1/tokens/{id}/rotate", tag = "tokens", params(("id" = String, Path)), responses(
    (status = 200, body = TokenWithSecret),
    (status = 404, description = "`token_not_found`", body = ErrorBody)))]
async fn rotate(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<TokenWithSecret>, ApiError> {
    let (token, secret) = state.tokens.rotate(&id).await?;
    state.cluster.announce(Change::Tokens).await;
    tracing::info!(token = %token.id, "API token rotated");
    Ok(Json(TokenWithSecret { token, secret }))
}

#[utoipa::path(delete, path = "/v1/tokens/{id}", tag = "tokens", params(("id" = String, Path)), responses(
    (status = 200, description = "The revoked token", body = TokenInfo),
    (status = 404, description = "`token_not_found`", body = ErrorBody)))]
async fn revoke(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<TokenInfo>, ApiError> {
    let token = state.tokens.revoke(&id).await?;
    state.cluster.announce(Change::Tokens).await;
    tracing::info!(token = %token.id, "API token revoked");
    Ok(Json(token))
}
