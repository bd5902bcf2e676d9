//! Reading log lines back: the inverse of [`Event`](crate::Event) and
//! [`escape`](crate::escape), for `ternctl report` and tests.
//!
//! A Tern line is `<program>: event=<name>( <key>=<value>)*`. A logger may
//! put something in front of it (multilog's `@4000...` TAI64N label,
//! svlogd's or s6-log's ISO time, journald's `host unit[pid]:`); that part
//! is handed back untouched as [`Line::prefix`] and a `[pid]` after the
//! program name is dropped. Every length is bounded: a line over
//! [`MAX_LINE`] bytes, more than [`MAX_FIELDS`] fields, a key over
//! [`MAX_KEY`] bytes or a program name over [`MAX_PROGRAM`] is an error,
//! never a panic or an allocation beyond the line's own size.

use std::borrow::Cow;

/// The longest line accepted (bytes, without the line end).
pub const MAX_LINE: usize = 64 * 1024;
/// The most `key=value` fields after `event=` on one line.
pub const MAX_FIELDS: usize = 64;
/// The longest key, event name or program name.
pub const MAX_KEY: usize = 64;
/// The longest program name.
pub const MAX_PROGRAM: usize = 64;

/// Why a line is not a Tern event line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// Longer than [`MAX_LINE`].
    TooLong,
    /// No `<program>: event=` in the line.
    NotAnEvent,
    /// The program name is empty, too long, or has bytes other than
    /// `a-z`, `0-9`, `-`, `_`.
    BadProgram,
    /// A key (or the event name) is empty, too long, or has bytes other
    /// than `a-z`, `0-9`, `_`.
    BadKey,
    /// A field has no `=`.
    MissingEquals,
    /// A quoted value has no closing quote, or text follows it directly.
    BadQuote,
    /// A `\` not followed by `x` and two hex digits.
    BadEscape,
    /// A byte that an escaped value never holds (control, non-ASCII, `"`
    /// inside a bare value).
    BadByte,
    /// More than [`MAX_FIELDS`] fields.
    TooManyFields,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ParseError::TooLong => "line too long",
            ParseError::NotAnEvent => "no \"<program>: event=\" in the line",
            ParseError::BadProgram => "bad program name",
            ParseError::BadKey => "bad key",
            ParseError::MissingEquals => "field without '='",
            ParseError::BadQuote => "unterminated or misplaced quote",
            ParseError::BadEscape => "bad \\x escape",
            ParseError::BadByte => "byte a log value never holds",
            ParseError::TooManyFields => "too many fields",
        })
    }
}

impl std::error::Error for ParseError {}

/// One parsed event line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line<'a> {
    /// What a logger put before the program name (trimmed), often a time.
    pub prefix: &'a [u8],
    /// The program (`tern-send`), without a `[pid]`.
    pub program: &'a str,
    /// The event name (`delivery_end`).
    pub event: &'a str,
    /// The fields after `event=`, in order, values unescaped.
    pub fields: Vec<(&'a str, Cow<'a, [u8]>)>,
}

impl<'a> Line<'a> {
    /// The first value of `key`.
    pub fn get(&self, key: &str) -> Option<&[u8]> {
        self.fields
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_ref())
    }

    /// The first value of `key` as UTF-8 text (None if absent or not UTF-8).
    pub fn text(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The first value of `key` as an unsigned number.
    pub fn number(&self, key: &str) -> Option<u64> {
        self.text(key).and_then(|t| t.parse().ok())
    }
}

fn is_key_byte(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'
}

fn is_program_byte(b: u8) -> bool {
    is_key_byte(b) || b == b'-'
}

fn key(bytes: &[u8]) -> Result<&str, ParseError> {
    if bytes.is_empty() || bytes.len() > MAX_KEY || !bytes.iter().all(|&b| is_key_byte(b)) {
        return Err(ParseError::BadKey);
    }
    // All ASCII, checked just above.
    std::str::from_utf8(bytes).map_err(|_| ParseError::BadKey)
}

/// Undoes [`escape`](crate::escape) on a value without its quotes.
pub fn unescape(raw: &[u8]) -> Result<Cow<'_, [u8]>, ParseError> {
    if !raw.contains(&b'\\') {
        if raw.iter().any(|&b| !(0x20..0x7f).contains(&b) || b == b'"') {
            return Err(ParseError::BadByte);
        }
        return Ok(Cow::Borrowed(raw));
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        if b == b'\\' {
            let hex = raw.get(i + 1..i + 4).ok_or(ParseError::BadEscape)?;
            if hex[0] != b'x' {
                return Err(ParseError::BadEscape);
            }
            let digit = |c: u8| (c as char).to_digit(16).ok_or(ParseError::BadEscape);
            out.push((digit(hex[1])? * 16 + digit(hex[2])?) as u8);
            i += 4;
        } else if !(0x20..0x7f).contains(&b) || b == b'"' {
            return Err(ParseError::BadByte);
        } else {
            out.push(b);
            i += 1;
        }
    }
    Ok(Cow::Owned(out))
}

