//! Plugin identity: every script is one `kind/name/revision` triple, and a status script's
//! verdict is one of the [`HealthStatus`] values.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::Error;

/// What a script is for; each kind exports its own functions (see `plugins/README.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum ScriptKind {
    /// `plan(component, ctx)` and `package(component, results, ctx)`: how to build.
    Component,
    /// `check(instance, observation, ctx)`: how to judge health.
    Status,
    /// `parse(request, ctx)`: how to read a CI system's webhook.
    Trigger,
}

impl ScriptKind {
    pub const ALL: [ScriptKind; 3] = [ScriptKind::Component, ScriptKind::Status, ScriptKind::Trigger];

    pub fn as_str(self) -> &'static str {
        match self {
            ScriptKind::Component => "component",
            ScriptKind::Status => "status",
            ScriptKind::Trigger => "trigger",
        }
    }

    /// The functions a module of this kind must export.
    pub fn required_exports(self) -> &'static [&'static str] {
        match self {
            ScriptKind::Component => &["plan", "package"],
            ScriptKind::Status => &["check"],
            ScriptKind::Trigger => &["parse"],
        }
    }
}

impl fmt::Display for ScriptKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ScriptKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        ScriptKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| Error::InvalidTriple { text: s.to_owned(), reason: "unknown kind".into() })
    }
}

/// The globally unique identity of one script revision, written `status/http/3`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PluginTriple {
    pub kind: ScriptKind,
    pub name: String,
    pub revision: u32,
}

impl PluginTriple {
    pub fn new(kind: ScriptKind, name: impl Into<String>, revision: u32) -> Self {
        Self { kind, name: name.into(), revision }
    }
}

impl fmt::Display for PluginTriple {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.kind, self.name, self.revision)
    }
}

impl FromStr for PluginTriple {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let invalid = |reason: &str| Error::InvalidTriple { text: s.to_owned(), reason: reason.into() };
        let mut parts = s.split('/');
        let (Some(kind), Some(name), Some(revision), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid("expected kind/name/revision"));
        };
        let kind: ScriptKind = kind.parse().map_err(|_| invalid("unknown kind"))?;
        validate_name(name).map_err(|reason| invalid(&reason))?;
        let revision = parse_revision(revision).map_err(|reason| invalid(&reason))?;
        Ok(PluginTriple { kind, name: name.to_owned(), revision })
    }
}

/// On the wire a triple is its text form, so its schema is a string.
#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for PluginTriple {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::Type::String)
            .description(Some("A script revision, `kind/name/revision`"))
            .examples(["status/http/3"])
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for PluginTriple {}

impl Serialize for PluginTriple {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PluginTriple {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Script and package names: lowercase letters, digits and `-`, starting with a letter, so
/// they are safe in paths, URLs and metric labels.
pub fn validate_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let starts_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase());
    if !starts_ok || name.len() > 63 {
        return Err(format!("name `{name}` must start with a lowercase letter and be at most 63 characters"));
    }
    if let Some(bad) = name.chars().find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-')) {
        return Err(format!("name `{name}` holds `{bad}`; only a-z, 0-9 and - are allowed"));
    }
    Ok(())
}

/// A revision is a positive integer.
pub fn parse_revision(text: &str) -> Result<u32, String> {
    match text.parse::<u32>() {
        Ok(0) | Err(_) => Err(format!("revision `{text}` must be a positive integer")),
        Ok(n) => Ok(n),
    }
}

/// The health of an observed thing, as a status script judges it (Argo CD's vocabulary).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    Healthy,
    Progressing,
    Degraded,
    Suspended,
    Missing,
    Unknown,
}

impl HealthStatus {
    pub const ALL: [HealthStatus; 6] = [
        HealthStatus::Healthy,
        HealthStatus::Progressing,
        HealthStatus::Degraded,
        HealthStatus::Suspended,
        HealthStatus::Missing,
        HealthStatus::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Healthy => "healthy",
            HealthStatus::Progressing => "progressing",
            HealthStatus::Degraded => "degraded",
            HealthStatus::Suspended => "suspended",
            HealthStatus::Missing => "missing",
            HealthStatus::Unknown => "unknown",
        }
    }
}

impl fmt::Display for HealthStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for HealthStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        HealthStatus::ALL.into_iter().find(|h| h.as_str() == s).ok_or_else(|| {
            format!("`{s}` is not one of healthy, progressing, degraded, suspended, missing, unknown")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn triple_round_trips_through_text_and_json() {
        let t: PluginTriple = "status/http/3".parse().unwrap();
        assert_eq!(t, PluginTriple::new(ScriptKind::Status, "http", 3));
        assert_eq!(t.to_string(), "status/http/3");
        assert_eq!(serde_json::to_string(&t).unwrap(), "\"status/http/3\"");
        let back: PluginTriple = serde_json::from_str("\"trigger/github-push/1\"").unwrap();
        assert_eq!(back.kind, ScriptKind::Trigger);
    }

    #[test]
    fn malformed_triples_are_rejected_with_reason() {
        for bad in ["status/http", "status/http/0", "status/http/x", "job/http/1", "status/Http/1", "a/b/1/2"]
        {
            let err = bad.parse::<PluginTriple>().unwrap_err();
            assert!(err.to_string().contains(bad), "{err}");
        }
    }

    #[test]
    fn kinds_and_statuses_serialize_lowercase() {
        assert_eq!(serde_json::to_string(&ScriptKind::Component).unwrap(), "\"component\"");
        assert_eq!(serde_json::to_string(&HealthStatus::Progressing).unwrap(), "\"progressing\"");
        assert_eq!("suspended".parse::<HealthStatus>().unwrap(), HealthStatus::Suspended);
        assert!("fine".parse::<HealthStatus>().is_err());
    }
}
