//! The DATA decoder: a byte-level state machine over the message text the
//! client sends after `354`.
//!
//! * Only CRLF `.` CRLF ends the message (the decoder starts as if just
//!   after a CRLF, so `.` CRLF right after `354` is an empty message).
//! * Dot-stuffing is removed: a line starting with `.` loses that dot.
//! * CRLF becomes LF in the output (the queue's storage form).
//! * A bare CR or bare LF anywhere is [`DataError::BareCrLf`], which is
//!   fatal: the decoder stops, never reports an end of data, and the
//!   caller must refuse the message and close the connection (SMTP
//!   smuggling protection: no byte after it may be read as a command).
//! * Text lines of any length are accepted and stored as received (be
//!   liberal in what you accept, as Postfix is): RFC 5321's 1000-octet
//!   limit binds senders, and the only bound on a line is the one on the
//!   message ([`DataLimits::max_bytes`]).
//! * More output than [`DataLimits::max_bytes`], or
//!   [`DataLimits::max_hops`] `Received:`/`Delivered-To:` header lines make
//!   the message refused: output stops at once, and the decoder reads on
//!   to the end of data so that the session can continue.
//!
//! Output is appended to a caller's buffer chunk by chunk, so neither a
//! message nor a line is ever held whole in memory: the decoder keeps a
//! fixed-size state (the first 13 bytes of a header line, for the hop
//! count) whatever the length of a line.
//!
//! For BDAT (RFC 3030), [`DataDecoder::chunked`] makes a decoder without
//! dot handling and without an end marker: the caller hands it exactly the
//! chunks' octets and calls [`DataDecoder::finish`] after the `LAST` one.
//! CRLF still becomes LF and a bare CR or LF is still refused, so the
//! stored form is the same.

use crate::reply::Reply;

/// Header lines `Received:` + `Delivered-To:` from which a message is
/// considered looping.
pub const MAX_HOPS: usize = 100;

/// Bounds for one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataLimits {
    /// Largest output (stored form, LF line ends) in bytes; `None` = none.
    pub max_bytes: Option<u64>,
    /// Hop count at which the message is refused as looping.
    pub max_hops: usize,
}

impl Default for DataLimits {
    fn default() -> DataLimits {
        DataLimits {
            max_bytes: None,
            max_hops: MAX_HOPS,
        }
    }
}

/// Why a message is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DataError {
    /// A CR not followed by LF or an LF not preceded by CR. Fatal.
    #[error("bare CR or LF in message (SMTP smuggling protection)")]
    BareCrLf,
    /// More than `max_bytes` bytes.
    #[error("message too big")]
    TooBig,
    /// Too many `Received:`/`Delivered-To:` lines.
    #[error("too many hops, this message is looping")]
    Looping,
}

impl DataError {
    /// True when the connection must be closed (the end of data cannot be
    /// trusted any more).
    pub fn is_fatal(self) -> bool {
        self == DataError::BareCrLf
    }

    /// The reply refusing the message.
    pub fn reply(self) -> Reply {
        let enhanced = match self {
            DataError::BareCrLf => "5.6.0",
            DataError::TooBig => "5.3.4",
            DataError::Looping => "5.4.6",
        };
        let code = if self == DataError::TooBig { 552 } else { 554 };
        Reply::new(code, enhanced, self.to_string())
    }
}

/// Where the decoder stands after a call to [`DataDecoder::feed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataStatus {
    /// All input was used; the message goes on.
    NeedMore,
    /// CRLF `.` CRLF was read; see [`DataDecoder::result`].
    End,
    /// A bare CR or LF: the message is refused and the connection must be
    /// closed.
    Fatal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    LineStart,
    Dot,
    DotCr,
    Mid,
    Cr,
    Done,
    Fatal,
}

/// Length of the longest header name the hop count looks for
/// (`delivered-to:`).
const HEAD: usize = 13;

