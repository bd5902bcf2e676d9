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

/// Why [`open_below`] refused a path (inside its `io::Error` of kind
/// `Other`; [`refusal`] finds it). Each names the offending path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refused {
    /// A component is a symbolic link.
    #[error("{0} is a symbolic link: refused (never followed below the queue)")]
    Link(PathBuf),
    /// A component that must be a directory is something else.
    #[error("{0} is not a directory: refused")]
    NotDir(PathBuf),
    /// The last component is not a regular file.
    #[error("{0} is not a regular file: refused")]
    NotFile(PathBuf),
    /// The last component belongs to another uid than its directory.
    #[error(
        "{path} belongs to uid {uid}, not to the owner of its directory (uid {dir_uid}): \
         refused (a file linked in from elsewhere?)"
    )]
    Owner {
        /// The path.
        path: PathBuf,
        /// Its owner.
        uid: u32,
        /// Its directory's owner.
        dir_uid: u32,
    },
}

/// The [`Refused`] inside an error from [`open_below`], if that is why it
/// failed.
pub fn refusal(e: &std::io::Error) -> Option<&Refused> {
    e.get_ref()?.downcast_ref::<Refused>()
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
/// checks what it opened: the last component must be what `last` says, and
/// must belong to the owner of the directory it is in (a hard link to
/// another uid's file, planted by the directory's owner, is refused).
/// `base` itself is trusted (its parents belong to root). For every open
/// below `queue/` by a process of another uid than the queue's (root's
/// tern-lspawn, tern-start and ternctl): whatever the queue's uid planted
/// there, this never reaches outside the queue and never hangs.
///
/// # Errors
/// A component is missing (`NotFound`, the raw `ENOENT`). A refusal is an
/// error of kind `Other` holding a [`Refused`] (see [`refusal`]) that
/// names the offending path: a component is a symbolic link or not a
/// directory, the last is not what `last` says or belongs to another uid
/// than its directory. Other system-call failures keep their own error.
pub fn open_below(base: &Path, rel: &Path, last: Last) -> std::io::Result<std::os::fd::OwnedFd> {
    use rustix::fs::{AtFlags, OFlags};
    use rustix::io::Errno;
    let dir_flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let mut fd = rustix::fs::open(base, dir_flags, Mode::empty())?;
    let mut path = base.to_path_buf();
    let parts: Vec<_> = rel.components().collect();
    if parts.is_empty() {
        return Err(std::io::Error::from(std::io::ErrorKind::InvalidInput));
    }
    let mut parent_uid = 0;
    for (i, part) in parts.iter().enumerate() {
        let std::path::Component::Normal(name) = part else {
            return Err(std::io::Error::from(std::io::ErrorKind::InvalidInput));
        };
        path.push(name);
        let is_last = i + 1 == parts.len();
        let flags = if is_last && last == Last::File {
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC
        } else {
            dir_flags | OFlags::NOFOLLOW
        };
        if is_last {
            parent_uid = rustix::fs::fstat(&fd)?.st_uid;
        }
        fd = match rustix::fs::openat(&fd, *name, flags, Mode::empty()) {
            Ok(next) => next,
            Err(e @ (Errno::LOOP | Errno::NOTDIR)) => {
                let link = rustix::fs::statat(&fd, *name, AtFlags::SYMLINK_NOFOLLOW)
                    .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Symlink);
                let path = path.clone();
                return Err(std::io::Error::other(if link {
                    Refused::Link(path)
                } else if e == Errno::NOTDIR {
                    Refused::NotDir(path)
                } else {
                    Refused::Link(path)
                }));
            }
            Err(e) => return Err(e.into()),
        };
    }
    let st = rustix::fs::fstat(&fd)?;
    let want = match last {
        Last::File => FileType::RegularFile,
        Last::Dir => FileType::Directory,
    };
    if FileType::from_raw_mode(st.st_mode) != want {
        return Err(std::io::Error::other(match last {
            Last::File => Refused::NotFile(path),
            Last::Dir => Refused::NotDir(path),
        }));
    }
    if st.st_uid != parent_uid {
        return Err(std::io::Error::other(Refused::Owner {
            path,
            uid: st.st_uid,
            dir_uid: parent_uid,
        }));
    }
    Ok(fd)
}

