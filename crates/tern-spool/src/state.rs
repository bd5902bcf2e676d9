//! The queue manager's durable state: an append-only **journal** of
//! per-recipient events, replayed at start.
//!
//! `tern-send` owns `queue/state/journal`. Each record is framed and
//! checksummed:
//!
//! ```text
//! u32 BE payload length | payload | u32 BE CRC-32 (IEEE) of the payload
//! ```
//!
//! Payload types (first byte):
//!
//! | type | fields | meaning |
//! |---|---|---|
//! | `A` | id, birth, tern-queue pid, offset, sender, n × (channel, original address, delivery address) | message taken over by the manager |
//! | `K` | id, recipient index | delivered |
//! | `D` | id, recipient index, text | failed permanently (text for the bounce) |
//! | `T` | id, recipient index, time | attempted at `time`, deferred |
//! | `E` | id, recipient index, time, text | the same, with the temporary error's text (for listings) |
//! | `B` | id | bounce for this message queued (or deliberately dropped) |
//! | `X` | id | message removed from the queue; forget it |
//! | `H` | id | held by the postmaster: no new delivery is started |
//! | `U` | id | released: deliveries resume |
//! | `Y` | id, kind (`d` delete, `b` bounce), text | the postmaster ended it: every pending recipient failed with `text`; `d` also marks the bounce as dealt with (none is sent) |
//!
//! `H`, `U` and `Y` are the operator's requests (`ternctl hold`, `release`,
//! `delete`, `bounce`). Each is one record, so a crash leaves the whole
//! operation or none of it, and each is idempotent: replaying it twice
//! gives the state it gave once.
//!
//! Why a journal: the manager sees many messages at once, so one `fsync`
//! (a *group commit*) makes a whole batch of pick-ups or results durable,
//! instead of one or more flushes per message. Records are appended to a
//! buffer and written and flushed together by [`Journal::commit`].
//!
//! Crash safety: a record is trusted only if its length and checksum are
//! right. Replay stops at the first bad record and the file is truncated
//! there (a torn tail from a crash during `write`). Losing the unflushed tail
//! loses only facts that are re-learned: a pick-up is redone (the message is
//! still in `new/`), a delivery whose `K` was lost is repeated (at least
//! once, never lost), a deferral's time is forgotten (retried sooner).
//! The manager flushes a recipient's `K`/`D` before it asks for the
//! message's removal, so a removed message is never needed again.
//!
//! Compaction: when the journal grows large relative to the live state, the
//! state is written as a fresh journal (`journal.new`, fsync, rename, fsync
//! of `state/`).

use crate::Error;
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Largest record accepted on replay. It must exceed the largest record
/// the manager can write, or replay would stop at that record and cut off
/// every later one: an `A` record holds each recipient twice (as given, up
/// to [`crate::MAX_ENVELOPE`] bytes in all, and as rewritten by
/// `virtualdomains`, which may add a prefix of up to a control line, 4 KiB,
/// to each of [`crate::MAX_RECIPIENTS`]), about 50 MiB at worst.
pub const MAX_RECORD: usize = 64 << 20;
/// Journal file name below `queue/state/`.
pub const JOURNAL: &str = "journal";

/// Which delivery channel a recipient belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    /// Delivered on this host (tern-lspawn).
    Local,
    /// Delivered to another host (tern-rspawn).
    Remote,
}

impl Channel {
    fn letter(self) -> u8 {
        match self {
            Channel::Local => b'L',
            Channel::Remote => b'R',
        }
    }
}

/// A recipient's state as the manager knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Not done yet.
    Pending,
    /// Delivered.
    Delivered,
    /// Failed permanently, with the report text.
    Failed(Vec<u8>),
}

/// One recipient of a message the manager has taken over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientState {
    /// Local or remote.
    pub channel: Channel,
    /// The address as the sender gave it (for bounces and listings).
    pub original: Vec<u8>,
    /// The address as delivered (after `virtualdomains` rewriting).
    pub address: Vec<u8>,
    /// Done or not.
    pub status: Status,
    /// When it was last tried and deferred, if ever.
    pub last_attempt: Option<i64>,
    /// The text of the last temporary failure (empty: none recorded).
    pub last_error: Vec<u8>,
    /// How many times it was tried and deferred.
    pub attempts: u32,
}

