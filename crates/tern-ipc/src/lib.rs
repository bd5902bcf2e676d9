//! `tern-ipc`: the internal protocols between `tern-send` and the programs
//! it drives (`tern-lspawn`, `tern-rspawn`, `tern-clean`).
//!
//! Every message is one **frame**: a 4-byte big-endian length, then that
//! many bytes of payload. A payload starts with the protocol version
//! ([`VERSION`]) and a type letter; fields are fixed-width big-endian
//! integers and length-prefixed byte strings. Nothing is quoted, nothing is
//! parsed twice. Every length is bounded ([`MAX_FRAME`], [`MAX_TEXT`],
//! [`MAX_ADDRESS`]); a frame that breaks a bound or does not parse is an
//! error, and the receiving side treats its peer as broken (a spawner exits;
//! `tern-send` stops using it), never guesses.
//!
//! Protocols (and, apart, [`handoff`]: tern-listen and its SMTP workers):
//!
//! * spawner (`tern-lspawn`, `tern-rspawn`) → `tern-send`: [`Hello`] once at
//!   start (how many deliveries it may run at once), then one [`Report`] per
//!   finished delivery, in completion order;
//! * `tern-send` → spawner: one [`Deliver`] per delivery;
//! * `tern-send` → `tern-clean`: a [`CleanRequest`] (a batch of operations);
//!   `tern-clean` answers each with one [`CleanReply`] after making the
//!   whole batch durable.
//!
//! Trust level: `tern-send` does not trust spawners' reports (bounded and
//! sanitised text); spawners and the cleaner do not trust `tern-send`'s ids
//! or addresses (bounded, checked).
#![forbid(unsafe_code)]
#![deny(clippy::print_stdout, clippy::print_stderr)]

use std::io::{self, Read, Write};

pub mod control;
pub mod handoff;
pub mod local;
pub mod lworker;
pub mod remote;
pub mod verify;

/// The protocol version; every incompatible change bumps it.
pub const VERSION: u8 = 1;
/// Largest frame payload accepted.
pub const MAX_FRAME: usize = 64 * 1024;
/// Largest report text kept (longer texts are cut by the sender).
pub const MAX_TEXT: usize = 4000;
/// Largest address in a delivery request.
pub const MAX_ADDRESS: usize = 1000;
/// Largest number of operations in one clean batch.
pub const MAX_BATCH: usize = 1024;

/// A protocol error: the peer is broken or gone.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading or writing the pipe failed.
    #[error("pipe: {0}")]
    Io(#[from] io::Error),
    /// The peer closed the pipe at a frame boundary.
    #[error("peer closed the connection")]
    Closed,
    /// A frame is malformed.
    #[error("bad frame: {0}")]
    Bad(&'static str),
}

/// Writes one frame (length prefix and payload) in a single `write_all`.
pub fn write_frame(out: &mut impl Write, payload: &[u8]) -> Result<(), Error> {
    if payload.len() > MAX_FRAME {
        return Err(Error::Bad("frame too large"));
    }
    let mut buf = Vec::with_capacity(4 + payload.len());
    buf.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    buf.extend_from_slice(payload);
    out.write_all(&buf)?;
    out.flush()?;
    Ok(())
}

/// Reads one frame. `Err(Closed)` at a clean end of file.
pub fn read_frame(input: &mut impl Read) -> Result<Vec<u8>, Error> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match input.read(&mut len[got..]) {
            Ok(0) if got == 0 => return Err(Error::Closed),
            Ok(0) => return Err(Error::Bad("truncated length")),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(Error::Bad("frame too large"));
    }
    let mut payload = vec![0u8; len];
    input.read_exact(&mut payload).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            Error::Bad("truncated frame")
        } else {
            Error::Io(e)
        }
    })?;
    Ok(payload)
}

/// Incremental frame splitter for a non-blocking reader: feed it bytes,
/// take whole frames out.
#[derive(Debug, Default)]
pub struct FrameBuffer {
    buf: Vec<u8>,
}

