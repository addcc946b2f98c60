//! The header-section scanner shared by the message parser and the stream framer.
//!
//! Role: split the bytes after the start line into `(name, value)` pairs, joining folded
//! continuation lines (a line starting with SP/HTAB continues the previous header, RFC 3261
//! §7.3.1), accepting `Name : value` (whitespace before the colon), CRLF or bare LF line ends,
//! and finding the empty line that ends the section.
//!
//! Invariants: zero-copy (yields sub-slices of the input), no allocation, no panics; each call
//! to `next` moves forward by at least one line, so iteration is bounded by the input length.

use memchr::memchr;

use super::scan::{is_token, trim_lws};

/// One header as written: the name (trailing whitespace removed) and the value (LWS-trimmed,
/// folded line breaks kept inside).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct RawHeader<'a> {
    pub(super) name: &'a [u8],
    pub(super) value: &'a [u8],
}

/// Why a header line could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LineError {
    /// No colon, an empty or non-token name, or a continuation line with nothing to continue.
    /// `line` counts from 1 = the start line.
    Malformed { line: usize },
    /// The input ended before the empty line closing the header section.
    Unterminated,
}

/// Iterator over header lines; see the module docs. After it returns `None`, [`Self::body`]
/// holds the bytes after the empty line (or `None` if the section was unterminated).
#[derive(Debug, Clone)]
pub(super) struct HeaderLines<'a> {
    rest: &'a [u8],
    line: usize,
    done: bool,
    body: Option<&'a [u8]>,
    folded: bool,
    crlf: usize,
}

/// Length of the first line's content (without CR LF / LF) and of the whole line with its end.
/// `None` if there is no LF.
fn line_len(s: &[u8]) -> Option<(usize, usize)> {
    let lf = memchr(b'\n', s)?;
    let content = match lf.checked_sub(1) {
        Some(cr) if s.get(cr) == Some(&b'\r') => cr,
        _ => lf,
    };
    Some((content, lf.checked_add(1)?))
}

/// The first line of `s` (content only) and what follows it, or `None` if `s` has no LF.
pub(super) fn split_line(s: &[u8]) -> Option<(&[u8], &[u8])> {
    let (content, total) = line_len(s)?;
    Some((s.get(..content)?, s.get(total..)?))
}

impl<'a> HeaderLines<'a> {
    /// Scans `section`, which starts right after the start line. `first_line` is the line
    /// number of its first line (2 when the start line is line 1), used in errors.
    pub(super) const fn new(section: &'a [u8], first_line: usize) -> Self {
        Self {
            rest: section,
            line: first_line,
            done: false,
            body: None,
            folded: false,
            crlf: 0,
        }
    }

    /// How many lines so far (the empty one included) ended in CR LF, continuation lines
    /// aside (those count as [`Self::folded`]).
    pub(super) const fn crlf_lines(&self) -> usize {
        self.crlf
    }

    /// Whether any header so far had continuation lines (its value then holds CR/LF).
    pub(super) const fn folded(&self) -> bool {
        self.folded
    }

    /// The bytes after the empty line, once iteration has finished successfully.
    pub(super) const fn body(&self) -> Option<&'a [u8]> {
        self.body
    }

    fn fail(&mut self, err: LineError) -> Option<Result<RawHeader<'a>, LineError>> {
        if err == LineError::Unterminated {
            self.done = true;
        }
        Some(Err(err))
    }

    /// Total length of the header starting at `self.rest` with its continuation lines, and the
    /// end of its content. Counts the lines it consumes.
    fn extent(&mut self, first: (usize, usize)) -> Result<(usize, usize), LineError> {
        let (mut content_end, mut total) = first;
        while let Some(b' ' | b'\t') = self.rest.get(total) {
            let tail = self.rest.get(total..).unwrap_or_default();
            let (content, len) = line_len(tail).ok_or(LineError::Unterminated)?;
            content_end = total.checked_add(content).ok_or(LineError::Unterminated)?;
            total = total.checked_add(len).ok_or(LineError::Unterminated)?;
            self.line = self.line.saturating_add(1);
            self.folded = true;
        }
        Ok((content_end, total))
    }
}

