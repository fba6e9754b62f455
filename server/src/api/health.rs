//! Health reads of the status scaler: bulk lookup by id, summaries, and the stream of
//! transitions.

use std::collections::BTreeMap;
use std::convert::Infallible;

use axum::Router;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::{get, post};
use futures::Stream;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use slipway_status::{GroupBy, InstanceView};
use tokio::sync::broadcast::error::RecvError;

use crate::error::{ApiError, Json, Query};
use crate::state::AppState;

/// Most ids in one `health:batchGet`.
const MAX_BATCH_GET: usize = 10_000;

pub fn routes() -> Router<AppState> {
    Router::new()
        // A literal `:batchGet` in the segment: axum 0.8 routes only `{…}` as parameters.
        .route("/v1/health:batchGet", post(batch_get))
        .route("/v1/health/summary", get(summary))
        .route("/v1/health/events", get(events))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchGet {
    ids: Vec<String>,
}

/// Serialised straight from the views (no intermediate `Value`): 10,000 instances per call.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct BatchGetAnswer {
    instances: Vec<InstanceView>,
    not_found: Vec<String>,
}

async fn batch_get(
    State(state): State<AppState>,
    Json(request): Json<BatchGet>,
) -> Result<Json<BatchGetAnswer>, ApiError> {
    if request.ids.len() > MAX_BATCH_GET {
        return Err(ApiError::InvalidRequest(format!(
            "{} ids in one batchGet; the limit is {MAX_BATCH_GET}",
            request.ids.len()
        )));
    }
    let (instances, not_found) = state.status.batch_get(&request.ids);
    Ok(Json(BatchGetAnswer { instances, not_found }))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SummaryQuery {
    group_by: GroupBy,
}

async fn summary(State(state): State<AppState>, Query(q): Query<SummaryQuery>) -> Json<Value> {
    let groups: BTreeMap<String, slipway_status::aggregate::StatusCounts> = state.status.summary(q.group_by);
    Json(json!({ "groupBy": q.group_by, "groups": groups }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventFilter {
    app: Option<String>,
    cluster: Option<String>,
}

/// Server-sent events, one `transition` event per status change matching the filter; a
/// subscriber too slow to keep up gets a `lagged` event with the number it missed.
async fn events(
    State(state): State<AppState>,
    Query(filter): Query<EventFilter>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let receiver = state.status.subscribe();
    let stream = futures::stream::unfold((receiver, filter), |(mut receiver, filter)| async move {
        loop {
            let event = match receiver.recv().await {
                Ok(t) => {
                    let wanted = filter.app.as_ref().is_none_or(|a| *a == t.app)
                        && filter.cluster.as_ref().is_none_or(|c| Some(c) == t.cluster.as_ref());
                    if !wanted {
                        continue;
                    }
                    Event::default().event("transition").json_data(&*t).unwrap_or_default()
                }
                Err(RecvError::Lagged(missed)) => Event::default().event("lagged").data(missed.to_string()),
                Err(RecvError::Closed) => return None,
            };
            return Some((Ok(event), (receiver, filter)));
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}