impl FrameBuffer {
    /// Appends bytes read from the peer.
    pub fn extend(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole frame, if one has arrived. An oversized length is an
    /// error at once (no waiting for 4 GiB).
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, Error> {
        if self.buf.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
        if len > MAX_FRAME {
            return Err(Error::Bad("frame too large"));
        }
        if self.buf.len() < 4 + len {
            return Ok(None);
        }
        let frame = self.buf[4..4 + len].to_vec();
        self.buf.drain(..4 + len);
        Ok(Some(frame))
    }

    /// True when a partial frame is buffered.
    pub fn is_partial(&self) -> bool {
        !self.buf.is_empty()
    }
}

struct Enc(Vec<u8>);

impl Enc {
    fn new(kind: u8) -> Enc {
        Enc(vec![VERSION, kind])
    }
    fn u8(mut self, v: u8) -> Self {
        self.0.push(v);
        self
    }
    fn u32(mut self, v: u32) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn u64(mut self, v: u64) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn bytes(mut self, v: &[u8]) -> Self {
        self.0.extend_from_slice(&(v.len() as u32).to_be_bytes());
        self.0.extend_from_slice(v);
        self
    }
}

struct Dec<'a> {
    rest: &'a [u8],
}

impl<'a> Dec<'a> {
    fn new(payload: &'a [u8], kind: u8) -> Result<Dec<'a>, Error> {
        match payload {
            [] | [_] => Err(Error::Bad("short payload")),
            [v, _, ..] if *v != VERSION => Err(Error::Bad("protocol version mismatch")),
            [_, k, rest @ ..] if *k == kind => Ok(Dec { rest }),
            _ => Err(Error::Bad("unexpected message type")),
        }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], Error> {
        if self.rest.len() < n {
            return Err(Error::Bad("payload truncated"));
        }
        let (a, b) = self.rest.split_at(n);
        self.rest = b;
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, Error> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, Error> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, Error> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }
    fn bytes(&mut self, max: usize) -> Result<Vec<u8>, Error> {
        let n = self.u32()? as usize;
        if n > max {
            return Err(Error::Bad("field too long"));
        }
        Ok(self.take(n)?.to_vec())
    }
    fn end(self) -> Result<(), Error> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(Error::Bad("trailing bytes"))
        }
    }
}

/// Spawner → send, once at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// Most deliveries the spawner will run at once.
    pub max_concurrency: u32,
}

impl Hello {
    /// Encodes the payload.
    pub fn encode(&self) -> Vec<u8> {
        Enc::new(b'H').u32(self.max_concurrency).0
    }
    /// Decodes a payload.
    pub fn decode(p: &[u8]) -> Result<Hello, Error> {
        let mut d = Dec::new(p, b'H')?;
        let h = Hello {
            max_concurrency: d.u32()?,
        };
        d.end()?;
        Ok(h)
    }
}

/// Send → spawner: deliver message `id` to one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deliver {
    /// The delivery slot; the report carries it back.
    pub slot: u32,
    /// The message id (its queue file is `queue/cur/<id % split>/<id>`).
    pub id: u64,
    /// Where the message starts in the queue file.
    pub offset: u64,
    /// The envelope sender (empty for a bounce).
    pub sender: Vec<u8>,
    /// The recipient, as rewritten for delivery (`local@domain`).
    pub recipient: Vec<u8>,
}

impl Deliver {
    /// Encodes the payload.
    pub fn encode(&self) -> Vec<u8> {
        Enc::new(b'D')
            .u32(self.slot)
            .u64(self.id)
            .u64(self.offset)
            .bytes(&self.sender)
            .bytes(&self.recipient)
            .0
    }
    /// Decodes a payload.
    pub fn decode(p: &[u8]) -> Result<Deliver, Error> {
        let mut d = Dec::new(p, b'D')?;
        let m = Deliver {
            slot: d.u32()?,
            id: d.u64()?,
            offset: d.u64()?,
            sender: d.bytes(MAX_ADDRESS)?,
            recipient: d.bytes(MAX_ADDRESS)?,
        };
        d.end()?;
        Ok(m)
    }
}

/// The outcome of one delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Delivered (`K`).
    Delivered,
    /// Temporary failure: retry later (`Z`).
    Deferred,
    /// Permanent failure: bounce (`D`).
    Failed,
}

impl Outcome {
    fn letter(self) -> u8 {
        match self {
            Outcome::Delivered => b'K',
            Outcome::Deferred => b'Z',
            Outcome::Failed => b'D',
        }
    }
    fn from_letter(b: u8) -> Result<Outcome, Error> {
        match b {
            b'K' => Ok(Outcome::Delivered),
            b'Z' => Ok(Outcome::Deferred),
            b'D' => Ok(Outcome::Failed),
            _ => Err(Error::Bad("unknown outcome letter")),
        }
    }
}