/// A message the manager has taken over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageState {
    /// Acceptance time (seconds since the epoch).
    pub birth: i64,
    /// Pid of the `tern-queue` that wrote it. With `birth` it tells this
    /// message from a later one that reuses its id (inode numbers are reused
    /// as soon as a file is removed).
    pub qpid: u32,
    /// Where the message starts in its queue file.
    pub offset: u64,
    /// Envelope sender.
    pub sender: Vec<u8>,
    /// Recipients, in envelope order.
    pub recipients: Vec<RecipientState>,
    /// True once the bounce for its failed recipients has been dealt with.
    pub bounced: bool,
    /// Held by the postmaster (`H`): no new delivery starts.
    pub held: bool,
    /// Deleted by the postmaster (`Y` with kind delete): removed without a
    /// bounce.
    pub deleted: bool,
}

impl MessageState {
    /// True when `header` (read from the queue file named by this
    /// message's id) describes this message and not a later one that reused
    /// the id.
    pub fn is_same_file(&self, header: &crate::qfile::Header) -> bool {
        self.birth == header.origin.time
            && self.qpid == header.origin.pid
            && self.offset == header.offset
            && self.sender == header.envelope.sender
    }

    /// True when no recipient is pending.
    pub fn is_finished(&self) -> bool {
        self.recipients.iter().all(|r| r.status != Status::Pending)
    }

    /// True when some recipient failed permanently.
    pub fn has_failures(&self) -> bool {
        self.recipients
            .iter()
            .any(|r| matches!(r.status, Status::Failed(_)))
    }
}

/// One journal record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A message taken over.
    Accept {
        /// Message id.
        id: u64,
        /// Its state at pick-up.
        message: MessageState,
    },
    /// Recipient `index` of `id` delivered.
    Delivered {
        /// Message id.
        id: u64,
        /// Recipient index.
        index: u32,
    },
    /// Recipient `index` of `id` failed permanently.
    Failed {
        /// Message id.
        id: u64,
        /// Recipient index.
        index: u32,
        /// The report text.
        text: Vec<u8>,
    },
    /// Recipient `index` of `id` deferred at `time`.
    Deferred {
        /// Message id.
        id: u64,
        /// Recipient index.
        index: u32,
        /// When it was attempted.
        time: i64,
        /// The temporary failure's text (empty: not recorded; written as a
        /// `T` record then, as before the text was kept).
        text: Vec<u8>,
    },
    /// The bounce for `id` is dealt with.
    Bounced {
        /// Message id.
        id: u64,
    },
    /// `id` is gone from the queue.
    Removed {
        /// Message id.
        id: u64,
    },
    /// Recipient `index` of `id` was deferred `count` times (written by
    /// compaction, which keeps only the last deferral's record).
    Attempts {
        /// Message id.
        id: u64,
        /// Recipient index.
        index: u32,
        /// Deferrals so far.
        count: u32,
    },
    /// `id` is held (`hold = true`) or released (`hold = false`).
    Hold {
        /// Message id.
        id: u64,
        /// Held or released.
        hold: bool,
    },
    /// The postmaster ended `id`: every pending recipient fails with
    /// `text`; with `bounce` false no bounce is sent (a delete).
    End {
        /// Message id.
        id: u64,
        /// True: the usual bounce; false: removed silently.
        bounce: bool,
        /// The failure text of the recipients it ended.
        text: Vec<u8>,
    },
}

/// Largest text of an `End` record (as a report text).
pub const MAX_END_TEXT: usize = 1000;

fn crc32(data: &[u8]) -> u32 {
    // Bitwise CRC-32 (IEEE 802.3, reflected, poly 0xEDB88320). The journal
    // is small per commit; a table would buy nothing measurable.
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
        }
    }
    !crc
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_be_bytes());
    out.extend_from_slice(b);
}

struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }
    fn i64(&mut self) -> Option<i64> {
        Some(i64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }
    fn bytes(&mut self) -> Option<Vec<u8>> {
        let n = self.u32()? as usize;
        Some(self.take(n)?.to_vec())
    }
}

