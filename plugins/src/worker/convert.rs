//! Moves values between the wire and the engine without building intermediate trees.
//!
//! Into the engine, each call's arguments arrive as one JSON array and are parsed by the
//! engine's own JSON parser straight into engine values (the text is the wire format
//! already; decoding it into Rust values first and rebuilding them was measured to cost
//! more than twice as much). Out of the engine, a returned value is written as JSON text by
//! walking it with an explicit stack: depth and size are bounded, cycles are rejected, and
//! a throwing getter surfaces as the engine error it raised.

use rquickjs::{Array, Ctx, Object, Type, Value};

/// Deepest nesting and most values a script may return.
pub const MAX_DEPTH: usize = 64;
pub const MAX_NODES: usize = 200_000;
pub const MAX_TEXT_BYTES: usize = 8 * 1024 * 1024;

/// Why a returned value cannot become JSON.
#[derive(Debug)]
pub enum Unconvertible {
    /// The engine raised while reading it (a throwing getter, a revoked proxy, the limits).
    Engine(rquickjs::Error),
    Shape(String),
}

impl From<rquickjs::Error> for Unconvertible {
    fn from(e: rquickjs::Error) -> Self {
        Unconvertible::Engine(e)
    }
}

/// Parses JSON text into an engine value.
pub fn parse<'js>(ctx: &Ctx<'js>, text: &str) -> rquickjs::Result<Value<'js>> {
    ctx.json_parse(text)
}

/// A container being written while its children are converted.
enum Frame<'js> {
    Array { source: Array<'js>, next: usize, len: usize },
    Object { source: Object<'js>, keys: Vec<String>, next: usize, wrote: bool },
}

/// Writes a returned value as JSON the way `JSON.stringify` would see it: functions,
/// symbols and `undefined` are dropped from objects and become `null` in arrays;
/// non-finite numbers become `null`; `BigInt` and promises are refused.
pub fn to_json(value: Value<'_>) -> Result<String, Unconvertible> {
    let mut out: Vec<u8> = Vec::with_capacity(256);
    let mut nodes = 0usize;
    let mut stack: Vec<Frame<'_>> = Vec::new();
    // Objects on the path from the root to the current frame: meeting one again is a cycle.
    let mut path: Vec<usize> = Vec::new();
    let mut current = Some(value);
    loop {
        if let Some(value) = current.take() {
            nodes += 1;
            if nodes > MAX_NODES {
                return Err(Unconvertible::Shape(format!("more than {MAX_NODES} values")));
            }
            if !write_leaf(&value, &mut out)? {
                if stack.len() >= MAX_DEPTH {
                    return Err(Unconvertible::Shape(format!("nested deeper than {MAX_DEPTH} levels")));
                }
                let id = object_id(&value);
                if path.contains(&id) {
                    return Err(Unconvertible::Shape("the value contains a cycle".into()));
                }
                path.push(id);
                stack.push(open(value, &mut out)?);
            }
            if out.len() > MAX_TEXT_BYTES {
                return Err(Unconvertible::Shape(format!("more than {MAX_TEXT_BYTES} bytes of JSON")));
            }
        }
        let Some(top) = stack.last_mut() else {
            return String::from_utf8(out).map_err(|e| Unconvertible::Shape(e.to_string()));
        };
        // Advance the innermost container: hand out its next child, or close it.
        match top {
            Frame::Array { source, next, len } => {
                if *next < *len {
                    let child: Value = source.get(*next)?;
                    if *next > 0 {
                        out.push(b',');
                    }
                    *next += 1;
                    if skipped(&child) {
                        out.extend_from_slice(b"null");
                    } else {
                        current = Some(child);
                    }
                    continue;
                }
                out.push(b']');
            }
            Frame::Object { source, keys, next, wrote } => {
                while *next < keys.len() && current.is_none() {
                    let child: Value = source.get(keys[*next].as_str())?;
                    if !skipped(&child) {
                        if *wrote {
                            out.push(b',');
                        }
                        write_str(&mut out, &keys[*next]);
                        out.push(b':');
                        *wrote = true;
                        current = Some(child);
                    }
                    *next += 1;
                }
                if current.is_some() {
                    continue;
                }
                out.push(b'}');
            }
        }
        stack.pop();
        path.pop();
    }
}

fn skipped(value: &Value<'_>) -> bool {
    matches!(
        value.type_of(),
        Type::Undefined | Type::Uninitialized | Type::Function | Type::Constructor | Type::Symbol
    )
}

/// Writes a non-container value; returns `false` for an array or object.
fn write_leaf(value: &Value<'_>, out: &mut Vec<u8>) -> Result<bool, Unconvertible> {
    match value.type_of() {
        Type::Null
        | Type::Undefined
        | Type::Uninitialized
        | Type::Symbol
        | Type::Function
        | Type::Constructor => out.extend_from_slice(b"null"),
        Type::Bool => {
            out.extend_from_slice(if value.as_bool().unwrap_or_default() { b"true" } else { b"false" })
        }
        Type::Int => out.extend_from_slice(value.as_int().unwrap_or_default().to_string().as_bytes()),
        Type::Float => write_float(out, value.as_float().unwrap_or(f64::NAN)),
        Type::String => {
            let s: String = value.get()?;
            write_str(out, &s);
        }
        Type::BigInt => return Err(Unconvertible::Shape("a BigInt cannot be represented in JSON".into())),
        Type::Promise => {
            return Err(Unconvertible::Shape("a Promise; plugin functions must return plain values".into()));
        }
        Type::Array | Type::Object | Type::Exception | Type::Proxy => return Ok(false),
        other => return Err(Unconvertible::Shape(format!("a value of type {other}"))),
    }
    Ok(true)
}

fn write_float(out: &mut Vec<u8>, f: f64) {
    if !f.is_finite() {
        out.extend_from_slice(b"null");
    } else if f.fract() == 0.0 && f.abs() < 9.0e15 {
        out.extend_from_slice((f as i64).to_string().as_bytes());
    } else {
        // Writing into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, &f);
    }
}

fn write_str(out: &mut Vec<u8>, s: &str) {
    // Writing into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

fn open<'js>(value: Value<'js>, out: &mut Vec<u8>) -> Result<Frame<'js>, Unconvertible> {
    if let Some(array) = value.as_array() {
        out.push(b'[');
        return Ok(Frame::Array { source: array.clone(), next: 0, len: array.len() });
    }
    let object = value.into_object().expect("only objects reach open");
    let keys = object.keys::<String>().collect::<rquickjs::Result<Vec<_>>>()?;
    out.push(b'{');
    Ok(Frame::Object { source: object, keys, next: 0, wrote: false })
}

fn object_id(value: &Value<'_>) -> usize {
    // SAFETY: reads the pointer out of an object value without touching what it points to.
    unsafe { rquickjs::qjs::JS_VALUE_GET_PTR(value.as_raw()) as usize }
}
