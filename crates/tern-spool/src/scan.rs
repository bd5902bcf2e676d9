//! Reading and listing committed messages.

use crate::Error;
use crate::envelope::Envelope;
use crate::layout::{CUR_DIR, Layout, NEW_DIR};
use crate::qfile::{self, Header};
use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::Read;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Where a committed message is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Committed (`new/`), not yet picked up by the queue manager.
    New,
    /// Taken over by the queue manager (`cur/`).
    Active,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stage::New => "new",
            Stage::Active => "active",
        })
    }
}

/// The delivery state of one recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecipientState {
    /// Not yet delivered (never tried, or deferred).
    Pending,
    /// Delivered.
    Delivered,
    /// Failed permanently (bounced).
    Failed,
}

impl fmt::Display for RecipientState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RecipientState::Pending => "pending",
            RecipientState::Delivered => "delivered",
            RecipientState::Failed => "failed",
        })
    }
}

/// One recipient of a queued message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    /// The envelope address.
    pub address: Vec<u8>,
    /// Its state.
    pub state: RecipientState,
    /// Local or remote, once the manager has taken the message over.
    pub channel: Option<crate::state::Channel>,
    /// When it was last tried and deferred, if ever (the manager's journal).
    pub last_attempt: Option<i64>,
    /// The text of its last temporary failure (empty: none recorded).
    pub last_error: Vec<u8>,
    /// How many times it was tried and deferred.
    pub attempts: u32,
}

/// A committed message as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedMessage {
    /// The id (inode number of the queue file).
    pub id: u64,
    /// Seconds since the epoch when it was accepted.
    pub birth: i64,
    /// Size of the message in bytes (Received line included).
    pub size: u64,
    /// Uid of the injecting process.
    pub uid: u32,
    /// Envelope sender (empty for a bounce).
    pub sender: Vec<u8>,
    /// Recipients with their states.
    pub recipients: Vec<Recipient>,
    /// New or active.
    pub stage: Stage,
    /// Held by the postmaster (`ternctl hold`): never tried until released.
    pub held: bool,
    /// Deleted by the postmaster, waiting for its removal (no bounce).
    pub deleted: bool,
}

