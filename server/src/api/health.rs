//! Health reads of the status scaler: bulk lookup by id, summaries, and the stream of
//! transitions.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::convert::Infallible;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::header;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
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
/// Bytes of answer per instance, to size the buffer once (ids, reasons and numbers vary).
const ANSWER_BYTES_PER_INSTANCE: usize = 256;

pub fn routes() -> ApiRouter {
    // A literal `:batchGet` in the segment: axum 0.8 routes only `{…}` as parameters.
    ApiRouter::new().routes(routes!(batch_get)).routes(routes!(summary)).routes(routes!(events))
}

/// The ids borrow from the request body where they hold no escapes: 10,000 ids per call.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct BatchGet<'a> {
    #[serde(borrow)]
    ids: Vec<Cow<'a, str>>,
}

/// The answer's schema; the handler writes it by hand (see `InstanceView::write_json`).
#[derive(ToSchema)]
#[allow(dead_code)]
#[serde(rename_all = "camelCase")]
struct BatchGetAnswer<'t, 'i> {
    instances: Vec<InstanceView<'t>>,
    not_found: Vec<&'i str>,
}

/// Component instances by id, up to 10,000 per call; unknown ids are listed apart.
#[utoipa::path(post, path = "/v1/health:batchGet", tag = "health", request_body = BatchGet, responses(
    (status = 200, body = BatchGetAnswer),
    (status = 400, description = "`invalid_request`: more than 10,000 ids", body = ErrorBody)))]
async fn batch_get(State(state): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let request: BatchGet<'_> =
        serde_json::from_slice(&body).map_err(|e| ApiError::InvalidJson(e.to_string()))?;
    if request.ids.len() > MAX_BATCH_GET {
        return Err(ApiError::InvalidRequest(format!(
            "{} ids in one batchGet; the limit is {MAX_BATCH_GET}",
            request.ids.len()
        )));
    }
    let ids: Vec<&str> = request.ids.iter().map(AsRef::as_ref).collect();
    // Written straight from the instance table into one buffer sized up front, while the
    // scheduler's lock is held: no string is copied and no view outlives the call.
    let mut out = Vec::with_capacity(ids.len() * ANSWER_BYTES_PER_INSTANCE + 64);
    let mut not_found = Vec::new();
    out.extend_from_slice(b"{\"instances\":[");
    state.status.batch_get(&ids, |views| {
        let mut first = true;
        for (id, view) in views {
            match view {
                Some(view) => {
                    if !std::mem::take(&mut first) {
                        out.push(b',');
                    }
                    view.write_json(&mut out);
                }
                None => not_found.push(id),
            }
        }
    });
    out.extend_from_slice(b"],\"notFound\":");
    serde_json::to_writer(&mut out, &not_found)
        .map_err(|e| ApiError::Internal(format!("batchGet answer: {e}")))?;
    out.push(b'}');
    Ok(([(header::CONTENT_TYPE, "application/json")], out).into_response())
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
                    let wanted = filter.app.as_deref().is_none_or(|a| a == &*t.app)
                        && filter.cluster.as_deref().is_none_or(|c| Some(c) == t.cluster.as_deref());
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
