//! Submission mode: the message header is completed as for local
//! injection. A `Date:` and a `Message-ID:` field are added at the end of
//! the header when it has none; every other byte passes unchanged.
//!
//! The message is streamed: only the header is held (at most
//! [`MAX_HEADER`] bytes, else the message is refused); after its end the
//! body goes straight through. The header ends at the first empty line,
//! or before the first line that is neither a field (`name:`) nor a
//! continuation (leading blank); in that second case an empty line is
//! added after the new fields, so the line stays in the body.

use std::io::{self, Write};

/// Largest header held while looking for its end.
pub(crate) const MAX_HEADER: usize = 1024 * 1024;

/// The answer to a message whose header is over [`MAX_HEADER`] (DATA and
/// BDAT alike): permanent, the same message would fail again.
pub(crate) fn too_big_reply() -> tern_smtp::Reply {
    tern_smtp::Reply::new(552, "5.3.4", "message header over 1 MiB")
}

/// The fields to add when missing (values without the name or newline).
#[derive(Debug, Clone)]
pub(crate) struct Completion {
    pub(crate) date: String,
    pub(crate) message_id: String,
}

/// A writer that completes the header of the message written through it.
pub(crate) struct Completer<'a> {
    inner: &'a mut dyn Write,
    /// The header so far; `None` once it has been written.
    head: Option<Vec<u8>>,
    /// Where scanning `head` resumes.
    pos: usize,
    /// How much of `head` is known to hold no newline after `pos`.
    seen: usize,
    fields: Completion,
    /// The header was over [`MAX_HEADER`].
    pub(crate) too_big: bool,
}

fn field_name(line: &[u8]) -> Option<&[u8]> {
    let colon = line.iter().position(|&b| b == b':')?;
    let name = &line[..colon];
    (!name.is_empty() && name.iter().all(|&b| b.is_ascii_graphic())).then_some(name)
}

/// Where the header of `head` ends: `(end, blank_needed)`; `None` when
/// more input is needed (`complete`: there is no more). `*pos` is the
/// start of the first line not yet seen whole, where the next call
/// resumes.
fn header_end(head: &[u8], pos: &mut usize, complete: bool) -> Option<(usize, bool)> {
    while *pos < head.len() {
        let pos_now = *pos;
        let Some(nl) = head[pos_now..].iter().position(|&b| b == b'\n') else {
            // A last line without newline.
            if !complete {
                return None;
            }
            let pos = pos_now;
            let line = &head[pos..];
            let field = field_name(line).is_some() || (pos > 0 && matches!(line[0], b' ' | b'\t'));
            return Some(if field {
                (head.len(), false)
            } else {
                (pos, true)
            });
        };
        let line = &head[pos_now..pos_now + nl];
        if line.is_empty() {
            return Some((pos_now, false));
        }
        let continuation = pos_now > 0 && matches!(line[0], b' ' | b'\t');
        if !continuation && field_name(line).is_none() {
            return Some((pos_now, true));
        }
        *pos = pos_now + nl + 1;
    }
    complete.then_some((head.len(), false))
}

