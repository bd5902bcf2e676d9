//! Copying a child's stderr to ours from a thread, for [`crate::QueueClient`]
//! when our stderr is a terminal: the child (the setuid queue program, whose
//! code runs as `ternq`) then never holds the terminal, and what it writes
//! still shows.

use rustix::event::{PollFd, PollFlags};
use rustix::io::Errno;
use std::io::{PipeReader, Write as _};
use std::os::fd::OwnedFd;

/// A running copy from a pipe to our stderr.
pub(crate) struct StderrRelay {
    /// Closed by [`StderrRelay::finish`]: the thread then copies what is
    /// left in the pipe and ends, even if a process the child left behind
    /// still holds the pipe's write end.
    stop: OwnedFd,
    thread: std::thread::JoinHandle<()>,
}

impl StderrRelay {
    /// Starts copying `from` (the read end of the child's stderr pipe) to
    /// our stderr.
    pub(crate) fn start(from: PipeReader) -> std::io::Result<StderrRelay> {
        let (stop_r, stop) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
        let from = OwnedFd::from(from);
        let thread = std::thread::Builder::new()
            .name("stderr-relay".into())
            .stack_size(64 * 1024)
            .spawn(move || copy(&from, &stop_r))?;
        Ok(StderrRelay { stop, thread })
    }

    /// Call once the child has ended: everything it wrote is in the pipe;
    /// copies it and waits for the thread.
    pub(crate) fn finish(self) {
        drop(self.stop);
        let _ = self.thread.join();
    }
}

fn copy(from: &OwnedFd, stop: &OwnedFd) {
    let mut buf = [0u8; 4096];
    let mut stopping = false;
    loop {
        if !stopping {
            let mut fds = [
                PollFd::new(from, PollFlags::IN),
                PollFd::new(stop, PollFlags::IN),
            ];
            match rustix::event::poll(&mut fds, None) {
                Ok(_) | Err(Errno::INTR) => {}
                Err(_) => return,
            }
            stopping = !fds[1].revents().is_empty();
            if fds[0].revents().is_empty() {
                continue;
            }
        } else {
            // Stopping: take only what is there now.
            let mut fds = [PollFd::new(from, PollFlags::IN)];
            if !matches!(rustix::event::poll(&mut fds, Some(&rustix::event::Timespec::default())), Ok(n) if n > 0)
            {
                return;
            }
        }
        match rustix::io::read(from, &mut buf) {
            Ok(0) => return,
            Ok(n) => {
                let _ = std::io::stderr().write_all(&buf[..n]);
            }
            Err(Errno::INTR) => {}
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ends_when_told_even_if_a_writer_is_left() {
        let (r, mut w) = std::io::pipe().unwrap();
        let relay = StderrRelay::start(r).unwrap();
        w.write_all(b"relay test line\n").unwrap();
        // `w` stays open (a process the child left behind): finish still
        // returns.
        relay.finish();
        drop(w);
    }
}
