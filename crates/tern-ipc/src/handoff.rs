//! The hand-off protocol between `tern-listen` and its reused SMTP workers
//! (`tern-smtpd --worker`), over one `SOCK_SEQPACKET` socket pair per
//! worker: each message is one packet, so boundaries are the kernel's.
//!
//! * listener → worker: [`Assign`], with the accepted TCP connection
//!   attached (`SCM_RIGHTS`, exactly one descriptor): the per-connection
//!   variables that tcpserver would put in the environment (`TCPREMOTEIP`,
//!   the rule's variables...), and, for a connection that was parked, the
//!   session state the last worker left ([`Park::state`]);
//! * worker → listener: [`Report::Done`] when it has closed the connection,
//!   or [`Report::Park`] with the connection attached when the client went
//!   quiet between commands: the listener holds it in its event loop (no
//!   process pinned) and hands it back to a free worker, with the state,
//!   when the client speaks again.
//!
//! Both sides run as the same uid (ternd); still, every length is bounded
//! and a packet that does not parse is an error: the listener then stops
//! using that worker (kills it), a worker exits.

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{BorrowedFd, OwnedFd};

/// Largest packet either side sends or accepts.
pub const MAX_PACKET: usize = 64 * 1024;
/// Most variables one connection carries.
pub const MAX_VARS: usize = 64;
/// Longest variable name.
pub const MAX_NAME: usize = 64;
/// Longest variable value.
pub const MAX_VALUE: usize = 4096;
/// Longest saved session state.
pub const MAX_STATE: usize = 32 * 1024;
/// Longest line the listener writes when a parked connection times out.
pub const MAX_LINE: usize = 512;

/// Why a packet was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandoffError {
    /// The peer closed its end.
    #[error("peer closed the socket")]
    Closed,
    /// The packet is longer than [`MAX_PACKET`] (truncated by the kernel).
    #[error("packet over {MAX_PACKET} bytes")]
    TooLong,
    /// A packet that must carry a descriptor came without one, or one that
    /// must not came with some, or with more than one.
    #[error("{0} descriptors attached, expected {1}")]
    Fds(usize, usize),
    /// The bytes do not parse.
    #[error("bad packet: {0}")]
    Format(&'static str),
    /// A system call failed.
    #[error("socket: {0}")]
    Io(#[from] io::Error),
}

/// A connection for a worker.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Assign {
    /// `NAME=value` pairs for this connection only.
    pub vars: Vec<(String, String)>,
    /// The state a worker saved when it parked this connection (`None`:
    /// a new connection, to be greeted).
    pub state: Option<Vec<u8>>,
    /// The listener is short of workers: park this connection as soon as
    /// its client is quiet, and shorten waits (see [`HURRY`]).
    pub hurry: bool,
}

/// The one-byte packet the listener sends to busy workers when it runs
/// short of them: each then parks its connection at the next quiet
/// moment and waits at most a short time for a client that cannot be
/// parked (TLS). Postfix shortens its timeouts under stress the same way.
pub const HURRY: &[u8] = b"H";

/// A connection a worker gives back until its client speaks again.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Park {
    /// Seconds the client may stay silent before the listener closes it.
    pub timeout_secs: u32,
    /// What the listener writes before closing it on timeout (or at
    /// shutdown): a complete reply line, CRLF included.
    pub closing: Vec<u8>,
    /// The session, for the worker that takes it over.
    pub state: Vec<u8>,
}

/// What a worker tells the listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// The connection is over (closed by the worker); the exit code says
    /// how it went (tern-smtpd's codes).
    Done(u8),
    /// The connection is parked (the descriptor is attached).
    Park(Park),
}

struct Out(Vec<u8>);

