//! tern-smtpd → tern-verify: one message's authentication check (SPF,
//! DKIM, DMARC, ARC) over a Unix stream socket, one request per
//! connection.
//!
//! ```text
//! request  = MAGIC  field(ip) field(helo) field(mail_from) field(authserv_id)
//!            u32(budget_ms)  u64(message length)  message
//! response = MAGIC  u8(verdict)  field(header)  field(reason)
//! field    = u16 length (big-endian), then that many bytes
//! ```
//!
//! [`MAGIC`] carries the protocol version (its last byte); a peer that
//! sends another version is refused. The message is the message as the
//! client sent it after SMTP decoding: header and body with LF line ends
//! (the queue's form; the checker turns them into CRLF for DKIM), without
//! the `Received:` line tern-smtpd adds. `mail_from` is the envelope sender
//! (empty for `<>`). `budget_ms` is how long the client will wait for the
//! answer; the checker answers within it.
//!
//! The answer's `header` is the complete `Authentication-Results:` field
//! to prepend, LF line ends, continuation lines indented, ending in LF;
//! `reason` is a short text for the log and the SMTP reply. Both are
//! checked by [`Response::decode`] (printable ASCII, tab, LF; the header
//! starts with the field name and continues only on indented lines), so a
//! broken checker cannot inject header fields or SMTP lines.
//!
//! Every length is bounded ([`MAX_IP`], [`MAX_HELO`], [`MAX_MAIL_FROM`],
//! [`MAX_AUTHSERV_ID`], [`MAX_MESSAGE`], [`MAX_HEADER`], [`MAX_REASON`],
//! [`MAX_BUDGET_MS`]); anything else is a [`VerifyError`] with a static
//! hint.

use std::io::{self, Read, Write};

/// The checker's socket, relative to `TERN_HOME`.
pub const SOCKET: &str = "verify/socket";
/// Protocol magic and version (`TVERIFY` then version 1).
pub const MAGIC: [u8; 8] = *b"TVERIFY\x01";
/// Longest client address text (an IPv6 address with a zone).
pub const MAX_IP: usize = 64;
/// Longest HELO argument (an SMTP command line is at most 512 octets).
pub const MAX_HELO: usize = 512;
/// Longest envelope sender.
pub const MAX_MAIL_FROM: usize = 512;
/// Longest authserv-id (a host name).
pub const MAX_AUTHSERV_ID: usize = 255;
/// Largest message checked (larger messages are not sent to the checker).
pub const MAX_MESSAGE: u64 = 64 * 1024 * 1024;
/// Largest `Authentication-Results:` field answered.
pub const MAX_HEADER: usize = 16 * 1024;
/// Longest reason text.
pub const MAX_REASON: usize = 512;
/// Largest time budget (ten minutes).
pub const MAX_BUDGET_MS: u32 = 600_000;

/// What the check means for the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing against it (DMARC pass, none, or a policy of `none`).
    Accept,
    /// DMARC failed under `p=quarantine`: accept and tag.
    Quarantine,
    /// DMARC failed under `p=reject`.
    Reject,
    /// A temporary DNS error where the sender's DMARC policy is `reject`:
    /// the answer could have been a reject.
    TempErrorWouldReject,
}

impl Verdict {
    fn code(self) -> u8 {
        match self {
            Verdict::Accept => 0,
            Verdict::Quarantine => 1,
            Verdict::Reject => 2,
            Verdict::TempErrorWouldReject => 3,
        }
    }

    fn from_code(c: u8) -> Option<Verdict> {
        Some(match c {
            0 => Verdict::Accept,
            1 => Verdict::Quarantine,
            2 => Verdict::Reject,
            3 => Verdict::TempErrorWouldReject,
            _ => return None,
        })
    }

    /// The name used in logs.
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Accept => "accept",
            Verdict::Quarantine => "quarantine",
            Verdict::Reject => "reject",
            Verdict::TempErrorWouldReject => "temperror",
        }
    }
}

