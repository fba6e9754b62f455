//! Health reads of the status scaler: bulk lookup by id, summaries, and the stream of
//! transitions.

use std::collections::BTreeMap;
use std::convert::Infallible;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use serde::{Deserialize, Serialize};
use slipway_status::aggregate::StatusCounts;
use slipway_status::{GroupBy, InstanceView};
use tokio::sync::broadcast::error::RecvError;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::routes;

use crate::error::{ApiError, ErrorBody, Json, Query};
use crate::openapi::ApiRouter;
use crate::state::AppState;

/// Most ids in one `health:batchGet`.
const MAX_BATCH_GET: usize = 10_000;

pub fn routes() -> ApiRouter {
    // A literal `:batchGet` in the segment: axum 0.8 routes only `{…}` as parameters.
    ApiRouter::new().routes(routes!(batch_get)).routes(routes!(summary)).routes(routes!(events))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct BatchGet {
    ids: Vec<String>,
}

/// Serialised straight from the views (no intermediate `Value`): 10,000 instances per call.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct BatchGetAnswer {
    instances: Vec<InstanceView>,
    not_found: Vec<String>,
}

/// Component instances by id, up to 10,000 per call; unknown ids are listed apart.
#[utoipa::path(post, path = "/v1/health:batchGet", tag = "health", request_body = BatchGet, responses(
    (status = 200, body = BatchGetAnswer),
    (status = 400, description = "`invalid_request`: more than 10,000 ids", body = ErrorBody)))]
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

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SummaryQuery {
    group_by: GroupBy,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct Summary {
    group_by: GroupBy,
    /// Counts per status of each group (app, cluster or status).
    groups: BTreeMap<String, StatusCounts>,
}

/// Instance counts per status, grouped by app, cluster or status.
#[utoipa::path(get, path = "/v1/health/summary", tag = "health", params(SummaryQuery), responses(
    (status = 200, body = Summary),
    (status = 400, description = "`invalid_request`: `groupBy` missing or not app, cluster, status", body = ErrorBody)))]
async fn summary(State(state): State<AppState>, Query(q): Query<SummaryQuery>) -> Json<Summary> {
    Json(Summary { group_by: q.group_by, groups: state.status.summary(q.group_by) })
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct EventFilter {
    app: Option<String>,
    cluster: Option<String>,
}

/// Server-sent events, one `transition` event per status change matching the filter; a
/// subscriber too slow to keep up gets a `lagged` event with the number it missed.
#[utoipa::path(get, path = "/v1/health/events", tag = "health", params(EventFilter), responses(
    (status = 200, description = "`text/event-stream`: `transition` events (a JSON `Transition` with `app` and \
        `cluster`) and `lagged` events (how many were missed)", content_type = "text/event-stream", body = String),
    (status = 400, description = "`invalid_request`: unknown parameter", body = ErrorBody)))]
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
