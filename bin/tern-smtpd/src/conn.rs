//! The connection: buffered reads from fd 0 and writes to fd 1, each
//! bounded by the `timeoutsmtpd` deadline (poll), in plain text or, after
//! [`Conn::start_tls`], through a rustls server connection (blocking,
//! driven by hand: `read_tls`/`write_tls` on the raw descriptors).

use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec, poll};

/// Input buffer size: one read gets at most this much.
const IN_BUF: usize = 16 * 1024;

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
    /// The TLS handshake failed or the client sent bad TLS records.
    Tls(rustls::Error),
}

/// What [`Conn::quiet`] saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Quiet {
    /// The client sent something (or closed).
    Input,
    /// Nothing for the whole delay.
    Silent,
    /// A packet on the other descriptor.
    Other,
}

/// fd 0 and fd 1 with buffers.
pub(crate) struct Conn {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    out: Vec<u8>,
    timeout: Duration,
    tls: Option<Box<rustls::ServerConnection>>,
}

/// fd 0 as a reader, for rustls (poll first: it may block).
struct RawIn;

impl Read for RawIn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        Ok(rustix::io::read(io::stdin().as_fd(), buf)?)
    }
}

/// fd 1 as a writer, for rustls (poll first: it may block). Each write is
/// at most [`MAX_WRITE`] bytes, as for plain replies, so that a write after a
/// successful poll does not block past the deadline on a client that has
/// stopped reading.
struct RawOut;

impl Write for RawOut {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(MAX_WRITE);
        Ok(rustix::io::write(io::stdout().as_fd(), &buf[..n])?)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn retry(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock
    )
}

/// Writes every TLS record rustls has queued, each write within the
/// deadline.
fn push_tls(tls: &mut rustls::ServerConnection, timeout: Duration) -> Result<(), ConnError> {
    while tls.wants_write() {
        wait(
            io::stdout().as_fd(),
            PollFlags::OUT,
            Instant::now() + timeout,
        )?;
        match tls.write_tls(&mut RawOut) {
            Ok(_) => {}
            Err(e) if retry(&e) => {}
            Err(e) => return Err(ConnError::Io(e)),
        }
    }
    Ok(())
}

/// Reads TLS records from fd 0 (within the deadline) and processes them.
/// `Ok(false)`: end of input.
fn pull_tls(tls: &mut rustls::ServerConnection, timeout: Duration) -> Result<bool, ConnError> {
    loop {
        wait(io::stdin().as_fd(), PollFlags::IN, Instant::now() + timeout)?;
        match tls.read_tls(&mut RawIn) {
            Ok(0) => return Ok(false),
            Ok(_) => break,
            Err(e) if retry(&e) => {}
            Err(e) => return Err(ConnError::Io(e)),
        }
    }
    if let Err(e) = tls.process_new_packets() {
        // Tell the client why (an alert), best effort.
        let _ = push_tls(tls, timeout);
        return Err(ConnError::Tls(e));
    }
    Ok(true)
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
            tls: None,
        }
    }

    /// The TLS connection, once [`Conn::start_tls`] succeeded.
    pub(crate) fn tls(&self) -> Option<&rustls::ServerConnection> {
        self.tls.as_deref()
    }

    /// Over TLS, tells the client the stream ends here (close_notify),
    /// best effort, before the server closes the connection.
    pub(crate) fn close_notify(&mut self) {
        if let Some(tls) = self.tls.as_mut() {
            tls.send_close_notify();
            let _ = push_tls(tls, self.timeout.min(Duration::from_secs(5)));
        }
    }

    /// Flushes the queued replies (the `220` to STARTTLS), discards every
    /// byte read and not yet consumed (sent before the handshake: the
    /// STARTTLS command injection, CVE-2011-0411), and runs the TLS
    /// handshake as the server. Returns how many bytes were discarded.
    pub(crate) fn start_tls(
        &mut self,
        config: Arc<rustls::ServerConfig>,
    ) -> Result<usize, ConnError> {
        debug_assert!(self.tls.is_none(), "TLS started twice");
        self.flush()?;
        let discarded = self.end - self.start;
        self.start = 0;
        self.end = 0;
        let mut tls = rustls::ServerConnection::new(config).map_err(ConnError::Tls)?;
        while tls.is_handshaking() {
            if tls.wants_write() {
                push_tls(&mut tls, self.timeout)?;
            } else if !pull_tls(&mut tls, self.timeout)? {
                return Err(ConnError::Io(io::ErrorKind::UnexpectedEof.into()));
            }
        }
        // TLS 1.3 session tickets and the like.
        push_tls(&mut tls, self.timeout)?;
        self.tls = Some(Box::new(tls));
        Ok(discarded)
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
        if let Some(tls) = self.tls.as_mut() {
            let mut done = 0;
            while done < self.out.len() {
                // rustls takes at most its buffer limit at once.
                match tls.writer().write(&self.out[done..]) {
                    Ok(n) => done += n,
                    Err(e) => {
                        self.out.clear();
                        return Err(ConnError::Io(e));
                    }
                }
                if let Err(e) = push_tls(tls, self.timeout) {
                    self.out.clear();
                    return Err(e);
                }
            }
            self.out.clear();
            return push_tls(tls, self.timeout);
        }
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

    /// Flushes, then waits at most `delay` for input on fd 0 or for a
    /// packet on `other` (a worker's socket to its listener). Over TLS,
    /// decrypted bytes rustls already holds count as input.
    pub(crate) fn quiet(
        &mut self,
        delay: Duration,
        other: std::os::fd::BorrowedFd<'_>,
    ) -> Result<Quiet, ConnError> {
        self.flush()?;
        if self.start != self.end {
            return Ok(Quiet::Input);
        }
        if let Some(tls) = self.tls.as_mut() {
            let state = tls.process_new_packets().map_err(ConnError::Tls)?;
            if state.plaintext_bytes_to_read() > 0 || state.peer_has_closed() {
                return Ok(Quiet::Input);
            }
        }
        let deadline = Instant::now() + delay;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let ts = Timespec {
                tv_sec: left.as_secs() as i64,
                tv_nsec: i64::from(left.subsec_nanos()),
            };
            let stdin = io::stdin();
            let mut fds = [
                PollFd::new(&stdin, PollFlags::IN),
                PollFd::new(&other, PollFlags::IN),
            ];
            match poll(&mut fds, Some(&ts)) {
                Ok(0) if left.is_zero() => return Ok(Quiet::Silent),
                Ok(0) => continue,
                Ok(_) if !fds[0].revents().is_empty() => return Ok(Quiet::Input),
                Ok(_) => return Ok(Quiet::Other),
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(ConnError::Io(e.into())),
            }
        }
    }

    /// Flushes, then reads more input (all pending bytes must have been
    /// consumed). `Ok(0)`: end of input.
    pub(crate) fn fill(&mut self) -> Result<usize, ConnError> {
        debug_assert_eq!(self.start, self.end, "fill with unconsumed input");
        self.flush()?;
        self.start = 0;
        self.end = 0;
        if let Some(tls) = self.tls.as_mut() {
            let mut eof = false;
            loop {
                match tls.reader().read(&mut self.buf[..]) {
                    // 0: the client sent close_notify.
                    Ok(n) => {
                        self.end = n;
                        return Ok(n);
                    }
                    // Closed without close_notify: an end of input too.
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock && eof => return Ok(0),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(ConnError::Io(e)),
                }
                eof = !pull_tls(tls, self.timeout)?;
                // Alerts, key updates.
                push_tls(tls, self.timeout)?;
            }
        }
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