/// Spawner → send: one delivery finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The slot of the [`Deliver`] request.
    pub slot: u32,
    /// What happened.
    pub outcome: Outcome,
    /// Human-readable text (for logs and bounces); at most [`MAX_TEXT`].
    pub text: Vec<u8>,
}

impl Report {
    /// Encodes the payload; text beyond [`MAX_TEXT`] is cut.
    pub fn encode(&self) -> Vec<u8> {
        let text = &self.text[..self.text.len().min(MAX_TEXT)];
        Enc::new(b'R')
            .u32(self.slot)
            .u8(self.outcome.letter())
            .bytes(text)
            .0
    }
    /// Decodes a payload.
    pub fn decode(p: &[u8]) -> Result<Report, Error> {
        let mut d = Dec::new(p, b'R')?;
        let r = Report {
            slot: d.u32()?,
            outcome: Outcome::from_letter(d.u8()?)?,
            text: d.bytes(MAX_TEXT)?,
        };
        d.end()?;
        Ok(r)
    }
}

/// One operation for `tern-clean`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CleanOp {
    /// Move message `id` from `queue/new/` to `queue/cur/` (the manager has
    /// durably recorded it).
    Accept(u64),
    /// Remove message `id` for good: every recipient is done and that is
    /// durable. `birth` and `qpid` (the acceptance time and tern-queue pid
    /// from its header) identify the message: inode numbers are reused, so a
    /// file named `id` that is a later message is left alone.
    Remove {
        /// Message id.
        id: u64,
        /// Acceptance time from the queue-file header.
        birth: i64,
        /// tern-queue pid from the queue-file header.
        qpid: u32,
    },
}

/// Send → clean: a batch of operations, made durable together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CleanRequest {
    /// The operations, at most [`MAX_BATCH`].
    pub ops: Vec<CleanOp>,
}

impl CleanRequest {
    /// Encodes the payload.
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Enc::new(b'C').u32(self.ops.len() as u32);
        for op in &self.ops {
            e = match op {
                CleanOp::Accept(id) => e.u8(b'A').u64(*id),
                CleanOp::Remove { id, birth, qpid } => {
                    e.u8(b'X').u64(*id).u64(*birth as u64).u32(*qpid)
                }
            };
        }
        e.0
    }
    /// Decodes a payload.
    pub fn decode(p: &[u8]) -> Result<CleanRequest, Error> {
        let mut d = Dec::new(p, b'C')?;
        let n = d.u32()? as usize;
        if n > MAX_BATCH {
            return Err(Error::Bad("batch too large"));
        }
        let mut ops = Vec::with_capacity(n);
        for _ in 0..n {
            let op = match d.u8()? {
                b'A' => CleanOp::Accept(d.u64()?),
                b'X' => CleanOp::Remove {
                    id: d.u64()?,
                    birth: d.u64()? as i64,
                    qpid: d.u32()?,
                },
                _ => return Err(Error::Bad("unknown clean operation")),
            };
            ops.push(op);
        }
        d.end()?;
        Ok(CleanRequest { ops })
    }
}

/// Clean → send: the result of each operation of a batch, in order. `true`
/// = done (or already done: a missing file counts as done).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CleanReply {
    /// One result per operation.
    pub ok: Vec<bool>,
}