/// Creates `dir/name` with `mode` unless it exists, then opens it without
/// following a link: what exists there must be a directory (the queue's
/// uid could have put a link to a root-only directory in its place, and
/// root makes queues). Returns the directory and whether it was made.
fn mkdir_at(
    dir: &std::os::fd::OwnedFd,
    name: &str,
    mode: u32,
    path: &Path,
) -> Result<(std::os::fd::OwnedFd, bool), Error> {
    use rustix::fs::OFlags;
    use rustix::io::Errno;
    let made = match rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(mode)) {
        Ok(()) => true,
        Err(Errno::EXIST) => false,
        Err(e) => return Err(Error::io("mkdir", path, e.into())),
    };
    let fd = rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| {
        let e = match e {
            Errno::LOOP | Errno::NOTDIR => std::io::Error::other(
                "exists and is not a directory (or is a symbolic link): refused",
            ),
            e => e.into(),
        };
        Error::io("open directory", path, e)
    })?;
    if made {
        // The umask may have narrowed the mode; set it exactly.
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode))
            .map_err(|e| Error::io("chmod", path, e.into()))?;
    }
    Ok((fd, made))
}

/// Asks the file system to spread the directories made below `dir` over
/// its allocation groups (ext4's Orlov "top directory" hint, `chattr +T`),
/// best effort: file systems without the flag ignore it. A file's inode is
/// allocated near its directory, and on ext4 without a journal each
/// allocation scans the group's recently freed inodes: a queue whose files
/// all come and go in one group pays for every message deleted in the last
/// minutes, and twice when the mailboxes share that group. Spreading the
/// queue's directories (and an instance's `queue/` away from its `mail/`)
/// keeps that churn apart. Returns whether the flag is set.
pub fn spread_subdirs(dir: impl std::os::fd::AsFd) -> bool {
    use rustix::fs::IFlags;
    let Ok(flags) = rustix::fs::ioctl_getflags(&dir) else {
        return false;
    };
    flags.contains(IFlags::TOPDIR)
        || rustix::fs::ioctl_setflags(&dir, flags | IFlags::TOPDIR).is_ok()
}

