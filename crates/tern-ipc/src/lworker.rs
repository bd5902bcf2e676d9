//! `tern-lspawn` ↔ its delivery workers (`tern-local --worker`): one
//! `SOCK_SEQPACKET` socket pair per worker, packets sent and received with
//! [`crate::handoff::send`] and [`crate::handoff::recv`].
//!
//! * lspawn → worker: a [`Job`], with the message attached (`SCM_RIGHTS`,
//!   exactly one descriptor, positioned at the message): tern-local's
//!   arguments after `--`, exactly as a one-delivery tern-local gets them;
//! * worker → lspawn: a [`Finished`]: the exit code a one-delivery
//!   tern-local would have exited with, and the text it would have
//!   printed. Both then mean what [`crate::local`] says.
//!
//! A worker runs as the recipient, so lspawn (root) trusts nothing it
//! sends: the packet is bounded and parsed here, and a worker that sends
//! anything else is killed (the delivery is deferred).

use crate::MAX_TEXT;
use crate::handoff::HandoffError;

/// Most arguments of one job.
pub const MAX_ARGS: usize = 16;
/// Longest argument (a home directory, the default delivery lines).
pub const MAX_ARG: usize = 16 * 1024;

/// One delivery for a worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// tern-local's arguments after `--`.
    pub args: Vec<Vec<u8>>,
}

/// How a worker's delivery ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    /// tern-local's exit code (crate::local::LocalExit).
    pub code: u8,
    /// What tern-local prints for the report (at most [`MAX_TEXT`] bytes).
    pub text: Vec<u8>,
}

fn take<'a>(p: &mut &'a [u8], n: usize) -> Result<&'a [u8], HandoffError> {
    if p.len() < n {
        return Err(HandoffError::Format("truncated"));
    }
    let (a, b) = p.split_at(n);
    *p = b;
    Ok(a)
}

fn len32(p: &mut &[u8]) -> Result<usize, HandoffError> {
    let b = take(p, 4)?;
    Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
}

impl Job {
    /// The packet. Fails when a bound is broken.
    pub fn encode(&self) -> Result<Vec<u8>, HandoffError> {
        if self.args.len() > MAX_ARGS {
            return Err(HandoffError::Format("too many arguments"));
        }
        let mut o = vec![b'J', self.args.len() as u8];
        for a in &self.args {
            if a.len() > MAX_ARG || a.contains(&0) {
                return Err(HandoffError::Format("bad argument"));
            }
            o.extend_from_slice(&(a.len() as u32).to_be_bytes());
            o.extend_from_slice(a);
        }
        if o.len() > crate::handoff::MAX_PACKET {
            return Err(HandoffError::TooLong);
        }
        Ok(o)
    }

    /// Parses a packet.
    pub fn decode(mut p: &[u8]) -> Result<Job, HandoffError> {
        if take(&mut p, 1)? != b"J" {
            return Err(HandoffError::Format("not a job"));
        }
        let n = usize::from(take(&mut p, 1)?[0]);
        if n > MAX_ARGS {
            return Err(HandoffError::Format("too many arguments"));
        }
        let mut args = Vec::with_capacity(n);
        for _ in 0..n {
            let len = len32(&mut p)?;
            if len > MAX_ARG {
                return Err(HandoffError::Format("argument too long"));
            }
            let a = take(&mut p, len)?;
            if a.contains(&0) {
                return Err(HandoffError::Format("NUL in an argument"));
            }
            args.push(a.to_vec());
        }
        if !p.is_empty() {
            return Err(HandoffError::Format("trailing bytes"));
        }
        Ok(Job { args })
    }
}

impl Finished {
    /// The packet; a longer text is cut to [`MAX_TEXT`] bytes.
    pub fn encode(&self) -> Vec<u8> {
        let text = &self.text[..self.text.len().min(MAX_TEXT)];
        let mut o = vec![b'F', self.code];
        o.extend_from_slice(&(text.len() as u32).to_be_bytes());
        o.extend_from_slice(text);
        o
    }

    /// Parses a packet (from a process of the recipient's uid).
    pub fn decode(mut p: &[u8]) -> Result<Finished, HandoffError> {
        if take(&mut p, 1)? != b"F" {
            return Err(HandoffError::Format("not a delivery result"));
        }
        let code = take(&mut p, 1)?[0];
        let len = len32(&mut p)?;
        if len > MAX_TEXT {
            return Err(HandoffError::Format("text too long"));
        }
        let text = take(&mut p, len)?.to_vec();
        if !p.is_empty() {
            return Err(HandoffError::Format("trailing bytes"));
        }
        Ok(Finished { code, text })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let j = Job {
            args: vec![b"joe".to_vec(), b"/home/joe".to_vec(), Vec::new()],
        };
        assert_eq!(Job::decode(&j.encode().unwrap()).unwrap(), j);
        let f = Finished {
            code: 111,
            text: b"Unable to write. (#4.3.0)".to_vec(),
        };
        assert_eq!(Finished::decode(&f.encode()).unwrap(), f);
    }

    #[test]
    fn bad_packets_are_refused() {
        for p in [
            &b""[..],
            b"J",
            b"J\x01",
            b"J\x01\x00\x00\x00\x02a",
            b"J\x01\x00\x00\x00\x01a!",
            b"J\x01\x00\x00\x00\x01\x00",
            b"J\x11",
            b"J\x01\xff\xff\xff\xff",
            b"F",
            b"F\x00",
            b"F\x00\x00\x00\x00\x01",
            b"F\x00\x00\x00\x00\x00!",
            b"F\x00\xff\xff\xff\xff",
            b"X\x00",
        ] {
            assert!(
                Job::decode(p).is_err() && Finished::decode(p).is_err(),
                "{p:?} accepted"
            );
        }
        let nul = Job {
            args: vec![b"a\0b".to_vec()],
        };
        assert!(nul.encode().is_err());
        let many = Job {
            args: vec![Vec::new(); MAX_ARGS + 1],
        };
        assert!(many.encode().is_err());
        let long = Finished {
            code: 0,
            text: vec![b'x'; MAX_TEXT + 10],
        };
        assert_eq!(
            Finished::decode(&long.encode()).unwrap().text.len(),
            MAX_TEXT
        );
    }
}