impl Record {
    /// The framed bytes of this record.
    pub fn encode(&self) -> Vec<u8> {
        let mut p = Vec::with_capacity(64);
        match self {
            Record::Accept { id, message } => {
                p.push(b'A');
                p.extend_from_slice(&id.to_be_bytes());
                p.extend_from_slice(&message.birth.to_be_bytes());
                p.extend_from_slice(&message.qpid.to_be_bytes());
                p.extend_from_slice(&message.offset.to_be_bytes());
                put_bytes(&mut p, &message.sender);
                p.extend_from_slice(&(message.recipients.len() as u32).to_be_bytes());
                for r in &message.recipients {
                    p.push(r.channel.letter());
                    put_bytes(&mut p, &r.original);
                    put_bytes(&mut p, &r.address);
                }
            }
            Record::Delivered { id, index } => {
                p.push(b'K');
                p.extend_from_slice(&id.to_be_bytes());
                p.extend_from_slice(&index.to_be_bytes());
            }
            Record::Failed { id, index, text } => {
                p.push(b'D');
                p.extend_from_slice(&id.to_be_bytes());
                p.extend_from_slice(&index.to_be_bytes());
                put_bytes(&mut p, text);
            }
            Record::Deferred {
                id,
                index,
                time,
                text,
            } => {
                p.push(if text.is_empty() { b'T' } else { b'E' });
                p.extend_from_slice(&id.to_be_bytes());
                p.extend_from_slice(&index.to_be_bytes());
                p.extend_from_slice(&time.to_be_bytes());
                if !text.is_empty() {
                    put_bytes(&mut p, text);
                }
            }
            Record::Attempts { id, index, count } => {
                p.push(b'N');
                p.extend_from_slice(&id.to_be_bytes());
                p.extend_from_slice(&index.to_be_bytes());
                p.extend_from_slice(&count.to_be_bytes());
            }
            Record::Bounced { id } => {
                p.push(b'B');
                p.extend_from_slice(&id.to_be_bytes());
            }
            Record::Removed { id } => {
                p.push(b'X');
                p.extend_from_slice(&id.to_be_bytes());
            }
            Record::Hold { id, hold } => {
                p.push(if *hold { b'H' } else { b'U' });
                p.extend_from_slice(&id.to_be_bytes());
            }
            Record::End { id, bounce, text } => {
                p.push(b'Y');
                p.extend_from_slice(&id.to_be_bytes());
                p.push(if *bounce { b'b' } else { b'd' });
                put_bytes(&mut p, text);
            }
        }
        let mut out = Vec::with_capacity(p.len() + 8);
        out.extend_from_slice(&(p.len() as u32).to_be_bytes());
        out.extend_from_slice(&p);
        out.extend_from_slice(&crc32(&p).to_be_bytes());
        out
    }

    /// Decodes one payload (already length- and checksum-checked).
    pub fn decode(payload: &[u8]) -> Option<Record> {
        let mut c = Cursor(payload);
        let rec = match c.u8()? {
            b'A' => {
                let id = c.u64()?;
                let birth = c.i64()?;
                let qpid = c.u32()?;
                let offset = c.u64()?;
                let sender = c.bytes()?;
                let n = c.u32()? as usize;
                if n > crate::MAX_RECIPIENTS * 2 {
                    return None;
                }
                let mut recipients = Vec::with_capacity(n);
                for _ in 0..n {
                    let channel = match c.u8()? {
                        b'L' => Channel::Local,
                        b'R' => Channel::Remote,
                        _ => return None,
                    };
                    recipients.push(RecipientState {
                        channel,
                        original: c.bytes()?,
                        address: c.bytes()?,
                        status: Status::Pending,
                        last_attempt: None,
                        last_error: Vec::new(),
                        attempts: 0,
                    });
                }
                Record::Accept {
                    id,
                    message: MessageState {
                        birth,
                        qpid,
                        offset,
                        sender,
                        recipients,
                        bounced: false,
                        held: false,
                        deleted: false,
                    },
                }
            }
            b'K' => Record::Delivered {
                id: c.u64()?,
                index: c.u32()?,
            },
            b'D' => Record::Failed {
                id: c.u64()?,
                index: c.u32()?,
                text: c.bytes()?,
            },
            b'T' => Record::Deferred {
                id: c.u64()?,
                index: c.u32()?,
                time: c.i64()?,
                text: Vec::new(),
            },
            b'E' => Record::Deferred {
                id: c.u64()?,
                index: c.u32()?,
                time: c.i64()?,
                text: c.bytes()?,
            },
            b'N' => Record::Attempts {
                id: c.u64()?,
                index: c.u32()?,
                count: c.u32()?,
            },
            b'B' => Record::Bounced { id: c.u64()? },
            b'X' => Record::Removed { id: c.u64()? },
            b'H' => Record::Hold {
                id: c.u64()?,
                hold: true,
            },
            b'U' => Record::Hold {
                id: c.u64()?,
                hold: false,
            },
            b'Y' => {
                let id = c.u64()?;
                let bounce = match c.u8()? {
                    b'b' => true,
                    b'd' => false,
                    _ => return None,
                };
                let text = c.bytes()?;
                if text.len() > MAX_END_TEXT {
                    return None;
                }
                Record::End { id, bounce, text }
            }
            _ => return None,
        };
        if c.0.is_empty() { Some(rec) } else { None }
    }
}

