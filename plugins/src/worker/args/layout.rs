//! [`Layout`]: reads the few fields of an engine object that tell whether a script can still
//! reach it, and whether its property table is still the one it was built with: the
//! reference count, the class, the shape (the hidden class: keys, their flags, the
//! prototype) and the list of weak references (a `WeakMap` or `WeakSet` entry keyed by it);
//! and, for an object whose shape holds data properties only, the slot of each value.
//!
//! The engine's public API has no call for any of them but the class, so they are read at
//! their offsets in this engine build (QuickJS-ng as vendored by `rquickjs-sys` 0.14, 64-bit:
//! the reference count in the allocator's 8-byte block header just before the object, then
//! `JSObject { link: list_head, flags: u16, class_id: u16, shape, prop, first_weak_ref, .. }`,
//! `prop` an array of 16-byte `JSProperty` unions whose first member is the `JSValue` of a
//! data property, in the shape's key order).
//! [`Layout::probe`] checks every one of them on objects it makes, once per runtime, and
//! answers `None` when any read does not behave as the field would: a different engine build
//! then only loses argument reuse (see [`super::reuse`]), never correctness.

use std::ffi::c_void;

use rquickjs::qjs;

/// Size of a `JSProperty` (a union of a `JSValue` and two pointers).
const PROPERTY_SIZE: usize = 16;

/// The reference count is the `int` just before the object's body.
const REF_COUNT_BEFORE: usize = 4;
const CLASS_ID_AT: usize = 18;
const SHAPE_AT: usize = 24;
const PROPS_AT: usize = 32;
const WEAK_REFS_AT: usize = 40;

/// Proof that this engine build lays objects out as the reads below expect, with what a
/// plain object and an array of the probed context look like.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    /// The class ids of a plain object (`{}`) and of an array.
    object_class: u16,
    array_class: u16,
    /// The shape every array of the context starts with (only `length`), which the context
    /// keeps alive for as long as it lives.
    array_shape: *const c_void,
}

impl Layout {
    /// Checks the layout on objects made for the purpose in `ctx`, before any script ran in
    /// it (so `WeakMap` is the engine's own).
    pub fn probe(ctx: *mut qjs::JSContext) -> Option<Layout> {
        if cfg!(not(all(target_pointer_width = "64", target_endian = "little"))) {
            return None;
        }
        let layout = probe_with(Made { ctx, values: Vec::new() });
        if layout.is_none() {
            // SAFETY: clears an exception a failed step may have left (undefined when none).
            unsafe { qjs::JS_FreeValue(ctx, qjs::JS_GetException(ctx)) };
        }
        layout
    }

    /// The object's reference count.
    ///
    /// # Safety
    /// `value` is a live object of the runtime the probe ran in.
    pub unsafe fn ref_count(self, value: qjs::JSValue) -> i32 {
        // SAFETY: as the caller promises; the block header precedes every engine allocation.
        unsafe { qjs::JS_VALUE_GET_PTR(value).cast::<u8>().sub(REF_COUNT_BEFORE).cast::<i32>().read() }
    }

    /// Whether the object is a plain object (not an array, a function, a proxy, a class of ours).
    ///
    /// # Safety
    /// As [`Layout::ref_count`].
    pub unsafe fn is_plain(self, value: qjs::JSValue) -> bool {
        unsafe { read::<u16>(value, CLASS_ID_AT) == self.object_class }
    }

    /// Whether the object is an array with no property but its elements and `length`.
    ///
    /// # Safety
    /// As [`Layout::ref_count`].
    pub unsafe fn is_plain_array(self, value: qjs::JSValue) -> bool {
        unsafe {
            read::<u16>(value, CLASS_ID_AT) == self.array_class && self.shape(value) == self.array_shape
        }
    }

    /// The object's shape: two live objects with the same shape have the same keys in the same
    /// order with the same flags, and the same prototype.
    ///
    /// # Safety
    /// As [`Layout::ref_count`].
    pub unsafe fn shape(self, value: qjs::JSValue) -> *const c_void {
        unsafe { read::<*const c_void>(value, SHAPE_AT) }
    }

