//! A Slipway server started in-process on a free loopback port with its own temporary data
//! directory, stopped (gracefully) when the test is done.

use std::future::Future;
use std::net::SocketAddr;

use axum::Router;
use slipway_server::config::Config;
use slipway_server::serve::{self, StartError};
use slipway_server::state::AppState;
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub struct TestServer {
    pub addr: SocketAddr,
    /// The admin token the server wrote at its first start.
    pub admin_token: String,
    pub state: AppState,
    /// Kept so the directory lives as long as the server.
    pub data_dir: TempDir,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), StartError>>>,
}

impl TestServer {
    /// The full application on the embedded defaults.
    pub async fn start() -> Self {
        Self::start_with(|_| {}, slipway_server::router::app).await
    }

    /// `edit` adjusts the configuration before the stores open; `app` builds the router
    /// from the opened state (use [`slipway_server::router::with_layers`] to add routes).
    pub async fn start_with(edit: impl FnOnce(&mut Config), app: impl FnOnce(AppState) -> Router) -> Self {
        Self::start_in(tempfile::tempdir().expect("temp data dir"), edit, app).await
    }

    /// Stops the server and hands back its data directory, for [`TestServer::start_in`]
    /// to restart on it as the service would: what was stored comes back, what was only in
    /// memory is gone.
    pub async fn shut_down(mut self) -> TempDir {
        self.stop().await.expect("the server stops cleanly");
        let data_dir = std::mem::replace(&mut self.data_dir, tempfile::tempdir().expect("temp data dir"));
        // Dropping the old state stops its background work (the status scaler's checks).
        drop(self);
        data_dir
    }

    /// [`TestServer::start_with`] on an existing data directory.
    pub async fn start_in(
        data_dir: TempDir,
        edit: impl FnOnce(&mut Config),
        app: impl FnOnce(AppState) -> Router,
    ) -> Self {
        let mut config = Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: data_dir.path().into(),
            ..Config::default()
        };
        edit(&mut config);
        crate::database::assign(&mut config).await;
        let listener = serve::bind(config.listen).await.expect("bind loopback");
        let addr = listener.local_addr().unwrap();
        let state = AppState::open(config).await.expect("open stores");
        let token_file = data_dir.path().join(slipway_server::auth::ADMIN_TOKEN_FILE);
        let admin_token = std::fs::read_to_string(token_file).expect("admin token written").trim().to_owned();
        let (tx, rx) = oneshot::channel::<()>();
        let shutdown = async move {
            let _ = rx.await;
        };
        let task = tokio::spawn(serve::serve(listener, app(state.clone()), shutdown, serve::DRAIN_TIMEOUT));
        Self { addr, admin_token, state, data_dir, shutdown: Some(tx), task: Some(task) }
    }

    /// An HTTP client that sends the admin token with every request.
    pub fn client(&self) -> reqwest::Client {
        Self::client_with_token(&self.admin_token)
    }

    /// `GET path` as the admin, answered with JSON.
    pub async fn get_json(&self, path: &str) -> serde_json::Value {
        let response = self.client().get(self.url(path)).send().await.expect("GET");
        response.json().await.expect("a JSON answer")
    }

    /// Polls a build until it is neither queued nor running, and returns it.
    pub async fn wait_build(&self, id: &str) -> serde_json::Value {
        wait_build(&self.client(), &self.url(&format!("/v1/builds/{id}"))).await
    }

    pub fn client_with_token(token: &str) -> reqwest::Client {
        let mut headers = reqwest::header::HeaderMap::new();
        let value = format!("Bearer {token}").parse().expect("token is a valid header value");
        headers.insert(reqwest::header::AUTHORIZATION, value);
        reqwest::Client::builder().default_headers(headers).build().expect("HTTP client")
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Signals shutdown and returns a future that completes when the server has stopped.
    pub fn stop(&mut self) -> impl Future<Output = Result<(), StartError>> + use<> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let task = self.task.take();
        async move {
            match task {
                Some(task) => task.await.expect("server task panicked"),
                None => Ok(()),
            }
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Polls the build at `url` (`…/v1/builds/{id}`) until it is neither queued nor running.
pub async fn wait_build(client: &reqwest::Client, url: &str) -> serde_json::Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    loop {
        let build: serde_json::Value = client.get(url).send().await.expect("GET").json().await.expect("JSON");
        if !matches!(build["state"].as_str(), Some("queued" | "running")) {
            return build;
        }
        assert!(std::time::Instant::now() < deadline, "build unfinished after 300 s: {build}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
