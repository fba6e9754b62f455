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

use hashbrown::{DefaultHashBuilder, HashTable};
use rquickjs::{Ctx, Value, qjs};
use std::hash::BuildHasher;

use super::convert::Owned as OwnedValue;
use crate::wire::{self, Reader, WireError};

/// Most key-sequence steps a runtime keeps (each one atom reference and one holder in the
/// script's heap); past it, objects are built without the table.
const MAX_STEPS: usize = 2048;

/// Keys of one object followed through the table. A holder for a sequence of n keys costs
/// n definitions once and n property slots for good, so the first keys of long objects
/// (a big label map, a large JSON body) are tracked and the rest built as they come. With
/// [`MAX_STEPS`], holders and their shapes take about 2 MiB of the script's heap at worst.
const MAX_SEQUENCE: usize = 32;

/// Longest string a key sequence keeps for the next call (with [`MAX_STEPS`], at most
/// 256 KiB of kept strings per runtime).
const MAX_KEPT_STRING: usize = 128;

/// The empty key sequence, which every object starts from.
const ROOT: u32 = 0;

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

/// The key atoms and object shapes a runtime keeps between calls (see the module docs).
/// Its references are given back by [`KeyTable::release`] before the runtime goes.
#[derive(Default)]
pub struct KeyTable {
    /// (key sequence so far, next key) → that key's atom and the longer sequence.
    steps: HashTable<Step>,
    hasher: DefaultHashBuilder,
    /// Sequence `n` (from 1) is `sequences[n - 1]`: the sequence it extends, its last key's
    /// atom and its holder.
    sequences: Vec<Sequence>,
}

struct Sequence {
    from: u32,
    atom: qjs::JSAtom,
    holder: qjs::JSValue,
    /// The string last found under this key and the engine's string for it: observations
    /// repeat most of their strings from one call to the next (image names, phases,
    /// reasons), and an engine string is immutable, so the next call shares it instead of
    /// allocating and copying it again.
    last: Option<(Box<[u8]>, qjs::JSValue)>,
}

struct Step {
    from: u32,
    key: Box<[u8]>,
    atom: qjs::JSAtom,
    to: u32,
}

/// A key's atom for one property definition, and the key sequence it extends to when the
/// table tracks this object.
struct KeyAtom {
    atom: qjs::JSAtom,
    /// The table holds the atom: the definition must not free it.
    kept: bool,
    to: Option<u32>,
}

impl KeyTable {
    /// The atom of `key` after the sequence `from`, recording the step (and a holder for
    /// the new sequence) on first sight while the table has room.
    fn step(&mut self, ctx: *mut qjs::JSContext, from: Option<u32>, key: &[u8]) -> Result<KeyAtom, FromWire> {
        let Some(from) = from else {
            return Ok(KeyAtom { atom: new_atom(ctx, key)?, kept: false, to: None });
        };
        let hash = self.hasher.hash_one((from, key));
        if let Some(step) = self.steps.find(hash, |s| s.from == from && *s.key == *key) {
            return Ok(KeyAtom { atom: step.atom, kept: true, to: Some(step.to) });
        }
        let atom = new_atom(ctx, key)?;
        if self.steps.len() >= MAX_STEPS {
            return Ok(KeyAtom { atom, kept: false, to: None });
        }
        let holder = match self.holder(ctx, from, atom) {
            Ok(holder) => holder,
            Err(e) => {
                // SAFETY: the atom made above is released once.
                unsafe { qjs::JS_FreeAtom(ctx, atom) };
                return Err(e);
            }
        };
        self.sequences.push(Sequence { from, atom, holder, last: None });
        let to = self.sequences.len() as u32;
        let key = key.into();
        let hasher = &self.hasher;
        self.steps.insert_unique(hash, Step { from, key, atom, to }, |s| hasher.hash_one((s.from, &*s.key)));
        Ok(KeyAtom { atom, kept: true, to: Some(to) })
    }

