//! The commit protocol: how `tern-queue` turns two byte streams into a
//! durable queue file. Every step and its exit code is in docs/queue.md.
//!
//! 1. Create an unnamed file in `queue/tmp` (`O_TMPFILE`; where the file
//!    system lacks it, a named, `flock`ed file instead). Its inode number is
//!    the message id. A crash now leaves nothing (unnamed) or a lock-free
//!    named file that [`crate::repair`] removes.
//! 2. Write the `Received:` line and the message at the reserved offset.
//! 3. Read the envelope; write the header at offset 0.
//! 4. `fsync` the file. (flush 1)
//! 5. Link the file into `queue/new/<id % split>/<id>` (never replacing a
//!    name). **This is the commit point.**
//! 6. `fsync` the directory `queue/new/<id % split>`. (flush 2) Only now may
//!    the caller be told "queued".

use crate::envelope::Envelope;
use crate::exit::QueueExit;
use crate::layout::{Layout, TMP_DIR};
use crate::qfile::{self, DEFAULT_RESERVE, Origin};
use rustix::fs::{AtFlags, FlockOperation, Mode, OFlags, RenameFlags};
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// A failure of one commit step, already classified by exit code.
#[derive(Debug, thiserror::Error)]
#[error("{step}: {source}")]
pub struct CommitError {
    /// The exit code `tern-queue` must return.
    pub exit: QueueExit,
    /// The step that failed.
    pub step: &'static str,
    /// The system error.
    pub source: std::io::Error,
}

fn fail(exit: QueueExit, step: &'static str) -> impl FnOnce(std::io::Error) -> CommitError {
    move |source| CommitError { exit, step, source }
}

/// The `Received:` line `tern-queue` puts on top of every message: it names
/// the pid and the invoking uid only, never host details of the caller.
pub fn received_line(pid: u32, uid: u32, time: i64) -> Vec<u8> {
    format!(
        "Received: (tern-queue {pid} invoked by uid {uid}); {}\n",
        tern_date::rfc5322(time)
    )
    .into_bytes()
}

/// A queue file being written.
pub struct Writer<'q> {
    queue: &'q OwnedFd,
    layout: Layout,
    file: File,
    /// `Some(name)` for a named file in `tmp/` (the fallback), `None` for an
    /// unnamed `O_TMPFILE` file.
    tmp_name: Option<PathBuf>,
    id: u64,
    end: u64,
}

/// Which `new/` bucket the next anonymous file is created in.
static NEXT_BUCKET: AtomicU32 = AtomicU32::new(0);

/// Creates the file: anonymous (`O_TMPFILE`) where the system has it, in
/// one of `new/`'s buckets in turn (each is its own directory, which
/// `layout::create` spreads over the file system's allocation groups, so
/// concurrent creations neither share a directory lock nor pile their
/// inode churn into one group; the file gets its name later, in the bucket
/// its inode number picks); else named, in `tmp/`.
fn create_file(
    queue: &OwnedFd,
    layout: Layout,
    named: bool,
) -> Result<(File, Option<PathBuf>), CommitError> {
    let mode = Mode::from_raw_mode(0o640);
    if !named && Path::new("/proc/self/fd").is_dir() {
        let bucket = NEXT_BUCKET.fetch_add(1, Ordering::Relaxed) % layout.split.max(1);
        match rustix::fs::openat(
            queue,
            layout.new_dir(u64::from(bucket)).as_path(),
            OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC,
            mode,
        ) {
            Ok(fd) => return Ok((File::from(fd), None)),
            Err(rustix::io::Errno::NOENT) => {
                return Err(
                    fail(QueueExit::NewDirTrouble, "open new-message directory")(
                        rustix::io::Errno::NOENT.into(),
                    ),
                );
            }
            Err(e)
                if e == rustix::io::Errno::OPNOTSUPP
                    || e == rustix::io::Errno::ISDIR
                    || e == rustix::io::Errno::INVAL => {}
            Err(e) => {
                return Err(fail(QueueExit::TmpTrouble, "create temporary file")(
                    e.into(),
                ));
            }
        }
    }
    // Named fallback: unique by pid, time and a counter; locked while alive
    // so that repair can tell a live writer from a dead one.
    let pid = std::process::id();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    for n in 0..8 {
        let name = PathBuf::from(format!("{TMP_DIR}/{pid}.{nanos}.{n}"));
        match rustix::fs::openat(
            queue,
            &name,
            OFlags::CREATE | OFlags::EXCL | OFlags::RDWR | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            mode,
        ) {
            Ok(fd) => {
                rustix::fs::flock(&fd, FlockOperation::LockExclusive)
                    .map_err(|e| fail(QueueExit::TmpTrouble, "lock temporary file")(e.into()))?;
                return Ok((File::from(fd), Some(name)));
            }
            Err(rustix::io::Errno::EXIST) => continue,
            Err(e) => {
                return Err(fail(QueueExit::TmpTrouble, "create temporary file")(
                    e.into(),
                ));
            }
        }
    }
    Err(fail(QueueExit::TmpTrouble, "create temporary file")(
        std::io::Error::from(std::io::ErrorKind::AlreadyExists),
    ))
}

