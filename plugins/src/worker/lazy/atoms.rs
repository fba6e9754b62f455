//! The atoms of the keys lazy objects read, kept by a runtime between calls: observations
//! repeat their keys from one call to the next, and finding an atom here costs less than
//! the engine's atom table lookup (hashing the key, probing, comparing), or than making
//! and freeing an atom no script value keeps alive. The atoms are engine values of one
//! runtime; the cache belongs to that runtime and gives them back with [`Atoms::release`].

use hashbrown::{DefaultHashBuilder, HashTable};
use rquickjs::qjs;
use std::hash::BuildHasher;

/// Most keys kept, and the longest (with both, at most 512 KiB of keys per runtime).
const MAX_KEYS: usize = 4096;
const MAX_KEY_BYTES: usize = 128;

#[derive(Default)]
pub struct Atoms {
    table: HashTable<(Box<[u8]>, qjs::JSAtom)>,
    hasher: DefaultHashBuilder,
}

impl Atoms {
    /// A new reference to the atom of `key`, or `JS_ATOM_NULL` with an exception pending.
    pub fn atom(&mut self, ctx: *mut qjs::JSContext, key: &[u8]) -> qjs::JSAtom {
        let hash = self.hasher.hash_one(key);
        if let Some((_, atom)) = self.table.find(hash, |(k, _)| **k == *key) {
            // SAFETY: a new reference to an atom the cache holds.
            return unsafe { qjs::JS_DupAtom(ctx, *atom) };
        }
        // SAFETY: the engine copies the key.
        let atom = unsafe { qjs::JS_NewAtomLen(ctx, key.as_ptr().cast(), key.len() as _) };
        if atom != qjs::JS_ATOM_NULL && self.table.len() < MAX_KEYS && key.len() <= MAX_KEY_BYTES {
            let hasher = &self.hasher;
            // SAFETY: the cache takes its own reference.
            let kept = unsafe { qjs::JS_DupAtom(ctx, atom) };
            self.table.insert_unique(hash, (key.into(), kept), |(k, _)| hasher.hash_one(k));
        }
        atom
    }

    /// Gives the atoms back; called once, before the runtime goes.
    pub fn release(&mut self, ctx: *mut qjs::JSContext) {
        for (_, atom) in self.table.drain() {
            // SAFETY: each atom holds one reference of the cache.
            unsafe { qjs::JS_FreeAtom(ctx, atom) };
        }
    }
}
