//! Writes values out of the engine without building intermediate trees: a returned value
//! is written, in the [`crate::wire`] form or as JSON text, by walking it with an explicit
//! stack: depth and size are bounded, cycles are rejected, and a throwing getter surfaces as
//! the engine error it raised. (Arguments go in through [`super::args`].)

use rquickjs::{Ctx, Value, qjs};
use smallvec::SmallVec;

use super::key_names::{KeptShape, KeyNames};
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

/// Writes a returned value as JSON text (see [`write`]).
pub fn to_json(value: Value<'_>) -> Result<String, Unconvertible> {
    let mut out = JsonText(Vec::with_capacity(256));
    write(value, &mut out, None)?;
    String::from_utf8(out.0).map_err(|e| Unconvertible::Shape(e.to_string()))
}

/// A container being written while its children are converted; it owns its object and,
/// for an object, the list of its keys.
enum Frame {
    Array { object: qjs::JSValue, next: i64, len: i64 },
    Object { object: qjs::JSValue, keys: Keys, len: u32, next: u32, wrote: bool },
}

/// An object's keys: the engine's list, or the list kept for its shape, with the texts.
enum Keys {
    Engine(*mut qjs::JSPropertyEnum),
    Kept(KeptShape),
}

/// The containers open on the path from the root to the value being written (so also
/// what a cycle would meet again), released however the walk ends.
struct Path {
    ctx: *mut qjs::JSContext,
    /// Inline up to the depth results usually have, so a call's walk allocates nothing.
    frames: SmallVec<[Frame; 8]>,
}

impl Drop for Path {
    fn drop(&mut self) {
        for frame in self.frames.drain(..) {
            frame.release(self.ctx);
        }
    }
}

/// An engine value owned on the Rust side, freed when dropped (the walk's current value,
/// an argument object being built).
pub(super) struct Owned {
    pub(super) ctx: *mut qjs::JSContext,
    pub(super) value: qjs::JSValue,
}

impl Owned {
    /// Takes a value the engine just returned, turning its exception marker into an error.
    fn new(ctx: *mut qjs::JSContext, value: qjs::JSValue) -> Result<Self, Unconvertible> {
        if unsafe { qjs::JS_IsException(value) } {
            return Err(Unconvertible::Engine(rquickjs::Error::Exception));
        }
        Ok(Self { ctx, value })
    }

    pub(super) fn into_raw(self) -> qjs::JSValue {
        let value = self.value;
        std::mem::forget(self);
        value
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        // SAFETY: the value is owned here and released once.
        unsafe { free_value(self.ctx, self.value) };
    }
}

/// Releases a value, without a call into the engine for one that has no reference count
/// (a number, a boolean, `null`): most values a call's conversions let go of are those.
///
/// # Safety
/// As `JS_FreeValue`: the caller owns the reference and releases it once.
pub(super) unsafe fn free_value(ctx: *mut qjs::JSContext, value: qjs::JSValue) {
    // SAFETY: as the caller promises.
    unsafe {
        if qjs::JS_VALUE_HAS_REF_COUNT(value) {
            qjs::JS_FreeValue(ctx, value);
        }
    }
}

