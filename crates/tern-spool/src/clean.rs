//! The cleaner's operations (run by `tern-clean`, the queue owner): moving
//! messages the manager has recorded from `new/` to `cur/`, and removing
//! finished ones. Each batch is made durable with one `fsync` per directory
//! touched, not one per message.

use crate::scan::Queue;
use rustix::fs::{AtFlags, RenameFlags};
use std::collections::BTreeSet;
use std::fs::File;
use std::path::PathBuf;

/// One cleaner operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Move `id` from `new/` to `cur/`.
    TakeOver(u64),
    /// Remove `id` for good.
    Remove(u64),
}

fn exists(p: &std::path::Path) -> bool {
    std::fs::symlink_metadata(p).is_ok()
}

impl Queue {
    /// Applies a batch; returns one result per operation (`true` = done,
    /// including "already done"). Every directory that changed is synced
    /// before this returns.
    pub fn clean(&self, ops: &[Op]) -> Vec<bool> {
        let mut touched: BTreeSet<PathBuf> = BTreeSet::new();
        let mut results = Vec::with_capacity(ops.len());
        for op in ops {
            let ok = match *op {
                Op::TakeOver(id) => {
                    let from = self.path(id, crate::Stage::New);
                    let to = self.path(id, crate::Stage::Active);
                    match rustix::fs::renameat_with(
                        rustix::fs::CWD,
                        &from,
                        rustix::fs::CWD,
                        &to,
                        RenameFlags::NOREPLACE,
                    ) {
                        Ok(()) => {
                            touched.insert(from.parent().expect("has parent").to_path_buf());
                            touched.insert(to.parent().expect("has parent").to_path_buf());
                            true
                        }
                        // Already moved (a repeated request after a crash).
                        Err(rustix::io::Errno::NOENT) => exists(&to),
                        Err(rustix::io::Errno::INVAL) => {
                            // No RENAME_NOREPLACE here: link, then unlink.
                            let linked = rustix::fs::linkat(
                                rustix::fs::CWD,
                                &from,
                                rustix::fs::CWD,
                                &to,
                                AtFlags::empty(),
                            )
                            .is_ok();
                            if linked {
                                let _ =
                                    rustix::fs::unlinkat(rustix::fs::CWD, &from, AtFlags::empty());
                                touched.insert(from.parent().expect("has parent").to_path_buf());
                                touched.insert(to.parent().expect("has parent").to_path_buf());
                            }
                            linked
                        }
                        Err(_) => false,
                    }
                }
                Op::Remove(id) => {
                    let mut ok = true;
                    for stage in [crate::Stage::Active, crate::Stage::New] {
                        let p = self.path(id, stage);
                        match std::fs::remove_file(&p) {
                            Ok(()) => {
                                touched.insert(p.parent().expect("has parent").to_path_buf());
                            }
                            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                            Err(_) => ok = false,
                        }
                    }
                    ok
                }
            };
            results.push(ok);
        }
        for dir in touched {
            if let Err(_e) = File::open(&dir).and_then(|d| d.sync_all()) {
                // A directory that cannot be synced makes its operations
                // unreliable: report them failed so the manager retries.
                for (op, r) in ops.iter().zip(results.iter_mut()) {
                    let id = match *op {
                        Op::TakeOver(id) | Op::Remove(id) => id,
                    };
                    let b = self.layout().bucket(id).to_string();
                    if dir.file_name().and_then(|n| n.to_str()) == Some(b.as_str()) {
                        *r = false;
                    }
                }
            }
        }
        results
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Stage;

    #[test]
    fn take_over_and_remove_are_idempotent() {
        let dir = std::env::temp_dir().join(format!("tern-clean-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let q = dir.join("queue");
        crate::layout::create(&q, 3).unwrap();
        let queue = Queue::open(&q).unwrap();
        // A stand-in file named by its inode.
        let tmp = q.join("tmp/x");
        std::fs::write(&tmp, b"x").unwrap();
        use std::os::unix::fs::MetadataExt;
        let id = std::fs::metadata(&tmp).unwrap().ino();
        std::fs::rename(&tmp, queue.path(id, Stage::New)).unwrap();
        assert_eq!(queue.clean(&[Op::TakeOver(id)]), vec![true]);
        assert!(queue.path(id, Stage::Active).exists());
        assert!(!queue.path(id, Stage::New).exists());
        assert_eq!(
            queue.clean(&[Op::TakeOver(id)]),
            vec![true],
            "repeat is fine"
        );
        assert_eq!(
            queue.clean(&[Op::TakeOver(id + 1)]),
            vec![false],
            "unknown id"
        );
        assert_eq!(
            queue.clean(&[Op::Remove(id), Op::Remove(id)]),
            vec![true, true]
        );
        assert!(!queue.path(id, Stage::Active).exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
