//! The OpenAPI 3.1 document of the HTTP API, generated from the code: each handler carries
//! its operation (`#[utoipa::path]`), and [`ApiRouter`] registers a route only together
//! with that operation, so `/openapi.json` cannot miss a route the server answers.
//!
//! What every operation shares is added here once, from the same code the server runs:
//! the scope [`Scope::required_for`] demands (bearer security, 401 and 403), the JSON body
//! errors of the `Json` extractor (400, 413, 415) and the 500 any handler may answer.

use axum::Router;
use axum::http::Method;
use utoipa::OpenApi;
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::security::SecurityRequirement;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response, ResponseBuilder};
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouter};

use crate::auth::Scope;
use crate::state::AppState;

/// The security scheme of API tokens (`Authorization: Bearer <token>`).
const API_TOKEN: &str = "api_token";
/// The trigger endpoint's own schemes, one per [`crate::triggers::AuthMode`], as its
/// `security(…)` names them.
const TRIGGER_GITHUB: &str = "trigger_github_signature";
const TRIGGER_GITLAB: &str = "trigger_gitlab_token";
const TRIGGER_BEARER: &str = "trigger_bearer";

/// The API's router. Routes go in only as `routes!(handler, …)` of annotated handlers, so
/// every route is also an operation of the document; there is deliberately no `route()`.
#[derive(Default)]
pub struct ApiRouter(OpenApiRouter<AppState>);

impl ApiRouter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the handlers of one path (from `utoipa_axum::routes!`), route and operation.
    pub fn routes(self, handlers: UtoipaMethodRouter<AppState>) -> Self {
        Self(self.0.routes(handlers))
    }

    pub fn merge(self, other: ApiRouter) -> Self {
        Self(self.0.merge(other.0))
    }

    /// The axum router to serve and the complete document describing it.
    pub fn split(self) -> (Router<AppState>, utoipa::openapi::OpenApi) {
        let (router, operations) = self.0.split_for_parts();
        let mut document = Base::openapi();
        document.merge(operations);
        finish(&mut document);
        (router, document)
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Slipway API",
        description = "Builds app packages from source, keeps them versioned and tagged, and watches \
            every deployed instance. Every `/v1` call needs `Authorization: Bearer <API token>` with \
            the scope its operation names; every error is an `ApiError` body with a stable `code`.",
    ),
    components(schemas(crate::error::ErrorBody)),
    tags(
        (name = "ops", description = "Liveness, readiness and metrics; open without a token."),
        (name = "reference", description = "This document and its browsable form."),
        (name = "builds", description = "Build requests and their logs."),
        (name = "triggers", description = "CI webhooks that start builds."),
        (name = "packages", description = "App packages, versions and transfers."),
        (name = "tags", description = "Tags on package versions and their history."),
        (name = "plugins", description = "Plugin packages, script revisions and dry runs."),
        (name = "instances", description = "Registered instances, clusters and deploy events."),
        (name = "health", description = "Health of instances: lookups, summaries, live events."),
        (name = "tokens", description = "API tokens."),
        (name = "cluster", description = "Replicas sharing one database: heartbeats and the work each holds."),
        (name = "dashboard", description = "The browser dashboard at `/` and its assets; open without a token."),
    )
)]
struct Base;

fn finish(document: &mut utoipa::openapi::OpenApi) {
    let components = document.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        API_TOKEN,
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(
                    "An API token (`/v1/tokens`). The security requirement of each operation \
                     names the scope it needs: read, build, publish or admin (admin grants all).",
                ))
                .build(),
        ),
    );
    let header = |name: &str, description: &str| {
        SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(name, description)))
    };
    components.add_security_scheme(
        TRIGGER_GITHUB,
        header("X-Hub-Signature-256", "`sha256=<hex HMAC-SHA256 of the raw body under the trigger secret>`."),
    );
    components.add_security_scheme(TRIGGER_GITLAB, header("X-Gitlab-Token", "The trigger secret."));
    components.add_security_scheme(
        TRIGGER_BEARER,
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some("`Authorization: Bearer <trigger secret>` (not an API token)."))
                .build(),
        ),
    );
    for (path, item) in document.paths.paths.iter_mut() {
        for (method, operation) in operations_mut(item) {
            // Handler names repeat across areas (`list`, `create`); the tag makes them unique.
            if let (Some(id), Some([tag, ..])) = (&operation.operation_id, operation.tags.as_deref()) {
                operation.operation_id = Some(format!("{tag}_{id}"));
            }
            if let Some(scope) = Scope::required_for(&method, path) {
                operation.security = Some(vec![SecurityRequirement::new(API_TOKEN, [scope.as_str()])]);
                add_error(
                    operation,
                    "401",
                    "`unauthenticated`, `token_expired`, `token_revoked`: no valid API token.",
                );
                add_error(
                    operation,
                    "403",
                    "`insufficient_scope`: the token lacks the scope this call needs.",
                );
            }
            let takes_json = operation.request_body.as_ref().is_some_and(
                |body| matches!(body, RefOr::T(b) if b.content.contains_key("application/json")),
            );
            if takes_json {
                add_error(operation, "400", "`invalid_json`: the body is not valid JSON for this call.");
                add_error(operation, "413", "`payload_too_large`: the body is larger than the limit.");
                add_error(
                    operation,
                    "415",
                    "`unsupported_media_type`: send `Content-Type: application/json`.",
                );
            }
            add_error(operation, "500", "`internal`: the server failed; the log has the request id.");
        }
    }
}

/// Every operation of a path item with its method, in the methods the API uses.
pub fn operations_mut(item: &mut PathItem) -> impl Iterator<Item = (Method, &mut Operation)> {
    [
        (Method::GET, &mut item.get),
        (Method::POST, &mut item.post),
        (Method::PUT, &mut item.put),
        (Method::PATCH, &mut item.patch),
        (Method::DELETE, &mut item.delete),
    ]
    .into_iter()
    .filter_map(|(method, operation)| operation.as_mut().map(|o| (method, o)))
}

/// An error answer with the shared `ApiError` body; the description names its codes.
fn error_response(description: &str) -> RefOr<Response> {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new().schema(Some(Ref::from_schema_name("ApiError"))).build(),
        )
        .into()
}

/// Adds `status` unless the handler documented it itself (its codes are more precise).
fn add_error(operation: &mut Operation, status: &str, description: &str) {
    operation.responses.responses.entry(status.to_owned()).or_insert_with(|| error_response(description));
}
