//! [`Kept`]: the argument objects and arrays of a runtime's last call, refilled with the next
//! call's values instead of being freed and built again. Building an object costs an allocation
//! and one property definition per key (each a shape step and a growing property array),
//! freeing it as much again; refilling costs one assignment per value. For the `status/http`
//! check's ten small objects that was most of the worker's share of a call.
//!
//! A script may keep anything it was given (`globalThis.o = observation`, a closure, the
//! verdict's details, a `WeakMap` key) and must then find it unchanged later, so a container
//! is refilled only when no script value can reach it any more and its property table is
//! still the one it was built with:
//! - the argument itself is referenced by us alone (reference count 1), and every object or
//!   array inside it only by the property or element it was built in (count 2 while we read
//!   it through that slot): nothing else — global, closure, result, another argument —
//!   holds it;
//! - no weak collection refers to it (weak references are not counted);
//! - it is still extensible, and either a plain object whose shape is the one the key
//!   table's holder for its keys has (the same keys in the same order, all writable,
//!   enumerable and configurable data properties, the same prototype: adding, deleting,
//!   redefining or freezing a key, or a new prototype, gives an object another shape; the
//!   holder keeps the expected shape alive, so its address is never reused meanwhile), or an
//!   array with the shape every array starts with (no property but `length` and its
//!   elements) and the same length;
//! - the next call's value there has exactly those keys in that order, or as many items.
//!
//! Then every value is stored again: an object's in the slot of its own writable data
//! property, as an assignment does (the shape says which slot holds which key, so no key is
//! looked up), an array's by definition (an array whose length outgrew its items would
//! look an index up on its prototype); neither runs a setter or any script code. Anything
//! that fails a test is built afresh as before, and the old container, still referenced by
//! whoever kept it, keeps its values. The reads need the engine's object layout
//! ([`Layout`]); without it, nothing is kept.

use std::ffi::c_void;

use rquickjs::{Value, qjs};

use super::keys::{MAX_SEQUENCE, ROOT};
use super::{Builder, FromWire, Layout, OwnedValue, free_value};
use crate::wire::{self, Reader, WireError};

/// The last call's argument objects that the next call may refill.
pub struct Kept {
    layout: Option<Layout>,
    roots: Vec<Root>,
    nodes: Vec<Node>,
    /// The allocations for the next call's roots and nodes.
    spare_roots: Vec<Root>,
    spare: Vec<Node>,
    /// The call's arguments that were recorded: (position, node index).
    recorded: Vec<(usize, usize)>,
}

/// A kept argument, with a reference of our own.
struct Root {
    position: usize,
    /// Its node in [`Kept::nodes`].
    node: usize,
    value: qjs::JSValue,
}

/// The [`Node::sequence`] of an array.
pub(super) const ARRAY_NODE: u32 = u32::MAX;

/// An object of the last call's arguments that was built with tracked keys, or an array,
/// listed in wire order (a container, then the containers inside it).
#[derive(Debug, Clone, Copy)]
pub(super) struct Node {
    /// Its address: only compared, so a freed object is never read through it.
    pub(super) object: *mut c_void,
    /// The key sequence of all its keys (whose holder has its shape), or [`ARRAY_NODE`].
    pub(super) sequence: u32,
    /// Where it is stored in the container before it: a key's atom, an array index, or
    /// `JS_ATOM_NULL` for an argument.
    pub(super) atom: qjs::JSAtom,
    /// The index after the last node inside it.
    pub(super) end: u32,
    /// An array's length.
    pub(super) len: u32,
}

/// The last call's kept arguments while the next call's are built; our references to them
/// are given back when it drops (a refilled one has its new references by then).
pub(super) struct Last {
    ctx: *mut qjs::JSContext,
    roots: Vec<Root>,
    nodes: Vec<Node>,
}

impl Last {
    fn release(&mut self) {
        for root in self.roots.drain(..) {
            // SAFETY: each root holds one reference of ours, released once.
            unsafe { qjs::JS_FreeValue(self.ctx, root.value) };
        }
    }
}

