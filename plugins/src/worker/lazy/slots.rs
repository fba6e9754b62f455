//! The own properties of one lazy object, in the order the object has them: the keys read
//! from the wire first, then the keys a script added. Both the list and its hash index live
//! in the script's heap (`js_malloc`), so the heap limit counts them.

use rquickjs::qjs;

use super::Thrown;

/// Above this many keys a lookup goes through the hash index instead of a scan.
const SCAN_MAX: u32 = 8;

/// What a key is, for the order of `Object.keys`: array indices ascending, then strings,
/// then symbols, each in the order they were added.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Index(u32),
    String,
    Symbol,
}

/// One own property. A data property still in the wire holds `JS_UNINITIALIZED` and the
/// place of its value; an accessor (`flags` has `JS_PROP_GETSET`) holds its getter in
/// `value` and its setter in `setter` (`undefined` when absent).
pub struct Slot {
    pub atom: qjs::JSAtom,
    pub kind: KeyKind,
    pub flags: i32,
    pub value: qjs::JSValue,
    pub setter: qjs::JSValue,
    /// Offset of the value's tag in the piece, and its container ordinal when it is one.
    pub wire: u32,
    pub ordinal: u32,
}

impl Slot {
    /// A data property whose value is still in the wire, as `JSON.parse` would define it.
    pub fn from_wire(atom: qjs::JSAtom, kind: KeyKind, wire: u32, ordinal: u32) -> Self {
        Slot {
            atom,
            kind,
            flags: qjs::JS_PROP_C_W_E as i32,
            value: qjs::JS_UNINITIALIZED,
            setter: qjs::JS_UNDEFINED,
            wire,
            ordinal,
        }
    }

    pub fn is_accessor(&self) -> bool {
        self.flags & qjs::JS_PROP_GETSET as i32 != 0
    }

    pub fn in_wire(&self) -> bool {
        // SAFETY: reads the tag only.
        !self.is_accessor() && unsafe { qjs::JS_IsUninitialized(self.value) }
    }
}

/// The slots and, past [`SCAN_MAX`] of them, an open-addressing index of `slot + 1` by atom.
pub struct Slots {
    items: *mut Slot,
    len: u32,
    cap: u32,
    index: *mut u32,
    index_mask: u32,
}

impl Slots {
    pub const fn new() -> Self {
        Self { items: std::ptr::null_mut(), len: 0, cap: 0, index: std::ptr::null_mut(), index_mask: 0 }
    }

    pub fn as_slice(&self) -> &[Slot] {
        if self.items.is_null() {
            return &[];
        }
        // SAFETY: `len` slots are initialised.
        unsafe { std::slice::from_raw_parts(self.items, self.len as usize) }
    }

    pub fn get_mut(&mut self, at: usize) -> &mut Slot {
        assert!(at < self.len as usize);
        // SAFETY: in bounds, checked above.
        unsafe { &mut *self.items.add(at) }
    }

    pub fn find(&self, atom: qjs::JSAtom) -> Option<usize> {
        if self.index.is_null() {
            return self.as_slice().iter().position(|s| s.atom == atom);
        }
        let mut at = hash(atom) & self.index_mask;
        loop {
            // SAFETY: `at` is masked into the index; entries are 0 or a slot number + 1.
            let entry = unsafe { *self.index.add(at as usize) };
            if entry == 0 {
                return None;
            }
            if self.as_slice()[entry as usize - 1].atom == atom {
                return Some(entry as usize - 1);
            }
            at = (at + 1) & self.index_mask;
        }
    }

    /// Appends a slot (whose atom is not in the list yet), taking over its references.
    /// On failure the slot's references are given back and the list is unchanged.
    pub fn push(&mut self, ctx: *mut qjs::JSContext, slot: Slot) -> Result<(), Thrown> {
        if let Err(e) = self.reserve(ctx, 1) {
            // SAFETY: the slot's references are given back once.
            unsafe { free_slot(qjs::JS_GetRuntime(ctx), &slot) };
            return Err(e);
        }
        // SAFETY: `len < cap` after `reserve`.
        unsafe { self.items.add(self.len as usize).write(slot) };
        self.len += 1;
        if !self.index.is_null() {
            self.insert_index(self.len - 1);
        }
        Ok(())
    }

