//! Binding the listener and running the server until a shutdown signal, letting in-flight
//! requests finish.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::state::AppState;
use crate::state::OpenError;

/// How long in-flight requests may run on after a shutdown signal; long streams (log
/// follow, event streams) are cut after it.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(
        "cannot listen on {addr}: address already in use (is another slipway serve running? pick another with --listen)"
    )]
    AddrInUse { addr: SocketAddr },
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error("server stopped with an error: {0}")]
    Serve(std::io::Error),
}

pub async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr).await.map_err(|source| match source.kind() {
        std::io::ErrorKind::AddrInUse => StartError::AddrInUse { addr },
        _ => StartError::Bind { addr, source },
    })
}

/// Opens everything `config` names, binds, and serves until `shutdown` completes.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let listener = bind(config.listen).await?;
    let state = AppState::open(config).await?;
    tracing::info!(addr = %listener.local_addr().map_err(StartError::Serve)?, "slipway is listening");
    serve(listener, crate::router::app(state), shutdown, DRAIN_TIMEOUT).await
}

/// Serves `app` until `shutdown`, then stops accepting and waits up to `drain` for
/// in-flight requests.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    drain: Duration,
) -> Result<(), StartError> {
    let (signalled_tx, mut signalled_rx) = tokio::sync::watch::channel(false);
    let app = app.into_make_service_with_connect_info::<SocketAddr>();
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        shutdown.await;
        tracing::info!("shutting down: finishing in-flight requests");
        let _ = signalled_tx.send(true);
    });
    let drain_expired = async move {
        let _ = signalled_rx.wait_for(|s| *s).await;
        tokio::time::sleep(drain).await;
    };
    tokio::select! {
        result = server => result.map_err(StartError::Serve)?,
        () = drain_expired => tracing::warn!(?drain, "in-flight requests still running after the drain time; closing them"),
    }
    tracing::info!("slipway stopped");
    Ok(())
}

/// Installs the SIGTERM and SIGINT handlers at once (call it before anything slow, so an
/// early signal is not lost to the default action) and completes when either arrives.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};
    let terminate = signal(SignalKind::terminate());
    let interrupt = signal(SignalKind::interrupt());
    async move {
        match (terminate, interrupt) {
            (Ok(mut terminate), Ok(mut interrupt)) => {
                tokio::select! {
                    _ = terminate.recv() => {},
                    _ = interrupt.recv() => {},
                }
            }
            // Without handlers the default action (exit) applies; never complete here.
            _ => std::future::pending::<()>().await,
        }
    }
}
