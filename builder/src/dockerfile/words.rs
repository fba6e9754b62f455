//! Splitting instruction arguments into words and `key=value` pairs the way Docker's parser
//! does (`parseWords` / `parseNameVal` in moby's `line_parsers.go`): quotes and escapes stay in
//! the word so expansion can see them later.

/// Splits on unquoted whitespace, keeping quotes and escape characters in each word.
pub fn split_words(rest: &str, escape: char) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut blank_ok = false;
    let mut chars = rest.chars().peekable();
    while let Some(c) = chars.next() {
        if let Some(q) = quote {
            if c == q {
                quote = None;
            } else if c == escape && q != '\'' {
                word.push(c);
                match chars.next() {
                    Some(n) => word.push(n),
                    None => break,
                }
                continue;
            }
            word.push(c);
            continue;
        }
        if c.is_whitespace() {
            if in_word && (blank_ok || !word.is_empty()) {
                words.push(std::mem::take(&mut word));
            }
            in_word = false;
            blank_ok = false;
            continue;
        }
        in_word = true;
        if c == '\'' || c == '"' {
            quote = Some(c);
            blank_ok = true;
        }
        if c == escape {
            if chars.peek().is_none() {
                continue;
            }
            word.push(c);
            word.extend(chars.next());
            continue;
        }
        word.push(c);
    }
    if in_word && (blank_ok || !word.is_empty()) {
        words.push(word);
    }
    words
}

/// Parses `ENV`/`LABEL` arguments: either `key=value ...` pairs or the legacy `key value` form.
/// Keys and values are returned unexpanded.
pub fn name_values(rest: &str, escape: char, instruction: &str) -> Result<Vec<(String, String)>, String> {
    let words = split_words(rest, escape);
    let Some(first) = words.first() else {
        return Err(format!("{instruction} requires at least one argument"));
    };
    if !first.contains('=') {
        let trimmed = rest.trim_start();
        let value = trimmed[trimmed.find(char::is_whitespace).unwrap_or(trimmed.len())..].trim();
        if value.is_empty() {
            return Err(format!(
                "{instruction} names can not be blank or {instruction} must have two arguments"
            ));
        }
        return Ok(vec![(first.clone(), value.to_string())]);
    }
    words
        .iter()
        .map(|w| match w.split_once('=') {
            Some(("", _)) => Err(format!("{instruction} names can not be blank")),
            Some((k, v)) => Ok((k.to_string(), v.to_string())),
            None => Err(format!("Syntax error - can't find = in \"{w}\". Must be of the form: name=value")),
        })
        .collect()
}

/// Parses `ARG name[=default] ...`.
pub fn arg_declarations(rest: &str, escape: char) -> Vec<(String, Option<String>)> {
    split_words(rest, escape)
        .into_iter()
        .map(|w| match w.split_once('=') {
            Some((k, v)) => (k.to_string(), Some(v.to_string())),
            None => (w, None),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_keep_quotes_for_expansion() {
        assert_eq!(split_words(r#"a="x y" b=c\ d  'e f'"#, '\\'), vec![r#"a="x y""#, r"b=c\ d", "'e f'"]);
        assert_eq!(split_words(r#"a="" "#, '\\'), vec![r#"a="""#]);
    }

    #[test]
    fn name_value_forms() {
        assert_eq!(
            name_values("A=1 B=\"two words\"", '\\', "ENV").unwrap(),
            vec![("A".into(), "1".into()), ("B".into(), "\"two words\"".into())]
        );
        assert_eq!(
            name_values("LEGACY some value here", '\\', "ENV").unwrap(),
            vec![("LEGACY".into(), "some value here".into())]
        );
        assert!(name_values("A=1 B", '\\', "ENV").is_err());
        assert!(name_values("ONLY", '\\', "ENV").is_err());
    }

    #[test]
    fn args_with_and_without_defaults() {
        assert_eq!(arg_declarations("A B=2", '\\'), vec![("A".into(), None), ("B".into(), Some("2".into()))]);
    }
}
