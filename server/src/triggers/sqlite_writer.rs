//! The SQLite delivery writer's connection, driven on a thread of its own.
//!
//! Through sqlx every statement of a batch is a hop to the connection's worker thread and
//! back (0.1–0.25 ms each with both cores busy, five or six per batch), and sqlx binds
//! SQLite parameters by name, which SQLite finds by scanning the statement's parameter list
//! (quadratic in a multi-row statement's hundreds of parameters). This thread owns a
//! rusqlite connection and runs a batch's whole transaction as plain calls: the async
//! writer sends it the batch and awaits one answer. Statements are prepared once and cached,
//! one row each, bound by position.

use std::collections::HashSet;
use std::path::PathBuf;

use rusqlite::{Connection, Transaction, TransactionBehavior, params};

use super::TriggerError;
use super::batch::{self, DeliveryTx};
use super::store::{CLAIMED_BUILD, Claim, PRUNE, UNCLAIM, claim_sql};
use super::writer::{Accepted, Recorded};
use crate::pipeline::{BuildState, INSERT_BUILDS, INSERT_COMPONENTS, NewBuild, PipelineError};
use crate::storage::now_ms;

/// Opens `database` and runs `session` (the connection's settings) on it.
pub async fn open(database: PathBuf, session: String) -> Result<Connection, TriggerError> {
    let opened = tokio::task::spawn_blocking(move || {
        let conn = Connection::open(&database)?;
        conn.execute_batch(&session)?;
        Ok::<_, rusqlite::Error>(conn)
    });
    Ok(opened.await.map_err(|_| TriggerError::WriterStopped)??)
}

/// Commits the deliveries in one transaction. It never waits: it is ready at its first poll,
/// the statements having run as plain calls on the caller's thread.
pub async fn commit(
    conn: &mut Connection,
    deliveries: &[&Accepted],
    window_ms: i64,
) -> Result<Vec<Recorded>, TriggerError> {
    // IMMEDIATE takes the write lock at once (waiting out the busy timeout), so no statement
    // of the batch can find the database locked halfway.
    let mut tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let now = now_ms();
    let recorded = batch::record(&mut tx, deliveries, now, now - window_ms).await?;
    tx.commit()?;
    Ok(recorded)
}

/// Deletes up to `limit` claims made before `cutoff_ms`; how many.
pub fn prune(conn: &Connection, cutoff_ms: i64, limit: i64) -> rusqlite::Result<u64> {
    Ok(conn.prepare_cached(PRUNE)?.execute(params![cutoff_ms, limit])? as u64)
}

