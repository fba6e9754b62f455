//! The dashboard in headless Chromium (Debian's `chromium` over `chromedriver`) against a
//! real server carrying 100,000 registered instances: signing in through the token dialog,
//! the heatmap updating live from the transition stream, the drill-down to one instance,
//! a tag edited and a plugin revision switched by real clicks, each checked afterwards
//! through the API. Screenshots are saved under the target's tmp directory and their
//! paths printed. Speed is measured and printed here, judged in `slipway-bench dashboard`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use slipway_plugins::pack_package;
use slipway_tests::browser;
use slipway_tests::dashboard::FleetView;
use slipway_tests::fleet::Layout;

const INSTANCES: usize = 100_000;
/// Instances made to fail while frames are recorded.
const FAULTS: std::ops::Range<usize> = 0..2_000;

fn screenshots() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard-screenshots")
}

/// Polls the API until `ok` holds for the JSON at `path`.
async fn wait_api(view: &FleetView, path: &str, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let value = view.server.get_json(path).await;
        if ok(&value) {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}: {path} still answers {value}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn dashboard_drives_the_fleet_packages_and_plugins_in_headless_chromium() {
    let (chromium, driver) = match browser::installed() {
        Ok(found) => found,
        Err(reason) => {
            println!("SKIP: {reason}");
            return;
        }
    };
    let dir = screenshots();
    // Checks capped at 500/s: the debug-built server records the first checks' transitions
    // in small transactions, which keeps SQLite's write lock short for the token lookups.
    let view = FleetView::start(INSTANCES, 500, &chromium, &driver).await.expect("fleet and browser");

    view.sign_in(Some(&dir)).await.expect("signed in through the token dialog");
    let first_render = view.first_render_ms().await.unwrap();
    let counts = view.heatmap_counts().await.unwrap();
    assert_eq!(counts.values().sum::<u64>(), INSTANCES as u64, "one cell per instance: {counts:?}");
    let summary = view.browser.find("#heatmap-summary").await.unwrap().text().await.unwrap();
    assert!(summary.starts_with("100,000 instances in 120 groups"), "{summary}");

    let frames = view.frames_during(Duration::from_secs(8), FAULTS).await.unwrap();
    println!("dashboard: first render {first_render:.0} ms; while streaming: {frames:?}");
    assert!(frames.frames > 0, "the page kept drawing frames");

    // The faults show up without a reload (on a loaded machine they may arrive after the
    // frame window, so this waits for them rather than counting the window's transitions).
    view.browser
        .wait_js(
            "failing instances drawn as degraded",
            Duration::from_secs(90),
            "return window.slipwayDashboard.counts().degraded > 0",
            vec![],
        )
        .await
        .unwrap();
    view.browser.screenshot(&dir, "02-heatmap-100k").await.unwrap();

    // Drill-down: click the cell of an instance the server holds as degraded.
    let ids: Vec<String> = FAULTS.map(Layout::instance_id).collect();
    let states =
        view.server.client().post(view.server.url("/v1/health:batchGet")).json(&json!({ "ids": ids }));
    let states: Value = states.send().await.unwrap().json().await.unwrap();
    let degraded = states["instances"].as_array().unwrap().iter().find(|v| v["status"] == "degraded");
    let id = degraded.expect("a failing instance is degraded")["id"].as_str().unwrap().to_owned();
    let (x, y) = view.cell_center(&id).await.unwrap();
    view.browser.click_at("#heatmap", x, y).await.unwrap();
    let reason =
        view.browser.find(&format!("#drilldown[data-instance='{id}'] #drilldown-reason")).await.unwrap();
    assert!(!reason.text().await.unwrap().is_empty(), "the drill-down gives the reason");
    let heading = view.browser.find("#drilldown h2").await.unwrap().text().await.unwrap();
    assert_eq!(heading, format!("{id} degraded"), "the drill-down shows the instance's status");
    let history = view.browser.find("#drilldown-history").await.unwrap().text().await.unwrap();
    assert!(history.contains("degraded"), "the history shows the transition: {history}");
    view.browser.screenshot(&dir, "03-instance-drilldown").await.unwrap();

    edit_tags(&view).await;
    switch_plugin_revision(&view).await;

    view.browser.client.goto(&view.url("#/builds")).await.unwrap();
    view.browser.find("#builds tbody tr").await.unwrap();
    view.browser.screenshot(&dir, "06-builds").await.unwrap();
    let FleetView { browser, .. } = view;
    browser.close().await.unwrap();
}

fn package_body(version: &str, tags: &[&str]) -> Value {
    json!({
        "version": version,
        "tags": tags,
        "components": [{
            "component_type": "helm",
            "component": "web",
            "images": [{ "reference": "127.0.0.1:5000/shop/web:1", "digest": format!("sha256:{}", "a".repeat(64)), "architectures": ["amd64"] }],
            "parameters": {},
            "plugin": "component/helm/1",
            "files": { "chart/Chart.yaml": "apiVersion: v2\nname: web\n" },
        }],
    })
}

/// Adds `prod` to one package and removes `staging` from it by clicks, then filters by tag.
async fn edit_tags(view: &FleetView) {
    let client = view.server.client();
    for (version, tags) in [("1.0.0", vec!["staging"]), ("1.1.0", vec!["staging"])] {
        let r = client.post(view.server.url("/v1/apps/shop/packages")).json(&package_body(version, &tags));
        let r = r.send().await.unwrap();
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    }
    let b = &view.browser;
    b.client.goto(&view.url("#/packages")).await.unwrap();
    b.type_into("#packages-app", "shop").await.unwrap();
    b.click("#packages-show").await.unwrap();
    b.type_into("tr[data-version='1.0.0'] input.add-tag", "prod").await.unwrap();
    b.click("tr[data-version='1.0.0'] button.add-tag").await.unwrap();
    let has =
        |tag: &'static str| move |v: &Value| v["tags"].as_array().is_some_and(|t| t.iter().any(|x| x == tag));
    wait_api(view, "/v1/apps/shop/packages/1.0.0", "tag added through the UI", has("prod")).await;

    b.click("tr[data-version='1.0.0'] .tag[data-tag='staging'] button.remove-tag").await.unwrap();
    let lacks = |v: &Value| v["tags"].as_array().is_some_and(|t| !t.iter().any(|x| x == "staging"));
    wait_api(view, "/v1/apps/shop/packages/1.0.0", "tag removed through the UI", lacks).await;
    let other = view.server.get_json("/v1/apps/shop/packages/1.1.0").await;
    assert_eq!(other["tags"], json!(["staging"]), "the other package is untouched");

    // The tag filter: only the package carrying `prod` is listed.
    b.type_into("#packages-tags", "prod").await.unwrap();
    b.click("#packages-show").await.unwrap();
    b.wait_js(
        "filtered by the prod tag",
        Duration::from_secs(20),
        "const rows = [...document.querySelectorAll('#packages tbody tr[data-version]')];
         return rows.length === 1 && rows[0].dataset.version === '1.0.0'",
        vec![],
    )
    .await
    .unwrap();
    b.screenshot(&screenshots(), "04-packages-tag-filter").await.unwrap();
}

/// A status plugin with revisions 1 and 2 in `package` (revision `revision`).
fn plugin_package(version: &str, revision: u32) -> Vec<u8> {
    let manifest = format!(
        "[package]\nname = \"acme\"\nversion = \"{version}\"\n\n[[scripts]]\nkind = \"status\"\nname = \"ping\"\nrevision = {revision}\nfile = \"ping.js\"\n"
    );
    let script =
        format!("export function check() {{ return {{ status: 'healthy', reason: 'rev {revision}' }}; }}");
    pack_package(&[("plugin.toml", manifest.as_bytes()), ("ping.js", script.as_bytes())]).to_vec()
}

/// Activates revision 2 of `status/ping` (revision 1 active) by a click.
async fn switch_plugin_revision(view: &FleetView) {
    for (version, revision) in [("1.0.0", 1), ("1.1.0", 2)] {
        let r =
            view.server.client().post(view.server.url("/v1/plugins")).body(plugin_package(version, revision));
        let r = r.header("content-type", "application/gzip").send().await.unwrap();
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    }
    assert_eq!(view.server.get_json("/v1/plugins/status/ping").await["active"], 1);
    let b = &view.browser;
    b.client.goto(&view.url("#/plugins")).await.unwrap();
    b.click("tr[data-triple='status/ping/2'] button.activate").await.unwrap();
    wait_api(view, "/v1/plugins/status/ping", "revision switched through the UI", |v| v["active"] == 2).await;
    b.find("tr[data-triple='status/ping/2'] .active-revision").await.unwrap();
    b.screenshot(&screenshots(), "05-plugins-revision-switched").await.unwrap();
}
