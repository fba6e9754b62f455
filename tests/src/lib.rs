//! Harnesses shared by Slipway's cross-crate tests and benchmarks: a server started on a
//! free loopback port with its own data directory, and helpers that find the real
//! components (Docker daemon, registry) the test script started.

pub mod bench;
pub mod browser;
pub mod dashboard;
pub mod database;
pub mod fleet;
pub mod image_registry;
pub mod pipeline;
pub mod process;
pub mod server;
