//! The built-in `component/microservice` plugin plans a component's image, and the builder
//! turns the plan into a build that runs.

mod builder_support;

use builder_support::*;
use serde_json::json;
use slipway_builder::plan::plan_images;
use slipway_builder::{BuildLog, SourceSpec};
use slipway_plugins::{HostConfig, PluginHost};
use slipway_server::config::Config;
use slipway_server::storage::{open_database, open_object_store};

#[tokio::test]
async fn microservice_plan_builds_from_the_component_path() {
    let tmp = tempfile::tempdir().unwrap();
    let config = Config { data_dir: tmp.path().join("data"), ..Config::default() };
    let db = open_database(&config).await.unwrap();
    let host =
        PluginHost::open(db, open_object_store(&config).unwrap(), HostConfig::default()).await.unwrap();

    let source = tmp.path().join("src");
    write_tree(
        &source,
        &[
            (
                "services/web/docker/Dockerfile.prod",
                "FROM scratch AS build\nARG MSG\nCOPY msg.txt /\nFROM build\n",
            ),
            ("services/web/msg.txt", "hello\n"),
            ("other.txt", "outside the component's context\n"),
        ],
    );
    let component = json!({
        "name": "web",
        "path": "services/web",
        "params": { "dockerfile": "docker/Dockerfile.prod", "build_args": { "MSG": "hi" }, "target": "build" },
    });
    let (triple, steps) = plan_images(&host, "microservice", &component).await.unwrap();
    assert_eq!(triple.to_string(), "component/microservice/1");
    assert_eq!(steps.len(), 1);
    let request = steps[0].request(SourceSpec::Dir(source.clone()), "unused/web:latest").unwrap();
    assert_eq!(request.context_dir, "services/web");
    assert_eq!(request.dockerfile, "docker/Dockerfile.prod");
    assert_eq!(request.target.as_deref(), Some("build"));
    assert_eq!(request.build_args["MSG"], "hi");

    let built = native(&tmp.path().join("store")).build_local(&request, &BuildLog::new("web")).await.unwrap();
    assert_eq!(built.layers_built, 1);
}
