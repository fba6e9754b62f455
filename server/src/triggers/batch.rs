//! One batch of accepted deliveries, written in its transaction with a handful of multi-row
//! statements (claims, which check the trigger too, builds, components) instead of four
//! statements per delivery. The outcome is the same as recording the deliveries one after the other:
//! a delivery sharing a key with an earlier one of the batch is that one's replay, a key
//! claimed within the window makes a delivery the replay of the build holding it, and the
//! claims of a replay are dropped again.
//!
//! The statements run on one transaction of either writer: sqlx's for PostgreSQL
//! (`store.rs`), the SQLite writer's own connection on its thread (`sqlite_writer.rs`).

use std::collections::{HashMap, HashSet};

use super::TriggerError;
use super::store::Claim;
use super::writer::{Accepted, Recorded};
use crate::pipeline::NewBuild;

/// The statements a batch runs, inside a transaction its caller commits.
pub trait DeliveryTx {
    /// Takes every claim of an existing trigger that no claim made at or after `cutoff_ms`
    /// holds; the (trigger, key) pairs taken. A claim older than the window, or left without
    /// a build by an earlier version, is taken over; the primary key makes this safe between
    /// concurrent transactions and replicas. The claims must be distinct.
    async fn claim_all(
        &mut self,
        claims: &[Claim<'_>],
        now_ms: i64,
        cutoff_ms: i64,
    ) -> Result<HashSet<(String, String)>, TriggerError>;
    /// Which of `ids` name triggers that exist.
    async fn existing(&mut self, ids: &[&str]) -> Result<HashSet<String>, TriggerError>;
    /// The build a live claim points to.
    async fn claimed_build(&mut self, trigger: &str, key: &str) -> Result<String, TriggerError>;
    /// Drops claims this transaction made for a delivery that turned out to be a replay. A
    /// claim it took over had expired, so dropping it loses nothing.
    async fn unclaim(&mut self, trigger: &str, keys: &[&String]) -> Result<(), TriggerError>;
    /// Inserts the builds and their components.
    async fn insert_builds(&mut self, builds: &[&NewBuild]) -> Result<(), TriggerError>;
}

pub async fn record(
    conn: &mut impl DeliveryTx,
    deliveries: &[&Accepted],
    now: i64,
    cutoff: i64,
) -> Result<Vec<Recorded>, TriggerError> {
    let mut outcome: Vec<Option<Recorded>> = deliveries.iter().map(|_| None).collect();
    let mut replay_of = vec![None; deliveries.len()];
    let mut owner: HashMap<(&str, &str), usize> = HashMap::new();
    let mut candidates = Vec::new();
    for (i, delivery) in deliveries.iter().enumerate() {
        let trigger = delivery.trigger_id.as_str();
        match delivery.keys.iter().find_map(|key| owner.get(&(trigger, key.as_str()))) {
            Some(&earlier) => replay_of[i] = Some(earlier),
            None => {
                owner.extend(delivery.keys.iter().map(|key| ((trigger, key.as_str()), i)));
                candidates.push(i);
            }
        }
    }

    // The claims come first: with SQLite a transaction that read before it writes fails as
    // "database is locked" when another connection wrote in between.
    let claims: Vec<Claim> = candidates
        .iter()
        .flat_map(|&i| {
            let d = deliveries[i];
            d.keys.iter().map(move |key| Claim { trigger: &d.trigger_id, key, build_id: &d.build.id })
        })
        .collect();
    let taken = conn.claim_all(&claims, now, cutoff).await?;
    let mut claimed = vec![0usize; deliveries.len()];
    for (trigger, key) in &taken {
        if let Some(&i) = owner.get(&(trigger.as_str(), key.as_str())) {
            claimed[i] += 1;
        }
    }
    // A trigger deleted after its delivery was authenticated (maybe on another replica, with
    // this one's cached copy still alive) starts nothing; a replay shares its original's
    // trigger, so it goes too. A claim is taken only for a trigger that exists, so only the
    // triggers of deliveries that took none (replays, mostly) are looked up.
    let unsure: HashSet<&str> =
        candidates.iter().filter(|&&i| claimed[i] == 0).map(|&i| deliveries[i].trigger_id.as_str()).collect();
    let live = if unsure.is_empty() {
        HashSet::new()
    } else {
        conn.existing(&unsure.into_iter().collect::<Vec<_>>()).await?
    };

    let mut started: Vec<&NewBuild> = Vec::with_capacity(candidates.len());
    for &i in &candidates {
        let d = deliveries[i];
        let held = |key: &String| taken.contains(&(d.trigger_id.clone(), key.clone()));
        if claimed[i] == 0 && !live.contains(d.trigger_id.as_str()) {
            outcome[i] = Some(Recorded::TriggerGone);
            continue;
        }
        if claimed[i] == d.keys.len() {
            started.push(&d.build);
            outcome[i] = Some(Recorded::Started(d.build.view()));
            continue;
        }
        // A replay of a delivery outside the batch (rare): the build its first held key
        // names, and the keys this one did claim go back.
        let (mine, others): (Vec<&String>, Vec<&String>) = d.keys.iter().partition(|key| held(key));
        let build_id = conn.claimed_build(&d.trigger_id, others[0]).await?;
        conn.unclaim(&d.trigger_id, &mine).await?;
        outcome[i] = Some(Recorded::Duplicate { build_id });
    }
    conn.insert_builds(&started).await?;

    for (i, earlier) in replay_of.iter().enumerate() {
        let Some(earlier) = *earlier else { continue };
        let decided = outcome[earlier].as_ref().expect("the delivery a replay repeats is decided above");
        outcome[i] = Some(match decided.build_id() {
            Some(build_id) => Recorded::Duplicate { build_id: build_id.to_owned() },
            None => Recorded::TriggerGone,
        });
    }
    Ok(outcome.into_iter().map(|o| o.expect("every delivery has an outcome")).collect())
}
