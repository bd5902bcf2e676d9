//! The remote-delivery protocol: `tern-send` → `tern-rspawn` → `tern-remote`.
//!
//! Remote delivery differs from local delivery in two ways, and so has its
//! own frames:
//!
//! * one request carries **several recipients** of one message at one
//!   domain ([`RemoteDeliver`]), so they go to the remote server in one SMTP
//!   transaction; the answer is one [`RcptReport`] per recipient, and a
//!   request is finished when every recipient has its report;
//! * the **message travels as a descriptor**, not as a path: `tern-send`
//!   opens the queue file and passes the open descriptor with the request
//!   (`SCM_RIGHTS` on a Unix socket), and `tern-rspawn` passes it on to the
//!   `tern-remote` worker the same way. Neither `tern-rspawn` nor
//!   `tern-remote` (uid `ternr`) can open anything in the queue; they read
//!   only the messages they are handed.
//!
//! Both hops use the same frames, the same [`crate::Hello`] and the same
//! framing ([`crate::write_frame`], [`crate::FrameBuffer`]). The descriptor
//! is attached to the first byte of its frame ([`send_with_fd`]); the
//! receiver keeps the descriptors that arrive in a FIFO ([`recv_with_fds`])
//! and takes one for each [`RemoteDeliver`] it decodes. A request that
//! arrives without a descriptor is a protocol error.
//!
//! A worker `tern-remote` serves one destination domain at a time: it reads
//! requests on its socket until end of file, keeping its SMTP connection
//! open between requests (QUIT only when the socket closes).

use std::collections::VecDeque;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

use crate::{Dec, Enc, Error, MAX_ADDRESS, MAX_TEXT, Outcome};

/// Most recipients in one request (RFC 5321 §4.5.3.1.8: servers accept at
/// least 100 per transaction).
pub const MAX_RCPTS: usize = 100;
/// Longest domain name in a request.
pub const MAX_DOMAIN: usize = 255;

/// Send → rspawn → remote: deliver one message to `recipients`, all at
/// `domain`. The queue file comes as a descriptor with the frame; the
/// message is its bytes from `offset` to the end (`size` bytes, stored with
/// LF line ends).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteDeliver {
    /// The delivery slot; every [`RcptReport`] carries it back.
    pub slot: u32,
    /// The message id (for logs only: the message itself is the descriptor).
    pub id: u64,
    /// Where the message starts in the file.
    pub offset: u64,
    /// Message length in bytes.
    pub size: u64,
    /// The envelope sender (empty for a bounce).
    pub sender: Vec<u8>,
    /// The destination domain, lower case (every recipient is at it).
    pub domain: Vec<u8>,
    /// The recipients, 1 to [`MAX_RCPTS`].
    pub recipients: Vec<Vec<u8>>,
}

impl RemoteDeliver {
    /// Encodes the payload.
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Enc::new(b'M')
            .u32(self.slot)
            .u64(self.id)
            .u64(self.offset)
            .u64(self.size)
            .bytes(&self.sender)
            .bytes(&self.domain)
            .u32(self.recipients.len() as u32);
        for r in &self.recipients {
            e = e.bytes(r);
        }
        e.0
    }

    /// Decodes a payload.
    pub fn decode(p: &[u8]) -> Result<RemoteDeliver, Error> {
        let mut d = Dec::new(p, b'M')?;
        let slot = d.u32()?;
        let id = d.u64()?;
        let offset = d.u64()?;
        let size = d.u64()?;
        let sender = d.bytes(MAX_ADDRESS)?;
        let domain = d.bytes(MAX_DOMAIN)?;
        if domain.is_empty() {
            return Err(Error::Bad("empty domain"));
        }
        let n = d.u32()? as usize;
        if n == 0 {
            return Err(Error::Bad("no recipients"));
        }
        if n > MAX_RCPTS {
            return Err(Error::Bad("too many recipients"));
        }
        let mut recipients = Vec::with_capacity(n);
        for _ in 0..n {
            recipients.push(d.bytes(MAX_ADDRESS)?);
        }
        d.end()?;
        Ok(RemoteDeliver {
            slot,
            id,
            offset,
            size,
            sender,
            domain,
            recipients,
        })
    }
}

