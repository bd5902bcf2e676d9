//! The manager's signals and its wake-up FIFO.

use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
use rustix::fs::OFlags;
use std::fs::File;
use tern_spool::Queue;

/// The signals the manager takes through its signalfd (TERM, INT: stop;
/// ALRM: flush; HUP: reload).
pub(crate) fn signal_set() -> SigSet {
    let mut mask = SigSet::empty();
    for s in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGALRM,
        Signal::SIGHUP,
    ] {
        mask.add(s);
    }
    mask
}

/// Blocks the manager's signals. Called first thing in `main`, before the
/// pid file names this process: `ternctl flush` (SIGALRM) or SIGHUP arriving
/// while the journal is replayed would otherwise kill it (their default
/// action); blocked, they wait for the event loop.
pub fn block_signals() -> Result<(), String> {
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&signal_set()), None)
        .map_err(|e| format!("sigprocmask: {e}"))
}

/// Opens the trigger FIFO for reading without ever seeing end-of-file
/// (`O_RDWR` keeps a writer open: ourselves).
pub fn open_trigger(queue: &Queue) -> Option<File> {
    let path = queue.dir().join(tern_spool::layout::TRIGGER);
    let fd = rustix::fs::open(
        &path,
        OFlags::RDWR | OFlags::NONBLOCK | OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .ok()?;
    let st = rustix::fs::fstat(&fd).ok()?;
    (rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Fifo)
        .then(|| File::from(fd))
}
