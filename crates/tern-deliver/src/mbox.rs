//! mbox delivery: lock, append, fsync; on failure, cut the file back.
//!
//! Locking, in this order, within one wait budget (`lock_wait`, 30 s in
//! `tern-local`):
//!
//! 1. the dot-lock `<mbox>.lock`, created with `O_EXCL`; a dot-lock older
//!    than [`STALE_DOTLOCK`] is taken as left by a crashed writer and
//!    removed; when the directory does not let us create it (EACCES,
//!    EPERM, EROFS) delivery goes on with the fcntl lock alone, as
//!    mail readers do;
//! 2. an exclusive `fcntl` lock on the whole file (`F_SETLK`, retried),
//!    which mail readers (mutt, Dovecot, procmail) take too. A file
//!    system without fcntl locks (ENOLCK, EINVAL, EOPNOTSUPP) is used
//!    unlocked, as qmail does.
//!
//! Lock not obtained in time → temporary failure. Then the `From ` line,
//! Return-Path, Delivered-To and the message are appended, each line
//! matching `>*From ` gets one more `>`, a final LF is added when missing,
//! then one blank line; fsync. On a write or fsync error the file is
//! truncated back to its length before the delivery (when it was locked)
//! and the failure is temporary. An mbox this delivery created also has
//! its directory fsynced before success is reported.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use rustix::fs::{FlockOperation, fcntl_lock};
use rustix::io::Errno;

use crate::message::Message;
use crate::{Error, ErrorKind};

/// Age after which a dot-lock is considered stale and removed.
pub const STALE_DOTLOCK: Duration = Duration::from_secs(300);

/// Pause between two lock attempts.
const RETRY: Duration = Duration::from_millis(100);

/// Removes the dot-lock when dropped.
struct DotLock {
    path: PathBuf,
}

impl Drop for DotLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn locked_error(path: &Path, wait: Duration) -> Error {
    Error::new(
        ErrorKind::MboxLocked,
        format!(
            "File {} has been locked for {} seconds straight. (#4.2.1)",
            path.display(),
            wait.as_secs_f64()
        ),
    )
}

fn mbox_error(path: &Path, what: &str, e: &io::Error) -> Error {
    Error::new(
        ErrorKind::Mbox,
        format!("{what} {}: {e}. (#4.2.1)", path.display()),
    )
}

fn sleep_until_next(deadline: Instant) -> bool {
    let now = Instant::now();
    if now >= deadline {
        return false;
    }
    std::thread::sleep(RETRY.min(deadline - now));
    true
}

/// Takes the dot-lock, or `None` when the directory does not allow one.
fn dot_lock(mbox: &Path, deadline: Instant, wait: Duration) -> Result<Option<DotLock>, Error> {
    let mut name = mbox.as_os_str().to_owned();
    name.push(".lock");
    let path = PathBuf::from(name);
    loop {
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(_) => return Ok(Some(DotLock { path })),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let stale = std::fs::symlink_metadata(&path)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| SystemTime::now().duration_since(t).ok())
                    .is_some_and(|age| age > STALE_DOTLOCK);
                if stale {
                    let _ = std::fs::remove_file(&path);
                    continue;
                }
                if !sleep_until_next(deadline) {
                    return Err(locked_error(mbox, wait));
                }
            }
            Err(e)
                if matches!(
                    e.raw_os_error().map(Errno::from_raw_os_error),
                    Some(Errno::ACCESS | Errno::PERM | Errno::ROFS)
                ) =>
            {
                return Ok(None);
            }
            Err(e) => return Err(mbox_error(&path, "Unable to create dot-lock", &e)),
        }
    }
}

/// Takes the fcntl lock. Ok(false): the file system has no such locks.
fn fcntl_lock_wait(
    file: &File,
    path: &Path,
    deadline: Instant,
    wait: Duration,
) -> Result<bool, Error> {
    loop {
        match fcntl_lock(file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => return Ok(true),
            Err(Errno::AGAIN | Errno::ACCESS | Errno::INTR) => {
                if !sleep_until_next(deadline) {
                    return Err(locked_error(path, wait));
                }
            }
            Err(Errno::NOLCK | Errno::INVAL | Errno::OPNOTSUPP) => return Ok(false),
            Err(e) => return Err(mbox_error(path, "Unable to lock", &io::Error::from(e))),
        }
    }
}

