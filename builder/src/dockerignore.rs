//! `.dockerignore` matching by Docker's rules (`moby/patternmatcher`): Go `filepath.Match`
//! syntax plus `**` for any number of directories, `!` exceptions, and the last matching line
//! wins; a path is also excluded when one of its parent directories matches.

/// The rules of one `.dockerignore` file.
#[derive(Debug, Clone, Default)]
pub struct IgnoreRules {
    rules: Vec<Rule>,
}

#[derive(Debug, Clone)]
struct Rule {
    tokens: Vec<Token>,
    exception: bool,
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Literal(char),
    /// `*`: any run of characters except `/`.
    Star,
    /// `?`: one character except `/`.
    Any,
    /// `[...]`: ranges and single characters, possibly negated.
    Class {
        negated: bool,
        items: Vec<(char, char)>,
    },
    /// `**` not followed by `/`: anything, separators included.
    DoubleStar,
    /// `**/`: zero or more whole directories.
    DoubleStarDir,
}

impl IgnoreRules {
    /// Parses the file's text; blank lines and `#` comments are skipped.
    pub fn parse(text: &str) -> Self {
        let rules = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .filter_map(|line| {
                let (exception, pattern) = match line.strip_prefix('!') {
                    Some(rest) => (true, rest.trim()),
                    None => (false, line),
                };
                let cleaned = clean(pattern);
                (!cleaned.is_empty()).then(|| Rule { tokens: tokenize(&cleaned), exception })
            })
            .collect();
        IgnoreRules { rules }
    }

    /// Whether `path` (relative, `/`-separated) is left out of the build context.
    pub fn is_ignored(&self, path: &str) -> bool {
        let mut ignored = false;
        for rule in &self.rules {
            let hit = matches(&rule.tokens, path) || parents(path).any(|p| matches(&rule.tokens, p));
            if hit {
                ignored = !rule.exception;
            }
        }
        ignored
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

fn parents(path: &str) -> impl Iterator<Item = &str> {
    path.match_indices('/').map(move |(i, _)| &path[..i])
}

/// `filepath.Clean` for patterns, with the leading `/` dropped (patterns are context-relative).
fn clean(pattern: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in pattern.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

fn tokenize(pattern: &str) -> Vec<Token> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '*' if chars.get(i + 1) == Some(&'*') => {
                i += 2;
                if chars.get(i) == Some(&'/') {
                    i += 1;
                    out.push(Token::DoubleStarDir);
                } else {
                    out.push(Token::DoubleStar);
                }
                continue;
            }
            '*' => out.push(Token::Star),
            '?' => out.push(Token::Any),
            '\\' if i + 1 < chars.len() => {
                i += 1;
                out.push(Token::Literal(chars[i]));
            }
            '[' => {
                let mut j = i + 1;
                let negated = matches!(chars.get(j), Some('^' | '!'));
                j += usize::from(negated);
                let mut items = Vec::new();
                while j < chars.len() && (chars[j] != ']' || items.is_empty()) {
                    let lo = chars[j];
                    if chars.get(j + 1) == Some(&'-') && chars.get(j + 2).is_some_and(|c| *c != ']') {
                        items.push((lo, chars[j + 2]));
                        j += 3;
                    } else {
                        items.push((lo, lo));
                        j += 1;
                    }
                }
                if j < chars.len() {
                    out.push(Token::Class { negated, items });
                    i = j + 1;
                    continue;
                }
                out.push(Token::Literal('['));
            }
            c => out.push(Token::Literal(c)),
        }
        i += 1;
    }
    out
}

/// Go `filepath.Match` of one pattern against a `/`-separated path (COPY wildcards).
pub fn glob_match(pattern: &str, path: &str) -> bool {
    matches(&tokenize(pattern), path)
}

/// Whether a COPY source uses wildcards.
pub fn has_wildcards(pattern: &str) -> bool {
    pattern.contains(['*', '?', '['])
}

fn matches(tokens: &[Token], text: &str) -> bool {
    let chars: Vec<char> = text.chars().collect();
    match_from(tokens, &chars)
}

fn match_from(tokens: &[Token], text: &[char]) -> bool {
    let Some((first, rest)) = tokens.split_first() else {
        return text.is_empty();
    };
    match first {
        Token::Literal(c) => text.first() == Some(c) && match_from(rest, &text[1..]),
        Token::Any => text.first().is_some_and(|c| *c != '/') && match_from(rest, &text[1..]),
        Token::Class { negated, items } => text.first().is_some_and(|c| {
            *c != '/'
                && (items.iter().any(|(lo, hi)| lo <= c && c <= hi) != *negated)
                && match_from(rest, &text[1..])
        }),
        Token::Star => {
            let run = text.iter().take_while(|c| **c != '/').count();
            (0..=run).any(|n| match_from(rest, &text[n..]))
        }
        Token::DoubleStar => (0..=text.len()).any(|n| match_from(rest, &text[n..])),
        Token::DoubleStarDir => {
            match_from(rest, text)
                || text.iter().enumerate().any(|(i, c)| *c == '/' && match_from(rest, &text[i + 1..]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_and_directories() {
        let rules = IgnoreRules::parse("# comment\n*.log\n/build\ndocs/**/*.md\n!docs/keep.md\n");
        assert!(rules.is_ignored("a.log"));
        assert!(!rules.is_ignored("sub/a.log"), "`*` does not cross directories");
        assert!(rules.is_ignored("build/out/x.o"), "a matching parent excludes its contents");
        assert!(rules.is_ignored("docs/a/b/c.md"));
        assert!(rules.is_ignored("docs/c.md"), "`**/` matches zero directories");
        assert!(!rules.is_ignored("docs/keep.md"), "the last matching line wins");
        assert!(!rules.is_ignored("src/main.rs"));
    }

    #[test]
    fn classes_and_escapes() {
        let rules = IgnoreRules::parse("file[0-9].txt\nweird\\*name\n**/tmp\n");
        assert!(rules.is_ignored("file7.txt"));
        assert!(!rules.is_ignored("filex.txt"));
        assert!(rules.is_ignored("weird*name"));
        assert!(!rules.is_ignored("weirdXname"));
        assert!(rules.is_ignored("a/b/tmp/c"));
        assert!(rules.is_ignored("tmp"));
    }
}
