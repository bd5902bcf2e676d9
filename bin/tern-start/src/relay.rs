//! Copying children's output to tern-start's own descriptors, so that no
//! child (each runs as another uid, or runs programs of other uids) ever
//! holds the terminal tern-start was started from.
//!
//! Each [`Relay`] source is the read end of a pipe whose write end a child
//! has; [`Relay::pump`] copies whatever is there to the source's
//! destination (tern-start's stderr or stdout) without blocking on the
//! pipe. tern-start polls the sources with its signal descriptor.

use rustix::event::{PollFd, PollFlags};
use rustix::fs::OFlags;
use rustix::io::Errno;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

/// Pipes to copy, each to its own destination.
#[derive(Default)]
pub(crate) struct Relay {
    /// `(read end, destination)`; a source is removed at end of file.
    sources: Vec<(OwnedFd, OwnedFd)>,
}

impl Relay {
    /// Makes a pipe whose read end is copied to `dest` (a duplicate of
    /// it is kept); returns the write end, for a child's stdout or stderr.
    pub(crate) fn pipe_to(&mut self, dest: BorrowedFd<'_>) -> std::io::Result<OwnedFd> {
        let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
        let flags = rustix::fs::fcntl_getfl(&r)?;
        rustix::fs::fcntl_setfl(&r, flags | OFlags::NONBLOCK)?;
        let dest = rustix::io::fcntl_dupfd_cloexec(dest, 3)?;
        self.sources.push((r, dest));
        Ok(w)
    }

    /// Poll entries for the sources (readable, or hung up).
    pub(crate) fn poll_fds(&self) -> Vec<PollFd<'_>> {
        self.sources
            .iter()
            .map(|(r, _)| PollFd::new(r, PollFlags::IN))
            .collect()
    }

    /// Copies what every source holds now to its destination; forgets a
    /// source at end of file (every writer closed it). A destination that
    /// cannot be written (a terminal that went away) loses the bytes; the
    /// children never block on it for long, as the pipe is still drained.
    pub(crate) fn pump(&mut self) {
        let mut buf = [0u8; 16 * 1024];
        self.sources.retain(|(r, dest)| {
            loop {
                match rustix::io::read(r, &mut buf) {
                    Ok(0) => return false,
                    Ok(n) => write_all(dest.as_fd(), &buf[..n]),
                    Err(Errno::INTR) => continue,
                    Err(Errno::AGAIN) => return true,
                    Err(_) => return false,
                }
            }
        });
    }
}

/// Writes all of `bytes` to `fd`; gives up on an error (the bytes are lost).
fn write_all(fd: BorrowedFd<'_>, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        match rustix::io::write(fd, bytes) {
            Ok(0) => return,
            Ok(n) => bytes = &bytes[n..],
            Err(Errno::INTR) => {}
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read as _, Write as _};

    #[test]
    fn copies_until_end_of_file() {
        let (mut out_r, out_w) = std::io::pipe().unwrap();
        let out_w = OwnedFd::from(out_w);
        let mut relay = Relay::default();
        let w = relay.pipe_to(out_w.as_fd()).unwrap();
        drop(out_w);
        let mut w = std::fs::File::from(w);
        w.write_all(b"one line\n").unwrap();
        relay.pump();
        assert_eq!(relay.sources.len(), 1, "the writer is still open");
        w.write_all(b"two\n").unwrap();
        drop(w);
        relay.pump();
        assert!(relay.sources.is_empty(), "end of file forgets the source");
        drop(relay);
        let mut got = String::new();
        out_r.read_to_string(&mut got).unwrap();
        assert_eq!(got, "one line\ntwo\n");
    }
}