/// Writes a returned value the way `JSON.stringify` would see it: functions, symbols and
/// `undefined` are dropped from objects and become `null` in arrays; non-finite numbers
/// become `null`; `BigInt` and promises are refused; `toJSON` is not called (a `Date`
/// becomes `{}`: scripts return plain data). The walk uses the engine's own calls
/// (no wrapper per value, no key list copied), as it runs once per call. Key texts come from
/// `names` when given (a runtime's results repeat their keys).
pub fn write(
    value: Value<'_>,
    out: &mut impl Sink,
    mut names: Option<&mut KeyNames>,
) -> Result<(), Unconvertible> {
    let ctx = value.ctx().as_raw().as_ptr();
    let mut nodes = 0usize;
    let mut path = Path { ctx, frames: SmallVec::new() };
    // SAFETY: a new reference to the root, owned by the walk.
    let mut current = Some(Owned { ctx, value: unsafe { qjs::JS_DupValue(ctx, value.as_raw()) } });
    drop(value);
    loop {
        if let Some(value) = current.take() {
            nodes += 1;
            if nodes > MAX_NODES {
                return Err(Unconvertible::Shape(format!("more than {MAX_NODES} values")));
            }
            if let Some(array) = write_leaf(ctx, value.value, out)? {
                if path.frames.len() >= MAX_DEPTH {
                    return Err(Unconvertible::Shape(format!("nested deeper than {MAX_DEPTH} levels")));
                }
                let id = super::args::object_ptr(value.value);
                if path.frames.iter().any(|f| super::args::object_ptr(f.object()) == id) {
                    return Err(Unconvertible::Shape("the value contains a cycle".into()));
                }
                path.frames.push(open(ctx, value, array, out, names.as_deref_mut())?);
            }
            if out.len() > MAX_TEXT_BYTES {
                return Err(Unconvertible::Shape(format!("more than {MAX_TEXT_BYTES} bytes of JSON")));
            }
        }
        let Some(top) = path.frames.last_mut() else { return Ok(()) };
        // Advance the innermost container: hand out its next child, or close it.
        match top {
            Frame::Array { object, next, len } => {
                if *next < *len {
                    // SAFETY: `object` is alive while its frame is; the child is owned below.
                    let child = Owned::new(ctx, unsafe { qjs::JS_GetPropertyInt64(ctx, *object, *next) })?;
                    if *next > 0 {
                        out.separator();
                    }
                    *next += 1;
                    if skipped(ctx, child.value) {
                        out.null();
                    } else {
                        current = Some(child);
                    }
                    continue;
                }
                out.close(true);
            }
            Frame::Object { object, keys, len, next, wrote } => {
                while *next < *len && current.is_none() {
                    let index = *next as usize;
                    let (atom, kept, slot) = match keys {
                        // SAFETY: the key list holds `len` entries and lives as long as the frame.
                        Keys::Engine(list) => (unsafe { (*list.add(index)).atom }, None, None),
                        Keys::Kept(list) => {
                            let (atom, text) = &list.keys[index];
                            // SAFETY: the list was found for `object`, which the frame holds.
                            (*atom, Some(text), unsafe { list.value(ctx, *object, index) })
                        }
                    };
                    let child = match slot {
                        Some(value) => Owned { ctx, value },
                        None => Owned::new(ctx, unsafe { qjs::JS_GetProperty(ctx, *object, atom) })?,
                    };
                    if !skipped(ctx, child.value) {
                        if *wrote {
                            out.separator();
                        }
                        match (kept, names.as_deref_mut()) {
                            (Some(text), _) => out.key(text),
                            (None, Some(names)) => names
                                .with(ctx, atom, |key| out.key(key))
                                .ok_or(Unconvertible::Engine(rquickjs::Error::Exception))?,
                            (None, None) => with_text(ctx, Text::Key(atom), |key| out.key(key))?,
                        }
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
        if let Some(frame) = path.frames.pop() {
            frame.release(ctx);
        }
    }
}

impl Frame {
    /// Gives the frame's object and key list back to the engine.
    fn release(self, ctx: *mut qjs::JSContext) {
        // SAFETY: each frame owns its object and key list, released once here.
        unsafe {
            match self {
                Frame::Array { object, .. } => qjs::JS_FreeValue(ctx, object),
                Frame::Object { object, keys, len, .. } => {
                    if let Keys::Engine(list) = keys {
                        qjs::JS_FreePropertyEnum(ctx, list, len);
                    }
                    qjs::JS_FreeValue(ctx, object);
                }
            }
        }
    }

    fn object(&self) -> qjs::JSValue {
        match self {
            Frame::Array { object, .. } | Frame::Object { object, .. } => *object,
        }
    }
}

/// What an object leaves out and an array writes as `null`.
fn skipped(ctx: *mut qjs::JSContext, value: qjs::JSValue) -> bool {
    // SAFETY: reads the tag, and asks the engine whether an object is callable.
    match unsafe { qjs::JS_VALUE_GET_NORM_TAG(value) } {
        qjs::JS_TAG_UNDEFINED | qjs::JS_TAG_UNINITIALIZED | qjs::JS_TAG_SYMBOL => true,
        qjs::JS_TAG_OBJECT => unsafe { qjs::JS_IsFunction(ctx, value) },
        _ => false,
    }
}

/// Writes a non-container value; returns `Some(is_array)` for an array or object.
fn write_leaf(
    ctx: *mut qjs::JSContext,
    value: qjs::JSValue,
    out: &mut impl Sink,
) -> Result<Option<bool>, Unconvertible> {
    // SAFETY: each arm reads the payload its tag says the value holds.
    unsafe {
        match qjs::JS_VALUE_GET_NORM_TAG(value) {
            qjs::JS_TAG_NULL | qjs::JS_TAG_UNDEFINED | qjs::JS_TAG_UNINITIALIZED | qjs::JS_TAG_SYMBOL => {
                out.null()
            }
            qjs::JS_TAG_BOOL => out.bool(qjs::JS_VALUE_GET_BOOL(value)),
            qjs::JS_TAG_INT => out.int(qjs::JS_VALUE_GET_INT(value)),
            qjs::JS_TAG_FLOAT64 => match qjs::JS_VALUE_GET_FLOAT64(value) {
                f if f.is_finite() => out.float(f),
                _ => out.null(),
            },
            qjs::JS_TAG_STRING | qjs::JS_TAG_STRING_ROPE => {
                with_text(ctx, Text::Value(value), |text| out.string(text))?
            }
            qjs::JS_TAG_BIG_INT | qjs::JS_TAG_SHORT_BIG_INT => {
                return Err(Unconvertible::Shape("a BigInt cannot be represented in JSON".into()));
            }
            qjs::JS_TAG_OBJECT if qjs::JS_IsFunction(ctx, value) => out.null(),
            qjs::JS_TAG_OBJECT if qjs::JS_IsPromise(value) => {
                return Err(Unconvertible::Shape(
                    "a Promise; plugin functions must return plain values".into(),
                ));
            }
            qjs::JS_TAG_OBJECT => return Ok(Some(qjs::JS_IsArray(value))),
            tag => return Err(Unconvertible::Shape(format!("a value with engine tag {tag}"))),
        }
    }
    Ok(None)
}

/// The text the engine reads into a C string: a string value, or a property key (kept
/// alive by the key list it came from).
pub(super) enum Text {
    Value(qjs::JSValue),
    Key(qjs::JSAtom),
}

/// Hands the UTF-8 bytes of a text to `f` (the engine lends an ASCII string's own bytes;
/// others it converts into a buffer it owns until `JS_FreeCString`).
pub(super) fn with_text<R>(
    ctx: *mut qjs::JSContext,
    text: Text,
    f: impl FnOnce(&[u8]) -> R,
) -> Result<R, Unconvertible> {
    let mut len = 0usize;
    let plen = &mut len as *mut usize;
    // SAFETY: the engine returns a buffer of `len` bytes it keeps until JS_FreeCString.
    let ptr = unsafe {
        match text {
            Text::Value(value) => qjs::JS_ToCStringLen(ctx, plen.cast(), value),
            Text::Key(atom) => qjs::JS_AtomToCStringLen(ctx, plen.cast(), atom),
        }
    };
    if ptr.is_null() {
        return Err(Unconvertible::Engine(rquickjs::Error::Exception));
    }
    // SAFETY: `ptr` holds `len` bytes until it is freed right after `f`.
    let result = f(unsafe { std::slice::from_raw_parts(ptr.cast::<u8>(), len) });
    unsafe { qjs::JS_FreeCString(ctx, ptr) };
    Ok(result)
}

/// Opens a container: its length or its own enumerable string keys, read once (or kept for
/// its shape in `names`).
fn open(
    ctx: *mut qjs::JSContext,
    value: Owned,
    array: bool,
    out: &mut impl Sink,
    names: Option<&mut KeyNames>,
) -> Result<Frame, Unconvertible> {
    let frame = if array {
        let mut len = 0i64;
        // SAFETY: `value` is an array; a throwing `length` getter leaves an exception.
        if unsafe { qjs::JS_GetLength(ctx, value.value, &mut len) } < 0 {
            return Err(Unconvertible::Engine(rquickjs::Error::Exception));
        }
        Frame::Array { object: value.into_raw(), next: 0, len }
    } else if let Some(keys) = names.as_ref().and_then(|names| {
        // SAFETY: `value` is a live object of the walk's runtime.
        unsafe { names.shape_keys(value.value) }
    }) {
        Frame::Object {
            object: value.into_raw(),
            len: keys.keys.len() as u32,
            keys: Keys::Kept(keys),
            next: 0,
            wrote: false,
        }
    } else {
        let (mut keys, mut len) = (std::ptr::null_mut(), 0u32);
        let flags = (qjs::JS_GPN_STRING_MASK | qjs::JS_GPN_ENUM_ONLY) as i32;
        // SAFETY: on success the engine hands over a list of `len` keys, freed by the frame.
        if unsafe { qjs::JS_GetOwnPropertyNames(ctx, &mut keys, &mut len, value.value, flags) } < 0 {
            return Err(Unconvertible::Engine(rquickjs::Error::Exception));
        }
        if let Some(names) = names {
            // SAFETY: the engine's list of `len` keys just read from `value`.
            let list =
                if len == 0 { &[][..] } else { unsafe { std::slice::from_raw_parts(keys, len as usize) } };
            unsafe { names.learn_shape(ctx, value.value, list) };
        }
        Frame::Object { object: value.into_raw(), keys: Keys::Engine(keys), len, next: 0, wrote: false }
    };
    out.open(array);
    Ok(frame)
}

#[cfg(test)]
mod tests {
    use rquickjs::{Context, Runtime, Value};

    /// The walker writes what `JSON.stringify` writes for plain data, whatever the engine's
    /// representation (ropes, wide strings, sparse and holey arrays, integer-like keys).
    #[test]
    fn writes_what_json_stringify_writes() {
        let runtime = Runtime::new().unwrap();
        let context = Context::full(&runtime).unwrap();
        context.with(|ctx| {
            let sources = [
                "({ b: 1, a: [1, 'two', null, true, 2.5, -0, 1e21], '2': 'x', '1': 'y', nested: { deep: [[[]]], e: {} } })",
                "({ f() {}, u: undefined, s: Symbol('s'), list: [() => 1, undefined, Symbol('t'), NaN, Infinity, -Infinity] })",
                "({ text: 'caf\\u00e9 \\u2603 \\ud83d\\ude00 \"q\" \\\\ \\n', rope: 'a'.repeat(300) + 'b'.repeat(300) })",
                "(() => { const a = [1, , 3]; a[6] = 7; return { a, error: new RangeError('r'), map: new Map([[1, 2]]) }; })()",
                "(() => { const o = Object.create({ inherited: 1 }); o.own = 2; Object.defineProperty(o, 'hidden', { value: 3 }); return o; })()",
                "new Proxy({ p: 1, q: [2] }, {})",
                "[{ a: 1 }, 'x', 3]",
                "'just a string'",
            ];
            for source in sources {
                let value: Value = ctx.eval(source).unwrap();
                let expected: String = ctx
                    .globals()
                    .get::<_, rquickjs::Object>("JSON")
                    .unwrap()
                    .get::<_, rquickjs::Function>("stringify")
                    .unwrap()
                    .call((value.clone(),))
                    .unwrap();
                assert_eq!(super::to_json(value).unwrap(), expected, "{source}");
            }
        });
    }
}
