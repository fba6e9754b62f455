//! [`KeyNames`]: the UTF-8 text of the property keys a runtime's results use, kept between
//! calls. A check returns objects with the same few keys every time (`status`, `reason`,
//! `details`…); asking the engine for a key's text costs a conversion and a buffer per key
//! and call, a lookup here a hash probe.

use hashbrown::HashMap;
use rquickjs::qjs;

use super::convert::{Text, with_text};

/// Most keys kept per runtime (their atoms stay alive in the script's heap while kept).
const MAX_KEYS: usize = 1024;

/// Key texts by atom. Each kept atom holds a reference, so its number keeps naming the same
/// text for as long as the entry lives.
#[derive(Default)]
pub struct KeyNames {
    names: HashMap<qjs::JSAtom, Box<[u8]>>,
}

impl KeyNames {
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
        for (atom, _) in self.names.drain() {
            // SAFETY: each entry holds one reference of its atom.
            unsafe { qjs::JS_FreeAtom(ctx, atom) };
        }
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
}
