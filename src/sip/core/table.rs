//! The inline header index of a `SipMessage`: byte ranges into the message buffer.
//!
//! Role: remember where each header's name and value are without copying them and without a
//! `Vec`: a fixed array of [`MAX_HEADERS`] entries plus, per [`HeaderName`], the position of its
//! first occurrence and its number of lines, so that `header(name)` and `count(name)` are O(1).
//!
//! Invariants: `len <= MAX_HEADERS`; every `first` entry is `NONE` or `< len`; spans are `u16`
//! offsets (messages are at most `MAX_MESSAGE` bytes) and resolving one never panics: a span
//! that does not fit the buffer resolves to an empty slice.

use super::error::ParseError;
use super::header::HeaderName;

// Spans are u16 offsets: every parsed buffer is at most MAX_MESSAGE bytes.
const _: () = assert!(super::message::MAX_MESSAGE <= u16::MAX as usize);

/// Maximum number of header lines in one message (more is [`ParseError::TooManyHeaders`]).
pub const MAX_HEADERS: usize = 64;

/// Marker in `HeaderTable::first` for "not present".
const NONE: u8 = u8::MAX;

/// A byte range `start..end` of the message buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct Span {
    start: u16,
    end: u16,
}

impl Span {
    /// The range of `sub` inside `base`; empty if `sub` is not a sub-slice of `base`.
    /// Computed from addresses so that parsers can work on slices and record positions after.
    pub(super) fn of(base: &[u8], sub: &[u8]) -> Self {
        let start = (sub.as_ptr() as usize).checked_sub(base.as_ptr() as usize);
        let end = start
            .and_then(|s| s.checked_add(sub.len()))
            .filter(|&e| e <= base.len());
        match (start.map(u16::try_from), end.map(u16::try_from)) {
            (Some(Ok(start)), Some(Ok(end))) => Self { start, end },
            _ => Self::default(),
        }
    }

    /// Resolves the span against the buffer it was taken from.
    pub(super) fn get(self, buf: &[u8]) -> &[u8] {
        buf.get(self.start as usize..self.end as usize)
            .unwrap_or_default()
    }
}

/// One header line: canonical name, raw name and value ranges.
#[derive(Debug, Clone, Copy)]
pub(super) struct HeaderEntry {
    pub(super) name: HeaderName,
    pub(super) raw_name: Span,
    pub(super) value: Span,
}

const EMPTY_ENTRY: HeaderEntry = HeaderEntry {
    name: HeaderName::Other,
    raw_name: Span { start: 0, end: 0 },
    value: Span { start: 0, end: 0 },
};

/// The fixed-capacity header index.
#[derive(Debug, Clone)]
pub(super) struct HeaderTable {
    entries: [HeaderEntry; MAX_HEADERS],
    len: u8,
    first: [u8; HeaderName::COUNT],
    /// Lines per name (at most `MAX_HEADERS`, so a `u8` never saturates).
    counts: [u8; HeaderName::COUNT],
}

impl HeaderTable {
    pub(super) const fn new() -> Self {
        Self {
            entries: [EMPTY_ENTRY; MAX_HEADERS],
            len: 0,
            first: [NONE; HeaderName::COUNT],
            counts: [0; HeaderName::COUNT],
        }
    }

    /// Appends a header. Fails with `TooManyHeaders` once [`MAX_HEADERS`] are stored.
    pub(super) fn push(&mut self, entry: HeaderEntry) -> Result<(), ParseError> {
        let index = self.len;
        let slot = self
            .entries
            .get_mut(usize::from(index))
            .ok_or(ParseError::TooManyHeaders)?;
        *slot = entry;
        if let Some(first) = self.first.get_mut(entry.name as usize) {
            if *first == NONE {
                *first = index;
            }
        }
        if let Some(count) = self.counts.get_mut(entry.name as usize) {
            *count = count.saturating_add(1);
        }
        self.len = index.saturating_add(1);
        Ok(())
    }

    /// The stored headers, in message order.
    pub(super) fn entries(&self) -> &[HeaderEntry] {
        self.entries
            .get(..usize::from(self.len))
            .unwrap_or_default()
    }

    /// The first header with this name.
    pub(super) fn first(&self, name: HeaderName) -> Option<&HeaderEntry> {
        let index = *self.first.get(name as usize)?;
        (index != NONE)
            .then(|| self.entries.get(usize::from(index)))
            .flatten()
    }

    /// How many header lines carry this name.
    pub(super) fn count(&self, name: HeaderName) -> usize {
        self.counts
            .get(name as usize)
            .map_or(0, |&n| usize::from(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: HeaderName, at: u16) -> HeaderEntry {
        HeaderEntry {
            name,
            raw_name: Span { start: at, end: at },
            value: Span { start: at, end: at },
        }
    }

    #[test]
    fn keeps_order_first_occurrence_and_counts() {
        let mut t = HeaderTable::new();
        t.push(entry(HeaderName::Via, 1)).unwrap();
        t.push(entry(HeaderName::To, 2)).unwrap();
        t.push(entry(HeaderName::Via, 3)).unwrap();
        assert_eq!(t.entries().len(), 3);
        assert_eq!(t.first(HeaderName::Via).map(|e| e.value.start), Some(1));
        assert_eq!(t.count(HeaderName::Via), 2);
        assert!(t.first(HeaderName::From).is_none());
    }

    #[test]
    fn refuses_more_than_max_headers() {
        let mut t = HeaderTable::new();
        for i in 0..MAX_HEADERS {
            t.push(entry(HeaderName::Other, i as u16)).unwrap();
        }
        assert_eq!(
            t.push(entry(HeaderName::Via, 0)),
            Err(ParseError::TooManyHeaders)
        );
        assert!(t.first(HeaderName::Via).is_none());
    }

    #[test]
    fn spans_resolve_safely() {
        let buf = b"hello world";
        let span = Span::of(buf, &buf[6..]);
        assert_eq!(span.get(buf), b"world");
        assert_eq!(Span::of(buf, b"elsewhere").get(buf), b"");
        assert_eq!(span.get(b"short"), b"");
    }
}