impl<'q> Writer<'q> {
    /// Step 1: creates the file. `queue` is an open directory fd of `queue/`.
    pub fn create(queue: &'q OwnedFd, layout: Layout) -> Result<Writer<'q>, CommitError> {
        Writer::create_with(queue, layout, false)
    }

    /// Step 1 with a choice: `named` forces the named-file fallback even
    /// where `O_TMPFILE` works (for tests of that path and of repair).
    pub fn create_with(
        queue: &'q OwnedFd,
        layout: Layout,
        named: bool,
    ) -> Result<Writer<'q>, CommitError> {
        let (file, tmp_name) = create_file(queue, layout, named)?;
        let st = rustix::fs::fstat(&file)
            .map_err(|e| fail(QueueExit::TmpTrouble, "stat temporary file")(e.into()))?;
        Ok(Writer {
            queue,
            layout,
            file,
            tmp_name,
            id: st.st_ino,
            end: DEFAULT_RESERVE,
        })
    }

    /// The message id this file will have (its inode number).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Step 2: writes `first` (the Received line) and then everything from
    /// `input` until end of file. A read error is [`QueueExit::ReadFailed`];
    /// a write error (disk full) is [`QueueExit::WriteFailed`].
    pub fn write_message(
        &mut self,
        first: &[u8],
        input: &mut impl Read,
    ) -> Result<u64, CommitError> {
        self.file
            .write_all_at(first, self.end)
            .map_err(fail(QueueExit::WriteFailed, "write message"))?;
        self.end += first.len() as u64;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match input.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(fail(QueueExit::ReadFailed, "read message")(e)),
            };
            self.file
                .write_all_at(&buf[..n], self.end)
                .map_err(fail(QueueExit::WriteFailed, "write message"))?;
            self.end += n as u64;
        }
        Ok(self.end - DEFAULT_RESERVE)
    }

    /// Appends message bytes (the daemon's data frames); the first call
    /// puts `first` (the Received line) before them. A write error (disk
    /// full) is [`QueueExit::WriteFailed`].
    pub fn append(&mut self, first: &[u8], bytes: &[u8]) -> Result<(), CommitError> {
        if self.end == DEFAULT_RESERVE && !first.is_empty() {
            self.file
                .write_all_at(first, self.end)
                .map_err(fail(QueueExit::WriteFailed, "write message"))?;
            self.end += first.len() as u64;
        }
        self.file
            .write_all_at(bytes, self.end)
            .map_err(fail(QueueExit::WriteFailed, "write message"))?;
        self.end += bytes.len() as u64;
        Ok(())
    }

    /// Step 3: writes the header. Nothing is durable or named yet: the
    /// result goes to [`Prepared::commit`] or [`commit_batch`].
    pub fn prepare(
        mut self,
        origin: &Origin,
        envelope: &Envelope,
    ) -> Result<Prepared<'q>, CommitError> {
        let offset = qfile::offset_for(origin, envelope);
        if offset != DEFAULT_RESERVE {
            self.move_to_offset(offset)?;
        }
        let header = qfile::encode_header(origin, envelope, offset);
        self.file
            .write_all_at(&header, 0)
            .map_err(fail(QueueExit::WriteFailed, "write header"))?;
        Ok(Prepared { w: self })
    }

    /// Steps 3-6: writes the header, makes the file durable, links it into
    /// `new/`, makes the link durable. Returns the message id. On error,
    /// nothing is queued (the file is unnamed or removed).
    pub fn commit(self, origin: &Origin, envelope: &Envelope) -> Result<u64, CommitError> {
        self.prepare(origin, envelope)?.commit()
    }

    /// Copies the message into a fresh file whose header space is `offset`
    /// bytes (an envelope too large for the default reservation).
    fn move_to_offset(&mut self, offset: u64) -> Result<(), CommitError> {
        let (file, tmp_name) = create_file(self.queue, self.layout, self.tmp_name.is_some())?;
        let mut buf = vec![0u8; 64 * 1024];
        let mut from = DEFAULT_RESERVE;
        let mut to = offset;
        while from < self.end {
            let want = ((self.end - from) as usize).min(buf.len());
            self.file
                .read_exact_at(&mut buf[..want], from)
                .map_err(fail(QueueExit::WriteFailed, "copy message"))?;
            file.write_all_at(&buf[..want], to)
                .map_err(fail(QueueExit::WriteFailed, "copy message"))?;
            from += want as u64;
            to += want as u64;
        }
        let st = rustix::fs::fstat(&file)
            .map_err(|e| fail(QueueExit::TmpTrouble, "stat temporary file")(e.into()))?;
        self.discard_tmp();
        self.file = file;
        self.tmp_name = tmp_name;
        self.id = st.st_ino;
        self.end = to;
        Ok(())
    }

    fn discard_tmp(&mut self) {
        if let Some(name) = self.tmp_name.take() {
            let _ = rustix::fs::unlinkat(self.queue, &name, AtFlags::empty());
        }
    }
}

