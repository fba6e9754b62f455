//! [`WireValue`]: a JSON value handed to the host already in the form workers read (see
//! [`crate::wire`]), and [`ObjectWriter`], which writes one field by field.
//!
//! A status check's arguments are built by the caller anyway (the status crate's fetchers
//! make every observation); written straight into the wire form there, the host only copies
//! their bytes into a batch instead of walking `serde_json::Value` trees and freeing them:
//! that walk was most of the host's cost per http check. An instance's arguments that rarely
//! change are encoded once and shared (a clone is a reference count).

use std::fmt;
use std::sync::Arc;

use serde_json::Value;

use crate::wire::{self, MAX_DEPTH};

/// A JSON value in the wire form, with how deep its containers nest. Cheap to clone.
///
/// Values nested deeper than the wire form allows ([`MAX_DEPTH`] levels) are kept as too
/// deep: the host refuses them as arguments, as it refuses such a `Value`.
#[derive(Clone, PartialEq, Eq)]
pub struct WireValue {
    bytes: Arc<[u8]>,
    nesting: usize,
}

impl WireValue {
    /// Encodes a `serde_json::Value` (for callers that hold one: tests, the dry run).
    pub fn from_value(value: &Value) -> Self {
        let mut bytes = Vec::new();
        let nesting = wire::encode_nested(value, &mut bytes);
        Self { bytes: bytes.into(), nesting }
    }

    /// An object written field by field by `build`, without a `Value` tree:
    ///
    /// ```
    /// use slipway_plugins::WireValue;
    /// let observation = WireValue::object(|o| {
    ///     o.object("tcp", |tcp| {
    ///         tcp.bool("connected", true);
    ///         tcp.int("latency_ms", 1);
    ///     });
    ///     o.null("error");
    /// });
    /// assert_eq!(observation.to_value(), serde_json::json!({"tcp": {"connected": true, "latency_ms": 1}, "error": null}));
    /// ```
    pub fn object(build: impl FnOnce(&mut ObjectWriter<'_>)) -> Self {
        let mut bytes = Vec::with_capacity(256);
        let mut nesting = 0;
        ObjectWriter::open(&mut bytes, 0, &mut nesting, build);
        Self { bytes: bytes.into(), nesting }
    }

    /// The value as a `serde_json::Value` (a too-deep value's innermost containers read as null).
    pub fn to_value(&self) -> Value {
        // Written by this crate's encoder, so always one whole value.
        wire::decode(&self.bytes).unwrap_or(Value::Null)
    }

    /// The encoded bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Whether the value is within the nesting a worker accepts for an argument.
    pub(crate) fn fits(&self) -> bool {
        self.nesting <= MAX_DEPTH
    }
}

impl From<&Value> for WireValue {
    fn from(value: &Value) -> Self {
        Self::from_value(value)
    }
}

impl From<Value> for WireValue {
    fn from(value: Value) -> Self {
        Self::from_value(&value)
    }
}

impl fmt::Debug for WireValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.to_value().fmt(f)
    }
}

/// Writes the fields of one object of a [`WireValue`]. Keys are written as given, so a
/// caller writes each key once, as a JSON object holds it once.
pub struct ObjectWriter<'a> {
    out: &'a mut Vec<u8>,
    /// Containers around this object's fields, the object itself included.
    depth: usize,
    /// The deepest nesting written so far in the whole value.
    nesting: &'a mut usize,
}

