//! Saving a session between two commands and taking it up again in
//! another process: how tern-listen's reused workers let a quiet client
//! wait without holding a process (tern-ipc's hand-off protocol carries
//! the bytes).
//!
//! Only a session that waits for its next command line can be saved: not
//! inside DATA or BDAT, not in the middle of an AUTH exchange, not over
//! TLS (the TLS state stays in the process that holds it). The encoding is
//! a version byte and fixed fields; every length is bounded and
//! [`Session::resume`] refuses anything else.

use super::Session;
use crate::command::{Body, MAX_PATH, MailParams};

/// The encoding's version.
const VERSION: u8 = 1;
/// Longest HELO argument kept (the line limit bounds it anyway).
const MAX_HELO: usize = 1024;
/// Most recipients a saved session may hold.
const MAX_RECIPIENTS: usize = 100_000;

/// Why saved bytes were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("saved session: {0}")]
pub struct ResumeError(&'static str);

fn put(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_be_bytes());
    out.extend_from_slice(b);
}

fn put_opt(out: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        None => out.push(0),
        Some(b) => {
            out.push(1);
            put(out, b);
        }
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ResumeError> {
        if self.0.len() < n {
            return Err(ResumeError("truncated"));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, ResumeError> {
        Ok(self.take(1)?[0])
    }
    fn flag(&mut self) -> Result<bool, ResumeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(ResumeError("bad flag")),
        }
    }
    fn u32(&mut self) -> Result<u32, ResumeError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, ResumeError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }
    fn bytes(&mut self, max: usize) -> Result<&'a [u8], ResumeError> {
        let n = self.u32()? as usize;
        if n > max {
            return Err(ResumeError("field too long"));
        }
        self.take(n)
    }
    fn opt(&mut self, max: usize) -> Result<Option<&'a [u8]>, ResumeError> {
        Ok(if self.flag()? {
            Some(self.bytes(max)?)
        } else {
            None
        })
    }
}

impl Session {
    /// True when the session waits for a command and holds nothing that
    /// cannot leave this process (no DATA, BDAT, AUTH exchange or TLS).
    pub fn can_park(&self) -> bool {
        !self.in_data && !self.chunking && self.auth_pending.is_none() && !self.tls
    }

    /// The session as bytes for [`Session::resume`]; `None` when
    /// [`Session::can_park`] says no.
    pub fn park(&self) -> Option<Vec<u8>> {
        if !self.can_park() {
            return None;
        }
        let mut out = Vec::with_capacity(128);
        out.push(VERSION);
        put_opt(&mut out, self.helo.as_deref());
        out.push(u8::from(self.esmtp));
        match &self.mail {
            None => out.push(0),
            Some((sender, params)) => {
                out.push(1);
                put(&mut out, sender);
                match params.size {
                    None => out.push(0),
                    Some(n) => {
                        out.push(1);
                        out.extend_from_slice(&n.to_be_bytes());
                    }
                }
                out.push(match params.body {
                    None => 0,
                    Some(Body::SevenBit) => 1,
                    Some(Body::EightBitMime) => 2,
                });
                out.push(u8::from(params.smtputf8));
            }
        }
        out.push(u8::from(self.bad_sender));
        out.extend_from_slice(&(self.recipients.len() as u32).to_be_bytes());
        for r in &self.recipients {
            put(&mut out, r);
        }
        out.extend_from_slice(&self.failures.to_be_bytes());
        put_opt(&mut out, self.auth_user.as_deref());
        out.extend_from_slice(&self.auth_failures.to_be_bytes());
        Some(out)
    }

