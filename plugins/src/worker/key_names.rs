//! [`KeyNames`]: the UTF-8 text of the property keys a runtime's results use, kept between
//! calls. A check returns objects with the same few keys every time (`status`, `reason`,
//! `details`…); asking the engine for a key's text costs a conversion and a buffer per key
//! and call, a lookup here a hash probe. The key list of a result object is kept by its
//! shape too, as asking the engine for it allocates and fills a list on every call.

use std::ffi::c_void;
use std::rc::Rc;

use hashbrown::HashMap;
use rquickjs::qjs;

use super::args::Layout;
use super::convert::{Text, with_text};

/// Most keys kept per runtime (their atoms stay alive in the script's heap while kept).
const MAX_KEYS: usize = 1024;

/// Most result shapes whose key lists are kept per runtime (each with its holder objects).
const MAX_SHAPES: usize = 64;

/// Longest key list whose prefixes get holders too (n keys cost n (n + 1) / 2 property
/// definitions once, and n holders).
const MAX_PREFIXED_KEYS: usize = 16;

/// The own enumerable string keys of every object of one shape, in the order the engine
/// lists them, with their texts.
pub type ShapeKeys = Rc<[(qjs::JSAtom, Box<[u8]>)]>;

/// The kept key list of an object's shape, and how to read its values by it.
pub struct KeptShape {
    pub keys: ShapeKeys,
    shape: *const c_void,
    layout: Layout,
}

impl KeptShape {
    /// A new reference to the value of the `index`-th key of the list, read from its slot
    /// while `object` still has the shape the list is for (the holder's: data properties
    /// only, defined in the list's order); `None` once a getter run meanwhile changed its
    /// keys, so the caller reads it by key.
    ///
    /// # Safety
    /// `object` is the live object the list was found for, and `index` within the list.
    pub unsafe fn value(
        &self,
        ctx: *mut qjs::JSContext,
        object: qjs::JSValue,
        index: usize,
    ) -> Option<qjs::JSValue> {
        // SAFETY: as the caller promises; the shape, kept alive by its holder, names no
        // other shape, so the same address means the same keys in the same slots.
        unsafe {
            (self.layout.shape(object) == self.shape)
                .then(|| qjs::JS_DupValue(ctx, self.layout.value_slot(object, index).read_unaligned()))
        }
    }
}

/// Key texts by atom, and key lists by shape. Each kept atom holds a reference, so its
/// number keeps naming the same text for as long as the entry lives.
///
/// A kept key list comes with a holder: an object of ours, never handed to a script, built
/// with the same keys and found to have the same shape. The holder keeps that shape alive
/// (so its address names no other shape) and shared (the engine changes a shape in place
/// only when one object uses it; any other object changing its keys moves to a new shape),
/// so every object with that shape has exactly the kept keys, however a script changed it.
#[derive(Default)]
pub struct KeyNames {
    names: HashMap<qjs::JSAtom, Box<[u8]>>,
    layout: Option<Layout>,
    /// Shape address → its holder and key list, or `None` for a shape no holder matched
    /// (an address reused by another shape then only misses the cache).
    /// The holders are the shape's own and, for a short key list, one per shorter prefix
    /// of it: an object literal passes through those shapes on its way (one key defined
    /// after the other), and a shape nothing keeps is made and freed again on every call.
    shapes: HashMap<usize, Option<(Vec<qjs::JSValue>, ShapeKeys)>>,
}

impl KeyNames {
    /// Key texts, and key lists by shape when the engine's object `layout` is known.
    pub fn new(layout: Option<Layout>) -> Self {
        Self { layout, ..Self::default() }
    }

    /// The kept key list of `object`'s shape; `None` when none is kept (not a plain object,
    /// a shape not seen or not matched).
    ///
    /// # Safety
    /// `object` is a live object of this runtime.
    pub unsafe fn shape_keys(&self, object: qjs::JSValue) -> Option<KeptShape> {
        let layout = self.layout?;
        // SAFETY: as the caller promises.
        if !unsafe { layout.is_plain(object) } {
            return None;
        }
        let shape = unsafe { layout.shape(object) };
        let (_, keys) = self.shapes.get(&(shape as usize))?.as_ref()?;
        Some(KeptShape { keys: keys.clone(), shape, layout })
    }

