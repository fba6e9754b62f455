//! Builds a call's arguments from the [`crate::wire`] form into engine objects with the
//! engine's own calls: no JSON text to tokenise (its parser was the largest cost of a call).
//! This is the way for small arguments, which scripts read almost whole; large ones reach
//! the script as lazy objects ([`super::lazy`]).
//!
//! A call's objects are freed when it ends, and with the last object of a shape the engine
//! frees that shape (the hidden class listing an object's keys) and the keys' atoms. Built
//! naively, every call would therefore make each key's atom again and grow a fresh shape one
//! property at a time. A runtime keeps a [`KeyTable`] between calls instead: for each key
//! sequence that began an object, the key's atom and a holder object with exactly those keys
//! (all `undefined`), whose only job is to keep that shape alive. The next object with the
//! same keys then finds every step of its shape in the engine's shape table.
//!
//! Each sequence also keeps the string last found under its key: most strings of an
//! observation are the same as last time, and an engine string, immutable, can be shared.
//!
//! The table belongs to one script's runtime and no script value refers to it, so nothing of
//! one script reaches another; the engine copies a shared shape before changing it, so what a
//! script does to its arguments (adding, deleting, freezing keys) reaches neither the holders
//! nor the next call's objects.
//!
//! Better still, a call's objects and arrays are not freed at all when no script can reach
//! them any more: the next call refills them with its values ([`reuse`]).

mod keys;
mod layout;
mod reuse;
#[cfg(test)]
mod reuse_tests;
#[cfg(test)]
mod tests;

use rquickjs::{Ctx, Value, qjs};

use super::convert::{Owned as OwnedValue, free_value};
use crate::wire::{self, Reader, WireError};
pub use keys::KeyTable;
use keys::{MAX_SEQUENCE, ROOT};
pub use layout::Layout;
pub use reuse::Kept;
use reuse::{ARRAY_NODE, Node};

/// Why arguments could not be built.
#[derive(Debug)]
pub enum FromWire {
    Wire(WireError),
    Engine(rquickjs::Error),
}

impl From<WireError> for FromWire {
    fn from(e: WireError) -> Self {
        FromWire::Wire(e)
    }
}

/// Builds the items of a wire-form array (a call's arguments) as engine values, refilling
/// the last call's objects where `kept` proves no script can reach them any more.
pub fn from_wire_args<'js>(
    ctx: &Ctx<'js>,
    keys: &mut KeyTable,
    kept: &mut Kept,
    bytes: &[u8],
) -> Result<Vec<Value<'js>>, FromWire> {
    let mut reader = Reader::new(bytes);
    if reader.u8()? != wire::ARRAY {
        return Err(FromWire::Wire(WireError::Tag(bytes.first().copied().unwrap_or_default())));
    }
    let raw = ctx.as_raw().as_ptr();
    let last = kept.take(raw);
    let mut builder = Builder { ctx: raw, keys, layout: kept.layout(), made: kept.spare() };
    let mut args = Vec::with_capacity(2);
    while reader.peek()? != wire::END {
        let mark = builder.made.len();
        let value = builder.argument(&last, args.len(), &mut reader)?;
        // SAFETY: `argument` returns a value this wrapper now owns.
        args.push(unsafe { Value::from_raw(ctx.clone(), value) });
        if builder.made.get(mark).is_some_and(|node| node.object == object_ptr(value)) {
            kept.note_root(args.len() - 1, mark);
        }
    }
    kept.keep(raw, builder.made, &args, last);
    Ok(args)
}

/// Builds argument objects; `made` lists the objects a later call may refill (only with a
/// known [`Layout`]).
struct Builder<'t> {
    ctx: *mut qjs::JSContext,
    keys: &'t mut KeyTable,
    layout: Option<Layout>,
    made: Vec<Node>,
}