impl<'a> ObjectWriter<'a> {
    /// Writes an object at `depth` (containers around it) whose fields `build` writes.
    fn open(
        out: &'a mut Vec<u8>,
        depth: usize,
        nesting: &'a mut usize,
        build: impl FnOnce(&mut ObjectWriter<'_>),
    ) {
        out.push(wire::OBJECT);
        *nesting = (*nesting).max(depth + 1);
        build(&mut ObjectWriter { out: &mut *out, depth: depth + 1, nesting: &mut *nesting });
        out.push(wire::END);
    }

    pub fn null(&mut self, key: &str) {
        wire::write_str(self.out, key);
        self.out.push(wire::NULL);
    }

    pub fn bool(&mut self, key: &str, value: bool) {
        wire::write_str(self.out, key);
        self.out.push(if value { wire::TRUE } else { wire::FALSE });
    }

    /// An integer, written as `serde_json` numbers are: small ones exactly, others as floats.
    pub fn int(&mut self, key: &str, value: i64) {
        wire::write_str(self.out, key);
        match i32::try_from(value) {
            Ok(small) => wire::write_int(self.out, small),
            Err(_) => wire::write_float(self.out, value as f64),
        }
    }

    pub fn float(&mut self, key: &str, value: f64) {
        wire::write_str(self.out, key);
        wire::write_float(self.out, value);
    }

    pub fn str(&mut self, key: &str, value: &str) {
        wire::write_str(self.out, key);
        wire::write_str(self.out, value);
    }

    /// A nested object whose fields `build` writes.
    pub fn object(&mut self, key: &str, build: impl FnOnce(&mut ObjectWriter<'_>)) {
        wire::write_str(self.out, key);
        ObjectWriter::open(self.out, self.depth, self.nesting, build);
    }

    /// A `serde_json::Value` (a parsed body, an object as an API returned it).
    pub fn value(&mut self, key: &str, value: &Value) {
        wire::write_str(self.out, key);
        let inner = wire::encode_nested(value, self.out);
        *self.nesting = (*self.nesting).max(self.depth + inner);
    }

    /// A value encoded before (shared parameters, an object read once for many checks).
    pub fn wire(&mut self, key: &str, value: &WireValue) {
        wire::write_str(self.out, key);
        self.out.extend_from_slice(&value.bytes);
        *self.nesting = (*self.nesting).max(self.depth + value.nesting);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Keys in sorted order: `serde_json`'s maps iterate sorted, so the bytes compare.
    #[test]
    fn written_objects_are_the_bytes_of_the_same_value() {
        let params = WireValue::from_value(&json!({"expect_status": [200, 204], "json": [{"path": "a.b"}]}));
        let written = WireValue::object(|o| {
            o.null("error");
            o.object("http", |h| {
                h.value("body_json", &json!({"status": "ok", "n": [1, 2.5, null]}));
                h.bool("cached", false);
                h.object("headers", |headers| headers.str("content-type", "application/json"));
                h.int("latency_ms", 37);
                h.int("length", 1 << 40);
                h.float("ratio", 0.25);
                h.int("status", -200);
            });
            o.wire("params", &params);
        });
        let value = json!({
            "error": null,
            "http": {
                "body_json": {"status": "ok", "n": [1, 2.5, null]},
                "cached": false,
                "headers": {"content-type": "application/json"},
                "latency_ms": 37,
                "length": 1u64 << 40,
                "ratio": 0.25,
                "status": -200,
            },
            "params": {"expect_status": [200, 204], "json": [{"path": "a.b"}]},
        });
        assert_eq!(written, WireValue::from_value(&value));
        assert_eq!(written.to_value(), value);
        assert_eq!(written.nesting, 4, "params.json[0] is the deepest container");
        assert_eq!(WireValue::object(|_| {}).nesting, 1);
        assert_eq!(WireValue::from_value(&json!(3)).nesting, 0);
    }

    #[test]
    fn nesting_is_counted_through_every_way_of_writing() {
        let mut deep = json!(1);
        for _ in 0..MAX_DEPTH {
            deep = json!([deep]);
        }
        let at_limit = WireValue::from_value(&deep);
        assert!(at_limit.fits());
        assert_eq!(at_limit.to_value(), deep);
        // One more level, by each way of putting a value inside an object.
        let by_value = WireValue::object(|o| o.value("v", &deep));
        let by_wire = WireValue::object(|o| o.wire("v", &at_limit));
        let by_object = WireValue::object(|o| o.object("o", |inner| inner.null("x")));
        assert!(!by_value.fits() && !by_wire.fits(), "{} {}", by_value.nesting, by_wire.nesting);
        assert_eq!(by_value, by_wire);
        assert!(by_object.fits());
        // Too deep from the start: kept as too deep, cut where the limit is, still readable.
        let too_deep = WireValue::from_value(&json!([deep]));
        assert!(!too_deep.fits());
        assert_eq!(too_deep.nesting, MAX_DEPTH + 1);
        let mut cut = json!(null);
        for _ in 0..MAX_DEPTH {
            cut = json!([cut]);
        }
        assert_eq!(too_deep.to_value(), cut);
        assert!(matches!(wire::encode(&json!([deep]), &mut Vec::new()), Err(wire::WireError::TooDeep)));
    }
}
