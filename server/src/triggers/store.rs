//! Triggers and the deliveries they have seen, in the database so every replica sees the
//! same triggers and the same replays.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::{AnyConnection, AnyPool};

use super::TriggerError;
use super::verify::AuthMode;

pub const MIGRATIONS: &[(&str, &str)] = &[
    (
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
    ),
    (
        "server-0003-trigger-claims-age",
        // Expired claims are found by age when they are pruned.
        "CREATE INDEX trigger_deliveries_age ON trigger_deliveries (created_at_ms)",
    ),
];

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

    /// The build a live claim (made at or after `cutoff_ms`) on any of `keys` points to.
    pub async fn live_claim(
        &self,
        trigger: &str,
        keys: &[String],
        cutoff_ms: i64,
    ) -> Result<Option<String>, TriggerError> {
        for key in keys {
            let found: Option<(Option<String>,)> = sqlx::query_as(
                "SELECT build_id FROM trigger_deliveries
                 WHERE trigger_id = $1 AND delivery_key = $2 AND created_at_ms >= $3",
            )
            .bind(trigger)
            .bind(key)
            .bind(cutoff_ms)
            .fetch_optional(&self.db)
            .await?;
            if let Some((Some(build_id),)) = found {
                return Ok(Some(build_id));
            }
        }
        Ok(None)
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
}

/// Claims `key` of `trigger` for `build_id`, unless a claim made at or after `cutoff_ms`
/// holds it; false when one does. A claim older than the window, or left without a build
/// by an earlier version, is taken over. The primary key makes this safe between concurrent
/// transactions and between replicas.
pub async fn claim(
    conn: &mut AnyConnection,
    trigger: &str,
    key: &str,
    build_id: &str,
    now_ms: i64,
    cutoff_ms: i64,
) -> Result<bool, sqlx::Error> {
    let claimed = sqlx::query(
        "INSERT INTO trigger_deliveries (trigger_id, delivery_key, build_id, created_at_ms)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (trigger_id, delivery_key) DO UPDATE
         SET build_id = excluded.build_id, created_at_ms = excluded.created_at_ms
         WHERE trigger_deliveries.created_at_ms < $5 OR trigger_deliveries.build_id IS NULL",
    )
    .bind(trigger)
    .bind(key)
    .bind(build_id)
    .bind(now_ms)
    .bind(cutoff_ms)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(claimed == 1)
}

/// Deletes up to `limit` claims made before `cutoff_ms` (they decide nothing any more: a
/// claim that old is taken over by the next delivery with its key); the number deleted.
/// Bounded so one prune never holds the write lock long.
pub async fn prune(db: &AnyPool, cutoff_ms: i64, limit: i64) -> Result<u64, sqlx::Error> {
    let deleted = sqlx::query(
        "DELETE FROM trigger_deliveries WHERE (trigger_id, delivery_key) IN
           (SELECT trigger_id, delivery_key FROM trigger_deliveries WHERE created_at_ms < $1 LIMIT $2)",
    )
    .bind(cutoff_ms)
    .bind(limit)
    .execute(db)
    .await?
    .rows_affected();
    Ok(deleted)
}

/// The build a live claim points to.
pub async fn claimed_build(
    conn: &mut AnyConnection,
    trigger: &str,
    key: &str,
) -> Result<String, sqlx::Error> {
    let (build_id,): (String,) =
        sqlx::query_as("SELECT build_id FROM trigger_deliveries WHERE trigger_id = $1 AND delivery_key = $2")
            .bind(trigger)
            .bind(key)
            .fetch_one(&mut *conn)
            .await?;
    Ok(build_id)
}

/// Drops claims this transaction made for a delivery that turned out to be a replay. A
/// claim it took over had expired, so dropping it loses nothing.
pub async fn unclaim(conn: &mut AnyConnection, trigger: &str, keys: &[String]) -> Result<(), sqlx::Error> {
    for key in keys {
        sqlx::query("DELETE FROM trigger_deliveries WHERE trigger_id = $1 AND delivery_key = $2")
            .bind(trigger)
            .bind(key)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

fn to_trigger((id, app, adapter, auth, secret, config, created_at_ms): Row) -> Result<Trigger, TriggerError> {
    let auth =
        AuthMode::parse(&auth).ok_or_else(|| TriggerError::Corrupt(format!("unknown auth mode `{auth}`")))?;
    let config = serde_json::from_str(&config).map_err(|e| TriggerError::Corrupt(e.to_string()))?;
    Ok(Trigger { id, app, adapter, auth, config, created_at_ms, secret })
}
