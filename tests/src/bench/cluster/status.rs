//! The `status` phase of `cluster`: the fleet simulator (in this process, logging who
//! checked what) carries 150,000 instances (`--quick`: 30,000) polled by the replicas.
//!
//! 1. Registered in bulks through the replicas in turn; the shard sizes the replicas report
//!    give `max_share_dev_pct`.
//! 2. A steady window; a fourth replica joins, and the fraction of the instances checked by
//!    another replica after it than before is `moved_fraction_on_join`.
//! 3. One replica is killed; the p99 of the time until each of its instances is checked by
//!    another is `takeover_p99_s`.
//! 4. Over the whole log: `double_checks`, instances checked by two replicas within one
//!    window with no replica joining or leaving (the handover after a join excluded), and
//!    `missed_checks`, instances left unchecked for longer than the ceiling interval plus the
//!    lease. The ceiling interval is the longest the schedule gives a calm instance: the
//!    ceiling plus its jitter, which only ever lengthens it (so the load on targets never
//!    exceeds one check per ceiling; see status/README.md).
//!
//! The replicas back off to a 30 s ceiling (60 s past 50,000 instances) instead of 300 s, so
//! the windows (each longer than the ceiling) see every instance checked and a missed check
//! can show within minutes.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use super::replicas::Cluster;
use crate::bench::{p99, round1};
use crate::fleet::checkers::Checks;
use crate::fleet::{Fleet, FleetConfig, Layout};

const LAYOUT: Layout = Layout { per_app: 10, apps: 100, clusters: 10 };
const CHUNK: usize = 10_000;
const TIGHT: Duration = Duration::from_secs(5);
/// From a join being visible until every old owner has let go: one heartbeat, and one more.
const HANDOVER: Duration = Duration::from_secs(2);

/// The ceiling interval for `instances`: 30 s, or 60 s past 50,000 instances, so the steady
/// load stays near 1,000–2,500 checks a second on the machine that runs the whole cluster.
pub fn ceiling(instances: usize) -> Duration {
    Duration::from_secs(if instances > 50_000 { 60 } else { 30 })
}

pub fn config(ceiling: Duration) -> String {
    format!("[status.schedule]\nceiling = {}\n[limits]\nmax_body_bytes = 33554432\n", ceiling.as_millis())
}

