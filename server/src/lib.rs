//! Slipway server: the HTTP API (axum), the `slipway` binary and its CLI, and the wiring of
//! the domain crates (`builder`, `registry`, `status`, `plugins`) to the shared stores.
//!
//! Owns: routes, request/response formats, the mapping of every domain error to an HTTP
//! status and stable code ([`error::ApiError`]), configuration loading, start-up and
//! shutdown. It is the only crate that knows HTTP routes; no other crate depends on it.

/// The allocator of every process that runs the service (the `slipway` binary, the
/// benchmarks and tests that start a server in-process). glibc's malloc keeps each thread's
/// arena at its high-water mark: after a burst of checks or a bulk registration the process
/// stays hundreds of megabytes above what it holds. mimalloc returns freed pages.
/// `--features slipway-server/system-allocator` leaves it out for heap profilers.
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