/// A bad request or answer. The text is a static hint, never the bytes.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The peer's bytes break the protocol.
    #[error("verify protocol: {0}")]
    Protocol(&'static str),
    /// Reading or writing failed (including end of input too early).
    #[error("verify socket: {0}")]
    Io(#[from] io::Error),
}

/// The envelope and connection facts of a request (the message follows
/// them on the wire).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The client's address, as text (`192.0.2.1`, `2001:db8::1`).
    pub ip: String,
    /// The HELO/EHLO argument.
    pub helo: String,
    /// The envelope sender, empty for `<>`.
    pub mail_from: String,
    /// This host's authserv-id (`control/me`).
    pub authserv_id: String,
    /// How long the client waits for the answer, in milliseconds.
    pub budget_ms: u32,
}

/// The checker's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// What to do with the message.
    pub verdict: Verdict,
    /// The `Authentication-Results:` field, LF line ends, ending in LF.
    pub header: String,
    /// A short reason (log, SMTP reply).
    pub reason: String,
}

fn put_field(
    out: &mut Vec<u8>,
    bytes: &[u8],
    max: usize,
    what: &'static str,
) -> Result<(), VerifyError> {
    if bytes.len() > max {
        return Err(VerifyError::Protocol(what));
    }
    out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
    out.extend_from_slice(bytes);
    Ok(())
}

fn get_exact(r: &mut impl Read, buf: &mut [u8]) -> Result<(), VerifyError> {
    r.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => VerifyError::Protocol("truncated"),
        _ => VerifyError::Io(e),
    })
}

fn get_field(
    r: &mut impl Read,
    max: usize,
    what: &'static str,
    check: fn(u8) -> bool,
) -> Result<String, VerifyError> {
    let mut len = [0u8; 2];
    get_exact(r, &mut len)?;
    let len = usize::from(u16::from_be_bytes(len));
    if len > max {
        return Err(VerifyError::Protocol(what));
    }
    let mut buf = vec![0u8; len];
    get_exact(r, &mut buf)?;
    if !buf.iter().all(|&b| check(b)) {
        return Err(VerifyError::Protocol(what));
    }
    String::from_utf8(buf).map_err(|_| VerifyError::Protocol(what))
}

fn get_magic(r: &mut impl Read) -> Result<(), VerifyError> {
    let mut m = [0u8; 8];
    get_exact(r, &mut m)?;
    if m[..7] != MAGIC[..7] {
        return Err(VerifyError::Protocol("not a verify peer"));
    }
    if m[7] != MAGIC[7] {
        return Err(VerifyError::Protocol("unknown protocol version"));
    }
    Ok(())
}

/// Visible ASCII (no space, no controls).
fn graphic(b: u8) -> bool {
    b.is_ascii_graphic()
}

/// Printable text: visible ASCII, space and UTF-8 bytes, no controls.
fn text(b: u8) -> bool {
    b == b' ' || b.is_ascii_graphic() || b >= 0x80
}

/// What a header answer may hold: printable ASCII, space, tab, LF.
fn header_byte(b: u8) -> bool {
    b == b' ' || b == b'\t' || b == b'\n' || b.is_ascii_graphic()
}

/// Reason text: printable ASCII and space.
fn reason_byte(b: u8) -> bool {
    b == b' ' || b.is_ascii_graphic()
}