    /// Room for `more` slots, in the list and (past [`SCAN_MAX`]) in an index at most half
    /// full.
    pub fn reserve(&mut self, ctx: *mut qjs::JSContext, more: u32) -> Result<(), Thrown> {
        let needed = self.len + more;
        if needed > self.cap {
            let cap = needed.max(self.cap * 2).max(4);
            // SAFETY: grows the block the list owns (or makes the first one).
            let items =
                unsafe { qjs::js_realloc(ctx, self.items.cast(), (cap as usize * size_of::<Slot>()) as _) };
            if items.is_null() {
                return Err(Thrown);
            }
            self.items = items.cast();
            self.cap = cap;
        }
        let size = (needed * 2).next_power_of_two();
        if needed > SCAN_MAX && (self.index.is_null() || size > self.index_mask + 1) {
            // SAFETY: a fresh zeroed block; the old one is freed once.
            let index = unsafe { qjs::js_mallocz(ctx, (size as usize * size_of::<u32>()) as _) };
            if index.is_null() {
                return Err(Thrown);
            }
            if !self.index.is_null() {
                unsafe { qjs::js_free(ctx, self.index.cast()) };
            }
            self.index = index.cast();
            self.index_mask = size - 1;
            self.fill_index();
        }
        Ok(())
    }

    /// Removes slot `at`, keeping the others' order, and gives its references back.
    pub fn remove(&mut self, ctx: *mut qjs::JSContext, at: usize) {
        let len = self.len as usize;
        assert!(at < len);
        // SAFETY: the slot is read out once, the later ones move down by one.
        unsafe {
            let slot = self.items.add(at).read();
            std::ptr::copy(self.items.add(at + 1), self.items.add(at), len - at - 1);
            free_slot(qjs::JS_GetRuntime(ctx), &slot);
        }
        self.len -= 1;
        if !self.index.is_null() {
            // Slot numbers moved: rebuild in place (same size, so it cannot fail).
            // SAFETY: clears the index the list owns.
            unsafe { std::ptr::write_bytes(self.index, 0, self.index_mask as usize + 1) };
            self.fill_index();
        }
    }

    fn fill_index(&mut self) {
        for at in 0..self.len {
            self.insert_index(at);
        }
    }

    fn insert_index(&mut self, slot: u32) {
        let mut at = hash(self.as_slice()[slot as usize].atom) & self.index_mask;
        // SAFETY: masked positions; the index is at most half full, so a free entry exists.
        unsafe {
            while *self.index.add(at as usize) != 0 {
                at = (at + 1) & self.index_mask;
            }
            *self.index.add(at as usize) = slot + 1;
        }
    }

    /// Marks the values the slots hold for the engine's cycle collector.
    pub fn mark(&self, rt: *mut qjs::JSRuntime, mark: qjs::JS_MarkFunc) {
        for slot in self.as_slice() {
            // SAFETY: marking reads the values without taking references.
            unsafe {
                qjs::JS_MarkValue(rt, slot.value, mark);
                qjs::JS_MarkValue(rt, slot.setter, mark);
            }
        }
    }

    /// Gives back every reference and block the list holds.
    pub fn free(&mut self, rt: *mut qjs::JSRuntime) {
        for slot in self.as_slice() {
            // SAFETY: each slot's references are released once.
            unsafe { free_slot(rt, slot) };
        }
        // SAFETY: the blocks the list owns, freed once.
        unsafe {
            qjs::js_free_rt(rt, self.items.cast());
            qjs::js_free_rt(rt, self.index.cast());
        }
        *self = Self::new();
    }
}

/// # Safety
/// The slot's references are held by the caller and given back once.
unsafe fn free_slot(rt: *mut qjs::JSRuntime, slot: &Slot) {
    unsafe {
        qjs::JS_FreeValueRT(rt, slot.value);
        qjs::JS_FreeValueRT(rt, slot.setter);
        qjs::JS_FreeAtomRT(rt, slot.atom);
    }
}

fn hash(atom: qjs::JSAtom) -> u32 {
    atom.wrapping_mul(0x9E37_79B1).rotate_left(16)
}