/// Everything the manager knows, keyed by message id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    /// Messages taken over and not yet removed.
    pub messages: BTreeMap<u64, MessageState>,
}

impl State {
    /// Applies one record. Records about unknown messages or indexes are
    /// ignored (they can follow a compaction race or a torn tail).
    pub fn apply(&mut self, rec: &Record) {
        match rec {
            Record::Accept { id, message } => {
                self.messages.insert(*id, message.clone());
            }
            Record::Delivered { id, index } => {
                if let Some(r) = self.recipient(*id, *index) {
                    r.status = Status::Delivered;
                }
            }
            Record::Failed { id, index, text } => {
                if let Some(r) = self.recipient(*id, *index) {
                    r.status = Status::Failed(text.clone());
                }
            }
            Record::Deferred {
                id,
                index,
                time,
                text,
            } => {
                if let Some(r) = self.recipient(*id, *index) {
                    r.last_attempt = Some(*time);
                    r.last_error.clone_from(text);
                    r.attempts = r.attempts.saturating_add(1);
                }
            }
            Record::Attempts { id, index, count } => {
                if let Some(r) = self.recipient(*id, *index) {
                    r.attempts = *count;
                }
            }
            Record::Bounced { id } => {
                if let Some(m) = self.messages.get_mut(id) {
                    m.bounced = true;
                }
            }
            Record::Removed { id } => {
                self.messages.remove(id);
            }
            Record::Hold { id, hold } => {
                if let Some(m) = self.messages.get_mut(id) {
                    m.held = *hold;
                }
            }
            Record::End { id, bounce, text } => {
                if let Some(m) = self.messages.get_mut(id) {
                    for r in &mut m.recipients {
                        if r.status == Status::Pending {
                            r.status = Status::Failed(text.clone());
                        }
                    }
                    if !*bounce {
                        m.bounced = true;
                        m.deleted = true;
                    }
                }
            }
        }
    }

    fn recipient(&mut self, id: u64, index: u32) -> Option<&mut RecipientState> {
        self.messages
            .get_mut(&id)
            .and_then(|m| m.recipients.get_mut(index as usize))
    }

