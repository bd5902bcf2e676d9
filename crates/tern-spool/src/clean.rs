//! The cleaner's operations (run by `tern-clean`, the queue owner): moving
//! messages the manager has recorded from `new/` to `cur/`, and removing
//! finished ones. Each batch is made durable together: one `fsync` when it
//! touched one directory, else one `syncfs` of the queue's file system
//! (an `fsync` per directory touched where that fails), never one per
//! message.

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
    /// Remove `id` for good, if the file named `id` is still the message
    /// accepted at `birth` by tern-queue pid `qpid` (inode numbers are
    /// reused: a later message under the same name is left alone).
    Remove {
        /// Message id.
        id: u64,
        /// Acceptance time from the header.
        birth: i64,
        /// tern-queue pid from the header.
        qpid: u32,
    },
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
                        // Already moved (a repeated request after a crash):
                        // the move may not be durable yet, so both
                        // directories are synced before it is confirmed.
                        Err(rustix::io::Errno::NOENT) if exists(&to) => {
                            touched.insert(from.parent().expect("has parent").to_path_buf());
                            touched.insert(to.parent().expect("has parent").to_path_buf());
                            true
                        }
                        Err(rustix::io::Errno::NOENT) => false,
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
                Op::Remove { id, birth, qpid } => {
                    let mut ok = true;
                    for stage in [crate::Stage::Active, crate::Stage::New] {
                        let p = self.path(id, stage);
                        let same = match File::open(&p) {
                            Ok(f) => match f.metadata() {
                                Ok(md) => crate::qfile::read_header(&f, md.len())
                                    .map(|h| h.origin.time == birth && h.origin.pid == qpid)
                                    .unwrap_or(false),
                                Err(_) => false,
                            },
                            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                                // Gone already (a repeated request after a
                                // crash): that removal may not be durable
                                // yet; confirmed only after a sync.
                                touched.insert(p.parent().expect("has parent").to_path_buf());
                                continue;
                            }
                            Err(_) => {
                                ok = false;
                                continue;
                            }
                        };
                        if !same {
                            // Another message now has this name.
                            continue;
                        }
                        match std::fs::remove_file(&p) {
                            Ok(()) => {
                                touched.insert(p.parent().expect("has parent").to_path_buf());
                            }
                            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                            Err(_) => ok = false,
                        }
                        // One file per message: stop at the first match.
                        break;
                    }
                    ok
                }
            };
            results.push(ok);
        }
        // Every changed directory durable before anything is confirmed:
        // one fsync when there is one, else one syncfs of the queue's file
        // system for the whole batch (a batch touches two directories per
        // message, spread over the buckets); per-directory fsyncs when
        // syncfs fails.
        if touched.len() > 1 && File::open(self.dir()).is_ok_and(|d| tern_sys::syncfs(&d).is_ok()) {
            return results;
        }
        for dir in touched {
            if let Err(_e) = File::open(&dir).and_then(|d| d.sync_all()) {
                // A directory that cannot be synced makes its operations
                // unreliable: report them failed so the manager retries.
                for (op, r) in ops.iter().zip(results.iter_mut()) {
                    let id = match *op {
                        Op::TakeOver(id) | Op::Remove { id, .. } => id,
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
        // Stand-in queue files named by their inodes.
        let make = |name: &str, time: i64, pid: u32| -> u64 {
            let origin = crate::qfile::Origin { uid: 0, pid, time };
            let env = crate::Envelope {
                sender: b"a@b".to_vec(),
                recipients: vec![b"c@d".to_vec()],
            };
            let mut bytes = crate::qfile::encode_header(&origin, &env, 4096);
            bytes.resize(4096, 0);
            bytes.extend_from_slice(b"message\n");
            let tmp = q.join("tmp").join(name);
            std::fs::write(&tmp, &bytes).unwrap();
            use std::os::unix::fs::MetadataExt;
            let id = std::fs::metadata(&tmp).unwrap().ino();
            std::fs::rename(&tmp, queue.path(id, Stage::New)).unwrap();
            id
        };
        let id = make("x", 100, 7);
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
        // A removal that names another message (a reused inode) leaves it.
        let other = Op::Remove {
            id,
            birth: 100,
            qpid: 8,
        };
        assert_eq!(queue.clean(&[other]), vec![true]);
        assert!(
            queue.path(id, Stage::Active).exists(),
            "a different message was removed"
        );
        let mine = Op::Remove {
            id,
            birth: 100,
            qpid: 7,
        };
        assert_eq!(queue.clean(&[mine, mine]), vec![true, true]);
        assert!(!queue.path(id, Stage::Active).exists());
        // Not yet taken over: removed from new/.
        let id2 = make("y", 200, 9);
        assert_eq!(
            queue.clean(&[Op::Remove {
                id: id2,
                birth: 200,
                qpid: 9
            }]),
            vec![true]
        );
        assert!(!queue.path(id2, Stage::New).exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
