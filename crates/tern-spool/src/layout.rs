//! The directories under `queue/` and how a message id maps to a path.
//!
//! ```text
//! queue/format            "tern-queue-format 1\nsplit N\n" (fixed at install)
//! queue/tmp/              files being written when O_TMPFILE is unavailable
//! queue/new/<0..N-1>/<id> committed messages not yet picked up by tern-send
//! queue/cur/<0..N-1>/<id> messages tern-send has taken over
//! queue/lock/trigger      FIFO: a byte written here wakes tern-send
//! queue/state/            the queue manager's journal, lock and pid file
//! queue/remote/           tern-remote's memory of hosts (timeouts, TLS failures)
//! ```
//!
//! A message id is the inode number of its queue file; the file lives in
//! split directory `id % N`. The split N is chosen when the queue is created
//! and recorded in `queue/format`; it can never change afterwards, because
//! every path depends on it.

use crate::Error;
use rustix::fs::{FileType, Mode};
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The split used when none is given: a prime, as in qmail's conf-split.
pub const DEFAULT_SPLIT: u32 = 23;
/// The largest split accepted.
pub const MAX_SPLIT: u32 = 9999;
/// Name of the format file.
pub const FORMAT_FILE: &str = "format";
/// Directory of files being written (named-file fallback only).
pub const TMP_DIR: &str = "tmp";
/// Directory of committed, not yet picked-up messages.
pub const NEW_DIR: &str = "new";
/// Directory of messages the manager has taken over.
pub const CUR_DIR: &str = "cur";
/// Directory of locks and the trigger.
pub const LOCK_DIR: &str = "lock";
/// Path of the wake-up FIFO, relative to `queue/`.
pub const TRIGGER: &str = "lock/trigger";
/// Directory of the queue manager's own state (journal, pid, lock).
pub const STATE_DIR: &str = "state";
/// Directory of tern-remote's host memory (owned by `ternr` in a root
/// install): which hosts timed out or failed TLS recently.
pub const REMOTE_DIR: &str = "remote";

const FORMAT_MAGIC: &str = "tern-queue-format 1";

/// The fixed parameters of one queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Number of hashed subdirectories in `new/` and `cur/`.
    pub split: u32,
}

impl Layout {
    /// The split directory of a message id.
    pub fn bucket(&self, id: u64) -> u64 {
        id % u64::from(self.split)
    }

    /// `new/<bucket>` for a message id, relative to `queue/`.
    pub fn new_dir(&self, id: u64) -> PathBuf {
        PathBuf::from(format!("{NEW_DIR}/{}", self.bucket(id)))
    }

    /// `cur/<bucket>` for a message id, relative to `queue/`.
    pub fn cur_dir(&self, id: u64) -> PathBuf {
        PathBuf::from(format!("{CUR_DIR}/{}", self.bucket(id)))
    }

    /// Parses the text of `queue/format`.
    pub fn parse(text: &[u8]) -> Result<Layout, &'static str> {
        let text = std::str::from_utf8(text).map_err(|_| "format file is not text")?;
        let mut lines = text.lines();
        if lines.next() != Some(FORMAT_MAGIC) {
            return Err("not a tern-queue-format 1 queue");
        }
        let split = lines
            .next()
            .and_then(|l| l.strip_prefix("split "))
            .ok_or("format file lacks its split line")?;
        if split.is_empty() || split.len() > 4 || !split.bytes().all(|b| b.is_ascii_digit()) {
            return Err("split is not a number of at most 4 digits");
        }
        let split: u32 = split.parse().map_err(|_| "split is not a number")?;
        if split == 0 {
            return Err("split must be at least 1");
        }
        if lines.any(|l| !l.is_empty()) {
            return Err("unexpected lines in format file");
        }
        Ok(Layout { split })
    }

    /// The text of `queue/format` for this layout.
    pub fn render(&self) -> String {
        format!("{FORMAT_MAGIC}\nsplit {}\n", self.split)
    }

    /// Reads `queue_dir/format`.
    pub fn read(queue_dir: &Path) -> Result<Layout, Error> {
        let path = queue_dir.join(FORMAT_FILE);
        let mut text = Vec::new();
        // queue/ belongs to the queue's uid, which could put a link or a
        // FIFO here; root (tern-lspawn, ternctl) reads it too.
        let f = fs::File::from(
            open_below(queue_dir, Path::new(FORMAT_FILE), Last::File)
                .map_err(|e| Error::io("open", &path, e))?,
        );
        use std::io::Read as _;
        f.take(256)
            .read_to_end(&mut text)
            .map_err(|e| Error::io("read", &path, e))?;
        Layout::parse(&text).map_err(|hint| Error::Format { path, hint })
    }
}

