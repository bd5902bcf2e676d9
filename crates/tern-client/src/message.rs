//! The message on the wire: line ends, dot-stuffing, the end of data.
//!
//! Stored messages have LF line ends, but a stored message may also hold
//! CR bytes (a `\r\n` written by a program, a stray CR). On the wire only
//! CRLF may end a line, and only CRLF `.` CRLF may end the data, so the
//! [`Encoder`] maps the stored bytes this way:
//!
//! * a stored `\r\n` is one line end: CRLF;
//! * every other CR (a bare CR) and every other LF is a line end: CRLF;
//! * a line that begins with `.` gets a second `.` (RFC 5321 4.5.2);
//! * a last line without a line end gets one;
//! * then `.` CRLF ends the data.
//!
//! So no stored byte sequence can put CRLF `.` CRLF (or a bare CR or LF
//! that a lax server would take as a line end) on the wire before the
//! real end: a stored `"a\r.\r\n"` goes out as `"a\r\n..\r\n"`.
//!
//! [`scan`] runs the same encoder over the message once without sending,
//! to learn beforehand the size to announce with `SIZE=` (RFC 1870: the
//! message with CRLF line ends, without the stuffed dots and without the
//! final `.` CRLF) and whether the message holds 8-bit bytes (for
//! `BODY=8BITMIME`).

use std::io::{self, Read};
use std::os::unix::fs::FileExt;

/// Bytes read from the stored message at a time.
pub const CHUNK: usize = 64 * 1024;

/// The byte-level encoder. See the module documentation.
#[derive(Debug, Clone)]
pub struct Encoder {
    at_line_start: bool,
    pending_cr: bool,
    stuffed: u64,
    written: u64,
    eight_bit: bool,
}

impl Default for Encoder {
    fn default() -> Encoder {
        Encoder::new()
    }
}

impl Encoder {
    /// An encoder at the start of a message.
    pub fn new() -> Encoder {
        Encoder {
            at_line_start: true,
            pending_cr: false,
            stuffed: 0,
            written: 0,
            eight_bit: false,
        }
    }

    /// Encodes `input` (the next stored bytes), appending to `out`.
    pub fn encode(&mut self, input: &[u8], out: &mut Vec<u8>) {
        let before = out.len();
        for &b in input {
            if self.pending_cr {
                self.pending_cr = false;
                out.extend_from_slice(b"\r\n");
                self.at_line_start = true;
                if b == b'\n' {
                    continue;
                }
            }
            match b {
                b'\r' => self.pending_cr = true,
                b'\n' => {
                    out.extend_from_slice(b"\r\n");
                    self.at_line_start = true;
                }
                _ => {
                    if self.at_line_start && b == b'.' {
                        out.push(b'.');
                        self.stuffed += 1;
                    }
                    self.eight_bit |= b >= 0x80;
                    out.push(b);
                    self.at_line_start = false;
                }
            }
        }
        self.written += (out.len() - before) as u64;
    }

    /// Ends the message: the last line end if missing, then `.` CRLF.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        let before = out.len();
        if self.pending_cr || !self.at_line_start {
            out.extend_from_slice(b"\r\n");
        }
        self.pending_cr = false;
        self.at_line_start = true;
        out.extend_from_slice(b".\r\n");
        self.written += (out.len() - before) as u64;
    }

    /// What the encoder has seen so far (complete after [`Encoder::finish`]).
    pub fn scan(&self) -> Scan {
        Scan {
            wire: self.written,
            size: self.written.saturating_sub(self.stuffed + 3),
            eight_bit: self.eight_bit,
        }
    }
}

/// What a counting pass over a message found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scan {
    /// Bytes sent after `354`, stuffed dots and the final `.` CRLF
    /// included.
    pub wire: u64,
    /// The size for `SIZE=` (RFC 1870): CRLF line ends, no stuffed dots, no
    /// final `.` CRLF.
    pub size: u64,
    /// The message holds a byte of 128 or above.
    pub eight_bit: bool,
}

/// Runs the encoder over everything `reader` gives, without keeping the
/// output.
///
/// # Errors
/// A read error.
pub fn scan(mut reader: impl Read) -> io::Result<Scan> {
    let mut enc = Encoder::new();
    let mut buf = vec![0u8; CHUNK];
    let mut out = Vec::with_capacity(CHUNK * 2 + 8);
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        out.clear();
        enc.encode(&buf[..n], &mut out);
    }
    out.clear();
    enc.finish(&mut out);
    Ok(enc.scan())
}

