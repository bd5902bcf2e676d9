//! The envelope: `F<sender>\0`, then `T<recipient>\0` for each recipient,
//! then one more `\0` (qmail-queue's fd 1 format).

use std::io::BufRead;

/// Longest envelope address accepted, in bytes (the letter and the `\0` not
/// counted). RFC 5321 paths are at most 256 octets; 1000 keeps room for
/// qmail-era rewriting (virtualdomain prefixes, VERP) as qmail-queue does.
pub const MAX_ADDRESS: usize = 1000;
/// Most recipients accepted in one envelope.
pub const MAX_RECIPIENTS: usize = 10_000;
/// Longest envelope accepted, in bytes, all records included.
pub const MAX_ENVELOPE: usize = 4 << 20;

/// A parsed envelope.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Envelope {
    /// The envelope sender; empty for a bounce (`<>`).
    pub sender: Vec<u8>,
    /// The recipients, in order, duplicates kept (qmail never silently drops
    /// a duplicate recipient).
    pub recipients: Vec<Vec<u8>>,
}

/// Why an envelope was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// An address is longer than [`MAX_ADDRESS`].
    #[error("envelope address longer than {MAX_ADDRESS} bytes")]
    AddressTooLong,
    /// More than [`MAX_RECIPIENTS`] recipients.
    #[error("more than {MAX_RECIPIENTS} recipients")]
    TooManyRecipients,
    /// The envelope is longer than [`MAX_ENVELOPE`].
    #[error("envelope longer than {MAX_ENVELOPE} bytes")]
    TooLarge,
    /// A record is not `F` first and `T` after, or an address holds a NUL.
    #[error("envelope format error at byte {offset}: {hint}")]
    Format {
        /// Offset of the bad byte.
        offset: usize,
        /// What was expected.
        hint: &'static str,
    },
    /// The envelope ended before its final `\0`: the caller aborted.
    #[error("envelope truncated at byte {0}")]
    Truncated(usize),
    /// Reading the envelope failed.
    #[error("cannot read envelope: {0}")]
    Read(#[from] std::io::Error),
    /// Memory for the envelope could not be had.
    #[error("out of memory reading envelope")]
    OutOfMemory,
}

impl Envelope {
    /// The envelope in its wire form: `F<sender>\0` `T<rcpt>\0`... `\0`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            3 + self.sender.len() + self.recipients.iter().map(|r| r.len() + 2).sum::<usize>(),
        );
        self.encode_records(&mut out);
        out.push(0);
        out
    }

    /// Appends the `F` and `T` records without the final `\0`.
    pub(crate) fn encode_records(&self, out: &mut Vec<u8>) {
        out.push(b'F');
        out.extend_from_slice(&self.sender);
        out.push(0);
        for r in &self.recipients {
            out.push(b'T');
            out.extend_from_slice(r);
            out.push(0);
        }
    }

    /// Reads an envelope from a stream, enforcing every limit while reading
    /// (a hostile caller cannot make it allocate more than [`MAX_ENVELOPE`]).
    /// Bytes after the final `\0` are not read.
    pub fn read_from(input: &mut impl BufRead) -> Result<Envelope, EnvelopeError> {
        let mut offset = 0usize;
        let mut env = Envelope::default();
        match next_byte(input)? {
            None => return Err(EnvelopeError::Truncated(0)),
            Some(b'F') => {}
            Some(_) => {
                return Err(EnvelopeError::Format {
                    offset: 0,
                    hint: "expected F record first",
                });
            }
        }
        offset += 1;
        env.sender = read_address(input, &mut offset)?;
        loop {
            match next_byte(input)? {
                None => return Err(EnvelopeError::Truncated(offset)),
                Some(0) => return Ok(env),
                Some(b'T') => {
                    offset += 1;
                    if env.recipients.len() >= MAX_RECIPIENTS {
                        return Err(EnvelopeError::TooManyRecipients);
                    }
                    let a = read_address(input, &mut offset)?;
                    env.recipients
                        .try_reserve(1)
                        .map_err(|_| EnvelopeError::OutOfMemory)?;
                    env.recipients.push(a);
                }
                Some(_) => {
                    return Err(EnvelopeError::Format {
                        offset,
                        hint: "expected T record or final NUL",
                    });
                }
            }
        }
    }

    /// Parses an envelope held in memory; returns it and the bytes consumed.
    pub fn parse(bytes: &[u8]) -> Result<(Envelope, usize), EnvelopeError> {
        let mut cursor = bytes;
        let env = Envelope::read_from(&mut cursor)?;
        Ok((env, bytes.len() - cursor.len()))
    }
}