fn fsync_fd(fd: &std::os::fd::OwnedFd, path: &Path) -> Result<(), Error> {
    rustix::fs::fsync(fd).map_err(|e| Error::io("fsync", path, e.into()))
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
///
/// Root runs this on an existing queue (`ternctl install` when `format` is
/// missing), whose directories belong to the queue's uid: everything below
/// `queue_dir` is made and opened relative to directory descriptors,
/// never through a symbolic link, and an entry that is not what it should
/// be is an error naming it (`queue_dir` itself must sit in a directory
/// the queue's uid cannot write).
pub fn create(queue_dir: &Path, split: u32) -> Result<Layout, Error> {
    use rustix::fs::{AtFlags, OFlags};
    use rustix::io::Errno;
    if split == 0 || split > MAX_SPLIT {
        return Err(Error::Format {
            path: queue_dir.to_path_buf(),
            hint: "split must be between 1 and 9999",
        });
    }
    if let Some(parent) = queue_dir.parent() {
        fs::create_dir_all(parent).map_err(|e| Error::io("mkdir", parent, e))?;
    }
    let parent = match queue_dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(p) => p,
        None => Path::new("."),
    };
    let parent_fd = rustix::fs::open(
        parent,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::io("open directory", parent, e.into()))?;
    let Some(qname) = queue_dir.file_name().and_then(|n| n.to_str()) else {
        return Err(Error::Format {
            path: queue_dir.to_path_buf(),
            hint: "the queue directory needs a name",
        });
    };
    // queue_dir itself is the administrator's (a link to another disk is
    // fine): its parent is not the queue's uid's to change.
    let made = match rustix::fs::mkdirat(&parent_fd, qname, Mode::from_raw_mode(0o750)) {
        Ok(()) => true,
        Err(Errno::EXIST) => false,
        Err(e) => return Err(Error::io("mkdir", queue_dir, e.into())),
    };
    let q = rustix::fs::open(
        queue_dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::io("open directory", queue_dir, e.into()))?;
    if made {
        rustix::fs::fchmod(&q, Mode::from_raw_mode(0o750))
            .map_err(|e| Error::io("chmod", queue_dir, e.into()))?;
        // The new entry in the parent must survive a crash too.
        fsync_fd(&parent_fd, parent)?;
        spread_subdirs(&q);
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
    for (name, mode) in [(TMP_DIR, 0o700), (STATE_DIR, 0o700), (REMOTE_DIR, 0o700)] {
        mkdir_at(&q, name, mode, &queue_dir.join(name))?;
    }
    for top in [NEW_DIR, CUR_DIR] {
        let t_path = queue_dir.join(top);
        let (t, made) = mkdir_at(&q, top, 0o750, &t_path)?;
        if made && top == NEW_DIR {
            // Messages are created in new/'s buckets (commit.rs): one group each.
            spread_subdirs(&t);
        }
        for b in 0..layout.split {
            let b = b.to_string();
            mkdir_at(&t, &b, 0o750, &t_path.join(&b))?;
        }
        fsync_fd(&t, &t_path)?;
    }
    let lock_path = queue_dir.join(LOCK_DIR);
    let (lock, _) = mkdir_at(&q, LOCK_DIR, 0o750, &lock_path)?;
    let trigger = queue_dir.join(TRIGGER);
    let trigger_name = Path::new(TRIGGER).file_name().expect("TRIGGER has a name");
    match rustix::fs::statat(&lock, trigger_name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(_) => {}
        Err(Errno::NOENT) => {
            rustix::fs::mknodat(
                &lock,
                trigger_name,
                FileType::Fifo,
                Mode::from_raw_mode(0o622),
                0,
            )
            .map_err(|e| Error::io("mkfifo", &trigger, e.into()))?;
            // Opened without blocking (no writer) and without following a
            // link, to set the mode the umask narrowed.
            let fifo = rustix::fs::openat(
                &lock,
                trigger_name,
                OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| Error::io("open", &trigger, e.into()))?;
            if FileType::from_raw_mode(
                rustix::fs::fstat(&fifo)
                    .map_err(|e| Error::io("stat", &trigger, e.into()))?
                    .st_mode,
            ) != FileType::Fifo
            {
                return Err(Error::io(
                    "mkfifo",
                    &trigger,
                    std::io::Error::other("replaced by something that is not a FIFO: refused"),
                ));
            }
            rustix::fs::fchmod(&fifo, Mode::from_raw_mode(0o622))
                .map_err(|e| Error::io("chmod", &trigger, e.into()))?;
        }
        Err(e) => return Err(Error::io("stat", &trigger, e.into())),
    }
    fsync_fd(&lock, &lock_path)?;
    match rustix::fs::statat(&q, FORMAT_FILE, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(_) => {}
        Err(Errno::NOENT) => {
            // The directories above are durable before the format file that
            // says the queue is complete.
            fsync_fd(&q, queue_dir)?;
            // Written last and atomically: a queue with a format file is
            // complete. A leftover format.tmp (or one the queue's uid
            // planted, a link to a root file) is removed, never written
            // through: the new one is created exclusively.
            let tmp = queue_dir.join("format.tmp");
            match rustix::fs::unlinkat(&q, "format.tmp", AtFlags::empty()) {
                Ok(()) | Err(Errno::NOENT) => {}
                Err(e) => return Err(Error::io("remove", &tmp, e.into())),
            }
            let fd = rustix::fs::openat(
                &q,
                "format.tmp",
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o644),
            )
            .map_err(|e| Error::io("create", &tmp, e.into()))?;
            let mut f = fs::File::from(fd);
            f.write_all(layout.render().as_bytes())
                .and_then(|_| f.sync_all())
                .map_err(|e| Error::io("write", &tmp, e))?;
            rustix::fs::fchmod(&f, Mode::from_raw_mode(0o644))
                .map_err(|e| Error::io("chmod", &tmp, e.into()))?;
            rustix::fs::renameat(&q, "format.tmp", &q, FORMAT_FILE)
                .map_err(|e| Error::io("rename", &format_path, e.into()))?;
        }
        Err(e) => return Err(Error::io("stat", &format_path, e.into())),
    }
    fsync_fd(&q, queue_dir)?;
    Ok(layout)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

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

    #[test]
    fn create_spreads_the_queue_and_its_buckets_where_the_file_system_can() {
        use rustix::fs::IFlags;
        let dir = scratch("spread");
        let q = dir.join("queue");
        create(&q, 5).unwrap();
        let flags = |p: &Path| {
            let d = fs::File::open(p).unwrap();
            rustix::fs::ioctl_getflags(&d).map(|f| f.contains(IFlags::TOPDIR))
        };
        match flags(&q) {
            // tmpfs and others have no such flags: nothing to check.
            Err(_) => {}
            Ok(top) => {
                assert!(top, "queue/ marked to spread its directories");
                assert!(flags(&q.join(NEW_DIR)).unwrap(), "new/ too");
                assert!(!flags(&q.join(CUR_DIR)).unwrap(), "cur/ not");
            }
        }
        let _ = fs::remove_dir_all(&dir);
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tern-below-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn mkfifo(path: &Path) {
        rustix::fs::mknodat(
            rustix::fs::CWD,
            path,
            FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
    }

    /// Runs `f` on another thread; a hang fails the test instead of
    /// blocking it for ever.
    fn no_hang<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(std::time::Duration::from_secs(60))
            .expect("hung (on a FIFO?)")
    }

    #[test]
    fn open_below_follows_no_link_and_opens_no_fifo() {
        let dir = scratch("open");
        let q = dir.join("queue");
        create(&q, 2).unwrap();
        let outside = dir.join("outside");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("1"), "secret").unwrap();
        fs::write(dir.join("file"), "secret").unwrap();

        // Missing: NotFound, as callers expect.
        let e = open_below(&q, Path::new("cur/1/9"), Last::File).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
        assert!(open_below(&q, Path::new("cur/1"), Last::Dir).is_ok());
        assert!(open_below(&q, Path::new(FORMAT_FILE), Last::File).is_ok());

        // A linked intermediate directory, a linked last component, a
        // file where a directory should be, and a FIFO: each refused with
        // the offending path named, nothing waited on.
        fs::rename(q.join("cur/1"), q.join("cur/1.real")).unwrap();
        std::os::unix::fs::symlink(&outside, q.join("cur/1")).unwrap();
        std::os::unix::fs::symlink(dir.join("file"), q.join("cur/0/7")).unwrap();
        fs::write(q.join("new/0/x"), "").unwrap();
        mkfifo(&q.join("new/1/5"));
        for (rel, last, named) in [
            ("cur/1/1", Last::File, "cur/1 is a symbolic link"),
            ("cur/1", Last::Dir, "cur/1 is a symbolic link"),
            ("cur/0/7", Last::File, "cur/0/7 is a symbolic link"),
            ("new/0/x/1", Last::File, "new/0/x is not a directory"),
            ("new/1/5", Last::File, "new/1/5 is not a regular file"),
            ("new/1/5", Last::Dir, "new/1/5 is not a directory"),
        ] {
            let q2 = q.clone();
            let e = no_hang(move || open_below(&q2, Path::new(rel), last).unwrap_err());
            assert_eq!(e.kind(), std::io::ErrorKind::Other, "{rel}: {e}");
            assert!(e.to_string().contains(named), "{rel}: {e}");
        }
        // The queue layout readers see the same.
        fs::remove_file(q.join(FORMAT_FILE)).unwrap();
        mkfifo(&q.join(FORMAT_FILE));
        let q2 = q.clone();
        let e = no_hang(move || Layout::read(&q2).unwrap_err()).to_string();
        assert!(e.contains("format is not a regular file"), "{e}");
        fs::remove_file(q.join(FORMAT_FILE)).unwrap();
        std::os::unix::fs::symlink(dir.join("file"), q.join(FORMAT_FILE)).unwrap();
        let e = Layout::read(&q).unwrap_err().to_string();
        assert!(e.contains("format is a symbolic link"), "{e}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn open_below_refuses_a_file_of_another_owner() {
        if !rustix::process::geteuid().is_root() {
            // Not root: chown is not ours to do (CI runs as root).
            #[allow(clippy::print_stderr)]
            {
                eprintln!("SKIP: open_below_refuses_a_file_of_another_owner: needs root (chown)");
            }
            return;
        }
        let dir = scratch("owner");
        let q = dir.join("queue");
        create(&q, 1).unwrap();
        // A file the directory's owner did not make (a hard link to
        // another uid's file looks the same).
        fs::write(q.join("cur/0/3"), "x").unwrap();
        std::os::unix::fs::chown(q.join("cur/0/3"), Some(1), None).unwrap();
        let e = open_below(&q, Path::new("cur/0/3"), Last::File).unwrap_err();
        assert!(e.to_string().contains("cur/0/3 belongs to uid 1"), "{e}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn create_never_writes_through_what_the_queue_uid_planted() {
        let dir = scratch("create");
        let q = dir.join("queue");
        create(&q, 2).unwrap();
        // format gone, format.tmp a link to a file outside: completing the
        // queue replaces the link, never writes the file.
        let victim = dir.join("victim");
        fs::write(&victim, "precious\n").unwrap();
        fs::set_permissions(&victim, fs::Permissions::from_mode(0o600)).unwrap();
        fs::remove_file(q.join(FORMAT_FILE)).unwrap();
        std::os::unix::fs::symlink(&victim, q.join("format.tmp")).unwrap();
        assert_eq!(create(&q, 2).unwrap().split, 2);
        assert_eq!(fs::read(&victim).unwrap(), b"precious\n");
        assert_eq!(
            fs::metadata(&victim).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(fs::symlink_metadata(q.join(FORMAT_FILE)).unwrap().is_file());

        // new/ a link to a directory outside: refused by name, nothing
        // made there; the same for a link as the trigger's directory.
        let outside = dir.join("outside");
        fs::create_dir(&outside).unwrap();
        fs::remove_file(q.join(FORMAT_FILE)).unwrap();
        fs::rename(q.join("new"), q.join("new.real")).unwrap();
        std::os::unix::fs::symlink(&outside, q.join("new")).unwrap();
        let e = create(&q, 2).unwrap_err().to_string();
        assert!(
            e.contains("queue/new") && e.contains("symbolic link"),
            "{e}"
        );
        fs::remove_file(q.join("new")).unwrap();
        fs::rename(q.join("new.real"), q.join("new")).unwrap();
        fs::rename(q.join("lock"), q.join("lock.real")).unwrap();
        std::os::unix::fs::symlink(&outside, q.join("lock")).unwrap();
        let e = create(&q, 2).unwrap_err().to_string();
        assert!(
            e.contains("queue/lock") && e.contains("symbolic link"),
            "{e}"
        );
        assert_eq!(
            fs::read_dir(&outside).unwrap().count(),
            0,
            "made something outside"
        );
        assert!(
            !q.join(FORMAT_FILE).exists(),
            "a queue with a linked dir is not complete"
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
