//! `registry`: 100,000 app packages (1,000 apps × 100 versions, 5 tags each), then the tag
//! query "all of two tags, latest" through the HTTP API with many concurrent clients, the
//! publish rate through the HTTP API, and the resident-memory growth of the process while a
//! 1 GB package is uploaded and downloaded.
//!
//! Seeding: a sample is published through `POST /v1/apps/{app}/packages` to measure
//! `publish_per_s`; the rest goes through the same crate function that handler calls
//! (`Registry::publish_app_package`), concurrently, to save the HTTP overhead. Server and
//! clients share this process and its 2 cores, so the figures are conservative.

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use slipway_registry::manifest::Source;
use slipway_registry::publish::{ComponentInput, PublishRequest};
use slipway_registry::version::VersionSpec;

use crate::server::TestServer;

const VERSIONS_PER_APP: u64 = 100;
/// Clients of the headline query figures; `MANY_CONNECTIONS` is reported beside them.
const CONNECTIONS: usize = 16;
const MANY_CONNECTIONS: usize = 64;
const HTTP_SAMPLE: u64 = 1_000;
const SEED_TASKS: usize = 8;
const QUERY: &str = "tags=stable,t0&latest=true";

pub async fn run(quick: bool) -> anyhow::Result<Value> {
    let apps: u64 = if quick { 20 } else { 1_000 };
    let query_time = Duration::from_secs(if quick { 5 } else { 20 });
    let transfer_bytes: u64 = if quick { 128 << 20 } else { 1 << 30 };
    let server = TestServer::start_with(
        |c| {
            c.database.max_connections = 8;
            if let Some(entries) = latest_cache_entries() {
                c.registry.latest_cache_entries = entries;
            }
        },
        slipway_server::router::app,
    )
    .await;
    let client = server.client();

    let total = apps * VERSIONS_PER_APP;
    let sample = HTTP_SAMPLE.min(total / 4);
    eprintln!("registry: seeding {} packages through Registry::publish_app_package", total - sample);
    let started = Instant::now();
    let registry = server.state.registry.clone();
    in_parallel(0..total - sample, move |n| {
        let registry = registry.clone();
        async move {
            registry.publish_app_package(publish_request(&format!("app-{}", n % apps), n / apps)).await?;
            if n % 10_000 == 0 {
                eprintln!("registry: {n} packages");
            }
            anyhow::Ok(())
        }
    })
    .await?;
    let seed_per_s = (total - sample) as f64 / started.elapsed().as_secs_f64();

    eprintln!("registry: publishing the last {sample} packages through HTTP");
    let started = Instant::now();
    let base = server.url("");
    let http = client.clone();
    in_parallel(total - sample..total, move |n| {
        let (client, url, body) =
            (http.clone(), format!("{base}/v1/apps/app-{}/packages", n % apps), publish_body(n / apps));
        async move {
            let response = client.post(url).json(&body).send().await?;
            anyhow::ensure!(response.status() == 201, "publish answered {}", response.status());
            anyhow::Ok(())
        }
    })
    .await?;
    let publish_per_s = sample as f64 / started.elapsed().as_secs_f64();

    let auth = format!("Bearer {}", server.admin_token);
    query_load(server.addr, &auth, apps, CONNECTIONS, Duration::from_secs(1)).await?;
    let mut runs = Vec::new();
    for connections in [CONNECTIONS, MANY_CONNECTIONS] {
        eprintln!("registry: `{QUERY}` with {connections} connections for {query_time:?}");
        let (started, cpu) = (Instant::now(), cpu_seconds());
        let histogram = query_load(server.addr, &auth, apps, connections, query_time).await?;
        let cpu_us_per_query = (cpu_seconds() - cpu) * 1e6 / histogram.len().max(1) as f64;
        runs.push((histogram.len() as f64 / started.elapsed().as_secs_f64(), histogram, cpu_us_per_query));
    }
    let ms = |h: &hdrhistogram::Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let (queries_per_s, histogram, cpu_us_per_query) = &runs[0];
    let (many_per_s, many, _) = &runs[1];

    eprintln!("registry: {} MB upload and download", transfer_bytes >> 20);
    let transfer_mem_growth_mb = super::registry_transfer::measure(&server, &client, transfer_bytes).await?;

    Ok(json!({
        "bench": "registry",
        "packages": total,
        "query_p50_ms": ms(histogram, 0.50),
        "query_p99_ms": ms(histogram, 0.99),
        "queries_per_s": queries_per_s.round(),
        "publish_per_s": publish_per_s.round(),
        "seed_publish_per_s": seed_per_s.round(),
        "query_p99_ms_at_64_connections": ms(many, 0.99),
        "query_cpu_us": cpu_us_per_query.round(),
        "queries_per_s_at_64_connections": many_per_s.round(),
        "transfer_mem_growth_mb": transfer_mem_growth_mb,
        "transfer_bytes": transfer_bytes,
        "http_publish_sample": sample,
        "connections": CONNECTIONS,
    }))
}

