//! Triggers and the deliveries they have seen, in the database so every replica sees the
//! same triggers and the same replays.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashSet;
use std::sync::Arc;

use sqlx::{AnyConnection, AnyPool, AssertSqlSafe};

use super::TriggerError;
use super::batch::DeliveryTx;
use super::verify::AuthMode;
use crate::pipeline::NewBuild;
use crate::storage::ROWS_PER_STATEMENT;

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

/// Triggers a delivery has read lately.
const CACHED_TRIGGERS: u64 = 10_000;

#[derive(Clone)]
pub struct TriggerStore {
    db: AnyPool,
    /// Triggers by id for the delivery path, which would otherwise read one row per
    /// delivery. A trigger never changes after it is created, it can only be deleted, and a
    /// delete elsewhere (another replica) is caught where it matters: the delivery writer
    /// checks in each batch's transaction that the trigger still exists, so a stale entry
    /// starts nothing. Unknown ids are not cached.
    cache: moka::sync::Cache<String, Arc<Trigger>>,
}

impl TriggerStore {
    pub fn new(db: AnyPool) -> Self {
        let cache = moka::sync::Cache::builder()
            .max_capacity(CACHED_TRIGGERS)
            .time_to_idle(std::time::Duration::from_secs(600))
            .build();
        Self { db, cache }
    }

    /// The trigger as the delivery path uses it: from the cache, else read and cached.
    pub async fn cached(&self, id: &str) -> Result<Arc<Trigger>, TriggerError> {
        if let Some(trigger) = self.cache.get(id) {
            return Ok(trigger);
        }
        let trigger = Arc::new(self.get(id).await?);
        self.cache.insert(id.to_owned(), trigger.clone());
        Ok(trigger)
    }

    /// Drops a trigger from the cache (after its delete, or when a batch found it gone).
    pub fn forget(&self, id: &str) {
        self.cache.invalidate(id);
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
        self.forget(id);
        let gone = sqlx::query("DELETE FROM triggers WHERE id = $1")
            .bind(id)
            .execute(&self.db)
            .await?
            .rows_affected();
        if gone == 0 {
            return Err(TriggerError::NotFound { id: id.into() });
        }
        for table in ["trigger_deliveries", "trigger_rates"] {
            sqlx::query(AssertSqlSafe(format!("DELETE FROM {table} WHERE trigger_id = $1")))
                .bind(id)
                .execute(&self.db)
                .await?;
        }
        Ok(())
    }
}

/// One replay claim to take: `key` of `trigger` for the build `build_id`.
pub struct Claim<'a> {
    pub trigger: &'a str,
    pub key: &'a str,
    pub build_id: &'a str,
}

/// The claims upsert over `rows`, a table of (trigger, key, build, now) whose columns SQLite
/// and PostgreSQL both name column1…column4; `cutoff` is the parameter holding the start of
/// the window. Checking the trigger here saves the delivery writer a statement per batch.
pub(super) fn claim_sql(rows: &str, cutoff: &str) -> String {
    format!(
        "INSERT INTO trigger_deliveries (trigger_id, delivery_key, build_id, created_at_ms)
         SELECT v.column1, v.column2, v.column3, v.column4 FROM {rows} AS v
         WHERE EXISTS (SELECT 1 FROM triggers WHERE triggers.id = v.column1)
         ON CONFLICT (trigger_id, delivery_key) DO UPDATE
         SET build_id = excluded.build_id, created_at_ms = excluded.created_at_ms
         WHERE trigger_deliveries.created_at_ms < {cutoff} OR trigger_deliveries.build_id IS NULL
         RETURNING trigger_id, delivery_key"
    )
}

/// The build a live claim points to: `$1` the trigger, `$2` the key (in that order, so
/// SQLite numbers them 1 and 2 for positional binding too).
pub(super) const CLAIMED_BUILD: &str =
    "SELECT build_id FROM trigger_deliveries WHERE trigger_id = $1 AND delivery_key = $2";