    /// A new object with the keys of sequence `from` and then `atom`, all `undefined`. Every
    /// step but the last finds its shape kept alive by the shorter sequences' holders.
    fn holder(
        &self,
        ctx: *mut qjs::JSContext,
        from: u32,
        atom: qjs::JSAtom,
    ) -> Result<qjs::JSValue, FromWire> {
        let mut keys = vec![atom];
        let mut at = from;
        while at != ROOT {
            let sequence = &self.sequences[at as usize - 1];
            keys.push(sequence.atom);
            at = sequence.from;
        }
        // SAFETY: a fresh object; it is freed below on failure and otherwise owned by the table.
        let holder = unsafe { qjs::JS_NewObject(ctx) };
        if unsafe { qjs::JS_IsException(holder) } {
            return Err(FromWire::Engine(rquickjs::Error::Exception));
        }
        for &key in keys.iter().rev() {
            // SAFETY: `holder` is an object of this context; `undefined` needs no reference.
            if unsafe { define(ctx, holder, key, qjs::JS_UNDEFINED) } < 0 {
                unsafe { qjs::JS_FreeValue(ctx, holder) };
                return Err(FromWire::Engine(rquickjs::Error::Exception));
            }
        }
        Ok(holder)
    }

    /// The engine string for `bytes` found under the key that ends sequence `to`: the
    /// string kept from the last time when the bytes are the same, else a new one (kept
    /// in its place when short).
    fn string(&mut self, ctx: *mut qjs::JSContext, to: u32, bytes: &[u8]) -> Result<qjs::JSValue, FromWire> {
        let sequence = &mut self.sequences[to as usize - 1];
        if let Some((text, value)) = &sequence.last {
            if **text == *bytes {
                // SAFETY: a new reference to a string the table holds.
                return Ok(unsafe { qjs::JS_DupValue(ctx, *value) });
            }
        }
        let value = new_string(ctx, bytes)?;
        if bytes.len() <= MAX_KEPT_STRING {
            // SAFETY: the table takes its own reference and gives back the one it held.
            let kept = unsafe { qjs::JS_DupValue(ctx, value) };
            if let Some((_, old)) = sequence.last.replace((bytes.into(), kept)) {
                unsafe { qjs::JS_FreeValue(ctx, old) };
            }
        }
        Ok(value)
    }

    /// Gives the holders and atoms back to the engine; called once, before the context goes.
    pub fn release(&mut self, ctx: &Ctx<'_>) {
        let raw = ctx.as_raw().as_ptr();
        for sequence in self.sequences.drain(..) {
            // SAFETY: each holder and kept string is owned by the table and released once.
            unsafe { qjs::JS_FreeValue(raw, sequence.holder) };
            if let Some((_, string)) = sequence.last {
                unsafe { qjs::JS_FreeValue(raw, string) };
            }
        }
        for step in self.steps.drain() {
            // SAFETY: each step holds one reference of its atom.
            unsafe { qjs::JS_FreeAtom(raw, step.atom) };
        }
    }
}

/// Builds the items of a wire-form array (a call's arguments) as engine values.
pub fn from_wire_args<'js>(
    ctx: &Ctx<'js>,
    keys: &mut KeyTable,
    bytes: &[u8],
) -> Result<Vec<Value<'js>>, FromWire> {
    let mut reader = Reader::new(bytes);
    if reader.u8()? != wire::ARRAY {
        return Err(FromWire::Wire(WireError::Tag(bytes.first().copied().unwrap_or_default())));
    }
    let raw = ctx.as_raw().as_ptr();
    let mut args = Vec::with_capacity(2);
    while reader.peek()? != wire::END {
        let value = build(raw, keys, &mut reader, 1)?;
        // SAFETY: `build` returns a value this wrapper now owns.
        args.push(unsafe { Value::from_raw(ctx.clone(), value) });
    }
    Ok(args)
}

