//! SQLite checkpoints off the delivery writer's commit.
//!
//! With `wal_autocheckpoint` a commit that leaves the log past 1,000 pages runs a checkpoint
//! before it returns — the page copy and two fsyncs — and under a flood that happened several
//! times a second inside the delivery writer's commit, stalling every delivery in flight. The
//! writer's connection turns it off; this task checkpoints from a connection of its own,
//! beside the writer: a PASSIVE checkpoint (it takes no write lock, so the writer goes on)
//! shortly after commits, and a RESTART once the log holds more than a bound of frames.
//! The RESTART is needed because the log only starts again from its beginning when a writer
//! begins after every frame was copied, which a continuous flood never leaves room for: it
//! takes the write lock, copies the few frames the last PASSIVE left and waits for readers,
//! so the writer's next commit restarts the log (and `journal_size_limit` on the writer's
//! connection cuts the file back to the bound). SQLite's busy handler polls for the write
//! lock, and under a flood the writer holds it nearly all the time, so the RESTART would
//! rarely get it: the writer and the RESTART take turns through `turn` instead, and the
//! writer waits out the RESTART (a short stall every few seconds of a flood).
//!
//! What the RESTART waits for is mostly its sync of the database file: SQLite syncs it only
//! after a checkpoint that copied the whole log, so it finds every page the PASSIVEs copied
//! since the last restart still dirty (the kernel writes dirty pages back after 30 s by
//! default). So after each PASSIVE the checkpointer starts the write-back of the database
//! file's dirty pages (`sync_file_range` with `SYNC_FILE_RANGE_WRITE`: it queues the writes
//! and waits for none, the way PostgreSQL spreads a checkpoint's writes), and the RESTART's
//! sync finds little left. A blocking sync here instead competes with the log flushes for
//! the disk in one large burst (measured: slower flushes, no better tail).

use std::fs::File;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sqlx::AnyConnection;
use tokio::sync::{Mutex, MutexGuard, mpsc};

/// Least time between the starts of two checkpoints: one copies about as much as `wal_autocheckpoint`'s
/// 1,000 pages did under a flood.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(200);
/// How long a RESTART waits for the write lock and for readers of the log before it gives
/// up until the next checkpoint: it holds the write lock meanwhile, so the writer waits too.
const RESTART_WAIT_MS: u64 = 100;

/// Frames of the log past which it is restarted, and the size its file is cut back to.
#[derive(Clone, Copy, Debug)]
pub struct LogBound {
    pub frames: i64,
    pub bytes: i64,
}

/// 65,536 frames: 256 MiB with 4 KiB pages. A flood writes ≈ 2.7 pages per delivery (its two
/// claims land on random pages of their key's index), ≈ 34,000 a second at 12,500
/// deliveries/s, so this is about two seconds of a flood between RESTARTs. Each RESTART stalls
/// every delivery in flight for ≈ 10 ms; at 16,384 frames that came every half second and hit
/// ≈ 0.8 % of the deliveries, right at the p99. The file is this large only after a flood
/// (the log restarts from its start whenever the checkpoints catch up), and recovery after a
/// crash reads at most this much.
pub const LOG_BOUND: LogBound = LogBound { frames: 65_536, bytes: 256 << 20 };

/// What the writer's connection runs before its first commit: no checkpoints of its own,
/// and its log file cut back to the bound when a commit restarts the log.
pub fn writer_settings(bound: LogBound) -> String {
    format!("PRAGMA wal_autocheckpoint = 0; PRAGMA journal_size_limit = {}", bound.bytes)
}

/// Handle of the checkpointer task; it ends when this is dropped.
pub struct Checkpointer {
    committed: mpsc::Sender<()>,
    turn: Arc<Mutex<()>>,
}

