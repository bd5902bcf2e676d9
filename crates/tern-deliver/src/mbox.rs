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
//! matching `>*From ` gets one more `>` (decided while streaming: a line,
//! which may be as long as the message, is never held whole), a final LF
//! is added when missing,
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

/// True for a line that needs a `>` in front: `>*From `. (The rule that
/// [`copy_quoted`] applies while streaming; kept as the plain reference.)
#[cfg(test)]
fn needs_quote(line: &[u8]) -> bool {
    let rest = &line[line.iter().take_while(|&&b| b == b'>').count()..];
    rest.starts_with(b"From ")
}

fn write_entry(file: &File, from_line: &[u8], prefix: &[u8], message: &Message) -> io::Result<()> {
    let mut w = io::BufWriter::with_capacity(64 * 1024, file);
    w.write_all(from_line)?;
    w.write_all(prefix)?;
    let mut r = io::BufReader::with_capacity(64 * 1024, message.reader());
    if !copy_quoted(&mut r, &mut w)? {
        w.write_all(b"\n")?;
    }
    w.write_all(b"\n")?;
    w.flush()
}

/// Where [`copy_quoted`] stands in the current line.
#[derive(Clone, Copy)]
enum Quote {
    /// At the start of a line: `gt` `>` bytes and the first `from` bytes
    /// of `From ` read and held back, nothing of the line written yet.
    Head { gt: u64, from: usize },
    /// The line is decided: copy up to its LF.
    Body,
}

/// Writes `n` `>` bytes.
fn write_gt(w: &mut impl Write, mut n: u64) -> io::Result<()> {
    const GT: [u8; 64] = [b'>'; 64];
    while n > 0 {
        let k = n.min(GT.len() as u64) as usize;
        w.write_all(&GT[..k])?;
        n -= k as u64;
    }
    Ok(())
}

/// Copies the message from `r` to `w`, giving every line that matches
/// `>*From ` one more `>`, as it streams: nothing but a count of `>` and
/// at most 4 bytes of `From ` is held back, so a line as long as the
/// message is never held whole in memory. Returns whether the message
/// ended with LF (or was empty).
fn copy_quoted(r: &mut impl BufRead, w: &mut impl Write) -> io::Result<bool> {
    const FROM: &[u8] = b"From ";
    let mut state = Quote::Head { gt: 0, from: 0 };
    let mut ends_with_lf = true;
    loop {
        let buf = match r.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            break;
        }
        let mut i = 0;
        while i < buf.len() {
            match state {
                Quote::Body => {
                    let rest = &buf[i..];
                    let n = memchr::memchr(b'\n', rest).map_or(rest.len(), |p| p + 1);
                    w.write_all(&rest[..n])?;
                    ends_with_lf = rest[n - 1] == b'\n';
                    if ends_with_lf {
                        state = Quote::Head { gt: 0, from: 0 };
                    }
                    i += n;
                }
                Quote::Head { gt, from } => {
                    let b = buf[i];
                    if from == 0 && b == b'>' {
                        state = Quote::Head { gt: gt + 1, from };
                        i += 1;
                    } else if b == FROM[from] {
                        i += 1;
                        if from + 1 == FROM.len() {
                            write_gt(w, gt + 1)?;
                            w.write_all(FROM)?;
                            ends_with_lf = false;
                            state = Quote::Body;
                        } else {
                            state = Quote::Head { gt, from: from + 1 };
                        }
                    } else {
                        // Not a `From ` line: what was held goes out as
                        // it was, and this byte is the line's (an LF too).
                        write_gt(w, gt)?;
                        w.write_all(&FROM[..from])?;
                        state = Quote::Body;
                    }
                }
            }
        }
        let used = buf.len();
        r.consume(used);
    }
    if let Quote::Head { gt, from } = state
        && (gt > 0 || from > 0)
    {
        // A last line too short to be a `From ` line.
        write_gt(w, gt)?;
        w.write_all(&FROM[..from])?;
        ends_with_lf = false;
    }
    Ok(ends_with_lf)
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

    /// The plain rule: whole lines, [`needs_quote`].
    fn quoted_reference(message: &[u8]) -> (Vec<u8>, bool) {
        let mut out = Vec::new();
        for line in message.split_inclusive(|&b| b == b'\n') {
            if needs_quote(line) {
                out.push(b'>');
            }
            out.extend_from_slice(line);
        }
        (out, message.is_empty() || message.ends_with(b"\n"))
    }

    #[test]
    fn streamed_quoting_is_the_line_rule_in_any_chunking() {
        let pieces: &[&[u8]] = &[b">", b"From ", b"From", b"F", b"rom ", b"\n", b"x", b" "];
        // Every sequence of up to 5 pieces (37449 messages).
        let mut stack: Vec<(Vec<u8>, usize)> = vec![(vec![], 0)];
        let mut checked = 0;
        while let Some((m, depth)) = stack.pop() {
            let want = quoted_reference(&m);
            for cap in [1, 2, 3, 5, 64] {
                let mut r = io::BufReader::with_capacity(cap, &m[..]);
                let mut out = Vec::new();
                let ends = copy_quoted(&mut r, &mut out).unwrap();
                assert_eq!(
                    (out, ends),
                    want,
                    "{:?} cap {cap}",
                    m.escape_ascii().to_string()
                );
            }
            checked += 1;
            if depth < 5 {
                for p in pieces {
                    stack.push(([&m[..], p].concat(), depth + 1));
                }
            }
        }
        assert_eq!(checked, 37_449);
    }

    /// A reader of one long line (no LF) that counts what it gave.
    struct LongLine {
        left: usize,
        given: std::rc::Rc<std::cell::Cell<usize>>,
    }

    impl io::Read for LongLine {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(self.left);
            buf[..n].fill(b'y');
            self.left -= n;
            self.given.set(self.given.get() + n);
            Ok(n)
        }
    }

    /// A writer that records, at each write, how much had been read and
    /// not yet written (at most one buffer when the line is streamed).
    struct Follows {
        written: usize,
        given: std::rc::Rc<std::cell::Cell<usize>>,
        max_behind: usize,
    }

    impl io::Write for Follows {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            // Read but not yet written, before this write.
            self.max_behind = self.max_behind.max(self.given.get() - self.written);
            self.written += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_long_line_is_streamed_not_held() {
        // 50 MB without a line end: every buffer read is written before
        // the next is read (a read_until would hold the whole line).
        let given = std::rc::Rc::new(std::cell::Cell::new(0));
        let mut r = io::BufReader::with_capacity(
            64 * 1024,
            LongLine {
                left: 50_000_000,
                given: given.clone(),
            },
        );
        let mut w = Follows {
            written: 0,
            given: given.clone(),
            max_behind: 0,
        };
        assert!(!copy_quoted(&mut r, &mut w).unwrap());
        assert_eq!(w.written, 50_000_000);
        assert!(
            w.max_behind <= 64 * 1024,
            "{} bytes held back while streaming",
            w.max_behind
        );
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
