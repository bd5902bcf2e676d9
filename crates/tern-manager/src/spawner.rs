//! The spawners (tern-lspawn, tern-rspawn) and the cleaner (tern-clean)
//! as the manager sees them: framed requests out, reports in.

use crate::common::ch_name;
use rustix::fs::OFlags;
use std::collections::VecDeque;
use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use tern_ipc::remote::RcptReport;
use tern_ipc::{CleanOp, CleanReply, CleanRequest, FrameBuffer, Hello, Outcome, Report};
use tern_spool::state::Channel;

/// One running delivery: a message and the recipients it carries (one for
/// a local delivery; one or more at one domain for a remote delivery).
#[derive(Debug, Clone)]
pub(crate) struct Slot {
    pub(crate) id: u64,
    pub(crate) indices: Vec<u32>,
    /// Which recipients have their result.
    pub(crate) reported: Vec<bool>,
    /// Remote: the destination domain (for the per-domain count).
    pub(crate) domain: Option<Vec<u8>>,
    pub(crate) dying: bool,
}

impl Slot {
    pub(crate) fn done(&self) -> bool {
        self.reported.iter().all(|&r| r)
    }
}

/// One result from a spawner: which recipient, what happened.
pub(crate) struct Result1 {
    pub(crate) id: u64,
    pub(crate) index: u32,
    pub(crate) dying: bool,
    pub(crate) outcome: Outcome,
    pub(crate) text: Vec<u8>,
}

/// One spawner (tern-lspawn or tern-rspawn) seen from the manager.
pub struct Spawner {
    pub(crate) channel: Channel,
    pub(crate) to: File,
    pub(crate) from: File,
    pub(crate) out: Vec<u8>,
    /// Message descriptors still to be sent (remote): each goes with the
    /// first byte of its frame, at that offset in `out`.
    pub(crate) out_fds: VecDeque<(usize, OwnedFd)>,
    pub(crate) inbuf: FrameBuffer,
    pub(crate) slots: Vec<Option<Slot>>,
    pub(crate) free: Vec<u32>,
}

impl Spawner {
    /// Wraps the two pipes and waits for the spawner's `Hello`.
    pub fn connect(
        channel: Channel,
        to: File,
        mut from: File,
        wanted: usize,
    ) -> Result<Spawner, String> {
        let hello = tern_ipc::read_frame(&mut from)
            .map_err(|e| format!("{} spawner did not say hello: {e}", ch_name(channel)))?;
        let hello = Hello::decode(&hello)
            .map_err(|e| format!("{} spawner hello: {e}", ch_name(channel)))?;
        let n = wanted.min(hello.max_concurrency as usize);
        for f in [&to, &from] {
            let fl = rustix::fs::fcntl_getfl(f).map_err(|e| e.to_string())?;
            rustix::fs::fcntl_setfl(f, fl | OFlags::NONBLOCK).map_err(|e| e.to_string())?;
        }
        Ok(Spawner {
            channel,
            to,
            from,
            out: Vec::new(),
            out_fds: VecDeque::new(),
            inbuf: FrameBuffer::default(),
            slots: vec![None; n],
            free: (0..n as u32).rev().collect(),
        })
    }

    /// Queues one frame (with its message descriptor for remote requests).
    pub(crate) fn queue_frame(&mut self, payload: &[u8], fd: Option<OwnedFd>) {
        if let Some(fd) = fd {
            self.out_fds.push_back((self.out.len(), fd));
        }
        self.out
            .extend_from_slice(&(payload.len() as u32).to_be_bytes());
        self.out.extend_from_slice(payload);
    }

    pub(crate) fn flush(&mut self) -> Result<(), String> {
        while !self.out.is_empty() {
            let next_fd = self.out_fds.front().map(|(at, _)| *at);
            let res = match next_fd {
                Some(0) => {
                    let (_, fd) = self.out_fds.front().expect("checked");
                    let end = self.out_fds.get(1).map_or(self.out.len(), |(at, _)| *at);
                    tern_ipc::remote::send_with_fd(self.to.as_fd(), &self.out[..end], fd.as_fd())
                }
                Some(at) => self.to.write(&self.out[..at]),
                None => self.to.write(&self.out),
            };
            match res {
                Ok(0) => return Err("spawner pipe closed".into()),
                Ok(n) => {
                    if next_fd == Some(0) {
                        // The descriptor went with the first byte.
                        self.out_fds.pop_front();
                    }
                    for (at, _) in self.out_fds.iter_mut() {
                        *at -= n;
                    }
                    self.out.drain(..n);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("write to {} spawner: {e}", ch_name(self.channel))),
            }
        }
        Ok(())
    }