impl Drop for Last {
    fn drop(&mut self) {
        self.release();
    }
}

impl Kept {
    pub fn new(layout: Option<Layout>) -> Self {
        Self {
            layout,
            roots: Vec::new(),
            nodes: Vec::new(),
            spare_roots: Vec::new(),
            spare: Vec::new(),
            recorded: Vec::new(),
        }
    }

    pub(super) fn layout(&self) -> Option<Layout> {
        self.layout
    }

    /// Takes the last call's arguments out, for the next call to refill or let go.
    pub(super) fn take(&mut self, ctx: *mut qjs::JSContext) -> Last {
        self.recorded.clear();
        let roots = std::mem::replace(&mut self.roots, std::mem::take(&mut self.spare_roots));
        Last { ctx, roots, nodes: std::mem::take(&mut self.nodes) }
    }

    /// Notes that the argument at `position` was recorded as node `node`.
    pub(super) fn note_root(&mut self, position: usize, node: usize) {
        self.recorded.push((position, node));
    }

    /// An empty list for the next call's nodes.
    pub(super) fn spare(&mut self) -> Vec<Node> {
        let mut spare = std::mem::take(&mut self.spare);
        spare.clear();
        spare
    }

    /// Keeps this call's recorded arguments and lets the last call's go.
    pub(super) fn keep(
        &mut self,
        ctx: *mut qjs::JSContext,
        made: Vec<Node>,
        args: &[Value<'_>],
        mut last: Last,
    ) {
        for &(position, node) in &self.recorded {
            // SAFETY: a new reference to an argument, released by `Last` or `release`.
            let value = unsafe { qjs::JS_DupValue(ctx, args[position].as_raw()) };
            self.roots.push(Root { position, node, value });
        }
        self.nodes = made;
        self.spare = std::mem::take(&mut last.nodes);
        last.release();
        self.spare_roots = std::mem::take(&mut last.roots);
    }

    #[cfg(test)]
    pub fn objects(&self) -> Vec<usize> {
        self.nodes.iter().map(|node| node.object as usize).collect()
    }

    /// Gives the kept arguments back to the engine; called before the context goes.
    pub fn release(&mut self, ctx: *mut qjs::JSContext) {
        drop(self.take(ctx));
    }
}

impl Builder<'_> {
    /// Builds the argument at `position`, refilling the last call's one there if it can.
    pub(super) fn argument(
        &mut self,
        last: &Last,
        position: usize,
        reader: &mut Reader<'_>,
    ) -> Result<qjs::JSValue, FromWire> {
        let kept = last.roots.iter().find(|root| root.position == position);
        if let (Some(root), Some(layout)) = (kept, self.layout) {
            let node = &last.nodes[root.node];
            // SAFETY: we hold a reference to the root, so it is alive.
            let alone = unsafe { layout.ref_count(root.value) } == 1;
            if alone && same_kind(reader.peek()?, node) && self.unchanged(layout, root.value, node) {
                let start = reader.clone();
                if self.refill(root.value, &last.nodes, root.node, reader, 1)? {
                    // SAFETY: a new reference for the call; ours stays kept.
                    return Ok(unsafe { qjs::JS_DupValue(self.ctx, root.value) });
                }
                *reader = start;
            }
        }
        self.value(reader, 1, Some(qjs::JS_ATOM_NULL))
    }