/// Drops one claim, parameters as `CLAIMED_BUILD`.
pub(super) const UNCLAIM: &str = "DELETE FROM trigger_deliveries WHERE trigger_id = $1 AND delivery_key = $2";

/// A batch on a pool connection (PostgreSQL, or SQLite without its own writer): multi-row
/// statements, since each statement is a round trip.
impl DeliveryTx for AnyConnection {
    async fn claim_all(
        &mut self,
        claims: &[Claim<'_>],
        now_ms: i64,
        cutoff_ms: i64,
    ) -> Result<HashSet<(String, String)>, TriggerError> {
        let mut taken = HashSet::with_capacity(claims.len());
        for chunk in claims.chunks(ROWS_PER_STATEMENT) {
            let (now, cutoff) = (3 * chunk.len() + 1, 3 * chunk.len() + 2);
            let values: Vec<String> = (0..chunk.len())
                .map(|r| format!("(${}, ${}, ${}, ${now})", 3 * r + 1, 3 * r + 2, 3 * r + 3))
                .collect();
            let sql = claim_sql(&format!("(VALUES {})", values.join(", ")), &format!("${cutoff}"));
            let mut query = sqlx::query_as::<_, (String, String)>(AssertSqlSafe(sql));
            for claim in chunk {
                query = query.bind(claim.trigger).bind(claim.key).bind(claim.build_id);
            }
            taken.extend(query.bind(now_ms).bind(cutoff_ms).fetch_all(&mut *self).await?);
        }
        Ok(taken)
    }

    async fn existing(&mut self, ids: &[&str]) -> Result<HashSet<String>, TriggerError> {
        let list: Vec<String> = (1..=ids.len()).map(|n| format!("${n}")).collect();
        let sql = format!("SELECT id FROM triggers WHERE id IN ({})", list.join(", "));
        let mut query = sqlx::query_as::<_, (String,)>(AssertSqlSafe(sql));
        for id in ids {
            query = query.bind(*id);
        }
        Ok(query.fetch_all(&mut *self).await?.into_iter().map(|(id,)| id).collect())
    }

    async fn claimed_build(&mut self, trigger: &str, key: &str) -> Result<String, TriggerError> {
        let (build_id,): (String,) =
            sqlx::query_as(CLAIMED_BUILD).bind(trigger).bind(key).fetch_one(&mut *self).await?;
        Ok(build_id)
    }

    async fn unclaim(&mut self, trigger: &str, keys: &[&String]) -> Result<(), TriggerError> {
        for key in keys {
            sqlx::query(UNCLAIM).bind(trigger).bind(key).execute(&mut *self).await?;
        }
        Ok(())
    }

    async fn insert_builds(&mut self, builds: &[&NewBuild]) -> Result<(), TriggerError> {
        Ok(NewBuild::insert_all(self, builds).await?)
    }
}

/// Deletes up to `limit` claims made before `cutoff_ms` (they decide nothing any more: a
/// claim that old is taken over by the next delivery with its key); the number deleted.
/// Bounded so one prune never holds the write lock long.
pub async fn prune(db: &AnyPool, cutoff_ms: i64, limit: i64) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(PRUNE).bind(cutoff_ms).bind(limit).execute(db).await?.rows_affected())
}

/// `prune`'s statement: `$1` the cutoff, `$2` the limit (in that order, so SQLite numbers
/// them 1 and 2 for positional binding too).
pub(super) const PRUNE: &str = "DELETE FROM trigger_deliveries WHERE (trigger_id, delivery_key) IN
   (SELECT trigger_id, delivery_key FROM trigger_deliveries WHERE created_at_ms < $1 LIMIT $2)";

fn to_trigger((id, app, adapter, auth, secret, config, created_at_ms): Row) -> Result<Trigger, TriggerError> {
    let auth =
        AuthMode::parse(&auth).ok_or_else(|| TriggerError::Corrupt(format!("unknown auth mode `{auth}`")))?;
    let config = serde_json::from_str(&config).map_err(|e| TriggerError::Corrupt(e.to_string()))?;
    Ok(Trigger { id, app, adapter, auth, config, created_at_ms, secret })
}