/// What the last component of an [`open_below`] path must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Last {
    /// A regular file, opened read-only.
    File,
    /// A directory.
    Dir,
}

/// Opens `base/rel` without following a symbolic link in any component of
/// `rel` (each is opened with `openat` and `O_NOFOLLOW`, the intermediate
/// ones with `O_DIRECTORY`), without blocking on a FIFO (`O_NONBLOCK`), and
/// checks that what it opened is what `last` says. `base` itself is
/// trusted (its parents belong to root). For every open below `queue/` by
/// a process of another uid than the queue's (root's tern-lspawn and
/// ternctl): whatever the queue's uid planted there, this never reaches
/// outside the queue and never hangs.
///
/// # Errors
/// A component is missing, is a symbolic link (`ELOOP`), is not a
/// directory (`ENOTDIR`), or the last is not a regular file (`EINVAL`
/// when a file was wanted).
pub fn open_below(base: &Path, rel: &Path, last: Last) -> std::io::Result<std::os::fd::OwnedFd> {
    use rustix::fs::OFlags;
    let dir_flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let mut fd = rustix::fs::open(base, dir_flags, Mode::empty())?;
    let parts: Vec<_> = rel.components().collect();
    for (i, part) in parts.iter().enumerate() {
        let std::path::Component::Normal(name) = part else {
            return Err(std::io::Error::from(std::io::ErrorKind::InvalidInput));
        };
        let is_last = i + 1 == parts.len();
        let flags = if is_last && last == Last::File {
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC
        } else {
            dir_flags | OFlags::NOFOLLOW
        };
        fd = rustix::fs::openat(&fd, *name, flags, Mode::empty())?;
    }
    if last == Last::File {
        let st = rustix::fs::fstat(&fd)?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return Err(std::io::Error::other(format!(
                "{} is not a regular file",
                base.join(rel).display()
            )));
        }
    }
    Ok(fd)
}

fn mkdir(path: &Path, mode: u32) -> Result<bool, Error> {
    match fs::DirBuilder::new().mode(mode).create(path) {
        Ok(()) => {
            // The umask may have narrowed the mode; set it exactly.
            fs::set_permissions(path, fs::Permissions::from_mode(mode))
                .map_err(|e| Error::io("chmod", path, e))?;
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            if path.is_dir() {
                Ok(false)
            } else {
                Err(Error::io("mkdir", path, e))
            }
        }
        Err(e) => Err(Error::io("mkdir", path, e)),
    }
}

/// Fsyncs a directory (so the entries it gained or lost are durable).
pub(crate) fn sync_dir(path: &Path) -> Result<(), Error> {
    fs::File::open(path)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("fsync", path, e))
}

