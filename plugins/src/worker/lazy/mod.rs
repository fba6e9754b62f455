//! Call arguments exposed lazily: an object of a call's arguments is an engine object of a
//! class of ours whose own properties are read from the wire bytes when a script first
//! touches it, and whose values are built when first read. A Deployment check reads about
//! 20 of the 113 values of its observation; building all of them as engine objects, and
//! freeing them again, was most of the cost of a call.
//!
//! The class answers every property operation through the engine's exotic hooks
//! (`JSClassExoticMethods`), so to a script the object is an ordinary one: reads, `in`,
//! `Object.keys`, `for…in`, `JSON.stringify` (keys in the wire order, array indices first as
//! the engine orders them), assignment, new keys, `delete`, `defineProperty`, freezing and
//! spreading behave as on an object `JSON.parse` made. The object's shape (the engine's own
//! property table) stays empty: the engine consults the shape before the hooks and lists
//! shape keys before the hooks' keys, so every property, from the wire or added by the
//! script, lives in the object's [`Slots`], in order, and a value once built stays there
//! (so `o.a === o.a`). Arrays are real arrays, built when read, whose object items are lazy.
//!
//! Sandbox: the bytes are copied per call into the script's heap ([`Piece`]), where the heap
//! limit counts them, with everything the objects hold; each object keeps its piece alive
//! by a reference count, so an object a script kept (`globalThis.x = o`) reads its own
//! call's bytes in any later call, and never another call's. The bytes are checked once
//! when copied, so no hook meets malformed input; the only recursion, building nested
//! arrays, is bounded by the wire's nesting limit. The hooks run no script code.

mod atoms;
mod define;
mod piece;
mod slots;
#[cfg(test)]
mod tests;

use std::ffi::c_int;

use rquickjs::qjs;

use super::args::{FromWire, Owned};
use crate::wire::{self, WireError};
pub use atoms::Atoms;
pub use piece::End;
use piece::Piece;
use slots::{KeyKind, Slot, Slots};

/// The engine has an exception pending (thrown by a hook or by the allocator).
pub struct Thrown;

/// The state of one lazy object, held as its opaque pointer in the script's heap.
struct Lazy {
    piece: *mut Piece,
    /// Offset of the object's first key, and its container ordinal.
    body: u32,
    ordinal: u32,
    /// Whether `slots` holds the keys of the wire yet.
    decoded: bool,
    slots: Slots,
}

static HOOKS: qjs::JSClassExoticMethods = qjs::JSClassExoticMethods {
    get_own_property: Some(get_own_property),
    get_own_property_names: Some(get_own_property_names),
    delete_property: Some(delete_property),
    define_own_property: Some(define::define_own_property),
    has_property: None,
    get_property: None,
    set_property: None,
};

/// Registers the class in the context's runtime; returns its id. Its objects have
/// `Object.prototype` as their prototype, as objects `JSON.parse` makes.
pub fn register(ctx: *mut qjs::JSContext) -> Result<qjs::JSClassID, rquickjs::Error> {
    let mut class = 0;
    // SAFETY: a class id of this runtime, a definition the engine copies (the hooks are
    // static) and a prototype reference the context takes over.
    unsafe {
        let rt = qjs::JS_GetRuntime(ctx);
        qjs::JS_NewClassID(rt, &mut class);
        let definition = qjs::JSClassDef {
            class_name: c"Object".as_ptr(),
            finalizer: Some(finalize),
            gc_mark: Some(mark),
            call: None,
            exotic: (&raw const HOOKS).cast_mut(),
        };
        if qjs::JS_NewClass(rt, class, &definition) < 0 {
            return Err(rquickjs::Error::Allocation);
        }
        let plain = qjs::JS_NewObject(ctx);
        if qjs::JS_IsException(plain) {
            return Err(rquickjs::Error::Exception);
        }
        let prototype = qjs::JS_GetPrototype(ctx, plain);
        qjs::JS_FreeValue(ctx, plain);
        qjs::JS_SetClassProto(ctx, class, prototype);
    }
    Ok(class)
}