    /// The slot holding the value of the object's `index`-th property (in the order its
    /// keys were defined). Storing a value there is what an assignment to a writable data
    /// property does (the engine's `set_value`): the slot takes the new reference and the
    /// old value is the caller's to free.
    ///
    /// # Safety
    /// As [`Layout::ref_count`], and the object's shape lists at least `index + 1`
    /// properties, the `index`-th a data property (not an accessor, a variable reference or
    /// a lazily made builtin). The slot is valid until the object's keys change.
    pub unsafe fn value_slot(self, value: qjs::JSValue, index: usize) -> *mut qjs::JSValue {
        unsafe { read::<*mut qjs::JSValue>(value, PROPS_AT).cast::<u8>().add(index * PROPERTY_SIZE).cast() }
    }

    /// The `length` of a plain array (see [`Layout::is_plain_array`]), read from its slot:
    /// the only key of the shape every array starts with. `None` for a length that is not
    /// an `int` (past 2³¹ - 1).
    ///
    /// # Safety
    /// As [`Layout::ref_count`], and `value` is a plain array.
    pub unsafe fn array_length(self, value: qjs::JSValue) -> Option<i64> {
        // SAFETY: as the caller promises; the tag says what the value holds.
        unsafe {
            let length = self.value_slot(value, 0).read_unaligned();
            (qjs::JS_VALUE_GET_TAG(length) == qjs::JS_TAG_INT)
                .then(|| i64::from(qjs::JS_VALUE_GET_INT(length)))
        }
    }

    /// Whether a weak collection refers to the object (weak references are not counted).
    ///
    /// # Safety
    /// As [`Layout::ref_count`].
    pub unsafe fn weakly_held(self, value: qjs::JSValue) -> bool {
        unsafe { !read::<*const c_void>(value, WEAK_REFS_AT).is_null() }
    }
}

/// Reads a field of the object `value` points to.
///
/// # Safety
/// `value` is a live engine object and a `T` lies at `offset` in it.
unsafe fn read<T: Copy>(value: qjs::JSValue, offset: usize) -> T {
    unsafe { qjs::JS_VALUE_GET_PTR(value).cast::<u8>().add(offset).cast::<T>().read_unaligned() }
}

/// Values the probe made, freed when it ends.
struct Made {
    ctx: *mut qjs::JSContext,
    values: Vec<qjs::JSValue>,
}

impl Made {
    /// Keeps a value the engine returned; `None` for an exception.
    fn keep(&mut self, value: qjs::JSValue) -> Option<qjs::JSValue> {
        // SAFETY: reads the tag only.
        if unsafe { qjs::JS_IsException(value) } {
            return None;
        }
        self.values.push(value);
        Some(value)
    }
}

impl Drop for Made {
    fn drop(&mut self) {
        for value in self.values.drain(..).rev() {
            // SAFETY: each value is owned here and released once.
            unsafe { qjs::JS_FreeValue(self.ctx, value) };
        }
    }
}

