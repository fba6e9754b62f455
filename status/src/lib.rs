//! Slipway status scaler: observes every deployed component instance (HTTP, TCP,
//! Kubernetes), judges it with its status plugin, schedules the next check adaptively and
//! aggregates component health into app-instance health.
//!
//! Owns: the instance model, fetchers, the schedule, budgets, aggregation and history.
//! Must not know: HTTP routes of the API (the server crate), builds or packages.
//!
//! Main types: [`StatusService`] (the facade the server calls), [`scheduler::Scheduler`]
//! (pure scheduling state over an injected clock), [`schedule::CheckSchedule`] (the
//! per-instance rules, written out in `status/README.md`), [`fetch::Fetchers`] (the
//! observation side) and [`health::Health`] (severity-ordered status).

pub mod aggregate;
pub mod budget;
pub mod correlate;
mod error;
pub mod events;
pub mod fetch;
pub mod flapping;
pub mod handoff;
pub mod health;
pub mod heatmap;
pub mod model;
pub mod peers;
mod runner;
pub mod schedule;
pub mod scheduler;
mod service;
pub mod shard;
mod store;
pub mod table;
mod validate;
mod view_json;
pub mod wheel;

pub use error::{Error, Problem};
pub use scheduler::Reshard;
pub use service::{
    AppInstanceView, BulkOutcome, GroupBy, InstanceView, StatusConfig, StatusService, WeakStatusService,
};
pub use store::MIGRATIONS;
