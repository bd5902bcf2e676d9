//! The queue gate's wire protocol: how a caller that cannot run the setuid
//! `tern-queue` (a process with `no_new_privs`, such as `tern-smtpd` under
//! the hardened systemd units) hands a message to `tern-queue --gate`
//! running as the queue user on the other end of a Unix stream socket.
//!
//! The exchange, on one connection:
//!
//! 1. the client sends the 4-byte [`HEADER`] (`t` `q` `g` and the protocol
//!    version) with exactly two descriptors attached (`SCM_RIGHTS`): the
//!    read end of the message pipe, then the read end of the envelope pipe;
//! 2. the client writes the message and then the envelope into the write
//!    ends, exactly as it would to a `tern-queue` child's fd 0 and fd 1;
//! 3. the gate answers with one byte, `tern-queue`'s exit code
//!    ([`crate::QueueExit`]), and exits with the same code.
//!
//! The gate takes the caller's uid (for the `Received:` line and the queue
//! file) from the socket's peer credentials ([`peer_uid`], `SO_PEERCRED`,
//! filled in by the kernel at `connect`), never from anything the client
//! sends. A connection closed before the answer byte means nothing was
//! promised: the caller treats it as a temporary failure.

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{BorrowedFd, OwnedFd};

/// The protocol version this build speaks.
pub const VERSION: u8 = 1;

/// The fixed frame a client sends first, with the two descriptors attached.
pub const HEADER: [u8; 4] = [b't', b'q', b'g', VERSION];

/// The number of descriptors a request carries (message, envelope).
pub const FDS: usize = 2;

/// Descriptors the gate accepts room for in one read: one more than
/// [`FDS`], so that a third one is seen (and refused) rather than silently
/// dropped by the kernel.
const FD_ROOM: usize = FDS + 1;

/// Why a request was refused. Every variant means nothing was queued;
/// `tern-queue --gate` answers them all with the read-error code (54).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GateError {
    /// The connection ended before a whole header arrived.
    #[error("connection closed after {0} of {len} header bytes", len = HEADER.len())]
    ShortHeader(usize),
    /// The header is not `tqg` followed by a version this build speaks.
    #[error("bad header {0:02x?} (expected {HEADER:02x?})")]
    BadHeader([u8; 4]),
    /// The request carried a number of descriptors other than two.
    #[error("{0} descriptors attached, expected {FDS}")]
    FdCount(usize),
    /// More descriptors were sent than the gate has room for (the kernel
    /// closed the rest).
    #[error("too many descriptors attached (control message truncated)")]
    TooManyFds,
    /// A system call on the socket failed.
    #[error("socket: {0}")]
    Io(#[from] io::Error),
}

/// The two input descriptors of one request.
#[derive(Debug)]
pub struct Request {
    /// The read end of the message pipe (the gate's "fd 0").
    pub message: OwnedFd,
    /// The read end of the envelope pipe (the gate's "fd 1").
    pub envelope: OwnedFd,
}

/// Client side: sends [`HEADER`] with `message` and `envelope` attached.
/// The caller closes its own copies of these read ends afterwards, so that
/// a gate that dies makes the caller's writes fail instead of blocking.
pub fn send_request(
    sock: BorrowedFd<'_>,
    message: BorrowedFd<'_>,
    envelope: BorrowedFd<'_>,
) -> io::Result<()> {
    let fds = [message, envelope];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(FDS))];
    let mut anc = SendAncillaryBuffer::new(&mut space);
    if !anc.push(SendAncillaryMessage::ScmRights(&fds)) {
        return Err(io::Error::other("ancillary buffer too small"));
    }
    let sent = loop {
        match rustix::net::sendmsg(
            sock,
            &[io::IoSlice::new(&HEADER)],
            &mut anc,
            SendFlags::NOSIGNAL,
        ) {
            Ok(n) => break n,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    };
    // The descriptors went with the first byte; the rest is plain bytes.
    write_all(sock, &HEADER[sent..])
}

