//! The kind interfaces' return contracts, checked on every call, and a status check's
//! result read into a [`CheckVerdict`].

use std::borrow::Cow;

use serde_json::Value;

use crate::error::Error;
use crate::model::CheckVerdict;
use crate::triple::{HealthStatus, PluginTriple, ScriptKind};
use crate::wire::{self, Reader};

/// Checks a generic call's result against its kind's interface.
pub fn check_shape(triple: &PluginTriple, function: &str, result: &Value) -> Result<(), Error> {
    match (triple.kind, function) {
        (ScriptKind::Status, "check") => verdict(triple, result.clone()).map(|_| ()),
        (ScriptKind::Component, "plan" | "package") | (ScriptKind::Trigger, "parse")
            if !result.is_object() =>
        {
            Err(wrong_shape(triple, function, format!("expected an object, got {}", kind_of(result))))
        }
        _ => Ok(()),
    }
}

/// A status check's result in the wire form as a verdict, with its details still in the
/// wire form (what the memo keeps).
pub fn from_wire<'a>(triple: &PluginTriple, bytes: &'a [u8]) -> Result<(CheckVerdict, Cow<'a, [u8]>), Error> {
    if let Some((status, reason, details, details_wire)) = well_formed(bytes) {
        return Ok((CheckVerdict { status, reason, details, triple: triple.clone() }, details_wire.into()));
    }
    // Anything unusual takes the general path, which says what is wrong with it.
    let value = wire::decode(bytes).map_err(|e| wrong_shape(triple, "check", e.to_string()))?;
    let verdict = verdict(triple, value)?;
    let mut details = Vec::new();
    wire::encode(&verdict.details, &mut details).map_err(|e| wrong_shape(triple, "check", e.to_string()))?;
    Ok((verdict, details.into()))
}

/// Reads `{status, reason, details}` straight from the wire form, without a `Value` for the
/// whole result; `None` when the result is anything else.
fn well_formed(bytes: &[u8]) -> Option<(HealthStatus, String, Value, &[u8])> {
    let mut reader = Reader::new(bytes);
    if reader.u8().ok()? != wire::OBJECT {
        return None;
    }
    let (mut status, mut reason, mut details) = (None, String::new(), None);
    while let Some(key) = reader.key().ok()? {
        match key {
            b"status" if reader.u8().ok()? == wire::STRING => {
                status = Some(std::str::from_utf8(reader.str_body().ok()?).ok()?.parse().ok()?);
            }
            b"reason" => match reader.u8().ok()? {
                wire::NULL => reason.clear(),
                wire::STRING => reason = String::from_utf8_lossy(reader.str_body().ok()?).into_owned(),
                _ => return None,
            },
            b"details" => {
                let start = reader.rest();
                let value = wire::read_value(&mut reader).ok()?;
                details = Some((value, &start[..start.len() - reader.len()]));
            }
            b"status" => return None,
            _ => {
                wire::read_value(&mut reader).ok()?;
            }
        }
    }
    let (details, details_wire) = details.unwrap_or((Value::Null, &[wire::NULL]));
    Some((status?, reason, details, details_wire))
}

/// A status check's result as a verdict, or what is wrong with it.
pub fn verdict(triple: &PluginTriple, value: Value) -> Result<CheckVerdict, Error> {
    let Value::Object(mut map) = value else {
        return Err(wrong_shape(
            triple,
            "check",
            format!("expected {{status, reason, details}}, got {}", kind_of(&value)),
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
    let reason = match map.remove("reason") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s,
        Some(other) => {
            return Err(wrong_shape(
                triple,
                "check",
                format!("reason must be a string, got {}", kind_of(&other)),
            ));
        }
    };
    let details = map.remove("details").unwrap_or(Value::Null);
    Ok(CheckVerdict { status, reason, details, triple: triple.clone() })
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