/// Encodes a whole message in memory (for tests and fuzzing).
pub fn encode_all(message: &[u8]) -> Vec<u8> {
    let mut enc = Encoder::new();
    let mut out = Vec::with_capacity(message.len() + message.len() / 8 + 8);
    enc.encode(message, &mut out);
    enc.finish(&mut out);
    out
}

/// Where a message is read from, as many times as needed (once to
/// [`scan`], once per sending attempt).
pub trait Source {
    /// A reader from the first byte of the message to its last.
    ///
    /// # Errors
    /// The message cannot be opened.
    fn reader(&self) -> io::Result<Box<dyn Read + '_>>;
}

impl Source for [u8] {
    fn reader(&self) -> io::Result<Box<dyn Read + '_>> {
        Ok(Box::new(self))
    }
}

impl Source for Vec<u8> {
    fn reader(&self) -> io::Result<Box<dyn Read + '_>> {
        Ok(Box::new(self.as_slice()))
    }
}

/// A message stored in a file from `offset`, `size` bytes long (a queue
/// file handed over as a descriptor). It is read with positioned reads, so
/// the file's own position does not matter and several readers may be
/// made one after another.
#[derive(Debug)]
pub struct FileSource {
    file: std::fs::File,
    offset: u64,
    size: u64,
}

impl FileSource {
    /// The message at `offset`, `size` bytes, in `file`.
    pub fn new(file: std::fs::File, offset: u64, size: u64) -> FileSource {
        FileSource { file, offset, size }
    }
}

/// A reader over a [`FileSource`].
struct FileReader<'a> {
    file: &'a std::fs::File,
    at: u64,
    end: u64,
}

impl Read for FileReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.end - self.at;
        if left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = self.file.read_at(&mut buf[..want], self.at)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "message file shorter than its recorded size",
            ));
        }
        self.at += n as u64;
        Ok(n)
    }
}

