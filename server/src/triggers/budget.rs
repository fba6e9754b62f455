//! Per-trigger rate limits that hold across replicas: `per_trigger_per_s` deliveries per
//! one-second window of the database's clock, for the whole deployment.
//!
//! The budget of a trigger's current window is one row (`trigger_budgets`). A replica does
//! not spend it a delivery at a time: it leases a share of it with one upsert and spends
//! that share from memory until it is used up or its window ends. A share grows (doubling,
//! like TCP's slow start) while the replica spends each one entirely, and shrinks to what
//! was spent when a window ends with some left, so a replica the load balancer sends most
//! of the traffic to leases most of the budget, an idle one holds next to nothing, and a
//! busy trigger costs a few upserts per window and replica, not one per delivery. Once the
//! row says the window is spent, the replica refuses until the window ends without asking
//! again.
//!
//! The alternative, each replica allowing `per_s / live replicas`, is wrong under an uneven
//! load balancer (a replica getting most deliveries refuses most of them while the others'
//! allowance goes unused) and while the heartbeats lag a replica joining (every replica
//! allows the old share, together more than the limit). Here the sum of shares of one
//! window can never pass the limit, whatever the spread; what leases cost is deliveries
//! refused while another replica still holds an unspent share, at most one share (a tenth
//! of the limit) per replica and window.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::{AnyPool, AssertSqlSafe};

use super::TriggerError;
use crate::storage::Dialect;

/// The span one budget covers, in the database's milliseconds.
const WINDOW_MS: i64 = 1000;
/// A share is at most this fraction of a window's budget, so a replica holding one unspent
/// keeps at most this much from the others.
const SHARES_PER_WINDOW: u32 = 10;
/// Replicas' leases of triggers that went quiet are dropped after this.
const IDLE_LEASE: Duration = Duration::from_secs(600);
/// Budget rows of windows this old are deleted (the trigger went quiet).
const KEEP_ROWS_MS: i64 = 60_000;

pub const MIGRATIONS: &[(&str, &str)] = &[(
    "server-0006-trigger-rate-budgets",
    "CREATE TABLE trigger_budgets (
        trigger_id TEXT PRIMARY KEY,
        window_ms BIGINT NOT NULL,
        used BIGINT NOT NULL,
        granted BIGINT NOT NULL
    )",
)];

#[derive(Clone)]
pub struct Budgets {
    db: AnyPool,
    dialect: Dialect,
    per_s: u32,
    /// Keyed by the trigger id's 128 bits (see `trigger_key`).
    leases: moka::sync::Cache<u128, Arc<Lease>>,
}

/// This replica's share of one trigger's budget.
#[derive(Default)]
struct Lease {
    held: std::sync::Mutex<Share>,
    /// One upsert at a time per trigger: deliveries arriving meanwhile wait for its share
    /// instead of each leasing its own.
    leasing: tokio::sync::Mutex<()>,
}

impl Budgets {
    pub fn new(db: AnyPool, dialect: Dialect, per_s: u32) -> Self {
        let leases = moka::sync::Cache::builder().time_to_idle(IDLE_LEASE).build();
        Self { db, dialect, per_s: per_s.max(1), leases }
    }

    /// Spends one delivery of the trigger's budget, or says how long until the next window.
    pub async fn take(&self, key: u128, trigger_id: &str) -> Result<(), TriggerError> {
        let lease = self.leases.get_with(key, Arc::default);
        if let Some(decided) = lease.held.lock().expect("lease lock").spend(Instant::now()) {
            return decided;
        }
        let _leasing = lease.leasing.lock().await;
        // Another delivery may have leased a share while this one waited.
        if let Some(decided) = lease.held.lock().expect("lease lock").spend(Instant::now()) {
            return decided;
        }
        let cap = (self.per_s / SHARES_PER_WINDOW).max(1);
        let ask = lease.held.lock().expect("lease lock").next_ask(cap);
        // The window's end is counted from before the upsert, so the share lapses no later
        // than the window does on the database's clock.
        let asked_at = Instant::now();
        let (granted, left_ms) = lease_share(&self.db, self.dialect, trigger_id, ask, self.per_s).await?;
        metrics::counter!("slipway_trigger_budget_leases_total").increment(1);
        let mut held = lease.held.lock().expect("lease lock");
        *held = Share::leased(ask, granted, asked_at + Duration::from_millis(left_ms.max(0) as u64));
        held.spend_leased(Instant::now())
    }

