//! Moves values between JSON and the engine without a JSON-text round trip.
//!
//! Into the engine the input is a decoded `serde_json::Value`, whose depth serde_json
//! already bounds (128), so plain recursion is safe there. Out of the engine the value is
//! whatever a script returned, so that direction walks an explicit stack, bounds depth and
//! size, rejects cycles and reports getters that throw instead of recursing.

use std::collections::HashSet;

use rquickjs::{Array, Ctx, Object, String as JsString, Type, Value};
use serde_json::{Map, Number, Value as Json};

/// Deepest nesting and most values a script may return.
pub const MAX_DEPTH: usize = 64;
pub const MAX_NODES: usize = 200_000;
pub const MAX_STRING_BYTES: usize = 8 * 1024 * 1024;

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

pub fn to_js<'js>(ctx: &Ctx<'js>, value: &Json) -> rquickjs::Result<Value<'js>> {
    Ok(match value {
        Json::Null => Value::new_null(ctx.clone()),
        Json::Bool(b) => Value::new_bool(ctx.clone(), *b),
        Json::Number(n) => match n.as_i64() {
            Some(i) if i32::try_from(i).is_ok() => Value::new_int(ctx.clone(), i as i32),
            _ => Value::new_number(ctx.clone(), n.as_f64().unwrap_or(f64::NAN)),
        },
        Json::String(s) => JsString::from_str(ctx.clone(), s)?.into_value(),
        Json::Array(items) => {
            let array = Array::new(ctx.clone())?;
            for (i, item) in items.iter().enumerate() {
                array.set(i, to_js(ctx, item)?)?;
            }
            array.into_value()
        }
        Json::Object(map) => {
            let object = Object::new(ctx.clone())?;
            for (key, item) in map {
                object.set(key.as_str(), to_js(ctx, item)?)?;
            }
            object.into_value()
        }
    })
}

/// A container being filled while its children are converted.
enum Frame<'js> {
    Array { source: Array<'js>, next: usize, items: Vec<Json> },
    Object { source: Object<'js>, keys: Vec<String>, next: usize, map: Map<String, Json> },
}

impl Frame<'_> {
    fn finish(self) -> Json {
        match self {
            Frame::Array { items, .. } => Json::Array(items),
            Frame::Object { map, .. } => Json::Object(map),
        }
    }
}

/// Converts a returned value the way `JSON.stringify` would see it: functions, symbols and
/// `undefined` are dropped from objects and become `null` in arrays; non-finite numbers
/// become `null`; `BigInt` is refused.
pub fn from_js<'js>(value: Value<'js>) -> Result<Json, Unconvertible> {
    let mut nodes = 0usize;
    let mut bytes = 0usize;
    let mut stack: Vec<Frame<'js>> = Vec::new();
    // Objects on the path from the root to the current frame: meeting one again is a cycle.
    let mut path: HashSet<usize> = HashSet::new();
    let mut current = Some(value);
    loop {
        if let Some(value) = current.take() {
            nodes += 1;
            if nodes > MAX_NODES {
                return Err(Unconvertible::Shape(format!("more than {MAX_NODES} values")));
            }
            match leaf(&value, &mut bytes)? {
                Some(json) => {
                    if let Some(done) = push_child(&mut stack, json) {
                        return Ok(done);
                    }
                }
                None => {
                    if stack.len() >= MAX_DEPTH {
                        return Err(Unconvertible::Shape(format!("nested deeper than {MAX_DEPTH} levels")));
                    }
                    let id = object_id(&value);
                    if !path.insert(id) {
                        return Err(Unconvertible::Shape("the value contains a cycle".into()));
                    }
                    stack.push(open(value)?);
                }
            }
        }
        // Advance the innermost container: either hand out its next child or close it.
        let Some(top) = stack.last_mut() else { unreachable!("a root leaf returned above") };
        match top {
            Frame::Array { source, next, items } => {
                if *next < source.len() {
                    let child: Value = source.get(*next)?;
                    *next += 1;
                    if skipped(&child) {
                        items.push(Json::Null);
                    } else {
                        current = Some(child);
                    }
                    continue;
                }
            }
            Frame::Object { source, keys, next, .. } => {
                if *next < keys.len() {
                    let child: Value = source.get(keys[*next].as_str())?;
                    *next += 1;
                    if skipped(&child) {
                        continue;
                    }
                    current = Some(child);
                    continue;
                }
            }
        }
        let frame = stack.pop().expect("the top frame exists");
        path.remove(&frame_id(&frame));
        if let Some(done) = push_child(&mut stack, frame.finish()) {
            return Ok(done);
        }
    }
}

