//! Changes one replica makes that every other must act on at once (a plugin revision
//! switched, a plugin package installed or removed, an API token revoked or rotated):
//! announced with PostgreSQL's `NOTIFY` and heard with `LISTEN`, so the others reload within
//! moments instead of at a next poll. On SQLite there is a single process and nobody to tell.
//!
//! Should an announcement be lost, a replica still trusts what it read about a token for
//! one second at most (see `auth::store`).

use std::time::Duration;

use sqlx::AssertSqlSafe;
use sqlx::postgres::PgListener;

use super::Cluster;
use crate::auth::TokenStore;
use crate::storage::Dialect;
use slipway_status::WeakStatusService;

const CHANNEL: &str = "slipway_changes";
/// Wait before listening again after the database went away.
const RECONNECT: Duration = Duration::from_secs(1);

/// What changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Installed or removed plugin packages, or a switched active revision.
    Plugins,
    /// A token revoked or given a new secret.
    Tokens,
}

impl Change {
    fn as_str(self) -> &'static str {
        match self {
            Change::Plugins => "plugins",
            Change::Tokens => "tokens",
        }
    }
}

impl Cluster {
    /// Tells every other replica that `change` happened (after its transaction committed).
    pub async fn announce(&self, change: Change) {
        if self.inner.dialect != Dialect::Postgres {
            return;
        }
        // The payload is one of our own constants; NOTIFY takes no bind parameters.
        let sql = format!("NOTIFY {CHANNEL}, '{}'", change.as_str());
        if let Err(e) = sqlx::raw_sql(AssertSqlSafe(sql)).execute(&self.inner.db).await {
            // The others still converge when their listener reconnects and reloads.
            tracing::warn!(error = %e, change = change.as_str(), "could not announce a change to the other replicas");
        }
    }

    /// Listens for other replicas' announcements and status news until the status service
    /// is dropped; after any gap in listening (the database restarted), reloads everything,
    /// since announcements made meanwhile were lost.
    pub fn spawn_listener(
        &self,
        url: String,
        plugins: slipway_plugins::PluginHost,
        tokens: TokenStore,
        status: WeakStatusService,
    ) {
        if self.inner.dialect != Dialect::Postgres {
            return;
        }
        tokio::spawn(async move {
            loop {
                if status.upgrade().is_none() {
                    return;
                }
                if let Err(e) = listen(&url, &plugins, &tokens, &status).await {
                    tracing::warn!(error = %e, "listening for other replicas' changes failed; listening again");
                }
                tokio::time::sleep(RECONNECT).await;
            }
        });
    }
}

/// One listening session: returns when the connection is lost.
async fn listen(
    url: &str,
    plugins: &slipway_plugins::PluginHost,
    tokens: &TokenStore,
    status: &WeakStatusService,
) -> Result<(), sqlx::Error> {
    let mut listener = PgListener::connect(url).await?;
    listener.listen_all([CHANNEL, slipway_status::peers::CHANNEL]).await?;
    reload(plugins).await;
    tokens.forget_cached();
    if let Some(status) = status.upgrade()
        && let Err(e) = status.resync().await
    {
        tracing::warn!(error = %e, "could not catch up with the other replicas' status changes");
    }
    while let Some(notification) = listener.try_recv().await? {
        if notification.channel() == slipway_status::peers::CHANNEL {
            let Some(status) = status.upgrade() else { return Ok(()) };
            if let Err(e) = status.receive(notification.payload()).await {
                tracing::warn!(error = %e, "could not apply another replica's status news");
            }
            continue;
        }
        match notification.payload() {
            "plugins" => reload(plugins).await,
            "tokens" => tokens.forget_cached(),
            other => tracing::debug!(change = other, "ignored an announcement this version does not know"),
        }
    }
    Ok(())
}

async fn reload(plugins: &slipway_plugins::PluginHost) {
    if let Err(e) = plugins.reload_active().await {
        tracing::warn!(error = %e, "could not reload the active plugin revisions");
    }
}