/// Creates a queue in `queue_dir` with `split` hashed subdirectories, or
/// completes one that exists. Idempotent: an existing queue keeps its
/// messages and its split; asking for a different split than the recorded one
/// is an error, because every message path depends on it.
///
/// Modes follow the root install's ownership plan (docs/queue.md): the
/// owner writes everything; the group may read `new/` and `cur/`; the FIFO is
/// writable by all so that any injector can wake the manager.
pub fn create(queue_dir: &Path, split: u32) -> Result<Layout, Error> {
    if split == 0 || split > MAX_SPLIT {
        return Err(Error::Format {
            path: queue_dir.to_path_buf(),
            hint: "split must be between 1 and 9999",
        });
    }
    if let Some(parent) = queue_dir.parent() {
        fs::create_dir_all(parent).map_err(|e| Error::io("mkdir", parent, e))?;
    }
    if mkdir(queue_dir, 0o750)? {
        // The new entry in the parent must survive a crash too.
        if let Some(parent) = queue_dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent)?;
        }
    }
    let format_path = queue_dir.join(FORMAT_FILE);
    let layout = match Layout::read(queue_dir) {
        Ok(existing) => {
            if existing.split != split {
                return Err(Error::Format {
                    path: format_path,
                    hint: "queue exists with a different split; the split cannot change",
                });
            }
            existing
        }
        Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            Layout { split }
        }
        Err(e) => return Err(e),
    };
    mkdir(&queue_dir.join(TMP_DIR), 0o700)?;
    mkdir(&queue_dir.join(LOCK_DIR), 0o750)?;
    mkdir(&queue_dir.join(STATE_DIR), 0o700)?;
    mkdir(&queue_dir.join(REMOTE_DIR), 0o700)?;
    for top in [NEW_DIR, CUR_DIR] {
        let t = queue_dir.join(top);
        mkdir(&t, 0o750)?;
        for b in 0..layout.split {
            mkdir(&t.join(b.to_string()), 0o750)?;
        }
        sync_dir(&t)?;
    }
    let trigger = queue_dir.join(TRIGGER);
    match fs::symlink_metadata(&trigger) {
        Ok(_) => {}
        Err(_) => {
            rustix::fs::mknodat(
                rustix::fs::CWD,
                &trigger,
                FileType::Fifo,
                Mode::from_raw_mode(0o622),
                0,
            )
            .map_err(|e| Error::io("mkfifo", &trigger, e.into()))?;
            fs::set_permissions(&trigger, fs::Permissions::from_mode(0o622))
                .map_err(|e| Error::io("chmod", &trigger, e))?;
        }
    }
    sync_dir(&queue_dir.join(LOCK_DIR))?;
    if !format_path.exists() {
        // The directories above are durable before the format file that
        // says the queue is complete.
        sync_dir(queue_dir)?;
        // Written last and atomically: a queue with a format file is complete.
        let tmp = queue_dir.join("format.tmp");
        let mut f = fs::File::create(&tmp).map_err(|e| Error::io("create", &tmp, e))?;
        f.write_all(layout.render().as_bytes())
            .and_then(|_| f.sync_all())
            .map_err(|e| Error::io("write", &tmp, e))?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o644))
            .map_err(|e| Error::io("chmod", &tmp, e))?;
        fs::rename(&tmp, &format_path).map_err(|e| Error::io("rename", &format_path, e))?;
    }
    sync_dir(queue_dir)?;
    Ok(layout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_format() {
        let bad: &[(&[u8], &str)] = &[
            (b"", "not a tern-queue-format 1 queue"),
            (
                b"tern-queue-format 2\nsplit 23\n",
                "not a tern-queue-format 1 queue",
            ),
            (b"tern-queue-format 1\n", "format file lacks its split line"),
            (
                b"tern-queue-format 1\nsplit \n",
                "split is not a number of at most 4 digits",
            ),
            (
                b"tern-queue-format 1\nsplit 0\n",
                "split must be at least 1",
            ),
            (
                b"tern-queue-format 1\nsplit 12345\n",
                "split is not a number of at most 4 digits",
            ),
            (
                b"tern-queue-format 1\nsplit -1\n",
                "split is not a number of at most 4 digits",
            ),
            (
                b"tern-queue-format 1\nsplit 23\nx\n",
                "unexpected lines in format file",
            ),
            (b"\xff", "format file is not text"),
        ];
        for (input, want) in bad {
            assert_eq!(Layout::parse(input), Err(*want), "{input:?}");
        }
        assert_eq!(
            Layout::parse(b"tern-queue-format 1\nsplit 23\n"),
            Ok(Layout { split: 23 })
        );
        let l = Layout { split: 7 };
        assert_eq!(Layout::parse(l.render().as_bytes()), Ok(l));
        assert_eq!(l.new_dir(15), PathBuf::from("new/1"));
        assert_eq!(l.cur_dir(14), PathBuf::from("cur/0"));
    }

    #[test]
    fn create_is_idempotent_and_split_is_fixed() {
        let dir = std::env::temp_dir().join(format!("tern-layout-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let q = dir.join("queue");
        assert_eq!(create(&q, 5).unwrap(), Layout { split: 5 });
        assert!(q.join("new/4").is_dir());
        assert!(q.join("cur/0").is_dir());
        let ft = fs::symlink_metadata(q.join(TRIGGER)).unwrap().file_type();
        use std::os::unix::fs::FileTypeExt;
        assert!(ft.is_fifo());
        fs::write(q.join("new/3/keep"), b"x").unwrap();
        assert_eq!(create(&q, 5).unwrap(), Layout { split: 5 });
        assert!(q.join("new/3/keep").exists());
        assert!(create(&q, 7).is_err());
        assert!(create(&dir.join("q2"), 0).is_err());
        fs::remove_dir_all(&dir).unwrap();
    }
}
