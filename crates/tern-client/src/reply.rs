//! Reading SMTP replies: a sans-I/O parser for one reply at a time.
//!
//! A reply is one or more lines `ddd-text` ending with one `ddd text` (or a
//! bare `ddd`) line (RFC 5321 section 4.2). The parser checks:
//!
//! * every line starts with a three-digit code whose first digit is 2 to 5,
//!   followed by `-`, a space, or the line end;
//! * every line of one reply has the same code;
//! * a line is at most [`MAX_LINE`] bytes with its line end (RFC 5321
//!   allows 512; longer texts are common enough to tolerate, endless ones
//!   are not);
//! * a reply has at most [`MAX_LINES`] lines.
//!
//! A line ends with LF; a CR just before it is dropped. Servers are
//! supposed to send CRLF, but a reply ended by a bare LF cannot smuggle
//! anything into the message we send, so it is taken as a line end rather
//! than refused. Any other control byte stays in the text and is replaced
//! by `?` when the text is shown ([`sanitise`]).
//!
//! Every violation is a [`ReplyError`]; after one the parser stays failed,
//! because the client and the server no longer agree where replies end and
//! the connection must be dropped.

use std::fmt;

/// Longest reply line accepted, line end included.
pub const MAX_LINE: usize = 4096;
/// Most lines in one reply.
pub const MAX_LINES: usize = 100;
/// Longest reply text handed back ([`Reply::text`], [`sanitise`]), bytes.
pub const MAX_TEXT: usize = 1000;

/// A bad reply from the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    /// A line longer than [`MAX_LINE`] bytes.
    #[error("reply line longer than 4096 bytes")]
    LineTooLong,
    /// More than [`MAX_LINES`] lines in one reply.
    #[error("reply of more than 100 lines")]
    TooManyLines,
    /// A line that does not start with a code `2xx` to `5xx`.
    #[error("reply line without a valid code")]
    BadCode,
    /// The code is followed by something other than `-`, a space or the
    /// line end.
    #[error("reply code not followed by '-' or space")]
    BadSeparator,
    /// A continuation line with another code than the first line.
    #[error("reply lines with different codes")]
    CodeMismatch,
}

/// One complete reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The reply code, 200 to 599.
    pub code: u16,
    /// The text of each line (after the code and its separator), raw bytes
    /// without the line end; at least one (possibly empty).
    pub lines: Vec<Vec<u8>>,
}

/// What a reply code means for the command it answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// 2xx: done.
    Positive,
    /// 3xx: go on (354 after DATA).
    Intermediate,
    /// 4xx: failed, try again later.
    Transient,
    /// 5xx: failed for good.
    Permanent,
}

impl Reply {
    /// The class of the code.
    pub fn class(&self) -> Class {
        match self.code / 100 {
            2 => Class::Positive,
            3 => Class::Intermediate,
            4 => Class::Transient,
            _ => Class::Permanent,
        }
    }

    /// True for 2xx.
    pub fn is_positive(&self) -> bool {
        self.class() == Class::Positive
    }

    /// The reply for showing in logs and bounces: the code, then the lines
    /// joined with `" / "`, made printable ([`sanitise`]) and at most
    /// [`MAX_TEXT`] bytes.
    pub fn text(&self) -> String {
        let mut raw = Vec::new();
        raw.extend_from_slice(self.code.to_string().as_bytes());
        for (i, line) in self.lines.iter().enumerate() {
            raw.extend_from_slice(if i == 0 { b" " } else { b" / " });
            raw.extend_from_slice(line.trim_ascii_end());
            if raw.len() > MAX_TEXT * 2 {
                break;
            }
        }
        let mut s = sanitise(&raw);
        while s.ends_with(' ') {
            s.pop();
        }
        s
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text())
    }
}

/// Makes untrusted bytes printable: valid UTF-8 is kept except control
/// characters, every control character and every byte of invalid UTF-8
/// becomes `?`, and the result is cut to at most [`MAX_TEXT`] bytes (a cut
/// text ends with `...`).
pub fn sanitise(raw: &[u8]) -> String {
    let mut out = String::with_capacity(raw.len().min(MAX_TEXT));
    let mut cut = false;
    'chunks: for chunk in raw.utf8_chunks() {
        for c in chunk.valid().chars() {
            let c = if c.is_control() { '?' } else { c };
            if out.len() + c.len_utf8() > MAX_TEXT {
                cut = true;
                break 'chunks;
            }
            out.push(c);
        }
        for _ in chunk.invalid() {
            if out.len() + 1 > MAX_TEXT {
                cut = true;
                break 'chunks;
            }
            out.push('?');
        }
    }
    if cut {
        while out.len() > MAX_TEXT - 3 {
            out.pop();
        }
        out.push_str("...");
    }
    out
}