impl Request {
    /// The request's bytes up to the message (the message, `message_len`
    /// bytes, follows).
    ///
    /// # Errors
    /// A field is over its bound, or the message is over [`MAX_MESSAGE`].
    pub fn encode(&self, message_len: u64) -> Result<Vec<u8>, VerifyError> {
        if message_len > MAX_MESSAGE {
            return Err(VerifyError::Protocol("message too large"));
        }
        if self.budget_ms > MAX_BUDGET_MS {
            return Err(VerifyError::Protocol("time budget too large"));
        }
        let mut out = Vec::with_capacity(64 + self.helo.len() + self.mail_from.len());
        out.extend_from_slice(&MAGIC);
        put_field(
            &mut out,
            self.ip.as_bytes(),
            MAX_IP,
            "client address too long",
        )?;
        put_field(
            &mut out,
            self.helo.as_bytes(),
            MAX_HELO,
            "HELO name too long",
        )?;
        put_field(
            &mut out,
            self.mail_from.as_bytes(),
            MAX_MAIL_FROM,
            "sender too long",
        )?;
        put_field(
            &mut out,
            self.authserv_id.as_bytes(),
            MAX_AUTHSERV_ID,
            "authserv-id too long",
        )?;
        out.extend_from_slice(&self.budget_ms.to_be_bytes());
        out.extend_from_slice(&message_len.to_be_bytes());
        Ok(out)
    }

    /// Reads a request up to its message; returns it and the message's
    /// length (the caller reads exactly that many bytes next).
    ///
    /// # Errors
    /// Bad magic or version, a field over its bound or with bytes it may
    /// not hold, a message over [`MAX_MESSAGE`], a budget over
    /// [`MAX_BUDGET_MS`], truncation, or a read error.
    pub fn decode(r: &mut impl Read) -> Result<(Request, u64), VerifyError> {
        get_magic(r)?;
        let ip = get_field(r, MAX_IP, "bad client address", graphic)?;
        let helo = get_field(r, MAX_HELO, "bad HELO name", text)?;
        let mail_from = get_field(r, MAX_MAIL_FROM, "bad sender", text)?;
        let authserv_id = get_field(r, MAX_AUTHSERV_ID, "bad authserv-id", graphic)?;
        if authserv_id.is_empty() {
            return Err(VerifyError::Protocol("empty authserv-id"));
        }
        let mut n4 = [0u8; 4];
        get_exact(r, &mut n4)?;
        let budget_ms = u32::from_be_bytes(n4);
        if budget_ms > MAX_BUDGET_MS {
            return Err(VerifyError::Protocol("time budget too large"));
        }
        let mut n8 = [0u8; 8];
        get_exact(r, &mut n8)?;
        let len = u64::from_be_bytes(n8);
        if len > MAX_MESSAGE {
            return Err(VerifyError::Protocol("message too large"));
        }
        Ok((
            Request {
                ip,
                helo,
                mail_from,
                authserv_id,
                budget_ms,
            },
            len,
        ))
    }

    /// Reads a whole request, message included (bounded by
    /// [`MAX_MESSAGE`]).
    ///
    /// # Errors
    /// As [`Request::decode`], and a message shorter than announced.
    pub fn decode_all(r: &mut impl Read) -> Result<(Request, Vec<u8>), VerifyError> {
        let (req, len) = Request::decode(r)?;
        let mut message = Vec::new();
        let got = r.take(len).read_to_end(&mut message)?;
        if got as u64 != len {
            return Err(VerifyError::Protocol("truncated message"));
        }
        Ok((req, message))
    }
}

/// Checks a header answer: `Authentication-Results:` first, printable
/// ASCII, every line after the first indented, a final LF, no empty line.
fn valid_header(h: &str) -> bool {
    let b = h.as_bytes();
    let name = b"authentication-results:";
    b.len() > name.len()
        && b[..name.len()].eq_ignore_ascii_case(name)
        && b.ends_with(b"\n")
        && b.iter().all(|&c| header_byte(c))
        && b[..b.len() - 1]
            .split(|&c| c == b'\n')
            .enumerate()
            .all(|(i, line)| i == 0 || matches!(line.first(), Some(b' ' | b'\t')))
}