/// Gate side: reads the header and the descriptors from `sock`. Blocks
/// until the whole header has arrived or the connection ends (the caller's
/// deadline bounds the wait). Descriptors arrive close-on-exec.
pub fn recv_request(sock: BorrowedFd<'_>) -> Result<Request, GateError> {
    let mut header = [0u8; HEADER.len()];
    let mut got = 0;
    let mut fds: Vec<OwnedFd> = Vec::with_capacity(FD_ROOM);
    while got < header.len() {
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(FD_ROOM))];
        let mut anc = RecvAncillaryBuffer::new(&mut space);
        let res = loop {
            match rustix::net::recvmsg(
                sock,
                &mut [io::IoSliceMut::new(&mut header[got..])],
                &mut anc,
                RecvFlags::CMSG_CLOEXEC,
            ) {
                Ok(r) => break r,
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(GateError::Io(e.into())),
            }
        };
        for msg in anc.drain() {
            if let RecvAncillaryMessage::ScmRights(more) = msg {
                fds.extend(more);
            }
        }
        if res.flags.contains(ReturnFlags::CTRUNC) {
            return Err(GateError::TooManyFds);
        }
        if fds.len() > FDS {
            return Err(GateError::FdCount(fds.len()));
        }
        if res.bytes == 0 {
            return Err(GateError::ShortHeader(got));
        }
        got += res.bytes;
    }
    if header != HEADER {
        return Err(GateError::BadHeader(header));
    }
    let mut fds = fds.into_iter();
    match (fds.next(), fds.next()) {
        (Some(message), Some(envelope)) => Ok(Request { message, envelope }),
        (a, b) => Err(GateError::FdCount(
            usize::from(a.is_some()) + usize::from(b.is_some()),
        )),
    }
}

/// The uid of the process that connected `sock` (`SO_PEERCRED`), as the
/// kernel recorded it: the only caller identity the gate believes.
pub fn peer_uid(sock: BorrowedFd<'_>) -> io::Result<u32> {
    Ok(rustix::net::sockopt::socket_peercred(sock)?.uid.as_raw())
}

/// Gate side: sends the one-byte answer (an exit code).
pub fn send_status(sock: BorrowedFd<'_>, code: u8) -> io::Result<()> {
    write_all(sock, &[code])
}

