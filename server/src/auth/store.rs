//! API tokens in the database: created with a secret shown once, stored as a SHA-256 hash,
//! listed, rotated and revoked.
//!
//! A token reads `slw_<id>_<secret>`: the id finds the row without scanning, the secret
//! (256 random bits) is compared by hash in constant time. The secret's entropy makes a plain
//! SHA-256 sufficient; a slow password hash would only slow every request.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::AnyPool;
use subtle::ConstantTimeEq;

use super::Scope;
use crate::storage::now_ms;

const PREFIX: &str = "slw_";
/// How long a looked-up token is trusted before the database is asked again: the bound on
/// how late another replica sees a revocation.
const CACHE_TTL: Duration = Duration::from_secs(1);
/// How long a token read before the database went away keeps working without it.
const OUTAGE_GRACE: Duration = Duration::from_secs(300);
pub const ADMIN_TOKEN_FILE: &str = "admin-token";

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TokenInfo {
    pub id: String,
    pub name: String,
    pub scopes: Vec<Scope>,
    pub created_at_ms: i64,
    pub expires_at_ms: Option<i64>,
    pub revoked_at_ms: Option<i64>,
}

/// Who made a request, as the handlers see it (e.g. to record who tagged a package).
#[derive(Debug, Clone)]
pub struct Principal {
    pub token_id: String,
    pub name: String,
    pub scopes: Vec<Scope>,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("no API token: send `Authorization: Bearer <token>`")]
    Missing,
    #[error("the API token is malformed or unknown")]
    Invalid,
    #[error("the API token {id} has expired")]
    Expired { id: String },
    #[error("the API token {id} was revoked")]
    Revoked { id: String },
    #[error("this call needs the `{}` scope; the token has {}", needed.as_str(), list(granted))]
    Forbidden { needed: Scope, granted: Vec<Scope> },
    #[error("no API token with id {id}")]
    NotFound { id: String },
    #[error("invalid token request: {0}")]
    BadRequest(String),
    #[error("token storage: {0}")]
    Storage(#[from] sqlx::Error),
    #[error("cannot write the admin token to {path}: {source}")]
    AdminFile { path: PathBuf, source: std::io::Error },
}

fn list(scopes: &[Scope]) -> String {
    if scopes.is_empty() {
        return "none".into();
    }
    scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
}

#[derive(Clone)]
pub struct TokenStore {
    db: AnyPool,
    cache: moka::future::Cache<String, Arc<TokenRow>>,
    /// What was last read about each token, used only while the database cannot be
    /// reached: nobody can revoke a token then either, so reads served from memory keep
    /// working through a short outage.
    last_known: moka::future::Cache<String, Arc<TokenRow>>,
}

#[derive(Debug)]
struct TokenRow {
    info: TokenInfo,
    secret_hash: String,
}

type Row = (String, String, String, String, i64, Option<i64>, Option<i64>);
macro_rules! select_tokens {
    ($rest:literal) => {
        concat!("SELECT id, name, scopes, secret_hash, created_at_ms, expires_at_ms, revoked_at_ms FROM api_tokens ", $rest)
    };
}

impl TokenStore {
    pub fn new(db: AnyPool) -> Self {
        let cache = moka::future::Cache::builder().max_capacity(10_000).time_to_live(CACHE_TTL).build();
        let last_known =
            moka::future::Cache::builder().max_capacity(10_000).time_to_live(OUTAGE_GRACE).build();
        Self { db, cache, last_known }
    }

    /// Creates a token; the returned string is the only time its secret is seen.
    pub async fn create(
        &self,
        name: &str,
        scopes: &[Scope],
        expires_in: Option<Duration>,
    ) -> Result<(TokenInfo, String), AuthError> {
        let name = name.trim();
        if name.is_empty() || name.len() > 64 {
            return Err(AuthError::BadRequest("name must be 1 to 64 characters".into()));
        }
        if scopes.is_empty() {
            return Err(AuthError::BadRequest("a token needs at least one scope".into()));
        }
        let id = random_hex(6);
        let secret = random_hex(32);
        let now = now_ms();
        let expires_at_ms = expires_in.map(|d| now + d.as_millis() as i64);
        let scopes_text = scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(",");
        sqlx::query(
            "INSERT INTO api_tokens (id, name, scopes, secret_hash, created_at_ms, expires_at_ms, revoked_at_ms)
             VALUES ($1, $2, $3, $4, $5, $6, NULL)",
        )
        .bind(&id)
        .bind(name)
        .bind(&scopes_text)
        .bind(hash(&secret))
        .bind(now)
        .bind(expires_at_ms)
        .execute(&self.db)
        .await?;
        let info = TokenInfo {
            id: id.clone(),
            name: name.to_owned(),
            scopes: scopes.to_vec(),
            created_at_ms: now,
            expires_at_ms,
            revoked_at_ms: None,
        };
        Ok((info, format!("{PREFIX}{id}_{secret}")))
    }

