//! Slipway registry: component and app packages, semantic versions, tags and tag queries,
//! package blobs in the object store, offline export and import.
//!
//! Owns: package formats, version ordering, tag rules, publish atomicity, retention.
//! Must not know: HTTP routes, how images are built, instance health.