/// `SLIPWAY_BENCH_LATEST_CACHE_ENTRIES=0` measures the query without the answer cache.
fn latest_cache_entries() -> Option<u64> {
    std::env::var("SLIPWAY_BENCH_LATEST_CACHE_ENTRIES").ok()?.parse().ok()
}

/// Runs `job` for every number in `range` on `SEED_TASKS` concurrent tasks.
async fn in_parallel<F, Fut>(range: std::ops::Range<u64>, job: F) -> anyhow::Result<()>
where
    F: Fn(u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let next = Arc::new(AtomicU64::new(range.start));
    let mut tasks = Vec::new();
    for _ in 0..SEED_TASKS {
        let (next, job, end) = (next.clone(), job.clone(), range.end);
        tasks.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= end {
                    return anyhow::Ok(());
                }
                job(n).await?;
            }
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(())
}

/// Five tags per version: `stable`/`beta` alternate, `t0..t2`, `r0..r3`, `w0..w9`, and one
/// unique `b<n>`; so "stable and t0" matches every sixth version.
fn tags(version: u64) -> Vec<String> {
    let channel = if version % 2 == 0 { "stable" } else { "beta" };
    vec![
        channel.into(),
        format!("t{}", version % 3),
        format!("r{}", version % 4),
        format!("w{}", version % 10),
        format!("b{version}"),
    ]
}

fn publish_body(version: u64) -> Value {
    json!({
        "version": format!("1.{}.0", version),
        "tags": tags(version),
        "components": [{ "component_type": "helm", "component": "web", "plugin": "component/helm/1", "files": { "values.yaml": "replicas: 2\n" } }],
    })
}

fn publish_request(app: &str, version: u64) -> PublishRequest {
    PublishRequest {
        app: app.into(),
        version: VersionSpec::parse(&format!("1.{version}.0")).expect("a valid version"),
        tags: tags(version),
        creator: "bench".into(),
        source: Source::default(),
        components: vec![
            ComponentInput {
                files: [("values.yaml".to_owned(), b"replicas: 2\n".to_vec())].into(),
                ..ComponentInput::new("helm", "web", "component/helm/1")
            }
            .into(),
        ],
    }
}

/// `connections` keep-alive clients asking for the latest "stable and t0" package of a
/// random app, back to back; returns the merged latency histogram in microseconds.
async fn query_load(
    addr: std::net::SocketAddr,
    auth: &str,
    apps: u64,
    connections: usize,
    duration: Duration,
) -> anyhow::Result<hdrhistogram::Histogram<u64>> {
    super::http_load::run(addr, connections, duration, Some(auth), |client| {
        let mut app = client as u64 * 7919;
        move || {
            app = (app * 6364136223846793005 + 1442695040888963407) % apps.max(1);
            format!("/v1/apps/app-{app}/packages?{QUERY}")
        }
    })
    .await
}

/// CPU time this process (server and clients) has used, from `/proc/self/stat`; divided by
/// the queries answered it is less sensitive to other load on the machine than latency.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
    let ticks: f64 = fields.get(11..13).map_or(0.0, |f| f.iter().filter_map(|t| t.parse::<f64>().ok()).sum());
    ticks / 100.0
}

/// Reads `/proc/self/status` VmRSS in kilobytes.
pub(super) fn rss_kb() -> u64 {
    let mut status = String::new();
    let _ = std::fs::File::open("/proc/self/status").and_then(|mut f| f.read_to_string(&mut status));
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}
