//! Writes values out of the engine without building intermediate trees: a returned value
//! is written, in the [`crate::wire`] form or as JSON text, by walking it with an explicit
//! stack: depth and size are bounded, cycles are rejected, and a throwing getter surfaces as
//! the engine error it raised. (Arguments go in through [`super::args`].)

use rquickjs::{Array, Atom, Ctx, Object, Type, Value, qjs};

use crate::wire;

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

/// What a returned value is written into: JSON text or the wire form.
pub trait Sink {
    fn null(&mut self);
    fn bool(&mut self, b: bool);
    fn int(&mut self, i: i32);
    /// A finite number.
    fn float(&mut self, f: f64);
    fn string(&mut self, s: &[u8]);
    fn open(&mut self, array: bool);
    /// Before each item of an array or key of an object after the first.
    fn separator(&mut self);
    fn key(&mut self, key: &[u8]);
    fn close(&mut self, array: bool);
    fn len(&self) -> usize;
}

/// JSON text, as `JSON.stringify` writes it.
pub struct JsonText(pub Vec<u8>);

impl Sink for JsonText {
    fn null(&mut self) {
        self.0.extend_from_slice(b"null");
    }
    fn bool(&mut self, b: bool) {
        self.0.extend_from_slice(if b { b"true" } else { b"false" });
    }
    fn int(&mut self, i: i32) {
        self.0.extend_from_slice(i.to_string().as_bytes());
    }
    fn float(&mut self, f: f64) {
        if f.fract() == 0.0 && f.abs() < 9.0e15 {
            self.0.extend_from_slice((f as i64).to_string().as_bytes());
        } else {
            // Writing into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut self.0, &f);
        }
    }
    fn string(&mut self, s: &[u8]) {
        // Writing into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut self.0, &*String::from_utf8_lossy(s));
    }
    fn open(&mut self, array: bool) {
        self.0.push(if array { b'[' } else { b'{' });
    }
    fn separator(&mut self) {
        self.0.push(b',');
    }
    fn key(&mut self, key: &[u8]) {
        self.string(key);
        self.0.push(b':');
    }
    fn close(&mut self, array: bool) {
        self.0.push(if array { b']' } else { b'}' });
    }
    fn len(&self) -> usize {
        self.0.len()
    }
}

/// The [`crate::wire`] form.
pub struct WireBytes(pub Vec<u8>);

impl Sink for WireBytes {
    fn null(&mut self) {
        self.0.push(wire::NULL);
    }
    fn bool(&mut self, b: bool) {
        self.0.push(if b { wire::TRUE } else { wire::FALSE });
    }
    fn int(&mut self, i: i32) {
        wire::write_int(&mut self.0, i);
    }
    fn float(&mut self, f: f64) {
        wire::write_float(&mut self.0, f);
    }
    fn string(&mut self, s: &[u8]) {
        wire::write_bytes(&mut self.0, s);
    }
    fn open(&mut self, array: bool) {
        self.0.push(if array { wire::ARRAY } else { wire::OBJECT });
    }
    fn separator(&mut self) {}
    fn key(&mut self, key: &[u8]) {
        wire::write_bytes(&mut self.0, key);
    }
    fn close(&mut self, _array: bool) {
        self.0.push(wire::END);
    }
    fn len(&self) -> usize {
        self.0.len()
    }
}

/// A container being written while its children are converted.
enum Frame<'js> {
    Array { source: Array<'js>, next: usize, len: usize },
    Object { source: Object<'js>, keys: Vec<Atom<'js>>, next: usize, wrote: bool },
}

/// Writes a returned value as JSON text (see [`write`]).
pub fn to_json(value: Value<'_>) -> Result<String, Unconvertible> {
    let mut out = JsonText(Vec::with_capacity(256));
    write(value, &mut out)?;
    String::from_utf8(out.0).map_err(|e| Unconvertible::Shape(e.to_string()))
}

