//! The queue manager's event loop: pick-up, scheduling, results, bounces,
//! removal. Decisions come from `tern-sched`; durable state is the journal
//! (`tern_spool::state`); the spawners and the cleaner are driven over
//! `tern-ipc` frames.

use crate::bounce::{self, BounceConfig};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::fs::OFlags;
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use tern_control::Home;
use tern_ipc::remote::{MAX_DOMAIN, MAX_RCPTS, RcptReport, RemoteDeliver};
use tern_ipc::{CleanOp, CleanReply, CleanRequest, Deliver, FrameBuffer, Hello, Outcome, Report};
use tern_log::Event;
use tern_sched::{Rewriter, next_attempt, scrub_text};
use tern_spool::state::{Channel, Journal, MessageState, RecipientState, Record, State, Status};
use tern_spool::{Queue, Stage};

pub(crate) const PROG: &str = "tern-send";
/// Forced rescan of `queue/new/` even without a wake-up.
const RESCAN_SECS: i64 = 600;
/// Pick-ups per journal commit and cleaner batch.
const PICKUP_BATCH: usize = 500;
/// Journal bytes written before a compaction is considered.
const COMPACT_AFTER: u64 = 8 << 20;
/// Bound on report text kept in the journal and in bounces.
const MAX_REPORT: usize = 1000;

/// Settings read at start (and `locals`/`virtualdomains` again on SIGHUP).
pub struct Config {
    /// Concurrency per channel: local, remote.
    pub concurrency: [usize; 2],
    /// Most remote deliveries at once to one domain (`concurrencydomain`).
    pub per_domain: usize,
    /// `queuelifetime` in seconds.
    pub queuelifetime: i64,
    /// Recipient classification.
    pub rewriter: Rewriter,
    /// Bounce addresses and limits.
    pub bounce: BounceConfig,
}

/// Why the manager stopped.
#[derive(Debug)]
pub enum Exit {
    /// Clean stop (SIGTERM, or `--once` with nothing left to do).
    Done,
    /// Trouble: a lost spawner or cleaner, an unwritable journal.
    Trouble(String),
}

fn ch_index(ch: Channel) -> usize {
    match ch {
        Channel::Local => 0,
        Channel::Remote => 1,
    }
}

fn ch_name(ch: Channel) -> &'static str {
    match ch {
        Channel::Local => "local",
        Channel::Remote => "remote",
    }
}

/// One running delivery: a message and the recipients it carries (one for
/// a local delivery; one or more at one domain for a remote delivery).
#[derive(Debug, Clone)]
struct Slot {
    id: u64,
    indices: Vec<u32>,
    /// Which recipients have their result.
    reported: Vec<bool>,
    /// Remote: the destination domain (for the per-domain count).
    domain: Option<Vec<u8>>,
    dying: bool,
}

impl Slot {
    fn done(&self) -> bool {
        self.reported.iter().all(|&r| r)
    }
}

/// One result from a spawner: which recipient, what happened.
struct Result1 {
    id: u64,
    index: u32,
    dying: bool,
    outcome: Outcome,
    text: Vec<u8>,
}

/// Opens a queue file for a remote delivery or a bounce: never through a
/// link, never blocking on a FIFO, and only a regular file (`cur/` belongs
/// to another uid). Returns the file and its length.
pub(crate) fn open_message_file(path: &std::path::Path) -> std::io::Result<(File, u64)> {
    let fd = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY,
        rustix::fs::Mode::empty(),
    )?;
    let file = File::from(fd);
    let meta = file.metadata()?;
    if !meta.file_type().is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    Ok((file, meta.len()))
}

/// The destination domain of a (rewritten) remote address, lower case.
fn domain_of(address: &[u8]) -> Vec<u8> {
    match memchr::memrchr(b'@', address) {
        Some(at) => address[at + 1..].to_ascii_lowercase(),
        None => address.to_ascii_lowercase(),
    }
}

/// Why a recipient cannot go in a spawner request, as a permanent
/// failure text. The spawners take a frame that breaks a bound for a
/// broken tern-send and stop, which would stop every delivery, again after
/// each restart: an address longer than [`tern_ipc::MAX_ADDRESS`] (possible
/// after `virtualdomains` or `envnoathost` rewriting), a remote address
/// whose domain is empty or longer than [`MAX_DOMAIN`].
fn unsendable(channel: Channel, address: &[u8]) -> Option<&'static str> {
    if address.len() > tern_ipc::MAX_ADDRESS {
        return Some("Sorry, the address is longer than 1000 bytes after rewriting. (#5.1.3)");
    }
    if channel == Channel::Remote {
        let domain = domain_of(address);
        if domain.is_empty() || domain.len() > MAX_DOMAIN {
            return Some(
                "Sorry, the domain of the address is empty or longer than 255 bytes. (#5.1.2)",
            );
        }
    }
    None
}

/// Drops recipients from the end of a remote request (and their indices)
/// until its frame fits in [`tern_ipc::MAX_FRAME`]; the dropped ones go in
/// a later request. One recipient always fits (every field is bounded).
fn fit_frame(req: &mut RemoteDeliver, indices: &mut Vec<u32>) {
    while req.recipients.len() > 1 && req.encode().len() > tern_ipc::MAX_FRAME {
        req.recipients.pop();
        indices.pop();
    }
}

/// Recipients waiting for their time, ordered by due time, with an index
/// so a recipient is in the set at most once.
#[derive(Default)]
struct Ready {
    set: BTreeSet<(i64, u64, u32)>,
    due: HashMap<(u64, u32), i64>,
}

