//! The kind interfaces' return contracts, checked on every call, and a status check's
//! result read into a [`CheckVerdict`].

use std::sync::Arc;

use serde_json::Value;

use crate::error::Error;
use crate::model::{CheckVerdict, Details};
use crate::triple::{HealthStatus, PluginTriple, ScriptKind};
use crate::wire::{self, Reader};

/// Checks a generic call's result against its kind's interface.
pub fn check_shape(triple: &PluginTriple, function: &str, result: &Value) -> Result<(), Error> {
    match (triple.kind, function) {
        (ScriptKind::Status, "check") => judged(triple, result).map(|_| ()),
        (ScriptKind::Component, "plan" | "package") | (ScriptKind::Trigger, "parse")
            if !result.is_object() =>
        {
            Err(wrong_shape(triple, function, format!("expected an object, got {}", kind_of(result))))
        }
        _ => Ok(()),
    }
}

/// A status check's result in the wire form as a verdict; its details stay in that form.
pub fn from_wire(triple: &Arc<PluginTriple>, bytes: &[u8]) -> Result<CheckVerdict, Error> {
    if let Some((status, reason, details)) = well_formed(bytes) {
        return Ok(CheckVerdict { status, reason, details, triple: triple.clone() });
    }
    // Anything unusual takes the general path, which says what is wrong with it.
    let value = wire::decode(bytes).map_err(|e| wrong_shape(triple, "check", e.to_string()))?;
    let (status, reason, details) = judged(triple, &value)?;
    let details = Details::from_value(details.unwrap_or(&Value::Null))
        .map_err(|e| wrong_shape(triple, "check", e.to_string()))?;
    Ok(CheckVerdict { status, reason: reason.into(), details, triple: triple.clone() })
}

/// Reads `{status, reason, details}` straight from the wire form, without a `Value` for the
/// result or its details; `None` when the result is anything else.
fn well_formed(bytes: &[u8]) -> Option<(HealthStatus, Arc<str>, Details)> {
    let mut reader = Reader::new(bytes);
    if reader.u8().ok()? != wire::OBJECT {
        return None;
    }
    let (mut status, mut reason, mut details): (_, &[u8], _) = (None, b"", None);
    while let Some(key) = reader.key().ok()? {
        match key {
            b"status" if reader.u8().ok()? == wire::STRING => {
                status = Some(std::str::from_utf8(reader.str_body().ok()?).ok()?.parse().ok()?);
            }
            b"reason" => match reader.u8().ok()? {
                wire::NULL => reason = b"",
                wire::STRING => reason = reader.str_body().ok()?,
                _ => return None,
            },
            b"details" => {
                let start = reader.rest();
                wire::skip_value(&mut reader).ok()?;
                details = Some(&start[..start.len() - reader.len()]);
            }
            b"status" => return None,
            _ => wire::skip_value(&mut reader).ok()?,
        }
    }
    let details = Details::from_wire(details.unwrap_or(&[wire::NULL]));
    // Scripts' strings are UTF-8 unless they hold lone surrogates: check, and replace only then.
    let reason = match std::str::from_utf8(reason) {
        Ok(text) => Arc::from(text),
        Err(_) => String::from_utf8_lossy(reason).into(),
    };
    Some((status?, reason, details))
}

/// A status check's result taken apart as a verdict (status, reason, details), or what is
/// wrong with it.
fn judged<'a>(
    triple: &PluginTriple,
    value: &'a Value,
) -> Result<(HealthStatus, &'a str, Option<&'a Value>), Error> {
    let Value::Object(map) = value else {
        return Err(wrong_shape(
            triple,
            "check",
            format!("expected {{status, reason, details}}, got {}", kind_of(value)),
        ));
    };
    let status = match map.get("status") {
        Some(Value::String(s)) => {
            s.parse::<HealthStatus>().map_err(|m| wrong_shape(triple, "check", format!("status: {m}")))?
        }
        Some(other) => {
            return Err(wrong_shape(
                triple,
                "check",
                format!("status must be a string, got {}", kind_of(other)),
            ));
        }
        None => return Err(wrong_shape(triple, "check", "the result has no `status`".into())),
    };
    let reason = match map.get("reason") {
        None | Some(Value::Null) => "",
        Some(Value::String(s)) => s,
        Some(other) => {
            return Err(wrong_shape(
                triple,
                "check",
                format!("reason must be a string, got {}", kind_of(other)),
            ));
        }
    };
    Ok((status, reason, map.get("details")))
}

pub fn wrong_shape(triple: &PluginTriple, function: &str, message: String) -> Error {
    Error::WrongShape { triple: triple.clone(), function: function.to_owned(), message }
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result_with_reason(reason: &[u8]) -> Vec<u8> {
        let mut bytes = vec![wire::OBJECT];
        wire::write_str(&mut bytes, "status");
        wire::write_str(&mut bytes, "degraded");
        wire::write_str(&mut bytes, "reason");
        wire::write_bytes(&mut bytes, reason);
        bytes.push(wire::END);
        bytes
    }

    #[test]
    fn reasons_are_read_as_sent_and_lone_surrogates_replaced() {
        let triple = Arc::new(PluginTriple::new(ScriptKind::Status, "http", 1));
        let verdict = from_wire(&triple, &result_with_reason("HTTP 503 — «down»".as_bytes())).unwrap();
        assert_eq!((verdict.status, &*verdict.reason), (HealthStatus::Degraded, "HTTP 503 — «down»"));
        assert_eq!(verdict.details.value(), Value::Null);
        // The engine writes a lone surrogate (U+D800) as these three bytes, which are not UTF-8.
        let verdict = from_wire(&triple, &result_with_reason(b"a\xed\xa0\x80b")).unwrap();
        assert_eq!(&*verdict.reason, "a\u{fffd}\u{fffd}\u{fffd}b");
    }
}
