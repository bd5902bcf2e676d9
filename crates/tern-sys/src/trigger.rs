//! The queue's wake-up FIFO.

use rustix::fs::{Mode, OFlags};
use std::os::fd::AsFd;
use std::path::Path;

/// Pulls the trigger: `open(path, O_WRONLY|O_NONBLOCK)`, `write` one byte,
/// `close`. Every failure is ignored: with no reader (`ENXIO`), a full FIFO
/// (`EAGAIN`) or a missing file the queue manager still finds the message at
/// its next scan, so a wake-up is an optimisation, never a promise.
pub fn pull(dir: impl AsFd, name: &Path) {
    let flags = OFlags::WRONLY | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY;
    if let Ok(fd) = rustix::fs::openat(dir, name, flags, Mode::empty()) {
        // Only a FIFO is written to: a regular file planted in its place
        // must not grow.
        if let Ok(st) = rustix::fs::fstat(&fd)
            && rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Fifo
        {
            let _ = rustix::io::write(&fd, b"!");
        }
    }
}
