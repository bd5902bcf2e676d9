//! `ternctl` → `tern-send`: the postmaster's queue operations (delete,
//! bounce, hold, release) sent to a running manager over its control
//! socket (`queue/state/control`, docs/queue.md "Queue operations").
//!
//! One connection carries one [`ControlRequest`] frame and gets one
//! [`ControlReply`] frame: one [`OpResult`] per id, in order, sent only
//! after the manager's journal records for the request are durable.
//! Bulk operations are split into requests of at most [`MAX_IDS`] ids.
//!
//! Trust: the manager accepts a connection only from root or its own uid
//! (`SO_PEERCRED`), and still treats the frame as untrusted (bounded,
//! every field checked).

use crate::{Dec, Enc, Error};

/// Most ids in one request (a frame stays well under [`crate::MAX_FRAME`]).
pub const MAX_IDS: usize = 4096;

/// What the postmaster asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlOp {
    /// Remove without a bounce.
    Delete,
    /// Fail every pending recipient now, with the usual bounce.
    Bounce,
    /// Start no new delivery until released.
    Hold,
    /// Undo a hold.
    Release,
}

impl ControlOp {
    fn letter(self) -> u8 {
        match self {
            ControlOp::Delete => b'd',
            ControlOp::Bounce => b'b',
            ControlOp::Hold => b'h',
            ControlOp::Release => b'r',
        }
    }

    /// The operation's name in logs and messages.
    pub fn name(self) -> &'static str {
        match self {
            ControlOp::Delete => "delete",
            ControlOp::Bounce => "bounce",
            ControlOp::Hold => "hold",
            ControlOp::Release => "release",
        }
    }
}

/// `ternctl` → `tern-send`: one operation on a list of message ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlRequest {
    /// The operation.
    pub op: ControlOp,
    /// Message ids, at most [`MAX_IDS`].
    pub ids: Vec<u64>,
}

impl ControlRequest {
    /// Encodes the payload.
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Enc::new(b'Q')
            .u8(self.op.letter())
            .u32(self.ids.len() as u32);
        for &id in &self.ids {
            e = e.u64(id);
        }
        e.0
    }

    /// Decodes a payload.
    pub fn decode(p: &[u8]) -> Result<ControlRequest, Error> {
        let mut d = Dec::new(p, b'Q')?;
        let op = match d.u8()? {
            b'd' => ControlOp::Delete,
            b'b' => ControlOp::Bounce,
            b'h' => ControlOp::Hold,
            b'r' => ControlOp::Release,
            _ => return Err(Error::Bad("unknown control operation")),
        };
        let n = d.u32()? as usize;
        if n > MAX_IDS {
            return Err(Error::Bad("too many ids"));
        }
        let mut ids = Vec::with_capacity(n);
        for _ in 0..n {
            ids.push(d.u64()?);
        }
        d.end()?;
        Ok(ControlRequest { op, ids })
    }
}

/// What happened to one id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpResult {
    /// No such message in the queue.
    NotFound,
    /// Done (recorded in the journal).
    Done,
    /// Already so (held already, nothing pending any more, ...): nothing
    /// recorded.
    Unchanged,
}

/// `tern-send` → `ternctl`: one result per id of the request, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlReply {
    /// The results.
    pub results: Vec<OpResult>,
}

impl ControlReply {
    /// Encodes the payload.
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Enc::new(b'q').u32(self.results.len() as u32);
        for r in &self.results {
            e = e.u8(match r {
                OpResult::NotFound => 0,
                OpResult::Done => 1,
                OpResult::Unchanged => 2,
            });
        }
        e.0
    }

    /// Decodes a payload.
    pub fn decode(p: &[u8]) -> Result<ControlReply, Error> {
        let mut d = Dec::new(p, b'q')?;
        let n = d.u32()? as usize;
        if n > MAX_IDS {
            return Err(Error::Bad("too many results"));
        }
        let mut results = Vec::with_capacity(n);
        for _ in 0..n {
            results.push(match d.u8()? {
                0 => OpResult::NotFound,
                1 => OpResult::Done,
                2 => OpResult::Unchanged,
                _ => return Err(Error::Bad("bad control result")),
            });
        }
        d.end()?;
        Ok(ControlReply { results })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::VERSION;

    #[test]
    fn round_trip() {
        for op in [
            ControlOp::Delete,
            ControlOp::Bounce,
            ControlOp::Hold,
            ControlOp::Release,
        ] {
            let r = ControlRequest {
                op,
                ids: vec![1, u64::MAX, 42],
            };
            assert_eq!(ControlRequest::decode(&r.encode()).unwrap(), r);
        }
        let full = ControlRequest {
            op: ControlOp::Delete,
            ids: (0..MAX_IDS as u64).collect(),
        };
        assert!(full.encode().len() <= crate::MAX_FRAME);
        assert_eq!(ControlRequest::decode(&full.encode()).unwrap(), full);
        let a = ControlReply {
            results: vec![OpResult::NotFound, OpResult::Done, OpResult::Unchanged],
        };
        assert_eq!(ControlReply::decode(&a.encode()).unwrap(), a);
    }

    fn bad(p: &[u8]) -> String {
        match ControlRequest::decode(p) {
            Err(Error::Bad(why)) => why.to_string(),
            other => panic!("accepted {p:?}: {other:?}"),
        }
    }

    #[test]
    fn bad_requests_are_refused_with_a_reason() {
        assert_eq!(bad(&[]), "short payload");
        assert_eq!(bad(&[VERSION + 1, b'Q', b'd']), "protocol version mismatch");
        assert_eq!(bad(&[VERSION, b'q']), "unexpected message type");
        assert_eq!(
            bad(&[VERSION, b'Q', b'x', 0, 0, 0, 0]),
            "unknown control operation"
        );
        let mut many = vec![VERSION, b'Q', b'd'];
        many.extend_from_slice(&(MAX_IDS as u32 + 1).to_be_bytes());
        assert_eq!(bad(&many), "too many ids");
        let mut short = vec![VERSION, b'Q', b'h'];
        short.extend_from_slice(&2u32.to_be_bytes());
        short.extend_from_slice(&7u64.to_be_bytes());
        assert_eq!(bad(&short), "payload truncated");
        let mut trailing = ControlRequest {
            op: ControlOp::Release,
            ids: vec![7],
        }
        .encode();
        trailing.push(0);
        assert_eq!(bad(&trailing), "trailing bytes");
        let mut reply = ControlReply {
            results: vec![OpResult::Done],
        }
        .encode();
        *reply.last_mut().unwrap() = 9;
        assert!(ControlReply::decode(&reply).is_err());
    }
}
