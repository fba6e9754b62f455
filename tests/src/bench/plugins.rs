//! `plugins`: calls per second through the public plugin host API of the built-in
//! `status/http` check and of `status/k8s-deployment` on a realistic Deployment, with one
//! worker and with one per core; p99 latency of a single call; cold load of a 50 KB script;
//! heap per script runtime. Every round changes every observation, so the unchanged-
//! observation shortcut never answers and every figure is a script run.
//!
//! "1 worker" (`_1core`) is one calling task and one worker process: the worker runs the
//! scripts on one core while the host's side (encoding, fingerprints, decoding) overlaps on
//! the other, as in the service. Each round's inputs are built before its timed part; the
//! per-CPU-second figures count the CPU time of the host process and its workers during
//! the timed parts only (input building excluded), so they say what a check costs in all.
//! The inputs are built as the status crate builds them: observations written into the
//! host's wire form field by field, the instance encoded once and shared; they and the
//! verdicts are freed after the timed part (the status crate frees both after its batch,
//! while the host already runs the next one).
//!
//! [`run_fixed`] is the same call path without clocks: a fixed number of checks, for
//! counting instructions under `valgrind --tool=callgrind --trace-children=yes`.

use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{Value, json};
use slipway_plugins::{CheckInput, HostConfig, PluginHost, ScriptKind, WireValue, pack_package};
use slipway_server::config::Config;
use slipway_server::storage::{open_database, open_object_store};

const INSTANCES: usize = 2000;
const LATENCY_CALLS: usize = 5000;
const DEPLOYMENT: &str = include_str!("../../../plugins/tests/fixtures/k8s/deployment-healthy.json");
const K8S_RULES: &str = include_str!("../../../plugins/builtin/status/k8s-rules.js");

pub async fn run(quick: bool) -> anyhow::Result<Value> {
    let window = if quick { Duration::from_secs(3) } else { Duration::from_secs(10) };
    let dir = tempfile::tempdir()?;
    let config = Config { data_dir: dir.path().into(), ..Config::default() };
    let db = open_database(&config).await?;
    let objects = open_object_store(&config)?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());

    let one =
        PluginHost::open(db.clone(), objects.clone(), HostConfig { workers: 1, ..HostConfig::default() })
            .await?;
    install_naive_peer(&one).await?;
    let deployment: Value = serde_json::from_str(DEPLOYMENT)?;
    let deployment_bytes = serde_json::to_vec(&deployment)?.len();
    let instance = http_instance();
    let http = |round, i| http_inputs(&instance, round, i);

    eprintln!("plugins: status/http, 1 worker, {window:?}");
    let http_1 = throughput(&one, "http", 1, window, http).await?;
    eprintln!("plugins: status/k8s-deployment ({deployment_bytes} B object), 1 worker, {window:?}");
    let k8s_1 =
        throughput(&one, "k8s-deployment", 1, window, |round, i| k8s_inputs(&deployment, round, i, false))
            .await?;
    let stats = one.worker_stats().await?;
    eprintln!("plugins: naive peer (object handed over as JSON text, JSON.parse in the script), 1 worker");
    let naive_1 = throughput(&one, "bench-naive-deployment", 1, window, |round, i| {
        k8s_inputs(&deployment, round, i, true)
    })
    .await?;
    eprintln!("plugins: p99 of {LATENCY_CALLS} single calls");
    let (p50_us, p99_us) = latency(&one, &instance).await?;
    // Both sides poll their pipe briefly before blocking: once idle, neither may keep a core busy.
    let workers = worker_pids();
    let idle_before = cpu_time(&workers);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_cpu_us = cpu_time(&workers).since(idle_before).total().as_micros();
    eprintln!("  idle: {idle_cpu_us} µs of CPU in 1 s (host and worker)");
    eprintln!("plugins: cold load of a 50 KB script");
    let (compile_ms, first_call_ms) = cold_load(&one).await?;
    drop(one);

    let all = PluginHost::open(db, objects, HostConfig { workers: cores, ..HostConfig::default() }).await?;
    eprintln!("plugins: status/http, {cores} workers, {window:?}");
    let http_all = throughput(&all, "http", cores, window, http).await?;

    Ok(json!({
        "bench": "plugins",
        "http_calls_per_s_1core": http_1.per_s.round(),
        "k8s_deployment_calls_per_s_1core": k8s_1.per_s.round(),
        "http_calls_per_s_all_cores": http_all.per_s.round(),
        "p99_us": p99_us,
        "cold_load_ms": compile_ms + first_call_ms,
        "runtime_mem_bytes": stats.heap_bytes / stats.runtimes.max(1) as i64,
        "p50_us": p50_us,
        "idle_cpu_us_per_s": idle_cpu_us,
        "cold_compile_ms": compile_ms,
        "cold_first_call_ms": first_call_ms,
        "naive_json_parse_k8s_deployment_calls_per_s_1core": naive_1.per_s.round(),
        "k8s_deployment_vs_naive_ratio": (k8s_1.per_s / naive_1.per_s * 100.0).round() / 100.0,
        "http_calls_per_cpu_s_1worker": http_1.per_cpu_s.round(),
        "k8s_deployment_calls_per_cpu_s_1worker": k8s_1.per_cpu_s.round(),
        "http_host_cpu_us_per_call_1worker": http_1.host_us,
        "http_worker_cpu_us_per_call_1worker": http_1.worker_us,
        "k8s_deployment_host_cpu_us_per_call_1worker": k8s_1.host_us,
        "k8s_deployment_worker_cpu_us_per_call_1worker": k8s_1.worker_us,
        "deployment_object_bytes": deployment_bytes,
        "cores": cores,
    }))
}

