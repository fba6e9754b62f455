//! The build phase of `cluster`: trivial builds (`FROM scratch` and one `COPY`, built by the
//! native backend) submitted round-robin across the replicas, one replica killed with
//! SIGKILL once half of them have finished, then every build checked against what the
//! replicas recorded: it succeeded, exactly one app package carries its publish key, and its
//! component log shows its image pushed once (a component run to completion twice pushes
//! twice). The log is flushed every second, so a replica killed within a second of a push
//! can take that line with it: a double run there would go unseen.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use serde_json::{Value, json};

use super::replicas::Cluster;
use crate::pipeline::write;

pub const APP: &str = "cluster-bench";
/// Submissions in flight at once.
const SUBMITTERS: usize = 8;
/// Builds each replica runs at once.
pub const PARALLEL_BUILDS: usize = 4;
/// The longest the builds may take before the benchmark gives up.
const DEADLINE: Duration = Duration::from_secs(1800);

/// The trivial component: an image of one small file.
pub const TRIVIAL: &str = "FROM scratch\nCOPY file.txt /file.txt\n";

/// Writes `n` component directories `c{k}` under `root`, each with `dockerfile` and the
/// `file.txt` it may copy, whose text is unique to this run, so no build is avoided by an
/// earlier one's package and no layer comes from an earlier run's cache.
pub fn write_sources(root: &Path, n: usize, dockerfile: &str) {
    let run = uuid_of_run();
    for k in 0..n {
        write(root, &format!("c{k}/Dockerfile"), dockerfile);
        write(root, &format!("c{k}/file.txt"), &format!("run {run}, build {k}\n"));
    }
}

fn uuid_of_run() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
}

pub async fn run(cluster: &mut Cluster, root: &Path, n: usize) -> anyhow::Result<Value> {
    let started = Instant::now();
    submit(cluster, root, n).await?;
    eprintln!("cluster: {n} builds accepted in {:.1} s", started.elapsed().as_secs_f64());
    let db = cluster.database().await;
    let killed = wait_and_kill_midway(cluster, &db, n).await?;
    let seconds = started.elapsed().as_secs_f64();
    eprintln!("cluster: every build ended {seconds:.1} s after the first submission");
    let checked = check(cluster, &db).await?;
    Ok(json!({
        "builds_submitted": n,
        "builds_completed_once": checked.completed_once,
        "builds_taken_over": checked.taken_over,
        "builds_failed": checked.failed,
        "builds_pushed_twice": checked.pushed_twice,
        "packages_published": checked.packages,
        "killed_replica_running_builds": killed,
        "builds_per_s": n as f64 / seconds,
    }))
}

/// Submits build `k` (component `c{k}`, version `0.1.k`) to the live replicas in turn.
pub async fn submit(cluster: &Cluster, root: &Path, n: usize) -> anyhow::Result<()> {
    let replicas: Vec<(reqwest::Client, String)> =
        cluster.live().map(|(_, r)| (r.client.clone(), r.url(&format!("/v1/apps/{APP}/builds")))).collect();
    let results: Vec<anyhow::Result<()>> = futures::stream::iter(0..n)
        .map(|k| {
            let (client, url) = replicas[k % replicas.len()].clone();
            let body = json!({"version": format!("0.1.{k}"), "components": [
                {"name": "c", "type": "microservice", "source": {"dir": {"path": root}}, "path": format!("c{k}")},
            ]});
            async move {
                let response = client.post(&url).json(&body).send().await?;
                if response.status() != 202 {
                    bail!("build {k} refused: {} {}", response.status(), response.text().await?);
                }
                Ok(())
            }
        })
        .buffer_unordered(SUBMITTERS)
        .collect()
        .await;
    results.into_iter().collect()
}