    /// Deletes budget rows of triggers that went quiet (and of deleted ones).
    pub async fn prune(&self) -> Result<u64, sqlx::Error> {
        let now = self.dialect.now_ms();
        let sql = format!("DELETE FROM trigger_budgets WHERE window_ms < {now} - $1");
        Ok(sqlx::query(AssertSqlSafe(sql)).bind(KEEP_ROWS_MS).execute(&self.db).await?.rows_affected())
    }
}

/// A leased share of one window's budget, as this replica spends it.
#[derive(Debug, Default, PartialEq)]
struct Share {
    /// When the window ends; none before the first lease.
    until: Option<Instant>,
    granted: u32,
    left: u32,
    /// The window's budget is spent: nothing more to lease until it ends.
    spent: bool,
}

impl Share {
    fn leased(asked: u32, granted: i64, until: Instant) -> Share {
        let granted = granted.clamp(0, i64::from(asked)) as u32;
        Share { until: Some(until), granted, left: granted, spent: granted < asked }
    }

    /// Takes one delivery from the share; `None` when a new share must be leased first.
    fn spend(&mut self, now: Instant) -> Option<Result<(), TriggerError>> {
        let until = self.until.filter(|until| now < *until)?;
        if self.left > 0 {
            self.left -= 1;
            return Some(Ok(()));
        }
        self.spent.then(|| Err(refused(until - now)))
    }

    /// Takes one delivery from a share just leased. Its window may have ended while the
    /// answer travelled; the grant was counted in that window, so it is still spent.
    fn spend_leased(&mut self, now: Instant) -> Result<(), TriggerError> {
        if self.left == 0 {
            return Err(refused(
                self.until.map_or(Duration::ZERO, |until| until.saturating_duration_since(now)),
            ));
        }
        self.left -= 1;
        Ok(())
    }

    /// How much to lease next: twice a share that was spent entirely (the replica's load
    /// outgrew it), else what was spent of it before its window ended.
    fn next_ask(&self, cap: u32) -> u32 {
        let spent_of_last = self.granted - self.left;
        let ask = if self.left == 0 { self.granted.saturating_mul(2) } else { spent_of_last };
        ask.clamp(1, cap)
    }
}

fn refused(wait: Duration) -> TriggerError {
    TriggerError::RateLimited {
        scope: "this trigger",
        retry_after_s: wait.as_secs_f64().ceil().max(1.0) as u64,
    }
}