/// The peer the issue compares against: the same rules, but the script gets the object as
/// JSON text and parses it itself.
async fn install_naive_peer(host: &PluginHost) -> anyhow::Result<()> {
    let source = format!(
        "{K8S_RULES}\nexport function check(instance, text) {{\n  return k8sHealth({{ object: JSON.parse(text), error: null }}, \"Deployment\");\n}}\n"
    );
    let manifest = "[package]\nname = \"bench-naive\"\nversion = \"1.0.0\"\n\n[[scripts]]\nkind = \"status\"\nname = \"bench-naive-deployment\"\nrevision = 1\nfile = \"naive.js\"\n";
    host.install_package(pack_package(&[
        ("plugin.toml", manifest.as_bytes()),
        ("naive.js", source.as_bytes()),
    ]))
    .await?;
    Ok(())
}

/// The `instance` argument of the http checks: the same for every instance of a round,
/// encoded once.
fn http_instance() -> WireValue {
    WireValue::from_value(
        &json!({"params": {"expect_status": [200], "json": [{"path": "status", "equals": "ok"}]}}),
    )
}

/// A typical HTTP observation, written as the status crate's HTTP fetcher writes one (keys
/// sorted).
fn http_inputs(instance: &WireValue, round: usize, i: usize) -> CheckInput {
    let latency = ((round * 31 + i) % 97 + 1) as i64;
    let body = "{\"status\":\"ok\"}";
    let observation = WireValue::object(|o| {
        o.null("error");
        o.object("http", |http| {
            http.str("body", body);
            http.object("headers", |headers| {
                headers.str("content-length", "15");
                headers.str("content-type", "application/json");
                headers.str("server", "envoy");
            });
            http.object("json", |json| json.str("status", "ok"));
            http.int("latency_ms", latency);
            http.int("status", 200);
        });
    });
    CheckInput { instance_id: format!("web-{i}").into(), instance: instance.clone(), observation, memo: true }
}

fn k8s_inputs(deployment: &Value, round: usize, i: usize, as_text: bool) -> CheckInput {
    let mut object = deployment.clone();
    object["metadata"]["name"] = json!(format!("checkout-{i}"));
    object["metadata"]["resourceVersion"] = json!((round * 100_000 + i).to_string());
    let observation = if as_text {
        WireValue::from_value(&Value::String(object.to_string()))
    } else {
        WireValue::object(|o| {
            o.null("error");
            o.value("object", &object);
        })
    };
    CheckInput {
        instance_id: format!("deploy-{i}").into(),
        instance: json!({}).into(),
        observation,
        memo: true,
    }
}

/// Which check a fixed-count run drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FixedCheck {
    /// `status/http` on a typical HTTP observation.
    Http,
    /// `status/k8s-deployment` on the Deployment fixture.
    K8s,
    /// The floor under `http`: a check that reads nothing and returns a constant verdict,
    /// on the same inputs (what the call path costs with no script work at all).
    HttpFloor,
    /// The floor under `k8s`, as `http-floor`.
    K8sFloor,
}

/// A status check that does no work: what is left is building the arguments in the
/// engine, the call, writing the result back, and the host's side.
const FLOOR: &str = "export function check(instance, observation) {\n  return { status: \"healthy\", reason: \"\", details: null };\n}\n";

