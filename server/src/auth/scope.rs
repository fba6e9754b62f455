//! What each token may do, and which scope each call needs — decided in one place from the
//! call's method and route template, so a new route cannot silently go unprotected: any
//! write not listed here needs `admin`.

use axum::http::Method;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Look at anything: packages, builds, health, plugins.
    Read,
    /// Start, cancel and retry builds.
    Build,
    /// Publish and tag packages, register instances and deploy events.
    Publish,
    /// Everything, including tokens, plugins, triggers and clusters.
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 4] = [Scope::Read, Scope::Build, Scope::Publish, Scope::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Build => "build",
            Scope::Publish => "publish",
            Scope::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// Whether a token holding `granted` may make a call that needs `self`. Every scope can
    /// read, since a CI job that builds must also follow its build.
    pub fn is_granted_by(self, granted: &[Scope]) -> bool {
        granted.contains(&Scope::Admin)
            || granted.contains(&self)
            || (self == Scope::Read && !granted.is_empty())
    }

    /// The scope a call needs, or `None` for routes open without a token (operational
    /// endpoints, and the trigger endpoint which checks its own secret).
    pub fn required_for(method: &Method, route: &str) -> Option<Scope> {
        if !route.starts_with("/v1/") {
            return None;
        }
        if *method == Method::POST && route == "/v1/triggers/{id}" {
            return None;
        }
        if route.starts_with("/v1/tokens") {
            return Some(Scope::Admin); // even listing tokens tells who can do what
        }
        if *method == Method::GET || *method == Method::HEAD || route == "/v1/health:batchGet" {
            return Some(Scope::Read);
        }
        let build =
            route == "/v1/apps/{app}/builds" || route.starts_with("/v1/builds/") || route == "/v1/sources";
        let publish = route.starts_with("/v1/apps/{app}/packages") || route.starts_with("/v1/instances");
        Some(if build {
            Scope::Build
        } else if publish {
            Scope::Publish
        } else {
            Scope::Admin
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_need_the_right_scope() {
        assert_eq!(Scope::required_for(&Method::GET, "/healthz"), None);
        assert_eq!(Scope::required_for(&Method::POST, "/v1/triggers/{id}"), None);
        assert_eq!(Scope::required_for(&Method::GET, "/v1/triggers/{id}"), Some(Scope::Read));
        assert_eq!(Scope::required_for(&Method::POST, "/v1/health:batchGet"), Some(Scope::Read));
        assert_eq!(Scope::required_for(&Method::POST, "/v1/apps/{app}/builds"), Some(Scope::Build));
        assert_eq!(Scope::required_for(&Method::POST, "/v1/builds/{id}/cancel"), Some(Scope::Build));
        assert_eq!(
            Scope::required_for(&Method::PUT, "/v1/apps/{app}/packages/{version}/tags/{tag}"),
            Some(Scope::Publish)
        );
        assert_eq!(Scope::required_for(&Method::POST, "/v1/tokens"), Some(Scope::Admin));
        assert_eq!(Scope::required_for(&Method::GET, "/v1/tokens"), Some(Scope::Admin));
        assert_eq!(Scope::required_for(&Method::PUT, "/v1/some/new/route"), Some(Scope::Admin));
    }

    #[test]
    fn admin_grants_everything_and_every_scope_reads() {
        assert!(Scope::Publish.is_granted_by(&[Scope::Admin]));
        assert!(Scope::Read.is_granted_by(&[Scope::Build]));
        assert!(!Scope::Publish.is_granted_by(&[Scope::Build, Scope::Read]));
        assert!(!Scope::Read.is_granted_by(&[]));
    }
}
