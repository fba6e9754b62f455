//! Slipway builder: turns a component source and its Dockerfile into an OCI image in a
//! registry, through a Docker daemon (`docker` backend) or our own daemonless builder
//! (`native` backend).
//!
//! Owns: build contexts, Dockerfile planning, layer cache, image assembly and push.
//! Must not know: HTTP routes, app packages and tags (the registry crate), health checks.
