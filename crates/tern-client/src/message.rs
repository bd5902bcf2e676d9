//! The message on the wire: line ends, long lines, dot-stuffing, the end
//! of data.
//!
//! Stored messages have LF line ends, but a stored message may also hold
//! CR bytes (a `\r\n` written by a program, a stray CR). On the wire only
//! CRLF may end a line, and only CRLF `.` CRLF may end the data, so the
//! [`Encoder`] maps the stored bytes this way:
//!
//! * a stored `\r\n` is one line end: CRLF;
//! * every other CR (a bare CR) and every other LF is a line end: CRLF;
//! * a line that begins with `.` gets a second `.` (RFC 5321 4.5.2);
//! * a line longer than [`MAX_LINE`] octets (the stuffed dot counted) is
//!   broken by inserting CRLF SPACE (see below);
//! * a last line without a line end gets one;
//! * then `.` CRLF ends the data.
//!
//! So no stored byte sequence can put CRLF `.` CRLF (or a bare CR or LF
//! that a lax server would take as a line end) on the wire before the
//! real end: a stored `"a\r.\r\n"` goes out as `"a\r\n..\r\n"`.
//!
//! # Long lines
//!
//! Tern accepts lines of any length (as Postfix does) but never sends a
//! line over [`MAX_LINE`] = 998 octets before its CRLF (RFC 5321
//! 4.5.3.1.6), counting a stuffed dot too, so that every receiver takes
//! it however it counts. A longer line is broken as Postfix's
//! `smtp_line_length_limit` does, by inserting CRLF SPACE: in a header
//! the rest becomes a continuation line (a valid folded field); in a body
//! the text gains a line end and a space, and nothing else changes. The
//! continuation starts with the space, so it never needs a stuffed dot and
//! is never empty or `.` alone. Where the break goes, when the line holds
//! a 999th octet:
//!
//! 1. before the last space or tab among the last [`BREAK_WINDOW`] + 1
//!    octets up to and including the 999th (so words, URLs and tags stay
//!    whole when the text has spaces; the line keeps at least 798 octets);
//! 2. else before a UTF-8 sequence that the limit would cut (at most 3
//!    octets earlier), so that a character is never split;
//! 3. else at the limit, as Postfix.
//!
//! The rule depends only on the bytes of the line, never on how the
//! message was read in chunks: the same stored message always goes out as
//! the same bytes (a DKIM signature over what is sent stays valid on the
//! next attempt). Each break adds 3 octets, which [`scan`] counts.
//!
//! [`scan`] runs the same encoder over the message once without sending,
//! to learn beforehand the size to announce with `SIZE=` (RFC 1870: the
//! message with CRLF line ends, without the stuffed dots and without the
//! final `.` CRLF, with the inserted breaks) and whether the message holds
//! 8-bit bytes (for `BODY=8BITMIME`).

use std::io::{self, Read};
use std::os::unix::fs::FileExt;

/// Bytes read from the stored message at a time.
pub const CHUNK: usize = 64 * 1024;

/// Longest line sent, in octets before its CRLF, a stuffed dot included
/// (RFC 5321 4.5.3.1.6: 1000 octets with the CRLF).
pub const MAX_LINE: usize = 998;

/// How far before the limit a break looks for a space or tab.
pub const BREAK_WINDOW: usize = 200;

/// The byte-level encoder. See the module documentation.
#[derive(Debug, Clone)]
pub struct Encoder {
    at_line_start: bool,
    pending_cr: bool,
    /// The line being sent, not yet output (at most [`MAX_LINE`] octets,
    /// a stuffed dot or the space of a continuation included).
    line: Vec<u8>,
    stuffed: u64,
    breaks: u64,
    written: u64,
    eight_bit: bool,
}

impl Default for Encoder {
    fn default() -> Encoder {
        Encoder::new()
    }
}