impl DeliveryTx for Transaction<'_> {
    async fn claim_all(
        &mut self,
        claims: &[Claim<'_>],
        now_ms: i64,
        cutoff_ms: i64,
    ) -> Result<HashSet<(String, String)>, TriggerError> {
        let mut claim = self.prepare_cached(&claim_sql("(VALUES (?1, ?2, ?3, ?4))", "?5"))?;
        let mut taken = HashSet::with_capacity(claims.len());
        for c in claims {
            let mut rows = claim.query(params![c.trigger, c.key, c.build_id, now_ms, cutoff_ms])?;
            if rows.next()?.is_some() {
                taken.insert((c.trigger.to_owned(), c.key.to_owned()));
            }
        }
        Ok(taken)
    }

    async fn existing(&mut self, ids: &[&str]) -> Result<HashSet<String>, TriggerError> {
        let mut exists = self.prepare_cached("SELECT 1 FROM triggers WHERE id = ?1")?;
        let mut live = HashSet::with_capacity(ids.len());
        for id in ids {
            if exists.exists([id])? {
                live.insert((*id).to_owned());
            }
        }
        Ok(live)
    }

    async fn claimed_build(&mut self, trigger: &str, key: &str) -> Result<String, TriggerError> {
        Ok(self.prepare_cached(CLAIMED_BUILD)?.query_row([trigger, key], |row| row.get(0))?)
    }

    async fn unclaim(&mut self, trigger: &str, keys: &[&String]) -> Result<(), TriggerError> {
        let mut unclaim = self.prepare_cached(UNCLAIM)?;
        for key in keys {
            unclaim.execute([trigger, key.as_str()])?;
        }
        Ok(())
    }

    async fn insert_builds(&mut self, builds: &[&NewBuild]) -> Result<(), TriggerError> {
        let queued = BuildState::Queued.as_str();
        let mut insert_build =
            self.prepare_cached(&format!("{INSERT_BUILDS}(?1, ?2, ?3, ?4, ?5, ?6, ?7)"))?;
        let mut insert_component =
            self.prepare_cached(&format!("{INSERT_COMPONENTS}(?1, ?2, ?3, ?4, ?5, ?6)"))?;
        for build in builds {
            let tags = serde_json::to_string(&build.submission.tags).map_err(PipelineError::from)?;
            insert_build.execute(params![
                build.id,
                build.app,
                build.submission.version,
                tags,
                queued,
                build.requested_by,
                build.created_at_ms
            ])?;
            for (position, component) in build.submission.components.iter().enumerate() {
                let spec = serde_json::to_string(component).map_err(PipelineError::from)?;
                insert_component.execute(params![
                    build.id,
                    position as i64,
                    component.name,
                    component.component_type,
                    spec,
                    queued
                ])?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::{BuildSubmission, ComponentSpec, SourceRequest};

    fn delivery(trigger: &str, build: &str, keys: &[&str]) -> Accepted {
        let component = ComponentSpec {
            name: "web".into(),
            component_type: "container".into(),
            source: SourceRequest::Git {
                url: "https://example.com/app.git".into(),
                reference: "main".into(),
            },
            path: ".".into(),
            params: serde_json::Value::Null,
        };
        Accepted {
            trigger_id: trigger.into(),
            keys: keys.iter().map(|k| k.to_string()).collect(),
            build: NewBuild {
                id: build.into(),
                app: "shop".into(),
                submission: BuildSubmission {
                    version: "auto".into(),
                    tags: vec!["ci".into()],
                    components: vec![component],
                },
                requested_by: format!("trigger:{trigger}"),
                created_at_ms: now_ms(),
            },
        }
    }

    fn outcome(recorded: &Recorded) -> String {
        match recorded {
            Recorded::Started(view) => format!("started {}", view.id),
            Recorded::Duplicate { build_id } => format!("duplicate of {build_id}"),
            Recorded::TriggerGone => "trigger gone".into(),
        }
    }

    /// Replays inside a batch, across batches and of a deleted trigger come out as the
    /// sqlx writer's do, what is stored is readable by the pool, and a prune takes only
    /// expired claims.
    #[tokio::test]
    async fn the_thread_records_batches_with_their_replays() {
        let dir = tempfile::tempdir().unwrap();
        let config = crate::config::Config { data_dir: dir.path().into(), ..Default::default() };
        let pool = crate::storage::open_database(&config).await.unwrap();
        sqlx::query(
            "INSERT INTO triggers (id, app, adapter, auth_mode, secret, config, created_at_ms)
             VALUES ('t1', 'shop', 'generic', 'bearer', 's', '{}', 0)",
        )
        .execute(&pool)
        .await
        .unwrap();
        let database = super::super::wal::database_file(&mut *pool.acquire().await.unwrap()).await.unwrap();
        let mut conn = open(database, "PRAGMA busy_timeout = 5000".into()).await.unwrap();
        let window_ms = 60_000;

        let first = [
            delivery("t1", "b1", &["id:1", "digest:a"]),
            delivery("t1", "b2", &["id:2", "digest:a"]),
            delivery("gone", "b3", &["id:3"]),
            delivery("t1", "b4", &["id:4"]),
        ];
        let first = commit(&mut conn, &first.iter().collect::<Vec<_>>(), window_ms).await.unwrap();
        let first: Vec<String> = first.iter().map(outcome).collect();
        assert_eq!(first, ["started b1", "duplicate of b1", "trigger gone", "started b4"]);

        // `id:5` is new but `id:4` is b4's: a replay from outside the batch gives its new
        // claim back.
        let second = delivery("t1", "b5", &["id:5", "id:4"]);
        let second = commit(&mut conn, &[&second], window_ms).await.unwrap();
        assert_eq!(outcome(&second[0]), "duplicate of b4");

        let mut claims: Vec<(String, String)> =
            sqlx::query_as("SELECT delivery_key, build_id FROM trigger_deliveries")
                .fetch_all(&pool)
                .await
                .unwrap();
        claims.sort();
        let expected = [("digest:a", "b1"), ("id:1", "b1"), ("id:4", "b4")];
        assert_eq!(claims, expected.map(|(k, b)| (k.to_owned(), b.to_owned())));
        let builds: Vec<(String, String, String)> =
            sqlx::query_as("SELECT id, tags, state FROM builds ORDER BY id").fetch_all(&pool).await.unwrap();
        assert_eq!(builds.len(), 2);
        assert_eq!(builds[0], ("b1".into(), r#"["ci"]"#.into(), "queued".into()));
        let (components,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM build_components WHERE build_id IN ('b1', 'b4')")
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!(components, 2);

        assert_eq!(prune(&conn, now_ms() - window_ms, 10).unwrap(), 0);
        assert_eq!(prune(&conn, now_ms() + 1, 2).unwrap(), 2, "at most the limit");
        assert_eq!(prune(&conn, now_ms() + 1, 10).unwrap(), 1);
    }
}