/// Parses one line (a trailing `\n` or `\r\n` is ignored).
pub fn parse_line(line: &[u8]) -> Result<Line<'_>, ParseError> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.len() > MAX_LINE {
        return Err(ParseError::TooLong);
    }
    const MARK: &[u8] = b": event=";
    let at = memfind(line, MARK).ok_or(ParseError::NotAnEvent)?;
    let head = &line[..at];
    let start = head
        .iter()
        .rposition(|&b| b == b' ' || b == b'\t')
        .map_or(0, |p| p + 1);
    let mut program = &head[start..];
    if let Some(open) = program.iter().position(|&b| b == b'[')
        && program.last() == Some(&b']')
        && program[open + 1..program.len() - 1]
            .iter()
            .all(u8::is_ascii_digit)
    {
        program = &program[..open];
    }
    if program.is_empty()
        || program.len() > MAX_PROGRAM
        || !program.iter().all(|&b| is_program_byte(b))
    {
        return Err(ParseError::BadProgram);
    }
    let program = std::str::from_utf8(program).map_err(|_| ParseError::BadProgram)?;
    let prefix = head[..start].trim_ascii();
    let rest = &line[at + MARK.len()..];
    let end = rest.iter().position(|&b| b == b' ').unwrap_or(rest.len());
    let event = key(&rest[..end])?;
    let mut fields = Vec::new();
    let mut rest = &rest[end..];
    while let Some(r) = rest.strip_prefix(b" ") {
        if fields.len() == MAX_FIELDS {
            return Err(ParseError::TooManyFields);
        }
        let eq = r
            .iter()
            .position(|&b| b == b'=' || b == b' ')
            .filter(|&p| r[p] == b'=')
            .ok_or(ParseError::MissingEquals)?;
        let k = key(&r[..eq])?;
        let v = &r[eq + 1..];
        let (raw, after) = if let Some(q) = v.strip_prefix(b"\"") {
            let close = q
                .iter()
                .position(|&b| b == b'"')
                .ok_or(ParseError::BadQuote)?;
            let after = &q[close + 1..];
            if !after.is_empty() && after[0] != b' ' {
                return Err(ParseError::BadQuote);
            }
            (&q[..close], after)
        } else {
            let e = v.iter().position(|&b| b == b' ').unwrap_or(v.len());
            (&v[..e], &v[e..])
        };
        fields.push((k, unescape(raw)?));
        rest = after;
    }
    if !rest.is_empty() {
        return Err(ParseError::BadByte);
    }
    Ok(Line {
        prefix,
        program,
        event,
        fields,
    })
}

fn memfind(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Event, escape};

    #[test]
    fn reads_back_what_event_writes() {
        let e = Event::new("tern-send", "delivery_end")
            .num("qid", 42)
            .field("rcpt", b"a b=c@d")
            .field("text", b"")
            .field("why", b"x\n\"y\\\xff");
        let l = parse_line(e.as_str().as_bytes()).unwrap();
        assert_eq!(l.prefix, b"");
        assert_eq!(l.program, "tern-send");
        assert_eq!(l.event, "delivery_end");
        assert_eq!(l.number("qid"), Some(42));
        assert_eq!(l.get("rcpt"), Some(&b"a b=c@d"[..]));
        assert_eq!(l.get("text"), Some(&b""[..]));
        assert_eq!(l.get("why"), Some(&b"x\n\"y\\\xff"[..]));
        assert_eq!(l.get("nope"), None);
    }

    #[test]
    fn unescape_inverts_escape_for_every_byte() {
        let all: Vec<u8> = (0..=255).collect();
        let e = escape(&all);
        // Space and '=' are among the bytes: the value is quoted.
        let inner = &e.as_bytes()[1..e.len() - 1];
        assert_eq!(unescape(inner).unwrap().as_ref(), &all[..]);
    }

    #[test]
    fn logger_prefixes_and_pids() {
        let l = parse_line(b"@400000006789abcd01234567 tern-send: event=new qid=1\n").unwrap();
        assert_eq!(l.prefix, b"@400000006789abcd01234567");
        assert_eq!(l.program, "tern-send");
        let l = parse_line(
            b"2026-01-02T03:04:05+0000 host tern-start[12]: tern-smtpd: event=queued tls=yes\r\n",
        )
        .unwrap();
        assert_eq!(l.prefix, b"2026-01-02T03:04:05+0000 host tern-start[12]:");
        assert_eq!(l.program, "tern-smtpd");
        assert_eq!(l.text("tls"), Some("yes"));
        let l = parse_line(b"host tern-send[99]: event=flush").unwrap();
        assert_eq!((l.program, l.prefix), ("tern-send", &b"host"[..]));
    }

    #[test]
    fn bad_lines_are_errors() {
        use ParseError::*;
        let long = format!("p: event=e k={}", "a".repeat(MAX_LINE));
        let many = format!("p: event=e{}", " k=v".repeat(MAX_FIELDS + 1));
        let cases: &[(&[u8], ParseError)] = &[
            (b"", NotAnEvent),
            (b"hello world", NotAnEvent),
            (b"tern-send: event", NotAnEvent),
            (b": event=x", BadProgram),
            (b"Tern: event=x", BadProgram),
            (b"p\xff: event=x", BadProgram),
            (b"p: event=", BadKey),
            (b"p: event=X", BadKey),
            (b"p: event=x k", MissingEquals),
            (b"p: event=x k v=1", MissingEquals),
            (b"p: event=x =v", BadKey),
            (b"p: event=x k=\"open", BadQuote),
            (b"p: event=x k=\"a\"b", BadQuote),
            (b"p: event=x k=\\x4", BadEscape),
            (b"p: event=x k=\\y41", BadEscape),
            (b"p: event=x k=\\xzz", BadEscape),
            (b"p: event=x k=a\x01", BadByte),
            (b"p: event=x k=\xc3\xa9", BadByte),
            (b"p: event=x k=a\"b", BadByte),
            (b"p: event=x k=v ", MissingEquals),
            (long.as_bytes(), TooLong),
            (many.as_bytes(), TooManyFields),
        ];
        for (input, want) in cases {
            assert_eq!(
                parse_line(input).map(|_| ()),
                Err(*want),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
        let key = format!("p: event=x {}=1", "k".repeat(MAX_KEY + 1));
        assert_eq!(parse_line(key.as_bytes()).map(|_| ()), Err(BadKey));
    }
}
