//! One queue file: a header of NUL-terminated records, zero padding, then
//! the message.
//!
//! ```text
//! offset 0:  V1\0  o<message offset>\0  u<uid>\0  p<pid>\0  t<unix secs>\0
//!            F<sender>\0  T<recipient>\0 ...  \0
//!            \0 padding up to <message offset>
//! offset o:  the message, exactly as received (Received: line first), to EOF
//! ```
//!
//! The envelope is stored in the same file as the message so that one
//! `fsync` makes both durable (the accept path's cost budget is two flushes:
//! this file and the directory that makes it visible). `tern-queue` must read
//! the message before the envelope (qmail-queue's fd order), so it writes the
//! message at a reserved offset first and fills the header in afterwards; an
//! envelope too large for the reservation is handled by copying into a file
//! with a larger one.

use crate::envelope::{Envelope, EnvelopeError, MAX_ENVELOPE};
use std::fs::File;
use std::os::unix::fs::FileExt;

/// The header space reserved before the message in the common case.
pub const DEFAULT_RESERVE: u64 = 4096;
/// The largest header a queue file may have.
pub const MAX_HEADER: u64 = MAX_ENVELOPE as u64 + 4096;

/// Who injected a message and when: the records before the envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    /// Real uid of the injecting process.
    pub uid: u32,
    /// Pid of the `tern-queue` process that wrote the file.
    pub pid: u32,
    /// Seconds since the epoch when the message was accepted.
    pub time: i64,
}

/// A parsed queue-file header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Where the message starts.
    pub offset: u64,
    /// Who injected it and when.
    pub origin: Origin,
    /// Sender and recipients.
    pub envelope: Envelope,
}

/// The header bytes (without padding) for a message stored at `offset`.
pub fn encode_header(origin: &Origin, envelope: &Envelope, offset: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + envelope.sender.len() + envelope.recipients.len() * 32);
    out.extend_from_slice(b"V1\0");
    out.extend_from_slice(
        format!(
            "o{offset}\0u{}\0p{}\0t{}\0",
            origin.uid, origin.pid, origin.time
        )
        .as_bytes(),
    );
    envelope.encode_records(&mut out);
    out.push(0);
    out
}

/// The message offset to use for this envelope: [`DEFAULT_RESERVE`] when the
/// header fits, otherwise the header length rounded up to 4096.
pub fn offset_for(origin: &Origin, envelope: &Envelope) -> u64 {
    // The offset's own digits count: measure with the widest plausible value.
    let len = encode_header(origin, envelope, u64::MAX).len() as u64;
    if len <= DEFAULT_RESERVE {
        DEFAULT_RESERVE
    } else {
        len.div_ceil(4096) * 4096
    }
}

fn decimal(field: &[u8]) -> Option<u64> {
    if field.is_empty() || field.len() > 20 || !field.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(field).ok()?.parse().ok()
}

/// Parses a header from the start of a queue file's bytes. Returns
/// `Err("incomplete")` when more bytes are needed.
pub fn parse_header(bytes: &[u8]) -> Result<Header, &'static str> {
    let mut rest = bytes;
    let mut record = |letter: u8| -> Result<&[u8], &'static str> {
        let end = memchr::memchr(0, rest).ok_or("incomplete")?;
        let (rec, tail) = (&rest[..end], &rest[end + 1..]);
        if rec.first() != Some(&letter) {
            return Err("header records out of order");
        }
        rest = tail;
        Ok(&rec[1..])
    };
    if record(b'V')? != b"1" {
        return Err("unknown queue file version");
    }
    let offset = decimal(record(b'o')?).ok_or("bad message offset")?;
    let uid = decimal(record(b'u')?)
        .and_then(|v| u32::try_from(v).ok())
        .ok_or("bad uid")?;
    let pid = decimal(record(b'p')?)
        .and_then(|v| u32::try_from(v).ok())
        .ok_or("bad pid")?;
    let time = decimal(record(b't')?)
        .and_then(|v| i64::try_from(v).ok())
        .ok_or("bad time")?;
    let consumed_before = bytes.len() - rest.len();
    let (envelope, used) = match Envelope::parse(rest) {
        Ok(v) => v,
        Err(EnvelopeError::Truncated(_)) => return Err("incomplete"),
        Err(_) => return Err("bad envelope in header"),
    };
    if offset > MAX_HEADER {
        return Err("message offset beyond the largest header");
    }
    if (consumed_before + used) as u64 > offset {
        return Err("message offset inside the header");
    }
    Ok(Header {
        offset,
        origin: Origin { uid, pid, time },
        envelope,
    })
}

/// Reads and parses the header of an open queue file. The read is bounded by
/// [`MAX_HEADER`] and by the file's size.
pub fn read_header(file: &File, file_size: u64) -> Result<Header, &'static str> {
    let mut want = DEFAULT_RESERVE.min(file_size);
    loop {
        let mut buf = vec![0u8; want as usize];
        file.read_exact_at(&mut buf, 0)
            .map_err(|_| "cannot read header")?;
        match parse_header(&buf) {
            Err("incomplete") if want < file_size.min(MAX_HEADER) => {
                want = (want * 4).min(file_size).min(MAX_HEADER);
            }
            Err("incomplete") => return Err("header truncated"),
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin() -> Origin {
        Origin {
            uid: 1000,
            pid: 4242,
            time: 1_795_770_984,
        }
    }

    #[test]
    fn header_round_trip() {
        let env = Envelope {
            sender: b"a@b".to_vec(),
            recipients: vec![b"c@d".to_vec(), b"".to_vec()],
        };
        let off = offset_for(&origin(), &env);
        assert_eq!(off, DEFAULT_RESERVE);
        let mut h = encode_header(&origin(), &env, off);
        h.resize(off as usize, 0);
        h.extend_from_slice(b"message");
        let parsed = parse_header(&h).unwrap();
        assert_eq!(parsed.offset, off);
        assert_eq!(parsed.origin, origin());
        assert_eq!(parsed.envelope, env);
    }

    #[test]
    fn large_envelope_gets_larger_offset() {
        let env = Envelope {
            sender: vec![],
            recipients: vec![vec![b'x'; 900]; 20],
        };
        let off = offset_for(&origin(), &env);
        assert!(off > DEFAULT_RESERVE && off.is_multiple_of(4096));
        assert!(encode_header(&origin(), &env, off).len() as u64 <= off);
    }

    #[test]
    fn bad_headers() {
        let cases: &[(&[u8], &str)] = &[
            (b"", "incomplete"),
            (b"V1", "incomplete"),
            (b"V2\0", "unknown queue file version"),
            (b"X1\0", "header records out of order"),
            (b"V1\0u1\0", "header records out of order"),
            (b"V1\0o\0u1\0p1\0t1\0F\0\0", "bad message offset"),
            (b"V1\0o4096\0u-1\0p1\0t1\0F\0\0", "bad uid"),
            (b"V1\0o4096\0u99999999999\0p1\0t1\0F\0\0", "bad uid"),
            (b"V1\0o4096\0u1\0p1\0t1\0X\0\0", "bad envelope in header"),
            (b"V1\0o4096\0u1\0p1\0t1\0Fa\0Tb\0", "incomplete"),
            (
                b"V1\0o5\0u1\0p1\0t1\0Fa\0\0",
                "message offset inside the header",
            ),
            (
                b"V1\0o4198401\0u1\0p1\0t1\0Fa\0\0",
                "message offset beyond the largest header",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(parse_header(input).err(), Some(*want), "{input:?}");
        }
    }
}
