//! Build leases, the shared build queue of every replica on one database. A replica claims
//! queued builds (on PostgreSQL with `FOR UPDATE SKIP LOCKED`, so replicas never wait on
//! each other's picks), runs them only while it renews their lease, and takes over the
//! builds of a replica whose lease ran out by the database's clock: requeued once
//! (components that finished keep their results), failed as `interrupted` the second time.

use sqlx::AssertSqlSafe;

use super::PipelineError;
use super::model::BuildState;
use super::store::BuildStore;

/// Claims per build run: the first, and one more after an interruption.
const MAX_ATTEMPTS: i64 = 2;

/// What happened to a build whose lease ran out.
#[derive(Debug, PartialEq)]
pub struct TakenOver {
    pub id: String,
    /// Names the replica it was taken from while it runs again; `interrupted` at the end.
    pub reason: String,
    pub requeued: bool,
}

impl BuildStore {
    /// Claims up to `limit` queued builds for this replica, oldest first.
    pub async fn claim_queued(&self, limit: usize) -> Result<Vec<String>, PipelineError> {
        let now = self.dialect.now_ms();
        // The pick is materialized, so it runs once: PostgreSQL may otherwise run an
        // `IN (… LIMIT n FOR UPDATE SKIP LOCKED)` again for each row it updates, each run
        // skipping the rows the last one locked, and claim more builds than `limit`.
        let rows: Vec<(String,)> = sqlx::query_as(AssertSqlSafe(format!(
            "WITH picked AS MATERIALIZED (
                 SELECT id FROM builds WHERE state = 'queued' ORDER BY created_at_ms, id LIMIT {limit}{}
             )
             UPDATE builds SET state = 'running', owner = $1, lease_until_ms = {now} + $2, attempts = attempts + 1
             WHERE state = 'queued' AND id IN (SELECT id FROM picked)
             RETURNING id",
            self.dialect.skip_locked()
        )))
        .bind(&self.owner)
        .bind(self.lease_ms)
        .fetch_all(&self.db)
        .await?;
        Ok(rows.into_iter().map(|(id,)| id).collect())
    }

    /// Extends the leases of `running`, the builds this replica is running now; returns the
    /// ids it still holds. A build missing from the answer was cancelled or taken over
    /// meanwhile. A build this replica holds but no longer runs (its run ended without being
    /// recorded, e.g. while the database was away) is not renewed: its lease runs out and it
    /// is taken over like any other.
    pub async fn renew(&self, running: &[String]) -> Result<Vec<String>, PipelineError> {
        if running.is_empty() {
            return Ok(Vec::new());
        }
        let now = self.dialect.now_ms();
        let ids: Vec<String> = (3..running.len() + 3).map(|n| format!("${n}")).collect();
        let mut renew = sqlx::query_as::<_, (String,)>(AssertSqlSafe(format!(
            "UPDATE builds SET lease_until_ms = {now} + $1
             WHERE owner = $2 AND state = 'running' AND id IN ({})
             RETURNING id",
            ids.join(", ")
        )))
        .bind(self.lease_ms)
        .bind(&self.owner);
        for id in running {
            renew = renew.bind(id);
        }
        Ok(renew.fetch_all(&self.db).await?.into_iter().map(|(id,)| id).collect())
    }

    /// Whether this replica still holds build `id`'s lease by the database's clock. Asked
    /// before a step no lease can fence (the publish): a replica cut off for longer than its
    /// lease finds out here and leaves the build to whoever took it over.
    pub async fn holds(&self, id: &str) -> Result<bool, PipelineError> {
        let now = self.dialect.now_ms();
        let (held,): (i64,) = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT COUNT(*) FROM builds WHERE id = $1 AND owner = $2 AND state = 'running' AND lease_until_ms >= {now}"
        )))
        .bind(id)
        .bind(&self.owner)
        .fetch_one(&self.db)
        .await?;
        Ok(held > 0)
    }

    /// Takes over running builds whose lease ran out, or, with `own`, every build this
    /// replica held before it restarted (it knows they stopped with it).
    pub async fn take_over(&self, own: bool) -> Result<Vec<TakenOver>, PipelineError> {
        let which =
            if own { "owner = $2".to_owned() } else { format!("lease_until_ms < {}", self.dialect.now_ms()) };
        // One UPDATE decides, so the transaction writes first: on SQLite a transaction that
        // reads before it writes can fail as locked beside another writer instead of waiting.
        let mut tx = self.db.begin().await?;
        let mut update = sqlx::query_as::<_, (String, String, String)>(AssertSqlSafe(format!(
            "UPDATE builds SET
                 state = CASE WHEN attempts < {MAX_ATTEMPTS} THEN 'queued' ELSE 'failed' END,
                 reason = CASE WHEN attempts < {MAX_ATTEMPTS}
                     THEN 'interrupted on replica ' || COALESCE(owner, 'unknown') || '; running again (attempt '
                          || CAST(attempts + 1 AS TEXT) || ' of {MAX_ATTEMPTS})'
                     ELSE 'interrupted' END,
                 finished_at_ms = CASE WHEN attempts < {MAX_ATTEMPTS} THEN NULL ELSE $1 END,
                 owner = NULL,
                 lease_until_ms = NULL
             WHERE state = 'running' AND {which}
             RETURNING id, state, reason"
        )))
        .bind(crate::storage::now_ms());
        if own {
            update = update.bind(&self.owner);
        }
        let taken = update.fetch_all(&mut *tx).await?;
        let mut result = Vec::with_capacity(taken.len());
        for (id, state, reason) in taken {
            let requeued = state == BuildState::Queued.as_str();
            // Finished components keep their results; the next attempt runs the others.
            sqlx::query(
                "UPDATE build_components SET state = $1, reason = $2 WHERE build_id = $3 AND state IN ('queued', 'running')",
            )
            .bind(&state)
            .bind(if requeued { None } else { Some("interrupted") })
            .bind(&id)
            .execute(&mut *tx)
            .await?;
            result.push(TakenOver { id, reason, requeued });
        }
        tx.commit().await?;
        Ok(result)
    }
}
