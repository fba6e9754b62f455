//! One call's argument bytes, copied into the script's heap (so the heap limit counts them)
//! and shared, by reference count, by every lazy object made from them. Checked once, when
//! copied: every later read finds well-formed bytes nested at most [`wire::MAX_DEPTH`] deep,
//! and the end of every container is known, so an object skips a nested value in one step.

use rquickjs::qjs;

use super::atoms::Atoms;
use crate::wire::{self, Reader, WireError};

/// Where a container ends: the offset just past its closing [`wire::END`] and the ordinal of
/// the next container after it (containers are numbered in the order they open); and how
/// many items or keys it holds.
#[derive(Clone, Copy, Default)]
#[repr(C)]
pub struct End {
    pub offset: u32,
    pub next: u32,
    pub count: u32,
}

/// The header of a piece; its [`End`] table and then its bytes follow it in one block.
#[repr(C)]
pub struct Piece {
    refs: usize,
    len: usize,
    containers: usize,
    /// The key atoms of the runtime the piece was made in (see [`Atoms`]).
    pub atoms: *mut Atoms,
}

impl Piece {
    /// Copies `bytes` (already checked by [`scan`], which filled `ends`) into a new piece
    /// holding one reference; null, with the engine's exception pending, past the heap limit.
    pub fn new(ctx: *mut qjs::JSContext, bytes: &[u8], ends: &[End], atoms: *mut Atoms) -> *mut Piece {
        let size = size_of::<Piece>() + size_of_val(ends) + bytes.len();
        // SAFETY: a fresh block of `size` bytes, written in full below before it is read.
        unsafe {
            let piece = qjs::js_malloc(ctx, size as _).cast::<Piece>();
            if piece.is_null() {
                return piece;
            }
            piece.write(Piece { refs: 1, len: bytes.len(), containers: ends.len(), atoms });
            let table = piece.add(1).cast::<End>();
            std::ptr::copy_nonoverlapping(ends.as_ptr(), table, ends.len());
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), table.add(ends.len()).cast::<u8>(), bytes.len());
            piece
        }
    }

    /// Takes one more reference.
    ///
    /// # Safety
    /// `piece` is alive.
    pub unsafe fn retain(piece: *mut Piece) {
        unsafe { (*piece).refs += 1 };
    }

    /// Gives one reference back, freeing the piece with the last.
    ///
    /// # Safety
    /// `piece` is alive and the caller holds the reference it gives back.
    pub unsafe fn release(rt: *mut qjs::JSRuntime, piece: *mut Piece) {
        unsafe {
            (*piece).refs -= 1;
            if (*piece).refs == 0 {
                qjs::js_free_rt(rt, piece.cast());
            }
        }
    }

    fn ends(&self) -> &[End] {
        // SAFETY: `containers` entries follow the header (see `new`).
        unsafe { std::slice::from_raw_parts((self as *const Piece).add(1).cast::<End>(), self.containers) }
    }

    pub fn bytes(&self) -> &[u8] {
        // SAFETY: `len` bytes follow the end table (see `new`); they never change.
        unsafe {
            std::slice::from_raw_parts(self.ends().as_ptr().add(self.containers).cast::<u8>(), self.len)
        }
    }

    /// Where container `ordinal` ends.
    pub fn end(&self, ordinal: u32) -> End {
        self.ends()[ordinal as usize]
    }

    /// A reader from `offset` to the end of the bytes.
    pub fn reader(&self, offset: u32) -> Reader<'_> {
        Reader::new(&self.bytes()[offset as usize..])
    }

    /// The offset `reader` (made by [`Piece::reader`]) has reached.
    pub fn offset(&self, reader: &Reader<'_>) -> u32 {
        (self.len - reader.len()) as u32
    }
}

/// Checks one wire value (a call's argument array) without building anything: tags,
/// lengths and nesting. Fills `ends`, indexed by container ordinal (the outer value is 0).
/// Runs once per call over all of its bytes, so it indexes bytes instead of reading
/// through a [`Reader`].
pub fn scan(bytes: &[u8], ends: &mut Vec<End>) -> Result<(), WireError> {
    ends.clear();
    if u32::try_from(bytes.len()).is_err() {
        return Err(WireError::Truncated);
    }
    let length = |at: usize| -> Result<usize, WireError> {
        let field = bytes.get(at..at + 4).ok_or(WireError::Truncated)?;
        Ok(u32::from_le_bytes(field.try_into().expect("four bytes")) as usize)
    };
    let mut at = 0;
    // The containers open around the next value: (ordinal, is an object).
    let mut open: Vec<(usize, bool)> = Vec::with_capacity(16);
    loop {
        let mut tag = *bytes.get(at).ok_or(WireError::Truncated)?;
        if let Some(&(ordinal, object)) = open.last() {
            if tag == wire::END {
                at += 1;
                let next = ends.len() as u32;
                let end = &mut ends[ordinal];
                (end.offset, end.next) = (at as u32, next);
                open.pop();
                if open.is_empty() {
                    return Ok(());
                }
                continue;
            }
            ends[ordinal].count += 1;
            if object {
                if tag != wire::STRING {
                    return Err(WireError::Tag(tag));
                }
                at += 5 + length(at + 1)?;
                tag = *bytes.get(at).ok_or(WireError::Truncated)?;
            }
        }
        at += 1;
        match tag {
            wire::NULL | wire::FALSE | wire::TRUE => {}
            wire::INT => at += 4,
            wire::FLOAT => at += 8,
            wire::STRING => at += 4 + length(at)?,
            wire::ARRAY | wire::OBJECT => {
                if open.len() >= wire::MAX_DEPTH {
                    return Err(WireError::TooDeep);
                }
                open.push((ends.len(), tag == wire::OBJECT));
                ends.push(End::default());
            }
            other => return Err(WireError::Tag(other)),
        }
        if at > bytes.len() {
            return Err(WireError::Truncated);
        }
        if open.is_empty() {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn scan_finds_every_container_end() {
        let value = json!([{"a": [1, {"b": "x"}], "c": {}}, [], null]);
        let mut bytes = Vec::new();
        wire::encode(&value, &mut bytes).unwrap();
        let mut ends = Vec::new();
        scan(&bytes, &mut ends).unwrap();
        // Ordinals: 0 the outer array, 1 the object, 2 `a`, 3 `{"b"}`, 4 `c`, 5 `[]`.
        assert_eq!(ends.len(), 6);
        assert_eq!(ends[0].offset as usize, bytes.len());
        assert_eq!((ends[1].next, ends[2].next, ends[3].next, ends[5].next), (5, 4, 4, 6));
        assert_eq!((ends[0].count, ends[1].count, ends[2].count, ends[4].count), (3, 2, 2, 0));
        for end in &ends {
            assert_eq!(bytes[end.offset as usize - 1], wire::END);
        }
        let mut deep = vec![wire::ARRAY; wire::MAX_DEPTH + 1];
        deep.extend(vec![wire::END; wire::MAX_DEPTH + 1]);
        assert!(matches!(scan(&deep, &mut ends), Err(WireError::TooDeep)));
        assert!(matches!(scan(&bytes[..bytes.len() - 1], &mut ends), Err(WireError::Truncated)));
        assert!(matches!(scan(&[wire::OBJECT, wire::INT], &mut ends), Err(WireError::Tag(wire::INT))));
    }
}