impl CleanReply {
    /// Encodes the payload.
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Enc::new(b'c').u32(self.ok.len() as u32);
        for &ok in &self.ok {
            e = e.u8(u8::from(ok));
        }
        e.0
    }
    /// Decodes a payload.
    pub fn decode(p: &[u8]) -> Result<CleanReply, Error> {
        let mut d = Dec::new(p, b'c')?;
        let n = d.u32()? as usize;
        if n > MAX_BATCH {
            return Err(Error::Bad("batch too large"));
        }
        let mut ok = Vec::with_capacity(n);
        for _ in 0..n {
            ok.push(match d.u8()? {
                0 => false,
                1 => true,
                _ => return Err(Error::Bad("bad clean result")),
            });
        }
        d.end()?;
        Ok(CleanReply { ok })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_frames() {
        let cases: &[(&[u8], &str)] = &[
            (b"", "short payload"),
            (&[VERSION], "short payload"),
            (&[9, b'H', 0, 0, 0, 1], "protocol version mismatch"),
            (&[VERSION, b'Q', 0, 0, 0, 1], "unexpected message type"),
            (&[VERSION, b'H', 0, 0], "payload truncated"),
            (&[VERSION, b'H', 0, 0, 0, 1, 7], "trailing bytes"),
        ];
        for (p, want) in cases {
            match Hello::decode(p) {
                Err(Error::Bad(h)) => assert_eq!(h, *want, "{p:?}"),
                other => panic!("{p:?}: {other:?}"),
            }
        }
        let mut long = Enc::new(b'D').u32(1).u64(2).u64(3).0;
        long.extend_from_slice(&((MAX_ADDRESS + 1) as u32).to_be_bytes());
        long.extend(std::iter::repeat_n(b'a', MAX_ADDRESS + 1));
        assert!(matches!(
            Deliver::decode(&long),
            Err(Error::Bad("field too long"))
        ));
        let bad_letter = Enc::new(b'R').u32(1).u8(b'Q').bytes(b"").0;
        assert!(matches!(
            Report::decode(&bad_letter),
            Err(Error::Bad("unknown outcome letter"))
        ));
        let big_batch = Enc::new(b'C').u32(MAX_BATCH as u32 + 1).0;
        assert!(matches!(
            CleanRequest::decode(&big_batch),
            Err(Error::Bad("batch too large"))
        ));
        let bad_op = Enc::new(b'C').u32(1).u8(b'Z').u64(1).0;
        assert!(matches!(
            CleanRequest::decode(&bad_op),
            Err(Error::Bad("unknown clean operation"))
        ));
        // Frame layer.
        let mut huge = ((MAX_FRAME + 1) as u32).to_be_bytes().to_vec();
        huge.push(0);
        assert!(matches!(
            read_frame(&mut &huge[..]),
            Err(Error::Bad("frame too large"))
        ));
        assert!(matches!(read_frame(&mut &b""[..]), Err(Error::Closed)));
        assert!(matches!(
            read_frame(&mut &[0u8, 0][..]),
            Err(Error::Bad("truncated length"))
        ));
        assert!(matches!(
            read_frame(&mut &[0u8, 0, 0, 5, 1][..]),
            Err(Error::Bad("truncated frame"))
        ));
        let mut fb = FrameBuffer::default();
        fb.extend(&huge[..4]);
        assert!(fb.next_frame().is_err());
    }

    #[test]
    fn round_trips() {
        let h = Hello {
            max_concurrency: 120,
        };
        assert_eq!(Hello::decode(&h.encode()).unwrap(), h);
        let d = Deliver {
            slot: 7,
            id: 123_456_789,
            offset: 4096,
            sender: b"a@b".to_vec(),
            recipient: "j\u{f6}rg@x".as_bytes().to_vec(),
        };
        assert_eq!(Deliver::decode(&d.encode()).unwrap(), d);
        for outcome in [Outcome::Delivered, Outcome::Deferred, Outcome::Failed] {
            let r = Report {
                slot: 3,
                outcome,
                text: b"did 1 maildir\n".to_vec(),
            };
            assert_eq!(Report::decode(&r.encode()).unwrap(), r);
        }
        let long = Report {
            slot: 1,
            outcome: Outcome::Failed,
            text: vec![b'x'; MAX_TEXT * 2],
        };
        assert_eq!(Report::decode(&long.encode()).unwrap().text.len(), MAX_TEXT);
        let c = CleanRequest {
            ops: vec![
                CleanOp::Accept(1),
                CleanOp::Remove {
                    id: u64::MAX,
                    birth: -5,
                    qpid: 42,
                },
            ],
        };
        assert_eq!(CleanRequest::decode(&c.encode()).unwrap(), c);
        let r = CleanReply {
            ok: vec![true, false],
        };
        assert_eq!(CleanReply::decode(&r.encode()).unwrap(), r);

        // Frames, whole and split byte by byte.
        let mut wire = Vec::new();
        write_frame(&mut wire, &d.encode()).unwrap();
        write_frame(&mut wire, &h.encode()).unwrap();
        let mut r = &wire[..];
        assert_eq!(Deliver::decode(&read_frame(&mut r).unwrap()).unwrap(), d);
        assert_eq!(Hello::decode(&read_frame(&mut r).unwrap()).unwrap(), h);
        let mut fb = FrameBuffer::default();
        let mut frames = Vec::new();
        for b in &wire {
            fb.extend(std::slice::from_ref(b));
            while let Some(f) = fb.next_frame().unwrap() {
                frames.push(f);
            }
        }
        assert_eq!(frames.len(), 2);
        assert!(!fb.is_partial());
    }
}
