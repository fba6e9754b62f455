//! Version ranges (`>=1.2.0, <2.0.0`, `^1.4`, `~2.1`, `1.*`) as an interval of version keys,
//! so a range filter is one indexed `version_key BETWEEN` condition in SQL.
//!
//! Ranges use Cargo's syntax and operator meanings, with one simplification: a range is an
//! interval of semver order and pre-releases inside it match. An upper bound written as a
//! release (`<2.0.0`) ends below every pre-release of that release, so `2.0.0-rc.1` is not
//! "below 2.0.0" for a deploy system that asks for the 1.x line.

use semver::{Comparator, Op, Version, VersionReq};

use crate::error::{Error, Result};
use crate::version::{triple_key, version_key};

/// One end of a [`KeyRange`]: a version key and whether the key itself is inside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyBound {
    pub key: String,
    pub inclusive: bool,
}

/// The versions a range admits, as bounds on `version_key`; `None` is unbounded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyRange {
    pub lower: Option<KeyBound>,
    pub upper: Option<KeyBound>,
}

impl KeyRange {
    /// Parses a range; an empty string admits every version.
    pub fn parse(text: &str) -> Result<KeyRange> {
        let invalid = |reason: String| Error::InvalidRange { value: text.to_owned(), reason };
        if text.trim().is_empty() {
            return Ok(KeyRange::default());
        }
        let req = VersionReq::parse(text).map_err(|e| invalid(e.to_string()))?;
        let mut range = KeyRange::default();
        for comparator in &req.comparators {
            range = range.intersect(
                comparator_range(comparator)
                    .ok_or_else(|| invalid(format!("unsupported operator in `{comparator}`")))?,
            );
        }
        Ok(range)
    }

    /// Whether `key` lies inside; the SQL filter and this agree (tested below).
    pub fn contains(&self, key: &str) -> bool {
        let above = self
            .lower
            .as_ref()
            .is_none_or(|b| if b.inclusive { key >= b.key.as_str() } else { key > b.key.as_str() });
        let below = self
            .upper
            .as_ref()
            .is_none_or(|b| if b.inclusive { key <= b.key.as_str() } else { key < b.key.as_str() });
        above && below
    }

    fn intersect(self, other: KeyRange) -> KeyRange {
        // Of two lower bounds the higher wins; on equal keys the exclusive one is tighter.
        let lower = pick(self.lower, other.lower, |a, b| a.key > b.key || (a.key == b.key && !a.inclusive));
        let upper = pick(self.upper, other.upper, |a, b| a.key < b.key || (a.key == b.key && !a.inclusive));
        KeyRange { lower, upper }
    }
}

fn pick(
    a: Option<KeyBound>,
    b: Option<KeyBound>,
    a_tighter: impl Fn(&KeyBound, &KeyBound) -> bool,
) -> Option<KeyBound> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if a_tighter(&a, &b) { a } else { b }),
        (a, b) => a.or(b),
    }
}

fn at_least(key: String) -> Option<KeyBound> {
    Some(KeyBound { key, inclusive: true })
}

fn above(key: String) -> Option<KeyBound> {
    Some(KeyBound { key, inclusive: false })
}

/// "Below the triple": an exclusive bound at the triple's prefix; `None` (unbounded) when
/// the triple overflows, as `<18446744073709551616.0.0` admits everything.
fn below_triple(major: Option<u64>, minor: Option<u64>, patch: Option<u64>) -> Option<KeyBound> {
    Some(KeyBound { key: triple_key(major?, minor?, patch?), inclusive: false })
}