    /// Reads what has arrived: the results, the domains of remote slots
    /// that finished, and why the spawner is lost, if it is (end of file, a
    /// read error, a bad frame). The results that arrived before the loss
    /// are returned all the same: a spawner that writes its last reports
    /// and exits must not have them dropped (they would be repeated after
    /// the restart: duplicate deliveries).
    pub(crate) fn read_reports(&mut self) -> (Vec<Result1>, Vec<Vec<u8>>, Option<String>) {
        let mut buf = [0u8; 16 * 1024];
        let mut lost = None;
        loop {
            match self.from.read(&mut buf) {
                Ok(0) => {
                    lost = Some(format!("lost the {} spawner", ch_name(self.channel)));
                    break;
                }
                Ok(n) => self.inbuf.extend(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    lost = Some(format!("read from {} spawner: {e}", ch_name(self.channel)));
                    break;
                }
            }
        }
        let mut out = Vec::new();
        let mut freed = Vec::new();
        if let Err(e) = self.take_frames(&mut out, &mut freed) {
            lost = Some(e);
        }
        (out, freed, lost)
    }

    /// Decodes every whole frame in the input buffer into `out` (and the
    /// domains of finished remote slots into `freed`), up to the first bad
    /// one.
    pub(crate) fn take_frames(
        &mut self,
        out: &mut Vec<Result1>,
        freed: &mut Vec<Vec<u8>>,
    ) -> Result<(), String> {
        let name = ch_name(self.channel);
        while let Some(frame) = self.inbuf.next_frame().map_err(|e| e.to_string())? {
            // Local: one Report per slot. Remote: one RcptReport per
            // recipient; the slot is free when all have theirs.
            let (slot_no, rcpt, outcome, text) = match self.channel {
                Channel::Local => {
                    let r = Report::decode(&frame).map_err(|e| format!("{name} spawner: {e}"))?;
                    (r.slot, 0, r.outcome, r.text)
                }
                Channel::Remote => {
                    let r =
                        RcptReport::decode(&frame).map_err(|e| format!("{name} spawner: {e}"))?;
                    (r.slot, r.rcpt as usize, r.outcome, r.text)
                }
            };
            let Some(slot) = self
                .slots
                .get_mut(slot_no as usize)
                .and_then(Option::as_mut)
            else {
                return Err(format!("{name} spawner reported on an idle slot"));
            };
            match slot.reported.get_mut(rcpt) {
                Some(r @ false) => *r = true,
                Some(true) => return Err(format!("{name} spawner reported a recipient twice")),
                None => return Err(format!("{name} spawner reported an unknown recipient")),
            }
            out.push(Result1 {
                id: slot.id,
                index: slot.indices[rcpt],
                dying: slot.dying,
                outcome,
                text,
            });
            if slot.done() {
                let slot = self.slots[slot_no as usize].take().expect("checked");
                self.free.push(slot_no);
                freed.extend(slot.domain);
            }
        }
        Ok(())
    }
}

/// The cleaner seen from the manager (synchronous request/reply).
pub struct Cleaner {
    /// Requests.
    pub to: File,
    /// Replies.
    pub from: File,
}

impl Cleaner {
    pub(crate) fn run(&mut self, ops: Vec<CleanOp>) -> Result<Vec<bool>, String> {
        let mut all = Vec::with_capacity(ops.len());
        for chunk in ops.chunks(tern_ipc::MAX_BATCH) {
            let req = CleanRequest {
                ops: chunk.to_vec(),
            };
            tern_ipc::write_frame(&mut self.to, &req.encode())
                .map_err(|e| format!("cleaner: {e}"))?;
            let reply =
                tern_ipc::read_frame(&mut self.from).map_err(|e| format!("cleaner: {e}"))?;
            let reply = CleanReply::decode(&reply).map_err(|e| format!("cleaner: {e}"))?;
            if reply.ok.len() != chunk.len() {
                return Err("cleaner answered the wrong number of results".into());
            }
            all.extend(reply.ok);
        }
        Ok(all)
    }
}
