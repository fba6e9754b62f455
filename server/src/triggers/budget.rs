//! Per-trigger rate limits that hold across replicas: `per_trigger_per_s` deliveries per
//! second for the whole deployment, and a burst of at most a tenth of a second's worth.
//!
//! The limit is a token bucket kept as one row per trigger (`trigger_rates`) in the
//! generic cell rate algorithm's form: the row holds the time at which the bucket is empty
//! (`tat_us`, on the database's clock); every delivery moves it on by `1 / rate`, and a
//! delivery is allowed while it stays at most one burst ahead of now. Over any span of `T`
//! seconds that lets at most `rate × T + burst` pass — an earlier version gave each
//! one-second window of the clock a budget of its own, which let a flood at the end of one
//! window and the start of the next pass twice the rate within a second.
//!
//! A replica does not ask the row for every delivery: it leases a share of the bucket with
//! one upsert and spends it from memory. A share grows (doubling, like TCP's slow start)
//! while the replica spends each one entirely, and shrinks to what was spent when it lapses
//! with some left, so a replica the load balancer sends most of the traffic to leases most
//! of the rate and an idle one holds next to nothing. When the bucket cannot fill a lease,
//! the replica refuses without asking until the bucket is half full again (a flooded
//! trigger costs each replica about twenty upserts a second). Shares are at most the burst, so
//! a replica holding one unspent keeps at most a tenth of a second's deliveries from the
//! others, and a share lapses after a second, which bounds how late its deliveries pass.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::{AnyPool, AssertSqlSafe};

use super::TriggerError;
use crate::storage::Dialect;

/// The burst (and the largest share) is a tenth of a second's deliveries.
const BURSTS_PER_S: u32 = 10;
/// A share not spent by then lapses: its deliveries were counted when it was leased.
const SHARE_LIFETIME: Duration = Duration::from_secs(1);
/// Replicas' leases of triggers that went quiet are dropped after this.
const IDLE_LEASE: Duration = Duration::from_secs(600);
/// Rows of buckets full for this long are deleted (the trigger went quiet).
const KEEP_ROWS_US: i64 = 60_000_000;
const MICROS_PER_S: i64 = 1_000_000;

pub const MIGRATIONS: &[(&str, &str)] = &[
    (
        "server-0006-trigger-rate-budgets",
        "CREATE TABLE trigger_budgets (
        trigger_id TEXT PRIMARY KEY,
        window_ms BIGINT NOT NULL,
        used BIGINT NOT NULL,
        granted BIGINT NOT NULL
    )",
    ),
    (
        "server-0008-trigger-rate-buckets",
        "CREATE TABLE trigger_rates (
        trigger_id TEXT PRIMARY KEY,
        tat_us BIGINT NOT NULL,
        granted BIGINT NOT NULL
    );
    DROP TABLE trigger_budgets",
    ),
];

#[derive(Clone)]
pub struct Budgets {
    db: AnyPool,
    dialect: Dialect,
    rate: Rate,
    /// Keyed by the trigger id's 128 bits (see `trigger_key`).
    leases: moka::sync::Cache<u128, Arc<Lease>>,
}

/// A trigger's limit in the terms the bucket's upsert uses.
#[derive(Debug, Clone, Copy)]
struct Rate {
    per_s: u32,
    /// Deliveries the bucket holds when full; also the largest share.
    burst: u32,
    /// How far ahead of now the bucket's empty time may be: `burst / per_s` seconds,
    /// rounded up so a full bucket always grants the whole burst.
    burst_us: i64,
}

impl Rate {
    fn new(per_s: u32) -> Rate {
        let per_s = per_s.max(1);
        let burst = (per_s / BURSTS_PER_S).max(1);
        let burst_us = (u64::from(burst) * MICROS_PER_S as u64).div_ceil(u64::from(per_s)) as i64;
        Rate { per_s, burst, burst_us }
    }
}