impl Checkpointer {
    /// Starts checkpointing the database file `database` from `own`, a connection to it used
    /// for nothing else; the writer's connection must run `writer_settings` first.
    pub async fn start(
        mut own: AnyConnection,
        database: &Path,
        bound: LogBound,
    ) -> Result<Checkpointer, sqlx::Error> {
        let database = Arc::new(File::open(database)?);
        // NORMAL at least: a checkpoint then syncs the log before it copies and the database
        // after, which the flusher's durability argument (`wal.rs`) relies on.
        let own_settings = format!("PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = {RESTART_WAIT_MS}");
        sqlx::raw_sql(sqlx::AssertSqlSafe(own_settings)).execute(&mut own).await?;
        let (committed, signals) = mpsc::channel(1);
        let turn = Arc::new(Mutex::new(()));
        tokio::spawn(run(own, bound, signals, turn.clone(), database));
        Ok(Checkpointer { committed, turn })
    }

    /// Held by the writer while it writes a transaction, so a RESTART never waits for it.
    pub async fn turn(&self) -> MutexGuard<'_, ()> {
        self.turn.lock().await
    }

    /// Tells the checkpointer the writer committed; never waits.
    pub fn committed(&self) {
        // A signal already waiting covers this commit too.
        let _ = self.committed.try_send(());
    }
}