/// Appends `message` to the mbox `path` with `from_line` and `prefix`
/// (Return-Path, Delivered-To) before it. `lock_wait` bounds the wait for
/// both locks together.
///
/// # Errors
/// Temporary, always: locked too long, cannot open or lock, write or fsync
/// failed (the file is then cut back).
pub fn deliver(
    path: &Path,
    from_line: &[u8],
    prefix: &[u8],
    message: &Message,
    lock_wait: Duration,
) -> Result<(), Error> {
    let deadline = Instant::now() + lock_wait;
    let _dot = dot_lock(path, deadline, lock_wait)?;
    let (file, created) = open_mbox(path).map_err(|e| mbox_error(path, "Unable to open", &e))?;
    let locked = fcntl_lock_wait(&file, path, deadline, lock_wait)?;
    let start = file
        .metadata()
        .map_err(|e| mbox_error(path, "Unable to stat", &e))?
        .len();
    let written = write_entry(&file, from_line, prefix, message).and_then(|()| file.sync_all());
    if let Err(e) = written {
        if locked {
            let _ = file.set_len(start);
            let _ = file.sync_all();
        }
        return Err(mbox_error(path, "Unable to write", &e));
    }
    // A new mbox's directory entry must be durable too, or a crash can
    // lose the file with the message in it.
    if created {
        sync_parent(path).map_err(|e| mbox_error(path, "Unable to fsync the directory of", &e))?;
    }
    // Closing the file releases the fcntl lock; then the dot-lock goes.
    drop(file);
    Ok(())
}

/// Opens the mbox for appending, creating it (mode 0600) when missing.
/// The flag says whether this call created it.
///
/// `O_NONBLOCK`, then the file must be regular: an mbox path that is a
/// FIFO would otherwise block `open` until a reader comes (tern-local
/// hung past its own timeout); a device is no mailbox either.
fn open_mbox(path: &Path) -> io::Result<(File, bool)> {
    let nonblock = rustix::fs::OFlags::NONBLOCK.bits() as i32;
    let (file, created) = match OpenOptions::new()
        .append(true)
        .custom_flags(nonblock)
        .open(path)
    {
        Ok(f) => (f, false),
        Err(e) if e.kind() == io::ErrorKind::NotFound => OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .custom_flags(nonblock)
            .open(path)
            .map(|f| (f, true))?,
        Err(e) => return Err(e),
    };
    if !file.metadata()?.file_type().is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    Ok((file, created))
}

/// fsyncs the directory holding `path`.
fn sync_parent(path: &Path) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

/// True for a line that needs a `>` in front: `>*From `.
fn needs_quote(line: &[u8]) -> bool {
    let rest = &line[line.iter().take_while(|&&b| b == b'>').count()..];
    rest.starts_with(b"From ")
}