/// Leases up to `ask` deliveries of the trigger's budget in the database's current window
/// (a new window starts from nothing); returns how many were granted and the milliseconds
/// left in the window. The row lock (PostgreSQL) or the write lock (SQLite) orders
/// concurrent leases, so together they never pass `limit` in one window. A row whose
/// window is ahead of this statement's clock (a transaction that read the clock earlier
/// and waited for the lock) is leased from as it stands.
async fn lease_share(
    db: &AnyPool,
    dialect: Dialect,
    trigger_id: &str,
    ask: u32,
    limit: u32,
) -> Result<(i64, i64), sqlx::Error> {
    let now = dialect.now_ms();
    let sql = format!(
        "INSERT INTO trigger_budgets (trigger_id, window_ms, used, granted)
         VALUES ($1, ({now}) / {WINDOW_MS} * {WINDOW_MS}, $2, $2)
         ON CONFLICT (trigger_id) DO UPDATE SET
           window_ms = CASE WHEN trigger_budgets.window_ms < excluded.window_ms
                            THEN excluded.window_ms ELSE trigger_budgets.window_ms END,
           used = CASE WHEN trigger_budgets.window_ms < excluded.window_ms THEN excluded.used
                       WHEN trigger_budgets.used >= $3 THEN trigger_budgets.used
                       WHEN trigger_budgets.used + excluded.used > $3 THEN $3
                       ELSE trigger_budgets.used + excluded.used END,
           granted = CASE WHEN trigger_budgets.window_ms < excluded.window_ms THEN excluded.used
                          WHEN trigger_budgets.used >= $3 THEN 0
                          WHEN trigger_budgets.used + excluded.used > $3 THEN $3 - trigger_budgets.used
                          ELSE excluded.used END
         RETURNING granted, window_ms + {WINDOW_MS} - ({now})"
    );
    sqlx::query_as(AssertSqlSafe(sql))
        .bind(trigger_id)
        .bind(i64::from(ask.min(limit)))
        .bind(i64::from(limit))
        .fetch_one(db)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_share_is_spent_then_refused_until_its_window_ends_when_the_budget_is_spent() {
        let now = Instant::now();
        let mut share = Share::leased(4, 2, now + Duration::from_millis(300));
        assert!(share.spend(now).unwrap().is_ok());
        assert!(share.spend(now).unwrap().is_ok());
        let Some(Err(TriggerError::RateLimited { retry_after_s, .. })) = share.spend(now) else {
            panic!("granted less than asked: the window is spent");
        };
        assert_eq!(retry_after_s, 1, "Retry-After is whole seconds, at least one");
        assert!(share.spend(now + Duration::from_millis(300)).is_none(), "a new window: lease again");
    }

    #[test]
    fn a_share_whose_window_ended_on_the_way_is_still_spent_by_the_delivery_that_leased_it() {
        let now = Instant::now();
        let mut share = Share::leased(2, 2, now);
        assert!(share.spend_leased(now + Duration::from_millis(5)).is_ok());
        assert!(share.spend(now + Duration::from_millis(5)).is_none(), "the rest lapses with the window");
        let mut spent = Share::leased(2, 0, now + Duration::from_millis(400));
        assert!(matches!(spent.spend_leased(now), Err(TriggerError::RateLimited { retry_after_s: 1, .. })));
    }

    #[test]
    fn a_share_granted_in_full_is_followed_by_a_bigger_lease() {
        let now = Instant::now();
        let mut share = Share::leased(4, 4, now + Duration::from_secs(1));
        for _ in 0..4 {
            assert!(share.spend(now).unwrap().is_ok());
        }
        assert!(share.spend(now).is_none(), "the budget may have more: lease again");
        assert_eq!(share.next_ask(100), 8);
        assert_eq!(share.next_ask(5), 5, "never more than the cap");
        assert_eq!(Share::default().next_ask(100), 1, "the first lease asks for one");
    }

    #[test]
    fn a_share_left_unspent_shrinks_the_next_lease_to_what_was_spent() {
        let now = Instant::now();
        let mut share = Share::leased(16, 16, now + Duration::from_millis(10));
        for _ in 0..3 {
            assert!(share.spend(now).unwrap().is_ok());
        }
        assert!(share.spend(now + Duration::from_millis(10)).is_none());
        assert_eq!(share.next_ask(100), 3);
    }

    async fn database() -> (tempfile::TempDir, AnyPool) {
        let dir = tempfile::tempdir().unwrap();
        let config = crate::config::Config { data_dir: dir.path().into(), ..Default::default() };
        let pool = crate::storage::open_database(&config).await.unwrap();
        (dir, pool)
    }

    #[tokio::test]
    async fn leases_of_one_window_never_pass_the_limit() {
        let (_dir, db) = database().await;
        let lease = |ask| lease_share(&db, Dialect::Sqlite, "t1", ask, 10);
        // Retried whenever a lease straddles two windows, so all four land in one.
        let granted = loop {
            let mut granted = Vec::new();
            let mut windows_left = Vec::new();
            for ask in [4, 4, 4, 4] {
                let (g, left_ms) = lease(ask).await.unwrap();
                granted.push(g);
                windows_left.push(left_ms);
            }
            if windows_left.windows(2).all(|w| w[1] <= w[0]) {
                break granted;
            }
        };
        assert!(granted.iter().all(|g| (0..=4).contains(g)), "{granted:?}");
        let (total, spent) = (granted.iter().sum::<i64>(), *granted.last().unwrap());
        assert!(total <= 10 && spent == 0, "{granted:?}");
        let other = lease_share(&db, Dialect::Sqlite, "t2", 4, 10).await.unwrap();
        assert_eq!(other.0, 4, "each trigger has a budget of its own");
    }

    #[tokio::test]
    async fn a_new_window_starts_from_nothing() {
        let (_dir, db) = database().await;
        let (granted, left_ms) = lease_share(&db, Dialect::Sqlite, "t1", 10, 10).await.unwrap();
        assert_eq!(granted, 10);
        assert!((0..=WINDOW_MS).contains(&left_ms), "{left_ms}");
        tokio::time::sleep(Duration::from_millis(left_ms as u64 + 5)).await;
        assert_eq!(lease_share(&db, Dialect::Sqlite, "t1", 3, 10).await.unwrap().0, 3);
    }
}