/// The result of a full scan: messages, and files that do not parse (which
/// are never delivered and never removed automatically).
#[derive(Debug, Default)]
pub struct Scan {
    /// Readable committed messages, sorted by birth then id.
    pub messages: Vec<QueuedMessage>,
    /// Entries in `new/` or `cur/` that are not valid queue files.
    pub damaged: Vec<(PathBuf, &'static str)>,
}

/// An open queue directory.
#[derive(Debug, Clone)]
pub struct Queue {
    dir: PathBuf,
    layout: Layout,
}

/// A message opened for reading.
#[derive(Debug)]
pub struct OpenMessage {
    /// The queue file, positioned anywhere; the message starts at
    /// `header.offset`.
    pub file: File,
    /// Its parsed header.
    pub header: Header,
    /// Its stage.
    pub stage: Stage,
    /// Total file size.
    pub file_size: u64,
}

fn decimal_name(name: &std::ffi::OsStr) -> Option<u64> {
    let s = name.to_str()?;
    if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

impl Queue {
    /// Opens the queue in `queue_dir` (reads its `format`).
    pub fn open(queue_dir: &Path) -> Result<Queue, Error> {
        let layout = Layout::read(queue_dir)?;
        Ok(Queue {
            dir: queue_dir.to_path_buf(),
            layout,
        })
    }

    /// The queue directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The queue's layout.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// Path of a message in a stage.
    pub fn path(&self, id: u64, stage: Stage) -> PathBuf {
        let rel = match stage {
            Stage::New => self.layout.new_dir(id),
            Stage::Active => self.layout.cur_dir(id),
        };
        self.dir.join(rel).join(id.to_string())
    }

    /// Every `(id, stage, path)` in `new/` then `cur/` (a message moved
    /// between the two during the walk is reported once, as active).
    fn walk(&self) -> Result<BTreeMap<u64, (Stage, PathBuf)>, Error> {
        let mut found = BTreeMap::new();
        for (top, stage) in [(NEW_DIR, Stage::New), (CUR_DIR, Stage::Active)] {
            for b in 0..self.layout.split {
                let rel = Path::new(top).join(b.to_string());
                let d = self.dir.join(&rel);
                // Never through a link the queue's uid put in place of a
                // split directory (root lists the queue too).
                let fd = crate::layout::open_below(&self.dir, &rel, crate::layout::Last::Dir)
                    .map_err(|e| Error::io("open directory", &d, e))?;
                let rd = rustix::fs::Dir::read_from(&fd)
                    .map_err(|e| Error::io("read directory", &d, e.into()))?;
                for ent in rd {
                    let ent = ent.map_err(|e| Error::io("read directory", &d, e.into()))?;
                    let name = std::ffi::OsStr::from_bytes(ent.file_name().to_bytes());
                    if let Some(id) = decimal_name(name) {
                        found.insert(id, (stage, d.join(name)));
                    }
                }
            }
        }
        Ok(found)
    }

    /// Number of committed messages (no file is opened).
    pub fn count(&self) -> Result<usize, Error> {
        Ok(self.walk()?.len())
    }

    /// Reads every committed message's header, and the queue manager's
    /// journal for the recipients' states.
    pub fn scan(&self) -> Result<Scan, Error> {
        let mut scan = Scan::default();
        let state = crate::state::read_state(&self.dir)?;
        for (id, (stage, path)) in self.walk()? {
            match open_path(&self.dir, &path, stage) {
                Ok(Some(m)) => scan.messages.push(listed(id, m, state.messages.get(&id))),
                Ok(None) => {}
                Err(hint) => scan.damaged.push((path, hint)),
            }
        }
        scan.messages.sort_by_key(|m| (m.birth, m.id));
        Ok(scan)
    }

    /// Every readable committed message, oldest first.
    pub fn list(&self) -> Result<Vec<QueuedMessage>, Error> {
        Ok(self.scan()?.messages)
    }

    /// Opens message `id` wherever it is.
    pub fn open_message(&self, id: u64) -> Result<OpenMessage, Error> {
        for stage in [Stage::Active, Stage::New] {
            let path = self.path(id, stage);
            match open_path(&self.dir, &path, stage) {
                Ok(Some(m)) => return Ok(m),
                Ok(None) => continue,
                Err(hint) => return Err(Error::Damaged { path, hint }),
            }
        }
        Err(Error::NotFound(id))
    }

    /// The message bytes of `id`, exactly as stored.
    pub fn read_message(&self, id: u64) -> Result<Vec<u8>, Error> {
        let m = self.open_message(id)?;
        let path = self.path(id, m.stage);
        let mut out = Vec::with_capacity((m.file_size - m.header.offset) as usize);
        use std::io::{Seek, SeekFrom};
        let mut f = &m.file;
        f.seek(SeekFrom::Start(m.header.offset))
            .and_then(|_| f.read_to_end(&mut out))
            .map_err(|e| Error::io("read", &path, e))?;
        Ok(out)
    }
}

fn listed(id: u64, m: OpenMessage, known: Option<&crate::state::MessageState>) -> QueuedMessage {
    use crate::state::Status;
    let Envelope { sender, recipients } = m.header.envelope;
    let recipients = match known {
        // The manager's view: one entry per recipient it took over.
        Some(k) => k
            .recipients
            .iter()
            .map(|r| Recipient {
                address: r.original.clone(),
                state: match r.status {
                    Status::Pending => RecipientState::Pending,
                    Status::Delivered => RecipientState::Delivered,
                    Status::Failed(_) => RecipientState::Failed,
                },
                channel: Some(r.channel),
                last_attempt: r.last_attempt,
                last_error: r.last_error.clone(),
                attempts: r.attempts,
            })
            .collect(),
        None => recipients
            .into_iter()
            .map(|address| Recipient {
                address,
                state: RecipientState::Pending,
                channel: None,
                last_attempt: None,
                last_error: Vec::new(),
                attempts: 0,
            })
            .collect(),
    };
    QueuedMessage {
        id,
        birth: m.header.origin.time,
        size: m.file_size - m.header.offset,
        uid: m.header.origin.uid,
        sender,
        recipients,
        stage: m.stage,
        held: known.is_some_and(|k| k.held),
        deleted: known.is_some_and(|k| k.deleted),
    }
}

/// Opens and parses one queue file. `Ok(None)`: it vanished (moved or
/// removed meanwhile). `Err`: it is damaged.
fn open_path(dir: &Path, path: &Path, stage: Stage) -> Result<Option<OpenMessage>, &'static str> {
    use rustix::fs::OFlags;
    // Every directory below the queue is opened without following a link
    // (root lists the queue too), and the file itself with NOFOLLOW and
    // NONBLOCK: a FIFO planted under a message's name must not hang the
    // queue manager (it is refused below as not a regular file).
    let rel = path.strip_prefix(dir).map_err(|_| "not below the queue")?;
    let (Some(parent), Some(name)) = (rel.parent(), rel.file_name()) else {
        return Err("not below the queue");
    };
    let pfd = match crate::layout::open_below(dir, parent, crate::layout::Last::Dir) {
        Ok(fd) => fd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(_) => return Err("its directory is not a directory of the queue (a link?)"),
    };
    let flags =
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
    let file = match rustix::fs::openat(&pfd, name, flags, rustix::fs::Mode::empty()) {
        Ok(fd) => File::from(fd),
        Err(rustix::io::Errno::NOENT) => return Ok(None),
        Err(_) => return Err("cannot open"),
    };
    let md = file.metadata().map_err(|_| "cannot stat")?;
    if !md.is_file() {
        return Err("not a regular file");
    }
    // A hard link to another uid's file, planted by the directory's owner.
    if rustix::fs::fstat(&pfd).map(|st| st.st_uid) != Ok(md.uid()) {
        return Err("not owned by the owner of its directory");
    }
    let name_id = path.file_name().and_then(decimal_name);
    if name_id != Some(md.ino()) {
        return Err("name is not the inode number");
    }
    let header = qfile::read_header(&file, md.len())?;
    if header.offset > md.len() {
        return Err("file shorter than its message offset");
    }
    Ok(Some(OpenMessage {
        file,
        header,
        stage,
        file_size: md.len(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn a_fifo_under_a_message_name_is_damaged_not_a_hang() {
        let dir = std::env::temp_dir().join(format!("tern-scan-fifo-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let q = dir.join("queue");
        crate::layout::create(&q, 1).unwrap();
        let queue = Queue::open(&q).unwrap();
        let tmp = q.join("tmp").join("fifo");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &tmp,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let id = fs::symlink_metadata(&tmp).unwrap().ino();
        fs::rename(&tmp, queue.path(id, Stage::New)).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let q2 = queue.clone();
        std::thread::spawn(move || {
            let _ = tx.send(q2.open_message(id).map(|_| ()));
        });
        let got = rx
            .recv_timeout(std::time::Duration::from_secs(5))
            .expect("opening a FIFO in new/ hung");
        assert!(
            matches!(
                got,
                Err(Error::Damaged {
                    hint: "not a regular file",
                    ..
                })
            ),
            "{got:?}"
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    /// What the queue's uid (or the manager's) can plant below `queue/`
    /// never makes a listing follow it or wait: a split directory that is
    /// a link, a FIFO journal, a hard link to another uid's file.
    #[test]
    fn a_listing_follows_no_link_and_waits_on_no_fifo() {
        let dir = std::env::temp_dir().join(format!("tern-scan-links-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let q = dir.join("queue");
        crate::layout::create(&q, 2).unwrap();
        let outside = dir.join("outside");
        fs::create_dir(&outside).unwrap();
        let list = |q: &Path| {
            let q = q.to_path_buf();
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let _ = tx.send(Queue::open(&q).and_then(|q| q.scan()).map(|_| ()));
            });
            rx.recv_timeout(std::time::Duration::from_secs(60))
                .expect("the listing hung")
        };
        assert!(list(&q).is_ok());

        rustix::fs::mknodat(
            rustix::fs::CWD,
            q.join("state/journal"),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let e = list(&q).unwrap_err().to_string();
        assert!(e.contains("state/journal is not a regular file"), "{e}");
        fs::remove_file(q.join("state/journal")).unwrap();

        fs::rename(q.join("cur/1"), q.join("cur/1.real")).unwrap();
        std::os::unix::fs::symlink(&outside, q.join("cur/1")).unwrap();
        let e = list(&q).unwrap_err().to_string();
        assert!(e.contains("cur/1 is a symbolic link"), "{e}");
        fs::remove_file(q.join("cur/1")).unwrap();
        fs::rename(q.join("cur/1.real"), q.join("cur/1")).unwrap();

        if rustix::process::geteuid().is_root() {
            // A file of another uid under a message's name (what a hard
            // link to it would look like) is damaged, never read.
            let f = q.join("tmp/x");
            fs::write(&f, "x").unwrap();
            std::os::unix::fs::chown(&f, Some(1), None).unwrap();
            let id = fs::metadata(&f).unwrap().ino();
            let queue = Queue::open(&q).unwrap();
            fs::rename(&f, queue.path(id, Stage::Active)).unwrap();
            let got = queue.open_message(id);
            assert!(
                matches!(
                    got,
                    Err(Error::Damaged {
                        hint: "not owned by the owner of its directory",
                        ..
                    })
                ),
                "{got:?}"
            );
        }
        fs::remove_dir_all(&dir).unwrap();
    }
}