/// Writes a returned value the way `JSON.stringify` would see it: functions, symbols and
/// `undefined` are dropped from objects and become `null` in arrays; non-finite numbers
/// become `null`; `BigInt` and promises are refused.
pub fn write(value: Value<'_>, out: &mut impl Sink) -> Result<(), Unconvertible> {
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
            if !write_leaf(&value, out)? {
                if stack.len() >= MAX_DEPTH {
                    return Err(Unconvertible::Shape(format!("nested deeper than {MAX_DEPTH} levels")));
                }
                let id = object_id(&value);
                if path.contains(&id) {
                    return Err(Unconvertible::Shape("the value contains a cycle".into()));
                }
                path.push(id);
                stack.push(open(value, out)?);
            }
            if out.len() > MAX_TEXT_BYTES {
                return Err(Unconvertible::Shape(format!("more than {MAX_TEXT_BYTES} bytes of JSON")));
            }
        }
        let Some(top) = stack.last_mut() else { return Ok(()) };
        // Advance the innermost container: hand out its next child, or close it.
        match top {
            Frame::Array { source, next, len } => {
                if *next < *len {
                    let child: Value = source.get(*next)?;
                    if *next > 0 {
                        out.separator();
                    }
                    *next += 1;
                    if skipped(&child) {
                        out.null();
                    } else {
                        current = Some(child);
                    }
                    continue;
                }
                out.close(true);
            }
            Frame::Object { source, keys, next, wrote } => {
                while *next < keys.len() && current.is_none() {
                    let child: Value = source.get(keys[*next].clone())?;
                    if !skipped(&child) {
                        if *wrote {
                            out.separator();
                        }
                        with_string_text(&keys[*next].to_value()?, |key| out.key(key))?;
                        *wrote = true;
                        current = Some(child);
                    }
                    *next += 1;
                }
                if current.is_some() {
                    continue;
                }
                out.close(false);
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
fn write_leaf(value: &Value<'_>, out: &mut impl Sink) -> Result<bool, Unconvertible> {
    match value.type_of() {
        Type::Null
        | Type::Undefined
        | Type::Uninitialized
        | Type::Symbol
        | Type::Function
        | Type::Constructor => out.null(),
        Type::Bool => out.bool(value.as_bool().unwrap_or_default()),
        Type::Int => out.int(value.as_int().unwrap_or_default()),
        Type::Float => match value.as_float() {
            Some(f) if f.is_finite() => out.float(f),
            _ => out.null(),
        },
        Type::String => with_string_text(value, |text| out.string(text))?,
        Type::BigInt => return Err(Unconvertible::Shape("a BigInt cannot be represented in JSON".into())),
        Type::Promise => {
            return Err(Unconvertible::Shape("a Promise; plugin functions must return plain values".into()));
        }
        Type::Array | Type::Object | Type::Exception | Type::Proxy => return Ok(false),
        other => return Err(Unconvertible::Shape(format!("a value of type {other}"))),
    }
    Ok(true)
}

/// Hands the UTF-8 bytes of a string value to `f` without copying them into a `String`.
fn with_string_text<R>(value: &Value<'_>, f: impl FnOnce(&[u8]) -> R) -> rquickjs::Result<R> {
    let ctx = value.ctx().as_raw().as_ptr();
    let mut len = 0usize;
    // SAFETY: the engine returns a buffer of `len` bytes it owns until JS_FreeCString.
    let ptr = unsafe { qjs::JS_ToCStringLen(ctx, &mut len as *mut usize as *mut _, value.as_raw()) };
    if ptr.is_null() {
        return Err(rquickjs::Error::Exception);
    }
    let result = f(unsafe { std::slice::from_raw_parts(ptr.cast::<u8>(), len) });
    unsafe { qjs::JS_FreeCString(ctx, ptr) };
    Ok(result)
}

fn open<'js>(value: Value<'js>, out: &mut impl Sink) -> Result<Frame<'js>, Unconvertible> {
    if let Some(array) = value.as_array() {
        out.open(true);
        return Ok(Frame::Array { source: array.clone(), next: 0, len: array.len() });
    }
    let object = value.into_object().expect("only objects reach open");
    let keys = object.keys::<Atom>().collect::<rquickjs::Result<Vec<_>>>()?;
    out.open(false);
    Ok(Frame::Object { source: object, keys, next: 0, wrote: false })
}

fn object_id(value: &Value<'_>) -> usize {
    // SAFETY: reads the pointer out of an object value without touching what it points to.
    unsafe { rquickjs::qjs::JS_VALUE_GET_PTR(value.as_raw()) as usize }
}
