//! Semantic versions and their sortable key.
//!
//! The database orders versions by `version_key`, a string whose byte order is semver
//! precedence, so "newest first" and range filters are index scans rather than a sort in
//! Rust. The key uses only ASCII digits and lowercase letters, which every collation
//! (SQLite BINARY, PostgreSQL's locale collations) orders the same way. Build metadata is not part of the
//! key: `1.0.0+a` and `1.0.0+b` have the same precedence and so count as the same version.

use semver::{Prerelease, Version};

use crate::error::{Error, Result};

pub const MAX_VERSION_LEN: usize = 128;

/// The version a publish asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionSpec {
    /// The highest existing version of the app with its patch bumped (`0.1.0` for the first).
    Auto,
    /// This version, which must not exist yet.
    Exact(Version),
}

impl VersionSpec {
    pub fn parse(text: &str) -> Result<Self> {
        if text == "auto" { Ok(VersionSpec::Auto) } else { parse_version(text).map(VersionSpec::Exact) }
    }
}

/// Parses a semantic version (no leading `v`, at most 128 characters).
pub fn parse_version(text: &str) -> Result<Version> {
    if text.len() > MAX_VERSION_LEN {
        return Err(Error::InvalidVersion {
            value: text.chars().take(64).collect(),
            reason: format!("longer than {MAX_VERSION_LEN} characters"),
        });
    }
    Version::parse(text).map_err(|e| Error::InvalidVersion { value: text.to_owned(), reason: e.to_string() })
}

/// The version `auto` gives after `highest`: the patch bumped, pre-release and build dropped.
/// A pre-release `1.3.0-rc.1` becomes `1.3.0`, since that release is the next one up.
pub fn bump_patch(highest: Option<&Version>) -> Version {
    match highest {
        None => Version::new(0, 1, 0),
        Some(v) if !v.pre.is_empty() => Version::new(v.major, v.minor, v.patch),
        Some(v) => Version::new(v.major, v.minor, v.patch + 1),
    }
}

/// The prefix shared by every version `major.minor.patch[-pre]`: it sorts at or below all
/// of them, which makes it the exclusive upper bound "below `major.minor.patch`" in ranges.
pub fn triple_key(major: u64, minor: u64, patch: u64) -> String {
    format!("{major:016x}{minor:016x}{patch:016x}")
}

/// The sortable key of `version`.
///
/// After the triple: `z` for a release (above every pre-release), otherwise each
/// pre-release identifier as `1` + length + decimal digits (numeric; no leading zeros, so
/// longer is larger) or `2` + hex bytes + `0` (alphanumeric; ASCII bytes start with hex
/// digit 2-7, so the terminator sorts a shorter identifier first), then `0` to end the list
/// (a shorter list sorts first when all earlier identifiers are equal).
pub fn version_key(version: &Version) -> String {
    let mut key = triple_key(version.major, version.minor, version.patch);
    if version.pre.is_empty() {
        key.push('z');
        return key;
    }
    push_prerelease(&mut key, &version.pre);
    key
}

fn push_prerelease(key: &mut String, pre: &Prerelease) {
    for ident in pre.as_str().split('.') {
        if ident.bytes().all(|b| b.is_ascii_digit()) {
            key.push('1');
            key.push_str(&format!("{:02x}", ident.len()));
            key.push_str(ident);
        } else {
            key.push('2');
            key.push_str(&hex::encode(ident));
            key.push('0');
        }
    }
    key.push('0');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    #[test]
    fn key_order_is_semver_precedence() {
        // The precedence example of semver.org §11, plus numeric width and build metadata.
        let ordered = [
            "0.9.99",
            "1.0.0-alpha",
            "1.0.0-alpha.1",
            "1.0.0-alpha.beta",
            "1.0.0-beta",
            "1.0.0-beta.2",
            "1.0.0-beta.11",
            "1.0.0-rc.1",
            "1.0.0",
            "1.0.1",
            "1.2.0",
            "1.10.0",
            "10.0.0",
        ];
        for pair in ordered.windows(2) {
            let (a, b) = (v(pair[0]), v(pair[1]));
            assert!(a < b, "semver itself orders {a} < {b}");
            assert!(version_key(&a) < version_key(&b), "key orders {a} < {b}");
        }
        assert_eq!(version_key(&v("1.0.0+build.5")), version_key(&v("1.0.0")));
        assert!(version_key(&v("1.0.0")).bytes().all(|b| b.is_ascii_hexdigit() || b == b'z'));
    }

    #[test]
    fn triple_key_is_below_every_version_of_the_triple() {
        let prefix = triple_key(2, 0, 0);
        assert!(prefix < version_key(&v("2.0.0-0")));
        assert!(prefix < version_key(&v("2.0.0")));
        assert!(prefix > version_key(&v("1.99.99")));
    }

    #[test]
    fn auto_bumps_the_patch_of_the_highest() {
        assert_eq!(bump_patch(None), v("0.1.0"));
        assert_eq!(bump_patch(Some(&v("1.9.3+abc"))), v("1.9.4"));
        assert_eq!(bump_patch(Some(&v("1.3.0-rc.1"))), v("1.3.0"));
    }

    #[test]
    fn versions_are_parsed_strictly() {
        assert_eq!(VersionSpec::parse("auto").unwrap(), VersionSpec::Auto);
        assert!(matches!(VersionSpec::parse("1.2.3").unwrap(), VersionSpec::Exact(_)));
        for bad in ["v1.2.3", "1.2", "01.2.3", "1.2.3-", &format!("1.2.3-{}", "a".repeat(130))] {
            assert!(matches!(VersionSpec::parse(bad), Err(Error::InvalidVersion { .. })), "{bad}");
        }
    }
}