/// The DATA state machine. See the module documentation.
#[derive(Debug, Clone)]
pub struct DataDecoder {
    limits: DataLimits,
    state: State,
    error: Option<DataError>,
    line_out: usize,
    head: [u8; HEAD],
    in_header: bool,
    hops: usize,
    out_bytes: u64,
    chunked: bool,
}

impl DataDecoder {
    /// A decoder at the start of a message.
    pub fn new(limits: DataLimits) -> DataDecoder {
        DataDecoder {
            limits,
            state: State::LineStart,
            error: None,
            line_out: 0,
            head: [0; HEAD],
            in_header: true,
            hops: 0,
            out_bytes: 0,
            chunked: false,
        }
    }

    /// A decoder for BDAT chunks: no dot-stuffing, no end marker; never
    /// reports [`DataStatus::End`] (see [`DataDecoder::finish`]).
    pub fn chunked(limits: DataLimits) -> DataDecoder {
        DataDecoder {
            chunked: true,
            ..DataDecoder::new(limits)
        }
    }

    /// Ends a chunked message after its last octet: a message that does
    /// not end with CRLF gets a final LF; a final CR alone is a bare CR.
    /// Returns the status: [`DataStatus::End`] or [`DataStatus::Fatal`].
    pub fn finish(&mut self, out: &mut Vec<u8>) -> DataStatus {
        match self.state {
            State::Fatal => DataStatus::Fatal,
            State::Done => DataStatus::End,
            State::Cr | State::DotCr => self.fatal(0).1,
            State::LineStart => {
                self.state = State::Done;
                DataStatus::End
            }
            State::Mid | State::Dot => {
                self.end_of_line(out);
                self.state = State::Done;
                DataStatus::End
            }
        }
    }

    /// Bytes output so far.
    pub fn bytes(&self) -> u64 {
        self.out_bytes
    }

    /// Hop-count header lines seen so far.
    pub fn hops(&self) -> usize {
        self.hops
    }

    /// The first error, if any (fatal or not).
    pub fn error(&self) -> Option<DataError> {
        self.error
    }