    /// A session saved by [`Session::park`], under `policy` (which the
    /// caller derives from the same connection variables as before).
    pub fn resume(policy: super::Policy, saved: &[u8]) -> Result<Session, ResumeError> {
        let mut r = Reader(saved);
        if r.u8()? != VERSION {
            return Err(ResumeError("unknown version"));
        }
        let mut s = Session::new(policy);
        s.helo = r.opt(MAX_HELO)?.map(<[u8]>::to_vec);
        s.esmtp = r.flag()?;
        s.mail = if r.flag()? {
            let sender = r.bytes(MAX_PATH)?.to_vec();
            let size = if r.flag()? { Some(r.u64()?) } else { None };
            let body = match r.u8()? {
                0 => None,
                1 => Some(Body::SevenBit),
                2 => Some(Body::EightBitMime),
                _ => return Err(ResumeError("bad BODY")),
            };
            let smtputf8 = r.flag()?;
            Some((
                sender,
                MailParams {
                    size,
                    body,
                    smtputf8,
                },
            ))
        } else {
            None
        };
        s.bad_sender = r.flag()?;
        let n = r.u32()? as usize;
        if n > MAX_RECIPIENTS || (n > 0 && s.mail.is_none()) {
            return Err(ResumeError("bad recipient count"));
        }
        s.recipients = Vec::with_capacity(n.min(1024));
        for _ in 0..n {
            s.recipients.push(r.bytes(MAX_PATH)?.to_vec());
        }
        s.failures = r.u32()?;
        s.auth_user = r.opt(crate::auth::MAX_LOGIN)?.map(<[u8]>::to_vec);
        s.auth_failures = r.u32()?;
        if !r.0.is_empty() {
            return Err(ResumeError("trailing bytes"));
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::line::LineEvent;
    use crate::session::{Checks, Policy, RcptVerdict};

    struct Yes;
    impl Checks for Yes {
        fn relay_allowed(&self, _: &[u8]) -> bool {
            true
        }
        fn bad_sender(&self, _: &[u8]) -> bool {
            false
        }
        fn recipient(&mut self, _: &[u8]) -> RcptVerdict {
            RcptVerdict::Accept
        }
    }

    fn talk(s: &mut Session, line: &[u8]) -> u16 {
        let step = s.handle(LineEvent::Line(line.to_vec()), &mut Yes);
        step.action.reply().map_or(0, |r| r.code)
    }

    #[test]
    fn a_transaction_survives_a_park() {
        let mut p = Policy::new("mx.example");
        p.relayclient = Some(String::new());
        let mut s = Session::new(p.clone());
        assert_eq!(talk(&mut s, b"EHLO client.example"), 250);
        assert_eq!(
            talk(&mut s, b"MAIL FROM:<a@b.example> SIZE=100 BODY=8BITMIME"),
            250
        );
        assert_eq!(talk(&mut s, b"RCPT TO:<x@y.example>"), 250);
        assert_eq!(talk(&mut s, b"NOOP bad"), 250);
        let saved = s.park().expect("parkable");
        let mut t = Session::resume(p, &saved).expect("resume");
        assert_eq!(t.helo(), b"client.example");
        assert_eq!(t.protocol(), "ESMTP");
        assert_eq!(t.sender(), b"a@b.example");
        assert_eq!(t.recipients(), &[b"x@y.example".to_vec()]);
        assert_eq!(t.park(), Some(saved));
        assert_eq!(talk(&mut t, b"RCPT TO:<z@y.example>"), 250);
        assert_eq!(talk(&mut t, b"DATA"), 354);
        assert!(!t.can_park());
    }

    #[test]
    fn a_fresh_session_round_trips() {
        let s = Session::new(Policy::new("mx.example"));
        let saved = s.park().unwrap();
        let t = Session::resume(Policy::new("mx.example"), &saved).unwrap();
        assert_eq!(t.park().unwrap(), saved);
        assert_eq!(t.helo(), b"");
    }

    #[test]
    fn bad_saved_bytes_are_refused() {
        let good = {
            let mut s = Session::new(Policy::new("m"));
            talk(&mut s, b"HELO h");
            s.park().unwrap()
        };
        // Every truncation and every trailing byte.
        for n in 0..good.len() {
            assert!(
                Session::resume(Policy::new("m"), &good[..n]).is_err(),
                "{n}"
            );
        }
        let mut long = good.clone();
        long.push(0);
        assert!(Session::resume(Policy::new("m"), &long).is_err());
        let mut version = good.clone();
        version[0] = 9;
        assert!(Session::resume(Policy::new("m"), &version).is_err());
        // A flag that is neither 0 nor 1.
        let mut flag = good.clone();
        flag[1] = 7;
        assert!(Session::resume(Policy::new("m"), &flag).is_err());
        // A helo length beyond the bound.
        let mut huge = vec![VERSION, 1];
        huge.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(Session::resume(Policy::new("m"), &huge).is_err());
        // Recipients without a sender.
        let mut orphan = vec![VERSION, 0, 0, 0, 0];
        orphan.extend_from_slice(&1u32.to_be_bytes());
        orphan.extend_from_slice(&1u32.to_be_bytes());
        orphan.push(b'x');
        orphan.extend_from_slice(&[0; 4]);
        orphan.push(0);
        orphan.extend_from_slice(&[0; 4]);
        assert_eq!(
            Session::resume(Policy::new("m"), &orphan).err(),
            Some(ResumeError("bad recipient count"))
        );
    }
}