/// Adds a finished child to the innermost container; returns the root when there is none.
fn push_child(stack: &mut [Frame<'_>], json: Json) -> Option<Json> {
    match stack.last_mut() {
        None => Some(json),
        Some(Frame::Array { items, .. }) => {
            items.push(json);
            None
        }
        Some(Frame::Object { keys, next, map, .. }) => {
            map.insert(keys[*next - 1].clone(), json);
            None
        }
    }
}

fn skipped(value: &Value<'_>) -> bool {
    matches!(
        value.type_of(),
        Type::Undefined | Type::Uninitialized | Type::Function | Type::Constructor | Type::Symbol
    )
}

/// Converts a non-container value, or returns `None` for an array or object.
fn leaf(value: &Value<'_>, bytes: &mut usize) -> Result<Option<Json>, Unconvertible> {
    Ok(Some(match value.type_of() {
        Type::Null | Type::Undefined | Type::Uninitialized => Json::Null,
        Type::Bool => Json::Bool(value.as_bool().unwrap_or_default()),
        Type::Int => Json::from(value.as_int().unwrap_or_default()),
        Type::Float => float(value.as_float().unwrap_or(f64::NAN)),
        Type::String => {
            let s: String = value.get()?;
            *bytes += s.len();
            if *bytes > MAX_STRING_BYTES {
                return Err(Unconvertible::Shape(format!("strings larger than {MAX_STRING_BYTES} bytes")));
            }
            Json::String(s)
        }
        Type::BigInt => return Err(Unconvertible::Shape("a BigInt cannot be represented in JSON".into())),
        Type::Symbol | Type::Function | Type::Constructor => Json::Null,
        Type::Promise => {
            return Err(Unconvertible::Shape("a Promise; plugin functions must return plain values".into()));
        }
        Type::Array | Type::Object | Type::Exception | Type::Proxy => return Ok(None),
        other => return Err(Unconvertible::Shape(format!("a value of type {other}"))),
    }))
}

fn float(f: f64) -> Json {
    if f.fract() == 0.0 && f.abs() < 9.0e15 {
        Json::from(f as i64)
    } else {
        Number::from_f64(f).map_or(Json::Null, Json::Number)
    }
}

fn open<'js>(value: Value<'js>) -> Result<Frame<'js>, Unconvertible> {
    if let Some(array) = value.as_array() {
        return Ok(Frame::Array { source: array.clone(), next: 0, items: Vec::with_capacity(array.len()) });
    }
    let object = value.into_object().expect("only objects reach open");
    let keys = object.keys::<String>().collect::<rquickjs::Result<Vec<_>>>()?;
    Ok(Frame::Object { map: Map::with_capacity(keys.len()), source: object, keys, next: 0 })
}

fn object_id(value: &Value<'_>) -> usize {
    // SAFETY: reads the pointer out of an object value without touching what it points to.
    unsafe { rquickjs::qjs::JS_VALUE_GET_PTR(value.as_raw()) as usize }
}

fn frame_id(frame: &Frame<'_>) -> usize {
    match frame {
        Frame::Array { source, .. } => object_id(source.as_value()),
        Frame::Object { source, .. } => object_id(source.as_value()),
    }
}