impl<'a> Completer<'a> {
    pub(crate) fn new(inner: &'a mut dyn Write, fields: Completion) -> Completer<'a> {
        Completer {
            inner,
            head: Some(Vec::new()),
            pos: 0,
            seen: 0,
            fields,
            too_big: false,
        }
    }

    fn emit(&mut self, complete: bool) -> io::Result<bool> {
        let Some(head) = self.head.as_ref() else {
            return Ok(true);
        };
        if !complete && !head[self.seen.max(self.pos)..].contains(&b'\n') {
            // Still inside one line: nothing new to scan (each byte of a
            // long line is looked at once, however small the writes).
            self.seen = head.len();
            return Ok(false);
        }
        self.seen = head.len();
        let Some((end, blank)) = header_end(head, &mut self.pos, complete) else {
            return Ok(false);
        };
        let head = self.head.take().expect("checked");
        let (header, rest) = head.split_at(end);
        let has = |name: &[u8]| {
            header.split(|&b| b == b'\n').any(|l| {
                !matches!(l.first(), Some(b' ' | b'\t'))
                    && field_name(l).is_some_and(|n| n.eq_ignore_ascii_case(name))
            })
        };
        let mut add = Vec::new();
        if !header.is_empty() && !header.ends_with(b"\n") {
            add.push(b'\n');
        }
        if !has(b"date") {
            add.extend_from_slice(format!("Date: {}\n", self.fields.date).as_bytes());
        }
        if !has(b"message-id") {
            add.extend_from_slice(format!("Message-ID: {}\n", self.fields.message_id).as_bytes());
        }
        if blank {
            // Keep the non-field line out of the header.
            add.push(b'\n');
        }
        self.inner.write_all(header)?;
        self.inner.write_all(&add)?;
        self.inner.write_all(rest)?;
        Ok(true)
    }

    /// The end of the message: writes a header still held.
    pub(crate) fn finish(&mut self) -> io::Result<()> {
        self.emit(true).map(|_| ())
    }
}

impl Write for Completer<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let Some(head) = self.head.as_mut() else {
            return self.inner.write(buf);
        };
        head.extend_from_slice(buf);
        if !self.emit(false)? && self.head.as_ref().is_some_and(|h| h.len() > MAX_HEADER) {
            self.too_big = true;
            self.head = None;
            return Err(io::Error::other("message header over 1 MiB"));
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields() -> Completion {
        Completion {
            date: "Fri, 27 Nov 2026 09:16:24 +0000".into(),
            message_id: "<1.2@mx>".into(),
        }
    }

    const ADD: &str = "Date: Fri, 27 Nov 2026 09:16:24 +0000\nMessage-ID: <1.2@mx>\n";

    /// Writes `input` in pieces of `step` bytes.
    fn run(input: &[u8], step: usize) -> Result<Vec<u8>, bool> {
        let mut out = Vec::new();
        let mut c = Completer::new(&mut out, fields());
        for piece in input.chunks(step.max(1)) {
            if c.write_all(piece).is_err() {
                return Err(c.too_big);
            }
        }
        c.finish().map_err(|_| false)?;
        Ok(out)
    }

    #[test]
    fn header_too_big_is_refused() {
        let mut big = b"Subject: ".to_vec();
        big.extend(std::iter::repeat_n(b'x', MAX_HEADER + 10));
        assert_eq!(run(&big, 65536), Err(true));
        let mut big = b"Subject: x\n".to_vec();
        for _ in 0..MAX_HEADER / 6 + 1 {
            big.extend_from_slice(b" more\n");
        }
        assert_eq!(run(&big, 4096), Err(true));
    }

    #[test]
    fn adds_missing_fields_and_keeps_the_rest() {
        let cases: &[(&str, String)] = &[
            ("Subject: s\n\nbody\n", format!("Subject: s\n{ADD}\nbody\n")),
            ("\nbody\n", format!("{ADD}\nbody\n")),
            ("Subject: s\n", format!("Subject: s\n{ADD}")),
            ("Subject: s", format!("Subject: s\n{ADD}")),
            ("hello world\n", format!("{ADD}\nhello world\n")),
            ("Subject: s\nnot a field\n", format!("Subject: s\n{ADD}\nnot a field\n")),
            (
                "Subject: s\n folded\nDATE: x\n\nbody",
                "Subject: s\n folded\nDATE: x\nMessage-ID: <1.2@mx>\n\nbody".to_string(),
            ),
            (
                "message-id: <a@b>\nDate: d\n\n\nDate: body\n",
                "message-id: <a@b>\nDate: d\n\n\nDate: body\n".to_string(),
            ),
            (
                "Subject: s\n Date: folded is not a field\n\nx",
                "Subject: s\n Date: folded is not a field\nDate: Fri, 27 Nov 2026 09:16:24 +0000\nMessage-ID: <1.2@mx>\n\nx"
                    .to_string(),
            ),
            ("", ADD.to_string()),
        ];
        for (input, want) in cases {
            for step in [1, 3, 1000] {
                let got = run(input.as_bytes(), step).expect("fits");
                assert_eq!(
                    String::from_utf8(got).unwrap(),
                    *want,
                    "{input:?} step {step}"
                );
            }
        }
    }

    #[test]
    fn body_is_streamed_unchanged() {
        let mut msg = b"Subject: s\n\n".to_vec();
        msg.extend((0..200_000u32).map(|i| (i % 251) as u8));
        let got = run(&msg, 8192).unwrap();
        assert!(got.ends_with(&msg[12..]));
        assert_eq!(got.len(), msg.len() + ADD.len());
    }
}