impl Response {
    /// The answer's bytes.
    ///
    /// # Errors
    /// The header is not a valid field (see the module text) or a field is
    /// over its bound.
    pub fn encode(&self) -> Result<Vec<u8>, VerifyError> {
        if !valid_header(&self.header) {
            return Err(VerifyError::Protocol("bad header answer"));
        }
        if !self.reason.bytes().all(reason_byte) {
            return Err(VerifyError::Protocol("bad reason"));
        }
        let mut out = Vec::with_capacity(16 + self.header.len() + self.reason.len());
        out.extend_from_slice(&MAGIC);
        out.push(self.verdict.code());
        put_field(
            &mut out,
            self.header.as_bytes(),
            MAX_HEADER,
            "header answer too long",
        )?;
        put_field(
            &mut out,
            self.reason.as_bytes(),
            MAX_REASON,
            "reason too long",
        )?;
        Ok(out)
    }

    /// Reads an answer.
    ///
    /// # Errors
    /// Bad magic or version, an unknown verdict, a header that is not one
    /// valid field, a field over its bound, truncation, a read error.
    pub fn decode(r: &mut impl Read) -> Result<Response, VerifyError> {
        get_magic(r)?;
        let mut v = [0u8; 1];
        get_exact(r, &mut v)?;
        let verdict = Verdict::from_code(v[0]).ok_or(VerifyError::Protocol("unknown verdict"))?;
        let header = get_field(r, MAX_HEADER, "bad header answer", header_byte)?;
        if !valid_header(&header) {
            return Err(VerifyError::Protocol("bad header answer"));
        }
        let reason = get_field(r, MAX_REASON, "bad reason", reason_byte)?;
        Ok(Response {
            verdict,
            header,
            reason,
        })
    }

