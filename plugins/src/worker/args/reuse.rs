//! [`Kept`]: the argument objects of a runtime's last call, refilled with the next call's
//! values instead of being freed and built again. Building an object costs an allocation
//! and one property definition per key (each a shape step and a growing property array),
//! freeing it as much again; refilling costs one assignment per value. For the `status/http`
//! check's ten small objects that was most of the worker's share of a call.
//!
//! A script may keep anything it was given (`globalThis.o = observation`, a closure, the
//! verdict's details, a `WeakMap` key) and must then find it unchanged later, so an object is
//! refilled only when no script value can reach it any more and its property table is still
//! the one it was built with:
//! - the argument itself is referenced by us alone (reference count 1), and every object
//!   inside it only by the property it was built under (count 2 while we read it through
//!   that property): nothing else — global, closure, result, another argument — holds it;
//! - no weak collection refers to it (weak references are not counted);
//! - it is a plain object that is still extensible and whose shape is the one the key
//!   table's holder for its keys has: the same keys in the same order, all writable,
//!   enumerable and configurable data properties, and the same prototype (adding, deleting,
//!   redefining or freezing a key, or a new prototype, gives an object another shape; the
//!   holder keeps the expected shape alive, so its address is never reused meanwhile);
//! - the next call's object has exactly those keys in that order.
//!
//! Then every value is assigned again (an own writable data property: no setter runs, no
//! script code at all). Anything that fails a test is built afresh as before, and the old
//! object, still referenced by whoever kept it, keeps its values. Arrays are always built
//! afresh, and so are the objects in them. The reads need the engine's object layout
//! ([`Layout`]); without it, nothing is kept.

use std::ffi::c_void;

use rquickjs::{Value, qjs};

use super::keys::{MAX_SEQUENCE, ROOT};
use super::{Builder, FromWire, Layout, OwnedValue};
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

/// An object of the last call's arguments that was built with tracked keys, listed in wire
/// order (an object, then the objects inside it).
#[derive(Debug, Clone, Copy)]
pub(super) struct Node {
    /// Its address: only compared, so a freed object is never read through it.
    pub(super) object: *mut c_void,
    /// The key sequence of all its keys (whose holder has its shape).
    pub(super) sequence: u32,
    /// The key it is stored under in the object before it (`JS_ATOM_NULL` for an argument).
    pub(super) atom: qjs::JSAtom,
    /// The index after the last node inside it.
    pub(super) end: u32,
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
            if reader.peek()? == wire::OBJECT && alone && self.unchanged(layout, root.value, node.sequence) {
                reader.u8()?;
                let from = reader.clone();
                if self.refill(root.value, &last.nodes, root.node, reader, 1)? {
                    // SAFETY: a new reference for the call; ours stays kept.
                    return Ok(unsafe { qjs::JS_DupValue(self.ctx, root.value) });
                }
                *reader = from;
                return self.object(reader, 1, Some(qjs::JS_ATOM_NULL));
            }
        }
        self.value(reader, 1, Some(qjs::JS_ATOM_NULL))
    }

    /// Assigns the wire object at `reader` (its tag read) to the properties of `object`, the
    /// last call's node `n`, which no script can reach (see the module docs). False when its
    /// keys are not the object's: the object is then half-written, and the caller lets it go
    /// and builds afresh from where this object began.
    fn refill(
        &mut self,
        object: qjs::JSValue,
        last: &[Node],
        n: usize,
        reader: &mut Reader<'_>,
        depth: usize,
    ) -> Result<bool, FromWire> {
        if depth >= wire::MAX_DEPTH {
            return Err(WireError::TooDeep.into());
        }
        let node = last[n];
        let mut path = [ROOT; MAX_SEQUENCE];
        let Some(len) = self.keys.path(node.sequence, &mut path) else { return Ok(false) };
        let mark = self.made.len();
        self.made.push(Node { end: 0, ..node });
        let mut inner = n + 1;
        let mut count = 0;
        while let Some(key) = reader.key()? {
            let atom = path[..len].get(count).and_then(|&to| self.keys.last_key_is(to, key));
            let Some(atom) = atom else {
                self.made.truncate(mark);
                return Ok(false);
            };
            let to = path[count];
            count += 1;
            // The objects inside this one are listed in key order, so the next one, if any,
            // belongs to this key or a later one.
            let old = (inner < node.end as usize && last[inner].atom == atom).then(|| {
                let old = inner;
                inner = last[old].end as usize;
                old
            });
            let item = match (reader.peek()?, old) {
                (wire::OBJECT, Some(old)) => {
                    reader.u8()?;
                    let start = reader.clone();
                    // SAFETY: an own data property of `object` (its shape is its holder's):
                    // the read runs no script code; the guard gives the reference back.
                    let inside = OwnedValue {
                        ctx: self.ctx,
                        value: unsafe { qjs::JS_GetProperty(self.ctx, object, atom) },
                    };
                    if self.reachable_only_here(inside.value, &last[old])
                        && self.refill(inside.value, last, old, reader, depth + 1)?
                    {
                        continue;
                    }
                    *reader = start;
                    self.object(reader, depth + 1, Some(atom))?
                }
                (wire::STRING, _) => {
                    reader.u8()?;
                    let bytes = reader.str_body()?;
                    self.keys.string(self.ctx, to, bytes)?
                }
                _ => self.value(reader, depth + 1, Some(atom))?,
            };
            // SAFETY: the key is a writable data property of `object` (its shape is the
            // holder's), so the value is stored and no setter runs; the call takes it over.
            if unsafe { qjs::JS_SetProperty(self.ctx, object, atom, item) } < 0 {
                return Err(FromWire::Engine(rquickjs::Error::Exception));
            }
        }
        if count != len {
            self.made.truncate(mark);
            return Ok(false);
        }
        self.made[mark].end = self.made.len() as u32;
        Ok(true)
    }

    /// Whether `value`, just read from a property of an object no script can reach, is still
    /// the last call's `node`, referenced by that property alone (and the read), and unchanged.
    fn reachable_only_here(&self, value: qjs::JSValue, node: &Node) -> bool {
        let Some(layout) = self.layout else { return false };
        // SAFETY: the value is alive while the caller holds the reference it read; the
        // address test comes first, so only an object is read.
        super::object_ptr(value) == node.object
            && unsafe { layout.ref_count(value) } == 2
            && self.unchanged(layout, value, node.sequence)
    }

    /// Whether `value`, an object we hold, is a plain extensible object with the shape of the
    /// holder of `sequence` and no weak reference to it.
    fn unchanged(&self, layout: Layout, value: qjs::JSValue, sequence: u32) -> bool {
        // SAFETY: the caller holds a reference to `value` and the table to the holder; the
        // class is read first, so `JS_IsExtensible` meets no proxy (whose trap is script code).
        unsafe {
            layout.is_plain(value)
                && !layout.weakly_held(value)
                && qjs::JS_IsExtensible(self.ctx, value) == 1
                && layout.shape(value) == layout.shape(self.keys.holder(sequence))
        }
    }
}
