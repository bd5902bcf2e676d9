//! The terminal relay: when `tern-start` runs from a terminal (root typing
//! `tern-start` or `sendmail -q`), no program it starts may hold that
//! terminal. A process of a lower uid with a descriptor of root's terminal
//! could write escape sequences to it, and one in root's session could push
//! keystrokes into root's shell (`TIOCSTI`). So the children's standard
//! output and error become a pipe, and `tern-start` (root, or the caller's
//! uid, which already owns the terminal) copies what arrives on it to the
//! terminal, unchanged: the operator still sees every log line, and only
//! the caller's own process ever touches the terminal.

use std::os::fd::{AsFd, OwnedFd};

/// The read end of the children's output pipe and the terminal it is
/// copied to.
pub struct Relay {
    read: OwnedFd,
    tty: OwnedFd,
}

impl Relay {
    /// When descriptor 1 or 2 is a terminal, makes the pipe and points
    /// both of our descriptors 1 and 2 (the ones children inherit) at it;
    /// `None` when neither is a terminal (a log file, a pipe to a
    /// supervisor: nothing to protect, and nothing changes).
    ///
    /// # Errors
    /// `pipe`, `dup` or `dup2` failed.
    pub fn start() -> std::io::Result<Option<Relay>> {
        let out = rustix::stdio::stdout();
        let err = rustix::stdio::stderr();
        let tty_fd = if tern_sys::spawn::is_terminal(err) {
            err
        } else if tern_sys::spawn::is_terminal(out) {
            out
        } else {
            return Ok(None);
        };
        let tty = rustix::io::fcntl_dupfd_cloexec(tty_fd, 3)?;
        let (read, write) = rustix::pipe::pipe_with(
            rustix::pipe::PipeFlags::CLOEXEC | rustix::pipe::PipeFlags::NONBLOCK,
        )?;
        // The write end goes to the children as their fds 1 and 2 (dup2
        // clears close-on-exec on the new numbers); ours is dropped.
        if tern_sys::spawn::is_terminal(out) {
            rustix::stdio::dup2_stdout(&write)?;
        }
        rustix::stdio::dup2_stderr(&write)?;
        // Blocking writes from the children: their own log lines must not
        // be lost to EAGAIN. Only our read end is non-blocking.
        rustix::fs::fcntl_setfl(&write, rustix::fs::OFlags::empty())?;
        Ok(Some(Relay { read, tty }))
    }

    /// The descriptor to poll for input.
    pub fn fd(&self) -> impl AsFd + '_ {
        self.read.as_fd()
    }

    /// Copies everything that is waiting in the pipe to the terminal;
    /// returns without waiting when nothing is (a writer that never closes,
    /// such as a program a user left running, never holds us up).
    pub fn copy(&self) {
        let mut buf = [0u8; 8192];
        loop {
            match rustix::io::read(&self.read, &mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    let mut rest = &buf[..n];
                    while !rest.is_empty() {
                        match rustix::io::write(&self.tty, rest) {
                            Ok(0) => return,
                            Ok(w) => rest = &rest[w..],
                            Err(rustix::io::Errno::INTR) => {}
                            Err(_) => return,
                        }
                    }
                }
            }
        }
    }
}

impl Drop for Relay {
    /// At the end (also of an early failure, whose alert is in the pipe):
    /// what is waiting is copied, and our own descriptor 2 writes to the
    /// terminal again, so lines written after this are not lost.
    fn drop(&mut self) {
        self.copy();
        let _ = rustix::stdio::dup2_stderr(&self.tty);
        self.copy();
    }
}
