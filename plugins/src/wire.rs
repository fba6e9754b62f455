//! The compact binary form of JSON values that call arguments and results travel in
//! between the host and a worker. It is written straight from a `serde_json::Value` on one
//! side and straight into engine objects on the other, so neither side prints or tokenises
//! JSON text on the hot path (measured: the engine's JSON parser was the largest cost of a
//! call, ahead of the script itself).
//!
//! A value is one tag byte and its payload: numbers as little-endian `i32` or `f64`,
//! strings as a `u32` byte length and UTF-8 bytes, arrays as their items and objects as
//! (string key, value) pairs, both closed by [`END`]. Containers nest at most
//! [`MAX_DEPTH`] deep on either side, so no reader recurses without bound.

use serde_json::{Map, Number, Value};

pub const NULL: u8 = 0;
pub const FALSE: u8 = 1;
pub const TRUE: u8 = 2;
pub const INT: u8 = 3;
pub const FLOAT: u8 = 4;
pub const STRING: u8 = 5;
pub const ARRAY: u8 = 6;
pub const OBJECT: u8 = 7;
pub const END: u8 = 8;

/// Deepest nesting of arrays and objects either side writes or reads.
pub const MAX_DEPTH: usize = 128;

/// Why bytes are not a value.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error("the value ends early")]
    Truncated,
    #[error("unknown tag {0}")]
    Tag(u8),
}

/// Appends `value`; fails only past [`MAX_DEPTH`], and then appends nothing.
pub fn encode(value: &Value, out: &mut Vec<u8>) -> Result<(), WireError> {
    let start = out.len();
    if encode_nested(value, out) > MAX_DEPTH {
        out.truncate(start);
        return Err(WireError::TooDeep);
    }
    Ok(())
}

/// Appends `value` and returns how deep its containers nest (0 for a scalar, 1 for a flat
/// array or object). Past [`MAX_DEPTH`] levels the rest is written as null and the nesting
/// returned is `MAX_DEPTH + 1`: a well-formed value that every reader refuses to take as a
/// call's argument, so the recursion stays bounded and the cut part is never seen.
pub fn encode_nested(value: &Value, out: &mut Vec<u8>) -> usize {
    encode_at(value, out, 0)
}

fn encode_at(value: &Value, out: &mut Vec<u8>, depth: usize) -> usize {
    match value {
        Value::Null => out.push(NULL),
        Value::Bool(b) => out.push(if *b { TRUE } else { FALSE }),
        Value::Number(n) => match n.as_i64().and_then(|i| i32::try_from(i).ok()) {
            Some(i) => write_int(out, i),
            None => write_float(out, n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => write_str(out, s),
        Value::Array(items) => {
            if depth >= MAX_DEPTH {
                return cut(out, depth);
            }
            out.push(ARRAY);
            let inner = items.iter().map(|item| encode_at(item, out, depth + 1)).max();
            out.push(END);
            return 1 + inner.unwrap_or(0);
        }
        Value::Object(map) => {
            if depth >= MAX_DEPTH {
                return cut(out, depth);
            }
            out.push(OBJECT);
            let inner = map
                .iter()
                .map(|(key, item)| {
                    write_str(out, key);
                    encode_at(item, out, depth + 1)
                })
                .max();
            out.push(END);
            return 1 + inner.unwrap_or(0);
        }
    }
    0
}

/// A container too deep to write, at `depth`: null in its place, and a nesting that puts
/// the whole value one level past [`MAX_DEPTH`].
fn cut(out: &mut Vec<u8>, depth: usize) -> usize {
    out.push(NULL);
    MAX_DEPTH + 1 - depth
}

pub fn write_int(out: &mut Vec<u8>, i: i32) {
    out.push(INT);
    out.extend_from_slice(&i.to_le_bytes());
}

pub fn write_float(out: &mut Vec<u8>, f: f64) {
    out.push(FLOAT);
    out.extend_from_slice(&f.to_le_bytes());
}

pub fn write_str(out: &mut Vec<u8>, s: &str) {
    write_bytes(out, s.as_bytes());
}

/// A string given as bytes (the engine's UTF-8 may hold lone surrogates; readers replace them).
pub fn write_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(STRING);
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// Reads the fixed-size and length-prefixed parts of the format.
#[derive(Clone)]
pub struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes }
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// The bytes not read yet.
    pub fn rest(&self) -> &'a [u8] {
        self.bytes
    }

    pub fn u8(&mut self) -> Result<u8, WireError> {
        let (&first, rest) = self.bytes.split_first().ok_or(WireError::Truncated)?;
        self.bytes = rest;
        Ok(first)
    }

    pub fn peek(&self) -> Result<u8, WireError> {
        self.bytes.first().copied().ok_or(WireError::Truncated)
    }

    pub fn take(&mut self, len: usize) -> Result<&'a [u8], WireError> {
        if self.bytes.len() < len {
            return Err(WireError::Truncated);
        }
        let (head, rest) = self.bytes.split_at(len);
        self.bytes = rest;
        Ok(head)
    }

    pub fn u32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("four bytes")))
    }

    pub fn i32(&mut self) -> Result<i32, WireError> {
        Ok(i32::from_le_bytes(self.take(4)?.try_into().expect("four bytes")))
    }

    pub fn f64(&mut self) -> Result<f64, WireError> {
        Ok(f64::from_le_bytes(self.take(8)?.try_into().expect("eight bytes")))
    }

    /// The bytes of a string whose tag was already read.
    pub fn str_body(&mut self) -> Result<&'a [u8], WireError> {
        let len = self.u32()? as usize;
        self.take(len)
    }

    /// An object key: a string with its tag, or `None` at the object's end.
    pub fn key(&mut self) -> Result<Option<&'a [u8]>, WireError> {
        match self.u8()? {
            END => Ok(None),
            STRING => self.str_body().map(Some),
            other => Err(WireError::Tag(other)),
        }
    }
}