    /// Writes the answer to `w`.
    ///
    /// # Errors
    /// As [`Response::encode`], or a write error.
    pub fn write_to(&self, w: &mut impl Write) -> Result<(), VerifyError> {
        w.write_all(&self.encode()?)?;
        w.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req() -> Request {
        Request {
            ip: "192.0.2.1".into(),
            helo: "mx.example.org".into(),
            mail_from: "a@example.org".into(),
            authserv_id: "mx.example.net".into(),
            budget_ms: 20_000,
        }
    }

    fn resp() -> Response {
        Response {
            verdict: Verdict::Quarantine,
            header:
                "Authentication-Results: mx.example.net;\n\tspf=pass smtp.mailfrom=a@example.org\n"
                    .into(),
            reason: "DMARC policy of example.org quarantines".into(),
        }
    }

    #[test]
    fn round_trips() {
        let mut bytes = req().encode(5).unwrap();
        bytes.extend_from_slice(b"x\n\ny\n");
        let (r, m) = Request::decode_all(&mut &bytes[..]).unwrap();
        assert_eq!(r, req());
        assert_eq!(m, b"x\n\ny\n");
        let bytes = resp().encode().unwrap();
        assert_eq!(Response::decode(&mut &bytes[..]).unwrap(), resp());
        for v in [
            Verdict::Accept,
            Verdict::Quarantine,
            Verdict::Reject,
            Verdict::TempErrorWouldReject,
        ] {
            assert_eq!(Verdict::from_code(v.code()), Some(v));
        }
    }

    fn bad_request(bytes: &[u8]) -> &'static str {
        match Request::decode_all(&mut &bytes[..]) {
            Err(VerifyError::Protocol(h)) => h,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_requests() {
        let good = {
            let mut b = req().encode(1).unwrap();
            b.push(b'x');
            b
        };
        assert_eq!(bad_request(b""), "truncated");
        assert_eq!(bad_request(b"TVERIFY"), "truncated");
        assert_eq!(bad_request(b"XVERIFY\x01"), "not a verify peer");
        let mut v2 = good.clone();
        v2[7] = 2;
        assert_eq!(bad_request(&v2), "unknown protocol version");
        // every cut is a clean error
        for cut in 0..good.len() {
            let h = bad_request(&good[..cut]);
            assert!(h.starts_with("truncated"), "{cut}: {h}");
        }
        // a field over its bound
        let mut long = MAGIC.to_vec();
        long.extend_from_slice(&(MAX_IP as u16 + 1).to_be_bytes());
        long.extend(std::iter::repeat_n(b'1', MAX_IP + 1));
        assert_eq!(bad_request(&long), "bad client address");
        // control characters
        let mut r = req();
        r.helo = "a\r\nb".into();
        assert_eq!(bad_request(&r.encode(0).unwrap()), "bad HELO name");
        let mut r = req();
        r.authserv_id = String::new();
        assert_eq!(bad_request(&r.encode(0).unwrap()), "empty authserv-id");
        // message and budget bounds
        let mut b = req().encode(0).unwrap();
        let n = b.len();
        b[n - 8..].copy_from_slice(&(MAX_MESSAGE + 1).to_be_bytes());
        assert_eq!(bad_request(&b), "message too large");
        let mut b = req().encode(0).unwrap();
        b[n - 12..n - 8].copy_from_slice(&(MAX_BUDGET_MS + 1).to_be_bytes());
        assert_eq!(bad_request(&b), "time budget too large");
        assert!(req().encode(MAX_MESSAGE + 1).is_err());
        let mut r = req();
        r.mail_from = "x".repeat(MAX_MAIL_FROM + 1);
        assert!(r.encode(0).is_err());
    }

    fn bad_response(bytes: &[u8]) -> &'static str {
        match Response::decode(&mut &bytes[..]) {
            Err(VerifyError::Protocol(h)) => h,
            other => panic!("{other:?}"),
        }
    }

    fn raw_response(verdict: u8, header: &[u8], reason: &[u8]) -> Vec<u8> {
        let mut b = MAGIC.to_vec();
        b.push(verdict);
        b.extend_from_slice(&(header.len() as u16).to_be_bytes());
        b.extend_from_slice(header);
        b.extend_from_slice(&(reason.len() as u16).to_be_bytes());
        b.extend_from_slice(reason);
        b
    }

    #[test]
    fn bad_responses() {
        let h = b"Authentication-Results: x; none\n";
        assert!(Response::decode(&mut &raw_response(0, h, b"ok")[..]).is_ok());
        assert_eq!(bad_response(&raw_response(4, h, b"")), "unknown verdict");
        assert_eq!(
            bad_response(&raw_response(0, b"Subject: x\n", b"")),
            "bad header answer"
        );
        // a second field smuggled in
        assert_eq!(
            bad_response(&raw_response(
                0,
                b"Authentication-Results: x; none\nX-Evil: 1\n",
                b""
            )),
            "bad header answer"
        );
        assert_eq!(
            bad_response(&raw_response(
                0,
                b"Authentication-Results: x; none\n\n",
                b""
            )),
            "bad header answer"
        );
        assert_eq!(
            bad_response(&raw_response(0, b"Authentication-Results: x; none", b"")),
            "bad header answer"
        );
        assert_eq!(
            bad_response(&raw_response(
                0,
                b"Authentication-Results: x;\r\n none\n",
                b""
            )),
            "bad header answer"
        );
        assert_eq!(
            bad_response(&raw_response(0, h, b"a\r\n550 b")),
            "bad reason"
        );
        let mut big = b"Authentication-Results: x;".to_vec();
        big.extend(std::iter::repeat_n(b'a', MAX_HEADER));
        big.push(b'\n');
        let mut b = MAGIC.to_vec();
        b.push(0);
        b.extend_from_slice(&u16::MAX.to_be_bytes());
        b.extend_from_slice(&big);
        assert_eq!(bad_response(&b), "bad header answer");
        for cut in 0..raw_response(0, h, b"ok").len() {
            assert_eq!(bad_response(&raw_response(0, h, b"ok")[..cut]), "truncated");
        }
        let mut r = resp();
        r.header = "X: y\n".into();
        assert!(r.encode().is_err());
    }
}
