//! Variable expansion in Dockerfile words, following the rules of Docker's shell lexer
//! (`moby/buildkit/frontend/dockerfile/shell/lex.go`): `$VAR`, `${VAR}`, `${VAR:-word}`,
//! `${VAR-word}`, `${VAR:+word}`, `${VAR+word}`, `${VAR:?msg}`, single quotes literal, double
//! quotes expanding, and the escape character (`\` or the `escape` directive) quoting the next
//! character. Quotes are removed from the result.

use std::collections::BTreeMap;

/// Variables visible to an instruction: the stage's `ENV` over its declared `ARG`s.
pub type Vars = BTreeMap<String, String>;

/// Expands one word; the error text matches the words Docker uses.
pub fn expand_word(word: &str, vars: &Vars, escape: char) -> Result<String, String> {
    let mut lexer = Lexer { chars: word.chars().collect(), pos: 0, vars, escape };
    lexer.until(None)
}

struct Lexer<'a> {
    chars: Vec<char>,
    pos: usize,
    vars: &'a Vars,
    escape: char,
}

impl Lexer<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        self.pos += usize::from(c.is_some());
        c
    }

    /// Reads until `stop` (consumed) or the end of the word.
    fn until(&mut self, stop: Option<char>) -> Result<String, String> {
        let mut out = String::new();
        while let Some(c) = self.peek() {
            if Some(c) == stop {
                self.pos += 1;
                return Ok(out);
            }
            match c {
                '\'' => out.push_str(&self.single_quoted()?),
                '"' => out.push_str(&self.double_quoted()?),
                '$' => out.push_str(&self.dollar()?),
                _ => {
                    self.pos += 1;
                    if c == self.escape {
                        match self.next() {
                            Some(n) => out.push(n),
                            None => break,
                        }
                    } else {
                        out.push(c);
                    }
                }
            }
        }
        match stop {
            Some(_) => Err("syntax error: missing '}'".into()),
            None => Ok(out),
        }
    }

    fn single_quoted(&mut self) -> Result<String, String> {
        self.pos += 1;
        let mut out = String::new();
        loop {
            match self.next() {
                Some('\'') => return Ok(out),
                Some(c) => out.push(c),
                None => {
                    return Err("unexpected end of statement while looking for matching single-quote".into());
                }
            }
        }
    }

    fn double_quoted(&mut self) -> Result<String, String> {
        self.pos += 1;
        let mut out = String::new();
        loop {
            match self.peek() {
                None => {
                    return Err("unexpected end of statement while looking for matching double-quote".into());
                }
                Some('"') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some('$') => out.push_str(&self.dollar()?),
                Some(c) => {
                    self.pos += 1;
                    if c == self.escape {
                        match self.peek() {
                            Some(n) if n == '"' || n == '$' || n == self.escape => {
                                self.pos += 1;
                                out.push(n);
                                continue;
                            }
                            _ => {}
                        }
                    }
                    out.push(c);
                }
            }
        }
    }

    fn name(&mut self) -> String {
        let mut name = String::new();
        if let Some(c) = self.peek().filter(char::is_ascii_digit) {
            self.pos += 1;
            name.push(c);
            return name;
        }
        while let Some(c) = self.peek().filter(|c| c.is_ascii_alphanumeric() || *c == '_') {
            self.pos += 1;
            name.push(c);
        }
        name
    }

    fn dollar(&mut self) -> Result<String, String> {
        self.pos += 1;
        if self.peek() != Some('{') {
            let name = self.name();
            if name.is_empty() {
                return Ok("$".into());
            }
            return Ok(self.vars.get(&name).cloned().unwrap_or_default());
        }
        self.pos += 1;
        match self.peek() {
            None => return Err("syntax error: missing '}'".into()),
            Some('{' | '}' | ':') => return Err("syntax error: bad substitution".into()),
            _ => {}
        }
        let name = self.name();
        let value = self.vars.get(&name);
        match self.next() {
            Some('}') => Ok(value.cloned().unwrap_or_default()),
            Some(':') => {
                let modifier = self.next();
                let word = self.until(Some('}'))?;
                let value = value.filter(|v| !v.is_empty());
                apply_modifier(&name, modifier, value, word)
            }
            Some(m @ ('-' | '+' | '?')) => {
                let word = self.until(Some('}'))?;
                apply_modifier(&name, Some(m), value, word)
            }
            Some(c) => Err(format!("unsupported modifier ({c}) in substitution")),
            None => Err("syntax error: missing '}'".into()),
        }
    }
}

/// `value` is `None` when the variable counts as unset for this form (`:` forms treat empty
/// as unset).
fn apply_modifier(
    name: &str,
    modifier: Option<char>,
    value: Option<&String>,
    word: String,
) -> Result<String, String> {
    match modifier {
        Some('-') => Ok(value.cloned().unwrap_or(word)),
        Some('+') => Ok(if value.is_some() { word } else { String::new() }),
        Some('?') => match value {
            Some(v) => Ok(v.clone()),
            None if word.is_empty() => Err(format!("{name}: is not allowed to be unset")),
            None => Err(format!("{name}: {word}")),
        },
        Some(c) => Err(format!("unsupported modifier ({c}) in substitution")),
        None => Err("syntax error: missing '}'".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vars {
        [("A", "one"), ("EMPTY", ""), ("P", "/usr/bin")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn x(word: &str) -> String {
        expand_word(word, &vars(), '\\').unwrap()
    }

    #[test]
    fn plain_and_braced_variables() {
        assert_eq!(x("$A-${A}_$A"), "one-one_one");
        assert_eq!(x("$MISSING|"), "|");
        assert_eq!(x("cost $"), "cost $");
        assert_eq!(x("${P}:/bin"), "/usr/bin:/bin");
    }

    #[test]
    fn modifiers_distinguish_empty_and_unset() {
        assert_eq!(x("${MISSING:-def}"), "def");
        assert_eq!(x("${EMPTY:-def}"), "def");
        assert_eq!(x("${EMPTY-def}"), "");
        assert_eq!(x("${MISSING-def}"), "def");
        assert_eq!(x("${A:+alt}"), "alt");
        assert_eq!(x("${EMPTY:+alt}"), "");
        assert_eq!(x("${EMPTY+alt}"), "alt");
        assert_eq!(x("${MISSING:-${A}x}"), "onex");
        assert_eq!(expand_word("${MISSING:?need it}", &vars(), '\\').unwrap_err(), "MISSING: need it");
    }

    #[test]
    fn quotes_and_escapes() {
        assert_eq!(x("'$A'"), "$A");
        assert_eq!(x("\"$A b\""), "one b");
        assert_eq!(x("\\$A"), "$A");
        assert_eq!(x("\"\\$A \\x\""), "$A \\x");
        assert_eq!(x("a\\ b"), "a b");
        assert_eq!(expand_word("`$A", &vars(), '`').unwrap(), "$A");
    }

    #[test]
    fn syntax_errors() {
        assert!(expand_word("${A", &vars(), '\\').is_err());
        assert!(expand_word("${:}", &vars(), '\\').is_err());
        assert!(expand_word("'open", &vars(), '\\').is_err());
        assert!(expand_word("${A%x}", &vars(), '\\').is_err());
    }
}
