//! `examples/cluster/`: the Kubernetes manifests read as the Kubernetes API's own types and
//! checked to fit together (and their configuration to load as Slipway's), and the loopback
//! cluster script run for real — PostgreSQL, Garage, three replicas behind HAProxy — with
//! the example app built through the load balancer before and after a replica is killed.
//! No kube-apiserver can run here, so the manifests are checked by parsing, not applied.

use std::collections::HashMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Deserialize;
use serde_json::Value;
use slipway_server::config::{Config, ObjectStoreKind, Overrides};
use slipway_tests::process::slipway_binary;

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/cluster").canonicalize().unwrap()
}

#[test]
fn the_kubernetes_manifests_parse_and_fit_together() {
    let text = std::fs::read_to_string(example().join("kubernetes/slipway.yaml")).unwrap();
    let mut by_kind: HashMap<String, Value> = HashMap::new();
    for document in serde_norway::Deserializer::from_str(&text) {
        let value = Value::deserialize(document).expect("valid YAML");
        let kind = value["kind"].as_str().expect("every document has a kind").to_owned();
        assert!(by_kind.insert(kind.clone(), value).is_none(), "one {kind}");
    }
    let typed = |kind: &str| by_kind.get(kind).unwrap_or_else(|| panic!("a {kind}")).clone();
    let config_map: ConfigMap = serde_json::from_value(typed("ConfigMap")).expect("a valid ConfigMap");
    let secret: Secret = serde_json::from_value(typed("Secret")).expect("a valid Secret");
    let deployment: Deployment = serde_json::from_value(typed("Deployment")).expect("a valid Deployment");
    let service: Service = serde_json::from_value(typed("Service")).expect("a valid Service");

    let spec = &deployment.spec;
    assert!(spec.replicas.unwrap() >= 2, "scaled out");
    let pod = spec.template.spec.as_ref().unwrap();
    let pod_labels = spec.template.metadata.as_ref().unwrap().labels.clone().unwrap();
    assert_eq!(spec.selector.match_labels.as_ref().unwrap(), &pod_labels);
    assert_eq!(
        service.spec.as_ref().unwrap().selector.as_ref().unwrap(),
        &pod_labels,
        "the Service finds the pods"
    );

    let container = &pod.containers[0];
    let port_names: Vec<&str> = container.ports.iter().flatten().filter_map(|p| p.name.as_deref()).collect();
    for port in service.spec.as_ref().unwrap().ports.iter().flatten() {
        match port.target_port.as_ref().unwrap() {
            IntOrString::String(name) => {
                assert!(port_names.contains(&name.as_str()), "{name} is a container port")
            }
            IntOrString::Int(n) => panic!("target the named port, not {n}"),
        }
    }
    let probe_path = |p: &Option<k8s_openapi::api::core::v1::Probe>| {
        p.as_ref().and_then(|p| p.http_get.as_ref()).and_then(|h| h.path.clone()).unwrap()
    };
    assert_eq!(probe_path(&container.readiness_probe), "/readyz");
    assert_eq!(probe_path(&container.liveness_probe), "/healthz");
    let secret_name = secret.metadata.name.clone().unwrap();
    let from_secret = container
        .env_from
        .iter()
        .flatten()
        .filter_map(|e| e.secret_ref.as_ref())
        .any(|s| s.name == secret_name);
    assert!(from_secret, "the container reads the Secret");
    let config_volume = pod.volumes.iter().flatten().find_map(|v| v.config_map.as_ref()).unwrap();
    assert_eq!(Some(&config_volume.name), config_map.metadata.name.as_ref(), "the ConfigMap is mounted");
    let replica_id =
        container.env.iter().flatten().find(|e| e.name == "SLIPWAY_CLUSTER__REPLICA_ID").unwrap();
    let field = replica_id.value_from.as_ref().and_then(|v| v.field_ref.as_ref()).unwrap();
    assert_eq!(field.field_path, "metadata.name", "each pod is its own replica");

    // The configuration is Slipway's: it loads, with the Secret's values as the pod's env.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("slipway.toml");
    let args = container.args.clone().unwrap();
    assert!(args.windows(2).any(|w| w[0] == "--config" && w[1].ends_with("/slipway.toml")), "{args:?}");
    std::fs::write(&file, &config_map.data.as_ref().unwrap()["slipway.toml"]).unwrap();
    let env = secret.string_data.clone().unwrap().into_iter();
    let config = Config::load_with_env(Some(&file), &Overrides::default(), env).expect("the ConfigMap loads");
    assert!(config.database_url().starts_with("postgres://"), "a shared database");
    assert_eq!(config.object_store.kind, ObjectStoreKind::S3, "a shared object store");
    assert_eq!(config.object_store.s3.access_key_id, "change-me", "keys come from the Secret");
}

/// `examples/cluster/run.sh` in the background, stopped (with everything it started) on drop.
struct ExampleCluster {
    script: Child,
    dir: tempfile::TempDir,
    env: HashMap<String, String>,
}

