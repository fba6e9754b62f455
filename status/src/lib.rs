//! Slipway status scaler: observes every deployed component instance (HTTP, TCP,
//! Kubernetes), judges it with its status plugin, schedules the next check adaptively and
//! aggregates component health into app-instance health.
//!
//! Owns: the instance model, fetchers, the schedule, budgets, aggregation and history.
//! Must not know: HTTP routes of the API (the server crate), builds or packages.

pub mod aggregate;
pub mod budget;
pub mod correlate;
pub mod events;
pub mod flapping;
pub mod health;
pub mod model;
pub mod schedule;
pub mod scheduler;
pub mod table;
pub mod wheel;
