//! Header scanning: split a message on a reader into its header (kept in
//! memory, byte for byte, bounded) and its body (left on the reader, to be
//! streamed through untouched).
//!
//! Rules:
//!
//! * Lines end with LF; a CR before the LF is part of the line end (CRLF).
//!   Both are accepted, also mixed, and kept exactly as they came.
//! * The header ends at the first empty line (`LF` or `CRLF`), which is the
//!   [`Header::separator`]. It also ends at the first line that is not a
//!   header field (no `name:` and not a continuation) — a message written
//!   without a header — or at the end of input. In those cases the
//!   separator is empty and a writer that adds fields must add one (see
//!   `inject`). Such a first body line is kept in [`Header::body_start`].
//! * A line that starts with a space or tab continues the field above it.
//! * The header is limited to [`Limits::max_header`] bytes in total
//!   (error [`HeaderError::TooLarge`]). The limit on one field,
//!   [`Limits::max_field`], is enforced only where a field is parsed
//!   ([`Field::value_bounded`]); other fields pass whatever their size.
//! * The body is never read here beyond the first line described above.

use std::io::BufRead;

use thiserror::Error;

/// Default limit on the whole header: 1 MiB.
pub const MAX_HEADER: usize = 1024 * 1024;

/// Default limit on one field that has to be parsed: 64 KiB.
pub const MAX_FIELD: usize = 64 * 1024;

/// Size limits for [`Header::read`] and [`Field::value_bounded`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most bytes in the header (all fields, without the separator).
    pub max_header: usize,
    /// Most bytes in one field that has to be parsed.
    pub max_field: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header: MAX_HEADER,
            max_field: MAX_FIELD,
        }
    }
}

/// Why a header could not be read.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum HeaderError {
    /// The header is longer than the limit (permanent).
    #[error("message header too large (over {limit} bytes)")]
    TooLarge {
        /// The limit that was exceeded.
        limit: usize,
    },
    /// Reading the input failed (temporary).
    #[error("cannot read the message: {0}")]
    Read(#[from] std::io::Error),
}

impl HeaderError {
    /// True when trying again later may succeed.
    pub fn is_temporary(&self) -> bool {
        matches!(self, HeaderError::Read(_))
    }
}

/// A field whose value is longer than [`Limits::max_field`] had to be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("header field too long to parse (over {limit} bytes)")]
pub struct FieldTooLong {
    /// The limit that was exceeded.
    pub limit: usize,
}

/// The line-end style of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineEnd {
    /// `\n`
    Lf,
    /// `\r\n`
    CrLf,
}

impl LineEnd {
    /// The bytes of this line end.
    pub fn as_bytes(self) -> &'static [u8] {
        match self {
            LineEnd::Lf => b"\n",
            LineEnd::CrLf => b"\r\n",
        }
    }

    /// The style of a line that ends in LF: CRLF when a CR precedes it.
    /// `None` when the line has no line end.
    pub fn of_line(line: &[u8]) -> Option<LineEnd> {
        if line.ends_with(b"\r\n") {
            Some(LineEnd::CrLf)
        } else if line.ends_with(b"\n") {
            Some(LineEnd::Lf)
        } else {
            None
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    start: usize,
    end: usize,
    name_end: usize,
}

/// The header of a message, byte for byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    raw: Vec<u8>,
    fields: Vec<Span>,
    separator: Vec<u8>,
    body_start: Vec<u8>,
}

/// One header field: its name, the colon, its value, continuation lines and
/// the final line end, as they came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field<'a> {
    raw: &'a [u8],
    name_end: usize,
}

impl<'a> Field<'a> {
    /// The whole field as it came, continuation lines and line end included.
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    /// The field name (without trailing blanks before the colon).
    pub fn name(&self) -> &'a [u8] {
        self.raw[..self.name_end].trim_ascii_end()
    }

    /// True when the name equals `name`, ignoring ASCII case.
    pub fn is(&self, name: &str) -> bool {
        self.name().eq_ignore_ascii_case(name.as_bytes())
    }

    /// Everything after the colon, folding included, without the final line
    /// end.
    pub fn value(&self) -> &'a [u8] {
        let v = &self.raw[self.name_end + 1..];
        let v = v.strip_suffix(b"\n").unwrap_or(v);
        v.strip_suffix(b"\r").unwrap_or(v)
    }

    /// Where [`Field::value`] starts in [`Field::raw`] (just after the
    /// colon).
    pub fn value_offset(&self) -> usize {
        self.name_end + 1
    }

    /// [`Field::value`], refused when longer than `limits.max_field`: use it
    /// for every field that is going to be parsed.
    pub fn value_bounded(&self, limits: &Limits) -> Result<&'a [u8], FieldTooLong> {
        let v = self.value();
        if v.len() > limits.max_field {
            Err(FieldTooLong {
                limit: limits.max_field,
            })
        } else {
            Ok(v)
        }
    }
}