/// Collects bytes into replies. See the module documentation.
#[derive(Debug, Default, Clone)]
pub struct ReplyParser {
    line: Vec<u8>,
    lines: Vec<Vec<u8>>,
    code: Option<u16>,
    failed: Option<ReplyError>,
}

impl ReplyParser {
    /// A parser at the start of a reply.
    pub fn new() -> ReplyParser {
        ReplyParser::default()
    }

    /// True when part of a reply has been read but not all of it.
    pub fn is_mid_reply(&self) -> bool {
        !self.line.is_empty() || !self.lines.is_empty()
    }

    /// Consumes bytes of `input` up to the end of the first complete reply.
    /// Returns how many bytes were used and, when a reply ended (or an
    /// error was found), the result. The bytes after a reply stay with the
    /// caller (pipelined replies). After an error every call returns the
    /// same error and uses nothing.
    pub fn feed(&mut self, input: &[u8]) -> (usize, Option<Result<Reply, ReplyError>>) {
        if let Some(e) = self.failed {
            return (0, Some(Err(e)));
        }
        let mut used = 0;
        while used < input.len() {
            let rest = &input[used..];
            let Some(lf) = rest.iter().position(|&b| b == b'\n') else {
                if self.line.len() + rest.len() >= MAX_LINE {
                    return (input.len(), Some(Err(self.fail(ReplyError::LineTooLong))));
                }
                self.line.extend_from_slice(rest);
                return (input.len(), None);
            };
            used += lf + 1;
            if self.line.len() + lf + 1 > MAX_LINE {
                return (used, Some(Err(self.fail(ReplyError::LineTooLong))));
            }
            self.line.extend_from_slice(&rest[..lf]);
            if self.line.last() == Some(&b'\r') {
                self.line.pop();
            }
            match self.end_line() {
                Ok(None) => {}
                Ok(Some(reply)) => return (used, Some(Ok(reply))),
                Err(e) => return (used, Some(Err(self.fail(e)))),
            }
        }
        (used, None)
    }

    fn fail(&mut self, e: ReplyError) -> ReplyError {
        self.failed = Some(e);
        self.line = Vec::new();
        self.lines = Vec::new();
        e
    }

    /// One whole line (without its line end) is in `self.line`.
    fn end_line(&mut self) -> Result<Option<Reply>, ReplyError> {
        let line = std::mem::take(&mut self.line);
        let code = match line.get(..3) {
            Some(&[a @ b'2'..=b'5', b, c]) if b.is_ascii_digit() && c.is_ascii_digit() => {
                u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0')
            }
            _ => return Err(ReplyError::BadCode),
        };
        let last = match line.get(3) {
            None | Some(b' ') => true,
            Some(b'-') => false,
            Some(_) => return Err(ReplyError::BadSeparator),
        };
        if self.code.is_some_and(|c| c != code) {
            return Err(ReplyError::CodeMismatch);
        }
        if self.lines.len() == MAX_LINES {
            return Err(ReplyError::TooManyLines);
        }
        self.code = Some(code);
        self.lines.push(line.get(4..).unwrap_or_default().to_vec());
        if !last {
            return Ok(None);
        }
        self.code = None;
        Ok(Some(Reply {
            code,
            lines: std::mem::take(&mut self.lines),
        }))
    }
}