    /// Assigns the wire container at `reader` (an object or array like the last call's node
    /// `n`) to the properties or elements of `container`, that node, which no script can reach
    /// (see the module docs). False when its keys or length are not the container's: it is
    /// then half-written, and the caller lets it go and builds afresh from `reader` as it was.
    fn refill(
        &mut self,
        container: qjs::JSValue,
        last: &[Node],
        n: usize,
        reader: &mut Reader<'_>,
        depth: usize,
    ) -> Result<bool, FromWire> {
        if depth >= wire::MAX_DEPTH {
            return Err(WireError::TooDeep.into());
        }
        reader.u8()?;
        let mark = self.made.len();
        self.made.push(Node { end: 0, ..last[n] });
        let refilled = if last[n].sequence == ARRAY_NODE {
            self.refill_items(container, last, n, reader, depth)?
        } else {
            self.refill_keys(container, last, n, reader, depth)?
        };
        if refilled {
            self.made[mark].end = self.made.len() as u32;
        } else {
            self.made.truncate(mark);
        }
        Ok(refilled)
    }

    /// The object part of [`Builder::refill`]: its keys must be those of its sequence.
    fn refill_keys(
        &mut self,
        object: qjs::JSValue,
        last: &[Node],
        n: usize,
        reader: &mut Reader<'_>,
        depth: usize,
    ) -> Result<bool, FromWire> {
        let Some(layout) = self.layout else { return Ok(false) };
        let mut path = [ROOT; MAX_SEQUENCE];
        let Some(len) = self.keys.path(last[n].sequence, &mut path) else { return Ok(false) };
        let mut inner = Inner { next: n + 1, end: last[n].end as usize };
        let mut count = 0;
        while let Some(key) = reader.key()? {
            let atom = path[..len].get(count).and_then(|&to| self.keys.last_key_is(to, key));
            let Some(atom) = atom else { return Ok(false) };
            let to = path[count];
            let index = count;
            count += 1;
            let old = inner.at(last, atom);
            if reader.peek()? == wire::STRING && old.is_none() {
                reader.u8()?;
                let bytes = reader.str_body()?;
                // SAFETY: as below.
                if self
                    .keys
                    .holds_string(to, bytes, unsafe { layout.value_slot(object, index).read_unaligned() })
                {
                    // The slot holds the very string the table would hand out: nothing to store.
                    continue;
                }
                let item = self.keys.string(self.ctx, to, bytes)?;
                // SAFETY: as below.
                unsafe { store(self.ctx, layout, object, index, item) };
                continue;
            }
            // SAFETY: the `index`-th key of `object`'s shape, its holder's, is a data property.
            let get =
                |ctx| unsafe { qjs::JS_DupValue(ctx, layout.value_slot(object, index).read_unaligned()) };
            if let Some(item) = self.item(last, old, get, reader, depth, atom)? {
                // SAFETY: as above; building `item` changed no key of `object`.
                unsafe { store(self.ctx, layout, object, index, item) };
            }
        }
        Ok(count == len)
    }

    /// The array part of [`Builder::refill`]: it must have as many items as before.
    fn refill_items(
        &mut self,
        array: qjs::JSValue,
        last: &[Node],
        n: usize,
        reader: &mut Reader<'_>,
        depth: usize,
    ) -> Result<bool, FromWire> {
        let mut inner = Inner { next: n + 1, end: last[n].end as usize };
        let mut index = 0;
        while reader.peek()? != wire::END {
            if index == last[n].len {
                return Ok(false);
            }
            let old = inner.at(last, index);
            // SAFETY: an element of a plain array (only `length` in its shape): the read runs
            // no script code.
            let get = |ctx| unsafe { qjs::JS_GetPropertyUint32(ctx, array, index) };
            if let Some(item) = self.item(last, old, get, reader, depth, index)? {
                // Defined, not assigned: an array whose length outgrew its items would look
                // an index up on its prototype, where a script may have put a setter.
                // SAFETY: `array` is an array of this context; the call takes `item` over.
                let flags = qjs::JS_PROP_C_W_E as i32;
                if unsafe { qjs::JS_DefinePropertyValueUint32(self.ctx, array, index, item, flags) } < 0 {
                    return Err(FromWire::Engine(rquickjs::Error::Exception));
                }
            }
            index += 1;
        }
        reader.u8()?;
        Ok(index == last[n].len)
    }