/// Builds the items of a wire-form array (a call's arguments); objects among them are lazy.
/// `ends` is scratch space kept by the caller between calls; `atoms` is the runtime's key
/// cache, alive as long as the runtime (only hooks called while a script runs use it).
pub fn arguments(
    ctx: *mut qjs::JSContext,
    class: qjs::JSClassID,
    bytes: &[u8],
    ends: &mut Vec<End>,
    atoms: *mut Atoms,
) -> Result<Vec<qjs::JSValue>, FromWire> {
    if bytes.first() != Some(&wire::ARRAY) {
        return Err(WireError::Tag(bytes.first().copied().unwrap_or_default()).into());
    }
    piece::scan(bytes, ends)?;
    let piece = Piece::new(ctx, bytes, ends, atoms);
    if piece.is_null() {
        // The arguments alone pass the heap limit: say so, not what the engine could throw.
        // SAFETY: takes and frees the pending exception.
        unsafe { qjs::JS_FreeValue(ctx, qjs::JS_GetException(ctx)) };
        return Err(FromWire::Engine(rquickjs::Error::Allocation));
    }
    let mut args = Owned { ctx, values: Vec::with_capacity(ends[0].count as usize) };
    // SAFETY: the piece is alive (this function holds a reference) and was scanned.
    let built = unsafe { items(ctx, class, piece, 1, 0, &mut args) };
    // SAFETY: gives back the reference `Piece::new` made; the objects hold their own.
    unsafe { Piece::release(qjs::JS_GetRuntime(ctx), piece) };
    built.map_err(|Thrown| FromWire::Engine(rquickjs::Error::Exception))?;
    Ok(std::mem::take(&mut args.values))
}

/// Builds the items of the array whose first item is at `body` (container `ordinal`).
///
/// # Safety
/// `piece` is alive and scanned; `body` and `ordinal` name one of its arrays.
unsafe fn items(
    ctx: *mut qjs::JSContext,
    class: qjs::JSClassID,
    piece: *mut Piece,
    body: u32,
    ordinal: u32,
    out: &mut Owned,
) -> Result<(), Thrown> {
    let mut at = body;
    let mut next_container = ordinal + 1;
    // SAFETY: the piece outlives this call (the caller holds it).
    while unsafe { (*piece).bytes()[at as usize] } != wire::END {
        let (end, ordinal) = extent(unsafe { &*piece }, at, &mut next_container);
        out.values.push(unsafe { build(ctx, class, piece, at, ordinal)? });
        at = end;
    }
    Ok(())
}

/// Where the value whose tag is at `at` ends, and its container ordinal when it is one
/// (`next_container` then moves past it and everything inside it).
fn extent(piece: &Piece, at: u32, next_container: &mut u32) -> (u32, u32) {
    let bytes = piece.bytes();
    let scalar = |len: usize| (at + 1 + len as u32, 0);
    match bytes[at as usize] {
        wire::INT => scalar(4),
        wire::FLOAT => scalar(8),
        wire::STRING => {
            let len =
                u32::from_le_bytes(bytes[at as usize + 1..at as usize + 5].try_into().expect("4 bytes"));
            scalar(4 + len as usize)
        }
        wire::ARRAY | wire::OBJECT => {
            let ordinal = *next_container;
            let end = piece.end(ordinal);
            *next_container = end.next;
            (end.offset, ordinal)
        }
        _ => scalar(0),
    }
}