fn next_byte(input: &mut impl BufRead) -> Result<Option<u8>, EnvelopeError> {
    loop {
        match input.fill_buf() {
            Ok([]) => return Ok(None),
            Ok(buf) => {
                let b = buf[0];
                input.consume(1);
                return Ok(Some(b));
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(EnvelopeError::Read(e)),
        }
    }
}

/// Reads one address up to its `\0`, counting toward the envelope limit.
fn read_address(input: &mut impl BufRead, offset: &mut usize) -> Result<Vec<u8>, EnvelopeError> {
    let mut addr = Vec::new();
    loop {
        let buf = match input.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(EnvelopeError::Read(e)),
        };
        if buf.is_empty() {
            return Err(EnvelopeError::Truncated(*offset + addr.len()));
        }
        let (chunk, found) = match memchr::memchr(0, buf) {
            Some(i) => (&buf[..i], true),
            None => (buf, false),
        };
        if addr.len() + chunk.len() > MAX_ADDRESS {
            return Err(EnvelopeError::AddressTooLong);
        }
        if *offset + addr.len() + chunk.len() + 1 > MAX_ENVELOPE {
            return Err(EnvelopeError::TooLarge);
        }
        addr.try_reserve(chunk.len())
            .map_err(|_| EnvelopeError::OutOfMemory)?;
        addr.extend_from_slice(chunk);
        let used = chunk.len() + usize::from(found);
        input.consume(used);
        if found {
            *offset += addr.len() + 1;
            return Ok(addr);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(r: Result<(Envelope, usize), EnvelopeError>) -> &'static str {
        match r {
            Ok(_) => "ok",
            Err(EnvelopeError::AddressTooLong) => "11",
            Err(EnvelopeError::TooManyRecipients) => "12",
            Err(EnvelopeError::TooLarge) => "13",
            Err(EnvelopeError::Format { .. }) => "91",
            Err(EnvelopeError::Truncated(_)) => "54",
            Err(EnvelopeError::Read(_)) => "54r",
            Err(EnvelopeError::OutOfMemory) => "51",
        }
    }

    #[test]
    fn bad_envelopes() {
        let long = vec![b'a'; MAX_ADDRESS + 1];
        let mut long_sender = b"F".to_vec();
        long_sender.extend_from_slice(&long);
        long_sender.extend_from_slice(b"\0\0");
        let mut long_rcpt = b"Fa\0T".to_vec();
        long_rcpt.extend_from_slice(&long);
        long_rcpt.extend_from_slice(b"\0\0");
        let cases: &[(&[u8], &str)] = &[
            (b"", "54"),
            (b"F", "54"),
            (b"Fa@b", "54"),
            (b"Fa@b\0", "54"),
            (b"Fa@b\0Tc@d", "54"),
            (b"Fa@b\0Tc@d\0", "54"),
            (b"Xa@b\0\0", "91"),
            (b"Ta@b\0\0", "91"),
            (b"Fa@b\0Xc@d\0\0", "91"),
            (b"Fa@b\0Fc@d\0\0", "91"),
            (&long_sender, "11"),
            (&long_rcpt, "11"),
        ];
        for (input, want) in cases {
            assert_eq!(kind(Envelope::parse(input)), *want, "input {input:?}");
        }
    }

    #[test]
    fn too_many_recipients_and_too_large() {
        let mut e = b"F\0".to_vec();
        for _ in 0..=MAX_RECIPIENTS {
            e.extend_from_slice(b"Tx@y\0");
        }
        e.push(0);
        assert_eq!(kind(Envelope::parse(&e)), "12");

        let mut e = b"F\0".to_vec();
        let addr = vec![b'a'; MAX_ADDRESS];
        while e.len() <= MAX_ENVELOPE {
            e.push(b'T');
            e.extend_from_slice(&addr);
            e.push(0);
        }
        e.push(0);
        assert_eq!(kind(Envelope::parse(&e)), "13");
    }

    #[test]
    fn good_envelopes_round_trip() {
        let cases: &[&[u8]] = &[
            b"F\0\0",
            b"Fa@b\0\0",
            b"Fa@b\0Tc@d\0\0",
            b"F\0Tc@d\0Tc@d\0Te@f\0\0",
            "Fj\u{f6}rg@b\0T\u{fc}@\u{e9}.example\0\0".as_bytes(),
        ];
        for input in cases {
            let (env, used) = Envelope::parse(input).expect("valid");
            assert_eq!(used, input.len());
            assert_eq!(&env.encode()[..], *input);
        }
        let (env, used) = Envelope::parse(b"Fa\0Tb\0\0trailing").unwrap();
        assert_eq!(used, 7);
        assert_eq!(env.recipients, vec![b"b".to_vec()]);
        let max = vec![b'a'; MAX_ADDRESS];
        let mut e = b"F".to_vec();
        e.extend_from_slice(&max);
        e.extend_from_slice(b"\0\0");
        assert_eq!(kind(Envelope::parse(&e)), "ok");
    }

    #[test]
    fn byte_at_a_time_reader() {
        struct OneByte<'a>(&'a [u8]);
        impl std::io::Read for OneByte<'_> {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                if self.0.is_empty() || buf.is_empty() {
                    return Ok(0);
                }
                buf[0] = self.0[0];
                self.0 = &self.0[1..];
                Ok(1)
            }
        }
        let input = b"Fs@x\0Ta@b\0Tc@d\0\0";
        let mut r = std::io::BufReader::with_capacity(1, OneByte(input));
        let env = Envelope::read_from(&mut r).unwrap();
        assert_eq!(env.sender, b"s@x");
        assert_eq!(env.recipients.len(), 2);
    }
}