/// Where a full line (`line`, [`MAX_LINE`] octets) is broken when `next`
/// comes: the number of octets that stay on it. See the module
/// documentation.
fn break_point(line: &[u8], next: u8) -> usize {
    debug_assert_eq!(line.len(), MAX_LINE);
    let at = |i: usize| if i < MAX_LINE { line[i] } else { next };
    if let Some(p) = (MAX_LINE - BREAK_WINDOW..=MAX_LINE)
        .rev()
        .find(|&i| matches!(at(i), b' ' | b'\t'))
    {
        return p;
    }
    let continuation = |b: u8| b & 0xc0 == 0x80;
    let mut p = MAX_LINE;
    while p > MAX_LINE - 3 && continuation(at(p)) {
        p -= 1;
    }
    if p < MAX_LINE && at(p) >= 0xc0 {
        p
    } else {
        MAX_LINE
    }
}

impl Encoder {
    /// An encoder at the start of a message.
    pub fn new() -> Encoder {
        Encoder {
            at_line_start: true,
            pending_cr: false,
            line: Vec::with_capacity(MAX_LINE),
            stuffed: 0,
            breaks: 0,
            written: 0,
            eight_bit: false,
        }
    }

    /// Encodes `input` (the next stored bytes), appending to `out`. The
    /// current line is held back (at most [`MAX_LINE`] octets) until its
    /// end or its break is known.
    pub fn encode(&mut self, input: &[u8], out: &mut Vec<u8>) {
        for &b in input {
            if self.pending_cr {
                self.pending_cr = false;
                self.end_line(out);
                if b == b'\n' {
                    continue;
                }
            }
            match b {
                b'\r' => self.pending_cr = true,
                b'\n' => self.end_line(out),
                _ => self.text(b, out),
            }
        }
    }

    fn text(&mut self, b: u8, out: &mut Vec<u8>) {
        if self.at_line_start {
            self.at_line_start = false;
            if b == b'.' {
                self.line.push(b'.');
                self.stuffed += 1;
            }
        }
        if self.line.len() == MAX_LINE {
            let keep = break_point(&self.line, b);
            out.extend_from_slice(&self.line[..keep]);
            out.extend_from_slice(b"\r\n");
            self.written += keep as u64 + 2;
            self.line.drain(..keep);
            self.line.insert(0, b' ');
            self.breaks += 1;
        }
        self.eight_bit |= b >= 0x80;
        self.line.push(b);
    }

    fn end_line(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.line);
        out.extend_from_slice(b"\r\n");
        self.written += self.line.len() as u64 + 2;
        self.line.clear();
        self.at_line_start = true;
    }

    /// Ends the message: the last line end if missing, then `.` CRLF.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.pending_cr || !self.at_line_start {
            self.end_line(out);
        }
        self.pending_cr = false;
        out.extend_from_slice(b".\r\n");
        self.written += 3;
    }

    /// What the encoder has seen so far (complete after [`Encoder::finish`]).
    pub fn scan(&self) -> Scan {
        Scan {
            wire: self.written,
            size: self.written.saturating_sub(self.stuffed + 3),
            eight_bit: self.eight_bit,
            breaks: self.breaks,
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
    /// Long lines were broken this many times (CRLF SPACE inserted; each
    /// counted in `wire` and `size`).
    pub breaks: u64,
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

/// The message as the receiving server will hold it once the data has
/// ended: the [`Encoder`]'s output (CRLF line ends, long lines broken)
/// without the stuffed dots and without the final `.` CRLF, at most `max`
/// bytes (`None` past that). A DKIM signature computed over these bytes is
/// a signature over exactly what is sent, whatever line ends the stored
/// message has and however its long lines are broken.
///
/// # Errors
/// The reader fails.
pub fn received_form(mut reader: impl Read, max: usize) -> io::Result<Option<Vec<u8>>> {
    let mut enc = Encoder::new();
    let mut buf = vec![0u8; CHUNK];
    let mut out = Vec::with_capacity(CHUNK * 2 + 8);
    let mut form = Vec::new();
    let mut at_line_start = true;
    let mut take = |out: &[u8], form: &mut Vec<u8>| {
        for &b in out {
            // Every line of the encoder's output that begins with a dot
            // got that dot stuffed (a continuation begins with a space).
            if at_line_start && b == b'.' {
                at_line_start = false;
                continue;
            }
            at_line_start = b == b'\n';
            form.push(b);
        }
    };
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        out.clear();
        enc.encode(&buf[..n], &mut out);
        take(&out, &mut form);
        if form.len() > max {
            return Ok(None);
        }
    }
    out.clear();
    enc.finish(&mut out);
    // The final `.` CRLF is the end of data, not the message.
    out.truncate(out.len() - 3);
    take(&out, &mut form);
    Ok((form.len() <= max).then_some(form))
}

/// A message sent with `prefix` (stored form: LF line ends) in front of
/// it, such as header fields added on the way out (a DKIM signature). The
/// prefix must end with a line end, so that the message after it is
/// encoded exactly as without it.
pub struct Prefixed<'a> {
    prefix: &'a [u8],
    inner: &'a dyn Source,
}

