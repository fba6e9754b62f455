//! Property definition on a lazy object: what the engine does for a property of an
//! ordinary object (`JS_DefineProperty` and `JS_CreateProperty` in quickjs.c, the
//! specification's ValidateAndApplyPropertyDescriptor), done on the object's slots. Every
//! write reaches it: assignment (as a definition of the value), new keys, `defineProperty`,
//! `Object.freeze` and `Object.seal`.

use std::ffi::{CStr, c_int};

use rquickjs::qjs;

use super::slots::{KeyKind, Slot};
use super::{Lazy, Thrown, canonical_index, decoded, tagged_index, value_of};

const C: i32 = qjs::JS_PROP_CONFIGURABLE as i32;
const W: i32 = qjs::JS_PROP_WRITABLE as i32;
const E: i32 = qjs::JS_PROP_ENUMERABLE as i32;
const GETSET: i32 = qjs::JS_PROP_GETSET as i32;
const HAS_C: i32 = qjs::JS_PROP_HAS_CONFIGURABLE as i32;
const HAS_W: i32 = qjs::JS_PROP_HAS_WRITABLE as i32;
const HAS_E: i32 = qjs::JS_PROP_HAS_ENUMERABLE as i32;
const HAS_GET: i32 = qjs::JS_PROP_HAS_GET as i32;
const HAS_SET: i32 = qjs::JS_PROP_HAS_SET as i32;
const HAS_VALUE: i32 = qjs::JS_PROP_HAS_VALUE as i32;

pub(super) unsafe extern "C" fn define_own_property(
    ctx: *mut qjs::JSContext,
    object: qjs::JSValue,
    prop: qjs::JSAtom,
    value: qjs::JSValue,
    getter: qjs::JSValue,
    setter: qjs::JSValue,
    flags: c_int,
) -> c_int {
    // SAFETY: the engine calls the hooks with objects of the class; the values are borrowed.
    unsafe {
        let Ok(lazy) = decoded(ctx, object) else { return -1 };
        let outcome = match lazy.slots.find(prop) {
            Some(at) => update(ctx, object, lazy, at, value, getter, setter, flags),
            None => create(ctx, object, lazy, prop, value, getter, setter, flags),
        };
        outcome.unwrap_or(-1)
    }
}

/// Adds a property (`JS_CreateProperty`).
#[allow(clippy::too_many_arguments)]
unsafe fn create(
    ctx: *mut qjs::JSContext,
    object: qjs::JSValue,
    lazy: &mut Lazy,
    prop: qjs::JSAtom,
    value: qjs::JSValue,
    getter: qjs::JSValue,
    setter: qjs::JSValue,
    flags: i32,
) -> Result<c_int, Thrown> {
    // SAFETY: borrowed values are duplicated before they are kept.
    unsafe {
        match qjs::JS_IsExtensible(ctx, object) {
            0 => return refuse(ctx, flags, c"object is not extensible"),
            extensible if extensible < 0 => return Err(Thrown),
            _ => {}
        }
        let kind = key_kind(ctx, prop)?;
        let mut slot = Slot::from_wire(qjs::JS_DupAtom(ctx, prop), kind, 0, 0);
        if flags & (HAS_GET | HAS_SET) != 0 {
            slot.flags = (flags & (C | E)) | GETSET;
            slot.value = accessor(ctx, getter, flags & HAS_GET != 0);
            slot.setter = accessor(ctx, setter, flags & HAS_SET != 0);
        } else {
            slot.flags = flags & (C | W | E);
            slot.value =
                if flags & HAS_VALUE != 0 { qjs::JS_DupValue(ctx, value) } else { qjs::JS_UNDEFINED };
        }
        lazy.slots.push(ctx, slot)?;
    }
    Ok(1)
}

/// Changes an existing property (`JS_DefineProperty` on a property found).
#[allow(clippy::too_many_arguments)]
unsafe fn update(
    ctx: *mut qjs::JSContext,
    object: qjs::JSValue,
    lazy: &mut Lazy,
    at: usize,
    value: qjs::JSValue,
    getter: qjs::JSValue,
    setter: qjs::JSValue,
    flags: i32,
) -> Result<c_int, Thrown> {
    let current = lazy.slots.as_slice()[at].flags;
    if !allowed(current, flags) {
        return unsafe { refuse(ctx, flags, c"property is not configurable") };
    }
    // SAFETY: the slot's own references are freed when replaced; new ones are duplicated.
    unsafe {
        if flags & (HAS_GET | HAS_SET) != 0 {
            let getter = accessor(ctx, getter, true);
            let setter = accessor(ctx, setter, true);
            let slot = lazy.slots.get_mut(at);
            if !slot.is_accessor() {
                qjs::JS_FreeValue(ctx, slot.value);
                slot.flags = (slot.flags & (C | E)) | GETSET;
                slot.value = qjs::JS_UNDEFINED;
            } else if slot.flags & C == 0
                && ((flags & HAS_GET != 0 && !same_object(getter, slot.value))
                    || (flags & HAS_SET != 0 && !same_object(setter, slot.setter)))
            {
                qjs::JS_FreeValue(ctx, getter);
                qjs::JS_FreeValue(ctx, setter);
                return refuse(ctx, flags, c"property is not configurable");
            }
            replace(ctx, &mut slot.value, getter, flags & HAS_GET != 0);
            replace(ctx, &mut slot.setter, setter, flags & HAS_SET != 0);
        } else if flags & (HAS_VALUE | HAS_W) != 0 {
            let slot = lazy.slots.get_mut(at);
            if slot.is_accessor() {
                qjs::JS_FreeValue(ctx, slot.value);
                qjs::JS_FreeValue(ctx, slot.setter);
                slot.flags &= !(GETSET | W);
                slot.value = qjs::JS_UNDEFINED;
                slot.setter = qjs::JS_UNDEFINED;
            } else if slot.flags & (C | W) == 0 && flags & HAS_VALUE != 0 {
                // Read-only and fixed: only the same value may be "defined" again.
                let current = value_of(ctx, object, lazy, at)?;
                if qjs::JS_IsSameValue(ctx, value, current) {
                    return Ok(1);
                }
                return refuse(ctx, flags, c"property is not configurable");
            }
            let slot = lazy.slots.get_mut(at);
            replace(ctx, &mut slot.value, qjs::JS_DupValue(ctx, value), flags & HAS_VALUE != 0);
            if flags & HAS_W != 0 {
                slot.flags = (slot.flags & !W) | (flags & W);
            }
        }
    }
    let mut mask = 0;
    if flags & HAS_C != 0 {
        mask |= C;
    }
    if flags & HAS_E != 0 {
        mask |= E;
    }
    let slot = lazy.slots.get_mut(at);
    slot.flags = (slot.flags & !mask) | (flags & mask);
    Ok(1)
}