    /// The records that rebuild this state (for compaction).
    pub fn snapshot(&self) -> Vec<Record> {
        let mut out = Vec::new();
        for (&id, m) in &self.messages {
            let mut fresh = m.clone();
            for r in &mut fresh.recipients {
                r.status = Status::Pending;
                r.last_attempt = None;
                r.last_error.clear();
                r.attempts = 0;
            }
            fresh.bounced = false;
            fresh.held = false;
            fresh.deleted = false;
            out.push(Record::Accept { id, message: fresh });
            for (i, r) in m.recipients.iter().enumerate() {
                let index = i as u32;
                match &r.status {
                    Status::Pending => {}
                    Status::Delivered => out.push(Record::Delivered { id, index }),
                    Status::Failed(text) => out.push(Record::Failed {
                        id,
                        index,
                        text: text.clone(),
                    }),
                }
                if let Some(time) = r.last_attempt {
                    out.push(Record::Deferred {
                        id,
                        index,
                        time,
                        text: r.last_error.clone(),
                    });
                }
                if r.attempts != u32::from(r.last_attempt.is_some()) {
                    out.push(Record::Attempts {
                        id,
                        index,
                        count: r.attempts,
                    });
                }
            }
            if m.bounced {
                out.push(Record::Bounced { id });
            }
            if m.held {
                out.push(Record::Hold { id, hold: true });
            }
            if m.deleted {
                // No recipient is pending any more (the `D` records above
                // say so), so this only restores the flags.
                out.push(Record::End {
                    id,
                    bounce: false,
                    text: Vec::new(),
                });
            }
        }
        out
    }
}

/// Replays journal bytes; returns the state and the length of the valid
/// prefix (a torn or corrupt tail starts there).
pub fn replay(bytes: &[u8]) -> (State, usize) {
    let mut state = State::default();
    let mut at = 0usize;
    while bytes.len() - at >= 4 {
        let len = u32::from_be_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
        if len > MAX_RECORD || bytes.len() - at < 8 + len {
            break;
        }
        let payload = &bytes[at + 4..at + 4 + len];
        let crc = u32::from_be_bytes(
            bytes[at + 4 + len..at + 8 + len]
                .try_into()
                .expect("4 bytes"),
        );
        if crc32(payload) != crc {
            break;
        }
        let Some(rec) = Record::decode(payload) else {
            break;
        };
        state.apply(&rec);
        at += 8 + len;
    }
    (state, at)
}

/// Reads the journal of a queue without changing it (for listings).
pub fn read_state(queue_dir: &Path) -> Result<State, Error> {
    let rel = Path::new(crate::layout::STATE_DIR).join(JOURNAL);
    let path = queue_dir.join(&rel);
    // Root lists the queue too (mailq): a link or FIFO planted as state/
    // or as the journal is refused, never followed or waited on.
    let file = match crate::layout::open_below(queue_dir, &rel, crate::layout::Last::File) {
        Ok(fd) => File::from(fd),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(State::default()),
        Err(e) => return Err(Error::io("open", path, e)),
    };
    let mut bytes = Vec::new();
    (&file)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io("read", &path, e))?;
    Ok(replay(&bytes).0)
}

/// The open journal of the (one) running queue manager.
pub struct Journal {
    dir: PathBuf,
    file: File,
    len: u64,
    pending: Vec<u8>,
    /// Bytes of records written since the last compaction.
    pub written_since_compaction: u64,
}

use crate::layout::sync_dir;

