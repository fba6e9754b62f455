//! Errors of the status scaler; the server maps each variant to an HTTP status once.

use serde::Serialize;

/// One refused item of a bulk request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// Where in the request: `instances[3]`, `appInstances[0]`, `delete[2]`.
    pub item: String,
    pub id: String,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{} item(s) refused, nothing was applied: {}", problems.len(), summary(problems))]
    InvalidItems { problems: Vec<Problem> },
    #[error("{count} items in one request; the limit is {limit}")]
    TooManyItems { count: usize, limit: usize },
    #[error("no {what} with id `{id}`")]
    NotFound { what: &'static str, id: String },
    #[error("cluster `{name}`: {message}")]
    InvalidCluster { name: String, message: String },
    #[error("cannot build the fetchers: {0}")]
    Fetcher(String),
    #[error("status plugins: {0}")]
    Plugin(#[from] slipway_plugins::Error),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("stored {what} `{id}` is unreadable: {message}")]
    Corrupt { what: &'static str, id: String, message: String },
}

fn summary(problems: &[Problem]) -> String {
    let shown: Vec<String> =
        problems.iter().take(5).map(|p| format!("{} `{}`: {}", p.item, p.id, p.message)).collect();
    let more = problems.len().saturating_sub(shown.len());
    if more > 0 { format!("{}; and {more} more", shown.join("; ")) } else { shown.join("; ") }
}