/// Runs `rounds` batches of `batch` changed observations through `check_batch` with one
/// worker and a call timeout out of a profiler's way. Per-check instruction counts come from
/// two runs: (count at N rounds − count at 1 round) / ((N − 1) × batch) leaves out start-up,
/// the built-in package's compilation and the first load of the script.
pub async fn run_fixed(check: FixedCheck, rounds: usize, batch: usize) -> anyhow::Result<Value> {
    let dir = tempfile::tempdir()?;
    let config = Config { data_dir: dir.path().into(), ..Config::default() };
    let db = open_database(&config).await?;
    let objects = open_object_store(&config)?;
    let host_config =
        HostConfig { workers: 1, call_timeout: Duration::from_secs(30), ..HostConfig::default() };
    let host = PluginHost::open(db, objects, host_config).await?;
    let deployment: Value = serde_json::from_str(DEPLOYMENT)?;
    let k8s = |r, i| k8s_inputs(&deployment, r, i, false);
    let instance = http_instance();
    let http = |r, i| http_inputs(&instance, r, i);
    let (name, input): (&str, Box<dyn Fn(usize, usize) -> CheckInput>) = match check {
        FixedCheck::Http => ("http", Box::new(http)),
        FixedCheck::K8s => ("k8s-deployment", Box::new(k8s)),
        FixedCheck::HttpFloor => ("bench-floor", Box::new(http)),
        FixedCheck::K8sFloor => ("bench-floor", Box::new(k8s)),
    };
    if name == "bench-floor" {
        let manifest = "[package]\nname = \"bench-floor\"\nversion = \"1.0.0\"\n\n[[scripts]]\nkind = \"status\"\nname = \"bench-floor\"\nrevision = 1\nfile = \"floor.js\"\n";
        host.install_package(pack_package(&[
            ("plugin.toml", manifest.as_bytes()),
            ("floor.js", FLOOR.as_bytes()),
        ]))
        .await?;
    }
    for round in 0..rounds {
        let inputs: Vec<CheckInput> = (0..batch).map(|i| input(round, i)).collect();
        for verdict in host.check_batch(name, &inputs).await? {
            verdict?;
        }
    }
    // The workers must end on their own when this process exits (their input closes), not
    // be killed with the host: a profiler following them writes its data only then.
    std::mem::forget(host);
    Ok(json!({"bench": "plugins", "fixed": name, "checks": rounds * batch}))
}

struct Throughput {
    per_s: f64,
    per_cpu_s: f64,
    /// CPU time per call of the host process's threads and of the workers, in µs (two
    /// decimals): which side a core's worth of checks is spent on.
    host_us: f64,
    worker_us: f64,
}

/// Judges `INSTANCES` instances per round from `tasks` concurrent callers until `window`
/// of batch time has passed. Building the inputs is neither timed nor counted as CPU time.
async fn throughput(
    host: &PluginHost,
    check: &str,
    tasks: usize,
    window: Duration,
    input: impl Fn(usize, usize) -> CheckInput + Copy,
) -> anyhow::Result<Throughput> {
    let per_task = INSTANCES / tasks;
    // Warm-up round: loads the runtime in each worker.
    let warm: Vec<CheckInput> = (0..INSTANCES).map(|i| input(usize::MAX / 2, i)).collect();
    host.check_batch(check, &warm).await?;
    let workers = worker_pids();
    let mut calls = 0usize;
    let mut busy = Duration::ZERO;
    let mut cpu = CpuTime::default();
    let mut round = 0;
    while busy < window {
        let batches: Vec<Vec<CheckInput>> =
            (0..tasks).map(|t| (0..per_task).map(|i| input(round, t * per_task + i)).collect()).collect();
        let cpu_before = cpu_time(&workers);
        let started = Instant::now();
        let runs: Vec<_> = batches
            .into_iter()
            .map(|batch| {
                let host = host.clone();
                let check = check.to_owned();
                // The batch comes back with its verdicts, both freed after the timed part.
                tokio::spawn(async move {
                    let verdicts = host.check_batch(&check, &batch).await;
                    (batch, verdicts)
                })
            })
            .collect();
        let mut judged = Vec::with_capacity(runs.len());
        for run in runs {
            let (batch, verdicts) = run.await.context("batch task")?;
            let verdicts = verdicts?;
            if let Some(Err(e)) = verdicts.iter().find(|verdict| verdict.is_err()) {
                anyhow::bail!("{check}: {e}");
            }
            calls += verdicts.len();
            judged.push((batch, verdicts));
        }
        busy += started.elapsed();
        cpu = cpu.add(cpu_time(&workers).since(cpu_before));
        drop(judged);
        round += 1;
    }
    let per_s = calls as f64 / busy.as_secs_f64();
    let per_call_us = |d: Duration| (d.as_secs_f64() * 1e6 / calls as f64 * 100.0).round() / 100.0;
    let (host_us, worker_us) = (per_call_us(cpu.host), per_call_us(cpu.workers));
    eprintln!(
        "  {calls} calls in {busy:.2?}: {per_s:.0}/s; {:.2} CPU s (host and {} worker(s), timed parts only): \
         host {host_us} µs, worker(s) {worker_us} µs per call",
        cpu.total().as_secs_f64(),
        workers.len()
    );
    Ok(Throughput { per_s, per_cpu_s: calls as f64 / cpu.total().as_secs_f64(), host_us, worker_us })
}