/// Parses every reply in `input`, for tests and fuzzing: the replies, then
/// the error that stopped parsing or `None` if the input ended cleanly
/// (`partial` tells whether it ended inside a reply).
pub fn parse_all(input: &[u8]) -> (Vec<Reply>, Option<ReplyError>, bool) {
    let mut p = ReplyParser::new();
    let mut replies = Vec::new();
    let mut at = 0;
    loop {
        let (used, event) = p.feed(&input[at..]);
        at += used;
        match event {
            Some(Ok(r)) => replies.push(r),
            Some(Err(e)) => return (replies, Some(e), false),
            None => return (replies, None, p.is_mid_reply()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_replies_are_typed_errors() {
        let long = [b"250 ".as_slice(), &[b'x'; MAX_LINE - 6], b"\r\n"].concat();
        let too_long = [b"250 ".as_slice(), &[b'x'; MAX_LINE - 6], b"x\r\n"].concat();
        let endless = [b"250 ".as_slice(), &[b'x'; MAX_LINE]].concat();
        let many = b"250-x\r\n".repeat(MAX_LINES);
        let cases: &[(&[u8], ReplyError)] = &[
            (b"hello\r\n", ReplyError::BadCode),
            (b"\r\n", ReplyError::BadCode),
            (b"25\r\n", ReplyError::BadCode),
            (b"2x0 ok\r\n", ReplyError::BadCode),
            (b"150 ok\r\n", ReplyError::BadCode),
            (b"650 ok\r\n", ReplyError::BadCode),
            (b"099 ok\r\n", ReplyError::BadCode),
            (b" 250 ok\r\n", ReplyError::BadCode),
            (b"250ok\r\n", ReplyError::BadSeparator),
            (b"2500 ok\r\n", ReplyError::BadSeparator),
            (b"250\tok\r\n", ReplyError::BadSeparator),
            (b"250-a\r\n251 b\r\n", ReplyError::CodeMismatch),
            (b"250-a\r\n550 b\r\n", ReplyError::CodeMismatch),
            (b"250-a\r\nxyz\r\n", ReplyError::BadCode),
            (&too_long, ReplyError::LineTooLong),
            (&endless, ReplyError::LineTooLong),
            (
                &[many.as_slice(), b"250 y\r\n"].concat(),
                ReplyError::TooManyLines,
            ),
        ];
        for (input, want) in cases {
            let (replies, err, _) = parse_all(input);
            assert!(replies.is_empty(), "{:?}", input.escape_ascii().to_string());
            assert_eq!(err, Some(*want), "{:?}", input.escape_ascii().to_string());
        }
        // the limits themselves are accepted
        let (r, e, _) = parse_all(&long);
        assert_eq!((r.len(), e), (1, None));
        let (r, e, _) = parse_all(&[many[7..].to_vec(), b"250 y\r\n".to_vec()].concat());
        assert_eq!((r.len(), e), (1, None));
        assert_eq!(r[0].lines.len(), MAX_LINES);
    }

    #[test]
    fn an_error_sticks() {
        let mut p = ReplyParser::new();
        assert_eq!(
            p.feed(b"xyz\r\n250 ok\r\n"),
            (5, Some(Err(ReplyError::BadCode)))
        );
        assert_eq!(p.feed(b"250 ok\r\n"), (0, Some(Err(ReplyError::BadCode))));
    }

    #[test]
    fn good_replies() {
        let (r, e, partial) = parse_all(
            b"220 mx.example ESMTP\r\n250-mx\r\n250-PIPELINING\r\n250 SIZE 100\r\n354\r\n221 bye\n",
        );
        assert_eq!((e, partial), (None, false));
        assert_eq!(r.len(), 4);
        assert_eq!(r[0].code, 220);
        assert_eq!(
            r[1].lines,
            vec![b"mx".to_vec(), b"PIPELINING".to_vec(), b"SIZE 100".to_vec()]
        );
        assert_eq!(
            r[2],
            Reply {
                code: 354,
                lines: vec![vec![]]
            }
        );
        assert_eq!(r[3].class(), Class::Positive);
        assert_eq!(r[1].text(), "250 mx / PIPELINING / SIZE 100");
        let (r, e, partial) = parse_all(b"250-a\r\n250 b\r\n250-c\r\n");
        assert_eq!((r.len(), e, partial), (1, None, true));
    }

    #[test]
    fn pipelined_replies_are_split_in_any_chunking() {
        let input = b"250 2.1.0 ok\r\n550-5.1.1 no\r\n550 5.1.1 such user\r\n354 go\r\n";
        let (whole, _, _) = parse_all(input);
        assert_eq!(whole.len(), 3);
        for step in 1..input.len() {
            let mut p = ReplyParser::new();
            let mut got = Vec::new();
            for chunk in input.chunks(step) {
                let mut at = 0;
                while at < chunk.len() {
                    let (used, ev) = p.feed(&chunk[at..]);
                    at += used;
                    match ev {
                        Some(r) => got.push(r.unwrap()),
                        None => assert_eq!(at, chunk.len()),
                    }
                }
            }
            assert_eq!(got, whole, "chunk size {step}");
        }
        assert_eq!(whole[1].class(), Class::Permanent);
        assert_eq!(whole[1].text(), "550 5.1.1 no / 5.1.1 such user");
    }

    #[test]
    fn texts_are_printable_and_bounded() {
        let r = Reply {
            code: 550,
            lines: vec![b"bad\x1b[31m \xff\xfe ok \xc3\xa9\x00\x7f  ".to_vec()],
        };
        assert_eq!(r.text(), "550 bad?[31m ?? ok \u{e9}??");
        let r = Reply {
            code: 550,
            lines: vec![vec![b'x'; 3000]],
        };
        let t = r.text();
        assert_eq!(t.len(), MAX_TEXT);
        assert!(t.ends_with("..."));
        // a cut never splits a character
        let s = sanitise(&"\u{e9}".repeat(800).into_bytes());
        assert!(s.len() <= MAX_TEXT && s.ends_with("..."));
        assert_eq!(sanitise(b"a\r\nb\tc"), "a??b?c");
        // many lines: the text stays bounded
        let r = Reply {
            code: 250,
            lines: vec![vec![b'y'; 900]; MAX_LINES],
        };
        assert!(r.text().len() <= MAX_TEXT);
        assert_eq!(
            Reply {
                code: 421,
                lines: vec![vec![]]
            }
            .text(),
            "421"
        );
    }
}