/// Whether a definition may change a property with `current` flags
/// (`check_define_prop_flags`).
fn allowed(current: i32, flags: i32) -> bool {
    if current & C == 0 {
        if flags & (HAS_C | C) == HAS_C | C {
            return false;
        }
        if flags & HAS_E != 0 && (flags & E) != (current & E) {
            return false;
        }
        if flags & (HAS_VALUE | HAS_W | HAS_GET | HAS_SET) != 0 {
            let has_accessor = flags & (HAS_GET | HAS_SET) != 0;
            let is_accessor = current & GETSET != 0;
            if has_accessor != is_accessor {
                return false;
            }
            if !has_accessor && current & W == 0 && flags & (HAS_W | W) == HAS_W | W {
                return false;
            }
        }
    }
    true
}

/// A getter or setter to keep: the function given, else `undefined`.
unsafe fn accessor(ctx: *mut qjs::JSContext, function: qjs::JSValue, given: bool) -> qjs::JSValue {
    // SAFETY: a new reference to a function, or a value with no reference count.
    if given && unsafe { qjs::JS_IsFunction(ctx, function) } {
        unsafe { qjs::JS_DupValue(ctx, function) }
    } else {
        qjs::JS_UNDEFINED
    }
}

/// Stores `new` in `place` when `set`, else gives `new` back.
unsafe fn replace(ctx: *mut qjs::JSContext, place: &mut qjs::JSValue, new: qjs::JSValue, set: bool) {
    // SAFETY: the caller owns `new` and the reference in `place`.
    unsafe {
        if set {
            qjs::JS_FreeValue(ctx, std::mem::replace(place, new));
        } else {
            qjs::JS_FreeValue(ctx, new);
        }
    }
}

fn same_object(a: qjs::JSValue, b: qjs::JSValue) -> bool {
    // SAFETY: reads tags and pointers only.
    unsafe {
        qjs::JS_VALUE_GET_TAG(a) == qjs::JS_VALUE_GET_TAG(b)
            && qjs::JS_VALUE_GET_PTR(a) == qjs::JS_VALUE_GET_PTR(b)
    }
}

/// What a key added by a script is, for the order of keys.
unsafe fn key_kind(ctx: *mut qjs::JSContext, atom: qjs::JSAtom) -> Result<KeyKind, Thrown> {
    if let Some(index) = tagged_index(atom) {
        return Ok(KeyKind::Index(index));
    }
    // SAFETY: a new reference to the key's string or symbol, given back below.
    unsafe {
        let key = qjs::JS_AtomToValue(ctx, atom);
        if qjs::JS_IsException(key) {
            return Err(Thrown);
        }
        let kind = if qjs::JS_IsSymbol(key) {
            KeyKind::Symbol
        } else {
            let mut len = 0;
            let text = qjs::JS_ToCStringLen(ctx, &mut len, key);
            if text.is_null() {
                qjs::JS_FreeValue(ctx, key);
                return Err(Thrown);
            }
            let bytes = std::slice::from_raw_parts(text.cast::<u8>(), len);
            let kind = canonical_index(bytes).map_or(KeyKind::String, KeyKind::Index);
            qjs::JS_FreeCString(ctx, text);
            kind
        };
        qjs::JS_FreeValue(ctx, key);
        Ok(kind)
    }
}

/// Refuses a definition: a `TypeError` when the caller asked for one (assignment in strict
/// code, `defineProperty`, `freeze`), else `false` (`Reflect.defineProperty`). Plugin
/// scripts are modules, so strict.
unsafe fn refuse(ctx: *mut qjs::JSContext, flags: i32, message: &CStr) -> Result<c_int, Thrown> {
    if flags & (qjs::JS_PROP_THROW | qjs::JS_PROP_THROW_STRICT) as i32 != 0 {
        // SAFETY: a message without format directives.
        unsafe { qjs::JS_ThrowTypeError(ctx, message.as_ptr()) };
        return Err(Thrown);
    }
    Ok(0)
}