impl Builder<'_> {
    /// Builds one value; the caller owns the result. `slot` is the key it is stored under in
    /// a container being recorded (an atom, an array index, or `JS_ATOM_NULL` for an
    /// argument), `None` where nothing is recorded.
    fn value(
        &mut self,
        reader: &mut Reader<'_>,
        depth: usize,
        slot: Option<qjs::JSAtom>,
    ) -> Result<qjs::JSValue, FromWire> {
        let ctx = self.ctx;
        let value = match reader.u8()? {
            wire::NULL => qjs::JS_NULL,
            wire::FALSE => qjs::JS_FALSE,
            wire::TRUE => qjs::JS_TRUE,
            wire::INT => qjs::JS_MKVAL(qjs::JS_TAG_INT, reader.i32()?),
            wire::FLOAT => qjs::JS_NewFloat64(reader.f64()?),
            wire::STRING => new_string(ctx, reader.str_body()?)?,
            wire::ARRAY => self.array(reader, depth, slot)?,
            wire::OBJECT => self.object(reader, depth, slot)?,
            other => return Err(WireError::Tag(other).into()),
        };
        Ok(value)
    }

    /// Builds an array whose tag was read, recording it (and the containers in it, by index)
    /// when `slot` says so.
    fn array(
        &mut self,
        reader: &mut Reader<'_>,
        depth: usize,
        slot: Option<qjs::JSAtom>,
    ) -> Result<qjs::JSValue, FromWire> {
        let ctx = self.ctx;
        // The array is made last, from its items: its address comes at the end.
        let mark = self.open(depth, slot, std::ptr::null_mut(), ARRAY_NODE)?;
        let mut items = Owned { ctx, values: Vec::new() };
        while reader.peek()? != wire::END {
            let index = items.values.len() as u32;
            let item = self.value(reader, depth + 1, mark.map(|_| index))?;
            items.values.push(item);
        }
        reader.u8()?;
        let values = std::mem::take(&mut items.values);
        // SAFETY: the array takes over the items' references, also when it fails.
        let array = checked(unsafe { qjs::JS_NewArrayFrom(ctx, values.len() as _, values.as_ptr()) })?;
        if let Some(mark) = mark {
            let end = self.made.len() as u32;
            let node = &mut self.made[mark];
            (node.object, node.len, node.end) = (object_ptr(array), values.len() as u32, end);
        }
        Ok(array)
    }

    /// Starts a container `depth` deep: refuses one nested too deep, and records it when
    /// `slot` says so and objects can be refilled at all; answers its node's index then.
    fn open(
        &mut self,
        depth: usize,
        slot: Option<qjs::JSAtom>,
        object: *mut std::ffi::c_void,
        sequence: u32,
    ) -> Result<Option<usize>, FromWire> {
        if depth >= wire::MAX_DEPTH {
            return Err(WireError::TooDeep.into());
        }
        let slot = slot.filter(|_| self.layout.is_some());
        Ok(slot.map(|atom| {
            self.made.push(Node { object, sequence, atom, end: 0, len: 0 });
            self.made.len() - 1
        }))
    }

    /// Builds an object whose tag was read, recording it (and the objects in it) when `slot`
    /// says so and the table tracks all its keys.
    fn object(
        &mut self,
        reader: &mut Reader<'_>,
        depth: usize,
        slot: Option<qjs::JSAtom>,
    ) -> Result<qjs::JSValue, FromWire> {
        let ctx = self.ctx;
        // SAFETY: a fresh object owned by the guard until it is returned.
        let object = OwnedValue { ctx, value: checked(unsafe { qjs::JS_NewObject(ctx) })? };
        let mark = self.open(depth, slot, object_ptr(object.value), ROOT)?;
        let mut sequence = Some(ROOT);
        let mut count = 0;
        while let Some(key) = reader.key()? {
            count += 1;
            if count > MAX_SEQUENCE {
                sequence = None;
            }
            let key = self.keys.step(ctx, sequence, key)?;
            sequence = key.to;
            let item = match key.to {
                Some(to) if reader.peek()? == wire::STRING => {
                    reader.u8()?;
                    reader
                        .str_body()
                        .map_err(FromWire::from)
                        .and_then(|bytes| self.keys.string(ctx, to, bytes))
                }
                // Only a tracked key is recorded: its atom is the table's, alive for good.
                _ => self.value(reader, depth + 1, mark.and(key.to).map(|_| key.atom)),
            };
            // Defined, not assigned: a key such as `__proto__` stays an own property, as
            // `JSON.parse` makes it. The definition takes over the item's reference.
            // SAFETY: `object` is an object of this context; the atom is released once.
            let defined = item.map(|item| unsafe { define(ctx, object.value, key.atom, item) });
            if !key.kept {
                unsafe { qjs::JS_FreeAtom(ctx, key.atom) };
            }
            if defined? < 0 {
                return Err(FromWire::Engine(rquickjs::Error::Exception));
            }
        }
        if let Some(mark) = mark {
            match sequence {
                Some(to) if to != ROOT => {
                    self.made[mark].sequence = to;
                    self.made[mark].end = self.made.len() as u32;
                }
                // Not every key is in the table (or none): no holder shows its shape.
                _ => self.made.truncate(mark),
            }
        }
        Ok(object.into_raw())
    }
}

/// The address of an object, which identifies it while it lives.
pub(super) fn object_ptr(value: qjs::JSValue) -> *mut std::ffi::c_void {
    // SAFETY: reads the pointer out of the value; only compared, never followed.
    match unsafe { qjs::JS_VALUE_GET_TAG(value) } {
        qjs::JS_TAG_OBJECT => unsafe { qjs::JS_VALUE_GET_PTR(value) },
        _ => std::ptr::null_mut(),
    }
}

/// Defines an own enumerable, writable, configurable data property, taking over `value`.
unsafe fn define(
    ctx: *mut qjs::JSContext,
    object: qjs::JSValue,
    atom: qjs::JSAtom,
    value: qjs::JSValue,
) -> i32 {
    unsafe { qjs::JS_DefinePropertyValue(ctx, object, atom, value, qjs::JS_PROP_C_W_E as _) }
}

fn new_string(ctx: *mut qjs::JSContext, bytes: &[u8]) -> Result<qjs::JSValue, FromWire> {
    // SAFETY: the engine copies `len` bytes from the pointer; an exception is checked.
    checked(unsafe { qjs::JS_NewStringLen(ctx, bytes.as_ptr().cast(), bytes.len() as _) })
}

fn new_atom(ctx: *mut qjs::JSContext, key: &[u8]) -> Result<qjs::JSAtom, FromWire> {
    // SAFETY: the engine copies the key.
    let atom = unsafe { qjs::JS_NewAtomLen(ctx, key.as_ptr().cast(), key.len() as _) };
    if atom == qjs::JS_ATOM_NULL {
        return Err(FromWire::Engine(rquickjs::Error::Exception));
    }
    Ok(atom)
}

/// A value the engine just returned, with its exception marker turned into an error.
fn checked(value: qjs::JSValue) -> Result<qjs::JSValue, FromWire> {
    if unsafe { qjs::JS_IsException(value) } {
        return Err(FromWire::Engine(rquickjs::Error::Exception));
    }
    Ok(value)
}

/// Values being built, freed if building stops half-way.
pub(super) struct Owned {
    pub(super) ctx: *mut qjs::JSContext,
    pub(super) values: Vec<qjs::JSValue>,
}

impl Drop for Owned {
    fn drop(&mut self) {
        for value in self.values.drain(..) {
            // SAFETY: each value is owned here and released once.
            unsafe { free_value(self.ctx, value) };
        }
    }
}
