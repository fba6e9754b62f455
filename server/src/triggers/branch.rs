//! Branch filters: `main`, `release/*` (one path segment), `feature/**` (any depth).

/// Whether `branch` matches one of `patterns`; no patterns means every branch.
pub fn allowed(patterns: &[String], branch: &str) -> bool {
    patterns.is_empty() || patterns.iter().any(|p| matches(p, branch))
}

fn matches(pattern: &str, branch: &str) -> bool {
    let pattern: Vec<&str> = pattern.split('/').collect();
    let branch: Vec<&str> = branch.split('/').collect();
    segments(&pattern, &branch)
}

fn segments(pattern: &[&str], branch: &[&str]) -> bool {
    match pattern.split_first() {
        None => branch.is_empty(),
        Some((&"**", rest)) => (0..=branch.len()).any(|skip| segments(rest, &branch[skip..])),
        Some((first, rest)) => {
            branch.split_first().is_some_and(|(b, brest)| wildcard(first, b) && segments(rest, brest))
        }
    }
}

/// `*` matches any run of characters within one segment.
fn wildcard(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((head, tail)) => {
            text.starts_with(head)
                && (head.len()..=text.len()).any(|i| text.is_char_boundary(i) && wildcard(tail, &text[i..]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        let p = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(allowed(&[], "anything/at/all"));
        assert!(allowed(&p(&["main"]), "main"));
        assert!(!allowed(&p(&["main"]), "maint"));
        assert!(allowed(&p(&["release/*"]), "release/3.1"));
        assert!(!allowed(&p(&["release/*"]), "release/3/hotfix"));
        assert!(allowed(&p(&["feature/**"]), "feature/a/b"));
        assert!(allowed(&p(&["v*-stable"]), "v2-stable"));
        assert!(!allowed(&p(&["main", "release/*"]), "dev"));
    }
}