impl Source for FileSource {
    fn reader(&self) -> io::Result<Box<dyn Read + '_>> {
        let end = self.offset.checked_add(self.size).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "offset + size overflows")
        })?;
        Ok(Box::new(FileReader {
            file: &self.file,
            at: self.offset,
            end,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tern_smtp::{DataDecoder, DataLimits, DataStatus};

    /// What a correct receiver must store: every line end (CRLF, bare CR,
    /// bare LF) as LF, and a final LF.
    fn normalised(message: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < message.len() {
            match message[i] {
                b'\r' if message.get(i + 1) == Some(&b'\n') => {
                    out.push(b'\n');
                    i += 1;
                }
                b'\r' | b'\n' => out.push(b'\n'),
                b => out.push(b),
            }
            i += 1;
        }
        if !out.is_empty() && out.last() != Some(&b'\n') {
            out.push(b'\n');
        }
        out
    }

    /// Decodes `wire` with tern-smtp's strict DATA reader (only CRLF.CRLF
    /// ends data, a bare CR or LF is fatal). Returns the message and how
    /// many bytes it used.
    fn strict_decode(wire: &[u8]) -> (Vec<u8>, usize) {
        let mut d = DataDecoder::new(DataLimits {
            max_bytes: None,
            max_hops: usize::MAX,
        });
        let mut out = Vec::new();
        let (used, status) = d.feed(wire, &mut out);
        assert_eq!(
            status,
            DataStatus::End,
            "wire {:?}",
            wire.escape_ascii().to_string()
        );
        assert_eq!(d.result(), Ok(()));
        (out, used)
    }

    fn check(message: &[u8]) {
        let wire = encode_all(message);
        let shown = message.escape_ascii().to_string();
        // one message, ending exactly at the end of what we sent
        let (decoded, used) = strict_decode(&wire);
        assert_eq!(used, wire.len(), "data ended early: {shown}");
        assert_eq!(decoded, normalised(message), "content changed: {shown}");
        // no bare CR or LF on the wire
        for (i, &b) in wire.iter().enumerate() {
            if b == b'\r' {
                assert_eq!(wire.get(i + 1), Some(&b'\n'), "bare CR: {shown}");
            }
            if b == b'\n' {
                assert!(i > 0 && wire[i - 1] == b'\r', "bare LF: {shown}");
            }
        }
        // the counting pass agrees with what is sent, in any chunking
        let s = scan(message).unwrap();
        assert_eq!(s.wire, wire.len() as u64, "{shown}");
        let crlf_size =
            normalised(message).len() + normalised(message).iter().filter(|&&b| b == b'\n').count();
        assert_eq!(s.size, crlf_size as u64, "SIZE: {shown}");
        assert_eq!(s.eight_bit, message.iter().any(|&b| b >= 0x80));
        for step in [1, 2, 3, 7] {
            let mut enc = Encoder::new();
            let mut out = Vec::new();
            for c in message.chunks(step) {
                enc.encode(c, &mut out);
            }
            enc.finish(&mut out);
            assert_eq!(out, wire, "chunk {step}: {shown}");
            assert_eq!(enc.scan(), s);
        }
    }

    #[test]
    fn nasty_messages() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"", b".\r\n"),
            (b"a\n", b"a\r\n.\r\n"),
            (b"a", b"a\r\n.\r\n"),
            (b"a\r.\r\n", b"a\r\n..\r\n.\r\n"),
            (b"\n.\n", b"\r\n..\r\n.\r\n"),
            (b".\r", b"..\r\n.\r\n"),
            (b".", b"..\r\n.\r\n"),
            (
                b"x\r\n.\r\nMAIL FROM:<a@b>\r\n",
                b"x\r\n..\r\nMAIL FROM:<a@b>\r\n.\r\n",
            ),
            (
                b"x\n.\nRCPT TO:<a@b>\n",
                b"x\r\n..\r\nRCPT TO:<a@b>\r\n.\r\n",
            ),
            (b"a\r\r\n.\r", b"a\r\n\r\n..\r\n.\r\n"),
            (b"\r\n\r\n", b"\r\n\r\n.\r\n"),
            (b"\r", b"\r\n.\r\n"),
            (b"\r\r", b"\r\n\r\n.\r\n"),
            (b"\n\r", b"\r\n\r\n.\r\n"),
            (b"..\n", b"...\r\n.\r\n"),
            (b"a.\n.b\n", b"a.\r\n..b\r\n.\r\n"),
            (b"x\n\r\n.\r\n", b"x\r\n\r\n..\r\n.\r\n"),
            (b"\xc3\xa9\n", b"\xc3\xa9\r\n.\r\n"),
        ];
        for (message, want) in cases {
            assert_eq!(
                encode_all(message),
                *want,
                "{:?}",
                message.escape_ascii().to_string()
            );
            check(message);
        }
        assert_eq!(
            scan(&b"a\r.\r\n"[..]).unwrap(),
            Scan {
                wire: 10,
                size: 6,
                eight_bit: false
            }
        );
    }

    /// Every message over a small alphabet of dangerous pieces, up to a
    /// length, then pseudo-random longer ones: decoding what is sent with a
    /// strict RFC 5321 reader gives back exactly one message, the stored
    /// one with its line ends made CRLF.
    #[test]
    fn property_one_message_comes_back() {
        let alphabet: &[&[u8]] = &[b"\r", b"\n", b".", b"a", b"\r\n", b"\xff"];
        let mut stack: Vec<Vec<u8>> = vec![vec![]];
        let mut checked = 0;
        while let Some(m) = stack.pop() {
            check(&m);
            checked += 1;
            if m.len() < 7 {
                for piece in alphabet {
                    let mut next = m.clone();
                    next.extend_from_slice(piece);
                    stack.push(next);
                }
            }
        }
        assert!(checked > 10_000);
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for _ in 0..2000 {
            let mut m = Vec::new();
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 300) as usize;
            for _ in 0..len {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                m.extend_from_slice(alphabet[(x % alphabet.len() as u64) as usize]);
            }
            check(&m);
        }
    }

    #[test]
    fn file_source_reads_its_range_again_and_again() {
        let path = std::env::temp_dir().join(format!("tern-client-src-{}", std::process::id()));
        std::fs::write(&path, b"HEADERtwo\nlines\n").unwrap();
        let file = std::fs::File::open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let src = FileSource::new(file, 6, 10);
        for _ in 0..2 {
            let mut s = String::new();
            src.reader().unwrap().read_to_string(&mut s).unwrap();
            assert_eq!(s, "two\nlines\n");
        }
        assert_eq!(scan(src.reader().unwrap()).unwrap().size, 12);
        // a file shorter than the recorded size is an error, not a short message
        let short = FileSource::new(src.file.try_clone().unwrap(), 6, 11);
        let mut v = Vec::new();
        let e = short.reader().unwrap().read_to_end(&mut v).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        let bad = FileSource::new(src.file, u64::MAX, 2);
        assert!(bad.reader().is_err());
    }
}