pub async fn run(cluster: &mut Cluster, instances: usize, lease: Duration) -> anyhow::Result<Value> {
    let ceiling = ceiling(instances);
    // Each window outlasts the ceiling, so every instance is checked in it.
    let window = ceiling + Duration::from_secs(5);
    let replicas = cluster.live().count();
    let fleet = Fleet::start(FleetConfig { instances, ports: 8, per_namespace: 1_000 }, 0).await?;
    let started = Instant::now();
    for (k, from) in (0..instances).step_by(CHUNK).enumerate() {
        let body = LAYOUT.http_body(&fleet.endpoints, from..(from + CHUNK).min(instances));
        let through = cluster.live().nth(k % replicas).expect("a live replica").1;
        let answer = through.post_json("/v1/instances", &body).await;
        if answer.get("upserted_instances").is_none() {
            bail!("registering instances {from}..: {answer}");
        }
    }
    eprintln!("cluster/status: registered {instances} instances in {:.1} s", started.elapsed().as_secs_f64());
    let sizes = shard_sizes(cluster, replicas, instances).await?;
    let fair = instances as f64 / replicas as f64;
    let max_share_dev_pct = sizes.iter().map(|&n| (n as f64 - fair).abs() / fair * 100.0).fold(0.0, f64::max);
    eprintln!("cluster/status: shard sizes {sizes:?}");
    wait_all_checked(&fleet, instances).await?;
    eprintln!("cluster/status: every instance checked after {:.1} s", started.elapsed().as_secs_f64());

    fleet.state.log_requests();
    let steady = Instant::now();
    tokio::time::sleep(window).await;
    let join_started = Instant::now();
    let joiner = cluster.add().await;
    shard_sizes(cluster, replicas + 1, instances).await?;
    let joined = Instant::now();
    eprintln!(
        "cluster/status: {} joined, placed after {:.1} s",
        Cluster::id(joiner),
        (joined - join_started).as_secs_f64()
    );
    tokio::time::sleep(window).await;
    let victim =
        cluster.live().map(|(i, _)| i).find(|&i| i != 0 && i != joiner).context("a replica to kill")?;
    let killed_at = Instant::now();
    cluster.kill(victim);
    eprintln!("cluster/status: killed {}", Cluster::id(victim));
    tokio::time::sleep(window.max(lease + TIGHT * 2)).await;
    let end = Instant::now();
    let checks = Checks::new(fleet.state.take_request_log());

    let before = checks.last_checker(steady, join_started);
    let after = checks.first_checker(joined + HANDOVER, killed_at);
    let compared: Vec<usize> = before.keys().copied().filter(|n| after.contains_key(n)).collect();
    let moved = compared.iter().filter(|n| before[n] != after[n]).count();
    let takeover = checks.takeover(&Cluster::id(victim), killed_at);
    let not_taken_over = takeover.iter().filter(|t| t.is_none()).count();
    let takeover_s: Vec<f64> = takeover.iter().flatten().map(Duration::as_secs_f64).collect();
    let mut doubles = checks.double_checked(steady, join_started);
    doubles.extend(checks.double_checked(joined + HANDOVER, killed_at));
    doubles.extend(checks.double_checked(killed_at, end));
    doubles.sort_unstable();
    doubles.dedup();
    let missed = checks.missed(0..instances, steady, end, longest_interval(ceiling) + lease);
    eprintln!(
        "cluster/status: moved {moved} of {} compared; {} instances taken over ({not_taken_over} never)",
        compared.len(),
        takeover.len()
    );
    Ok(json!({
        "instances": instances,
        "max_share_dev_pct": round1(max_share_dev_pct),
        "takeover_p99_s": if not_taken_over > 0 { Value::Null } else { json!(round1(p99(&takeover_s))) },
        "taken_over": takeover.len(),
        "moved_fraction_on_join": (moved as f64 / compared.len().max(1) as f64 * 1000.0).round() / 1000.0,
        "moved_compared": compared.len(),
        "double_checks": doubles.len(),
        "missed_checks": missed,
    }))
}

/// The longest interval between two checks of a calm instance.
fn longest_interval(ceiling: Duration) -> Duration {
    let jitter_pct = slipway_status::schedule::ScheduleConfig::default().jitter_pct;
    ceiling + ceiling * u32::from(jitter_pct) / 100
}

/// The instances each live replica reports it checks, once they add up to the fleet over
/// `count` replicas.
async fn shard_sizes(cluster: &Cluster, count: usize, instances: usize) -> anyhow::Result<Vec<i64>> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (_, any) = cluster.live().next().context("a live replica")?;
        let view = any.get_json("/v1/cluster").await;
        let sizes: Vec<i64> = view["replicas"]
            .as_array()
            .context("replicas in /v1/cluster")?
            .iter()
            .filter(|r| r["alive"] == true)
            .filter_map(|r| r["status_instances"].as_i64())
            .collect();
        // A replica that just joined reports 0 until it has placed the fleet.
        if sizes.len() == count
            && sizes.iter().all(|&n| n > 0)
            && sizes.iter().sum::<i64>() == instances as i64
        {
            return Ok(sizes);
        }
        if Instant::now() > deadline {
            bail!("the shards never added up to {instances} over {count} replicas: {view}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn wait_all_checked(fleet: &Fleet, instances: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(300);
    while fleet.state.requests(0..instances).contains(&0) {
        if Instant::now() > deadline {
            bail!("some instances were never checked");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(())
}