/// Remote → rspawn → send: the result for recipient number `rcpt` (its
/// position in the request's list) of the request in `slot`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RcptReport {
    /// The slot of the [`RemoteDeliver`].
    pub slot: u32,
    /// Position of the recipient in the request.
    pub rcpt: u32,
    /// What happened.
    pub outcome: Outcome,
    /// Human-readable text (the remote server's reply, sanitised); at most
    /// [`MAX_TEXT`] bytes.
    pub text: Vec<u8>,
}

impl RcptReport {
    /// Encodes the payload; text beyond [`MAX_TEXT`] is cut.
    pub fn encode(&self) -> Vec<u8> {
        let text = &self.text[..self.text.len().min(MAX_TEXT)];
        Enc::new(b'P')
            .u32(self.slot)
            .u32(self.rcpt)
            .u8(self.outcome.letter())
            .bytes(text)
            .0
    }

    /// Decodes a payload.
    pub fn decode(p: &[u8]) -> Result<RcptReport, Error> {
        let mut d = Dec::new(p, b'P')?;
        let slot = d.u32()?;
        let rcpt = d.u32()?;
        if rcpt as usize >= MAX_RCPTS {
            return Err(Error::Bad("recipient number out of range"));
        }
        let r = RcptReport {
            slot,
            rcpt,
            outcome: Outcome::from_letter(d.u8()?)?,
            text: d.bytes(MAX_TEXT)?,
        };
        d.end()?;
        Ok(r)
    }
}

/// Writes `bytes` to the Unix socket `sock` with `fd` attached to the first
/// byte. Returns how many bytes went out (a non-blocking socket may take
/// fewer); the caller writes the rest with plain writes — the descriptor has
/// been sent once at least one byte was.
pub fn send_with_fd(sock: BorrowedFd<'_>, bytes: &[u8], fd: BorrowedFd<'_>) -> io::Result<usize> {
    let fds = [fd];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut anc = SendAncillaryBuffer::new(&mut space);
    if !anc.push(SendAncillaryMessage::ScmRights(&fds)) {
        return Err(io::Error::other("ancillary buffer too small"));
    }
    loop {
        match rustix::net::sendmsg(
            sock,
            &[io::IoSlice::new(bytes)],
            &mut anc,
            SendFlags::NOSIGNAL,
        ) {
            Ok(n) => return Ok(n),
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// Most descriptors taken from one read.
const MAX_FDS_PER_READ: usize = 16;

/// Reads from the Unix socket `sock` into `buf`, appending every descriptor
/// that arrives to `fds` in order. `Ok(0)` is end of file.
pub fn recv_with_fds(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
    fds: &mut VecDeque<OwnedFd>,
) -> io::Result<usize> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS_PER_READ))];
    let mut anc = RecvAncillaryBuffer::new(&mut space);
    let res = loop {
        match rustix::net::recvmsg(
            sock,
            &mut [io::IoSliceMut::new(buf)],
            &mut anc,
            RecvFlags::CMSG_CLOEXEC,
        ) {
            Ok(r) => break r,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    };
    for msg in anc.drain() {
        if let RecvAncillaryMessage::ScmRights(got) = msg {
            fds.extend(got);
        }
    }
    if res.flags.contains(rustix::net::ReturnFlags::CTRUNC) {
        return Err(io::Error::other(
            "descriptors lost: control message truncated",
        ));
    }
    Ok(res.bytes)
}

/// A connected pair of Unix stream sockets (close-on-exec), for one
/// send–rspawn or rspawn–remote link.
pub fn socket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(rustix::net::socketpair(
        rustix::net::AddressFamily::UNIX,
        rustix::net::SocketType::STREAM,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    )?)
}

/// A reader for one end of a remote link: frames in order, each
/// [`RemoteDeliver`] with its descriptor.
#[derive(Debug, Default)]
pub struct Inbox {
    frames: crate::FrameBuffer,
    fds: VecDeque<OwnedFd>,
}

/// One decoded frame of the remote protocol.
#[derive(Debug)]
pub enum Frame {
    /// A [`crate::Hello`].
    Hello(crate::Hello),
    /// A request with its message descriptor.
    Deliver(RemoteDeliver, OwnedFd),
    /// A per-recipient result.
    Report(RcptReport),
}

