//! Slipway server: the HTTP API (axum), the `slipway` binary and its CLI, and the wiring of
//! the domain crates (`builder`, `registry`, `status`, `plugins`) to the shared stores.
//!
//! Owns: routes, request/response formats, the mapping of every domain error to an HTTP
//! status and stable code ([`error::ApiError`]), configuration loading, start-up and
//! shutdown. It is the only crate that knows HTTP routes; no other crate depends on it.

pub mod api;
pub mod auth;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod dashboard;
pub mod error;
pub mod openapi;
pub mod pipeline;
pub mod router;
pub mod serve;
pub mod state;
pub mod storage;
pub mod telemetry;
pub mod triggers;
