//! Slipway builder: turns a component source and its Dockerfile into an OCI image in a
//! registry, through a Docker daemon (`docker` backend) or our own daemonless builder
//! (`native` backend).
//!
//! Owns: build contexts (directory, archive, git; `.dockerignore`; escape checks), Dockerfile
//! parsing and variable expansion, the native executor (layers, `RUN` isolation, image
//! config), the layer cache in the object store, and pushes with `oci-client`.
//! Must not know: HTTP routes, app packages and tags (the registry crate), health checks,
//! what a component kind means (its `component/<kind>` plugin plans the images, see [`plan`]).
//!
//! Main types: [`BuildRequest`] → [`BuildBackend::build`] → [`BuildOutcome`], with a
//! [`BuildLog`] per component; backends [`NativeBackend`] and [`DockerBackend`].

pub mod backend;
pub mod context;
pub mod digest;
pub mod docker;
pub mod dockerfile;
pub mod dockerignore;
pub mod error;
pub mod image;
pub mod inputs;
pub mod layer;
pub mod layer_cache;
pub mod log;
pub mod native;
pub mod parallel;
pub mod plan;
pub mod registry;
pub mod rootfs;
pub mod store;

pub use backend::{BuildBackend, BuildOutcome, BuildRequest};
pub use context::SourceSpec;
pub use docker::{DockerBackend, DockerSettings};
pub use error::{Error, Result};
pub use log::BuildLog;
pub use native::{NativeBackend, NativeSettings};
pub use parallel::{ComponentBuild, ComponentResult, build_components};
pub use registry::{Credentials, PushReport};