/// Builds the value whose tag is at `at`: scalars and strings as they are, an array with
/// its items, an object as a new lazy object.
///
/// # Safety
/// As for [`items`]; `ordinal` is the value's container ordinal when it is one.
unsafe fn build(
    ctx: *mut qjs::JSContext,
    class: qjs::JSClassID,
    piece: *mut Piece,
    at: u32,
    ordinal: u32,
) -> Result<qjs::JSValue, Thrown> {
    // SAFETY: the caller holds the piece.
    let mut reader = unsafe { (*piece).reader(at) };
    let malformed = |_: WireError| {
        // Not reachable after `scan`; still an exception, never a panic in a hook.
        unsafe { qjs::JS_ThrowTypeError(ctx, c"malformed call arguments".as_ptr()) };
        Thrown
    };
    let value = match reader.u8().map_err(malformed)? {
        wire::NULL => qjs::JS_NULL,
        wire::FALSE => qjs::JS_FALSE,
        wire::TRUE => qjs::JS_TRUE,
        wire::INT => qjs::JS_MKVAL(qjs::JS_TAG_INT, reader.i32().map_err(malformed)?),
        wire::FLOAT => qjs::JS_NewFloat64(reader.f64().map_err(malformed)?),
        wire::STRING => {
            let text = reader.str_body().map_err(malformed)?;
            // SAFETY: the engine copies `len` bytes.
            checked(unsafe { qjs::JS_NewStringLen(ctx, text.as_ptr().cast(), text.len() as _) })?
        }
        wire::OBJECT => unsafe { new_object(ctx, class, piece, at + 1, ordinal)? },
        wire::ARRAY => {
            let count = unsafe { (*piece).end(ordinal).count };
            let mut built = Owned { ctx, values: Vec::with_capacity(count as usize) };
            unsafe { items(ctx, class, piece, at + 1, ordinal, &mut built)? };
            let values = std::mem::take(&mut built.values);
            // SAFETY: the array takes over the items' references, also when it fails.
            checked(unsafe { qjs::JS_NewArrayFrom(ctx, values.len() as _, values.as_ptr()) })?
        }
        other => return Err(malformed(WireError::Tag(other))),
    };
    Ok(value)
}

/// A new lazy object for the object whose first key is at `body`.
///
/// # Safety
/// As for [`build`].
unsafe fn new_object(
    ctx: *mut qjs::JSContext,
    class: qjs::JSClassID,
    piece: *mut Piece,
    body: u32,
    ordinal: u32,
) -> Result<qjs::JSValue, Thrown> {
    // SAFETY: a new object of our class, and its state in the script's heap; the object
    // owns the state (freed by `finalize`) and the state one reference of the piece.
    unsafe {
        let object = checked(qjs::JS_NewObjectClass(ctx, class as _))?;
        let lazy = qjs::js_malloc(ctx, size_of::<Lazy>() as _).cast::<Lazy>();
        if lazy.is_null() {
            qjs::JS_FreeValue(ctx, object);
            return Err(Thrown);
        }
        Piece::retain(piece);
        lazy.write(Lazy { piece, body, ordinal, decoded: false, slots: Slots::new() });
        qjs::JS_SetOpaque(object, lazy.cast());
        Ok(object)
    }
}

fn checked(value: qjs::JSValue) -> Result<qjs::JSValue, Thrown> {
    // SAFETY: reads the tag only.
    if unsafe { qjs::JS_IsException(value) } {
        return Err(Thrown);
    }
    Ok(value)
}

/// The state of a lazy object, with its keys read from the wire.
///
/// # Safety
/// `object` is an object of our class, alive for the returned borrow.
unsafe fn decoded<'a>(ctx: *mut qjs::JSContext, object: qjs::JSValue) -> Result<&'a mut Lazy, Thrown> {
    let mut class = 0;
    // SAFETY: every object of the class has its state set right after it is made.
    let lazy = unsafe { &mut *qjs::JS_GetAnyOpaque(object, &mut class).cast::<Lazy>() };
    if !lazy.decoded {
        // SAFETY: the object holds its piece.
        let piece = unsafe { &*lazy.piece };
        if let Err(Thrown) = read_keys(ctx, piece, lazy.body, lazy.ordinal, &mut lazy.slots) {
            lazy.slots.free(unsafe { qjs::JS_GetRuntime(ctx) });
            return Err(Thrown);
        }
        lazy.decoded = true;
    }
    Ok(lazy)
}