/// The interval one comparator admits. Missing minor/patch parts widen it the way Cargo
/// reads them (`=1.2` is `>=1.2.0, <1.3.0`).
fn comparator_range(c: &Comparator) -> Option<KeyRange> {
    let (major, minor, patch) = (c.major, c.minor, c.patch);
    let full = Version { pre: c.pre.clone(), ..Version::new(major, minor.unwrap_or(0), patch.unwrap_or(0)) };
    let full_key = version_key(&full);
    let start = triple_key(major, minor.unwrap_or(0), patch.unwrap_or(0));
    // A partial version starts at its triple's prefix, below its own pre-releases.
    let from_start = || at_least(if patch.is_some() { full_key.clone() } else { start.clone() });
    let next_major = || below_triple(major.checked_add(1), Some(0), Some(0));
    let next_minor = |m: u64| below_triple(Some(major), m.checked_add(1), Some(0));
    let inclusive = |b: Option<KeyBound>| b.map(|b| KeyBound { inclusive: true, ..b });
    // The whole of what the written parts name: `1` is 1.x.y, `1.2` is 1.2.x, `1.2.3` is exact.
    let named = || match (minor, patch) {
        (None, _) => KeyRange { lower: from_start(), upper: next_major() },
        (Some(m), None) => KeyRange { lower: from_start(), upper: next_minor(m) },
        (Some(_), Some(_)) => {
            KeyRange { lower: at_least(full_key.clone()), upper: at_least(full_key.clone()) }
        }
    };
    Some(match c.op {
        Op::Exact | Op::Wildcard => named(),
        Op::GreaterEq => KeyRange { lower: at_least(full_key.clone()), upper: None },
        Op::Greater => {
            let lower = match (minor, patch) {
                (None, _) => inclusive(next_major()),
                (Some(m), None) => inclusive(next_minor(m)),
                (Some(_), Some(_)) => above(full_key.clone()),
            };
            KeyRange { lower, upper: None }
        }
        Op::Less if c.pre.is_empty() => {
            KeyRange { lower: None, upper: below_triple(Some(major), minor.or(Some(0)), patch.or(Some(0))) }
        }
        Op::Less => {
            KeyRange { lower: None, upper: Some(KeyBound { key: full_key.clone(), inclusive: false }) }
        }
        Op::LessEq => KeyRange { lower: None, upper: named().upper },
        Op::Tilde => match minor {
            None => named(),
            Some(m) => KeyRange { lower: from_start(), upper: next_minor(m) },
        },
        Op::Caret => {
            let upper = match (major, minor, patch) {
                (0, Some(0), Some(p)) => below_triple(Some(0), Some(0), p.checked_add(1)),
                (0, Some(m), _) => next_minor(m),
                _ => next_major(),
            };
            KeyRange { lower: from_start(), upper }
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admits(range: &str, version: &str) -> bool {
        let range = KeyRange::parse(range).unwrap();
        range.contains(&version_key(&Version::parse(version).unwrap()))
    }

    #[test]
    fn the_issue_example_is_a_half_open_interval() {
        let r = ">=1.2.0, <2.0.0";
        assert!(admits(r, "1.2.0"));
        assert!(admits(r, "1.9.9"));
        assert!(admits(r, "1.5.0-beta.1"), "pre-releases inside the interval match");
        assert!(!admits(r, "1.2.0-rc.1"));
        assert!(!admits(r, "2.0.0-rc.1"), "a release upper bound ends below its pre-releases");
        assert!(!admits(r, "2.0.0"));
        assert!(!admits(r, "1.1.9"));
    }

    #[test]
    fn cargo_operators() {
        let cases = [
            ("^1.4", "1.4.0", true),
            ("^1.4", "1.99.0", true),
            ("^1.4", "2.0.0", false),
            ("^0.3.1", "0.3.9", true),
            ("^0.3.1", "0.4.0", false),
            ("^0.0.3", "0.0.4", false),
            ("~2.1.3", "2.1.9", true),
            ("~2.1.3", "2.2.0", false),
            ("~2.1.3", "2.1.2", false),
            ("1.*", "1.7.3", true),
            ("1.*", "2.0.0", false),
            ("=1.2", "1.2.7", true),
            ("=1.2.3", "1.2.3+build", true),
            ("=1.2.3", "1.2.4", false),
            (">1.2", "1.2.9", false),
            (">1.2", "1.3.0", true),
            (">1.2.3", "1.2.3", false),
            ("<=1.2", "1.2.9", true),
            ("<=1.2", "1.3.0", false),
            ("<=1.2.3", "1.2.3", true),
            ("<1.0.0-rc.2", "1.0.0-rc.1", true),
            ("<1.0.0-rc.2", "1.0.0-rc.2", false),
            ("", "0.0.1", true),
        ];
        for (range, version, expected) in cases {
            assert_eq!(admits(range, version), expected, "{range} admits {version}");
        }
    }

    #[test]
    fn overflowing_bounds_are_unbounded() {
        assert!(admits(&format!("^{}", u64::MAX), &format!("{}.5.0", u64::MAX)));
    }

    #[test]
    fn bad_ranges_are_refused() {
        for bad in [">=1.2.0 <", "one", ">=x", "1.2.3.4"] {
            assert!(matches!(KeyRange::parse(bad), Err(Error::InvalidRange { .. })), "{bad}");
        }
    }
}