impl Inbox {
    /// Reads once from `sock` (blocking or not, as the socket is). `Ok(false)`
    /// at end of file; an end of file inside a frame is an error.
    pub fn fill(&mut self, sock: BorrowedFd<'_>) -> Result<bool, Error> {
        let mut buf = [0u8; 16 * 1024];
        let n = match recv_with_fds(sock, &mut buf, &mut self.fds) {
            Ok(n) => n,
            // A peer that exits with our data unread resets the socket:
            // for the reader it has gone, as at end of file.
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => 0,
            Err(e) => return Err(e.into()),
        };
        if n == 0 {
            if self.frames.is_partial() {
                return Err(Error::Bad("end of file inside a frame"));
            }
            return Ok(false);
        }
        self.frames.extend(&buf[..n]);
        Ok(true)
    }

    /// The next whole frame, if one has arrived.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, Error> {
        let Some(p) = self.frames.next_frame()? else {
            return Ok(None);
        };
        match p.get(1) {
            Some(b'H') => Ok(Some(Frame::Hello(crate::Hello::decode(&p)?))),
            Some(b'P') => Ok(Some(Frame::Report(RcptReport::decode(&p)?))),
            Some(b'M') => {
                let req = RemoteDeliver::decode(&p)?;
                let fd = self
                    .fds
                    .pop_front()
                    .ok_or(Error::Bad("request without a message descriptor"))?;
                Ok(Some(Frame::Deliver(req, fd)))
            }
            _ => Err(Error::Bad("unexpected message type")),
        }
    }
}

/// Writes one request frame with its descriptor, blocking until all of it
/// is out (for the blocking side of a link: `tern-rspawn` → worker).
pub fn write_deliver(
    sock: BorrowedFd<'_>,
    req: &RemoteDeliver,
    fd: BorrowedFd<'_>,
) -> Result<(), Error> {
    let payload = req.encode();
    if payload.len() > crate::MAX_FRAME {
        return Err(Error::Bad("frame too large"));
    }
    let mut buf = Vec::with_capacity(4 + payload.len());
    buf.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    buf.extend_from_slice(&payload);
    let mut sent = send_with_fd(sock, &buf, fd)?;
    while sent < buf.len() {
        match rustix::io::write(sock, &buf[sent..]) {
            Ok(n) => sent += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(rustix::io::Errno::AGAIN) => {
                let mut pfd = [rustix::event::PollFd::new(
                    &sock,
                    rustix::event::PollFlags::OUT,
                )];
                let _ = rustix::event::poll(&mut pfd, None);
            }
            Err(e) => return Err(io::Error::from(e).into()),
        }
    }
    Ok(())
}