    /// Keeps `keys`, just read from `object`, as the key list of its shape when a holder
    /// with these keys gets the same shape (see [`KeyNames`]); only the first
    /// [`MAX_SHAPES`] shapes are tried.
    ///
    /// # Safety
    /// `object` is a live object of this runtime and `keys` its own enumerable string keys.
    pub unsafe fn learn_shape(
        &mut self,
        ctx: *mut qjs::JSContext,
        object: qjs::JSValue,
        keys: &[qjs::JSPropertyEnum],
    ) {
        let Some(layout) = self.layout else { return };
        // SAFETY: as the caller promises.
        if !unsafe { layout.is_plain(object) } || self.shapes.len() >= MAX_SHAPES {
            return;
        }
        let shape = unsafe { layout.shape(object) } as usize;
        if self.shapes.contains_key(&shape) {
            return;
        }
        let mut kept = Vec::with_capacity(keys.len());
        for key in keys {
            match self.with(ctx, key.atom, |text| Box::<[u8]>::from(text)) {
                Some(text) => kept.push((key.atom, text)),
                None => break,
            }
        }
        // SAFETY: the holder is alive until freed below or by `release`.
        let holder = (kept.len() == keys.len()).then(|| unsafe { new_holder(ctx, keys) }).flatten();
        let entry = match holder {
            Some(holder) if unsafe { layout.shape(holder) } as usize == shape => {
                let mut holders = vec![holder];
                if keys.len() <= MAX_PREFIXED_KEYS {
                    // SAFETY: as above.
                    holders
                        .extend((1..keys.len()).filter_map(|end| unsafe { new_holder(ctx, &keys[..end]) }));
                }
                Some((holders, kept.into()))
            }
            other => {
                // SAFETY: a holder of ours that does not match, freed once; a key text that
                // could not be read left an exception, cleared as only the cache misses.
                other.inspect(|&holder| unsafe { qjs::JS_FreeValue(ctx, holder) });
                unsafe { qjs::JS_FreeValue(ctx, qjs::JS_GetException(ctx)) };
                None
            }
        };
        self.shapes.insert(shape, entry);
    }

    /// Hands the text of `atom` to `f`: the kept copy, or the engine's (kept for next time
    /// while there is room). `None` when the engine could not convert it.
    pub fn with<R>(
        &mut self,
        ctx: *mut qjs::JSContext,
        atom: qjs::JSAtom,
        f: impl FnOnce(&[u8]) -> R,
    ) -> Option<R> {
        if let Some(name) = self.names.get(&atom) {
            return Some(f(name));
        }
        let result = with_text(ctx, Text::Key(atom), |name| {
            if self.names.len() < MAX_KEYS {
                // SAFETY: the entry's own reference, given back by `release`.
                unsafe { qjs::JS_DupAtom(ctx, atom) };
                self.names.insert(atom, name.into());
            }
            f(name)
        });
        result.ok()
    }

    /// Gives the kept atoms back to the engine; called once, before the context goes.
    pub fn release(&mut self, ctx: *mut qjs::JSContext) {
        for (holders, _) in self.shapes.drain().filter_map(|(_, entry)| entry) {
            for holder in holders {
                // SAFETY: each kept holder is owned here and freed once.
                unsafe { qjs::JS_FreeValue(ctx, holder) };
            }
        }
        for (atom, _) in self.names.drain() {
            // SAFETY: each entry holds one reference of its atom.
            unsafe { qjs::JS_FreeAtom(ctx, atom) };
        }
    }
}

/// A new object of ours with `keys`, in their order, all `null`: it has the shape an
/// object given those keys in that order has, and keeps it alive. `None` (the exception
/// cleared: only the cache misses) when the engine fails, out of memory.
///
/// # Safety
/// `keys` are live atoms of `ctx`'s runtime.
unsafe fn new_holder(ctx: *mut qjs::JSContext, keys: &[qjs::JSPropertyEnum]) -> Option<qjs::JSValue> {
    // SAFETY: a new object; each definition keeps its own reference of the atom.
    unsafe {
        let holder = qjs::JS_NewObject(ctx);
        let made = !qjs::JS_IsException(holder)
            && keys.iter().all(|key| {
                qjs::JS_DefinePropertyValue(ctx, holder, key.atom, qjs::JS_NULL, qjs::JS_PROP_C_W_E as _) >= 0
            });
        if !made {
            qjs::JS_FreeValue(ctx, qjs::JS_GetException(ctx));
            qjs::JS_FreeValue(ctx, holder);
        }
        made.then_some(holder)
    }
}

#[cfg(test)]
mod tests {
    use rquickjs::{Context, Runtime, Value};

    use super::KeyNames;
    use crate::worker::convert::{JsonText, write};

