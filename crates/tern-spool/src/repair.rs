//! Repair: what a crash can leave in the queue, and how it is cleaned up.
//!
//! * An unnamed (`O_TMPFILE`) file being written vanishes by itself when
//!   its writer dies: nothing to do.
//! * A named file in `tmp/` (fallback) whose writer is gone — its `flock` is
//!   free — is removed. A live writer holds the lock for the file's whole
//!   life; the [`TMP_GRACE`] seconds cover the instant between creating and
//!   locking it.
//! * A committed file is never removed. One that sits under a name other than
//!   its inode number, or in the wrong split directory (a queue restored from
//!   a backup), is renamed to its inode number in the right directory; one
//!   whose header does not parse is reported as damaged and left alone.

use crate::Error;
use crate::layout::{CUR_DIR, NEW_DIR, TMP_DIR};
use crate::qfile;
use crate::scan::Queue;
use rustix::fs::{AtFlags, FlockOperation, RenameFlags};
use std::fs;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::PathBuf;

/// Seconds a named temporary file is left alone even when unlocked.
pub const TMP_GRACE: i64 = 2;

/// What a repair did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RepairReport {
    /// Partial files (dead writers) removed from `tmp/`.
    pub removed_partial: usize,
    /// Committed files renamed to their inode number / right directory.
    pub renamed: usize,
    /// Files in `new/` or `cur/` that are not valid queue files (left alone).
    pub damaged: Vec<PathBuf>,
}

/// Best effort: repair reports what it did either way.
fn sync_dir(path: &std::path::Path) {
    let _ = crate::layout::sync_dir(path);
}

impl Queue {
    /// Removes what dead writers left and puts misnamed committed files
    /// right. Safe to run while `tern-queue` processes are writing.
    pub fn repair(&self) -> Result<RepairReport, Error> {
        self.repair_with(&mut |_, _| {})
    }

    /// [`Queue::repair`], calling `progress(done, total)` after each
    /// directory it has gone through (`tmp/`, then each bucket of `new/`
    /// and `cur/`).
    pub fn repair_with(&self, progress: &mut dyn FnMut(u64, u64)) -> Result<RepairReport, Error> {
        let total = 1 + 2 * u64::from(self.layout().split);
        let mut done = 0;
        let mut report = RepairReport::default();
        let now = tern_date::now();
        let tmp = self.dir().join(TMP_DIR);
        let rd = fs::read_dir(&tmp).map_err(|e| Error::io("read directory", &tmp, e))?;
        for ent in rd {
            let ent = ent.map_err(|e| Error::io("read directory", &tmp, e))?;
            let path = ent.path();
            let Ok(f) = fs::OpenOptions::new()
                .read(true)
                .custom_flags(
                    // NONBLOCK: a FIFO here must not hang the repair.
                    (rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK).bits() as i32,
                )
                .open(&path)
            else {
                continue;
            };
            let Ok(md) = f.metadata() else { continue };
            if !md.is_file() {
                continue;
            }
            if rustix::fs::flock(&f, FlockOperation::NonBlockingLockExclusive).is_err() {
                continue; // a live writer holds it
            }
            if now - md.mtime() < TMP_GRACE {
                continue;
            }
            if fs::remove_file(&path).is_ok() {
                report.removed_partial += 1;
            }
        }
        if report.removed_partial > 0 {
            sync_dir(&tmp);
        }
        let _ = fs::remove_file(self.dir().join("format.tmp"));
        done += 1;
        progress(done, total);

        for top in [NEW_DIR, CUR_DIR] {
            for b in 0..self.layout().split {
                let d = self.dir().join(top).join(b.to_string());
                let rd = fs::read_dir(&d).map_err(|e| Error::io("read directory", &d, e))?;
                let mut changed = false;
                for ent in rd {
                    let ent = ent.map_err(|e| Error::io("read directory", &d, e))?;
                    let path = ent.path();
                    let Ok(md) = fs::symlink_metadata(&path) else {
                        continue;
                    };
                    let name = ent.file_name();
                    let right_dir = self
                        .dir()
                        .join(top)
                        .join(self.layout().bucket(md.ino()).to_string());
                    if name.to_str() == Some(md.ino().to_string().as_str()) && right_dir == d {
                        continue;
                    }
                    let valid = md.is_file()
                        && fs::File::open(&path)
                            .ok()
                            .and_then(|f| qfile::read_header(&f, md.len()).ok())
                            .is_some();
                    if !valid {
                        report.damaged.push(path);
                        continue;
                    }
                    let target = right_dir.join(md.ino().to_string());
                    let moved = rustix::fs::renameat_with(
                        rustix::fs::CWD,
                        &path,
                        rustix::fs::CWD,
                        &target,
                        RenameFlags::NOREPLACE,
                    )
                    .or_else(|_| {
                        rustix::fs::linkat(
                            rustix::fs::CWD,
                            &path,
                            rustix::fs::CWD,
                            &target,
                            AtFlags::empty(),
                        )
                        .and_then(|_| {
                            sync_dir(&right_dir);
                            rustix::fs::unlinkat(rustix::fs::CWD, &path, AtFlags::empty())
                        })
                    });
                    if moved.is_ok() {
                        sync_dir(&right_dir);
                        changed = true;
                        report.renamed += 1;
                    } else {
                        report.damaged.push(path);
                    }
                }
                if changed {
                    sync_dir(&d);
                }
                done += 1;
                progress(done, total);
            }
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fifo_in_tmp_does_not_hang_repair() {
        let dir = std::env::temp_dir().join(format!("tern-repair-fifo-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let q = dir.join("queue");
        crate::layout::create(&q, 1).unwrap();
        let queue = Queue::open(&q).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            q.join(TMP_DIR).join("fifo"),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(queue.repair().map(|r| r.removed_partial));
        });
        let got = rx
            .recv_timeout(std::time::Duration::from_secs(5))
            .expect("repair hung on a FIFO in tmp/");
        assert_eq!(got.unwrap(), 0, "only regular files are removed");
        fs::remove_dir_all(&dir).unwrap();
    }
}