    /// After [`DataStatus::End`]: `Ok` when the message may be queued.
    ///
    /// # Errors
    /// The reason it must be refused.
    pub fn result(&self) -> Result<(), DataError> {
        match self.error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn fail(&mut self, e: DataError) {
        if self.error.is_none() {
            self.error = Some(e);
        }
    }

    fn emit(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        if self.in_header && self.line_out < HEAD {
            let take = (HEAD - self.line_out).min(bytes.len());
            self.head[self.line_out..self.line_out + take].copy_from_slice(&bytes[..take]);
        }
        self.line_out = self.line_out.saturating_add(bytes.len());
        self.output(bytes, out);
    }

    fn output(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        if self.error.is_some() {
            return;
        }
        if let Some(max) = self.limits.max_bytes
            && self.out_bytes.saturating_add(bytes.len() as u64) > max
        {
            // What fits is still output (the same bytes however the input
            // was chunked); the message is refused anyway.
            let room = usize::try_from(max - self.out_bytes).unwrap_or(usize::MAX);
            self.out_bytes += room as u64;
            out.extend_from_slice(&bytes[..room]);
            self.fail(DataError::TooBig);
            return;
        }
        self.out_bytes += bytes.len() as u64;
        out.extend_from_slice(bytes);
    }

    fn end_of_line(&mut self, out: &mut Vec<u8>) {
        if self.in_header {
            if self.line_out == 0 {
                self.in_header = false;
            } else {
                let n = self.line_out.min(HEAD);
                let head = &self.head[..n];
                let is = |name: &[u8]| {
                    head.get(..name.len())
                        .is_some_and(|h| h.eq_ignore_ascii_case(name))
                };
                if is(b"received:") || is(b"delivered-to:") {
                    self.hops += 1;
                    if self.hops >= self.limits.max_hops {
                        self.fail(DataError::Looping);
                    }
                }
            }
        }
        self.output(b"\n", out);
        self.line_out = 0;
        self.state = State::LineStart;
    }

    fn fatal(&mut self, used: usize) -> (usize, DataStatus) {
        self.error = Some(DataError::BareCrLf);
        self.state = State::Fatal;
        (used, DataStatus::Fatal)
    }

    /// Consumes message bytes from `input`, appending decoded text to
    /// `out`. Returns how many bytes were used (at [`DataStatus::End`], the
    /// bytes after the final LF are left for the caller: pipelined
    /// commands) and the status.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> (usize, DataStatus) {
        match self.state {
            State::Done => return (0, DataStatus::End),
            State::Fatal => return (0, DataStatus::Fatal),
            _ => {}
        }
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match self.state {
                State::LineStart => match b {
                    b'.' if !self.chunked => {
                        self.state = State::Dot;
                        i += 1;
                    }
                    b'\r' => {
                        self.state = State::Cr;
                        i += 1;
                    }
                    b'\n' => return self.fatal(i),
                    _ => self.state = State::Mid,
                },
                State::Dot => match b {
                    b'\r' => {
                        self.state = State::DotCr;
                        i += 1;
                    }
                    b'\n' => return self.fatal(i),
                    // The stuffed dot is dropped; this byte is text.
                    _ => self.state = State::Mid,
                },
                State::DotCr => {
                    if b == b'\n' {
                        self.state = State::Done;
                        return (i + 1, DataStatus::End);
                    }
                    return self.fatal(i);
                }
                State::Mid => {
                    let rest = &input[i..];
                    let n = memchr::memchr2(b'\r', b'\n', rest).unwrap_or(rest.len());
                    // However long the line, it is output as it comes.
                    self.emit(&rest[..n], out);
                    i += n;
                    if let Some(&c) = input.get(i) {
                        if c == b'\n' {
                            return self.fatal(i);
                        }
                        self.state = State::Cr;
                        i += 1;
                    }
                }
                State::Cr => {
                    if b != b'\n' {
                        return self.fatal(i);
                    }
                    i += 1;
                    self.end_of_line(out);
                }
                State::Done | State::Fatal => unreachable!("handled above"),
            }
        }
        (input.len(), DataStatus::NeedMore)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in pieces of `chunk` bytes; returns the output, the
    /// final status and the bytes left unused.
    fn run(
        input: &[u8],
        limits: DataLimits,
        chunk: usize,
    ) -> (Vec<u8>, DataStatus, Vec<u8>, Option<DataError>) {
        let mut d = DataDecoder::new(limits);
        let mut out = Vec::new();
        let mut pos = 0;
        let mut status = DataStatus::NeedMore;
        while pos < input.len() {
            let end = (pos + chunk).min(input.len());
            let (n, s) = d.feed(&input[pos..end], &mut out);
            pos += n;
            status = s;
            if s != DataStatus::NeedMore {
                break;
            }
        }
        (out, status, input[pos..].to_vec(), d.error())
    }

    fn every_chunking(input: &[u8]) -> (Vec<u8>, DataStatus, Vec<u8>, Option<DataError>) {
        let first = run(input, DataLimits::default(), input.len().max(1));
        for chunk in 1..input.len().max(1) {
            assert_eq!(
                run(input, DataLimits::default(), chunk),
                first,
                "chunk {chunk}"
            );
        }
        first
    }

    #[test]
    fn smuggling_variants_never_end_data() {
        // Each variant, followed by what a smuggler would put after it.
        for v in [
            &b"\n.\n"[..],
            b"\r\n.\n",
            b"\n.\r\n",
            b"\r.\r\n",
            b"\r\n.\rX",
            b"\r\n.\r\r\n",
            b"\n",
            b"\r",
            b"\rX",
        ] {
            let input = [
                &b"Subject: x\r\n\r\nbody"[..],
                v,
                b"MAIL FROM:<evil@x>\r\n.\r\n",
            ]
            .concat();
            let (out, status, _, err) = every_chunking(&input);
            assert_eq!(status, DataStatus::Fatal, "variant {v:?}");
            assert_eq!(err, Some(DataError::BareCrLf), "variant {v:?}");
            assert!(!out.windows(4).any(|w| w == b"MAIL"), "variant {v:?}");
        }
    }

