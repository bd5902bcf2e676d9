//! Splitting SMTP input into command lines.
//!
//! A command line ends with CRLF and is at most [`MAX_COMMAND`] bytes
//! including the CRLF (RFC 5321 section 4.5.3.1.4). A longer line is read to
//! its end and thrown away, then reported as [`LineError::TooLong`]; the
//! session may continue. A CR not followed by LF, or an LF not preceded by
//! CR, is [`LineError::BareCrLf`]: the caller must close the connection,
//! because the client and the server no longer agree where lines end.
//!
//! The splitter consumes input up to and including the end of one line and
//! tells the caller how much it used, so the rest of the buffer (pipelined
//! commands, or the message after `DATA`) stays with the caller.

/// Longest command line, CRLF included.
pub const MAX_COMMAND: usize = 512;

/// Longest command line without its CRLF.
const MAX_TEXT: usize = MAX_COMMAND - 2;

/// What one call to [`LineSplitter::feed`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineEvent {
    /// A complete line, without its CRLF.
    Line(Vec<u8>),
    /// A bad line.
    Error(LineError),
}

/// A bad command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    /// Longer than [`MAX_COMMAND`] bytes; its bytes were discarded.
    #[error("line too long (at most 512 bytes including CRLF)")]
    TooLong,
    /// A CR not followed by LF, or an LF not preceded by CR.
    #[error("bare CR or LF not allowed")]
    BareCrLf,
}

/// Accumulates bytes until a line is complete. Holds at most
/// [`MAX_COMMAND`] bytes.
#[derive(Debug, Default, Clone)]
pub struct LineSplitter {
    buf: Vec<u8>,
    discarding: bool,
    pending_cr: bool,
}

impl LineSplitter {
    /// A splitter at the start of a line.
    pub fn new() -> LineSplitter {
        LineSplitter::default()
    }

    /// True when part of a line has been consumed but not yet completed.
    pub fn is_mid_line(&self) -> bool {
        !self.buf.is_empty() || self.discarding || self.pending_cr
    }

    fn take(&mut self, event: LineEvent) -> Option<LineEvent> {
        self.buf.clear();
        self.discarding = false;
        self.pending_cr = false;
        Some(event)
    }

    fn keep(&mut self, bytes: &[u8]) {
        if self.discarding {
            return;
        }
        if self.buf.len() + bytes.len() > MAX_TEXT {
            self.discarding = true;
            self.buf.clear();
        } else {
            self.buf.extend_from_slice(bytes);
        }
    }

    /// Consumes bytes of `input` up to the end of the first complete line.
    /// Returns how many bytes were used and the line (or error) when one
    /// was completed; `None` means all of `input` was used and more is
    /// needed.
    pub fn feed(&mut self, input: &[u8]) -> (usize, Option<LineEvent>) {
        let mut i = 0;
        while i < input.len() {
            if self.pending_cr {
                if input[i] == b'\n' {
                    let ev = if self.discarding {
                        LineEvent::Error(LineError::TooLong)
                    } else {
                        LineEvent::Line(std::mem::take(&mut self.buf))
                    };
                    return (i + 1, self.take(ev));
                }
                return (i, self.take(LineEvent::Error(LineError::BareCrLf)));
            }
            match memchr::memchr2(b'\r', b'\n', &input[i..]) {
                None => {
                    self.keep(&input[i..]);
                    return (input.len(), None);
                }
                Some(off) => {
                    self.keep(&input[i..i + off]);
                    let at = i + off;
                    if input[at] == b'\n' {
                        return (at + 1, self.take(LineEvent::Error(LineError::BareCrLf)));
                    }
                    self.pending_cr = true;
                    i = at + 1;
                }
            }
        }
        (input.len(), None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` whole and returns every event with the bytes used
    /// before it.
    fn all(input: &[u8]) -> Vec<LineEvent> {
        let mut s = LineSplitter::new();
        let mut out = Vec::new();
        let mut rest = input;
        loop {
            let (n, ev) = s.feed(rest);
            rest = &rest[n..];
            match ev {
                Some(LineEvent::Error(LineError::BareCrLf)) => {
                    out.push(LineEvent::Error(LineError::BareCrLf));
                    return out;
                }
                Some(e) => out.push(e),
                None => return out,
            }
        }
    }

    fn line(s: &str) -> LineEvent {
        LineEvent::Line(s.as_bytes().to_vec())
    }

    #[test]
    fn bad_lines() {
        let long = vec![b'a'; 511];
        let cases: Vec<(Vec<u8>, Vec<LineEvent>)> = vec![
            (
                b"NOOP\n".to_vec(),
                vec![LineEvent::Error(LineError::BareCrLf)],
            ),
            (
                b"NOOP\rX\r\n".to_vec(),
                vec![LineEvent::Error(LineError::BareCrLf)],
            ),
            (
                b"NO\rOP\r\n".to_vec(),
                vec![LineEvent::Error(LineError::BareCrLf)],
            ),
            (b"\n".to_vec(), vec![LineEvent::Error(LineError::BareCrLf)]),
            (
                b"\r\r\n".to_vec(),
                vec![LineEvent::Error(LineError::BareCrLf)],
            ),
            (
                b"A\r\nB\nC\r\n".to_vec(),
                vec![line("A"), LineEvent::Error(LineError::BareCrLf)],
            ),
            (
                [&long[..], b"\r\nNOOP\r\n"].concat(),
                vec![LineEvent::Error(LineError::TooLong), line("NOOP")],
            ),
            (
                [&vec![b'x'; 10_000][..], b"\r\n"].concat(),
                vec![LineEvent::Error(LineError::TooLong)],
            ),
            // A long line ended by a bare LF is still a bare LF.
            (
                [&long[..], b"\n"].concat(),
                vec![LineEvent::Error(LineError::BareCrLf)],
            ),
        ];
        for (input, want) in cases {
            assert_eq!(
                all(&input),
                want,
                "input {:?}",
                String::from_utf8_lossy(&input)
            );
        }
    }

    #[test]
    fn limit_is_512_with_crlf() {
        let ok = vec![b'a'; 510];
        assert_eq!(
            all(&[&ok[..], b"\r\n"].concat()),
            vec![LineEvent::Line(ok.clone())]
        );
    }

    #[test]
    fn pipelined_lines_in_one_buffer_and_nul_kept() {
        assert_eq!(
            all(b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDA\0TA\r\n"),
            vec![
                line("MAIL FROM:<a@b>"),
                line("RCPT TO:<c@d>"),
                line("DA\0TA")
            ]
        );
    }

    #[test]
    fn every_split_point_gives_the_same_lines() {
        let input = b"EHLO x\r\nNOOP\r\n\r\nQUIT\r\n";
        for cut in 0..input.len() {
            let mut s = LineSplitter::new();
            let mut out = Vec::new();
            for part in [&input[..cut], &input[cut..]] {
                let mut rest = part;
                while !rest.is_empty() {
                    let (n, ev) = s.feed(rest);
                    rest = &rest[n..];
                    out.extend(ev);
                }
            }
            assert_eq!(
                out,
                vec![line("EHLO x"), line("NOOP"), line(""), line("QUIT")]
            );
            assert!(!s.is_mid_line());
        }
    }

    #[test]
    fn unconsumed_rest_stays_with_the_caller() {
        let mut s = LineSplitter::new();
        let (n, ev) = s.feed(b"DATA\r\nSubject: x\r\n");
        assert_eq!(ev, Some(line("DATA")));
        assert_eq!(n, 6);
    }
}