/// Client side: waits for the one-byte answer. `Ok(None)`: the gate closed
/// the connection without answering (killed, crashed): nothing was
/// promised.
pub fn read_status(sock: BorrowedFd<'_>) -> io::Result<Option<u8>> {
    let mut b = [0u8; 1];
    loop {
        match rustix::io::read(sock, &mut b) {
            Ok(0) => return Ok(None),
            Ok(_) => return Ok(Some(b[0])),
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

fn write_all(sock: BorrowedFd<'_>, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        match rustix::net::send(sock, bytes, SendFlags::NOSIGNAL) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    fn pipe() -> (OwnedFd, OwnedFd) {
        let (r, w) = std::io::pipe().unwrap();
        (r.into(), w.into())
    }

    /// Sends `bytes` with `fds` attached, in one sendmsg.
    fn raw_send(sock: &UnixStream, bytes: &[u8], fds: &[BorrowedFd<'_>]) {
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(8))];
        let mut anc = SendAncillaryBuffer::new(&mut space);
        if !fds.is_empty() {
            assert!(anc.push(SendAncillaryMessage::ScmRights(fds)));
        }
        let n = rustix::net::sendmsg(
            sock,
            &[io::IoSlice::new(bytes)],
            &mut anc,
            SendFlags::NOSIGNAL,
        )
        .unwrap();
        assert_eq!(n, bytes.len());
    }

    #[test]
    fn a_request_round_trips_and_the_pipes_work() {
        let (a, b) = UnixStream::pair().unwrap();
        let (mr, mw) = pipe();
        let (er, ew) = pipe();
        send_request(a.as_fd(), mr.as_fd(), er.as_fd()).unwrap();
        drop((mr, er));
        let req = recv_request(b.as_fd()).unwrap();
        std::fs::File::from(mw).write_all(b"message").unwrap();
        std::fs::File::from(ew).write_all(b"envelope").unwrap();
        let mut s = String::new();
        std::fs::File::from(req.message)
            .read_to_string(&mut s)
            .unwrap();
        assert_eq!(s, "message");
        s.clear();
        std::fs::File::from(req.envelope)
            .read_to_string(&mut s)
            .unwrap();
        assert_eq!(s, "envelope");
        assert_eq!(peer_uid(b.as_fd()).unwrap(), tern_sys::effective_uid());
        send_status(b.as_fd(), 53).unwrap();
        assert_eq!(read_status(a.as_fd()).unwrap(), Some(53));
        drop(b);
        assert_eq!(read_status(a.as_fd()).unwrap(), None);
    }

    #[test]
    fn a_header_split_over_reads_is_accepted() {
        let (a, b) = UnixStream::pair().unwrap();
        let (mr, _mw) = pipe();
        let (er, _ew) = pipe();
        raw_send(&a, &HEADER[..1], &[mr.as_fd(), er.as_fd()]);
        let t = std::thread::spawn(move || recv_request(b.as_fd()).map(|_| ()));
        std::thread::sleep(std::time::Duration::from_millis(50));
        (&a).write_all(&HEADER[1..]).unwrap();
        t.join().unwrap().unwrap();
    }

    #[test]
    fn bad_requests_are_refused() {
        let (p1, _w1) = pipe();
        let (p2, _w2) = pipe();
        let (p3, _w3) = pipe();
        let all = [p1.as_fd(), p2.as_fd(), p3.as_fd()];
        let many: Vec<BorrowedFd<'_>> = (0..6).map(|i| all[i % 3]).collect();
        let mut other_version = HEADER;
        other_version[3] = VERSION + 1;
        // (case, bytes sent before the client closes, descriptors
        // attached, the expected refusal)
        type Check = fn(&GateError) -> bool;
        let cases: Vec<(&str, &[u8], &[BorrowedFd<'_>], Check)> = vec![
            ("nothing at all", b"", &[], |e| {
                matches!(e, GateError::ShortHeader(0))
            }),
            ("no descriptors", &HEADER, &[], |e| {
                matches!(e, GateError::FdCount(0))
            }),
            ("one descriptor", &HEADER, &all[..1], |e| {
                matches!(e, GateError::FdCount(1))
            }),
            ("three descriptors", &HEADER, &all[..3], |e| {
                matches!(e, GateError::FdCount(3))
            }),
            ("six descriptors", &HEADER, &many, |e| {
                matches!(e, GateError::TooManyFds | GateError::FdCount(_))
            }),
            ("short header", &HEADER[..3], &all[..2], |e| {
                matches!(e, GateError::ShortHeader(3))
            }),
            ("wrong magic", b"smtp", &all[..2], |e| {
                matches!(e, GateError::BadHeader(_))
            }),
            ("other version", &other_version, &all[..2], |e| {
                matches!(e, GateError::BadHeader(_))
            }),
        ];
        for (name, bytes, fds, check) in cases {
            let (a, b) = UnixStream::pair().unwrap();
            if !bytes.is_empty() {
                raw_send(&a, bytes, fds);
            }
            drop(a);
            match recv_request(b.as_fd()) {
                Ok(_) => panic!("{name}: accepted"),
                Err(e) => assert!(check(&e), "{name}: {e}"),
            }
        }
    }

    #[test]
    fn descriptors_in_two_messages_count_together() {
        let (a, b) = UnixStream::pair().unwrap();
        let (p1, _w1) = pipe();
        let (p2, _w2) = pipe();
        let (p3, _w3) = pipe();
        raw_send(&a, &HEADER[..2], &[p1.as_fd(), p2.as_fd()]);
        raw_send(&a, &HEADER[2..], &[p3.as_fd()]);
        drop(a);
        // Linux never joins two sends that carry descriptors into one
        // read: the gate counts across its reads.
        assert!(matches!(
            recv_request(b.as_fd()),
            Err(GateError::FdCount(3))
        ));
    }

    #[test]
    fn a_status_to_a_closed_client_is_an_error_not_a_signal() {
        let (a, b) = UnixStream::pair().unwrap();
        drop(a);
        assert!(send_status(b.as_fd(), 0).is_err());
    }
}
