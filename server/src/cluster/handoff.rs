//! Where the replicas keep their status schedule snapshots (see `slipway_status::handoff`):
//! one row per replica, rewritten every few seconds, read when the fleet is placed again.
//! Each row's age is measured by the database's clock, like the heartbeats.

use std::time::Duration;

use sqlx::AssertSqlSafe;

use super::Cluster;

pub const TABLE: &str = "CREATE TABLE status_handoff (
    replica TEXT PRIMARY KEY,
    written_at_ms BIGINT NOT NULL,
    body BYTEA NOT NULL
)";

/// How often a replica writes its snapshot. A taker checks the instances that fell due
/// since then early, so a shorter period saves checks and costs writes.
pub const WRITE_EVERY: Duration = Duration::from_secs(3);
/// Older snapshots are not read: their replica left long ago, and the instances it had have
/// been placed and checked since.
const READ_WITHIN_MS: i64 = 10 * 60 * 1000;

impl Cluster {
    pub(super) async fn write_handoff(&self, body: Vec<u8>) -> Result<(), sqlx::Error> {
        let now = self.inner.dialect.now_ms();
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO status_handoff (replica, written_at_ms, body) VALUES ($1, {now}, $2)
             ON CONFLICT (replica) DO UPDATE SET written_at_ms = excluded.written_at_ms, body = excluded.body"
        )))
        .bind(&self.inner.id)
        .bind(body)
        .execute(&self.inner.db)
        .await?;
        // Rows too old to be read are of replicas that left; dropped here, every few
        // seconds beside the beats, rather than on the heartbeat's path.
        sqlx::query(AssertSqlSafe(format!("DELETE FROM status_handoff WHERE written_at_ms < {now} - $1")))
            .bind(READ_WITHIN_MS)
            .execute(&self.inner.db)
            .await?;
        Ok(())
    }

    /// Every recent snapshot with its age in ms.
    pub(super) async fn handoffs(&self) -> Result<Vec<(i64, Vec<u8>)>, sqlx::Error> {
        let now = self.inner.dialect.now_ms();
        sqlx::query_as(AssertSqlSafe(format!(
            "SELECT {now} - written_at_ms, body FROM status_handoff WHERE written_at_ms >= {now} - $1"
        )))
        .bind(READ_WITHIN_MS)
        .fetch_all(&self.inner.db)
        .await
    }
}