impl Drop for Writer<'_> {
    fn drop(&mut self) {
        // An uncommitted named file is removed; an unnamed one vanishes with
        // its last descriptor.
        self.discard_tmp();
    }
}

/// A queue file with its header written, not yet durable or named.
pub struct Prepared<'q> {
    w: Writer<'q>,
}

/// Where a prepared file was linked: its directory and name.
struct Linked {
    dir: File,
    name: String,
}

impl Prepared<'_> {
    /// The message id the file will have.
    pub fn id(&self) -> u64 {
        self.w.id
    }

    /// Steps 4-6 for one message: `fsync` the file (flush 1), link it into
    /// `new/<id % split>/` (the commit point), `fsync` that directory
    /// (flush 2). Returns the message id.
    pub fn commit(self) -> Result<u64, CommitError> {
        let mut w = self.w;
        w.file
            .sync_all()
            .map_err(fail(QueueExit::WriteFailed, "fsync message"))?;
        let linked = w.link()?;
        if let Err(e) = linked.dir.sync_all() {
            linked.undo();
            return Err(fail(QueueExit::SyncTrouble, "fsync new-message directory")(
                e,
            ));
        }
        Ok(w.id)
    }
}

impl Linked {
    /// Removes the name again, so that a failure report is the whole
    /// truth as far as we can make it (a retry may still duplicate, never
    /// lose).
    fn undo(&self) {
        let _ = rustix::fs::unlinkat(&self.dir, self.name.as_str(), AtFlags::empty());
        let _ = self.dir.sync_all();
    }
}