impl Journal {
    /// Opens (creating if needed) `queue/state/journal`, replays it, and cuts
    /// off a torn tail. Returns the journal, the state, and how many bytes of
    /// tail were discarded.
    pub fn open(queue_dir: &Path) -> Result<(Journal, State, u64), Error> {
        let dir = queue_dir.join(crate::layout::STATE_DIR);
        let path = dir.join(JOURNAL);
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| Error::io("open", &path, e))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(|e| Error::io("read", &path, e))?;
        let (state, valid) = replay(&bytes);
        let discarded = (bytes.len() - valid) as u64;
        if discarded > 0 {
            file.set_len(valid as u64)
                .and_then(|_| file.sync_all())
                .map_err(|e| Error::io("truncate", &path, e))?;
        }
        sync_dir(&dir)?;
        Ok((
            Journal {
                dir,
                file,
                len: valid as u64,
                pending: Vec::new(),
                written_since_compaction: valid as u64,
            },
            state,
            discarded,
        ))
    }

    /// Queues a record for the next [`Journal::commit`].
    pub fn append(&mut self, rec: &Record) {
        self.pending.extend_from_slice(&rec.encode());
    }

    /// True when records wait for a commit.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Writes every queued record and flushes them with one `fdatasync`.
    /// Nothing appended before this call is durable until it returns Ok.
    pub fn commit(&mut self) -> Result<(), Error> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let path = self.dir.join(JOURNAL);
        if let Err(e) = self
            .file
            .write_all(&self.pending)
            .and_then(|_| self.file.sync_data())
        {
            // Leave no half-written record behind for the next replay.
            let _ = self.file.set_len(self.len);
            return Err(Error::io("write", path, e));
        }
        self.len += self.pending.len() as u64;
        self.written_since_compaction += self.pending.len() as u64;
        self.pending.clear();
        Ok(())
    }

    /// Current length of the journal file.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True when the journal is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Rewrites the journal as a snapshot of `state` (durably: new file,
    /// fsync, rename, fsync of `state/`). Pending records must have been
    /// committed first.
    pub fn compact(&mut self, state: &State) -> Result<(), Error> {
        self.commit()?;
        let tmp = self.dir.join("journal.new");
        let path = self.dir.join(JOURNAL);
        let mut bytes = Vec::new();
        for rec in state.snapshot() {
            bytes.extend_from_slice(&rec.encode());
        }
        {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(|e| Error::io("create", &tmp, e))?;
            f.write_all(&bytes)
                .and_then(|_| f.sync_all())
                .map_err(|e| Error::io("write", &tmp, e))?;
        }
        fs::rename(&tmp, &path).map_err(|e| Error::io("rename", &path, e))?;
        sync_dir(&self.dir)?;
        self.file = OpenOptions::new()
            .read(true)
            .append(true)
            .open(&path)
            .map_err(|e| Error::io("open", &path, e))?;
        self.len = bytes.len() as u64;
        self.written_since_compaction = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(n: usize) -> MessageState {
        MessageState {
            birth: 1_795_770_984,
            qpid: 4242,
            offset: 4096,
            sender: b"s@x".to_vec(),
            recipients: (0..n)
                .map(|i| RecipientState {
                    channel: if i % 2 == 0 {
                        Channel::Local
                    } else {
                        Channel::Remote
                    },
                    original: format!("r{i}@x").into_bytes(),
                    address: format!("r{i}@x").into_bytes(),
                    status: Status::Pending,
                    last_attempt: None,
                    last_error: Vec::new(),
                    attempts: 0,
                })
                .collect(),
            bounced: false,
            held: false,
            deleted: false,
        }
    }

    #[test]
    fn crc_known_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn records_round_trip_and_replay() {
        let recs = vec![
            Record::Accept {
                id: 7,
                message: msg(3),
            },
            Record::Delivered { id: 7, index: 0 },
            Record::Failed {
                id: 7,
                index: 1,
                text: b"no such user (#5.1.1)".to_vec(),
            },
            Record::Deferred {
                id: 7,
                index: 2,
                time: 99,
                text: Vec::new(),
            },
            Record::Deferred {
                id: 7,
                index: 2,
                time: 100,
                text: b"connection refused (#4.4.1)".to_vec(),
            },
            Record::Accept {
                id: 9,
                message: msg(1),
            },
            Record::Bounced { id: 7 },
            Record::Removed { id: 9 },
        ];
        let mut bytes = Vec::new();
        for r in &recs {
            let enc = r.encode();
            assert_eq!(Record::decode(&enc[4..enc.len() - 4]).as_ref(), Some(r));
            bytes.extend_from_slice(&enc);
        }
        let (state, valid) = replay(&bytes);
        assert_eq!(valid, bytes.len());
        assert_eq!(state.messages.len(), 1);
        let m = &state.messages[&7];
        assert_eq!(m.recipients[0].status, Status::Delivered);
        assert!(matches!(m.recipients[1].status, Status::Failed(_)));
        assert_eq!(m.recipients[2].last_attempt, Some(100));
        assert_eq!(m.recipients[2].last_error, b"connection refused (#4.4.1)");
        assert!(m.bounced);
        // A snapshot rebuilds the same state.
        let mut snap = Vec::new();
        for r in state.snapshot() {
            snap.extend_from_slice(&r.encode());
        }
        assert_eq!(replay(&snap).0, state);
    }

    #[test]
    fn operator_records_round_trip_replay_twice_and_survive_a_snapshot() {
        let recs = vec![
            Record::Accept {
                id: 1,
                message: msg(3),
            },
            Record::Delivered { id: 1, index: 0 },
            Record::Hold { id: 1, hold: true },
            Record::Accept {
                id: 2,
                message: msg(2),
            },
            Record::End {
                id: 2,
                bounce: false,
                text: b"deleted by the postmaster (#5.0.0)".to_vec(),
            },
            Record::Accept {
                id: 3,
                message: msg(2),
            },
            Record::Hold { id: 3, hold: true },
            Record::Hold { id: 3, hold: false },
            Record::End {
                id: 3,
                bounce: true,
                text: b"bounced by the postmaster (#5.0.0)".to_vec(),
            },
            // About a message nobody knows: ignored.
            Record::Hold { id: 99, hold: true },
        ];
        let mut bytes = Vec::new();
        for r in &recs {
            let enc = r.encode();
            assert_eq!(Record::decode(&enc[4..enc.len() - 4]).as_ref(), Some(r));
            bytes.extend_from_slice(&enc);
        }
        let (state, valid) = replay(&bytes);
        assert_eq!(valid, bytes.len());
        let m1 = &state.messages[&1];
        assert!(m1.held && !m1.deleted && !m1.bounced);
        assert_eq!(m1.recipients[0].status, Status::Delivered);
        let m2 = &state.messages[&2];
        assert!(m2.deleted && m2.bounced && m2.is_finished());
        let m3 = &state.messages[&3];
        assert!(!m3.held && !m3.bounced && m3.has_failures() && m3.is_finished());
        assert!(!state.messages.contains_key(&99));
        // Replaying the operator records again changes nothing (a crash
        // after the record and before the answer; the request repeated).
        let mut again = state.clone();
        for r in &recs[2..] {
            if !matches!(r, Record::Accept { .. }) {
                again.apply(r);
            }
        }
        assert_eq!(again, state);
        let mut snap = Vec::new();
        for r in state.snapshot() {
            snap.extend_from_slice(&r.encode());
        }
        assert_eq!(replay(&snap).0, state);
    }

    #[test]
    fn bad_operator_records_are_refused() {
        // Unknown end kind.
        let mut p = vec![b'Y'];
        p.extend_from_slice(&5u64.to_be_bytes());
        p.push(b'z');
        p.extend_from_slice(&0u32.to_be_bytes());
        assert_eq!(Record::decode(&p), None);
        // Text over the bound.
        let long = Record::End {
            id: 5,
            bounce: true,
            text: vec![b'x'; MAX_END_TEXT + 1],
        }
        .encode();
        assert_eq!(Record::decode(&long[4..long.len() - 4]), None);
        // Truncated and trailing bytes.
        let h = Record::Hold { id: 5, hold: true }.encode();
        let payload = &h[4..h.len() - 4];
        assert_eq!(Record::decode(&payload[..payload.len() - 1]), None);
        let mut extra = payload.to_vec();
        extra.push(0);
        assert_eq!(Record::decode(&extra), None);
    }

    #[test]
    fn deferrals_are_counted_and_the_count_survives_compaction() {
        let mut bytes = Record::Accept {
            id: 1,
            message: msg(2),
        }
        .encode();
        for t in 0..5 {
            bytes.extend(
                Record::Deferred {
                    id: 1,
                    index: 1,
                    time: 100 + t,
                    text: format!("try {t}").into_bytes(),
                }
                .encode(),
            );
        }
        bytes.extend(
            Record::Deferred {
                id: 1,
                index: 0,
                time: 100,
                text: Vec::new(),
            }
            .encode(),
        );
        let (s, valid) = replay(&bytes);
        assert_eq!(valid, bytes.len());
        let r = &s.messages[&1].recipients;
        assert_eq!((r[0].attempts, r[1].attempts), (1, 5));
        assert_eq!(r[1].last_attempt, Some(104));
        // Compaction keeps one deferral and the count.
        let snap: Vec<Record> = s.snapshot();
        assert!(snap.contains(&Record::Attempts {
            id: 1,
            index: 1,
            count: 5
        }));
        assert!(
            !snap
                .iter()
                .any(|r| matches!(r, Record::Attempts { index: 0, .. }))
        );
        let again: Vec<u8> = snap.iter().flat_map(Record::encode).collect();
        assert_eq!(replay(&again).0, s);
        // A bad count record: truncated.
        let n = Record::Attempts {
            id: 1,
            index: 1,
            count: 9,
        }
        .encode();
        assert_eq!(Record::decode(&n[4..n.len() - 5]), None);
    }

    #[test]
    fn torn_or_corrupt_tail_stops_replay() {
        let a = Record::Accept {
            id: 1,
            message: msg(2),
        }
        .encode();
        let k = Record::Delivered { id: 1, index: 0 }.encode();
        let mut bytes = [a.clone(), k.clone()].concat();
        let full = bytes.len();
        for cut in 1..k.len() {
            let (s, valid) = replay(&bytes[..full - cut]);
            assert_eq!(valid, a.len(), "cut {cut}");
            assert_eq!(s.messages[&1].recipients[0].status, Status::Pending);
        }
        // A flipped bit in the second record's payload.
        bytes[a.len() + 6] ^= 0x40;
        assert_eq!(replay(&bytes).1, a.len());
        // An absurd length.
        let mut bad = a.clone();
        bad.extend_from_slice(&u32::MAX.to_be_bytes());
        bad.extend_from_slice(&[0; 16]);
        assert_eq!(replay(&bad).1, a.len());
        // Unknown type, good checksum.
        let p = b"Q\0\0\0\0";
        let mut unk = (p.len() as u32).to_be_bytes().to_vec();
        unk.extend_from_slice(p);
        unk.extend_from_slice(&crc32(p).to_be_bytes());
        assert_eq!(replay(&unk).1, 0);
    }

    #[test]
    fn the_largest_accept_record_replays() {
        // The most recipients a maximal envelope holds at the longest
        // address, each rewritten with a long virtualdomains prefix.
        let n = crate::MAX_ENVELOPE / (crate::MAX_ADDRESS + 2) - 1;
        let original = vec![b'a'; crate::MAX_ADDRESS];
        let mut address = vec![b'p'; 1000];
        address.extend_from_slice(&original);
        let mut m = msg(0);
        m.recipients = (0..n)
            .map(|_| RecipientState {
                channel: Channel::Local,
                original: original.clone(),
                address: address.clone(),
                status: Status::Pending,
                last_attempt: None,
                last_error: Vec::new(),
                attempts: 0,
            })
            .collect();
        let a = Record::Accept { id: 3, message: m }.encode();
        assert!(a.len() > 8 << 20, "larger than the old limit");
        let k = Record::Delivered { id: 3, index: 1 }.encode();
        let bytes = [a, k].concat();
        let (state, valid) = replay(&bytes);
        assert_eq!(valid, bytes.len(), "replay stopped early");
        assert_eq!(state.messages[&3].recipients.len(), n);
        assert_eq!(state.messages[&3].recipients[1].status, Status::Delivered);
    }

    #[test]
    fn journal_commit_truncate_compact() {
        let dir = std::env::temp_dir().join(format!("tern-journal-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("state")).unwrap();
        let (mut j, s, cut) = Journal::open(&dir).unwrap();
        assert!(s.messages.is_empty() && cut == 0);
        j.append(&Record::Accept {
            id: 5,
            message: msg(2),
        });
        j.append(&Record::Delivered { id: 5, index: 1 });
        j.commit().unwrap();
        j.append(&Record::Delivered { id: 5, index: 0 }); // never committed
        drop(j);
        // A torn tail on disk.
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.join("state/journal"))
            .unwrap();
        f.write_all(&[0, 0, 0, 9, b'K']).unwrap();
        drop(f);
        let (mut j, s, cut) = Journal::open(&dir).unwrap();
        assert_eq!(cut, 5);
        assert_eq!(s.messages[&5].recipients[0].status, Status::Pending);
        assert_eq!(s.messages[&5].recipients[1].status, Status::Delivered);
        let before = j.len();
        j.compact(&s).unwrap();
        assert!(j.len() <= before);
        let (_, s2, _) = Journal::open(&dir).unwrap();
        assert_eq!(s2, s);
        assert_eq!(read_state(&dir).unwrap(), s);
        fs::remove_dir_all(&dir).unwrap();
    }
}