impl Ready {
    fn insert(&mut self, due: i64, id: u64, index: u32) {
        if let Some(old) = self.due.insert((id, index), due) {
            self.set.remove(&(old, id, index));
        }
        self.set.insert((due, id, index));
    }
    fn remove(&mut self, id: u64, index: u32) {
        if let Some(old) = self.due.remove(&(id, index)) {
            self.set.remove(&(old, id, index));
        }
    }
    fn first(&self) -> Option<&(i64, u64, u32)> {
        self.set.first()
    }
    fn pop_first(&mut self) -> Option<(i64, u64, u32)> {
        let e = self.set.pop_first()?;
        self.due.remove(&(e.1, e.2));
        Some(e)
    }
    fn take_all(&mut self) -> Vec<(i64, u64, u32)> {
        self.due.clear();
        std::mem::take(&mut self.set).into_iter().collect()
    }
}

/// One spawner (tern-lspawn or tern-rspawn) seen from the manager.
pub struct Spawner {
    channel: Channel,
    to: File,
    from: File,
    out: Vec<u8>,
    /// Message descriptors still to be sent (remote): each goes with the
    /// first byte of its frame, at that offset in `out`.
    out_fds: VecDeque<(usize, OwnedFd)>,
    inbuf: FrameBuffer,
    slots: Vec<Option<Slot>>,
    free: Vec<u32>,
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
    fn queue_frame(&mut self, payload: &[u8], fd: Option<OwnedFd>) {
        if let Some(fd) = fd {
            self.out_fds.push_back((self.out.len(), fd));
        }
        self.out
            .extend_from_slice(&(payload.len() as u32).to_be_bytes());
        self.out.extend_from_slice(payload);
    }

