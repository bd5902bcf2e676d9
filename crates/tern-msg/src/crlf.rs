//! CRLF line ends of injected mail become LF, as Postfix's `sendmail`
//! does: PHP's `mail()` and other programs write CRLF header lines, which
//! stored as they are show stray `^M` in mail readers (and break
//! `charset=UTF-8\r`). A lone CR (not before LF) is content and stays.
//! Streaming, with one byte of state: a CR at the end of one read is held
//! until the next shows whether an LF follows.

use std::io::{self, BufRead, Read};

/// A reader that turns every `\r\n` of `inner` into `\n`.
pub struct CrlfToLf<R> {
    inner: R,
    /// A CR read last, not yet known to end a line.
    held_cr: bool,
}

impl<R: BufRead> CrlfToLf<R> {
    /// Wraps `inner`.
    pub fn new(inner: R) -> CrlfToLf<R> {
        CrlfToLf {
            inner,
            held_cr: false,
        }
    }
}

impl<R: BufRead> Read for CrlfToLf<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        loop {
            let buf = self.inner.fill_buf()?;
            if buf.is_empty() {
                // End of input: a held CR was content.
                if self.held_cr {
                    self.held_cr = false;
                    out[0] = b'\r';
                    return Ok(1);
                }
                return Ok(0);
            }
            let mut n = 0;
            let mut used = 0;
            if self.held_cr {
                if buf[0] != b'\n' {
                    out[n] = b'\r';
                    n += 1;
                }
                self.held_cr = false;
            }
            while used < buf.len() && n < out.len() {
                let b = buf[used];
                used += 1;
                if b == b'\r' {
                    match buf.get(used) {
                        Some(b'\n') => continue,
                        Some(_) => {}
                        None => {
                            self.held_cr = true;
                            break;
                        }
                    }
                }
                out[n] = b;
                n += 1;
            }
            self.inner.consume(used);
            if n > 0 {
                return Ok(n);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads `input` in pieces of `piece` bytes through the filter.
    fn through(input: &[u8], piece: usize, out_size: usize) -> Vec<u8> {
        struct Pieces<'a>(&'a [u8], usize);
        impl Read for Pieces<'_> {
            fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
                let n = self.0.len().min(self.1).min(b.len());
                b[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let inner = io::BufReader::with_capacity(piece, Pieces(input, piece));
        let mut r = CrlfToLf::new(inner);
        let mut got = Vec::new();
        let mut buf = vec![0u8; out_size];
        loop {
            let n = r.read(&mut buf).unwrap();
            if n == 0 {
                return got;
            }
            got.extend_from_slice(&buf[..n]);
        }
    }

    #[test]
    fn crlf_becomes_lf_in_any_chunking() {
        let cases: [(&[u8], &[u8]); 7] = [
            (b"a\r\nb\r\n", b"a\nb\n"),
            (b"a\rb\r\n", b"a\rb\n"),
            (b"\r\n\r\n", b"\n\n"),
            (b"end\r", b"end\r"),
            (b"\r\r\n", b"\r\n"),
            (b"no line ends", b"no line ends"),
            (b"", b""),
        ];
        for (input, want) in cases {
            for piece in 1..=4 {
                for out_size in 1..=3 {
                    assert_eq!(
                        through(input, piece, out_size),
                        want,
                        "{input:?} piece {piece} out {out_size}"
                    );
                }
            }
        }
    }
}