impl Writer<'_> {
    /// Step 5: links the file into `new/<id % split>/<id>`, never replacing
    /// a name.
    fn link(&mut self) -> Result<Linked, CommitError> {
        let id = self.id;
        let dir_path = self.layout.new_dir(id);
        let dir = rustix::fs::openat(
            self.queue,
            &dir_path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| fail(QueueExit::NewDirTrouble, "open new-message directory")(e.into()))?;
        let name = id.to_string();
        match &self.tmp_name {
            None => {
                let proc_path = format!("/proc/self/fd/{}", self.file.as_raw_fd());
                rustix::fs::linkat(
                    rustix::fs::CWD,
                    proc_path.as_str(),
                    &dir,
                    name.as_str(),
                    AtFlags::SYMLINK_FOLLOW,
                )
                .map_err(|e| {
                    fail(QueueExit::NewDirTrouble, "link into new-message directory")(e.into())
                })?;
            }
            Some(tmp) => {
                match rustix::fs::renameat_with(
                    self.queue,
                    tmp,
                    &dir,
                    name.as_str(),
                    RenameFlags::NOREPLACE,
                ) {
                    Ok(()) => {}
                    Err(rustix::io::Errno::INVAL) | Err(rustix::io::Errno::NOSYS) => {
                        rustix::fs::linkat(self.queue, tmp, &dir, name.as_str(), AtFlags::empty())
                            .map_err(|e| {
                                fail(QueueExit::NewDirTrouble, "link into new-message directory")(
                                    e.into(),
                                )
                            })?;
                        let _ = rustix::fs::unlinkat(self.queue, tmp, AtFlags::empty());
                    }
                    Err(e) => {
                        return Err(fail(
                            QueueExit::NewDirTrouble,
                            "rename into new-message directory",
                        )(e.into()));
                    }
                }
                self.tmp_name = None;
            }
        }
        Ok(Linked {
            dir: File::from(dir),
            name,
        })
    }
}

/// Steps 4-6 for a **group commit** of several prepared messages: the
/// flushes are shared. One `syncfs` of the queue's file system makes every
/// file's data and inode durable (where it fails, each file is `fsync`ed
/// instead); then each file is linked into `new/`; then the names are made
/// durable by one `fsync` of the directory when they are all in one, else
/// by a second `syncfs` (where it fails, an `fsync` of each directory).
/// Only then is any message of the batch reported committed, so each keeps
/// the promise of [`Prepared::commit`]: data and name on disk before the
/// answer. Two sync calls per batch, whatever its size; a batch of one
/// takes exactly the path of [`Prepared::commit`].
pub fn commit_batch(batch: Vec<Prepared<'_>>) -> Vec<Result<u64, CommitError>> {
    if batch.len() <= 1 {
        return batch.into_iter().map(Prepared::commit).collect();
    }
    let queue = batch[0].w.queue;
    let mut writers: Vec<Writer<'_>> = batch.into_iter().map(|p| p.w).collect();
    // Flush 1, shared: every file's data and inode.
    let mut results: Vec<Result<(), CommitError>> = match tern_sys::syncfs(queue) {
        Ok(()) => writers.iter().map(|_| Ok(())).collect(),
        Err(_) => writers
            .iter()
            .map(|w| {
                w.file
                    .sync_all()
                    .map_err(fail(QueueExit::WriteFailed, "fsync message"))
            })
            .collect(),
    };
    // The commit points.
    let mut linked: Vec<Option<Linked>> = Vec::with_capacity(writers.len());
    for (w, r) in writers.iter_mut().zip(results.iter_mut()) {
        if r.is_err() {
            linked.push(None);
            continue;
        }
        match w.link() {
            Ok(l) => linked.push(Some(l)),
            Err(e) => {
                *r = Err(e);
                linked.push(None);
            }
        }
    }
    // Flush 2, shared: the names.
    let mut dirs: Vec<&File> = Vec::new();
    let mut seen: Vec<u64> = Vec::new();
    for l in linked.iter().flatten() {
        let ino = rustix::fs::fstat(&l.dir).map(|st| st.st_ino).unwrap_or(0);
        if !seen.contains(&ino) {
            seen.push(ino);
            dirs.push(&l.dir);
        }
    }
    let synced = match dirs.len() {
        0 => Ok(()),
        1 => dirs[0].sync_all(),
        _ => tern_sys::syncfs(queue).or_else(|_| dirs.iter().try_for_each(|d| d.sync_all())),
    };
    if let Err(e) = synced {
        for l in linked.iter().flatten() {
            l.undo();
        }
        return writers
            .iter()
            .map(|_| {
                Err(CommitError {
                    exit: QueueExit::SyncTrouble,
                    step: "fsync new-message directory",
                    source: std::io::Error::new(e.kind(), e.to_string()),
                })
            })
            .collect();
    }
    writers
        .iter()
        .zip(results)
        .map(|(w, r)| r.map(|()| w.id))
        .collect()
}