    fn flush(&mut self) -> Result<(), String> {
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
    fn read_reports(&mut self) -> (Vec<Result1>, Vec<Vec<u8>>, Option<String>) {
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
    fn take_frames(
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
    fn run(&mut self, ops: Vec<CleanOp>) -> Result<Vec<bool>, String> {
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

/// The queue manager.
pub struct Manager {
    home: Home,
    queue: Queue,
    journal: Journal,
    state: State,
    cfg: Config,
    spawners: [Option<Spawner>; 2],
    cleaner: Cleaner,
    ready: [Ready; 2],
    inflight: HashSet<(u64, u32)>,
    /// Remote deliveries running per destination domain.
    domain_busy: HashMap<Vec<u8>, usize>,
    not_taken: BTreeSet<u64>,
    finished: BTreeSet<u64>,
    finish_retry_at: i64,
    damaged_logged: HashSet<u64>,
    once: bool,
    /// `--flush`: every pending recipient is due at start, whatever its
    /// retry schedule (`sendmail -q`).
    flush_at_start: bool,
    stopping: bool,
    /// Set when a spawner or the cleaner was lost: the manager stops as for
    /// SIGTERM (collecting the reports of deliveries still running, so
    /// they are not repeated) and then exits with this reason.
    trouble: Option<String>,
    cleaner_ok: bool,
}

fn fatal(e: impl std::fmt::Display) -> Exit {
    Exit::Trouble(e.to_string())
}

impl Manager {
    /// Sets up from the journal and reconciles it with the files.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        home: Home,
        queue: Queue,
        journal: Journal,
        state: State,
        cfg: Config,
        local: Option<Spawner>,
        remote: Option<Spawner>,
        cleaner: Cleaner,
        once: bool,
    ) -> Result<Manager, Exit> {
        let mut m = Manager {
            home,
            queue,
            journal,
            state,
            cfg,
            spawners: [local, remote],
            cleaner,
            ready: [Ready::default(), Ready::default()],
            inflight: HashSet::new(),
            domain_busy: HashMap::new(),
            not_taken: BTreeSet::new(),
            finished: BTreeSet::new(),
            finish_retry_at: 0,
            damaged_logged: HashSet::new(),
            once,
            flush_at_start: false,
            stopping: false,
            trouble: None,
            cleaner_ok: true,
        };
        let ids: Vec<u64> = m.state.messages.keys().copied().collect();
        for id in ids {
            let in_cur = m.queue.path(id, Stage::Active).exists();
            let in_new = !in_cur && m.queue.path(id, Stage::New).exists();
            let stale = match (in_cur || in_new).then(|| m.queue.open_message(id)) {
                // Removed before its X record was made durable.
                None | Some(Err(tern_spool::Error::NotFound(_))) => true,
                // The id now names a later message (inode numbers are
                // reused): the old one was removed before its X record
                // was durable. The new file is picked up by the scan.
                Some(Ok(open)) => !m.state.messages[&id].is_same_file(&open.header),
                Some(Err(e)) => {
                    Event::new(PROG, "warning")
                        .num("qid", id)
                        .field("reason", e.to_string())
                        .emit();
                    false
                }
            };
            if stale {
                let rec = Record::Removed { id };
                m.journal.append(&rec);
                m.state.apply(&rec);
                continue;
            }
            if in_new {
                m.not_taken.insert(id);
            }
            m.schedule_message(id);
        }
        // Orphans: committed messages in cur/ the journal does not know
        // (its record was lost, or an id was reused while a removal failed).
        // Adopted as new: at worst a repeated delivery, never a lost one.
        for b in 0..m.queue.layout().split {
            let dir = m.queue.dir().join("cur").join(b.to_string());
            let Ok(rd) = std::fs::read_dir(&dir) else {
                continue;
            };
            for ent in rd.flatten() {
                let Some(id) = ent.file_name().to_str().and_then(|s| s.parse::<u64>().ok()) else {
                    continue;
                };
                if !m.state.messages.contains_key(&id) && m.pick_up(id, true) {
                    Event::new(PROG, "adopted").num("qid", id).emit();
                }
            }
        }
        m.journal.commit().map_err(fatal)?;
        let pending: Vec<u64> = m.not_taken.iter().copied().collect();
        m.take_over(pending)?;
        Ok(m)
    }

    fn schedule_message(&mut self, id: u64) {
        let Some(msg) = self.state.messages.get(&id) else {
            return;
        };
        for (i, r) in msg.recipients.iter().enumerate() {
            if r.status == Status::Pending {
                let due = next_attempt(msg.birth, r.last_attempt, r.channel);
                self.ready[ch_index(r.channel)].insert(due, id, i as u32);
            }
        }
        if msg.is_finished() {
            self.finished.insert(id);
        }
    }

    fn take_over(&mut self, ids: Vec<u64>) -> Result<(), Exit> {
        if ids.is_empty() {
            return Ok(());
        }
        if !self.cleaner_ok {
            self.not_taken.extend(ids);
            return Ok(());
        }
        let ops = ids.iter().map(|&id| CleanOp::Accept(id)).collect();
        let ok = match self.cleaner.run(ops) {
            Ok(ok) => ok,
            Err(e) => {
                self.not_taken.extend(ids);
                self.lose_cleaner(e);
                return Ok(());
            }
        };
        for (id, ok) in ids.into_iter().zip(ok) {
            if ok {
                self.not_taken.remove(&id);
            } else {
                self.not_taken.insert(id);
                Event::new(PROG, "warning")
                    .num("qid", id)
                    .field("reason", "cannot move message to cur/; will retry")
                    .emit();
            }
        }
        Ok(())
    }

    /// Picks up every committed message in `new/` not yet known.
    fn scan_new(&mut self) -> Result<(), Exit> {
        let mut batch = Vec::new();
        let split = self.queue.layout().split;
        for b in 0..split {
            let dir = self.queue.dir().join("new").join(b.to_string());
            let rd = match std::fs::read_dir(&dir) {
                Ok(rd) => rd,
                Err(e) => {
                    Event::new(PROG, "warning")
                        .field("reason", format!("cannot read {}: {e}", dir.display()))
                        .emit();
                    continue;
                }
            };
            for ent in rd.flatten() {
                let Some(id) = ent.file_name().to_str().and_then(|s| s.parse::<u64>().ok()) else {
                    continue;
                };
                let stale = match self.state.messages.get(&id) {
                    None => None,
                    Some(known) => Some(match self.queue.open_message(id) {
                        Ok(open) => !known.is_same_file(&open.header),
                        Err(_) => false,
                    }),
                };
                match stale {
                    // Known, still in new/: its move to cur/ is (re)done.
                    Some(false) => {
                        self.not_taken.insert(id);
                        batch.push(id);
                    }
                    // The id now names a later message: the old one is gone.
                    Some(true) => {
                        self.forget(id);
                        if self.pick_up(id, false) {
                            batch.push(id);
                        }
                    }
                    None => {
                        if self.pick_up(id, false) {
                            batch.push(id);
                        }
                    }
                }
                if batch.len() >= PICKUP_BATCH {
                    self.journal.commit().map_err(fatal)?;
                    self.take_over(std::mem::take(&mut batch))?;
                }
            }
        }
        self.journal.commit().map_err(fatal)?;
        self.take_over(batch)
    }

    /// Drops a journal entry whose message is gone.
    fn forget(&mut self, id: u64) {
        let rec = Record::Removed { id };
        self.journal.append(&rec);
        self.state.apply(&rec);
        self.finished.remove(&id);
        self.not_taken.remove(&id);
    }

    /// Records one new message in the journal (not yet flushed). `taken`:
    /// the file is already in `cur/` (an orphan adopted at start).
    fn pick_up(&mut self, id: u64, taken: bool) -> bool {
        let open = match self.queue.open_message(id) {
            Ok(m) => m,
            Err(tern_spool::Error::NotFound(_)) => return false,
            Err(e) => {
                if self.damaged_logged.insert(id) {
                    Event::new(PROG, "warning")
                        .num("qid", id)
                        .field("reason", e.to_string())
                        .emit();
                }
                return false;
            }
        };
        let env = &open.header.envelope;
        let recipients = env
            .recipients
            .iter()
            .map(|orig| {
                let (channel, address) = self.cfg.rewriter.classify(orig);
                RecipientState {
                    channel,
                    original: orig.clone(),
                    address,
                    status: Status::Pending,
                    last_attempt: None,
                    last_error: Vec::new(),
                }
            })
            .collect::<Vec<_>>();
        let msg = MessageState {
            birth: open.header.origin.time,
            qpid: open.header.origin.pid,
            offset: open.header.offset,
            sender: env.sender.clone(),
            recipients,
            bounced: false,
        };
        Event::new(PROG, "new")
            .num("qid", id)
            .num("size", open.file_size - open.header.offset)
            .field("sender", &msg.sender)
            .num("rcpts", msg.recipients.len())
            .num("uid", open.header.origin.uid)
            .emit();
        let rec = Record::Accept { id, message: msg };
        self.journal.append(&rec);
        self.state.apply(&rec);
        if !taken {
            self.not_taken.insert(id);
        }
        self.schedule_message(id);
        true
    }

    fn start_deliveries(&mut self, now: i64) {
        if self.stopping {
            return;
        }
        self.start_local(now);
        self.start_remote(now);
    }

    /// Checks a ready entry: `Some(true)` = deliverable now; `Some(false)`
    /// = not yet in `cur/` (tried again shortly); `None` = obsolete.
    fn deliverable(&self, id: u64, index: u32) -> Option<bool> {
        let msg = self.state.messages.get(&id)?;
        let r = msg.recipients.get(index as usize)?;
        if r.status != Status::Pending || self.inflight.contains(&(id, index)) {
            return None;
        }
        Some(!self.not_taken.contains(&id))
    }

    /// The next recipient of channel `ci` that is due and deliverable,
    /// taken out of the ready set; `None` when nothing (more) can start now
    /// (no free slot, nothing due).
    fn next_ready(&mut self, ci: usize, now: i64) -> Option<(i64, u64, u32)> {
        loop {
            if self.spawners[ci].as_ref()?.free.is_empty() {
                return None;
            }
            let &(due, id, index) = self.ready[ci].first()?;
            if due > now {
                return None;
            }
            self.ready[ci].pop_first();
            match self.deliverable(id, index) {
                None => {}
                // Not in cur/ yet: try again shortly.
                Some(false) => self.ready[ci].insert(now + 5, id, index),
                Some(true) => return Some((due, id, index)),
            }
        }
    }

    fn start_local(&mut self, now: i64) {
        let ci = ch_index(Channel::Local);
        while let Some((_, id, index)) = self.next_ready(ci, now) {
            if self.refuse_unsendable(id, index, now) {
                continue;
            }
            let msg = &self.state.messages[&id];
            let r = &msg.recipients[index as usize];
            let sp = self.spawners[ci].as_mut().expect("checked above");
            let slot_no = sp.free.pop().expect("checked non-empty");
            let dying = now - msg.birth > self.cfg.queuelifetime;
            sp.slots[slot_no as usize] = Some(Slot {
                id,
                indices: vec![index],
                reported: vec![false],
                domain: None,
                dying,
            });
            let req = Deliver {
                slot: slot_no,
                id,
                offset: msg.offset,
                // qmail's VERP: `prefix-@host-@[]` becomes
                // `prefix-local=domain@host` for this recipient.
                sender: tern_msg::verp::sender_for(&msg.sender, &r.address),
                recipient: r.address.clone(),
            };
            sp.queue_frame(&req.encode(), None);
            self.inflight.insert((id, index));
            Event::new(PROG, "delivery_start")
                .num("qid", id)
                .field("channel", "local")
                .field("rcpt", &r.address)
                .num("slot", slot_no)
                .emit();
        }
    }

    /// Fails recipient `index` of `id` at once when it cannot be put in a
    /// request ([`unsendable`]). True when it was.
    fn refuse_unsendable(&mut self, id: u64, index: u32, now: i64) -> bool {
        let msg = &self.state.messages[&id];
        let r = &msg.recipients[index as usize];
        // A VERP sender grows by the recipient: past the spawners' bound
        // the request could not be sent (they would take tern-send for
        // broken), so that recipient fails here.
        let verp_too_long =
            tern_msg::verp::sender_for(&msg.sender, &r.address).len() > tern_ipc::MAX_ADDRESS;
        let Some(text) = unsendable(r.channel, &r.address).or(verp_too_long.then_some(
            "Sorry, the VERP sender expanded for this address is longer than 1000 bytes. (#5.1.7)",
        )) else {
            return false;
        };
        let res = Result1 {
            id,
            index,
            dying: false,
            outcome: Outcome::Failed,
            text: text.as_bytes().to_vec(),
        };
        self.apply_result(res, now);
        true
    }

    /// Starts remote deliveries: each takes every pending recipient of the
    /// message at the same domain (one SMTP transaction), within
    /// `concurrencyremote` in all and `concurrencydomain` per domain. A
    /// recipient whose domain is at its limit waits without holding up
    /// other domains.
    fn start_remote(&mut self, now: i64) {
        let ci = ch_index(Channel::Remote);
        let mut held: Vec<(i64, u64, u32)> = Vec::new();
        while let Some((due, id, index)) = self.next_ready(ci, now) {
            if self.refuse_unsendable(id, index, now) {
                continue;
            }
            let msg = &self.state.messages[&id];
            let domain = domain_of(&msg.recipients[index as usize].address);
            if self.domain_busy.get(&domain).copied().unwrap_or(0) >= self.cfg.per_domain {
                held.push((due, id, index));
                continue;
            }
            // The batch: this recipient and the message's other pending
            // remote recipients at the same domain; alone when the sender
            // is VERP (each recipient has its own envelope sender, so its
            // own transaction).
            let verp = tern_msg::verp::is_verp(&msg.sender);
            let mut indices = vec![index];
            for (j, r) in msg.recipients.iter().enumerate() {
                if verp {
                    break;
                }
                let j = j as u32;
                if indices.len() >= MAX_RCPTS {
                    break;
                }
                if j != index
                    && r.channel == Channel::Remote
                    && r.status == Status::Pending
                    && !self.inflight.contains(&(id, j))
                    && domain_of(&r.address) == domain
                {
                    indices.push(j);
                }
            }
            let path = self.queue.path(id, Stage::Active);
            let file = match open_message_file(&path) {
                Ok(f) => f,
                Err(e) => {
                    Event::new(PROG, "warning")
                        .num("qid", id)
                        .field(
                            "reason",
                            format!("cannot open {}: {e}; will retry", path.display()),
                        )
                        .emit();
                    held.push((now + 60, id, index));
                    continue;
                }
            };
            let (file, len) = file;
            let dying = now - msg.birth > self.cfg.queuelifetime;
            let mut req = RemoteDeliver {
                slot: 0,
                id,
                offset: msg.offset,
                size: len.saturating_sub(msg.offset),
                sender: tern_msg::verp::sender_for(
                    &msg.sender,
                    &msg.recipients[index as usize].address,
                ),
                domain: domain.clone(),
                recipients: indices
                    .iter()
                    .map(|&j| msg.recipients[j as usize].address.clone())
                    .collect(),
            };
            fit_frame(&mut req, &mut indices);
            for &j in &indices {
                self.ready[ci].remove(id, j);
                self.inflight.insert((id, j));
            }
            *self.domain_busy.entry(domain.clone()).or_insert(0) += 1;
            let sp = self.spawners[ci].as_mut().expect("checked above");
            let slot_no = sp.free.pop().expect("checked non-empty");
            let req = RemoteDeliver {
                slot: slot_no,
                ..req
            };
            sp.slots[slot_no as usize] = Some(Slot {
                id,
                reported: vec![false; indices.len()],
                indices,
                domain: Some(domain),
                dying,
            });
            sp.queue_frame(&req.encode(), Some(OwnedFd::from(file)));
            Event::new(PROG, "delivery_start")
                .num("qid", id)
                .field("channel", "remote")
                .field("domain", &req.domain)
                .num("rcpts", req.recipients.len())
                .num("slot", slot_no)
                .emit();
        }
        for (due, id, index) in held {
            self.ready[ci].insert(due, id, index);
        }
    }

    fn apply_result(&mut self, res: Result1, now: i64) {
        let Result1 {
            id,
            index,
            dying,
            outcome,
            text,
        } = res;
        self.inflight.remove(&(id, index));
        let Some(msg) = self.state.messages.get(&id) else {
            return;
        };
        let Some(r) = msg.recipients.get(index as usize) else {
            return;
        };
        let (channel, birth, rcpt) = (r.channel, msg.birth, r.address.clone());
        let text = scrub_text(&text, MAX_REPORT);
        let (rec, status) = match outcome {
            Outcome::Delivered => (Record::Delivered { id, index }, "delivered"),
            Outcome::Failed => (
                Record::Failed {
                    id,
                    index,
                    text: text.clone().into_bytes(),
                },
                "failed",
            ),
            Outcome::Deferred if dying => (
                Record::Failed {
                    id,
                    index,
                    text: format!(
                        "Giving up: the message has been in the queue longer than queuelifetime ({} seconds). Last temporary error: {text}",
                        self.cfg.queuelifetime
                    )
                    .into_bytes(),
                },
                "expired",
            ),
            Outcome::Deferred => (
                Record::Deferred {
                    id,
                    index,
                    time: now,
                    text: text.clone().into_bytes(),
                },
                "deferred",
            ),
        };
        if let Record::Deferred { .. } = rec {
            let due = next_attempt(birth, Some(now), channel);
            self.ready[ch_index(channel)].insert(due, id, index);
        }
        Event::new(PROG, "delivery_end")
            .num("qid", id)
            .field("channel", ch_name(channel))
            .field("rcpt", &rcpt)
            .field("status", status)
            .field("text", &text)
            .emit();
        self.journal.append(&rec);
        self.state.apply(&rec);
        if self
            .state
            .messages
            .get(&id)
            .is_some_and(MessageState::is_finished)
        {
            self.finished.insert(id);
        }
    }

    /// Bounces and removes finished messages. Every `K`/`D` record is made
    /// durable before any removal is asked for.
    fn finish(&mut self, now: i64) -> Result<bool, Exit> {
        if self.finished.is_empty() || now < self.finish_retry_at {
            return Ok(false);
        }
        self.journal.commit().map_err(fatal)?;
        let mut removable = Vec::new();
        let mut injected = false;
        let ids: Vec<u64> = self.finished.iter().copied().collect();
        for id in ids {
            let Some(msg) = self.state.messages.get(&id) else {
                self.finished.remove(&id);
                continue;
            };
            if !msg.is_finished()
                || msg
                    .recipients
                    .iter()
                    .enumerate()
                    .any(|(i, _)| self.inflight.contains(&(id, i as u32)))
            {
                self.finished.remove(&id);
                continue;
            }
            if msg.has_failures() && !msg.bounced {
                let path = if self.not_taken.contains(&id) {
                    self.queue.path(id, Stage::New)
                } else {
                    self.queue.path(id, Stage::Active)
                };
                match bounce::send(&self.home, &self.cfg.bounce, id, msg, &path) {
                    Ok(outcome) => {
                        injected |= outcome.injected;
                        let rec = Record::Bounced { id };
                        self.journal.append(&rec);
                        self.state.apply(&rec);
                    }
                    Err(e) => {
                        Event::new(PROG, "warning")
                            .num("qid", id)
                            .field("reason", format!("cannot queue bounce: {e}; will retry"))
                            .emit();
                        self.finish_retry_at = now + 60;
                        continue;
                    }
                }
            }
            removable.push(id);
        }
        self.journal.commit().map_err(fatal)?;
        if !removable.is_empty() && self.cleaner_ok {
            removable.retain(|id| self.state.messages.contains_key(id));
            let ops = removable
                .iter()
                .map(|&id| {
                    let m = &self.state.messages[&id];
                    CleanOp::Remove {
                        id,
                        birth: m.birth,
                        qpid: m.qpid,
                    }
                })
                .collect();
            let ok = match self.cleaner.run(ops) {
                Ok(ok) => ok,
                Err(e) => {
                    self.lose_cleaner(e);
                    return Ok(injected);
                }
            };
            for (id, ok) in removable.into_iter().zip(ok) {
                if ok {
                    let rec = Record::Removed { id };
                    self.journal.append(&rec);
                    self.state.apply(&rec);
                    self.finished.remove(&id);
                    self.not_taken.remove(&id);
                    Event::new(PROG, "end").num("qid", id).emit();
                } else {
                    self.finish_retry_at = now + 60;
                }
            }
        }
        Ok(injected)
    }

    /// A spawner is gone: its running deliveries' results are lost (they
    /// will be repeated after the restart); stop like SIGTERM.
    fn lose_spawner(&mut self, ci: usize, reason: String) {
        if let Some(sp) = self.spawners[ci].take() {
            for slot in sp.slots.into_iter().flatten() {
                for index in slot.indices {
                    self.inflight.remove(&(slot.id, index));
                }
                if let Some(d) = slot.domain {
                    self.domain_busy.remove(&d);
                }
            }
        }
        Event::new(PROG, "alert")
            .field(
                "reason",
                format!("{reason}; stopping after running deliveries"),
            )
            .emit();
        self.trouble.get_or_insert(reason);
        self.stopping = true;
    }

    /// The cleaner is gone: nothing more is moved or removed; stop like
    /// SIGTERM.
    fn lose_cleaner(&mut self, reason: String) {
        Event::new(PROG, "alert")
            .field(
                "reason",
                format!("{reason}; stopping after running deliveries"),
            )
            .emit();
        self.cleaner_ok = false;
        self.trouble.get_or_insert(reason);
        self.stopping = true;
    }

    fn flush_all(&mut self, now: i64) {
        for ci in 0..2 {
            for (_, id, index) in self.ready[ci].take_all() {
                self.ready[ci].insert(now, id, index);
            }
        }
        self.finish_retry_at = 0;
    }

    fn next_wake(&self, now: i64, last_scan: i64) -> i64 {
        let mut t = last_scan + RESCAN_SECS;
        for ci in 0..2 {
            if self.spawners[ci].is_some()
                && let Some(&(due, _, _)) = self.ready[ci].first()
            {
                t = t.min(due);
            }
        }
        if !self.finished.is_empty() {
            t = t.min(self.finish_retry_at.max(now));
        }
        t
    }

    fn idle(&self, now: i64) -> bool {
        self.inflight.is_empty()
            && self.not_taken.is_empty()
            && (self.finished.is_empty() || self.finish_retry_at > now)
            && (0..2).all(|ci| {
                self.spawners[ci].is_none()
                    || self.ready[ci].first().is_none_or(|&(due, _, _)| due > now)
            })
    }

    fn status_line(&self) {
        let busy = |ci: usize| {
            self.spawners[ci]
                .as_ref()
                .map(|s| (s.slots.len() - s.free.len(), s.slots.len()))
                .unwrap_or((0, 0))
        };
        let (l, lmax) = busy(0);
        let (r, rmax) = busy(1);
        Event::new(PROG, "status")
            .field("local", format!("{l}/{lmax}"))
            .field("remote", format!("{r}/{rmax}"))
            .num("messages", self.state.messages.len())
            .emit();
    }

    /// Makes every pending recipient due when [`Manager::run`] starts
    /// (`tern-send --flush`), instead of at its scheduled retry.
    pub fn flush_at_start(mut self) -> Manager {
        self.flush_at_start = true;
        self
    }

    /// Runs until SIGTERM (or, with `--once`, until nothing is due).
    pub fn run(mut self, trigger: Option<File>, reload: impl Fn() -> Option<Rewriter>) -> Exit {
        let mask = signal_set();
        if let Err(e) = block_signals() {
            return fatal(e);
        }
        let sigfd =
            match SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC) {
                Ok(s) => s,
                Err(e) => return fatal(format!("signalfd: {e}")),
            };
        let mut last_scan = tern_date::now();
        if let Err(e) = self.scan_new() {
            return e;
        }
        if self.flush_at_start {
            Event::new(PROG, "flush").emit();
            self.flush_all(tern_date::now());
        }
        self.status_line();
        loop {
            let now = tern_date::now();
            match self.finish(now) {
                Ok(true) if !self.stopping => {
                    // A bounce was queued: pick it up now (its wake-up may
                    // come after we decide to sleep).
                    if let Err(e) = self.scan_new() {
                        return e;
                    }
                }
                Ok(true) => {}
                Ok(false) => {}
                Err(e) => return e,
            }
            self.start_deliveries(now);
            for ci in 0..2 {
                if let Some(Err(e)) = self.spawners[ci].as_mut().map(Spawner::flush) {
                    self.lose_spawner(ci, e);
                }
            }
            if self.stopping && self.inflight.is_empty() {
                break;
            }
            // A fresh clock: a message picked up in this round (a bounce
            // queued a moment ago) is due at its birth, which can be a
            // second later than `now`; with the round's `now` it looked
            // not yet due and `--once` left it behind (seen under load).
            if self.once && self.idle(tern_date::now()) {
                break;
            }
            let wake = self.next_wake(now, last_scan);
            let secs = (wake - now).clamp(0, 3600);
            let ts = Timespec {
                tv_sec: secs,
                tv_nsec: if secs == 0 { 50_000_000 } else { 0 },
            };
            let mut fds: Vec<PollFd<'_>> = Vec::with_capacity(6);
            fds.push(PollFd::new(&sigfd, PollFlags::IN));
            let trig_at = trigger.as_ref().map(|t| {
                fds.push(PollFd::new(t, PollFlags::IN));
                fds.len() - 1
            });
            let mut sp_at = [None, None];
            for (ci, sp) in self.spawners.iter().enumerate() {
                if let Some(sp) = sp {
                    let mut flags = PollFlags::IN;
                    fds.push(PollFd::new(&sp.from, flags));
                    sp_at[ci] = Some(fds.len() - 1);
                    if !sp.out.is_empty() {
                        flags = PollFlags::OUT;
                        fds.push(PollFd::new(&sp.to, flags));
                    }
                }
            }
            match rustix::event::poll(&mut fds, Some(&ts)) {
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return fatal(format!("poll: {e}")),
            }
            let sig_ready = !fds[0].revents().is_empty();
            let trig_ready = trig_at.is_some_and(|i| !fds[i].revents().is_empty());
            let sp_ready: Vec<bool> = sp_at
                .iter()
                .map(|a| a.is_some_and(|i| !fds[i].revents().is_empty()))
                .collect();
            drop(fds);

            if sig_ready {
                while let Ok(Some(info)) = sigfd.read_signal() {
                    match Signal::try_from(info.ssi_signo as i32) {
                        Ok(Signal::SIGTERM) | Ok(Signal::SIGINT) => {
                            if !self.stopping {
                                Event::new(PROG, "stopping")
                                    .num("running", self.inflight.len())
                                    .emit();
                            }
                            self.stopping = true;
                        }
                        Ok(Signal::SIGALRM) => {
                            Event::new(PROG, "flush").emit();
                            self.flush_all(tern_date::now());
                            last_scan = 0;
                        }
                        Ok(Signal::SIGHUP) => match reload() {
                            Some(r) => {
                                self.cfg.rewriter = r;
                                Event::new(PROG, "reload").emit();
                            }
                            None => Event::new(PROG, "warning")
                                .field(
                                    "reason",
                                    "reload failed; keeping the old locals/virtualdomains",
                                )
                                .emit(),
                        },
                        _ => {}
                    }
                }
            }
            if let (true, Some(t)) = (trig_ready, trigger.as_ref()) {
                let mut buf = [0u8; 512];
                let mut t = t;
                while matches!(t.read(&mut buf), Ok(n) if n > 0) {}
                last_scan = 0;
            }
            let now = tern_date::now();
            for (ci, ready) in sp_ready.iter().enumerate() {
                if !ready {
                    continue;
                }
                let Some((reports, freed, lost)) =
                    self.spawners[ci].as_mut().map(Spawner::read_reports)
                else {
                    continue;
                };
                for res in reports {
                    self.apply_result(res, now);
                }
                for d in freed {
                    if let Some(n) = self.domain_busy.get_mut(&d) {
                        *n -= 1;
                        if *n == 0 {
                            self.domain_busy.remove(&d);
                        }
                    }
                }
                if let Some(e) = lost {
                    self.lose_spawner(ci, e);
                }
            }
            // One flush for every result that arrived in this round.
            if let Err(e) = self.journal.commit() {
                return fatal(e);
            }
            if self.journal.written_since_compaction > COMPACT_AFTER
                && let Err(e) = self.journal.compact(&self.state)
            {
                Event::new(PROG, "warning")
                    .field("reason", format!("journal compaction failed: {e}"))
                    .emit();
            }
            if now >= last_scan + RESCAN_SECS && !self.stopping {
                last_scan = now;
                if let Err(e) = self.scan_new() {
                    return e;
                }
            }
        }
        if let Err(e) = self.journal.commit() {
            return fatal(e);
        }
        self.status_line();
        if let Some(reason) = self.trouble.take() {
            return Exit::Trouble(reason);
        }
        Event::new(PROG, "exiting").emit();
        Exit::Done
    }
}

/// The signals the manager takes through its signalfd (TERM, INT: stop;
/// ALRM: flush; HUP: reload).
fn signal_set() -> SigSet {
    let mut mask = SigSet::empty();
    for s in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGALRM,
        Signal::SIGHUP,
    ] {
        mask.add(s);
    }
    mask
}

/// Blocks the manager's signals. Called first thing in `main`, before the
/// pid file names this process: `ternctl flush` (SIGALRM) or SIGHUP arriving
/// while the journal is replayed would otherwise kill it (their default
/// action); blocked, they wait for the event loop.
pub fn block_signals() -> Result<(), String> {
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&signal_set()), None)
        .map_err(|e| format!("sigprocmask: {e}"))
}