/// p50 and p99 in microseconds of single `call`s of `status/http`, one after another.
async fn latency(host: &PluginHost, instance: &WireValue) -> anyhow::Result<(u64, u64)> {
    let mut histogram = hdrhistogram::Histogram::<u64>::new(3)?;
    for i in 0..LATENCY_CALLS + 500 {
        let input = http_inputs(instance, i, 0);
        let args = vec![input.instance.to_value(), input.observation.to_value()];
        let started = Instant::now();
        host.call(ScriptKind::Status, "http", None, "check", args).await?;
        if i >= 500 {
            histogram.record(started.elapsed().as_micros() as u64)?;
        }
    }
    Ok((histogram.value_at_quantile(0.5), histogram.value_at_quantile(0.99)))
}

/// Install (compile and validate in a worker) and first call of a fresh 50 KB script.
async fn cold_load(host: &PluginHost) -> anyhow::Result<(f64, f64)> {
    let mut source = String::from(
        "export function check(instance, observation) {\n  return { status: 'healthy', reason: String(rule0(1)) };\n}\n",
    );
    let mut i = 0;
    while source.len() < 50 * 1024 {
        source.push_str(&format!(
            "function rule{i}(x) {{\n  const table = {{ a: {i}, b: 'rule {i}', c: [1, 2, 3] }};\n  return x > {i} ? table.a + x : table.c.length + x;\n}}\n"
        ));
        i += 1;
    }
    let manifest = "[package]\nname = \"bench-cold\"\nversion = \"1.0.0\"\n\n[[scripts]]\nkind = \"status\"\nname = \"bench-cold\"\nrevision = 1\nfile = \"cold.js\"\n";
    let package = pack_package(&[("plugin.toml", manifest.as_bytes()), ("cold.js", source.as_bytes())]);
    let started = Instant::now();
    host.install_package(package).await?;
    let compile_ms = started.elapsed().as_secs_f64() * 1000.0;
    let started = Instant::now();
    host.call(ScriptKind::Status, "bench-cold", None, "check", vec![json!({}), json!({})]).await?;
    let first_call_ms = started.elapsed().as_secs_f64() * 1000.0;
    eprintln!("  {} bytes: install {compile_ms:.1} ms, first call {first_call_ms:.1} ms", source.len());
    Ok(((compile_ms * 10.0).round() / 10.0, (first_call_ms * 10.0).round() / 10.0))
}

/// The worker processes (children) of this process.
fn worker_pids() -> Vec<String> {
    let me = std::process::id().to_string();
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().to_string())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            stat.rsplit_once(") ").and_then(|(_, rest)| rest.split_whitespace().nth(1)) == Some(me.as_str())
        })
        .collect()
}

/// CPU time used so far by this process's threads and by its worker processes.
#[derive(Debug, Clone, Copy, Default)]
struct CpuTime {
    host: Duration,
    workers: Duration,
}

impl CpuTime {
    fn since(self, earlier: CpuTime) -> CpuTime {
        CpuTime {
            host: self.host.saturating_sub(earlier.host),
            workers: self.workers.saturating_sub(earlier.workers),
        }
    }

    fn add(self, other: CpuTime) -> CpuTime {
        CpuTime { host: self.host + other.host, workers: self.workers + other.workers }
    }

    fn total(self) -> Duration {
        self.host + self.workers
    }
}

/// CPU time used so far by this process's threads and by `workers` (single-threaded), from
/// the scheduler's nanosecond counters (`/proc/<pid>/stat` counts 10 ms ticks, coarser than
/// a round).
fn cpu_time(workers: &[String]) -> CpuTime {
    let threads: Vec<String> = std::fs::read_dir("/proc/self/task")
        .map(|entries| {
            entries
                .flatten()
                .map(|e| format!("/proc/self/task/{}", e.file_name().to_string_lossy()))
                .collect()
        })
        .unwrap_or_default();
    let workers: Vec<String> = workers.iter().map(|pid| format!("/proc/{pid}")).collect();
    CpuTime { host: scheduled(&threads), workers: scheduled(&workers) }
}

/// The summed run time of `tasks` (`/proc` directories) from their `schedstat`.
fn scheduled(tasks: &[String]) -> Duration {
    let nanos = tasks
        .iter()
        .filter_map(|task| std::fs::read_to_string(format!("{task}/schedstat")).ok())
        .filter_map(|stat| stat.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    Duration::from_nanos(nanos)
}