async fn run(
    mut conn: AnyConnection,
    bound: LogBound,
    mut signals: mpsc::Receiver<()>,
    turn: Arc<Mutex<()>>,
    database: Arc<File>,
) {
    // Counted from the start of each checkpoint: a slow one is followed at once by the next.
    let mut every = tokio::time::interval(CHECKPOINT_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while signals.recv().await.is_some() {
        every.tick().await;
        // The PASSIVE copies most of the log beside the writer, so the RESTART after it
        // has little left to copy while the writer waits.
        let Some(frames) = checkpoint(&mut conn, "PASSIVE").await else { continue };
        start_writeback(&database).await;
        if frames <= bound.frames {
            continue;
        }
        // A flood appends a few thousand frames while a PASSIVE copies: a second one copies
        // those beside the writer too, leaving the RESTART only the few written meanwhile
        // (its stall measured 11–14 ms without it).
        checkpoint(&mut conn, "PASSIVE").await;
        let _writer_waits = turn.lock().await;
        if checkpoint(&mut conn, "RESTART").await.is_some() {
            metrics::counter!("slipway_trigger_log_restarts_total").increment(1);
        }
    }
}

/// Queues the write-back of every dirty page of the database file and waits for none of
/// it; off the runtime's threads, as it blocks while the disk's queue is full.
async fn start_writeback(database: &Arc<File>) {
    let file = database.clone();
    let queued = tokio::task::spawn_blocking(move || queue_writeback(&file)).await;
    if let Ok(Err(e)) = queued {
        tracing::warn!(error = %e, "starting the database file's write-back failed");
    }
}

#[cfg(target_os = "linux")]
fn queue_writeback(file: &File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // Offset 0 and length 0: the whole file, however far it grew.
    // SAFETY: a plain system call on a descriptor the caller keeps open.
    let queued = unsafe { libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
    if queued == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}

/// Elsewhere the RESTART's own sync writes everything, as before.
#[cfg(not(target_os = "linux"))]
fn queue_writeback(_: &File) -> std::io::Result<()> {
    Ok(())
}

/// Runs a checkpoint; the frames in the log after it, or `None` when it failed (logged: the
/// next one goes on from there). A checkpoint that found readers or the writer in its way
/// reports it as busy, not as an error.
async fn checkpoint(conn: &mut AnyConnection, mode: &str) -> Option<i64> {
    let started = std::time::Instant::now();
    let sql = format!("PRAGMA wal_checkpoint({mode})");
    let done: Result<(i64, i64, i64), _> =
        sqlx::query_as(sqlx::AssertSqlSafe(sql)).fetch_one(&mut *conn).await;
    metrics::histogram!("slipway_trigger_checkpoint_seconds", "mode" => mode.to_owned())
        .record(started.elapsed().as_secs_f64());
    match done {
        Ok((_busy, frames, _copied)) => Some(frames),
        Err(e) => {
            tracing::warn!(error = %e, mode, "checkpointing the database log failed");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::Connection;

    /// The write-back is queued for a file with dirty pages, and a descriptor that has no
    /// pages to write back (a pipe) is reported, not ignored.
    #[cfg(target_os = "linux")]
    #[test]
    fn the_write_back_is_queued_for_a_file_and_refused_for_a_pipe() {
        use std::io::Write;
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(&vec![7u8; 1 << 20]).unwrap();
        queue_writeback(&file).unwrap();
        let (reader, _writer) = std::io::pipe().unwrap();
        let pipe = File::from(std::os::fd::OwnedFd::from(reader));
        let refused = queue_writeback(&pipe).unwrap_err();
        assert_eq!(refused.raw_os_error(), Some(libc::ESPIPE), "{refused}");
    }

    /// A writer committing without pause, at a thousand commits a second (8 MB/s, more than
    /// a delivery flood writes), with the checkpointer beside it: the log file is cut back
    /// again and again, and stays within its bound plus what the writer appends while a
    /// checkpoint runs; every row is there.
    #[tokio::test]
    async fn a_continuous_flood_keeps_the_log_within_its_bound() {
        let dir = tempfile::tempdir().unwrap();
        let config = crate::config::Config { data_dir: dir.path().into(), ..Default::default() };
        let pool = crate::storage::open_database(&config).await.unwrap();
        let mut writer = pool.acquire().await.unwrap().detach();
        let own = pool.acquire().await.unwrap().detach();
        let bound = LogBound { frames: 256, bytes: 256 * 4120 };
        sqlx::raw_sql(sqlx::AssertSqlSafe(writer_settings(bound))).execute(&mut writer).await.unwrap();
        let database = crate::triggers::wal::database_file(&mut writer).await.unwrap();
        let checkpointer = Checkpointer::start(own, &database, bound).await.unwrap();
        let (auto,): (i64,) =
            sqlx::query_as("PRAGMA wal_autocheckpoint").fetch_one(&mut writer).await.unwrap();
        assert_eq!(auto, 0);
        // As the delivery writer's connection: the flusher syncs instead of each commit.
        sqlx::raw_sql(crate::triggers::wal::WRITER_SYNCHRONOUS).execute(&mut writer).await.unwrap();
        sqlx::raw_sql("CREATE TABLE flood (n BIGINT, pad TEXT)").execute(&mut writer).await.unwrap();
        let log = crate::triggers::wal::log_file(&database);

        let (rows, mut largest, mut previous, mut cut_back) = (4000i64, 0, 0, 0);
        let mut pace = tokio::time::interval(Duration::from_millis(1));
        for n in 0..rows {
            pace.tick().await;
            let turn = checkpointer.turn().await;
            let mut tx = writer.begin().await.unwrap();
            // Two pages per commit.
            sqlx::query("INSERT INTO flood (n, pad) VALUES ($1, $2)")
                .bind(n)
                .bind("x".repeat(6000))
                .execute(&mut *tx)
                .await
                .unwrap();
            tx.commit().await.unwrap();
            drop(turn);
            checkpointer.committed();
            let size = std::fs::metadata(&log).unwrap().len();
            cut_back += usize::from(size < previous);
            (largest, previous) = (largest.max(size), size);
        }
        let (count,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM flood").fetch_one(&mut writer).await.unwrap();
        assert_eq!(count, rows);
        // A checkpoint under a loaded test machine may take a second; the writer appends
        // 8 MB meanwhile. Without the RESTART the log would hold all 33 MB written.
        let written = rows as u64 * 2 * 4120;
        let limit = bound.bytes as u64 + (8 << 20);
        eprintln!("log at most {largest} bytes of {written} written, cut back {cut_back} times");
        assert!(cut_back >= 3, "the log was cut back {cut_back} times");
        assert!(largest <= limit, "the log grew to {largest} bytes, past {limit}");
    }
}