impl<'a> Iterator for HeaderLines<'a> {
    type Item = Result<RawHeader<'a>, LineError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let Some(first) = line_len(self.rest) else {
            return self.fail(LineError::Unterminated);
        };
        let line_no = self.line;
        if first.1.saturating_sub(first.0) == 2 {
            self.crlf = self.crlf.saturating_add(1);
        }
        let line = self.rest.get(..first.0).unwrap_or_default();
        if line.is_empty() {
            self.done = true;
            self.body = self.rest.get(first.1..);
            return None;
        }
        let extent = self.extent(first);
        self.line = self.line.saturating_add(1);
        let (content_end, total) = match extent {
            Ok(e) => e,
            Err(e) => return self.fail(e),
        };
        let whole = self.rest.get(..content_end).unwrap_or_default();
        self.rest = self.rest.get(total..).unwrap_or_default();
        Some(split_header(line, whole).ok_or(LineError::Malformed { line: line_no }))
    }
}

/// Splits a header (its first line, and the same header with continuation lines) at the
/// colon. A leading SP/HTAB means a continuation with no header to continue.
fn split_header<'a>(first_line: &'a [u8], whole: &'a [u8]) -> Option<RawHeader<'a>> {
    if matches!(first_line.first(), Some(b' ' | b'\t')) {
        return None;
    }
    let colon = memchr(b':', first_line)?;
    let (name, value) = whole.split_at_checked(colon)?;
    let name = trim_lws(name);
    is_token(name).then(|| RawHeader {
        name,
        value: trim_lws(value.get(1..).unwrap_or_default()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    type Item = Result<(String, String), LineError>;

    fn collect(section: &[u8]) -> (Vec<Item>, Option<Vec<u8>>) {
        let mut it = HeaderLines::new(section, 2);
        let items = it
            .by_ref()
            .map(|r| {
                r.map(|h| {
                    let s = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
                    (s(h.name), s(h.value))
                })
            })
            .collect();
        (items, it.body().map(<[u8]>::to_vec))
    }

    fn ok(n: &str, v: &str) -> Item {
        Ok((n.to_owned(), v.to_owned()))
    }

    #[test]
    fn splits_names_values_and_finds_the_body() {
        let (items, body) = collect(b"Via: a\r\nSubject : hi there \r\nX:\r\n\r\nbody\r\n");
        assert_eq!(
            items,
            [ok("Via", "a"), ok("Subject", "hi there"), ok("X", "")]
        );
        assert_eq!(body.as_deref(), Some(&b"body\r\n"[..]));
    }

    #[test]
    fn joins_folded_continuation_lines() {
        let (items, body) = collect(b"TO :\r\n sip:a@b ;\r\n\ttag = 1\r\nl: 0\r\n\r\n");
        assert_eq!(items, [ok("TO", "sip:a@b ;\r\n\ttag = 1"), ok("l", "0")]);
        assert_eq!(body.as_deref(), Some(&b""[..]));
    }

    #[test]
    fn tolerates_bare_lf() {
        let (items, body) = collect(b"A: 1\nB: 2\n continued\n\nxyz");
        assert_eq!(items, [ok("A", "1"), ok("B", "2\n continued")]);
        assert_eq!(body.as_deref(), Some(&b"xyz"[..]));
    }

    #[test]
    fn reports_malformed_lines_with_their_number_and_moves_on() {
        let (items, _) =
            collect(b"A: 1\r\nno colon here\r\n: empty\r\nA B: 1\r\n x\r\nC: 3\r\n\r\n");
        assert_eq!(
            items,
            [
                ok("A", "1"),
                Err(LineError::Malformed { line: 3 }),
                Err(LineError::Malformed { line: 4 }),
                Err(LineError::Malformed { line: 5 }),
                ok("C", "3"),
            ]
        );
        let (items, _) = collect(b" leading: fold\r\n\r\n");
        assert_eq!(items, [Err(LineError::Malformed { line: 2 })]);
    }

    #[test]
    fn reports_an_unterminated_section_once() {
        for input in [&b"A: 1\r\nB: 2"[..], b"A: 1\r\n", b"A: 1\r\n cont", b""] {
            let (items, body) = collect(input);
            assert_eq!(
                items.last(),
                Some(&Err(LineError::Unterminated)),
                "{input:?}"
            );
            assert_eq!(body, None);
        }
    }
}
