//! [`KeyTable`]: the key atoms, object shapes and repeated strings a runtime keeps between
//! calls, so a call's objects find their shapes instead of growing new ones (see the
//! module docs of [`super`]).

use hashbrown::{DefaultHashBuilder, HashTable};
use rquickjs::{Ctx, qjs};
use std::hash::BuildHasher;

use super::{FromWire, define, new_atom, new_string};

/// Most key-sequence steps a runtime keeps (each one atom reference and one holder in the
/// script's heap); past it, objects are built without the table.
pub(super) const MAX_STEPS: usize = 2048;

/// Keys of one object followed through the table. A holder for a sequence of n keys costs
/// n definitions once and n property slots for good, so the first keys of long objects
/// (a big label map, a large JSON body) are tracked and the rest built as they come. With
/// [`MAX_STEPS`], holders and their shapes take about 2 MiB of the script's heap at worst.
pub(super) const MAX_SEQUENCE: usize = 32;

/// Longest string a key sequence keeps for the next call (with [`MAX_STEPS`], at most
/// 256 KiB of kept strings per runtime).
const MAX_KEPT_STRING: usize = 128;

/// The empty key sequence, which every object starts from.
pub(super) const ROOT: u32 = 0;

/// The key atoms and object shapes a runtime keeps between calls (see the module docs).
/// Its references are given back by [`KeyTable::release`] before the runtime goes.
#[derive(Default)]
pub struct KeyTable {
    /// (key sequence so far, next key) → the longer sequence.
    steps: HashTable<u32>,
    hasher: DefaultHashBuilder,
    /// Sequence `n` (from 1) is `sequences[n - 1]`: the sequence it extends, its last key
    /// and that key's atom, and its holder.
    sequences: Vec<Sequence>,
}

struct Sequence {
    from: u32,
    key: Box<[u8]>,
    atom: qjs::JSAtom,
    holder: qjs::JSValue,
    /// The string last found under this key and the engine's string for it: observations
    /// repeat most of their strings from one call to the next (image names, phases,
    /// reasons), and an engine string is immutable, so the next call shares it instead of
    /// allocating and copying it again.
    last: Option<(Box<[u8]>, qjs::JSValue)>,
}

/// A key's atom for one property definition, and the key sequence it extends to when the
/// table tracks this object.
pub(super) struct KeyAtom {
    pub(super) atom: qjs::JSAtom,
    /// The table holds the atom (for as long as it lives): the definition must not free it.
    pub(super) kept: bool,
    pub(super) to: Option<u32>,
}

impl KeyTable {
    /// The atom of `key` after the sequence `from`, recording the step (and a holder for
    /// the new sequence) on first sight while the table has room.
    pub(super) fn step(
        &mut self,
        ctx: *mut qjs::JSContext,
        from: Option<u32>,
        key: &[u8],
    ) -> Result<KeyAtom, FromWire> {
        let Some(from) = from else {
            return Ok(KeyAtom { atom: new_atom(ctx, key)?, kept: false, to: None });
        };
        let hash = self.hasher.hash_one((from, key));
        let sequences = &self.sequences;
        let found = self.steps.find(hash, |&to| {
            let sequence = &sequences[to as usize - 1];
            sequence.from == from && *sequence.key == *key
        });
        if let Some(&to) = found {
            return Ok(KeyAtom { atom: self.sequences[to as usize - 1].atom, kept: true, to: Some(to) });
        }
        let atom = new_atom(ctx, key)?;
        if self.steps.len() >= MAX_STEPS {
            return Ok(KeyAtom { atom, kept: false, to: None });
        }
        let holder = match self.new_holder(ctx, from, atom) {
            Ok(holder) => holder,
            Err(e) => {
                // SAFETY: the atom made above is released once.
                unsafe { qjs::JS_FreeAtom(ctx, atom) };
                return Err(e);
            }
        };
        self.sequences.push(Sequence { from, key: key.into(), atom, holder, last: None });
        let to = self.sequences.len() as u32;
        let Self { steps, hasher, sequences } = self;
        steps.insert_unique(hash, to, |&to| {
            let sequence = &sequences[to as usize - 1];
            hasher.hash_one((sequence.from, &*sequence.key))
        });
        Ok(KeyAtom { atom, kept: true, to: Some(to) })
    }

    /// A new object with the keys of sequence `from` and then `atom`, all `undefined`. Every
    /// step but the last finds its shape kept alive by the shorter sequences' holders.
    fn new_holder(
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
    pub(super) fn string(
        &mut self,
        ctx: *mut qjs::JSContext,
        to: u32,
        bytes: &[u8],
    ) -> Result<qjs::JSValue, FromWire> {
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

    /// Whether `current` is the engine string this table keeps for `bytes` under the key
    /// that ends sequence `to` (so [`KeyTable::string`] would hand out `current` itself).
    pub(super) fn holds_string(&self, to: u32, bytes: &[u8], current: qjs::JSValue) -> bool {
        let sequence = &self.sequences[to as usize - 1];
        // SAFETY: reads tags and addresses only; an address is compared, never followed.
        sequence.last.as_ref().is_some_and(|(text, value)| unsafe {
            qjs::JS_VALUE_GET_TAG(current) == qjs::JS_VALUE_GET_TAG(*value)
                && qjs::JS_VALUE_GET_PTR(current) == qjs::JS_VALUE_GET_PTR(*value)
                && **text == *bytes
        })
    }

    /// The holder of sequence `to` (not ROOT): an object with exactly its keys, so with the
    /// shape an object built with them has.
    pub(super) fn holder(&self, to: u32) -> qjs::JSValue {
        self.sequences[to as usize - 1].holder
    }

    /// The atom of the last key of sequence `to` when that key is `key`: a refilled object's
    /// keys are checked against the sequence its holder has, without hashing them.
    pub(super) fn last_key_is(&self, to: u32, key: &[u8]) -> Option<qjs::JSAtom> {
        let sequence = &self.sequences[to as usize - 1];
        (*sequence.key == *key).then_some(sequence.atom)
    }

    /// Writes the sequences from the first key to `to` into `path`, in key order, and answers
    /// how many; `None` for a sequence longer than any the table tracks.
    pub(super) fn path(&self, to: u32, path: &mut [u32; MAX_SEQUENCE]) -> Option<usize> {
        let mut len = 0;
        let mut at = to;
        while at != ROOT {
            *path.get_mut(len)? = at;
            len += 1;
            at = self.sequences[at as usize - 1].from;
        }
        path[..len].reverse();
        Some(len)
    }

    /// Gives the holders and atoms back to the engine; called once, before the context goes.
    pub fn release(&mut self, ctx: &Ctx<'_>) {
        let raw = ctx.as_raw().as_ptr();
        self.steps.clear();
        for sequence in self.sequences.drain(..) {
            // SAFETY: each holder, kept string and atom is owned by the table and released once.
            unsafe { qjs::JS_FreeValue(raw, sequence.holder) };
            if let Some((_, string)) = sequence.last {
                unsafe { qjs::JS_FreeValue(raw, string) };
            }
            unsafe { qjs::JS_FreeAtom(raw, sequence.atom) };
        }
    }
}
