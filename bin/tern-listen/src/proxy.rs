//! PROXY protocol headers from trusted balancers, read in the event loop.
//!
//! A connection whose address's rule carries `PROXY` is held here, on a
//! non-blocking socket, until its header is whole ([`TIMEOUT`] at most);
//! the loop polls it with its other descriptors, so a balancer that sends
//! nothing costs one descriptor and a few bytes, and never stops the loop.
//! The header is read in tern-listen rather than in the program because
//! the rules, the per-address counts and the choice of program live here:
//! the client's address must be known before any of them is applied, in
//! the pool and in `-E` mode alike, and a program (tern-smtpd or any
//! other) then never sees the header at all. Bytes are peeked and only
//! the header's own are consumed, so the client's first bytes stay on the
//! socket for the program. The header's meaning is parsed by `tern-proxy`
//! (the `ppp` crate inside).

use crate::PROG;
use rustix::net::RecvFlags;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};
use tern_log::Event;
use tern_proxy::{Addresses, Reader, Step};

/// How long a balancer has to send its whole header.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// The rule variable that makes an address a trusted balancer.
pub const VAR: &str = "PROXY";

/// Whether the rule variables of a connection's address ask for a header.
pub fn wanted(vars: &[(String, String)]) -> bool {
    vars.iter().any(|(k, _)| k == VAR)
}

/// A balancer's connection whose header is not all in yet.
pub struct Pending {
    /// The connection (non-blocking while here).
    pub stream: TcpStream,
    /// The balancer's address and port.
    pub balancer: SocketAddr,
    /// Where it connected (this listener's address).
    pub local: SocketAddr,
    /// When the header must be whole.
    pub deadline: Instant,
    reader: Reader,
    /// Log accepted headers (refusals are always logged).
    log: bool,
}

/// What one read of a pending connection gave.
pub enum Progress {
    /// Not all of the header yet.
    Waiting,
    /// The header is in: the connection's client address and the address
    /// it connected to, the proxied ones or (v2 LOCAL, UNKNOWN, UNSPEC,
    /// UNIX) the connection's own.
    Ready {
        /// The client's address and port.
        remote: SocketAddr,
        /// The address and port it connected to.
        local: SocketAddr,
    },
    /// Refused (logged): close the connection.
    Failed,
}

impl Pending {
    /// Starts waiting for the header of a balancer's connection.
    pub fn new(stream: TcpStream, balancer: SocketAddr, log: bool) -> std::io::Result<Pending> {
        stream.set_nonblocking(true)?;
        let local = stream.local_addr()?;
        Ok(Pending {
            stream,
            balancer,
            local,
            deadline: Instant::now() + TIMEOUT,
            reader: Reader::new(),
            log,
        })
    }

    /// Reads what has arrived (the socket was readable).
    pub fn read(&mut self) -> Progress {
        // Larger than any v1 header; a v2 header's TLVs take a few turns.
        let mut buf = [0u8; 1024];
        loop {
            let n = match rustix::net::recv(&self.stream, &mut buf[..], RecvFlags::PEEK) {
                Ok((0, _)) => return self.refuse("connection closed before the header"),
                Ok((n, _)) => n,
                Err(rustix::io::Errno::AGAIN) => return Progress::Waiting,
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return self.refuse(&format!("read: {e}")),
            };
            let (take, header) = match self.reader.feed(&buf[..n]) {
                Ok(Step::More { take }) => (take, None),
                Ok(Step::Done { take, header }) => (take, Some(header)),
                Err(e) => return self.refuse(&e.to_string()),
            };
            // What was peeked is there: consuming it cannot come short.
            match rustix::net::recv(&self.stream, &mut buf[..take], RecvFlags::empty()) {
                Ok((got, _)) if got == take => {}
                Ok(_) => return self.refuse("read: short"),
                Err(e) => return self.refuse(&format!("read: {e}")),
            }
            let Some(header) = header else {
                continue;
            };
            let (remote, local) = match header.addresses {
                Addresses::Proxied {
                    source,
                    destination,
                } => (canonical(source), canonical(destination)),
                Addresses::Local | Addresses::Unknown => (self.balancer, self.local),
            };
            // The program expects an ordinary blocking socket.
            if let Err(e) = self.stream.set_nonblocking(false) {
                return self.refuse(&format!("fcntl: {e}"));
            }
            if !self.log {
                return Progress::Ready { remote, local };
            }
            Event::new(PROG, "proxy")
                .num("version", header.version)
                .field("command", header.kind())
                .field("balancer_ip", self.balancer.ip().to_canonical().to_string())
                .num("balancer_port", self.balancer.port())
                .field("remote_ip", remote.ip().to_string())
                .num("remote_port", remote.port())
                .field("local_ip", local.ip().to_string())
                .num("local_port", local.port())
                .emit();
            return Progress::Ready { remote, local };
        }
    }

    /// The deadline passed: logs the refusal (the caller closes).
    pub fn expire(&self) {
        self.log_refusal("no whole header in time");
    }

    fn refuse(&self, reason: &str) -> Progress {
        self.log_refusal(reason);
        Progress::Failed
    }

    fn log_refusal(&self, reason: &str) {
        Event::new(PROG, "proxy_refused")
            .field("balancer_ip", self.balancer.ip().to_canonical().to_string())
            .num("balancer_port", self.balancer.port())
            .field("local_ip", self.local.ip().to_canonical().to_string())
            .num("local_port", self.local.port())
            .num("bytes", self.reader.len())
            .field("reason", reason)
            .emit();
    }
}

/// IPv4-mapped IPv6 addresses as the IPv4 address they carry.
fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}