/// Each field read must follow what the engine does to the object: the count follows a
/// duplicated reference, the class tells an object from an array, the shape is shared by
/// objects with the same keys and changes with a key added, the value slots hold the values
/// defined in their order (an array's first one its length), the weak list fills when a
/// `WeakMap` takes the object as a key.
fn probe_with(mut made: Made) -> Option<Layout> {
    let ctx = made.ctx;
    let probe = |made: &mut Made| -> Option<Layout> {
        let mut layout = Layout { object_class: 0, array_class: 0, array_shape: std::ptr::null() };
        // SAFETY: every value below is made here, alive until `made` drops, and read only
        // at the offsets being probed; a wrong offset reads memory inside the object body.
        unsafe {
            let a = made.keep(qjs::JS_NewObject(ctx))?;
            let b = made.keep(qjs::JS_NewObject(ctx))?;
            let array = made.keep(qjs::JS_NewArray(ctx))?;
            let counts = layout.ref_count(a) == 1 && {
                let again = qjs::JS_DupValue(ctx, a);
                let two = layout.ref_count(a) == 2;
                qjs::JS_FreeValue(ctx, again);
                two && layout.ref_count(a) == 1
            };
            let classes = read::<u16>(a, CLASS_ID_AT) == read::<u16>(b, CLASS_ID_AT)
                && read::<u16>(a, CLASS_ID_AT) != read::<u16>(array, CLASS_ID_AT);
            let x = qjs::JS_NewAtomLen(ctx, c"x".as_ptr(), 1);
            let y = qjs::JS_NewAtomLen(ctx, c"y".as_ptr(), 1);
            let flags = qjs::JS_PROP_C_W_E as i32;
            let defined = qjs::JS_DefinePropertyValue(ctx, a, x, qjs::JS_NULL, flags) >= 0
                && qjs::JS_DefinePropertyValue(ctx, b, x, qjs::JS_NULL, flags) >= 0;
            let shared = defined && layout.shape(a) == layout.shape(b) && !layout.shape(a).is_null();
            let grown = qjs::JS_DefinePropertyValue(ctx, a, y, qjs::JS_NULL, flags) >= 0
                && layout.shape(a) != layout.shape(b);
            let c = made.keep(qjs::JS_NewObject(ctx))?;
            // Followed only once the shape reads proved right: `prop` is the pointer after it.
            let slots = shared
                && grown
                && qjs::JS_DefinePropertyValue(ctx, c, x, qjs::JS_MKVAL(qjs::JS_TAG_INT, 7), flags) >= 0
                && qjs::JS_DefinePropertyValue(ctx, c, y, qjs::JS_MKVAL(qjs::JS_TAG_INT, 9), flags) >= 0
                && [(0, 7), (1, 9)].iter().all(|&(index, expected)| {
                    let slot = layout.value_slot(c, index).read_unaligned();
                    qjs::JS_VALUE_GET_TAG(slot) == qjs::JS_TAG_INT && qjs::JS_VALUE_GET_INT(slot) == expected
                });
            qjs::JS_FreeAtom(ctx, x);
            qjs::JS_FreeAtom(ctx, y);
            let unheld = !layout.weakly_held(a) && !layout.weakly_held(b);
            let global = made.keep(qjs::JS_GetGlobalObject(ctx))?;
            let constructor = made.keep(qjs::JS_GetPropertyStr(ctx, global, c"WeakMap".as_ptr()))?;
            let map = made.keep(qjs::JS_CallConstructor(ctx, constructor, 0, std::ptr::null_mut()))?;
            let set = made.keep(qjs::JS_GetPropertyStr(ctx, map, c"set".as_ptr()))?;
            let mut entry = [a, qjs::JS_NULL];
            made.keep(qjs::JS_Call(ctx, set, map, 2, entry.as_mut_ptr()))?;
            let held = layout.weakly_held(a) && !layout.weakly_held(b);
            let other = made.keep(qjs::JS_NewArray(ctx))?;
            let arrays = layout.shape(array) == layout.shape(other) && layout.shape(array) != layout.shape(a);
            let lengths = arrays
                && slots
                && layout.array_length(other) == Some(0)
                && qjs::JS_DefinePropertyValueUint32(ctx, other, 0, qjs::JS_NULL, flags) >= 0
                && qjs::JS_DefinePropertyValueUint32(ctx, other, 1, qjs::JS_NULL, flags) >= 0
                && layout.shape(other) == layout.shape(array)
                && layout.array_length(other) == Some(2);
            layout.object_class = read::<u16>(a, CLASS_ID_AT);
            layout.array_class = read::<u16>(array, CLASS_ID_AT);
            layout.array_shape = layout.shape(array);
            (counts && classes && shared && grown && slots && unheld && held && arrays && lengths)
                .then_some(layout)
        }
    };
    probe(&mut made)
}