    #[test]
    fn bare_cr_at_the_start_of_data() {
        for input in [&b"\n.\r\n"[..], b".\n", b"\r.\r\n", b".\r.\r\n"] {
            let (_, status, _, _) = every_chunking(input);
            assert_eq!(status, DataStatus::Fatal, "{input:?}");
        }
    }

    #[test]
    fn dot_stuffing_is_removed() {
        let input = b"a\r\n..\r\n...\r\n.x\r\n..y\r\n. \r\n.\r\nQUIT\r\n";
        let (out, status, rest, err) = every_chunking(input);
        assert_eq!(status, DataStatus::End);
        assert_eq!(err, None);
        assert_eq!(out, b"a\n.\n..\nx\n.y\n \n");
        assert_eq!(rest, b"QUIT\r\n");
    }

    #[test]
    fn empty_message_and_nul_content() {
        let (out, status, rest, _) = every_chunking(b".\r\n");
        assert_eq!((out, status, rest), (vec![], DataStatus::End, vec![]));
        let (out, status, _, _) = every_chunking(b"a\0b\r\n\0\r\n.\r\n");
        assert_eq!(status, DataStatus::End);
        assert_eq!(out, b"a\0b\n\0\n");
    }

    #[test]
    fn lines_of_any_length_are_stored_as_received() {
        // Liberal in what we accept (as Postfix): a line over RFC 5321's
        // 1000 octets, dot-stuffed or not, in the header or the body, is
        // kept byte for byte; only the size limit bounds it.
        let long = vec![b'y'; 10_000];
        let input = [
            &b"Subject: "[..],
            &long,
            b"\r\n\r\n..",
            &long,
            b"\r\nnext\r\n.\r\nNOOP\r\n",
        ]
        .concat();
        let want = [&b"Subject: "[..], &long, b"\n\n.", &long, b"\nnext\n"].concat();
        for chunk in [1, 7, 64, 999, 1000, 1001, input.len()] {
            let (out, status, rest, err) = run(&input, DataLimits::default(), chunk);
            assert_eq!((status, err), (DataStatus::End, None), "chunk {chunk}");
            assert_eq!(rest, b"NOOP\r\n", "chunk {chunk}");
            assert_eq!(out, want, "chunk {chunk}");
        }
        // The size limit still bounds a line: output stops at the limit.
        let limits = DataLimits {
            max_bytes: Some(5000),
            ..DataLimits::default()
        };
        let (out, status, rest, err) = run(&input, limits, 512);
        assert_eq!((status, err), (DataStatus::End, Some(DataError::TooBig)));
        assert_eq!((out.len(), rest.as_slice()), (5000, &b"NOOP\r\n"[..]));
    }

    #[test]
    fn a_long_line_is_streamed_not_buffered() {
        // 50 MB without a line end, fed in 64 KiB pieces: every piece is
        // output by the call that reads it (nothing waits for the line
        // end), so no buffer holds the line.
        let mut d = DataDecoder::new(DataLimits::default());
        let piece = vec![b'z'; 64 * 1024];
        let mut out = Vec::new();
        let mut fed = 0usize;
        while fed < 50_000_000 {
            out.clear();
            assert_eq!(
                d.feed(&piece, &mut out),
                (piece.len(), DataStatus::NeedMore)
            );
            assert_eq!(out.len(), piece.len(), "output held back at {fed}");
            fed += piece.len();
        }
        out.clear();
        assert_eq!(d.feed(b"\r\n.\r\n", &mut out), (5, DataStatus::End));
        assert_eq!((out, d.result()), (b"\n".to_vec(), Ok(())));
        assert_eq!(d.bytes(), fed as u64 + 1);
    }

    #[test]
    fn size_limit_counts_output_bytes() {
        let limits = DataLimits {
            max_bytes: Some(4),
            ..DataLimits::default()
        };
        assert_eq!(run(b"abc\r\n.\r\n", limits, 1).3, None);
        let (out, status, _, err) = run(b"abcd\r\n.\r\n", limits, 2);
        assert_eq!((status, err), (DataStatus::End, Some(DataError::TooBig)));
        assert!(out.len() <= 4);
    }