    /// Key texts from the kept names are the texts the engine gives, call after call, for
    /// keys of every kind (ASCII, non-ASCII, empty, integer-like), also past the limit.
    #[test]
    fn kept_key_texts_are_the_engine_texts() {
        let runtime = Runtime::new().unwrap();
        let context = Context::full(&runtime).unwrap();
        context.with(|ctx| {
            let raw = ctx.as_raw().as_ptr();
            let mut names = KeyNames::default();
            let source = "({ status: 'ok', 'caf\\u00e9 \\ud83d\\ude00': 1, '': 2, '7': [ { status: 3 } ], nested: { reason: 'r', status: 4 } })";
            let many = format!("({{ {} }})", (0..super::MAX_KEYS + 10).map(|i| format!("k{i}: {i}")).collect::<Vec<_>>().join(", "));
            for source in [source, &many, source, &many] {
                let value: Value = ctx.eval(source).unwrap();
                let mut plain = JsonText(Vec::new());
                write(value.clone(), &mut plain, None).unwrap();
                let mut named = JsonText(Vec::new());
                write(value, &mut named, Some(&mut names)).unwrap();
                assert_eq!(String::from_utf8(named.0).unwrap(), String::from_utf8(plain.0).unwrap());
            }
            assert_eq!(names.names.len(), super::MAX_KEYS);
            // Dropping the runtime aborts the process if a kept atom was not given back.
            names.release(raw);
        });
    }

    /// A result object's key list comes from its shape's kept list call after call, and a
    /// result the script kept and then changed (keys added, deleted, re-added in another
    /// order, hidden, made a getter) is still written with the keys it has then.
    #[test]
    fn kept_shape_keys_follow_a_changed_result() {
        with_shape_names(|ctx, names, stringify| {
            let script = "(() => { let kept; return (step) => {
                if (step < 2) { kept = { status: 'ok', reason: 'r' + step, details: { code: step } }; return kept; }
                if (step === 2) kept.extra = 1;
                if (step === 3) delete kept.reason;
                if (step === 4) kept.reason = 'back';
                if (step === 5) Object.defineProperty(kept, 'status', { enumerable: false });
                if (step === 6) Object.defineProperty(kept, 'extra', { get() { return 'g'; }, enumerable: true });
                if (step === 7) { delete kept.extra; delete kept.reason; kept.status = 'fresh'; kept.details.more = [1]; }
                if (step === 8) return { status: 'ok', reason: 'again', details: { code: 8 } };
                return kept;
            }; })()";
            let f: rquickjs::Function = ctx.eval(script).unwrap();
            for step in 0..10 {
                let value: Value = f.call((step,)).unwrap();
                let expected: String = stringify.call((value.clone(),)).unwrap();
                let hit = unsafe { names.shape_keys(value.as_raw()) }.is_some();
                let mut named = JsonText(Vec::new());
                write(value, &mut named, Some(&mut *names)).unwrap();
                assert_eq!(String::from_utf8(named.0).unwrap(), expected, "step {step}");
                assert_eq!(
                    hit,
                    step == 1 || step == 8,
                    "step {step}: the kept list serves the literal's shape only"
                );
            }
        });
    }

    /// Values are read from their slots only while the object still has the kept shape: a
    /// getter inside the result that deletes and re-adds a later key, or adds one, while the
    /// result is being written moves it to another shape, and the later keys are read by
    /// name, as `JSON.stringify` reads them.
    #[test]
    fn kept_shape_values_follow_a_getter_that_changes_the_result() {
        with_shape_names(|ctx, names, stringify| {
            let script = "(step) => {
                const r = { first: null, second: 'b', third: 'c' };
                if (step > 0) r.first = { get g() { delete r.second; r.second = 'again'; r.third = 'changed'; r.fourth = 4; return 1; } };
                return r;
            }";
            let f: rquickjs::Function = ctx.eval(script).unwrap();
            for step in 0..3 {
                let expected: String = stringify.call((f.call::<_, Value>((step,)).unwrap(),)).unwrap();
                let value: Value = f.call((step,)).unwrap();
                assert_eq!(unsafe { names.shape_keys(value.as_raw()) }.is_some(), step > 0, "step {step}");
                let mut named = JsonText(Vec::new());
                write(value, &mut named, Some(&mut *names)).unwrap();
                assert_eq!(String::from_utf8(named.0).unwrap(), expected, "step {step}");
            }
        });
    }

    /// Runs `f` in a fresh context with key names that keep key lists by shape (the engine
    /// layout is known in this build) and `JSON.stringify`, then gives the names back:
    /// dropping the runtime aborts the process if a holder or atom was not.
    fn with_shape_names(
        f: impl for<'js> FnOnce(&rquickjs::Ctx<'js>, &mut KeyNames, &rquickjs::Function<'js>),
    ) {
        let runtime = Runtime::new().unwrap();
        let context = Context::full(&runtime).unwrap();
        context.with(|ctx| {
            let raw = ctx.as_raw().as_ptr();
            let mut names = KeyNames::new(crate::worker::args::Layout::probe(raw));
            assert!(names.layout.is_some(), "the engine layout is known in this build");
            let stringify: rquickjs::Function =
                ctx.globals().get::<_, rquickjs::Object>("JSON").unwrap().get("stringify").unwrap();
            f(&ctx, &mut names, &stringify);
            names.release(raw);
        });
    }
}
