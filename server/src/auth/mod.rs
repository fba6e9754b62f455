//! API tokens: bearer secrets with scopes (`read`, `build`, `publish`, `admin`), stored
//! hashed, required on every `/v1` route except the trigger endpoint, which checks its own
//! secret.

mod middleware;
mod scope;
mod store;

pub use middleware::require_token;
pub use scope::Scope;
pub use store::{ADMIN_TOKEN_FILE, AuthError, Principal, TokenInfo, TokenStore};

/// The server's own tables.
pub const MIGRATIONS: &[(&str, &str)] = &[(
    "server-0001-api-tokens",
    "CREATE TABLE api_tokens (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        scopes TEXT NOT NULL,
        secret_hash TEXT NOT NULL,
        created_at_ms BIGINT NOT NULL,
        expires_at_ms BIGINT,
        revoked_at_ms BIGINT
    )",
)];