/// Opens `queue/` below an open home directory (`O_DIRECTORY`).
pub fn open_queue_dir(home: impl AsFd) -> std::io::Result<OwnedFd> {
    rustix::fs::openat(
        home,
        "queue",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(Into::into)
}

/// Reads the layout (`format` file) through an open `queue/` directory.
pub fn read_layout(queue: &OwnedFd) -> Result<Layout, String> {
    let fd = rustix::fs::openat(
        queue,
        crate::layout::FORMAT_FILE,
        OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::empty(),
    )
    .map_err(|e| format!("open queue/format: {e}"))?;
    let mut text = Vec::new();
    File::from(fd)
        .take(256)
        .read_to_end(&mut text)
        .map_err(|e| format!("read queue/format: {e}"))?;
    Layout::parse(&text).map_err(|h| format!("queue/format: {h}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::Queue;

    #[test]
    fn a_batch_commits_every_message_whole_with_shared_flushes() {
        let dir = std::env::temp_dir().join(format!("tern-batch-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let q = dir.join("queue");
        crate::layout::create(&q, 5).unwrap();
        let home = rustix::fs::open(
            &dir,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .unwrap();
        let queue = open_queue_dir(&home).unwrap();
        let layout = read_layout(&queue).unwrap();
        let mut batch = Vec::new();
        for i in 0..4u32 {
            let mut w = Writer::create(&queue, layout).unwrap();
            let origin = Origin {
                uid: 1000 + i,
                pid: 0x8000_0000 + i,
                time: 1_700_000_000,
            };
            let received = received_line(7, origin.uid, origin.time);
            w.append(&received, format!("Subject: m{i}\n\n").as_bytes())
                .unwrap();
            w.append(&received, format!("body {i}\n").as_bytes())
                .unwrap();
            let env = Envelope {
                sender: format!("s{i}@example.com").into_bytes(),
                recipients: vec![b"r@example.com".to_vec()],
            };
            batch.push(w.prepare(&origin, &env).unwrap());
        }
        let ids: Vec<u64> = commit_batch(batch)
            .into_iter()
            .map(|r| r.expect("committed"))
            .collect();
        assert_eq!(ids.len(), 4);
        let scan = Queue::open(&q).unwrap().scan().unwrap();
        assert_eq!(scan.messages.len(), 4);
        for m in &scan.messages {
            let i = m.uid - 1000;
            let stored = Queue::open(&q).unwrap().read_message(m.id).unwrap();
            let text = String::from_utf8(stored).unwrap();
            assert!(
                text.starts_with(&format!(
                    "Received: (tern-queue 7 invoked by uid {})",
                    m.uid
                )),
                "{text}"
            );
            assert!(
                text.ends_with(&format!("Subject: m{i}\n\nbody {i}\n")),
                "{text}"
            );
            assert_eq!(m.sender, format!("s{i}@example.com").into_bytes());
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
