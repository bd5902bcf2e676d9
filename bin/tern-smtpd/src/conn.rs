//! The connection: buffered reads from fd 0 and writes to fd 1, each
//! bounded by the `timeoutsmtpd` deadline (poll).

use std::io;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec, poll};

/// Input buffer size: one read gets at most this much.
const IN_BUF: usize = 64 * 1024;

/// Most bytes handed to one `write`. fd 1 is blocking: after poll says it
/// is writable, a larger write can still block until the client reads
/// (a pipe only promises room for one page, PIPE_BUF), which would escape
/// the deadline. A write of at most this much does not block.
const MAX_WRITE: usize = 4096;

/// Why a read or write did not happen.
#[derive(Debug)]
pub(crate) enum ConnError {
    /// The deadline passed.
    Timeout,
    /// A read or write error.
    Io(io::Error),
}

/// fd 0 and fd 1 with buffers.
pub(crate) struct Conn {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    out: Vec<u8>,
    timeout: Duration,
}

fn wait(fd: impl AsFd, flags: PollFlags, deadline: Instant) -> Result<(), ConnError> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ConnError::Timeout);
        }
        let ts = Timespec {
            tv_sec: left.as_secs() as i64,
            tv_nsec: i64::from(left.subsec_nanos()),
        };
        let mut fds = [PollFd::new(&fd, flags)];
        match poll(&mut fds, Some(&ts)) {
            Ok(0) => continue,
            Ok(_) => return Ok(()),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(ConnError::Io(e.into())),
        }
    }
}

impl Conn {
    pub(crate) fn new(timeout: Duration) -> Conn {
        Conn {
            buf: vec![0; IN_BUF],
            start: 0,
            end: 0,
            out: Vec::with_capacity(4096),
            timeout,
        }
    }

    /// Changes the deadline of each later read or write.
    pub(crate) fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// The bytes read and not yet consumed.
    pub(crate) fn pending(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Marks `n` pending bytes as used.
    pub(crate) fn consume(&mut self, n: usize) {
        self.start += n;
        debug_assert!(self.start <= self.end);
    }

    /// Queues bytes for the client (sent by [`Conn::flush`], which runs
    /// before every blocking read: PIPELINING).
    pub(crate) fn send(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
    }

    /// Writes everything queued, each write within the deadline.
    pub(crate) fn flush(&mut self) -> Result<(), ConnError> {
        let stdout = io::stdout();
        let fd = stdout.as_fd();
        let mut done = 0;
        while done < self.out.len() {
            wait(fd, PollFlags::OUT, Instant::now() + self.timeout)?;
            let end = self.out.len().min(done + MAX_WRITE);
            match rustix::io::write(fd, &self.out[done..end]) {
                Ok(n) => done += n,
                Err(rustix::io::Errno::INTR | rustix::io::Errno::AGAIN) => {}
                Err(e) => {
                    self.out.clear();
                    return Err(ConnError::Io(e.into()));
                }
            }
        }
        self.out.clear();
        Ok(())
    }

    /// Flushes, then reads more input (all pending bytes must have been
    /// consumed). `Ok(0)`: end of input.
    pub(crate) fn fill(&mut self) -> Result<usize, ConnError> {
        debug_assert_eq!(self.start, self.end, "fill with unconsumed input");
        self.flush()?;
        self.start = 0;
        self.end = 0;
        let stdin = io::stdin();
        let fd = stdin.as_fd();
        loop {
            wait(fd, PollFlags::IN, Instant::now() + self.timeout)?;
            match rustix::io::read(fd, &mut self.buf[..]) {
                Ok(n) => {
                    self.end = n;
                    return Ok(n);
                }
                Err(rustix::io::Errno::INTR | rustix::io::Errno::AGAIN) => {}
                Err(e) => return Err(ConnError::Io(e.into())),
            }
        }
    }
}