impl Out {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u16(&mut self, v: usize) {
        self.0.extend_from_slice(&(v as u16).to_be_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn bytes16(&mut self, b: &[u8]) {
        self.u16(b.len());
        self.0.extend_from_slice(b);
    }
    fn bytes32(&mut self, b: &[u8]) {
        self.u32(b.len() as u32);
        self.0.extend_from_slice(b);
    }
}

struct In<'a>(&'a [u8]);

impl<'a> In<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], HandoffError> {
        if self.0.len() < n {
            return Err(HandoffError::Format("truncated"));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, HandoffError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<usize, HandoffError> {
        let b = self.take(2)?;
        Ok(usize::from(u16::from_be_bytes([b[0], b[1]])))
    }
    fn u32(&mut self) -> Result<u32, HandoffError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn bytes16(&mut self, max: usize, what: &'static str) -> Result<&'a [u8], HandoffError> {
        let n = self.u16()?;
        if n > max {
            return Err(HandoffError::Format(what));
        }
        self.take(n)
    }
    fn bytes32(&mut self, max: usize, what: &'static str) -> Result<&'a [u8], HandoffError> {
        let n = self.u32()? as usize;
        if n > max {
            return Err(HandoffError::Format(what));
        }
        self.take(n)
    }
    fn end(&self) -> Result<(), HandoffError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(HandoffError::Format("trailing bytes"))
        }
    }
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= MAX_NAME
        && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

impl Assign {
    /// The packet (without the descriptor). Fails when a bound is broken.
    pub fn encode(&self) -> Result<Vec<u8>, HandoffError> {
        if self.vars.len() > MAX_VARS {
            return Err(HandoffError::Format("too many variables"));
        }
        let mut o = Out(Vec::with_capacity(256));
        o.u8(if self.state.is_some() { b'R' } else { b'C' });
        o.u8(u8::from(self.hurry));
        o.u16(self.vars.len());
        for (k, v) in &self.vars {
            if !valid_name(k) || v.len() > MAX_VALUE || v.contains('\0') {
                return Err(HandoffError::Format("bad variable"));
            }
            o.bytes16(k.as_bytes());
            o.bytes16(v.as_bytes());
        }
        if let Some(s) = &self.state {
            if s.len() > MAX_STATE {
                return Err(HandoffError::Format("state too long"));
            }
            o.bytes32(s);
        }
        check_len(o.0)
    }

    /// Parses a packet.
    pub fn decode(p: &[u8]) -> Result<Assign, HandoffError> {
        let mut i = In(p);
        let resume = match i.u8()? {
            b'C' => false,
            b'R' => true,
            _ => return Err(HandoffError::Format("unknown assignment type")),
        };
        let hurry = match i.u8()? {
            0 => false,
            1 => true,
            _ => return Err(HandoffError::Format("bad flags")),
        };
        let n = i.u16()?;
        if n > MAX_VARS {
            return Err(HandoffError::Format("too many variables"));
        }
        let mut vars = Vec::with_capacity(n);
        for _ in 0..n {
            let k = i.bytes16(MAX_NAME, "variable name too long")?;
            let v = i.bytes16(MAX_VALUE, "variable value too long")?;
            let k = std::str::from_utf8(k).map_err(|_| HandoffError::Format("bad variable"))?;
            let v = std::str::from_utf8(v).map_err(|_| HandoffError::Format("bad variable"))?;
            if !valid_name(k) || v.contains('\0') {
                return Err(HandoffError::Format("bad variable"));
            }
            vars.push((k.to_string(), v.to_string()));
        }
        let state = if resume {
            Some(i.bytes32(MAX_STATE, "state too long")?.to_vec())
        } else {
            None
        };
        i.end()?;
        Ok(Assign { vars, state, hurry })
    }

    /// The value of `name`, if this connection sets it.
    pub fn var(&self, name: &str) -> Option<&str> {
        self.vars
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

impl Report {
    /// The packet (without the descriptor). Fails when a bound is broken.
    pub fn encode(&self) -> Result<Vec<u8>, HandoffError> {
        let mut o = Out(Vec::with_capacity(64));
        match self {
            Report::Done(code) => {
                o.u8(b'D');
                o.u8(*code);
            }
            Report::Park(p) => {
                if p.closing.len() > MAX_LINE || p.state.len() > MAX_STATE {
                    return Err(HandoffError::Format("park too long"));
                }
                o.u8(b'P');
                o.u32(p.timeout_secs);
                o.bytes16(&p.closing);
                o.bytes32(&p.state);
            }
        }
        check_len(o.0)
    }

    /// Parses a packet.
    pub fn decode(p: &[u8]) -> Result<Report, HandoffError> {
        let mut i = In(p);
        let r = match i.u8()? {
            b'D' => Report::Done(i.u8()?),
            b'P' => {
                let timeout_secs = i.u32()?;
                let closing = i.bytes16(MAX_LINE, "closing line too long")?.to_vec();
                let state = i.bytes32(MAX_STATE, "state too long")?.to_vec();
                Report::Park(Park {
                    timeout_secs,
                    closing,
                    state,
                })
            }
            _ => return Err(HandoffError::Format("unknown report type")),
        };
        i.end()?;
        Ok(r)
    }

    /// How many descriptors this report carries.
    pub fn fds(&self) -> usize {
        match self {
            Report::Done(_) => 0,
            Report::Park(_) => 1,
        }
    }
}

fn check_len(p: Vec<u8>) -> Result<Vec<u8>, HandoffError> {
    if p.len() > MAX_PACKET {
        Err(HandoffError::TooLong)
    } else {
        Ok(p)
    }
}

/// Sends one packet with `fd` (if any) attached.
pub fn send(sock: BorrowedFd<'_>, packet: &[u8], fd: Option<BorrowedFd<'_>>) -> io::Result<()> {
    let fds: Vec<BorrowedFd<'_>> = fd.into_iter().collect();
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut anc = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !anc.push(SendAncillaryMessage::ScmRights(&fds)) {
        return Err(io::Error::other("ancillary buffer too small"));
    }
    loop {
        match rustix::net::sendmsg(
            sock,
            &[io::IoSlice::new(packet)],
            &mut anc,
            SendFlags::NOSIGNAL,
        ) {
            Ok(n) if n == packet.len() => return Ok(()),
            Ok(_) => return Err(io::Error::other("short packet write")),
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// Receives one packet and the descriptors attached to it (close-on-exec).
/// Blocks unless the socket is non-blocking (then `WouldBlock`).
pub fn recv(sock: BorrowedFd<'_>) -> Result<(Vec<u8>, Vec<OwnedFd>), HandoffError> {
    let mut buf = vec![0u8; MAX_PACKET + 1];
    // Room for two: a second descriptor is seen (and refused), not dropped.
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
    let mut anc = RecvAncillaryBuffer::new(&mut space);
    let res = loop {
        match rustix::net::recvmsg(
            sock,
            &mut [io::IoSliceMut::new(&mut buf)],
            &mut anc,
            RecvFlags::CMSG_CLOEXEC,
        ) {
            Ok(r) => break r,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(HandoffError::Io(e.into())),
        }
    };
    let mut fds = Vec::new();
    for msg in anc.drain() {
        if let RecvAncillaryMessage::ScmRights(rights) = msg {
            fds.extend(rights);
        }
    }
    if res.flags.contains(ReturnFlags::CTRUNC) {
        return Err(HandoffError::Fds(fds.len() + 1, 1));
    }
    if res.flags.contains(ReturnFlags::TRUNC) || res.bytes > MAX_PACKET {
        return Err(HandoffError::TooLong);
    }
    if res.bytes == 0 && fds.is_empty() {
        return Err(HandoffError::Closed);
    }
    buf.truncate(res.bytes);
    Ok((buf, fds))
}

/// What the listener sends a worker.
#[derive(Debug)]
pub enum Order {
    /// A connection to serve.
    Serve(Assign, OwnedFd),
    /// [`HURRY`].
    Hurry,
}

/// Receives the listener's next [`Order`] (worker side).
pub fn recv_order(sock: BorrowedFd<'_>) -> Result<Order, HandoffError> {
    let (p, mut fds) = recv(sock)?;
    if p == HURRY {
        if !fds.is_empty() {
            return Err(HandoffError::Fds(fds.len(), 0));
        }
        return Ok(Order::Hurry);
    }
    if fds.len() != 1 {
        return Err(HandoffError::Fds(fds.len(), 1));
    }
    let a = Assign::decode(&p)?;
    Ok(Order::Serve(a, fds.remove(0)))
}

/// Receives a [`Report`] and its descriptor, if it carries one (listener
/// side).
pub fn recv_report(sock: BorrowedFd<'_>) -> Result<(Report, Option<OwnedFd>), HandoffError> {
    let (p, mut fds) = recv(sock)?;
    let r = Report::decode(&p)?;
    if fds.len() != r.fds() {
        return Err(HandoffError::Fds(fds.len(), r.fds()));
    }
    Ok((r, fds.pop()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    fn pair() -> (OwnedFd, OwnedFd) {
        rustix::net::socketpair(
            rustix::net::AddressFamily::UNIX,
            rustix::net::SocketType::SEQPACKET,
            rustix::net::SocketFlags::CLOEXEC,
            None,
        )
        .expect("socketpair")
    }

    #[test]
    fn assign_round_trips() {
        let a = Assign {
            vars: vec![
                ("TCPREMOTEIP".into(), "192.0.2.1".into()),
                ("RELAYCLIENT".into(), String::new()),
            ],
            state: Some(b"state".to_vec()),
            hurry: true,
        };
        assert_eq!(Assign::decode(&a.encode().unwrap()).unwrap(), a);
        let fresh = Assign::default();
        assert_eq!(Assign::decode(&fresh.encode().unwrap()).unwrap(), fresh);
    }

    #[test]
    fn report_round_trips() {
        for r in [
            Report::Done(0),
            Report::Done(112),
            Report::Park(Park {
                timeout_secs: 1200,
                closing: b"421 4.4.2 x timeout\r\n".to_vec(),
                state: vec![1, 2, 3],
            }),
        ] {
            assert_eq!(Report::decode(&r.encode().unwrap()).unwrap(), r);
        }
    }

    #[test]
    fn bad_packets_are_refused() {
        let bad: &[&[u8]] = &[
            b"",
            b"X",
            b"C",
            b"C\x00",
            b"C\x02\x00\x00",
            b"C\x00\x00\x01\x00\x01A",
            b"C\x00\x00\x01\x00\x01A\x00\x01",
            b"C\x00\x00\x00extra",
            b"R\x00\x00\x00\x00\x00\x00",
            b"R\x00\x00\x00\xff\xff\xff\xff",
            b"C\x00\xff\xff",
            b"C\x00\x00\x01\x00\x03A=B\x00\x00",
            b"C\x00\x00\x01\x00\x01A\x00\x01\x00",
            b"D",
            b"D\x00\x00",
            b"P\x00\x00\x00\x01\x00\x00\x00\x00\x00",
            b"P\x00\x00\x00\x01\xff\xff",
        ];
        for p in bad {
            assert!(
                Assign::decode(p).is_err() && Report::decode(p).is_err(),
                "{p:?} accepted"
            );
        }
        let long = Assign {
            vars: vec![("A".into(), "x".repeat(MAX_VALUE + 1))],
            ..Assign::default()
        };
        assert!(long.encode().is_err());
        let many = Assign {
            vars: (0..=MAX_VARS)
                .map(|i| (format!("V{i}"), String::new()))
                .collect(),
            ..Assign::default()
        };
        assert!(many.encode().is_err());
        let name = Assign {
            vars: vec![("A=B".into(), String::new())],
            ..Assign::default()
        };
        assert!(name.encode().is_err());
    }

    #[test]
    fn descriptors_travel_and_are_counted() {
        let (a, b) = pair();
        let (x, _y) = pair();
        let p = Assign {
            vars: vec![("TCPREMOTEIP".into(), "127.0.0.1".into())],
            ..Assign::default()
        }
        .encode()
        .unwrap();
        send(a.as_fd(), &p, Some(x.as_fd())).unwrap();
        let Order::Serve(got, fd) = recv_order(b.as_fd()).unwrap() else {
            panic!("not an assignment");
        };
        assert_eq!(got.var("TCPREMOTEIP"), Some("127.0.0.1"));
        drop(fd);
        send(a.as_fd(), HURRY, None).unwrap();
        assert!(matches!(recv_order(b.as_fd()), Ok(Order::Hurry)));
        // An assignment without its connection is refused.
        send(a.as_fd(), &p, None).unwrap();
        assert!(matches!(
            recv_order(b.as_fd()),
            Err(HandoffError::Fds(0, 1))
        ));
        // A Done report with a descriptor is refused.
        send(
            b.as_fd(),
            &Report::Done(0).encode().unwrap(),
            Some(x.as_fd()),
        )
        .unwrap();
        assert!(matches!(
            recv_report(a.as_fd()),
            Err(HandoffError::Fds(1, 0))
        ));
        drop(b);
        assert!(matches!(recv_report(a.as_fd()), Err(HandoffError::Closed)));
    }
}