/// This replica's share of one trigger's bucket.
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
        Self { db, dialect, rate: Rate::new(per_s), leases }
    }

    /// Spends one delivery of the trigger's rate, or says how long until the bucket refills.
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
        let ask = lease.held.lock().expect("lease lock").next_ask(self.rate.burst);
        // Times are counted from before the upsert, so a refusal ends no later than the
        // bucket refills on the database's clock.
        let asked_at = Instant::now();
        let (granted, ahead_us) = lease_share(&self.db, self.dialect, trigger_id, ask, self.rate).await?;
        metrics::counter!("slipway_trigger_budget_leases_total").increment(1);
        // A spent bucket is asked again once it is half full, not full: what refills while
        // the next lease travels is not lost to a full bucket.
        let half_full = Duration::from_micros(ahead_us.max(0) as u64)
            .saturating_sub(Duration::from_micros(self.rate.burst_us as u64 / 2));
        let mut held = lease.held.lock().expect("lease lock");
        *held = Share::leased(ask, granted, asked_at, half_full);
        held.spend_leased(Instant::now())
    }

    /// Deletes the rows of buckets full for a while (quiet triggers, and deleted ones).
    pub async fn prune(&self) -> Result<u64, sqlx::Error> {
        let now = self.dialect.now_ms();
        let sql = format!("DELETE FROM trigger_rates WHERE tat_us < ({now}) * 1000 - $1");
        Ok(sqlx::query(AssertSqlSafe(sql)).bind(KEEP_ROWS_US).execute(&self.db).await?.rows_affected())
    }
}

/// A leased share of a trigger's bucket, as this replica spends it.
#[derive(Debug, Default, PartialEq)]
struct Share {
    /// When the share lapses, or, once the bucket is spent, when it has refilled enough to
    /// lease from again; none before the first lease.
    until: Option<Instant>,
    granted: u32,
    left: u32,
    /// The bucket could not fill the lease: refuse until `until` without asking again.
    spent: bool,
}

