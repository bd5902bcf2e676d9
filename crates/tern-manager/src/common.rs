//! What every step of the manager shares: names, bounds, settings, the
//! exit reasons, and how queue files are opened.

use rustix::fs::OFlags;
use std::fs::File;
use tern_spool::state::Channel;

/// The program name in log lines.
pub const PROG: &str = "tern-send";
/// Forced rescan of `queue/new/` even without a wake-up.
pub(crate) const RESCAN_SECS: i64 = 600;
/// Pick-ups per journal commit and cleaner batch.
pub(crate) const PICKUP_BATCH: usize = 500;
/// Journal bytes written before a compaction is considered.
pub(crate) const COMPACT_AFTER: u64 = 8 << 20;
/// Bound on report text kept in the journal and in bounces.
pub(crate) const MAX_REPORT: usize = 1000;

/// Why the manager stopped.
#[derive(Debug)]
pub enum Exit {
    /// Clean stop (SIGTERM, or `--once` with nothing left to do).
    Done,
    /// Trouble: a lost spawner or cleaner, an unwritable journal.
    Trouble(String),
}

pub(crate) fn ch_index(ch: Channel) -> usize {
    match ch {
        Channel::Local => 0,
        Channel::Remote => 1,
    }
}

pub(crate) fn ch_name(ch: Channel) -> &'static str {
    match ch {
        Channel::Local => "local",
        Channel::Remote => "remote",
    }
}

/// link, never blocking on a FIFO, and only a regular file (`cur/` belongs
/// to another uid). Returns the file and its length.
pub fn open_message_file(path: &std::path::Path) -> std::io::Result<(File, u64)> {
    let fd = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY,
        rustix::fs::Mode::empty(),
    )?;
    let file = File::from(fd);
    let meta = file.metadata()?;
    if !meta.file_type().is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    Ok((file, meta.len()))
}

pub(crate) fn fatal(e: impl std::fmt::Display) -> Exit {
    Exit::Trouble(e.to_string())
}