/// Builds one value; the caller owns the result.
fn build(
    ctx: *mut qjs::JSContext,
    keys: &mut KeyTable,
    reader: &mut Reader<'_>,
    depth: usize,
) -> Result<qjs::JSValue, FromWire> {
    let value = match reader.u8()? {
        wire::NULL => qjs::JS_NULL,
        wire::FALSE => qjs::JS_FALSE,
        wire::TRUE => qjs::JS_TRUE,
        wire::INT => qjs::JS_MKVAL(qjs::JS_TAG_INT, reader.i32()?),
        wire::FLOAT => qjs::JS_NewFloat64(reader.f64()?),
        wire::STRING => new_string(ctx, reader.str_body()?)?,
        wire::ARRAY => {
            if depth >= wire::MAX_DEPTH {
                return Err(WireError::TooDeep.into());
            }
            let mut items = Owned { ctx, values: Vec::new() };
            while reader.peek()? != wire::END {
                let item = build(ctx, keys, reader, depth + 1)?;
                items.values.push(item);
            }
            reader.u8()?;
            let values = std::mem::take(&mut items.values);
            // SAFETY: the array takes over the items' references, also when it fails.
            checked(unsafe { qjs::JS_NewArrayFrom(ctx, values.len() as _, values.as_ptr()) })?
        }
        wire::OBJECT => {
            if depth >= wire::MAX_DEPTH {
                return Err(WireError::TooDeep.into());
            }
            // SAFETY: a fresh object owned by the guard until it is returned.
            let object = OwnedValue { ctx, value: checked(unsafe { qjs::JS_NewObject(ctx) })? };
            let mut sequence = Some(ROOT);
            let mut count = 0;
            while let Some(key) = reader.key()? {
                count += 1;
                if count > MAX_SEQUENCE {
                    sequence = None;
                }
                let key = keys.step(ctx, sequence, key)?;
                sequence = key.to;
                let item = match key.to {
                    Some(to) if reader.peek()? == wire::STRING => {
                        reader.u8()?;
                        reader
                            .str_body()
                            .map_err(FromWire::from)
                            .and_then(|bytes| keys.string(ctx, to, bytes))
                    }
                    _ => build(ctx, keys, reader, depth + 1),
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
            object.into_raw()
        }
        other => return Err(WireError::Tag(other).into()),
    };
    Ok(value)
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
            unsafe { qjs::JS_FreeValue(self.ctx, value) };
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::super::sandbox::ScriptRuntime;
    use crate::wire;

    /// Reports what each call received, then vandalises its arguments: adds and deletes
    /// keys, freezes, and swaps a prototype, all of which the engine must keep out of the
    /// shapes the table holds.
    const PROBE: &str = "export function check(i, o) {\n  const seen = { keys: Object.keys(o), inner: o.b ? Object.keys(o.b) : null, frozen: o.b ? Object.isFrozen(o.b) : null, extra: o.extra === undefined, proto: Object.getPrototypeOf(o) === Object.prototype, a: o.a };\n  o.extra = 1; delete o.a; if (o.b) { o.b.c2 = 3; Object.freeze(o.b); } Object.setPrototypeOf(o, { a: 'from a prototype' });\n  return { status: 'healthy', reason: '', details: seen };\n}\n";

    fn runtime(name: &str) -> ScriptRuntime {
        runtime_of(name, PROBE)
    }

    fn runtime_of(name: &str, source: &str) -> ScriptRuntime {
        ScriptRuntime::for_test(name, source, 32 << 20, false)
    }

    fn seen(runtime: &ScriptRuntime, observation: Value) -> Value {
        let mut bytes = Vec::new();
        wire::encode(&observation, &mut bytes).unwrap();
        seen_wire(runtime, &bytes)
    }

    /// Calls `check({}, observation)` with the observation given in the wire form.
    fn seen_wire(runtime: &ScriptRuntime, observation: &[u8]) -> Value {
        let mut bytes = vec![wire::ARRAY, wire::OBJECT, wire::END];
        bytes.extend_from_slice(observation);
        bytes.push(wire::END);
        let result = wire::decode(&runtime.call("check", &bytes).0.ok().unwrap()).unwrap();
        result["details"].clone()
    }

    #[test]
    fn kept_shapes_carry_nothing_from_one_call_or_script_to_the_next() {
        let first = runtime("first");
        for _ in 0..3 {
            let got = seen(&first, json!({"a": 1, "b": {"c": 2}}));
            let expected = json!({"keys": ["a", "b"], "inner": ["c"], "frozen": false, "extra": true, "proto": true, "a": 1});
            assert_eq!(got, expected);
        }
        // `{"b": {"c": 2}, "a": 5}`, keys in that order (a `serde_json::Map` would sort them).
        let mut reordered = vec![wire::OBJECT];
        wire::write_str(&mut reordered, "b");
        reordered.push(wire::OBJECT);
        wire::write_str(&mut reordered, "c");
        wire::write_int(&mut reordered, 2);
        reordered.push(wire::END);
        wire::write_str(&mut reordered, "a");
        wire::write_int(&mut reordered, 5);
        reordered.push(wire::END);
        let reordered = seen_wire(&first, &reordered);
        assert_eq!((reordered["keys"].clone(), reordered["a"].clone()), (json!(["b", "a"]), json!(5)));
        let longer = seen(&first, json!({"a": 1, "b": {"c": 2, "d": 4}, "z": null}));
        assert_eq!(
            (longer["keys"].clone(), longer["inner"].clone()),
            (json!(["a", "b", "z"]), json!(["c", "d"]))
        );
        let shorter = seen(&first, json!({"a": 1}));
        assert_eq!((shorter["keys"].clone(), shorter["inner"].clone()), (json!(["a"]), Value::Null));
        // A second script's runtime has its own table: it sees only the keys it was sent.
        let second = runtime("second");
        let other = seen(&second, json!({"x": {"c": 1}}));
        assert_eq!(other["keys"], json!(["x"]));
        assert_eq!(seen(&first, json!({"x": 1}))["keys"], json!(["x"]));
        // Dropping the runtimes aborts the process if a holder or atom was not given back.
        drop(first);
        drop(second);
    }

    /// A check that returns the observation it was given as its details.
    const ECHO: &str =
        "export function check(i, o) {\n  return { status: 'healthy', reason: '', details: o };\n}\n";

    #[test]
    fn strings_kept_between_calls_are_the_strings_sent() {
        let runtime = runtime_of("strings", ECHO);
        let long = "long ".repeat(100);
        for observation in [
            json!({"a": "x", "b": {"c": "same"}, "d": long}),
            json!({"a": "y", "b": {"c": "same"}, "d": long}),
            json!({"a": "x", "b": {"c": "caf\u{e9} \u{1f600}"}, "d": "short"}),
            json!({"a": 1, "b": {"c": ""}, "d": null}),
            json!({"a": "x", "b": {"c": "same"}, "d": long}),
        ] {
            assert_eq!(seen(&runtime, observation.clone()), observation);
        }
        drop(runtime);
    }

    #[test]
    fn objects_past_the_table_limits_are_built_whole() {
        let runtime = runtime_of("echo", ECHO);
        let wide: serde_json::Map<String, Value> =
            (0..super::MAX_SEQUENCE * 3).map(|i| (format!("k{i}"), json!(i))).collect();
        let many: Vec<Value> =
            (0..super::MAX_STEPS + 100).map(|i| json!({ format!("m{i}"): [i, "x"] })).collect();
        let observation = json!({"wide": wide, "many": many, "__proto__": {"own": true}});
        for _ in 0..2 {
            assert_eq!(seen(&runtime, observation.clone()), observation);
        }
        drop(runtime);
    }
}
