//! [`CallList`]: the calls of a batch, kept in the form the batch frame carries them.

use std::io;

use crate::wire::Reader;

/// The arguments of a batch's calls laid out as the batch frame carries them: per call a
/// `u32` length and the arguments array in the wire form. The host encodes each call
/// straight into it and a frame copies it whole, so a call costs no buffer of its own on
/// either side.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct CallList {
    bytes: Vec<u8>,
    /// Where each call's length prefix starts in `bytes`.
    starts: Vec<usize>,
}

impl CallList {
    pub fn with_capacity(bytes: usize) -> Self {
        Self { bytes: Vec::with_capacity(bytes), starts: Vec::new() }
    }

    /// Appends a call whose arguments `write` appends to the buffer it is given, and returns
    /// them; on an error nothing is appended.
    pub fn push_with<E>(&mut self, write: impl FnOnce(&mut Vec<u8>) -> Result<(), E>) -> Result<&[u8], E> {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(&[0; 4]);
        if let Err(e) = write(&mut self.bytes) {
            self.bytes.truncate(start);
            return Err(e);
        }
        let len = (self.bytes.len() - start - 4) as u32;
        self.bytes[start..start + 4].copy_from_slice(&len.to_le_bytes());
        self.starts.push(start);
        Ok(&self.bytes[start + 4..])
    }

    /// Appends a call whose arguments are `parts` one after another, and returns them.
    pub fn push_parts(&mut self, parts: &[&[u8]]) -> &[u8] {
        let len: usize = parts.iter().map(|part| part.len()).sum();
        let start = self.bytes.len();
        self.bytes.reserve(4 + len);
        self.bytes.extend_from_slice(&(len as u32).to_le_bytes());
        parts.iter().for_each(|part| self.bytes.extend_from_slice(part));
        self.starts.push(start);
        &self.bytes[start + 4..]
    }

    /// Removes the call appended last.
    pub fn pop(&mut self) {
        if let Some(start) = self.starts.pop() {
            self.bytes.truncate(start);
        }
    }

    /// The calls as a batch frame carries them.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn len(&self) -> usize {
        self.starts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }

    pub fn iter(&self) -> Calls<'_> {
        Calls { list: self, next: 0 }
    }

    fn get(&self, index: usize) -> Option<&[u8]> {
        let start = *self.starts.get(index)?;
        let len = u32::from_le_bytes(self.bytes[start..start + 4].try_into().expect("four bytes"));
        Some(&self.bytes[start + 4..start + 4 + len as usize])
    }

    /// Drops the first `count` calls (those a lost worker answered before it went).
    pub fn drain_front(&mut self, count: usize) {
        let Some(&cut) = self.starts.get(count) else {
            *self = Self::default();
            return;
        };
        self.bytes.drain(..cut);
        self.starts.drain(..count);
        self.starts.iter_mut().for_each(|start| *start -= cut);
    }

    /// Reads `count` length-prefixed calls from the front of `bytes`.
    pub(crate) fn read(bytes: &mut Reader<'_>, count: usize) -> io::Result<Self> {
        let whole = bytes.rest();
        let mut starts = Vec::with_capacity(count);
        for _ in 0..count {
            starts.push(whole.len() - bytes.len());
            let len = bytes.u32().map_err(io::Error::other)?;
            bytes.take(len as usize).map_err(io::Error::other)?;
        }
        Ok(Self { bytes: whole[..whole.len() - bytes.len()].to_vec(), starts })
    }
}

/// The calls of a [`CallList`], in order.
pub struct Calls<'a> {
    list: &'a CallList,
    next: usize,
}

impl<'a> Iterator for Calls<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let call = self.list.get(self.next)?;
        self.next += 1;
        Some(call)
    }
}

impl<'a> IntoIterator for &'a CallList {
    type Item = &'a [u8];
    type IntoIter = Calls<'a>;

    fn into_iter(self) -> Calls<'a> {
        self.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_list_keeps_its_calls_in_order_through_pops_and_drains() {
        let mut calls = CallList::default();
        for call in [&b"one"[..], b"", b"three", b"four"] {
            let pushed = calls.push_with(|buf| {
                buf.extend_from_slice(call);
                Ok::<_, ()>(())
            });
            assert_eq!(pushed.unwrap(), call);
        }
        assert_eq!(calls.push_parts(&[b"pa", b"", b"rts"]), b"parts");
        calls.pop();
        calls.pop();
        assert!(
            calls
                .push_with(|buf| {
                    buf.extend_from_slice(b"half written");
                    Err(())
                })
                .is_err()
        );
        assert_eq!(calls.iter().collect::<Vec<_>>(), [&b"one"[..], b"", b"three"]);
        assert_eq!(calls.push_parts(&[b"fi", b"ve"]), b"five");
        assert_eq!(calls.iter().collect::<Vec<_>>(), [&b"one"[..], b"", b"three", b"five"]);
        calls.pop();
        calls.drain_front(2);
        assert_eq!((calls.len(), calls.iter().collect::<Vec<_>>()), (1, vec![&b"three"[..]]));
        calls.drain_front(5);
        assert!(calls.is_empty());
    }
}
