//! Maildir delivery: write `tmp/<name>`, fsync, link to `new/<name>`,
//! fsync `new/`, remove the `tmp/` name.
//!
//! Names are `<secs>.M<usecs>P<pid>Q<counter>R<random>.<host>`: the pid
//! alone is not unique (pid reuse within a second, pid namespaces), so a
//! per-process counter and 64 random bits (from the standard library's
//! OS-seeded hasher keys) are added; the file is created with `O_EXCL`, and
//! a clash is retried with a new name. Every failure is temporary: nothing
//! is reported delivered before `new/` is durable.

use std::fs::{File, OpenOptions};
use std::hash::{BuildHasher, Hasher};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::message::Message;
use crate::{Error, ErrorKind};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Tries with a fresh name when a name already exists.
const ATTEMPTS: usize = 5;

/// 64 bits from the OS random source, through the standard library's
/// randomly keyed hasher.
fn random() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.load(Ordering::Relaxed));
    h.finish()
}

/// The host part of a Maildir name: `/` and `:` are written `\057` and
/// `\072` (maildir(5)), other bytes that are not printable ASCII are dropped.
pub fn host_part(host: &str) -> String {
    let mut out = String::new();
    for c in host.chars() {
        match c {
            '/' => out.push_str("\\057"),
            ':' => out.push_str("\\072"),
            c if c.is_ascii_graphic() => out.push(c),
            _ => {}
        }
    }
    if out.is_empty() {
        out.push_str("localhost");
    }
    out
}

/// A new unique file name for a Maildir.
pub fn unique_name(host: &str) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let q = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!(
        "{}.M{}P{}Q{}R{:016x}.{}",
        now.as_secs(),
        now.subsec_micros(),
        std::process::id(),
        q,
        random(),
        host_part(host)
    )
}

fn temp(dir: &Path, what: &str, e: &io::Error) -> Error {
    Error::new(
        ErrorKind::Maildir,
        format!("{what} in maildir {}: {e}. (#4.2.1)", dir.display()),
    )
}

/// Removes a `tmp/` file on every early return.
struct TmpGuard<'a> {
    path: &'a Path,
    armed: bool,
}

impl Drop for TmpGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            let _ = std::fs::remove_file(self.path);
        }
    }
}

/// Makes the Maildir `dir` (itself, `tmp/`, `new/`, `cur/`, each mode
/// 0700) where it is missing, for the default delivery of a user who has
/// none yet. Only `dir` itself and its three subdirectories are created
/// (its parent must exist); what is made is synced with its parent
/// directory before a message goes in, so a crash cannot lose the
/// directories under a delivered message.
///
/// # Errors
/// Temporary: a directory cannot be created or synced.
pub fn create_missing(dir: &Path) -> Result<(), Error> {
    use std::os::unix::fs::DirBuilderExt;
    let make = |d: &Path| -> Result<bool, Error> {
        match std::fs::DirBuilder::new().mode(0o700).create(d) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(temp(dir, "unable to create the maildir", &e)),
        }
    };
    let sync = |d: &Path| {
        File::open(d)
            .and_then(|f| f.sync_all())
            .map_err(|e| temp(dir, "unable to sync a new directory", &e))
    };
    if make(dir)?
        && let Some(parent) = dir.parent()
    {
        sync(parent)?;
    }
    let mut made = false;
    for sub in ["tmp", "new", "cur"] {
        made |= make(&dir.join(sub))?;
    }
    if made {
        sync(dir)?;
    }
    Ok(())
}

