//! Triggers and the deliveries they have seen, in the database so every replica sees the
//! same triggers and the same replays.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::AnyPool;

use super::TriggerError;
use super::verify::AuthMode;
use crate::storage::now_ms;

pub const MIGRATIONS: &[(&str, &str)] = &[(
    "server-0003-triggers",
    "CREATE TABLE triggers (
        id TEXT PRIMARY KEY,
        app TEXT NOT NULL,
        adapter TEXT NOT NULL,
        auth_mode TEXT NOT NULL,
        secret TEXT NOT NULL,
        config TEXT NOT NULL,
        created_at_ms BIGINT NOT NULL
    );
    CREATE TABLE trigger_deliveries (
        trigger_id TEXT NOT NULL,
        delivery_key TEXT NOT NULL,
        build_id TEXT,
        created_at_ms BIGINT NOT NULL,
        PRIMARY KEY (trigger_id, delivery_key)
    )",
)];

/// What a trigger turns an accepted delivery into.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TriggerConfig {
    /// Branch patterns that start builds (`*` matches within a segment, `**` across); empty:
    /// every branch.
    #[serde(default)]
    pub branches: Vec<String>,
    /// Tags the app package gets.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Where to clone from; when empty, the repository URL the payload names.
    #[serde(default)]
    pub repository_url: String,
    /// The components built from the repository at the pushed commit.
    pub components: Vec<TriggerComponent>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TriggerComponent {
    pub name: String,
    #[serde(rename = "type")]
    pub component_type: String,
    #[serde(default)]
    pub params: Value,
}

/// A trigger as the API shows it: never its secret.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Trigger {
    pub id: String,
    pub app: String,
    pub adapter: String,
    pub auth: AuthMode,
    #[serde(flatten)]
    pub config: TriggerConfig,
    pub created_at_ms: i64,
    #[serde(skip)]
    pub secret: String,
}

/// What claiming a delivery key found.
pub enum Claim {
    /// First time this key is seen (within 24 hours): the caller starts the build.
    New,
    /// Seen before; the build it started, if it got that far.
    Seen { build_id: Option<String> },
}

type Row = (String, String, String, String, String, String, i64);

#[derive(Clone)]
pub struct TriggerStore {
    db: AnyPool,
}

impl TriggerStore {
    pub fn new(db: AnyPool) -> Self {
        Self { db }
    }

    pub async fn insert(&self, trigger: &Trigger) -> Result<(), TriggerError> {
        sqlx::query(
            "INSERT INTO triggers (id, app, adapter, auth_mode, secret, config, created_at_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&trigger.id)
        .bind(&trigger.app)
        .bind(&trigger.adapter)
        .bind(trigger.auth.as_str())
        .bind(&trigger.secret)
        .bind(serde_json::to_string(&trigger.config).map_err(|e| TriggerError::Corrupt(e.to_string()))?)
        .bind(trigger.created_at_ms)
        .execute(&self.db)
        .await?;
        Ok(())
    }

    pub async fn get(&self, id: &str) -> Result<Trigger, TriggerError> {
        let row: Option<Row> = sqlx::query_as(
            "SELECT id, app, adapter, auth_mode, secret, config, created_at_ms FROM triggers WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.db)
        .await?;
        to_trigger(row.ok_or_else(|| TriggerError::NotFound { id: id.into() })?)
    }

    pub async fn list(&self) -> Result<Vec<Trigger>, TriggerError> {
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT id, app, adapter, auth_mode, secret, config, created_at_ms FROM triggers ORDER BY created_at_ms, id",
        )
        .fetch_all(&self.db)
        .await?;
        rows.into_iter().map(to_trigger).collect()
    }

    pub async fn delete(&self, id: &str) -> Result<(), TriggerError> {
        let gone = sqlx::query("DELETE FROM triggers WHERE id = $1")
            .bind(id)
            .execute(&self.db)
            .await?
            .rows_affected();
        if gone == 0 {
            return Err(TriggerError::NotFound { id: id.into() });
        }
        sqlx::query("DELETE FROM trigger_deliveries WHERE trigger_id = $1")
            .bind(id)
            .execute(&self.db)
            .await?;
        Ok(())
    }

    /// Records `key` for `trigger` unless it was seen within `window_ms`. The primary key
    /// makes this safe between concurrent deliveries and between replicas.
    pub async fn claim(&self, trigger: &str, key: &str, window_ms: i64) -> Result<Claim, TriggerError> {
        let now = now_ms();
        let inserted = sqlx::query(
            "INSERT INTO trigger_deliveries (trigger_id, delivery_key, build_id, created_at_ms)
             VALUES ($1, $2, NULL, $3) ON CONFLICT (trigger_id, delivery_key) DO NOTHING",
        )
        .bind(trigger)
        .bind(key)
        .bind(now)
        .execute(&self.db)
        .await?
        .rows_affected();
        if inserted == 1 {
            return Ok(Claim::New);
        }
        // An old record outside the window is taken over, by exactly one claimant.
        let renewed = sqlx::query(
            "UPDATE trigger_deliveries SET build_id = NULL, created_at_ms = $1
             WHERE trigger_id = $2 AND delivery_key = $3 AND created_at_ms < $4",
        )
        .bind(now)
        .bind(trigger)
        .bind(key)
        .bind(now - window_ms)
        .execute(&self.db)
        .await?
        .rows_affected();
        if renewed == 1 {
            return Ok(Claim::New);
        }
        let (build_id,): (Option<String>,) = sqlx::query_as(
            "SELECT build_id FROM trigger_deliveries WHERE trigger_id = $1 AND delivery_key = $2",
        )
        .bind(trigger)
        .bind(key)
        .fetch_one(&self.db)
        .await?;
        Ok(Claim::Seen { build_id })
    }

    pub async fn record_build(
        &self,
        trigger: &str,
        keys: &[String],
        build_id: &str,
    ) -> Result<(), TriggerError> {
        for key in keys {
            sqlx::query(
                "UPDATE trigger_deliveries SET build_id = $1 WHERE trigger_id = $2 AND delivery_key = $3",
            )
            .bind(build_id)
            .bind(trigger)
            .bind(key)
            .execute(&self.db)
            .await?;
        }
        Ok(())
    }

    /// Forgets claims whose delivery started nothing (rejected, filtered, failed), so the
    /// sender may retry them.
    pub async fn release(&self, trigger: &str, keys: &[String]) -> Result<(), TriggerError> {
        for key in keys {
            sqlx::query(
                "DELETE FROM trigger_deliveries WHERE trigger_id = $1 AND delivery_key = $2 AND build_id IS NULL",
            )
            .bind(trigger)
            .bind(key)
            .execute(&self.db)
            .await?;
        }
        Ok(())
    }
}

fn to_trigger((id, app, adapter, auth, secret, config, created_at_ms): Row) -> Result<Trigger, TriggerError> {
    let auth =
        AuthMode::parse(&auth).ok_or_else(|| TriggerError::Corrupt(format!("unknown auth mode `{auth}`")))?;
    let config = serde_json::from_str(&config).map_err(|e| TriggerError::Corrupt(e.to_string()))?;
    Ok(Trigger { id, app, adapter, auth, config, created_at_ms, secret })
}