/// Reads one value as a `serde_json::Value` (the host's side of results).
pub fn decode(bytes: &[u8]) -> Result<Value, WireError> {
    decode_at(&mut Reader::new(bytes), 0)
}

fn decode_at(reader: &mut Reader<'_>, depth: usize) -> Result<Value, WireError> {
    Ok(match reader.u8()? {
        NULL => Value::Null,
        FALSE => Value::Bool(false),
        TRUE => Value::Bool(true),
        INT => Value::from(reader.i32()?),
        FLOAT => float_value(reader.f64()?),
        STRING => Value::String(String::from_utf8_lossy(reader.str_body()?).into_owned()),
        ARRAY => {
            if depth >= MAX_DEPTH {
                return Err(WireError::TooDeep);
            }
            let mut items = Vec::new();
            while reader.peek()? != END {
                items.push(decode_at(reader, depth + 1)?);
            }
            reader.u8()?;
            Value::Array(items)
        }
        OBJECT => {
            if depth >= MAX_DEPTH {
                return Err(WireError::TooDeep);
            }
            let mut map = Map::new();
            while let Some(key) = reader.key()? {
                let key = String::from_utf8_lossy(key).into_owned();
                map.insert(key, decode_at(reader, depth + 1)?);
            }
            Value::Object(map)
        }
        other => return Err(WireError::Tag(other)),
    })
}

/// Steps over the next value of `reader` (a member of a container already opened), checked
/// as [`decode`] checks a member at that depth, but without building it: what keeps a status check's details
/// in the wire form costs no `Value` tree.
pub fn skip_value(reader: &mut Reader<'_>) -> Result<(), WireError> {
    // The containers open inside the value: how many, and bit i set when the i-th is an
    // object (MAX_DEPTH levels fit in the bits, as the depth check below keeps them).
    let (mut open, mut objects) = (0usize, 0u128);
    loop {
        let in_object = open > 0 && (objects >> (open - 1)) & 1 == 1;
        let closed = if in_object {
            reader.key()?.is_none()
        } else if open > 0 && reader.peek()? == END {
            reader.u8()?;
            true
        } else {
            false
        };
        if closed {
            open -= 1;
        } else {
            match reader.u8()? {
                NULL | FALSE | TRUE => {}
                INT => drop(reader.take(4)?),
                FLOAT => drop(reader.take(8)?),
                STRING => drop(reader.str_body()?),
                tag @ (ARRAY | OBJECT) => {
                    // The value itself sits at depth 1, as a container's member.
                    if 1 + open >= MAX_DEPTH {
                        return Err(WireError::TooDeep);
                    }
                    objects = if tag == OBJECT { objects | 1 << open } else { objects & !(1 << open) };
                    open += 1;
                }
                other => return Err(WireError::Tag(other)),
            }
        }
        if open == 0 {
            return Ok(());
        }
    }
}