/// Fills `slots` with the keys of the object at `body`, values left in the wire. A key
/// that repeats keeps its first place and its last value, as defining it twice would.
fn read_keys(
    ctx: *mut qjs::JSContext,
    piece: &Piece,
    body: u32,
    ordinal: u32,
    slots: &mut Slots,
) -> Result<(), Thrown> {
    slots.reserve(ctx, piece.end(ordinal).count)?;
    let mut next_container = ordinal + 1;
    let mut at = body;
    loop {
        let mut reader = piece.reader(at);
        let Ok(Some(key)) = reader.key() else { return Ok(()) };
        let value_at = piece.offset(&reader);
        let (end, ordinal) = extent(piece, value_at, &mut next_container);
        at = end;
        // SAFETY: the cache outlives every call of its runtime, and hooks run only in calls.
        let atom = unsafe { (*piece.atoms).atom(ctx, key) };
        if atom == qjs::JS_ATOM_NULL {
            return Err(Thrown);
        }
        if let Some(found) = slots.find(atom) {
            let slot = slots.get_mut(found);
            (slot.wire, slot.ordinal) = (value_at, ordinal);
            // SAFETY: the slot holds the atom already; this reference is given back.
            unsafe { qjs::JS_FreeAtom(ctx, atom) };
            continue;
        }
        let kind = match tagged_index(atom).or_else(|| canonical_index(key)) {
            Some(index) => KeyKind::Index(index),
            None => KeyKind::String,
        };
        slots.push(ctx, Slot::from_wire(atom, kind, value_at, ordinal))?;
    }
}

/// The index of an atom the engine keeps as an integer (array indices below 2^31).
fn tagged_index(atom: qjs::JSAtom) -> Option<u32> {
    (atom & (1 << 31) != 0).then_some(atom & !(1 << 31))
}

/// The array index a key's text names, if it is one ("0", "17"; not "01", "-1", "4294967295").
pub(super) fn canonical_index(key: &[u8]) -> Option<u32> {
    if key.is_empty() || key.len() > 10 || (key.len() > 1 && key[0] == b'0') {
        return None;
    }
    let mut n: u64 = 0;
    for &b in key {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n * 10 + u64::from(b - b'0');
    }
    (n < u64::from(u32::MAX)).then_some(n as u32)
}

/// Builds the value of slot `at` if it is still in the wire, and returns it (borrowed).
///
/// # Safety
/// `object` is the lazy object whose state is `lazy`.
unsafe fn value_of(
    ctx: *mut qjs::JSContext,
    object: qjs::JSValue,
    lazy: &mut Lazy,
    at: usize,
) -> Result<qjs::JSValue, Thrown> {
    let slot = &lazy.slots.as_slice()[at];
    if slot.in_wire() {
        let (wire_at, ordinal) = (slot.wire, slot.ordinal);
        // SAFETY: the object holds its piece; building runs no script code, so the slot
        // list is the same afterwards.
        let value = unsafe { build(ctx, qjs::JS_GetClassID(object), lazy.piece, wire_at, ordinal)? };
        lazy.slots.get_mut(at).value = value;
    }
    Ok(lazy.slots.as_slice()[at].value)
}