impl ExampleCluster {
    fn start(registry: &str) -> Option<ExampleCluster> {
        for tool in ["haproxy", "garage", "psql"] {
            if Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .output()
                .map_or(true, |o| !o.status.success())
            {
                eprintln!("skipped: {tool} is not installed (tests/run.sh installs it)");
                return None;
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let script = Command::new("bash")
            .arg(example().join("run.sh"))
            .env("SLIPWAY_BIN", slipway_binary())
            .env("CLUSTER_DIR", dir.path())
            .env("CLUSTER_PORT", port.to_string())
            .env("SLIPWAY_CLUSTER__LEASE_MS", "3000")
            .env("SLIPWAY_LOG_FILTER", "warn")
            .env("SLIPWAY_PIPELINE__REGISTRY", registry)
            .env("SLIPWAY_PIPELINE__INSECURE_REGISTRIES", format!("[\"{registry}\"]"))
            .stdout(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("run examples/cluster/run.sh");
        let mut cluster = ExampleCluster { script, dir, env: HashMap::new() };
        let file = cluster.dir.path().join("cluster.env");
        let deadline = Instant::now() + Duration::from_secs(180);
        while !file.exists() {
            assert!(cluster.script.try_wait().unwrap().is_none(), "the cluster script stopped early");
            assert!(Instant::now() < deadline, "the cluster did not come up");
            std::thread::sleep(Duration::from_millis(200));
        }
        cluster.env = std::fs::read_to_string(&file)
            .unwrap()
            .lines()
            .filter_map(|l| l.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
            .collect();
        Some(cluster)
    }

    fn var(&self, name: &str) -> &str {
        &self.env[name]
    }

    fn slipway(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(slipway_binary())
            .args(args)
            .env("SLIPWAY_SERVER", self.var("CLUSTER_URL"))
            .env("SLIPWAY_TOKEN", self.var("SLIPWAY_TOKEN"))
            .env("NO_COLOR", "1")
            .current_dir(self.dir.path())
            .output()
            .unwrap();
        let run = (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into(),
            String::from_utf8_lossy(&out.stderr).into(),
        );
        eprintln!("$ slipway {}\n-> {}\n{}{}", args.join(" "), run.0, run.1, run.2);
        run
    }

    async fn cluster_view(&self) -> Value {
        reqwest::Client::new()
            .get(format!("{}/v1/cluster", self.var("CLUSTER_URL")))
            .bearer_auth(self.var("SLIPWAY_TOKEN"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

impl Drop for ExampleCluster {
    fn drop(&mut self) {
        // SIGTERM to the script's process group: its trap stops everything it started.
        let group = format!("-{}", self.script.id());
        let _ = Command::new("kill").args(["-s", "TERM", "--", &group]).status();
        let deadline = Instant::now() + Duration::from_secs(40);
        while self.script.try_wait().unwrap().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        if self.script.try_wait().unwrap().is_none() {
            let _ = Command::new("kill").args(["-s", "KILL", "--", &group]).status();
            let _ = self.script.wait();
            let postgres = Path::new(env!("CARGO_MANIFEST_DIR")).join("postgres.sh");
            let _ =
                Command::new("bash").arg(postgres).arg("stop").arg(self.dir.path().join("postgres")).status();
        }
    }
}

#[tokio::test]
async fn the_example_cluster_builds_through_its_load_balancer_and_survives_a_killed_replica() {
    let Some((registry, _)) = slipway_tests::pipeline::registry_and_base() else { return };
    let Some(cluster) = ExampleCluster::start(&registry) else { return };
    let view = cluster.cluster_view().await;
    let alive =
        |view: &Value| view["replicas"].as_array().unwrap().iter().filter(|r| r["alive"] == true).count();
    assert_eq!(alive(&view), 3, "{view}");

    let hello = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/hello");
    let (code, stdout, _) = cluster.slipway(&["build", hello.to_str().unwrap(), "--tag", "first"]);
    assert_eq!(code, 0, "built through the load balancer");
    assert!(stdout.contains("published with tags"), "{stdout}");

    let pid = cluster.var("REPLICA_2_PID").to_owned();
    assert!(Command::new("kill").args(["-KILL", &pid]).status().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let view = cluster.cluster_view().await;
        let two = view["replicas"].as_array().unwrap().iter().find(|r| r["id"] == "replica-2").cloned();
        if two.is_some_and(|r| r["alive"] == false) {
            assert_eq!(alive(&view), 2, "{view}");
            break;
        }
        assert!(Instant::now() < deadline, "replica-2 still counted alive: {view}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (code, _, _) = cluster.slipway(&["build", hello.to_str().unwrap(), "--tag", "second"]);
    assert_eq!(code, 0, "the two replicas left serve builds");
    let (code, stdout, _) = cluster.slipway(&["packages", "hello", "-o", "json"]);
    assert_eq!(code, 0);
    let packages: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(packages["items"].as_array().unwrap().len(), 2, "each build published once: {packages}");
}