/// Integral floats read back as integers, as `JSON.stringify` would have written them;
/// non-finite ones as null.
fn float_value(f: f64) -> Value {
    if f.fract() == 0.0 && f.abs() < 9.0e15 {
        Value::from(f as i64)
    } else {
        Number::from_f64(f).map_or(Value::Null, Value::Number)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn values_round_trip() {
        let value = json!({
            "http": {"status": 200, "headers": {"a": "b"}, "body": "é\"\n", "json": null, "latency_ms": 3.5},
            "list": [true, false, null, -7, 4_000_000_000u64, 1e300, []],
            "": {},
        });
        let mut bytes = Vec::new();
        encode(&value, &mut bytes).unwrap();
        assert_eq!(decode(&bytes).unwrap(), value);
    }

    #[test]
    fn skipping_a_value_checks_it_as_reading_it_does() {
        let values = [
            json!({"http": {"status": 200, "headers": {"a": "b"}, "json": null}, "list": [[], {}, [1, [2.5]]]}),
            json!([{"": [true, false]}, "x"]),
            json!("plain"),
            json!(null),
        ];
        for value in values {
            let mut bytes = Vec::new();
            encode(&value, &mut bytes).unwrap();
            bytes.push(TRUE);
            let mut reader = Reader::new(&bytes);
            skip_value(&mut reader).unwrap();
            assert_eq!(reader.rest(), [TRUE], "{value}");
            for cut in 0..bytes.len() - 1 {
                let (mut skip, mut read) = (Reader::new(&bytes[..cut]), Reader::new(&bytes[..cut]));
                assert_eq!(
                    skip_value(&mut skip).is_err(),
                    decode_at(&mut read, 1).is_err(),
                    "{value} cut at {cut}"
                );
            }
        }
        // As deep as the encoder goes: one level too deep for a container's member.
        let mut deep = json!(1);
        for _ in 0..MAX_DEPTH {
            deep = json!([deep]);
        }
        let mut bytes = Vec::new();
        encode(&deep, &mut bytes).unwrap();
        assert!(matches!(skip_value(&mut Reader::new(&bytes)), Err(WireError::TooDeep)));
        assert!(matches!(decode_at(&mut Reader::new(&bytes), 1), Err(WireError::TooDeep)));
        assert!(skip_value(&mut Reader::new(&bytes[1..])).is_ok());
        assert!(decode_at(&mut Reader::new(&bytes[1..]), 1).is_ok());
        assert!(matches!(skip_value(&mut Reader::new(&[OBJECT, INT])), Err(WireError::Tag(INT))));
        assert!(matches!(skip_value(&mut Reader::new(&[42])), Err(WireError::Tag(42))));
    }

    #[test]
    fn nesting_and_truncation_are_refused() {
        let mut deep = json!(1);
        for _ in 0..MAX_DEPTH + 1 {
            deep = json!([deep]);
        }
        assert!(matches!(encode(&deep, &mut Vec::new()), Err(WireError::TooDeep)));
        let mut bytes = vec![ARRAY; MAX_DEPTH + 1];
        bytes.push(END);
        assert!(matches!(decode(&bytes), Err(WireError::TooDeep)));
        let mut bytes = Vec::new();
        encode(&json!({"a": "text"}), &mut bytes).unwrap();
        bytes.pop();
        assert!(matches!(decode(&bytes), Err(WireError::Truncated)));
        assert!(matches!(decode(&[42]), Err(WireError::Tag(42))));
    }
}
