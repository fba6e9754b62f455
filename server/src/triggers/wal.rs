//! Durable SQLite commits without an fsync under the write lock.
//!
//! With `synchronous = FULL` a commit appends its frames to the write-ahead log and calls
//! `fdatasync` before it gives up the write lock, so every batch of the delivery writer
//! waited for the previous batch's fsync (two fsync tails in a delivery's latency). The
//! writer's own connection (rusqlite's, on its thread: `sqlite_writer.rs`) commits with
//! `synchronous = NORMAL` instead — the frames are
//! written, not flushed — and this flusher calls `fdatasync` on the log file after the
//! commit, outside the lock, while the writer already writes the next batch. A delivery is
//! answered only after a flush that began after its commit returned, and one flush serves
//! every commit before it.
//!
//! Why a flush of the log file makes such a commit durable: SQLite recovers a database by
//! reading the log's frames from the start while their salts match the header and their
//! checksums chain, replaying every complete transaction. The flush puts our frames and
//! every frame before them on disk; frames written after them (not yet flushed) can only end
//! the readable chain later. The log is only rewritten from its start (a "restart", with new
//! salts) after a checkpoint copied every frame into the database file and synced it. The
//! checkpoints run on the checkpointer's connection (`checkpoint.rs`), not in the writer's
//! commits, with `synchronous = NORMAL`, under which a checkpoint still syncs the log before
//! and the database after copying; the restart is made by the writer's next commit, which
//! syncs the new header (the writer's `NORMAL` keeps header syncs) before any new frame goes
//! behind it, and cuts the file back to `journal_size_limit` past its own frames — only
//! frames of the old log, all in the synced database. So a committed transaction is either
//! in the flushed log or already in the synced database file. Cutting the file keeps it the
//! same file, and it is deleted only when the last connection closes (after a full
//! checkpoint); the writer keeps its connection open, so the file this flusher holds is the
//! live log.

use std::fs::File;
use std::path::PathBuf;
use std::sync::{Arc, mpsc};

use sqlx::AnyConnection;

use super::TriggerError;

/// Told whether the flush after its commit succeeded; then it may answer its delivery.
pub type Waiter = Box<dyn FnOnce(Result<(), TriggerError>) + Send>;

/// Most commits' waiters one flush takes from the queue at once.
const MAX_COMMITS_PER_FLUSH: usize = 1024;

pub struct WalFlusher {
    waiting: mpsc::Sender<Vec<Waiter>>,
}

impl WalFlusher {
    /// Starts the flusher of the log file `log` (it ends when this handle is dropped). The
    /// writer's connection must commit with `WRITER_SYNCHRONOUS`, be the only connection
    /// whose commits are answered through this flusher, and stay open while it runs.
    pub fn start(log: PathBuf) -> Result<WalFlusher, TriggerError> {
        let (waiting, queue) = mpsc::channel();
        // `fdatasync` blocks: a thread of its own, woken directly by the writer's commits.
        std::thread::Builder::new()
            .name("delivery-flusher".into())
            .spawn(move || run(log, queue))
            .map_err(TriggerError::WriterThread)?;
        Ok(WalFlusher { waiting })
    }

    /// Calls each waiter once everything committed so far is on disk.
    pub fn after_flush(&self, waiters: Vec<Waiter>) {
        if let Err(unsent) = self.waiting.send(waiters) {
            for waiter in unsent.0 {
                waiter(Err(TriggerError::WriterStopped));
            }
        }
    }
}

/// The writer's commits write the log, not flush it: the flusher does, outside the lock.
pub const WRITER_SYNCHRONOUS: &str = "PRAGMA synchronous = NORMAL";

/// The file of the connection's main database.
pub(super) async fn database_file(conn: &mut AnyConnection) -> Result<PathBuf, sqlx::Error> {
    let databases: Vec<(i64, String, String)> =
        sqlx::query_as("PRAGMA database_list").fetch_all(&mut *conn).await?;
    let main = databases.into_iter().find(|(_, name, _)| name == "main").map(|(_, _, file)| file);
    match main {
        Some(file) if !file.is_empty() => Ok(PathBuf::from(file)),
        _ => Err(sqlx::Error::Configuration("the delivery writer needs an SQLite database file".into())),
    }
}

/// The log file of a database file: SQLite names it `<database>-wal`.
pub(super) fn log_file(database: &std::path::Path) -> PathBuf {
    let mut name = database.as_os_str().to_owned();
    name.push("-wal");
    PathBuf::from(name)
}

fn run(path: PathBuf, queue: mpsc::Receiver<Vec<Waiter>>) {
    // Opened at the first flush: by then a commit has written to the log, so it exists.
    let mut log: Option<File> = None;
    while let Ok(first) = queue.recv() {
        let mut ready = vec![first];
        ready.extend(queue.try_iter().take(MAX_COMMITS_PER_FLUSH - 1));
        let flushed = flush(&path, &mut log).map_err(Arc::new);
        if let Err(e) = &flushed {
            tracing::error!(error = %e, path = %path.display(), "flushing the database log failed");
        }
        for waiter in ready.into_iter().flatten() {
            waiter(flushed.clone().map_err(TriggerError::Flush));
        }
    }
}

fn flush(path: &PathBuf, log: &mut Option<File>) -> std::io::Result<()> {
    let file = match log {
        Some(file) => file,
        None => log.insert(File::options().write(true).open(path)?),
    };
    let started = std::time::Instant::now();
    let synced = file.sync_data();
    metrics::histogram!("slipway_trigger_wal_flush_seconds").record(started.elapsed().as_secs_f64());
    synced
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::Connection;

    #[tokio::test]
    async fn the_flusher_syncs_the_live_log_of_the_writer_connection_and_answers_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let config = crate::config::Config { data_dir: dir.path().into(), ..Default::default() };
        let pool = crate::storage::open_database(&config).await.unwrap();
        let mut conn = pool.acquire().await.unwrap().detach();
        sqlx::raw_sql(WRITER_SYNCHRONOUS).execute(&mut conn).await.unwrap();
        let path = log_file(&database_file(&mut conn).await.unwrap());
        assert!(path.starts_with(dir.path()) && path.exists(), "{}", path.display());
        let flusher = WalFlusher::start(path).unwrap();

        let mut tx = conn.begin().await.unwrap();
        sqlx::query("CREATE TABLE t (id BIGINT)").execute(&mut *tx).await.unwrap();
        tx.commit().await.unwrap();
        let (answers, mut answered) = tokio::sync::mpsc::unbounded_channel();
        for n in 0..3 {
            let answers = answers.clone();
            flusher.after_flush(vec![Box::new(move |flushed| answers.send((n, flushed.is_ok())).unwrap())]);
        }
        for n in 0..3 {
            assert_eq!(answered.recv().await.unwrap(), (n, true));
        }
    }
}