    #[test]
    fn hop_count_in_header_only() {
        let mut msg = Vec::new();
        for _ in 0..99 {
            msg.extend_from_slice(b"Received: x\r\n");
        }
        let body = b"\r\nReceived: in body\r\n.\r\n";
        let input = [&msg[..], body].concat();
        assert_eq!(run(&input, DataLimits::default(), 5).3, None);
        let input = [&msg[..], b"DELIVERED-TO: y\r\n", body].concat();
        assert_eq!(
            run(&input, DataLimits::default(), 5).3,
            Some(DataError::Looping)
        );
        let input = [&msg[..], b"..Received: y\r\n", body].concat();
        assert_eq!(
            run(&input, DataLimits::default(), 5).3,
            None,
            "dot-stuffed is not a header name"
        );
    }

    #[test]
    fn refused_output_does_not_depend_on_chunking() {
        // Found by the smtp_data fuzz target: a size overflow used to cut
        // the output at a chunk-dependent point.
        let limits = DataLimits {
            max_bytes: Some(7),
            max_hops: 100,
        };
        for input in [
            &b"yyyyyyyyyy\r\nnext\r\n.\r\n"[..],
            b"abc\r\nabcd\r\nx\r\n.\r\n",
        ] {
            let whole = run(input, limits, input.len());
            for chunk in 1..input.len() {
                assert_eq!(run(input, limits, chunk), whole, "chunk {chunk}");
            }
        }
    }

    #[test]
    fn chunked_mode_has_no_dots_and_no_end_marker() {
        let mut d = DataDecoder::chunked(DataLimits::default());
        let mut out = Vec::new();
        let input = b"a\r\n.\r\n..x\r\nlast";
        for b in input.chunks(3) {
            assert_eq!(d.feed(b, &mut out), (b.len(), DataStatus::NeedMore));
        }
        assert_eq!(d.finish(&mut out), DataStatus::End);
        assert_eq!(out, b"a\n.\n..x\nlast\n");
        for bad in [&b"a\nb"[..], b"a\rb", b"a\r"] {
            let mut d = DataDecoder::chunked(DataLimits::default());
            let mut out = Vec::new();
            let (_, s) = d.feed(bad, &mut out);
            let s = if s == DataStatus::NeedMore {
                d.finish(&mut out)
            } else {
                s
            };
            assert_eq!(s, DataStatus::Fatal, "{bad:?}");
            assert_eq!(d.error(), Some(DataError::BareCrLf));
        }
        let mut d = DataDecoder::chunked(DataLimits::default());
        assert_eq!(d.feed(b"x\r\n", &mut out).1, DataStatus::NeedMore);
        assert_eq!(d.finish(&mut out), DataStatus::End);
        assert_eq!(d.finish(&mut out), DataStatus::End);
    }

    #[test]
    fn replies() {
        assert_eq!(
            DataError::TooBig.reply().to_bytes(),
            b"552 5.3.4 message too big\r\n"
        );
        assert_eq!(
            DataError::BareCrLf.reply().to_bytes(),
            b"554 5.6.0 bare CR or LF in message (SMTP smuggling protection)\r\n"
        );
        assert!(DataError::BareCrLf.is_fatal() && !DataError::Looping.is_fatal());
    }

    #[test]
    fn after_the_end_nothing_more_is_read() {
        let mut d = DataDecoder::new(DataLimits::default());
        let mut out = Vec::new();
        assert_eq!(d.feed(b".\r\nX", &mut out), (3, DataStatus::End));
        assert_eq!(d.feed(b"X", &mut out), (0, DataStatus::End));
        let mut d = DataDecoder::new(DataLimits::default());
        assert_eq!(d.feed(b"a\nb", &mut out).1, DataStatus::Fatal);
        assert_eq!(d.feed(b"\r\n.\r\n", &mut out), (0, DataStatus::Fatal));
    }
}