/// Writes any frame payload (no descriptor), blocking until it is out.
pub fn write_plain(sock: impl AsFd, payload: &[u8]) -> Result<(), Error> {
    let mut f = std::fs::File::from(sock.as_fd().try_clone_to_owned()?);
    crate::write_frame(&mut f, payload)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, Write};

    fn req(n: usize) -> RemoteDeliver {
        RemoteDeliver {
            slot: 3,
            id: 77,
            offset: 4096,
            size: 12,
            sender: b"a@b.example".to_vec(),
            domain: b"c.example".to_vec(),
            recipients: (0..n)
                .map(|i| format!("u{i}@c.example").into_bytes())
                .collect(),
        }
    }

    #[test]
    fn round_trips() {
        for n in [1, 2, MAX_RCPTS] {
            let r = req(n);
            assert_eq!(RemoteDeliver::decode(&r.encode()).unwrap(), r);
        }
        let p = RcptReport {
            slot: 9,
            rcpt: 99,
            outcome: Outcome::Failed,
            text: b"550 5.1.1 no such user".to_vec(),
        };
        assert_eq!(RcptReport::decode(&p.encode()).unwrap(), p);
        // text is cut at MAX_TEXT on the way out
        let long = RcptReport {
            text: vec![b'x'; MAX_TEXT + 10],
            ..p
        };
        assert_eq!(
            RcptReport::decode(&long.encode()).unwrap().text.len(),
            MAX_TEXT
        );
        // a full request fits in one frame
        assert!(req(MAX_RCPTS).encode().len() < crate::MAX_FRAME);
    }

    #[test]
    fn bad_frames() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (
                Enc::new(b'M')
                    .u32(1)
                    .u64(1)
                    .u64(0)
                    .u64(1)
                    .bytes(b"")
                    .bytes(b"")
                    .u32(1)
                    .0,
                "empty domain",
            ),
            (
                Enc::new(b'M')
                    .u32(1)
                    .u64(1)
                    .u64(0)
                    .u64(1)
                    .bytes(b"")
                    .bytes(b"d")
                    .u32(0)
                    .0,
                "no recipients",
            ),
            (
                Enc::new(b'M')
                    .u32(1)
                    .u64(1)
                    .u64(0)
                    .u64(1)
                    .bytes(b"")
                    .bytes(b"d")
                    .u32(MAX_RCPTS as u32 + 1)
                    .0,
                "too many recipients",
            ),
            (
                Enc::new(b'M')
                    .u32(1)
                    .u64(1)
                    .u64(0)
                    .u64(1)
                    .bytes(b"")
                    .bytes(b"d")
                    .u32(2)
                    .bytes(b"x")
                    .0,
                "payload truncated",
            ),
            (
                Enc::new(b'M')
                    .u32(1)
                    .u64(1)
                    .u64(0)
                    .u64(1)
                    .bytes(b"")
                    .bytes(&[b'd'; MAX_DOMAIN + 1])
                    .u32(1)
                    .0,
                "field too long",
            ),
        ];
        for (p, want) in &cases {
            match RemoteDeliver::decode(p) {
                Err(Error::Bad(h)) => assert_eq!(h, *want),
                other => panic!("{want}: {other:?}"),
            }
        }
        let out_of_range = Enc::new(b'P')
            .u32(1)
            .u32(MAX_RCPTS as u32)
            .u8(b'K')
            .bytes(b"")
            .0;
        assert!(matches!(
            RcptReport::decode(&out_of_range),
            Err(Error::Bad("recipient number out of range"))
        ));
        let bad_letter = Enc::new(b'P').u32(1).u32(0).u8(b'x').bytes(b"").0;
        assert!(matches!(
            RcptReport::decode(&bad_letter),
            Err(Error::Bad("unknown outcome letter"))
        ));
    }

    #[test]
    fn descriptors_travel_with_their_frames() {
        let (a, b) = socket_pair().unwrap();
        let mut files = Vec::new();
        for i in 0..3u8 {
            let mut f = tempfile_with(&[b'0' + i; 5]);
            f.rewind().unwrap();
            files.push(f);
        }
        for (i, f) in files.iter().enumerate() {
            let mut r = req(1);
            r.slot = i as u32;
            write_deliver(a.as_fd(), &r, f.as_fd()).unwrap();
            // a report frame between requests carries no descriptor
            let rep = RcptReport {
                slot: i as u32,
                rcpt: 0,
                outcome: Outcome::Delivered,
                text: vec![],
            };
            write_plain(&a, &rep.encode()).unwrap();
        }
        drop(a);
        let mut inbox = Inbox::default();
        let mut got = Vec::new();
        loop {
            while let Some(f) = inbox.next_frame().unwrap() {
                got.push(f);
            }
            if !inbox.fill(b.as_fd()).unwrap() {
                break;
            }
        }
        assert_eq!(got.len(), 6);
        let mut slot = 0u8;
        for f in got {
            if let Frame::Deliver(r, fd) = f {
                let mut s = String::new();
                std::fs::File::from(fd).read_to_string(&mut s).unwrap();
                assert_eq!(r.slot, slot as u32);
                assert_eq!(s, String::from_utf8(vec![b'0' + slot; 5]).unwrap());
                slot += 1;
            }
        }
        assert_eq!(slot, 3);
    }

    #[test]
    fn a_peer_gone_with_our_data_unread_is_end_of_file() {
        let (a, b) = socket_pair().unwrap();
        // b writes, a never reads and closes: b's next read is ECONNRESET.
        write_plain(&b, &crate::Hello { max_concurrency: 1 }.encode()).unwrap();
        drop(a);
        let mut inbox = Inbox::default();
        assert!(!inbox.fill(b.as_fd()).unwrap());
    }

    #[test]
    fn request_without_descriptor_is_an_error() {
        let (a, b) = socket_pair().unwrap();
        write_plain(&a, &req(1).encode()).unwrap();
        let mut inbox = Inbox::default();
        inbox.fill(b.as_fd()).unwrap();
        assert!(matches!(
            inbox.next_frame(),
            Err(Error::Bad("request without a message descriptor"))
        ));
    }

    fn tempfile_with(bytes: &[u8]) -> std::fs::File {
        let dir = std::env::temp_dir();
        let path = dir.join(format!("tern-ipc-test-{}-{}", std::process::id(), bytes[0]));
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        std::fs::remove_file(&path).unwrap();
        f.write_all(bytes).unwrap();
        f
    }
}