/// Waits for every build to end; once half have, kills (-9) a replica that holds running
/// builds, and returns how many it held.
async fn wait_and_kill_midway(cluster: &mut Cluster, db: &sqlx::AnyPool, n: usize) -> anyhow::Result<i64> {
    let deadline = Instant::now() + DEADLINE;
    let mut killed = None;
    let mut said = Instant::now();
    loop {
        let (ended, open) = progress(db).await?;
        if open == 0 {
            return Ok(killed.unwrap_or_default());
        }
        if killed.is_none() && ended as usize >= n / 2 {
            let busiest: Option<(String, i64)> = sqlx::query_as(
                "SELECT owner, COUNT(*) FROM builds WHERE state = 'running' AND owner IS NOT NULL
                 GROUP BY owner ORDER BY COUNT(*) DESC, owner LIMIT 1",
            )
            .fetch_optional(db)
            .await?;
            if let Some((owner, running)) = busiest {
                let i = cluster.index_of(&owner).context("a build owned by an unknown replica")?;
                cluster.kill(i);
                eprintln!("cluster: killed {owner} (-9) with {running} builds running, {ended} of {n} ended");
                killed = Some(running);
            }
        }
        if said.elapsed() > Duration::from_secs(5) {
            eprintln!("cluster: {ended} of {n} builds ended, {open} queued or running");
            said = Instant::now();
        }
        if Instant::now() > deadline {
            bail!("{open} builds still unfinished after {DEADLINE:?}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The line the pipeline logs when a component's image is built and pushed (the backend's
/// own push line names the blobs instead of the layers).
fn is_push(line: &str) -> bool {
    line.starts_with("pushed sha256:") && line.contains(" layers built, ")
}

/// How many builds have ended and how many are still queued or running.
pub async fn progress(db: &sqlx::AnyPool) -> Result<(i64, i64), sqlx::Error> {
    sqlx::query_as(
        "SELECT CAST(COALESCE(SUM(CASE WHEN state IN ('queued', 'running') THEN 0 ELSE 1 END), 0) AS BIGINT),
                CAST(COALESCE(SUM(CASE WHEN state IN ('queued', 'running') THEN 1 ELSE 0 END), 0) AS BIGINT)
         FROM builds",
    )
    .fetch_one(db)
    .await
}

/// What the replicas recorded about the builds of [`submit`].
#[derive(Debug)]
pub struct Checked {
    /// Succeeded, one package under its publish key, its image pushed once.
    pub completed_once: usize,
    /// Claimed more than once (their replica was lost).
    pub taken_over: usize,
    pub failed: usize,
    pub pushed_twice: usize,
    /// App packages of [`APP`], keyed or not.
    pub packages: i64,
}

/// What the replicas recorded about every build, read from the database and, for the
/// logs, from any live replica.
pub async fn check(cluster: &Cluster, db: &sqlx::AnyPool) -> anyhow::Result<Checked> {
    let builds: Vec<(String, String, Option<String>, i64, i64)> = sqlx::query_as(
        "SELECT b.id, b.state, b.reason, b.attempts,
                (SELECT COUNT(*) FROM registry_app_packages p WHERE p.publish_key = b.id)
         FROM builds b ORDER BY b.id",
    )
    .fetch_all(db)
    .await?;
    let (packages,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM registry_app_packages WHERE app = $1")
        .bind(APP)
        .fetch_one(db)
        .await?;
    let (_, reader) = cluster.live().next().context("no replica left to read logs from")?;
    let pushes = futures::stream::iter(&builds)
        .map(|(id, ..)| async move {
            let url = reader.url(&format!("/v1/builds/{id}/logs?component=c"));
            let log: Value = reader.client.get(url).send().await?.json().await?;
            let lines = log["lines"].as_array().context("a log answer")?;
            let pushed: Vec<String> =
                lines.iter().filter_map(|l| l.as_str().filter(|l| is_push(l)).map(str::to_owned)).collect();
            anyhow::Ok(pushed)
        })
        .buffered(SUBMITTERS)
        .collect::<Vec<_>>()
        .await;
    let mut checked = Checked { completed_once: 0, taken_over: 0, failed: 0, pushed_twice: 0, packages };
    for ((id, state, reason, attempts, keyed), pushed) in builds.iter().zip(pushes) {
        let pushed = pushed?;
        checked.taken_over += usize::from(*attempts > 1);
        checked.pushed_twice += usize::from(pushed.len() > 1);
        if state == "succeeded" && *keyed == 1 && pushed.len() == 1 {
            checked.completed_once += 1;
        } else {
            checked.failed += usize::from(state != "succeeded");
            eprintln!(
                "cluster: build {id} not completed once: {state} ({reason:?}), attempt {attempts}, {keyed} packages, {pushed:?}"
            );
        }
    }
    Ok(checked)
}