impl Share {
    /// What a lease asked at `asked_at` got: `granted` deliveries, and when a spent bucket
    /// is worth asking again (`refill` after the lease).
    fn leased(asked: u32, granted: i64, asked_at: Instant, refill: Duration) -> Share {
        let granted = granted.clamp(0, i64::from(asked)) as u32;
        let spent = granted < asked;
        let until = asked_at + if spent { refill.max(Duration::from_millis(1)) } else { SHARE_LIFETIME };
        Share { until: Some(until), granted, left: granted, spent }
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

    /// Takes one delivery from a share just leased. It may have lapsed while the answer
    /// travelled; the grant was counted in the bucket, so it is still spent.
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
    /// outgrew it), else what was spent of it before it lapsed.
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

/// Leases up to `ask` deliveries from the trigger's bucket; returns how many were granted
/// and how far (µs) the bucket's empty time is ahead of the database's clock after it. The
/// row lock (PostgreSQL) or the write lock (SQLite) orders concurrent leases, so together
/// they never pass the rate. The empty time moves on by each grant's worth rounded up to
/// whole microseconds, so rounding never lets more pass.
async fn lease_share(
    db: &AnyPool,
    dialect: Dialect,
    trigger_id: &str,
    ask: u32,
    rate: Rate,
) -> Result<(i64, i64), sqlx::Error> {
    let now = format!("({}) * 1000", dialect.now_ms());
    // $2 the ask, $3 the rate per second, $4 the burst in µs; SET reads the old row.
    let base = format!("CASE WHEN trigger_rates.tat_us > {now} THEN trigger_rates.tat_us ELSE {now} END");
    let room = format!("(({now}) + $4 - ({base})) * $3 / {MICROS_PER_S}");
    let granted = format!("CASE WHEN {room} <= 0 THEN 0 WHEN {room} >= $2 THEN $2 ELSE {room} END");
    let worth = |deliveries: &str| format!("(({deliveries}) * {MICROS_PER_S} + $3 - 1) / $3");
    let sql = format!(
        "INSERT INTO trigger_rates (trigger_id, tat_us, granted) VALUES ($1, {now} + {first}, $2)
         ON CONFLICT (trigger_id) DO UPDATE SET
           granted = {granted},
           tat_us = ({base}) + {advance}
         RETURNING granted, tat_us - {now}",
        first = worth("$2"),
        advance = worth(&granted),
    );
    sqlx::query_as(AssertSqlSafe(sql))
        .bind(trigger_id)
        .bind(i64::from(ask.min(rate.burst)))
        .bind(i64::from(rate.per_s))
        .bind(rate.burst_us)
        .fetch_one(db)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_a_tenth_of_a_second_and_a_full_bucket_grants_all_of_it() {
        let rate = Rate::new(200);
        assert_eq!((rate.burst, rate.burst_us), (20, 100_000));
        // Rounded up: 333,334 µs at 3/s is worth one whole delivery, not 0.99.
        let slow = Rate::new(3);
        assert_eq!((slow.burst, slow.burst_us), (1, 333_334));
        assert!(slow.burst_us * 3 / MICROS_PER_S >= 1);
    }

    #[test]
    fn a_share_is_spent_then_refused_until_the_bucket_has_refilled() {
        let now = Instant::now();
        let mut share = Share::leased(4, 2, now, Duration::from_millis(300));
        assert!(share.spend(now).unwrap().is_ok());
        assert!(share.spend(now).unwrap().is_ok());
        let Some(Err(TriggerError::RateLimited { retry_after_s, .. })) = share.spend(now) else {
            panic!("granted less than asked: the bucket is spent");
        };
        assert_eq!(retry_after_s, 1, "Retry-After is whole seconds, at least one");
        assert!(share.spend(now + Duration::from_millis(300)).is_none(), "refilled: lease again");
    }

    #[test]
    fn a_share_that_lapsed_on_the_way_is_still_spent_by_the_delivery_that_leased_it() {
        let now = Instant::now();
        let mut share = Share::leased(2, 2, now, Duration::ZERO);
        let late = now + SHARE_LIFETIME + Duration::from_millis(5);
        assert!(share.spend_leased(late).is_ok());
        assert!(share.spend(late).is_none(), "the rest lapses");
        let mut spent = Share::leased(2, 0, now, Duration::from_millis(400));
        assert!(matches!(spent.spend_leased(now), Err(TriggerError::RateLimited { retry_after_s: 1, .. })));
    }

    #[test]
    fn a_share_granted_in_full_is_followed_by_a_bigger_lease() {
        let now = Instant::now();
        let mut share = Share::leased(4, 4, now, Duration::ZERO);
        for _ in 0..4 {
            assert!(share.spend(now).unwrap().is_ok());
        }
        assert!(share.spend(now).is_none(), "the bucket may have more: lease again");
        assert_eq!(share.next_ask(100), 8);
        assert_eq!(share.next_ask(5), 5, "never more than the cap");
        assert_eq!(Share::default().next_ask(100), 1, "the first lease asks for one");
    }

    #[test]
    fn a_share_left_unspent_shrinks_the_next_lease_to_what_was_spent() {
        let now = Instant::now();
        let mut share = Share::leased(16, 16, now, Duration::ZERO);
        for _ in 0..3 {
            assert!(share.spend(now).unwrap().is_ok());
        }
        assert!(share.spend(now + SHARE_LIFETIME).is_none());
        assert_eq!(share.next_ask(100), 3);
    }

    async fn database() -> (tempfile::TempDir, AnyPool) {
        let dir = tempfile::tempdir().unwrap();
        let config = crate::config::Config { data_dir: dir.path().into(), ..Default::default() };
        let pool = crate::storage::open_database(&config).await.unwrap();
        (dir, pool)
    }

    #[tokio::test]
    async fn a_full_bucket_grants_its_burst_then_only_what_refilled() {
        let (_dir, db) = database().await;
        let rate = Rate::new(100);
        let (granted, ahead_us) = lease_share(&db, Dialect::Sqlite, "t1", 10, rate).await.unwrap();
        assert_eq!((granted, ahead_us), (10, 100_000), "the whole burst; empty a tenth of a second ahead");
        let started = Instant::now();
        let (granted, ahead_us) = lease_share(&db, Dialect::Sqlite, "t1", 10, rate).await.unwrap();
        // At 100/s one delivery refills every 10 ms.
        let refilled = started.elapsed().as_millis() as i64 / 10 + 1;
        assert!(granted <= refilled, "{granted} granted, at most {refilled} refilled");
        assert!((1..=100_000).contains(&ahead_us), "{ahead_us}");
        let other = lease_share(&db, Dialect::Sqlite, "t2", 4, rate).await.unwrap();
        assert_eq!(other.0, 4, "each trigger has a bucket of its own");
    }

    #[tokio::test]
    async fn leases_never_pass_the_rate_plus_one_burst_over_a_span() {
        let (_dir, db) = database().await;
        let rate = Rate::new(1000);
        let started = Instant::now();
        let mut granted = 0;
        while started.elapsed() < Duration::from_millis(300) {
            granted += lease_share(&db, Dialect::Sqlite, "t1", rate.burst, rate).await.unwrap().0;
        }
        let span_ms = started.elapsed().as_millis() as i64;
        // The database's clock counts whole milliseconds: one more of refill at most.
        let most = i64::from(rate.burst) + (span_ms + 1) * i64::from(rate.per_s) / 1000;
        assert!(granted <= most, "{granted} granted in {span_ms} ms, at most {most}");
        assert!(granted >= most / 2, "{granted} granted in {span_ms} ms of asking: the bucket refills");
    }
}