/// The length of the field name if `line` starts a field (`name:` with
/// 1*ftext, optionally followed by blanks before the colon).
fn field_name_end(line: &[u8]) -> Option<usize> {
    let n = line
        .iter()
        .position(|&b| !(b.is_ascii_graphic() && b != b':'))
        .unwrap_or(line.len());
    if n == 0 {
        return None;
    }
    let mut i = n;
    while i < line.len() && (line[i] == b' ' || line[i] == b'\t') {
        i += 1;
    }
    (line.get(i) == Some(&b':')).then_some(i)
}

/// Reads one line (up to and including LF) into `buf`, but at most `max`
/// bytes. Returns whether the line is complete (ended with LF or with EOF,
/// as opposed to cut at `max`).
fn read_line_bounded<R: BufRead + ?Sized>(
    r: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<bool> {
    loop {
        let avail = match r.fill_buf() {
            Ok(a) => a,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if avail.is_empty() {
            return Ok(true);
        }
        let room = max - buf.len();
        let (take, done) = match memchr::memchr(b'\n', avail) {
            Some(i) if i < room => (i + 1, true),
            _ if avail.len() < room => (avail.len(), false),
            _ => (room, false),
        };
        buf.extend_from_slice(&avail[..take]);
        r.consume(take);
        if done {
            return Ok(true);
        }
        if buf.len() == max {
            return Ok(false);
        }
    }
}

fn peek_byte<R: BufRead + ?Sized>(r: &mut R) -> std::io::Result<Option<u8>> {
    loop {
        match r.fill_buf() {
            Ok(a) => return Ok(a.first().copied()),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

impl Header {
    /// Reads the header from `r`, leaving `r` at the start of the body
    /// (after the separator, or after [`Header::body_start`]).
    pub fn read<R: BufRead + ?Sized>(r: &mut R, limits: &Limits) -> Result<Header, HeaderError> {
        let mut h = Header {
            raw: Vec::new(),
            fields: Vec::new(),
            separator: Vec::new(),
            body_start: Vec::new(),
        };
        let mut line = Vec::new();
        loop {
            line.clear();
            let room = limits.max_header - h.raw.len();
            // One byte more than the room, so that a line which only fits
            // as body start (not a field) is still recognised.
            let complete = read_line_bounded(r, &mut line, room.saturating_add(3))?;
            if line.is_empty() {
                return Ok(h); // end of input
            }
            if line == b"\n" || line == b"\r\n" {
                h.separator = std::mem::take(&mut line);
                return Ok(h);
            }
            let Some(name_end) = field_name_end(&line) else {
                // Not a field: the body starts here (continuation lines are
                // folded into their field below, so a blank here is a line
                // with no field above it).
                h.body_start = std::mem::take(&mut line);
                return Ok(h);
            };
            if !complete || line.len() > room {
                return Err(HeaderError::TooLarge {
                    limit: limits.max_header,
                });
            }
            let start = h.raw.len();
            h.raw.extend_from_slice(&line);
            // Continuation lines.
            while line.ends_with(b"\n") && matches!(peek_byte(r)?, Some(b' ' | b'\t')) {
                line.clear();
                let room = limits.max_header - h.raw.len();
                let complete = read_line_bounded(r, &mut line, room.saturating_add(1))?;
                if !complete || line.len() > room {
                    return Err(HeaderError::TooLarge {
                        limit: limits.max_header,
                    });
                }
                h.raw.extend_from_slice(&line);
            }
            h.fields.push(Span {
                start,
                end: h.raw.len(),
                name_end,
            });
        }
    }

    /// The fields, in order.
    pub fn fields(&self) -> impl Iterator<Item = Field<'_>> + '_ {
        self.fields.iter().map(|s| Field {
            raw: &self.raw[s.start..s.end],
            name_end: s.name_end,
        })
    }

    /// True when a field named `name` (ASCII case ignored) is present.
    pub fn has(&self, name: &str) -> bool {
        self.fields().any(|f| f.is(name))
    }

    /// All header lines as they came (without the separator).
    pub fn raw(&self) -> &[u8] {
        &self.raw
    }

    /// The empty line that ended the header (`\n` or `\r\n`), or nothing when
    /// the header ended at end of input or at a line that is not a field.
    pub fn separator(&self) -> &[u8] {
        &self.separator
    }

    /// The first body line when the header ended at a line that is not a
    /// field (possibly cut short; the rest is still on the reader).
    pub fn body_start(&self) -> &[u8] {
        &self.body_start
    }

    /// The line-end style of the message: that of its first header line,
    /// else of the separator, else of the first body line, else LF.
    pub fn line_end(&self) -> LineEnd {
        let first_line = |b: &[u8]| match memchr::memchr(b'\n', b) {
            Some(i) => LineEnd::of_line(&b[..=i]),
            None => None,
        };
        first_line(&self.raw)
            .or_else(|| first_line(&self.separator))
            .or_else(|| first_line(&self.body_start))
            .unwrap_or(LineEnd::Lf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn small() -> Limits {
        Limits {
            max_header: 64,
            max_field: 16,
        }
    }

    fn split(input: &[u8], limits: &Limits) -> Result<(Header, Vec<u8>), HeaderError> {
        let mut r = std::io::BufReader::with_capacity(7, input);
        let h = Header::read(&mut r, limits)?;
        let mut rest = Vec::new();
        r.read_to_end(&mut rest).unwrap();
        Ok((h, rest))
    }

    #[test]
    fn bad_inputs() {
        let cases: &[&[u8]] = &[
            // One field over the whole-header limit.
            &[b"Subject: ".as_slice(), &[b'x'; 80], b"\n\nbody"].concat(),
            // Continuation lines pushing the header over the limit.
            &[
                b"Subject: a\n".as_slice(),
                &b" folded line\n".repeat(6),
                b"\nbody",
            ]
            .concat(),
            // Many short fields.
            &b"A: b\n".repeat(20),
            // Over the limit with no line end at all.
            &[b"X:".as_slice(), &[b'y'; 100]].concat(),
        ];
        for input in cases {
            match split(input, &small()) {
                Err(HeaderError::TooLarge { limit: 64 }) => {}
                other => panic!("{:?}: {other:?}", String::from_utf8_lossy(input)),
            }
        }
        let e = split(&b"A: b\n".repeat(20), &small()).unwrap_err();
        assert!(!e.is_temporary());
        assert_eq!(e.to_string(), "message header too large (over 64 bytes)");
    }

    #[test]
    fn read_errors_are_temporary() {
        struct Failing;
        impl Read for Failing {
            fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
                Err(std::io::Error::other("boom"))
            }
        }
        let e = Header::read(&mut std::io::BufReader::new(Failing), &small()).unwrap_err();
        assert!(e.is_temporary());
    }

    #[test]
    fn splits_lf_and_crlf() {
        type Case = (
            &'static [u8],
            &'static [&'static [u8]],
            &'static [u8],
            &'static [u8],
            &'static [u8],
        );
        let table: &[Case] = &[
            // input, fields, separator, body_start, rest
            (b"", &[], b"", b"", b""),
            (b"\n", &[], b"\n", b"", b""),
            (b"\r\nbody", &[], b"\r\n", b"", b"body"),
            (
                b"A: 1\nB: 2\n\nbody\n",
                &[b"A: 1\n", b"B: 2\n"],
                b"\n",
                b"",
                b"body\n",
            ),
            (
                b"A: 1\r\nB: 2\r\n\r\nbody\r\n",
                &[b"A: 1\r\n", b"B: 2\r\n"],
                b"\r\n",
                b"",
                b"body\r\n",
            ),
            (
                b"A: 1\r\nB: 2\n\r\nx",
                &[b"A: 1\r\n", b"B: 2\n"],
                b"\r\n",
                b"",
                b"x",
            ),
            (
                b"Subject: a\n b\n\tc\nX: y\n\n",
                &[b"Subject: a\n b\n\tc\n", b"X: y\n"],
                b"\n",
                b"",
                b"",
            ),
            (b"A: no newline", &[b"A: no newline"], b"", b"", b""),
            (b"Name : v\n\n", &[b"Name : v\n"], b"\n", b"", b""),
            (b"A:\n\n", &[b"A:\n"], b"\n", b"", b""),
            // A line that is not a field starts the body.
            (
                b"hello world\nmore\n",
                &[],
                b"",
                b"hello world\n",
                b"more\n",
            ),
            (
                b"A: 1\nnot a field\nB: 2\n",
                &[b"A: 1\n"],
                b"",
                b"not a field\n",
                b"B: 2\n",
            ),
            (
                b"From joe Mon\nA: 1\n",
                &[],
                b"",
                b"From joe Mon\n",
                b"A: 1\n",
            ),
            (b" leading blank\n", &[], b"", b" leading blank\n", b""),
            (b":empty name\n", &[], b"", b":empty name\n", b""),
            // A line with a CR alone is not empty.
            (b"\r\n", &[], b"\r\n", b"", b""),
            (b"\rX\n", &[], b"", b"\rX\n", b""),
        ];
        for (input, fields, sep, start, rest) in table {
            let (h, r) = split(input, &Limits::default()).unwrap();
            let got: Vec<&[u8]> = h.fields().map(|f| f.raw()).collect();
            assert_eq!(&got, fields, "{:?}", String::from_utf8_lossy(input));
            assert_eq!(h.separator(), *sep, "{:?}", String::from_utf8_lossy(input));
            assert_eq!(
                h.body_start(),
                *start,
                "{:?}",
                String::from_utf8_lossy(input)
            );
            assert_eq!(&r, rest, "{:?}", String::from_utf8_lossy(input));
            // Nothing is lost or changed.
            let mut all = h.raw().to_vec();
            all.extend_from_slice(h.separator());
            all.extend_from_slice(h.body_start());
            all.extend_from_slice(&r);
            assert_eq!(&all, input);
        }
    }

    #[test]
    fn long_body_line_without_header_is_not_an_error() {
        // A message with no header whose first line is far over the header
        // limit: the body starts there and nothing is held beyond the limit.
        let input = [vec![b'x'; 1000], b"\nend".to_vec()].concat();
        let (h, rest) = split(&input, &small()).unwrap();
        assert_eq!(h.fields().count(), 0);
        assert!(h.body_start().len() <= small().max_header + 3);
        assert_eq!([h.body_start(), &rest].concat(), input);
    }

    #[test]
    fn body_is_left_untouched() {
        let body: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
        let input = [b"A: 1\r\n\r\n".as_slice(), &body].concat();
        let (h, rest) = split(&input, &Limits::default()).unwrap();
        assert_eq!(h.fields().count(), 1);
        assert_eq!(rest, body);
    }

    #[test]
    fn field_accessors() {
        let (h, _) = split(b"Subject : hello\r\n world\r\nTo:a@b\n\n", &small()).unwrap();
        let f: Vec<Field> = h.fields().collect();
        assert_eq!(f[0].name(), b"Subject");
        assert!(f[0].is("subject"));
        assert_eq!(f[0].value(), b" hello\r\n world");
        assert_eq!(f[1].value(), b"a@b");
        assert!(h.has("TO"));
        assert!(!h.has("cc"));
        let (h, _) = split(
            &[b"To: ".as_slice(), &[b'a'; 20], b"\n\n"].concat(),
            &small(),
        )
        .unwrap();
        let f = h.fields().next().unwrap();
        assert_eq!(f.value_bounded(&small()), Err(FieldTooLong { limit: 16 }));
        assert_eq!(f.value().len(), 21);
    }

    #[test]
    fn line_end_style() {
        let style = |input: &[u8]| split(input, &Limits::default()).unwrap().0.line_end();
        assert_eq!(style(b"A: 1\r\nB: 2\n\n"), LineEnd::CrLf);
        assert_eq!(style(b"A: 1\nB: 2\r\n\r\n"), LineEnd::Lf);
        assert_eq!(style(b"\r\nbody"), LineEnd::CrLf);
        assert_eq!(style(b"body\r\n"), LineEnd::CrLf);
        assert_eq!(style(b"A: no end"), LineEnd::Lf);
        assert_eq!(style(b""), LineEnd::Lf);
    }
}