    pub async fn list(&self) -> Result<Vec<TokenInfo>, AuthError> {
        let rows: Vec<Row> =
            sqlx::query_as(select_tokens!("ORDER BY created_at_ms, id")).fetch_all(&self.db).await?;
        Ok(rows.into_iter().map(|r| to_row(r).info).collect())
    }

    /// Gives the token a new secret; the old one stops working at once on this replica and
    /// within the cache time on the others.
    pub async fn rotate(&self, id: &str) -> Result<(TokenInfo, String), AuthError> {
        let secret = random_hex(32);
        let changed =
            sqlx::query("UPDATE api_tokens SET secret_hash = $1 WHERE id = $2 AND revoked_at_ms IS NULL")
                .bind(hash(&secret))
                .bind(id)
                .execute(&self.db)
                .await?
                .rows_affected();
        self.cache.invalidate(id).await;
        if changed == 0 {
            return Err(self.missing_or_revoked(id).await);
        }
        let row = self.load(id).await?.ok_or_else(|| AuthError::NotFound { id: id.into() })?;
        Ok((row.info.clone(), format!("{PREFIX}{id}_{secret}")))
    }

    /// Revokes a token; the row stays so the revocation is on record.
    pub async fn revoke(&self, id: &str) -> Result<TokenInfo, AuthError> {
        sqlx::query("UPDATE api_tokens SET revoked_at_ms = $1 WHERE id = $2 AND revoked_at_ms IS NULL")
            .bind(now_ms())
            .bind(id)
            .execute(&self.db)
            .await?;
        self.cache.invalidate(id).await;
        let row = self.load(id).await?.ok_or_else(|| AuthError::NotFound { id: id.into() })?;
        Ok(row.info.clone())
    }

    async fn missing_or_revoked(&self, id: &str) -> AuthError {
        match self.load(id).await {
            Ok(Some(_)) => AuthError::Revoked { id: id.into() },
            Ok(None) => AuthError::NotFound { id: id.into() },
            Err(e) => e,
        }
    }

    /// Drops what this replica remembers about tokens (another replica revoked or rotated
    /// one), so the next use of each is checked against the database.
    pub fn forget_cached(&self) {
        self.cache.invalidate_all();
    }

    /// Checks a bearer token and returns who it belongs to.
    pub async fn authenticate(&self, token: &str) -> Result<Principal, AuthError> {
        let (id, secret) =
            token.strip_prefix(PREFIX).and_then(|rest| rest.split_once('_')).ok_or(AuthError::Invalid)?;
        let row = match self.cache.get(id).await {
            Some(row) => row,
            None => match self.load(id).await {
                Ok(row) => {
                    let row = row.ok_or(AuthError::Invalid)?;
                    self.cache.insert(id.to_owned(), row.clone()).await;
                    self.last_known.insert(id.to_owned(), row.clone()).await;
                    row
                }
                Err(e @ AuthError::Storage(_)) => self.last_known.get(id).await.ok_or(e)?,
                Err(e) => return Err(e),
            },
        };
        if !bool::from(hash(secret).as_bytes().ct_eq(row.secret_hash.as_bytes())) {
            return Err(AuthError::Invalid);
        }
        if row.info.revoked_at_ms.is_some() {
            return Err(AuthError::Revoked { id: id.into() });
        }
        if row.info.expires_at_ms.is_some_and(|at| at <= now_ms()) {
            return Err(AuthError::Expired { id: id.into() });
        }
        Ok(Principal {
            token_id: row.info.id.clone(),
            name: row.info.name.clone(),
            scopes: row.info.scopes.clone(),
        })
    }

    async fn load(&self, id: &str) -> Result<Option<Arc<TokenRow>>, AuthError> {
        let row: Option<Row> =
            sqlx::query_as(select_tokens!("WHERE id = $1")).bind(id).fetch_optional(&self.db).await?;
        Ok(row.map(|r| Arc::new(to_row(r))))
    }

    /// On the first start (no token at all) creates an admin token and writes it, readable by
    /// the owner only, to `admin-token` in the data directory. Returns the file when it did.
    pub async fn ensure_initial_admin(&self, data_dir: &Path) -> Result<Option<PathBuf>, AuthError> {
        let (count,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM api_tokens").fetch_one(&self.db).await?;
        if count > 0 {
            return Ok(None);
        }
        let (_, secret) = self.create("initial-admin", &[Scope::Admin], None).await?;
        let path = data_dir.join(ADMIN_TOKEN_FILE);
        write_private(&path, &secret)
            .map_err(|source| AuthError::AdminFile { path: path.clone(), source })?;
        Ok(Some(path))
    }
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::create_dir_all(path.parent().unwrap_or(Path::new(".")))?;
    let mut file =
        std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    file.write_all(text.as_bytes())?;
    file.write_all(b"\n")
}

fn to_row((id, name, scopes, secret_hash, created_at_ms, expires_at_ms, revoked_at_ms): Row) -> TokenRow {
    let scopes = scopes.split(',').filter_map(Scope::parse).collect();
    TokenRow {
        info: TokenInfo { id, name, scopes, created_at_ms, expires_at_ms, revoked_at_ms },
        secret_hash,
    }
}

fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).expect("the operating system's random source is available");
    hex::encode(buf)
}
