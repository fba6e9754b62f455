//! Slipway plugin host: loads, sandboxes, versions and runs the JavaScript plugin scripts
//! (component types, status checks, trigger adapters) with QuickJS.
//!
//! Owns: plugin identity (`kind/name/revision`), plugin packages, the active-revision map,
//! the sandboxed runtime pool. Must not know: HTTP, builds, registries or scheduling; the
//! database and object store are handed in by the server, and host capabilities given to
//! scripts (`ctx`) are passed in by the crate that calls the script.

/// Database migrations of this crate, applied in order by the server at start.
pub const MIGRATIONS: &[(&str, &str)] = &[];