/// Opens the trigger FIFO for reading without ever seeing end-of-file
/// (`O_RDWR` keeps a writer open: ourselves).
pub fn open_trigger(queue: &Queue) -> Option<File> {
    let path = queue.dir().join(tern_spool::layout::TRIGGER);
    let fd = rustix::fs::open(
        &path,
        OFlags::RDWR | OFlags::NONBLOCK | OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .ok()?;
    let st = rustix::fs::fstat(&fd).ok()?;
    (rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Fifo)
        .then(|| File::from(fd))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recipient_is_ready_once() {
        let mut r = Ready::default();
        r.insert(50, 1, 0);
        r.insert(10, 1, 0); // rescheduled: replaces the first entry
        r.insert(20, 2, 3);
        assert_eq!(r.set.len(), 2);
        assert_eq!(r.pop_first(), Some((10, 1, 0)));
        r.remove(2, 3);
        assert!(r.first().is_none());
        assert!(r.due.is_empty());
        r.insert(5, 7, 1);
        assert_eq!(r.take_all(), vec![(5, 7, 1)]);
        assert!(r.due.is_empty() && r.set.is_empty());
    }

    #[test]
    fn domain_is_after_the_last_at_and_lower_case() {
        assert_eq!(domain_of(b"a@B.Example"), b"b.example");
        assert_eq!(domain_of(b"\"x@y\"@Host.Test"), b"host.test");
        assert_eq!(domain_of(b"nodomain"), b"nodomain");
    }

    #[test]
    fn remote_requests_carry_their_descriptors_in_order() {
        use std::io::{Seek, Write as _};
        let (ours, theirs) = tern_ipc::remote::socket_pair().unwrap();
        let from = File::from(ours.try_clone().unwrap());
        let mut sp = Spawner {
            channel: Channel::Remote,
            to: File::from(ours),
            from,
            out: Vec::new(),
            out_fds: VecDeque::new(),
            inbuf: FrameBuffer::default(),
            slots: vec![None; 4],
            free: vec![3, 2, 1, 0],
        };
        for i in 0..4u32 {
            let mut f = tempfile();
            write!(f, "message {i}").unwrap();
            f.rewind().unwrap();
            let req = RemoteDeliver {
                slot: i,
                id: u64::from(i),
                offset: 0,
                size: 9,
                sender: vec![],
                domain: b"d.example".to_vec(),
                recipients: vec![b"x@d.example".to_vec()],
            };
            sp.queue_frame(&req.encode(), Some(OwnedFd::from(f)));
        }
        sp.flush().unwrap();
        assert!(sp.out.is_empty() && sp.out_fds.is_empty());
        drop(sp);
        let mut inbox = tern_ipc::remote::Inbox::default();
        let mut seen = 0;
        while inbox.fill(theirs.as_fd()).unwrap() {
            while let Some(f) = inbox.next_frame().unwrap() {
                let tern_ipc::remote::Frame::Deliver(req, fd) = f else {
                    panic!("unexpected frame");
                };
                let mut text = String::new();
                File::from(fd).read_to_string(&mut text).unwrap();
                assert_eq!(text, format!("message {}", req.slot));
                assert_eq!(req.slot, seen);
                seen += 1;
            }
        }
        assert_eq!(seen, 4);
    }

    /// A spawner that writes its last reports and exits: the reports read
    /// together with the end of file are returned (and applied) before the
    /// spawner counts as lost, so delivered recipients are not repeated.
    #[test]
    fn reports_before_end_of_file_are_kept() {
        let (ours, theirs) = tern_ipc::remote::socket_pair().unwrap();
        let mut sp = Spawner {
            channel: Channel::Remote,
            to: File::from(ours.try_clone().unwrap()),
            from: File::from(ours),
            out: Vec::new(),
            out_fds: VecDeque::new(),
            inbuf: FrameBuffer::default(),
            slots: vec![None; 2],
            free: vec![1],
        };
        sp.slots[0] = Some(Slot {
            id: 7,
            indices: vec![3, 5],
            reported: vec![false; 2],
            domain: Some(b"d.example".to_vec()),
            dying: false,
        });
        let mut theirs = File::from(theirs);
        for rcpt in [1u32, 0] {
            let r = RcptReport {
                slot: 0,
                rcpt,
                outcome: Outcome::Delivered,
                text: b"ok".to_vec(),
            };
            tern_ipc::write_frame(&mut theirs, &r.encode()).unwrap();
        }
        drop(theirs);
        let (out, freed, lost) = sp.read_reports();
        let got: Vec<(u64, u32)> = out.iter().map(|r| (r.id, r.index)).collect();
        assert_eq!(got, [(7, 5), (7, 3)]);
        assert_eq!(freed, [b"d.example".to_vec()]);
        assert_eq!(lost.as_deref(), Some("lost the remote spawner"));
        assert!(sp.slots[0].is_none());
    }

    fn tempfile() -> File {
        let path = std::env::temp_dir().join(format!(
            "tern-send-test-{}-{:?}",
            std::process::id(),
            std::time::SystemTime::now()
        ));
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .unwrap();
        std::fs::remove_file(&path).unwrap();
        f
    }

    #[test]
    fn recipients_no_spawner_would_accept_fail_at_once() {
        let long_local = [vec![b'u'; 991], b"@a.example".to_vec()].concat();
        let long_domain = [b"u@".to_vec(), vec![b'd'; 256]].concat();
        let cases: &[(Channel, &[u8], bool)] = &[
            (Channel::Local, b"u@a.example", true),
            (Channel::Remote, b"u@a.example", true),
            (Channel::Local, &long_local[..1000], true),
            (Channel::Local, &long_local, false),
            (Channel::Remote, &long_local, false),
            (Channel::Remote, b"u@", false),
            (Channel::Remote, b"u", true),
            (Channel::Remote, &long_domain, false),
            (Channel::Remote, &long_domain[..257], true),
            // a local address needs no domain of any size here
            (Channel::Local, b"u@", true),
        ];
        for (ch, addr, ok) in cases {
            assert_eq!(unsendable(*ch, addr).is_none(), *ok, "{:?}", addr.len());
        }
    }

    #[test]
    fn a_remote_request_is_cut_to_fit_one_frame() {
        let addr = |i: usize| {
            let mut a = format!("{i:03}").into_bytes();
            a.resize(990, b'x');
            a.extend_from_slice(b"@c.example");
            a
        };
        let mut req = RemoteDeliver {
            slot: 1,
            id: 2,
            offset: 3,
            size: 4,
            sender: vec![b's'; 1000],
            domain: b"c.example".to_vec(),
            recipients: (0..MAX_RCPTS).map(addr).collect(),
        };
        assert!(req.encode().len() > tern_ipc::MAX_FRAME, "the case is real");
        let mut indices: Vec<u32> = (0..MAX_RCPTS as u32).collect();
        fit_frame(&mut req, &mut indices);
        let n = req.recipients.len();
        assert!(n > 1 && n < MAX_RCPTS, "{n}");
        assert_eq!(indices, (0..n as u32).collect::<Vec<_>>());
        assert_eq!(req.recipients[n - 1], addr(n - 1), "kept in order");
        assert!(req.encode().len() <= tern_ipc::MAX_FRAME);
        assert_eq!(RemoteDeliver::decode(&req.encode()).unwrap(), req);
        // a request that fits is left alone
        let before = req.clone();
        fit_frame(&mut req, &mut indices);
        assert_eq!(req, before);
    }

    #[test]
    fn message_files_are_regular_files_opened_without_blocking() {
        let dir = std::env::temp_dir().join(format!("tern-send-open-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("fifo");
        let _ = std::fs::remove_file(&fifo);
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        // would block for ever without O_NONBLOCK; refused as not a file
        assert!(open_message_file(&fifo).is_err());
        let file = dir.join("msg");
        std::fs::write(&file, b"12345").unwrap();
        assert_eq!(open_message_file(&file).unwrap().1, 5);
        let link = dir.join("link");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&file, &link).unwrap();
        assert!(open_message_file(&link).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
