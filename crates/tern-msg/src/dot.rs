//! The sendmail convention for messages on standard input without `-i`:
//! a line consisting of a single `.` ends the input.
//!
//! [`DotTerminated`] wraps a reader and yields its bytes up to (not
//! including) the first line that is exactly `.` followed by LF, CRLF or
//! the end of input. Nothing after that line is read. No other line is
//! changed: a leading dot is not removed (there is no dot-stuffing on
//! standard input, as in Postfix's sendmail). Lines may be of any length;
//! the reader holds at most two bytes of look-ahead.

use std::io::{BufRead, Read};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of a line, nothing held.
    LineStart,
    /// At the start of a line, `.` held.
    Dot,
    /// At the start of a line, `.\r` held.
    DotCr,
    /// Inside a line.
    Inside,
    /// The terminating line was seen (or the input ended).
    Done,
}

/// A reader that ends at a line consisting of a single `.`.
#[derive(Debug)]
pub struct DotTerminated<R> {
    inner: R,
    state: State,
    /// Held bytes still to be given out (after a held `.` or `.\r` turned out
    /// to be content).
    pending: &'static [u8],
    saw_dot: bool,
}

impl<R: BufRead> DotTerminated<R> {
    /// Wraps `inner`.
    pub fn new(inner: R) -> Self {
        DotTerminated {
            inner,
            state: State::LineStart,
            pending: b"",
            saw_dot: false,
        }
    }

    /// True once the terminating `.` line has been seen (as opposed to the
    /// input simply ending).
    pub fn saw_dot(&self) -> bool {
        self.saw_dot
    }

    /// Gives back the inner reader.
    pub fn into_inner(self) -> R {
        self.inner
    }
}

impl<R: BufRead> Read for DotTerminated<R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        loop {
            if !self.pending.is_empty() {
                let n = self.pending.len().min(out.len());
                out[..n].copy_from_slice(&self.pending[..n]);
                self.pending = &self.pending[n..];
                return Ok(n);
            }
            if self.state == State::Done {
                return Ok(0);
            }
            let avail = match self.inner.fill_buf() {
                Ok(a) => a,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if avail.is_empty() {
                // End of input: a held `.` alone on the last line ends the
                // message like `.\n`; a held `.\r` is content.
                match self.state {
                    State::DotCr => self.pending = b".\r",
                    State::Dot => self.saw_dot = true,
                    _ => {}
                }
                self.state = State::Done;
                continue;
            }
            match self.state {
                State::Inside => {
                    let limit = avail.len().min(out.len());
                    let n = match memchr::memchr(b'\n', &avail[..limit]) {
                        Some(i) => {
                            self.state = State::LineStart;
                            i + 1
                        }
                        None => limit,
                    };
                    out[..n].copy_from_slice(&avail[..n]);
                    self.inner.consume(n);
                    return Ok(n);
                }
                State::LineStart => {
                    if avail[0] == b'.' {
                        self.inner.consume(1);
                        self.state = State::Dot;
                    } else {
                        self.state = State::Inside;
                    }
                }
                State::Dot => match avail[0] {
                    b'\n' => {
                        self.inner.consume(1);
                        self.state = State::Done;
                        self.saw_dot = true;
                    }
                    b'\r' => {
                        self.inner.consume(1);
                        self.state = State::DotCr;
                    }
                    _ => {
                        self.pending = b".";
                        self.state = State::Inside;
                    }
                },
                State::DotCr => {
                    if avail[0] == b'\n' {
                        self.inner.consume(1);
                        self.state = State::Done;
                        self.saw_dot = true;
                    } else {
                        self.pending = b".\r";
                        self.state = State::Inside;
                    }
                }
                State::Done => return Ok(0),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(input: &[u8], cap: usize, out_chunk: usize) -> (Vec<u8>, Vec<u8>, bool) {
        let mut d = DotTerminated::new(std::io::BufReader::with_capacity(cap, input));
        let mut got = Vec::new();
        let mut buf = vec![0u8; out_chunk];
        loop {
            let n = d.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        let saw = d.saw_dot();
        let mut rest = Vec::new();
        d.into_inner().read_to_end(&mut rest).unwrap();
        (got, rest, saw)
    }

    #[test]
    fn table() {
        // input, output, left on the reader, terminated by a dot line
        type Case = (&'static [u8], &'static [u8], &'static [u8], bool);
        let table: &[Case] = &[
            (b"", b"", b"", false),
            (b".\n", b"", b"", true),
            (b".\r\n", b"", b"", true),
            (b".", b"", b"", true),
            (b"a\n.\nb\n", b"a\n", b"b\n", true),
            (b"a\r\n.\r\nb\r\n", b"a\r\n", b"b\r\n", true),
            (b"a\n.", b"a\n", b"", true),
            (b"a\n..\nb\n", b"a\n..\nb\n", b"", false),
            (b"a\n.b\n", b"a\n.b\n", b"", false),
            (b"a\n. \n", b"a\n. \n", b"", false),
            (b"a\n.\r", b"a\n.\r", b"", false),
            (b"a\n.\rx\n", b"a\n.\rx\n", b"", false),
            (b"a.\nb\n", b"a.\nb\n", b"", false),
            (b"x\0y\n\xff\n", b"x\0y\n\xff\n", b"", false),
            (b"no final newline", b"no final newline", b"", false),
            (b"a\n.\n.\n", b"a\n", b".\n", true),
        ];
        for (input, out, rest, saw) in table {
            for cap in [1, 2, 3, 64] {
                for chunk in [1, 2, 5, 100] {
                    let got = run(input, cap, chunk);
                    assert_eq!(
                        (got.0.as_slice(), got.1.as_slice(), got.2),
                        (*out, *rest, *saw),
                        "input {:?} cap {cap} chunk {chunk}",
                        String::from_utf8_lossy(input)
                    );
                }
            }
        }
    }

    #[test]
    fn long_lines_pass() {
        let line = vec![b'.'; 200_000];
        let input = [line.as_slice(), b"\n.\n"].concat();
        let (got, _, saw) = run(&input, 8192, 4096);
        assert!(saw);
        assert_eq!(got, [line.as_slice(), b"\n"].concat());
    }
}