impl<'a> Prefixed<'a> {
    /// `inner` with `prefix` in front.
    pub fn new(prefix: &'a [u8], inner: &'a dyn Source) -> Prefixed<'a> {
        debug_assert!(prefix.is_empty() || prefix.ends_with(b"\n"));
        Prefixed { prefix, inner }
    }
}

impl Source for Prefixed<'_> {
    fn reader(&self) -> io::Result<Box<dyn Read + '_>> {
        Ok(Box::new(self.prefix.chain(self.inner.reader()?)))
    }
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

    /// `decoded` with the inserted breaks (`\n `) taken out must be
    /// `original`; returns how many were taken out. A break is always
    /// inside a line (a text byte follows it), so where `decoded` has
    /// `\n` and `original` a text byte, that `\n ` is a break: the
    /// alignment is exact.
    fn unbreak(decoded: &[u8], original: &[u8], shown: &str) -> u64 {
        let (mut i, mut j, mut breaks) = (0, 0, 0);
        while i < decoded.len() {
            if j < original.len() && decoded[i] == original[j] {
                i += 1;
                j += 1;
                continue;
            }
            assert_eq!(
                decoded.get(i..i + 2),
                Some(&b"\n "[..]),
                "content changed at {i}: {shown}"
            );
            assert!(j < original.len() && original[j] != b'\n', "{shown}");
            i += 2;
            breaks += 1;
        }
        assert_eq!(j, original.len(), "content lost: {shown}");
        breaks
    }

    /// Checks everything about sending `message`; returns the breaks.
    fn check(message: &[u8]) -> u64 {
        let wire = encode_all(message);
        let shown = message.escape_ascii().to_string();
        let shown = if shown.len() > 300 {
            format!("{}... ({} bytes)", &shown[..300], message.len())
        } else {
            shown
        };
        // one message, ending exactly at the end of what we sent
        let (decoded, used) = strict_decode(&wire);
        assert_eq!(used, wire.len(), "data ended early: {shown}");
        // the same text but for the inserted breaks
        let breaks = unbreak(&decoded, &normalised(message), &shown);
        // no bare CR or LF on the wire, no line over 998 octets (a stuffed
        // dot counted)
        for (i, &b) in wire.iter().enumerate() {
            if b == b'\r' {
                assert_eq!(wire.get(i + 1), Some(&b'\n'), "bare CR: {shown}");
            }
            if b == b'\n' {
                assert!(i > 0 && wire[i - 1] == b'\r', "bare LF: {shown}");
            }
        }
        for line in wire.split(|&b| b == b'\n') {
            assert!(line.len() <= MAX_LINE + 1, "line too long: {shown}");
        }
        // the counting pass agrees with what is sent, in any chunking
        let s = scan(message).unwrap();
        assert_eq!(s.wire, wire.len() as u64, "{shown}");
        assert_eq!(s.breaks, breaks, "{shown}");
        let crlf_size =
            normalised(message).len() + normalised(message).iter().filter(|&&b| b == b'\n').count();
        assert_eq!(s.size, crlf_size as u64 + 3 * breaks, "SIZE: {shown}");
        assert_eq!(s.eight_bit, message.iter().any(|&b| b >= 0x80));
        // what the receiver holds (what a DKIM signature covers) is the
        // decoded data, with CRLF line ends
        let held = received_form(message, usize::MAX).unwrap().unwrap();
        let mut crlf = Vec::new();
        for &b in &decoded {
            if b == b'\n' {
                crlf.push(b'\r');
            }
            crlf.push(b);
        }
        assert_eq!(held, crlf, "received form: {shown}");
        assert_eq!(held.len() as u64, s.size, "received form is SIZE: {shown}");
        assert_eq!(
            received_form(message, held.len()).unwrap(),
            Some(held.clone())
        );
        if !held.is_empty() {
            assert_eq!(received_form(message, held.len() - 1).unwrap(), None);
        }
        for step in [1, 2, 3, 7, 997, 998, 999] {
            let mut enc = Encoder::new();
            let mut out = Vec::new();
            for c in message.chunks(step) {
                enc.encode(c, &mut out);
            }
            enc.finish(&mut out);
            assert_eq!(out, wire, "chunk {step}: {shown}");
            assert_eq!(enc.scan(), s);
        }
        breaks
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
                eight_bit: false,
                breaks: 0
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
            assert_eq!(check(&m), 0);
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

    /// Messages with long lines over pieces that matter to the breaking
    /// rule (spaces, tabs, UTF-8 sequences of every length, dots, line
    /// ends): lines over 998 octets are broken, and the decoded text is
    /// the stored one but for the inserted `\n ` (checked by [`check`]).
    #[test]
    fn property_long_lines_come_back_with_only_the_breaks() {
        let pieces: &[&[u8]] = &[
            b" ",
            b"\t",
            b".",
            b"\n",
            b"\r",
            b"\r\n",
            b"\xc3\xa9",
            b"\xe2\x82\xac",
            b"\xf0\x9f\x98\x80",
            b"\x80",
            b"abc",
        ];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut breaks = 0;
        for _ in 0..400 {
            let mut m = Vec::new();
            let parts = next() % 40;
            for _ in 0..parts {
                let r = next();
                if r % 4 == 0 {
                    // a long run without a space: 900..=2100 octets
                    let run = 900 + (r >> 8) as usize % 1201;
                    m.extend(std::iter::repeat_n(b'x', run));
                } else {
                    let piece = pieces[(r >> 8) as usize % pieces.len()];
                    for _ in 0..(1 + (r >> 16) % 300) {
                        m.extend_from_slice(piece);
                    }
                }
            }
            breaks += check(&m);
        }
        assert!(
            breaks > 1000,
            "only {breaks} breaks: the test tests nothing"
        );
    }

    #[test]
    fn long_lines_are_broken_with_crlf_space() {
        let wire_lines = |m: &[u8]| -> Vec<Vec<u8>> {
            let w = encode_all(m);
            let mut lines: Vec<Vec<u8>> = w.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
            assert_eq!(lines.pop(), Some(vec![]));
            assert_eq!(lines.pop(), Some(b".\r".to_vec()));
            lines
                .into_iter()
                .map(|mut l| {
                    assert_eq!(l.pop(), Some(b'\r'));
                    l
                })
                .collect()
        };
        let a = |n: usize| vec![b'a'; n];
        // 998 octets go as they are; the 999th breaks the line, at the
        // limit when there is no space (Postfix's rule).
        assert_eq!(wire_lines(&a(998)), [a(998)]);
        assert_eq!(wire_lines(&a(999)), [a(998), b" a".to_vec()]);
        assert_eq!(
            wire_lines(&a(2000)),
            [a(998), [&b" "[..], &a(997)].concat(), b" aaaaa".to_vec()]
        );
        // A stuffed dot counts: 998 text octets after it do not fit.
        let dotted = [&b"."[..], &a(997)].concat();
        assert_eq!(
            wire_lines(&dotted),
            [[&b".."[..], &a(996)].concat(), b" a".to_vec()]
        );
        assert_eq!(scan(&dotted[..]).unwrap().size, 998 + 3 + 2);
        // The break goes before the last space or tab of the last 200
        // octets: words stay whole, the line keeps at least 798 octets.
        let words = b"word ".repeat(600);
        let lines = wire_lines(&words);
        for l in &lines[..lines.len() - 1] {
            assert!(l.len() >= 798 && l.len() <= 998, "{}", l.len());
            assert!(l.ends_with(b"word"), "{:?}", l.escape_ascii().to_string());
        }
        for l in &lines[1..] {
            assert!(
                l.starts_with(b"  word"),
                "{:?}",
                l.escape_ascii().to_string()
            );
        }
        let tab = [&a(900)[..], b"\t", &a(200)].concat();
        assert_eq!(wire_lines(&tab), [a(900), [&b" \t"[..], &a(200)].concat()]);
        // A space before the window does not count; the 999th octet does.
        let early = [&b"Subject: "[..], &a(1200)].concat();
        assert_eq!(wire_lines(&early)[0].len(), 998);
        let at_limit = [&a(998)[..], b" tail"].concat();
        assert_eq!(wire_lines(&at_limit), [a(998), b"  tail".to_vec()]);
        // No space: a UTF-8 character is never cut (3-octet euros: 998 =
        // 332 * 3 + 2, so the line keeps 332 whole characters).
        let euros = "€".repeat(400);
        let lines = wire_lines(euros.as_bytes());
        assert_eq!(lines[0].len(), 996);
        for l in &lines {
            assert!(std::str::from_utf8(l).is_ok());
        }
        let emoji = [&a(996)[..], "😀".as_bytes()].concat();
        assert_eq!(wire_lines(&emoji)[0], a(996));
        // A header line stays a header: the rest is a continuation line.
        let header = [
            &b"To: "[..],
            &b"someone@example.com, ".repeat(250),
            b"\n\nbody",
        ]
        .concat();
        let lines = wire_lines(&header);
        assert!(lines.len() > 5);
        assert!(
            lines[1..lines.len() - 2]
                .iter()
                .all(|l| l.starts_with(b" "))
        );
        assert_eq!(lines[lines.len() - 2..], [b"".to_vec(), b"body".to_vec()]);
        // The same bytes however the message is read (checked by check()).
        for m in [
            &words[..],
            &tab,
            &early,
            &at_limit,
            euros.as_bytes(),
            &emoji,
            &header,
        ] {
            assert!(check(m) > 0);
        }
    }

    #[test]
    fn a_prefix_goes_first_and_changes_nothing_after_it() {
        let message: &[u8] = b"Subject: x\n\n.dot\r\nbare\rend";
        let prefix: &[u8] = b"DKIM-Signature: v=1;\n\tb=abc\n";
        struct Mem(&'static [u8]);
        impl Source for Mem {
            fn reader(&self) -> io::Result<Box<dyn Read + '_>> {
                Ok(Box::new(self.0))
            }
        }
        let m = Mem(message);
        let p = Prefixed::new(prefix, &m);
        let mut both = Vec::new();
        p.reader().unwrap().read_to_end(&mut both).unwrap();
        assert_eq!(both, [prefix, message].concat());
        let alone = encode_all(message);
        let with = encode_all(&both);
        assert!(with.ends_with(&alone));
        assert_eq!(
            &with[..with.len() - alone.len()],
            b"DKIM-Signature: v=1;\r\n\tb=abc\r\n"
        );
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
