//! Runs a fixed number of status checks through the public host API, for instruction
//! counting under `valgrind --tool=callgrind --trace-children=yes`.

use std::sync::Arc;

use serde_json::{Value, json};
use slipway_plugins::{CheckInput, HostConfig, MIGRATIONS, PluginHost};

const DEPLOYMENT: &str = include_str!("../tests/fixtures/k8s/deployment-healthy.json");

fn http(round: usize, i: usize) -> CheckInput {
    CheckInput {
        instance_id: format!("web-{i}"),
        instance: json!({"params": {"expect_status": [200], "json": [{"path": "status", "equals": "ok"}]}}),
        observation: json!({
            "http": {
                "status": 200,
                "headers": {"content-type": "application/json", "content-length": "15", "server": "envoy"},
                "body": "{\"status\":\"ok\"}",
                "json": {"status": "ok"},
                "latency_ms": (round * 31 + i) % 97 + 1,
            },
            "error": null,
        }),
        memo: true,
    }
}

fn k8s(deployment: &Value, round: usize, i: usize) -> CheckInput {
    let mut object = deployment.clone();
    object["metadata"]["name"] = json!(format!("checkout-{i}"));
    object["metadata"]["resourceVersion"] = json!((round * 100_000 + i).to_string());
    CheckInput {
        instance_id: format!("deploy-{i}"),
        instance: json!({}),
        observation: json!({"object": object, "error": null}),
        memo: true,
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let which = args.next().unwrap_or_else(|| "http".into());
    let rounds: usize = args.next().map_or(5, |n| n.parse().unwrap());
    let per_round: usize = args.next().map_or(1000, |n| n.parse().unwrap());
    sqlx::any::install_default_drivers();
    // One connection: every connection to `sqlite::memory:` would be its own database.
    let db = sqlx::any::AnyPoolOptions::new().max_connections(1).connect("sqlite::memory:").await.unwrap();
    for (_, sql) in MIGRATIONS {
        sqlx::raw_sql(sqlx::AssertSqlSafe(*sql)).execute(&db).await.unwrap();
    }
    let objects = Arc::new(object_store::memory::InMemory::new());
    // Under a profiler calls run many times slower: keep the time limit out of the way.
    let config =
        HostConfig { workers: 1, call_timeout: std::time::Duration::from_secs(30), ..HostConfig::default() };
    let host = PluginHost::open(db, objects, config).await.unwrap();
    let deployment: Value = serde_json::from_str(DEPLOYMENT).unwrap();
    let (name, input): (&str, Box<dyn Fn(usize, usize) -> CheckInput>) = match which.as_str() {
        "http" => ("http", Box::new(http)),
        _ => ("k8s-deployment", Box::new(move |r, i| k8s(&deployment, r, i))),
    };
    for round in 0..rounds {
        let inputs: Vec<CheckInput> = (0..per_round).map(|i| input(round, i)).collect();
        for verdict in host.check_batch(name, inputs).await.unwrap() {
            verdict.unwrap();
        }
    }
    eprintln!("{} checks of status/{name}", rounds * per_round);
    // Exit without dropping the host: its workers then see their input close and exit
    // normally (dropping would kill them), so a profiler following them writes its data.
    std::process::exit(0);
}
