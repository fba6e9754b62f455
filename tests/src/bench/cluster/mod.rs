//! `cluster`: three real replicas on one PostgreSQL database and one object store (see
//! `replicas`). Each phase returns the figures it measures; the JSON line is their union,
//! so a key appears only when a phase measured it.
//!
//! - `builds`: 1,000 builds (`--quick`: 200) round-robin across the replicas, one replica
//!   killed midway, each build checked to have completed exactly once.
//! - `claims`: raw queue claims per second through the pipeline's claim statement.
//! - `status`: 150,000 instances (`--quick`: 30,000) sharded over the replicas of a second
//!   cluster: shard sizes, a fourth replica joining, one killed (see `status`).

pub mod builds;
pub mod claims;
pub mod replicas;
mod status;

use std::time::Duration;

use anyhow::Context;
use serde_json::{Value, json};

use crate::pipeline::config_toml;
use replicas::Cluster;

const REPLICAS: usize = 3;
/// The default lease: a killed replica's builds are taken over after it.
const LEASE_MS: u64 = 15_000;

struct Plan {
    builds: usize,
    queued: usize,
    claim_window: Duration,
    instances: usize,
}

fn plan(quick: bool) -> Plan {
    if quick {
        Plan { builds: 200, queued: 60_000, claim_window: Duration::from_secs(10), instances: 30_000 }
    } else {
        Plan { builds: 1_000, queued: 200_000, claim_window: Duration::from_secs(30), instances: 150_000 }
    }
}

pub async fn run(quick: bool) -> anyhow::Result<Value> {
    let p = plan(quick);
    let registry = std::env::var("SLIPWAY_TEST_REGISTRY")
        .context("SLIPWAY_TEST_REGISTRY names the OCI registry the builds push to (source /work/notes/test-env.sh or run tests/run.sh)")?;
    let sources = tempfile::tempdir()?;
    builds::write_sources(sources.path(), p.builds, builds::TRIVIAL);
    let config = config_toml(
        &registry,
        sources.path(),
        &format!("max_parallel_builds = {}\n", builds::PARALLEL_BUILDS),
    );
    let mut cluster = Cluster::start(REPLICAS, LEASE_MS, &config).await;
    eprintln!("cluster: {REPLICAS} replicas up on {}", cluster.database_url);

    let mut figures = json!({ "replicas": REPLICAS });
    let claims_db = cluster.another_database("claims").await;
    merge(&mut figures, claims::run(&claims_db, p.queued, p.claim_window).await?);
    merge(&mut figures, builds::run(&mut cluster, sources.path(), p.builds).await?);
    drop(cluster);

    // The status poller on a cluster of its own, so builds and checks do not share the cores.
    let mut cluster = Cluster::start(REPLICAS, LEASE_MS, &status::config(status::ceiling(p.instances))).await;
    let lease = Duration::from_millis(LEASE_MS);
    merge(&mut figures, status::run(&mut cluster, p.instances, lease).await?);
    Ok(figures)
}

fn merge(into: &mut Value, phase: Value) {
    if let (Some(into), Value::Object(phase)) = (into.as_object_mut(), phase) {
        into.extend(phase);
    }
}