unsafe extern "C" fn get_own_property(
    ctx: *mut qjs::JSContext,
    desc: *mut qjs::JSPropertyDescriptor,
    object: qjs::JSValue,
    prop: qjs::JSAtom,
) -> c_int {
    // SAFETY: the engine calls the hooks with objects of the class.
    let Ok(lazy) = (unsafe { decoded(ctx, object) }) else { return -1 };
    let Some(at) = lazy.slots.find(prop) else { return 0 };
    if desc.is_null() {
        return 1;
    }
    // SAFETY: `desc` is the engine's descriptor to fill; each value is a new reference.
    unsafe {
        let Ok(value) = value_of(ctx, object, lazy, at) else { return -1 };
        let slot = &lazy.slots.as_slice()[at];
        let value = qjs::JS_DupValue(ctx, value);
        (*desc).flags = slot.flags;
        if slot.is_accessor() {
            (*desc).value = qjs::JS_UNDEFINED;
            (*desc).getter = value;
            (*desc).setter = qjs::JS_DupValue(ctx, slot.setter);
        } else {
            (*desc).value = value;
            (*desc).getter = qjs::JS_UNDEFINED;
            (*desc).setter = qjs::JS_UNDEFINED;
        }
    }
    1
}

unsafe extern "C" fn get_own_property_names(
    ctx: *mut qjs::JSContext,
    tab: *mut *mut qjs::JSPropertyEnum,
    len: *mut u32,
    object: qjs::JSValue,
) -> c_int {
    let Ok(lazy) = (unsafe { decoded(ctx, object) }) else { return -1 };
    let slots = lazy.slots.as_slice();
    // Array indices by value, then strings, then symbols, each in the order they came.
    let mut order: Vec<(u8, u32, usize)> = slots
        .iter()
        .enumerate()
        .map(|(at, slot)| match slot.kind {
            KeyKind::Index(index) => (0, index, at),
            KeyKind::String => (1, 0, at),
            KeyKind::Symbol => (2, 0, at),
        })
        .collect();
    order.sort_unstable();
    // SAFETY: a list of `len` entries the engine frees, with a reference to each atom.
    unsafe {
        let list = qjs::js_malloc(ctx, (slots.len().max(1) * size_of::<qjs::JSPropertyEnum>()) as _)
            .cast::<qjs::JSPropertyEnum>();
        if list.is_null() {
            return -1;
        }
        for (i, &(_, _, at)) in order.iter().enumerate() {
            let slot = &slots[at];
            list.add(i).write(qjs::JSPropertyEnum {
                is_enumerable: slot.flags & qjs::JS_PROP_ENUMERABLE as i32 != 0,
                atom: qjs::JS_DupAtom(ctx, slot.atom),
            });
        }
        *tab = list;
        *len = slots.len() as u32;
    }
    0
}

unsafe extern "C" fn delete_property(
    ctx: *mut qjs::JSContext,
    object: qjs::JSValue,
    prop: qjs::JSAtom,
) -> c_int {
    let Ok(lazy) = (unsafe { decoded(ctx, object) }) else { return -1 };
    let Some(at) = lazy.slots.find(prop) else { return 1 };
    if lazy.slots.as_slice()[at].flags & qjs::JS_PROP_CONFIGURABLE as i32 == 0 {
        return 0;
    }
    lazy.slots.remove(ctx, at);
    1
}

unsafe extern "C" fn mark(rt: *mut qjs::JSRuntime, object: qjs::JSValue, mark: qjs::JS_MarkFunc) {
    let mut class = 0;
    // SAFETY: the state, when set, belongs to the object.
    let lazy = unsafe { qjs::JS_GetAnyOpaque(object, &mut class).cast::<Lazy>() };
    if !lazy.is_null() {
        unsafe { (*lazy).slots.mark(rt, mark) };
    }
}

unsafe extern "C" fn finalize(rt: *mut qjs::JSRuntime, object: qjs::JSValue) {
    let mut class = 0;
    // SAFETY: the state, when set, belongs to the object and goes with it, once.
    unsafe {
        let lazy = qjs::JS_GetAnyOpaque(object, &mut class).cast::<Lazy>();
        if lazy.is_null() {
            return;
        }
        (*lazy).slots.free(rt);
        Piece::release(rt, (*lazy).piece);
        qjs::js_free_rt(rt, lazy.cast());
    }
}