fn write_entry(file: &File, from_line: &[u8], prefix: &[u8], message: &Message) -> io::Result<()> {
    let mut w = io::BufWriter::with_capacity(64 * 1024, file);
    w.write_all(from_line)?;
    w.write_all(prefix)?;
    let mut r = io::BufReader::with_capacity(64 * 1024, message.reader());
    let mut line = Vec::with_capacity(1024);
    let mut ends_with_lf = true;
    loop {
        line.clear();
        // Lines can be long; read_until grows `line` only to one line.
        let n = r.read_until(b'\n', &mut line)?;
        if n == 0 {
            break;
        }
        if needs_quote(&line) {
            w.write_all(b">")?;
        }
        w.write_all(&line)?;
        ends_with_lf = line.ends_with(b"\n");
    }
    if !ends_with_lf {
        w.write_all(b"\n")?;
    }
    w.write_all(b"\n")?;
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{message, scratch};
    use std::os::fd::AsRawFd;

    #[test]
    fn quoting() {
        for (line, want) in [
            (&b"From x"[..], true),
            (b">From x", true),
            (b">>>From x", true),
            (b"From", false),
            (b"from x", false),
            (b" From x", false),
            (b">", false),
            (b"", false),
        ] {
            assert_eq!(needs_quote(line), want, "{line:?}");
        }
    }

    #[test]
    fn appends_with_from_line_quoting_and_blank_line() {
        let root = scratch("mbox");
        let path = root.join("mbox");
        std::fs::write(&path, b"old\n\n").unwrap();
        let body = b"Subject: x\n\nFrom me\n>From you\nFrom\n no final newline";
        deliver(
            &path,
            b"From a@b Thu Jan  1 00:00:00 1970\n",
            b"Return-Path: <a@b>\n",
            &message(body),
            Duration::from_secs(1),
        )
        .unwrap();
        deliver(
            &path,
            b"From c@d Thu Jan  1 00:00:00 1970\n",
            b"",
            &message(b"two\n"),
            Duration::from_secs(1),
        )
        .unwrap();
        let got = std::fs::read(&path).unwrap();
        let want = b"old\n\nFrom a@b Thu Jan  1 00:00:00 1970\nReturn-Path: <a@b>\nSubject: x\n\n>From me\n>>From you\nFrom\n no final newline\n\nFrom c@d Thu Jan  1 00:00:00 1970\ntwo\n\n";
        assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(want));
        assert!(!root.join("mbox.lock").exists(), "dot-lock removed");
    }

    /// Holds an open-file-description lock on `path`: it conflicts with
    /// the process-associated lock delivery takes, even in this process.
    fn hold_ofd_lock(path: &Path) -> File {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .unwrap();
        let lock = libc::flock {
            l_type: libc::F_WRLCK as _,
            l_whence: libc::SEEK_SET as _,
            l_start: 0,
            l_len: 0,
            l_pid: 0,
        };
        let _ = f.as_raw_fd();
        nix::fcntl::fcntl(&f, nix::fcntl::FcntlArg::F_OFD_SETLK(&lock)).unwrap();
        f
    }

    #[test]
    fn fcntl_lock_holder_makes_delivery_wait_then_fail() {
        let root = scratch("mbox-locked");
        let path = root.join("mbox");
        std::fs::write(&path, b"").unwrap();
        let holder = hold_ofd_lock(&path);
        let t = Instant::now();
        let e = deliver(
            &path,
            b"From x\n",
            b"",
            &message(b"m\n"),
            Duration::from_millis(600),
        )
        .unwrap_err();
        assert!(t.elapsed() >= Duration::from_millis(600));
        assert_eq!(e.kind(), ErrorKind::MboxLocked);
        assert!(e.is_temporary());
        assert!(e.to_string().contains("locked"), "{e}");
        assert_eq!(std::fs::read(&path).unwrap(), b"", "nothing written");
        assert!(!root.join("mbox.lock").exists(), "dot-lock removed");

        // Released during the wait: delivery goes through.
        let release = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            drop(holder);
        });
        deliver(
            &path,
            b"From x\n",
            b"",
            &message(b"m\n"),
            Duration::from_secs(10),
        )
        .unwrap();
        release.join().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"From x\nm\n\n");
    }

    #[test]
    fn dot_lock_holder_and_stale_dot_lock() {
        let root = scratch("mbox-dotlock");
        let path = root.join("mbox");
        let lock = root.join("mbox.lock");
        std::fs::write(&lock, b"").unwrap();
        let e = deliver(
            &path,
            b"From x\n",
            b"",
            &message(b"m\n"),
            Duration::from_millis(300),
        )
        .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::MboxLocked);
        assert!(lock.exists(), "someone else's dot-lock is left alone");
        let old = SystemTime::now() - STALE_DOTLOCK - Duration::from_secs(60);
        File::options()
            .write(true)
            .open(&lock)
            .unwrap()
            .set_modified(old)
            .unwrap();
        deliver(
            &path,
            b"From x\n",
            b"",
            &message(b"m\n"),
            Duration::from_millis(300),
        )
        .unwrap();
        assert!(!lock.exists());
        assert_eq!(std::fs::read(&path).unwrap(), b"From x\nm\n\n");
    }

    #[test]
    fn a_missing_mbox_is_created_and_said_so() {
        let root = scratch("mbox-create");
        let path = root.join("mbox");
        let (_, created) = open_mbox(&path).unwrap();
        assert!(created);
        let (_, created) = open_mbox(&path).unwrap();
        assert!(!created, "an existing mbox is opened, not created");
        let mode = std::fs::metadata(&path).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
        assert!(open_mbox(&root.join("no/such/dir/mbox")).is_err());
        sync_parent(&path).unwrap();
        sync_parent(Path::new("relative-mbox")).unwrap();
    }

    /// A FIFO (with or without a reader) or a device as the mbox: an
    /// error at once, never a blocked open or a write into it. The channel
    /// timeout only turns the old hang into a failure.
    #[test]
    fn a_fifo_or_device_mbox_is_refused_without_blocking() {
        let root = scratch("mbox-fifo");
        let fifo = root.join("mbox");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let f = fifo.clone();
        std::thread::spawn(move || {
            let _ = tx.send(open_mbox(&f).is_err());
        });
        let refused = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("open_mbox blocked on a FIFO");
        assert!(refused);
        // With a reader the open succeeds: it must still be refused.
        let _reader = OpenOptions::new()
            .read(true)
            .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
            .open(&fifo)
            .unwrap();
        assert!(open_mbox(&fifo).is_err());
        assert!(open_mbox(Path::new("/dev/null")).is_err());
    }

    #[test]
    fn write_failure_is_temporary() {
        let root = scratch("mbox-fail");
        // A directory cannot be opened for appending.
        let dir = root.join("box");
        std::fs::create_dir(&dir).unwrap();
        let e = deliver(
            &dir,
            b"From x\n",
            b"",
            &message(b"m\n"),
            Duration::from_millis(100),
        )
        .unwrap_err();
        assert!(e.is_temporary());
        // A full disk: every write fails with ENOSPC.
        let full = root.join("full");
        std::os::unix::fs::symlink("/dev/full", &full).unwrap();
        let e = deliver(
            &full,
            b"From x\n",
            b"",
            &message(b"m\n"),
            Duration::from_millis(100),
        )
        .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Mbox);
        assert!(e.is_temporary());
        assert!(!root.join("full.lock").exists());
    }
}
