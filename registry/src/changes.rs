//! App change counters: the freshness check behind the tag-query cache.
//!
//! Every write transaction on an app's packages or tags bumps the app's row in
//! `registry_app_changes` as its first statement, so a replica knows whether an answer it
//! cached is still current by reading one number from the shared database, and a tag moved
//! on any replica is seen by the next query everywhere.
//!
//! Reads are coalesced: requests that arrive while one counter read is in flight wait for
//! the next one, which reads every waiting app in one statement. Each read starts after the
//! requests it answers arrived, so it sees every change committed before them; under load
//! many queries share one database round trip instead of paying one each.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use sqlx::{AnyConnection, AnyPool, AssertSqlSafe};
use tokio::sync::{mpsc, oneshot};

use crate::error::Result;

/// Apps one statement reads at most; batches are padded to the next of these sizes so the
/// database sees four statements, each prepared once per connection.
const BATCH_SIZES: [usize; 4] = [1, 4, 16, 64];

/// Bumps `app`'s change counter inside a write transaction.
pub(crate) async fn bump(tx: &mut AnyConnection, app: &str) -> Result<()> {
    sqlx::query(
        "INSERT INTO registry_app_changes (app, changes) VALUES ($1, 1)
         ON CONFLICT (app) DO UPDATE SET changes = registry_app_changes.changes + 1",
    )
    .bind(app)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// An app and where its counter goes; `None` tells the waiter that the batch read failed,
/// and it reads alone to get its own error.
type Waiter = (String, oneshot::Sender<Option<i64>>);

/// Reads app change counters, coalescing concurrent reads into one statement.
#[derive(Clone)]
pub(crate) struct ChangeReader {
    db: AnyPool,
    /// Started on first use, inside the runtime that serves queries.
    queue: Arc<OnceLock<mpsc::UnboundedSender<Waiter>>>,
}

impl ChangeReader {
    pub(crate) fn new(db: AnyPool) -> Self {
        Self { db, queue: Arc::default() }
    }

    /// The current change counter of `app` (0 for an app never written), read after this
    /// call began.
    pub(crate) async fn current(&self, app: &str) -> Result<i64> {
        let queue = self.queue.get_or_init(|| {
            let (sender, receiver) = mpsc::unbounded_channel();
            tokio::spawn(serve(self.db.clone(), receiver));
            sender
        });
        let (answer, answered) = oneshot::channel();
        if queue.send((app.to_owned(), answer)).is_ok()
            && let Ok(Some(counter)) = answered.await
        {
            return Ok(counter);
        }
        // The batch failed, or the reader task is gone (its runtime shut down): read alone.
        Ok(read(&self.db, &[app]).await?.get(app).copied().unwrap_or(0))
    }
}

/// The reader task: one statement per batch of waiting apps, until every sender is dropped.
async fn serve(db: AnyPool, mut queue: mpsc::UnboundedReceiver<Waiter>) {
    let largest = BATCH_SIZES[BATCH_SIZES.len() - 1];
    let mut batch = Vec::with_capacity(largest);
    while queue.recv_many(&mut batch, largest).await > 0 {
        let mut apps: Vec<&str> = batch.iter().map(|(app, _)| app.as_str()).collect();
        apps.sort_unstable();
        apps.dedup();
        let counters = read(&db, &apps).await.ok();
        for (app, answer) in batch.drain(..) {
            let counter = counters.as_ref().map(|c| c.get(app.as_str()).copied().unwrap_or(0));
            let _ = answer.send(counter);
        }
    }
}

/// The counters of `apps` (at most the largest batch size) in one statement.
async fn read(db: &AnyPool, apps: &[&str]) -> std::result::Result<HashMap<String, i64>, sqlx::Error> {
    let size = BATCH_SIZES.into_iter().find(|&s| s >= apps.len()).unwrap_or(apps.len());
    let placeholders = (1..=size).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ");
    let sql = format!("SELECT app, changes FROM registry_app_changes WHERE app IN ({placeholders})");
    let mut query = sqlx::query_as::<_, (String, i64)>(AssertSqlSafe(sql));
    for i in 0..size {
        // Padding repeats the last app; IN ignores duplicates.
        query = query.bind(apps[i.min(apps.len() - 1)]);
    }
    Ok(query.fetch_all(db).await?.into_iter().collect())
}
