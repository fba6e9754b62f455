//! The layer that asks every `/v1` call for a bearer token with the scope the call needs.

use axum::extract::{MatchedPath, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::Response;

use super::{AuthError, Scope};
use crate::error::ApiError;
use crate::state::AppState;

pub async fn require_token(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let route = request.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned()).unwrap_or_default();
    let Some(needed) = Scope::required_for(request.method(), &route) else {
        return Ok(next.run(request).await);
    };
    let token = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
        .ok_or(AuthError::Missing)?;
    let principal = state.tokens.authenticate(token).await?;
    if !needed.is_granted_by(&principal.scopes) {
        return Err(AuthError::Forbidden { needed, granted: principal.scopes }.into());
    }
    request.extensions_mut().insert(principal);
    Ok(next.run(request).await)
}