    /// The next value of a container being refilled: `None` when it was the last call's
    /// container `old` in the same slot (read with `get`), refilled in place; else a value
    /// built afresh, to be stored under `slot`.
    fn item(
        &mut self,
        last: &[Node],
        old: Option<usize>,
        get: impl FnOnce(*mut qjs::JSContext) -> qjs::JSValue,
        reader: &mut Reader<'_>,
        depth: usize,
        slot: qjs::JSAtom,
    ) -> Result<Option<qjs::JSValue>, FromWire> {
        if let Some(old) = old.filter(|&old| reader.peek().is_ok_and(|tag| same_kind(tag, &last[old]))) {
            let start = reader.clone();
            // The guard gives the reference read back.
            let inside = OwnedValue { ctx: self.ctx, value: get(self.ctx) };
            if self.reachable_only_here(inside.value, &last[old])
                && self.refill(inside.value, last, old, reader, depth + 1)?
            {
                return Ok(None);
            }
            *reader = start;
        }
        self.value(reader, depth + 1, Some(slot)).map(Some)
    }

    /// Whether `value`, just read from a container no script can reach, is still the last
    /// call's `node`, referenced by that container alone (and the read), and unchanged.
    fn reachable_only_here(&self, value: qjs::JSValue, node: &Node) -> bool {
        let Some(layout) = self.layout else { return false };
        // SAFETY: the value is alive while the caller holds the reference it read; the
        // address test comes first, so only an object is read.
        super::object_ptr(value) == node.object
            && unsafe { layout.ref_count(value) } == 2
            && self.unchanged(layout, value, node)
    }

    /// Whether `value`, an object we hold, is still what `node` was built as: a plain
    /// extensible object with the shape of the holder of its keys, or a plain extensible
    /// array of the same length; and no weak collection refers to it.
    fn unchanged(&self, layout: Layout, value: qjs::JSValue, node: &Node) -> bool {
        // SAFETY: the caller holds a reference to `value` and the table to the holder; the
        // class and shape are read first, so the length slot is read only in a plain array
        // and `JS_IsExtensible` meets no proxy (whose traps are script code).
        unsafe {
            let kind = if node.sequence == ARRAY_NODE {
                layout.is_plain_array(value) && layout.array_length(value) == Some(i64::from(node.len))
            } else {
                layout.is_plain(value) && layout.shape(value) == layout.shape(self.keys.holder(node.sequence))
            };
            kind && !layout.weakly_held(value) && qjs::JS_IsExtensible(self.ctx, value) == 1
        }
    }
}

/// The containers inside one being refilled, listed in slot order after it: the next one,
/// if any, is in this slot or a later one.
struct Inner {
    next: usize,
    end: usize,
}

impl Inner {
    /// The last call's container in `slot`, if there was one.
    fn at(&mut self, last: &[Node], slot: u32) -> Option<usize> {
        (self.next < self.end && last[self.next].atom == slot).then(|| {
            let old = self.next;
            self.next = last[old].end as usize;
            old
        })
    }
}

/// Whether the wire value with tag `tag` is a container of the same kind as `node`.
fn same_kind(tag: u8, node: &Node) -> bool {
    match tag {
        wire::ARRAY => node.sequence == ARRAY_NODE,
        wire::OBJECT => node.sequence != ARRAY_NODE,
        _ => false,
    }
}

/// Stores `item` as the value of the `index`-th key of `object`, as an assignment to that
/// writable data property does (no setter, no lookup by key: the shape, its holder's, says
/// where the value lies), and frees the value it replaces.
///
/// # Safety
/// `object` is a live object of `ctx` whose shape is its holder's and has an `index`-th key;
/// the slot takes over `item`.
unsafe fn store(
    ctx: *mut qjs::JSContext,
    layout: Layout,
    object: qjs::JSValue,
    index: usize,
    item: qjs::JSValue,
) {
    unsafe {
        let slot = layout.value_slot(object, index);
        let old = slot.read_unaligned();
        slot.write_unaligned(item);
        free_value(ctx, old);
    }
}