/// Delivers `message` with the lines `prefix` (Return-Path, Delivered-To)
/// before it into the Maildir `dir`. Returns the file name in `new/`.
///
/// # Errors
/// Temporary, always: the Maildir is missing, the disk is full, a write,
/// fsync or link failed.
pub fn deliver(dir: &Path, host: &str, prefix: &[u8], message: &Message) -> Result<String, Error> {
    let tmp_dir = dir.join("tmp");
    let new_dir = dir.join("new");
    for d in [&tmp_dir, &new_dir] {
        match std::fs::metadata(d) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(temp(
                    dir,
                    "not a directory: tmp/ or new/",
                    &io::Error::from(io::ErrorKind::NotADirectory),
                ));
            }
            Err(e) => return Err(temp(dir, "unable to use tmp/ and new/", &e)),
        }
    }
    let mut last = None;
    for _ in 0..ATTEMPTS {
        let name = unique_name(host);
        let tmp_path = tmp_dir.join(&name);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp_path);
        let file = match file {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                last = Some(e);
                continue;
            }
            Err(e) => return Err(temp(dir, "unable to create a file in tmp/", &e)),
        };
        let mut guard = TmpGuard {
            path: &tmp_path,
            armed: true,
        };
        write_file(file, prefix, message)
            .map_err(|e| temp(dir, "unable to write tmp/ file", &e))?;
        let new_path = new_dir.join(&name);
        std::fs::hard_link(&tmp_path, &new_path)
            .map_err(|e| temp(dir, "unable to link tmp/ file into new/", &e))?;
        if let Err(e) = File::open(&new_dir).and_then(|d| d.sync_all()) {
            // Not durable: take the new/ entry back so a retry does not
            // leave two copies, and report a temporary failure.
            let _ = std::fs::remove_file(&new_path);
            return Err(temp(dir, "unable to fsync new/", &e));
        }
        guard.armed = false;
        let _ = std::fs::remove_file(&tmp_path);
        return Ok(name);
    }
    Err(temp(
        dir,
        "unable to find a unique name in tmp/",
        &last.unwrap_or_else(|| io::Error::from(io::ErrorKind::AlreadyExists)),
    ))
}

fn write_file(file: File, prefix: &[u8], message: &Message) -> io::Result<()> {
    let mut w = io::BufWriter::with_capacity(64 * 1024, file);
    w.write_all(prefix)?;
    message.copy_to(&mut w)?;
    let file = w.into_inner().map_err(io::IntoInnerError::into_error)?;
    file.sync_all()?;
    // close(2) errors are not reported by File's drop; sync_all has
    // already pushed the data out, which is what close would report.
    drop(file);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{message, scratch};
    use std::collections::HashSet;

    fn make(dir: &Path) {
        for d in ["tmp", "new", "cur"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
    }

    #[test]
    fn missing_maildir_is_temporary() {
        let root = scratch("maildir-missing");
        let e = deliver(&root.join("Maildir"), "h", b"", &message(b"x\n")).unwrap_err();
        assert!(e.is_temporary());
        assert_eq!(e.kind(), ErrorKind::Maildir);
        std::fs::create_dir_all(root.join("M2/new")).unwrap();
        std::fs::write(root.join("M2/tmp"), b"").unwrap();
        assert!(deliver(&root.join("M2"), "h", b"", &message(b"x\n")).is_err());
    }

    #[test]
    fn delivers_prefix_and_exact_bytes() {
        let root = scratch("maildir");
        let dir = root.join("Maildir");
        make(&dir);
        let body = b"Subject: t\n\n\xffbinary\r\n\0and no final newline";
        let name = deliver(&dir, "host/a:b", b"Return-Path: <a@b>\n", &message(body)).unwrap();
        assert!(name.ends_with(".host\\057a\\072b"), "{name}");
        let got = std::fs::read(dir.join("new").join(&name)).unwrap();
        let mut want = b"Return-Path: <a@b>\n".to_vec();
        want.extend_from_slice(body);
        assert_eq!(got, want);
        assert_eq!(std::fs::read_dir(dir.join("tmp")).unwrap().count(), 0);
    }

    #[test]
    fn names_are_unique() {
        let names: HashSet<String> = (0..1000).map(|_| unique_name("h")).collect();
        assert_eq!(names.len(), 1000);
        let n = unique_name("h");
        let pid = format!("P{}Q", std::process::id());
        assert!(n.contains(&pid) && n.contains('R'), "{n}");
        assert_eq!(host_part(""), "localhost");
        assert_eq!(host_part("a b\n"), "ab");
    }
}
