//! Letting go of the caller's terminal, for a set-user-id program.
//!
//! When root (or any user) runs the setuid `tern-queue` from a shell, the
//! process starts with the caller's controlling terminal and usually with
//! that terminal on fd 2. Code running as the program's owner must reach
//! neither: with the controlling terminal it could push input into the
//! caller's shell (`TIOCSTI`) or open `/dev/tty`; with the terminal on a
//! descriptor it could write escape sequences to it. [`let_go`] drops both
//! before the program reads anything.
#![allow(unsafe_code)]
// Safety argument for this module: `ioctl(TIOCNOTTY)` takes no argument
// and only detaches the calling process from its controlling terminal;
// `isatty` only queries a descriptor.

use rustix::fs::{Mode, OFlags};

/// What [`let_go`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LetGo {
    /// The process had a controlling terminal and no longer has one.
    pub detached: bool,
    /// The process has a controlling terminal it cannot drop without
    /// hanging up its caller's session: it leads that session (it was
    /// exec'd by the session leader).
    pub kept_as_leader: bool,
    /// fd 2 was a terminal and is now `/dev/null`.
    pub stderr_replaced: bool,
}

/// Detaches the process from its controlling terminal (`TIOCNOTTY` through
/// `/dev/tty`; a process that leads its session keeps it, as detaching
/// would hang up the caller's session) and, when fd 2 is a terminal,
/// points it at `/dev/null`. Afterwards `open("/dev/tty")` fails with
/// `ENXIO` and `TIOCSTI` fails on every descriptor (the kernel allows it
/// only on the caller's controlling terminal, or with `CAP_SYS_ADMIN`).
///
/// # Errors
/// `/dev/null` cannot be opened or put on fd 2, or `TIOCNOTTY` failed.
///
/// # References
/// tty(4) `TIOCNOTTY`, tty_ioctl(4) `TIOCSTI`, credentials(7).
pub fn let_go() -> std::io::Result<LetGo> {
    let mut done = LetGo::default();
    // SAFETY: isatty only queries the descriptor.
    if unsafe { libc::isatty(2) } == 1 {
        let null = rustix::fs::open("/dev/null", OFlags::WRONLY | OFlags::CLOEXEC, Mode::empty())?;
        rustix::stdio::dup2_stderr(&null)?;
        done.stderr_replaced = true;
    }
    let tty = match rustix::fs::open(
        "/dev/tty",
        OFlags::RDWR | OFlags::NOCTTY | OFlags::CLOEXEC | OFlags::NONBLOCK,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        // ENXIO: no controlling terminal; anything else: none we can open.
        Err(_) => return Ok(done),
    };
    let me = rustix::process::getpid();
    if rustix::process::getsid(None).ok() == Some(me) {
        done.kept_as_leader = true;
        return Ok(done);
    }
    use std::os::fd::AsRawFd as _;
    // SAFETY: TIOCNOTTY takes no argument; the descriptor is open.
    if unsafe { libc::ioctl(tty.as_raw_fd(), libc::TIOCNOTTY) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    done.detached = true;
    Ok(done)
}
