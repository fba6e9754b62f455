//! The allowed shapes of app names, component names and tags (documented in README.md).
//!
//! App and component names are DNS labels so they can name Kubernetes objects and image
//! repositories unchanged; tags add `.` and `_` so `release-3.1` and `canary_eu` work, and
//! never contain `,` because tag queries separate tags with commas.

use crate::error::{Error, Result};

pub const MAX_NAME_LEN: usize = 63;
pub const MAX_TAG_LEN: usize = 64;
pub const MAX_ACTOR_LEN: usize = 256;

const NAME_RULE: &str = "1-63 characters of a-z, 0-9 and '-', starting with a letter and not ending with '-'";
const TAG_RULE: &str = "1-64 characters of a-z, 0-9, '.', '_' and '-', starting with a letter or digit";

fn check_name(what: &'static str, value: &str) -> Result<()> {
    let ok = !value.is_empty()
        && value.len() <= MAX_NAME_LEN
        && value.starts_with(|c: char| c.is_ascii_lowercase())
        && !value.ends_with('-')
        && value.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok { Ok(()) } else { Err(Error::InvalidName { what, value: value.to_owned(), rule: NAME_RULE }) }
}

pub fn check_app(value: &str) -> Result<()> {
    check_name("app name", value)
}

pub fn check_component(value: &str) -> Result<()> {
    check_name("component name", value)
}

pub fn check_tag(value: &str) -> Result<()> {
    let ok = !value.is_empty()
        && value.len() <= MAX_TAG_LEN
        && value.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && value.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b".-_".contains(&b));
    if ok { Ok(()) } else { Err(Error::InvalidName { what: "tag", value: value.to_owned(), rule: TAG_RULE }) }
}

/// Who did something (creator, tagger): free text, but bounded and without control characters.
pub fn check_actor(value: &str) -> Result<()> {
    if value.is_empty() || value.len() > MAX_ACTOR_LEN || value.chars().any(char::is_control) {
        return Err(Error::InvalidName {
            what: "actor",
            value: value.chars().take(64).collect(),
            rule: "1-256 characters without control characters",
        });
    }
    Ok(())
}

/// Parses a comma-separated tag list (`prod,stable`), dropping empty items and duplicates.
pub fn parse_tag_list(list: &str) -> Result<Vec<String>> {
    let mut tags: Vec<String> = Vec::new();
    for tag in list.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        check_tag(tag)?;
        if !tags.iter().any(|t| t == tag) {
            tags.push(tag.to_owned());
        }
    }
    Ok(tags)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_and_component_names_are_dns_labels() {
        for good in ["shop", "a", "web-2", &"a".repeat(63)] {
            assert!(check_app(good).is_ok(), "{good}");
        }
        for bad in ["", "Shop", "2shop", "shop-", "sh_op", "sh.op", &"a".repeat(64), "shöp"] {
            let err = check_component(bad).unwrap_err();
            assert!(matches!(err, Error::InvalidName { what: "component name", .. }), "{bad}");
        }
    }

    #[test]
    fn tags_allow_dots_and_underscores_but_no_commas() {
        for good in ["prod", "release-3.1", "canary_eu", "3", &"t".repeat(64)] {
            assert!(check_tag(good).is_ok(), "{good}");
        }
        for bad in ["", "-prod", ".x", "Prod", "a,b", "a b", &"t".repeat(65)] {
            assert!(check_tag(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tag_lists_are_trimmed_and_deduplicated() {
        assert_eq!(parse_tag_list(" prod, stable,,prod ").unwrap(), ["prod", "stable"]);
        assert!(parse_tag_list("prod,Bad").is_err());
        assert!(parse_tag_list("").unwrap().is_empty());
    }

    #[test]
    fn actors_are_bounded() {
        assert!(check_actor("ci@example.com").is_ok());
        assert!(check_actor("").is_err());
        assert!(check_actor("a\nb").is_err());
        assert!(check_actor(&"x".repeat(257)).is_err());
    }
}
