//! The accept loop: signals, limits, rules, spawning and reaping.

use crate::args::{Args, Verbosity};
use crate::proxy::{self, Pending, Progress};
use crate::{Exit, PROG, load_rules};
use nix::sys::signal::Signal;
use nix::sys::signalfd::SignalFd;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use rustix::event::{PollFd, PollFlags, Timespec};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};
use tern_log::Event;
use tern_rules::{Decision, Rules};

/// One running program.
struct Conn {
    ip: IpAddr,
    started: Instant,
}

/// The listener's state.
pub struct Listener {
    args: Args,
    rules: Rules,
    conns: HashMap<i32, Conn>,
    /// Balancers' connections waiting for their PROXY header.
    pending: Vec<Pending>,
    /// Connections per client address: running programs, and pending
    /// headers (counted for the balancer's address).
    per_ip: HashMap<IpAddr, usize>,
    local_port: u16,
}

impl Listener {
    /// A listener with no connections yet.
    pub fn new(args: Args, rules: Rules, local_port: u16) -> Listener {
        Listener {
            args,
            rules,
            conns: HashMap::new(),
            pending: Vec::new(),
            per_ip: HashMap::new(),
            local_port,
        }
    }

    fn log(&self) -> bool {
        self.args.verbosity != Verbosity::Quiet
    }

    /// Serves until SIGTERM or SIGINT.
    pub fn run(&mut self, listener: &TcpListener, sigfd: &SignalFd) -> ExitCode {
        let mut was_full = false;
        loop {
            // Pending headers hold a place: they become programs.
            let full = self.conns.len() + self.pending.len() >= self.args.concurrency;
            if full && !was_full && self.log() {
                Event::new(PROG, "limit")
                    .field("reason", "concurrency")
                    .num("active", self.conns.len())
                    .num("pending", self.pending.len())
                    .emit();
            }
            was_full = full;
            let mut fds = vec![PollFd::new(sigfd, PollFlags::IN)];
            for p in &self.pending {
                fds.push(PollFd::new(&p.stream, PollFlags::IN));
            }
            if !full {
                fds.push(PollFd::new(listener, PollFlags::IN));
            }
            // Signals and connections wake the poll; the timeout is a
            // safety net, or the first pending header's deadline.
            let ts = poll_timeout(&self.pending);
            let _ = rustix::event::poll(&mut fds, Some(&ts));
            let n = self.pending.len();
            let pending_ready: Vec<bool> = fds[1..1 + n]
                .iter()
                .map(|f| !f.revents().is_empty())
                .collect();
            let accept_ready = !full && fds.last().is_some_and(|f| !f.revents().is_empty());
            drop(fds);
            while let Ok(Some(info)) = sigfd.read_signal() {
                match Signal::try_from(info.ssi_signo as i32) {
                    Ok(Signal::SIGTERM) | Ok(Signal::SIGINT) => {
                        self.reap();
                        Event::new(PROG, "stop")
                            .num("active", self.conns.len())
                            .emit();
                        return Exit::Stopped.into();
                    }
                    Ok(Signal::SIGHUP) => self.reload(),
                    _ => {}
                }
            }
            self.reap();
            self.read_pending(&pending_ready);
            self.expire_pending();
            if accept_ready {
                self.accept_some(listener);
            }
        }
    }

    /// Reads the pending headers whose socket is readable; starts the
    /// program for each one now whole.
    fn read_pending(&mut self, ready: &[bool]) {
        for (stream, remote, local) in take_ready(&mut self.pending, &mut self.per_ip, ready) {
            self.admit_and_start(stream, remote, local, local.port(), false);
        }
    }

    /// Closes the pending connections whose header is late.
    fn expire_pending(&mut self) {
        let now = Instant::now();
        for p in take_expired(&mut self.pending, now) {
            p.expire();
            uncount(&mut self.per_ip, p.balancer.ip().to_canonical());
        }
    }

    fn reload(&mut self) {
        reload_rules(self.args.rules.as_deref(), &mut self.rules);
    }

    /// Accepts while connections are waiting and the limit allows.
    fn accept_some(&mut self, listener: &TcpListener) {
        while self.conns.len() + self.pending.len() < self.args.concurrency {
            match accept_one(listener) {
                Accepted::Conn(stream, peer) => self.handle(stream, peer),
                Accepted::Retry => {}
                Accepted::Done => return,
            }
        }
    }

    fn handle(&mut self, stream: TcpStream, peer: SocketAddr) {
        let local = match stream.local_addr() {
            Ok(a) => a,
            Err(e) => {
                Event::new(PROG, "warning")
                    .field("reason", format!("getsockname: {e}"))
                    .emit();
                return;
            }
        };
        self.admit_and_start(stream, peer, local, self.local_port, true);
    }

    /// The rules and the per-address limit for a connection from `peer`
    /// (the proxied client's, after a header); then the program, or (a
    /// balancer's connection, `first`) a wait for its PROXY header.
    fn admit_and_start(
        &mut self,
        stream: TcpStream,
        peer: SocketAddr,
        local: SocketAddr,
        local_port: u16,
        first: bool,
    ) {
        let ip = peer.ip().to_canonical();
        let count = self.per_ip.get(&ip).copied().unwrap_or(0);
        let Some(vars) = admit(
            &self.rules,
            self.args.verbosity,
            &stream,
            peer,
            count,
            self.args.per_ip,
        ) else {
            return;
        };
        // A PROXY variable on the proxied client's own rule is ignored:
        // one header per connection, never a chain.
        if first && proxy::wanted(&vars) {
            match Pending::new(stream, peer, self.log()) {
                Ok(p) => {
                    *self.per_ip.entry(ip).or_insert(0) += 1;
                    self.pending.push(p);
                }
                Err(e) => Event::new(PROG, "warning")
                    .field("remote_ip", ip.to_string())
                    .field("reason", format!("cannot wait for a PROXY header: {e}"))
                    .emit(),
            }
            return;
        }
        match self.spawn(stream, peer, local, local_port, &vars) {
            Ok(pid) => {
                *self.per_ip.entry(ip).or_insert(0) += 1;
                self.conns.insert(
                    pid,
                    Conn {
                        ip,
                        started: Instant::now(),
                    },
                );
                if self.log() {
                    Event::new(PROG, "start")
                        .field("remote_ip", ip.to_string())
                        .num("remote_port", peer.port())
                        .num("pid", pid)
                        .num("active", self.conns.len())
                        .emit();
                }
            }
            Err(e) => Event::new(PROG, "alert")
                .field("remote_ip", ip.to_string())
                .field("reason", format!("cannot start program: {e}"))
                .emit(),
        }
    }

    /// Starts the program on the socket; returns its pid.
    fn spawn(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        local: SocketAddr,
        local_port: u16,
        vars: &[(String, String)],
    ) -> std::io::Result<i32> {
        // std leaves an accepted socket blocking; make sure, the program
        // expects ordinary blocking fds.
        stream.set_nonblocking(false)?;
        let input = OwnedFd::from(stream.try_clone()?);
        let output = OwnedFd::from(stream);
        let mut cmd = Command::new(&self.args.program);
        cmd.args(&self.args.program_args)
            .stdin(Stdio::from(input))
            .stdout(Stdio::from(output))
            .stderr(Stdio::inherit());
        for v in tern_rules::RESERVED {
            cmd.env_remove(v);
        }
        // Relaying is granted by a rule, never by the listener's own
        // environment (a stray RELAYCLIENT would open the relay to all).
        cmd.env_remove("RELAYCLIENT");
        for (k, v) in connection_vars(
            peer,
            local,
            local_port,
            self.args.local_name.as_deref(),
            vars,
        ) {
            cmd.env(k, v);
        }
        let child = cmd.spawn()?;
        let pid = i32::try_from(child.id()).expect("pids fit in i32");
        // Dropping a Child neither kills nor waits: reap() collects it.
        drop(child);
        Ok(pid)
    }

    /// Collects every ended child and logs it.
    fn reap(&mut self) {
        loop {
            let (pid, status, signal) = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG))
            {
                Ok(WaitStatus::Exited(pid, code)) => (pid, code, None),
                Ok(WaitStatus::Signaled(pid, sig, _)) => (pid, -1, Some(sig)),
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(_) => continue,
            };
            let Some(conn) = self.conns.remove(&pid.as_raw()) else {
                continue;
            };
            uncount(&mut self.per_ip, conn.ip);
            if self.log() {
                let mut ev = Event::new(PROG, "end")
                    .field("remote_ip", conn.ip.to_string())
                    .num("pid", pid.as_raw());
                ev = match signal {
                    Some(sig) => ev.field("status", "killed").field("signal", sig.as_str()),
                    None => ev.num("status", status),
                };
                ev.num("ms", conn.started.elapsed().as_millis())
                    .num("active", self.conns.len())
                    .emit();
            }
        }
    }
}

/// The rules' decision and the per-address limit for a new connection:
/// its rule variables, or `None` (logged; over the limit, told why with a
/// 421 first) when it must be closed.
pub(crate) fn admit(
    rules: &Rules,
    verbosity: Verbosity,
    stream: &TcpStream,
    peer: SocketAddr,
    count: usize,
    per_ip: usize,
) -> Option<Vec<(String, String)>> {
    let ip = peer.ip().to_canonical();
    let vars = match rules.decide(ip) {
        Decision::Deny { line } => {
            if verbosity != Verbosity::Quiet {
                Event::new(PROG, "deny")
                    .field("remote_ip", ip.to_string())
                    .num("remote_port", peer.port())
                    .num("rule", line)
                    .emit();
            }
            return None;
        }
        Decision::Allow { line, vars } => {
            if verbosity == Verbosity::Verbose {
                Event::new(PROG, "allow")
                    .field("remote_ip", ip.to_string())
                    .num("rule", line)
                    .emit();
            }
            vars.to_vec()
        }
    };
    if count >= per_ip {
        if verbosity != Verbosity::Quiet {
            Event::new(PROG, "limit")
                .field("reason", "per_ip")
                .field("remote_ip", ip.to_string())
                .num("active", count)
                .emit();
        }
        // Say why before closing, as Postfix's anvil does: an SMTP client
        // then defers with a reason instead of reporting a lost connection.
        // One short write into an empty send buffer, never waited on.
        use std::io::Write as _;
        let mut stream = stream;
        let _ = stream.set_nonblocking(true);
        let _ =
            stream.write(b"421 4.7.0 Too many connections from your address, try again later\r\n");
        return None;
    }
    Some(vars)
}

/// tcpserver's variables for one connection (PROTO, TCPREMOTEIP,
/// TCPREMOTEPORT, TCPLOCALIP, TCPLOCALPORT, TCPLOCALHOST with -l), then
/// the matching rule's, which may override them; a rule's `PROXY` is
/// tern-listen's own and never reaches the program.
pub(crate) fn connection_vars(
    peer: SocketAddr,
    local: SocketAddr,
    local_port: u16,
    local_name: Option<&str>,
    rule_vars: &[(String, String)],
) -> Vec<(String, String)> {
    let mut v = vec![
        ("PROTO".to_string(), "TCP".to_string()),
        ("TCPREMOTEIP".into(), peer.ip().to_canonical().to_string()),
        ("TCPREMOTEPORT".into(), peer.port().to_string()),
        ("TCPLOCALIP".into(), local.ip().to_canonical().to_string()),
        ("TCPLOCALPORT".into(), local_port.to_string()),
    ];
    if let Some(name) = local_name {
        v.push(("TCPLOCALHOST".into(), name.to_string()));
    }
    for (k, val) in rule_vars.iter().filter(|(k, _)| k != proxy::VAR) {
        match v.iter_mut().find(|(n, _)| n == k) {
            Some(slot) => slot.1 = val.clone(),
            None => v.push((k.clone(), val.clone())),
        }
    }
    v
}

/// One connection less for `ip`.
pub(crate) fn uncount(per_ip: &mut HashMap<IpAddr, usize>, ip: IpAddr) {
    if let Some(n) = per_ip.get_mut(&ip) {
        *n -= 1;
        if *n == 0 {
            per_ip.remove(&ip);
        }
    }
}

/// How long the loop may sleep: at most 5 s, and not past the first
/// pending header's deadline.
pub(crate) fn poll_timeout(pending: &[Pending]) -> Timespec {
    let now = Instant::now();
    let mut wake = now + Duration::from_secs(5);
    for p in pending {
        wake = wake.min(p.deadline);
    }
    let d = wake.saturating_duration_since(now);
    Timespec {
        tv_sec: d.as_secs() as i64,
        tv_nsec: i64::from(d.subsec_nanos()),
    }
}

/// Reads the pending headers whose socket is `ready`: a connection whose
/// header is now whole leaves `pending` (and its balancer's count) and is
/// returned with the addresses it proxies; one whose header failed just
/// leaves. Both loops (pool and per-connection programs) start what is
/// returned their own way.
pub(crate) fn take_ready(
    pending: &mut Vec<Pending>,
    per_ip: &mut HashMap<IpAddr, usize>,
    ready: &[bool],
) -> Vec<(TcpStream, SocketAddr, SocketAddr)> {
    let mut whole = Vec::new();
    for i in (0..ready.len()).rev() {
        if !ready[i] {
            continue;
        }
        let done = match pending[i].read() {
            Progress::Waiting => continue,
            Progress::Ready { remote, local } => Some((remote, local)),
            Progress::Failed => None,
        };
        let p = pending.swap_remove(i);
        uncount(per_ip, p.balancer.ip().to_canonical());
        if let Some((remote, local)) = done {
            whole.push((p.stream, remote, local));
        }
    }
    whole
}

/// Takes the pending connections whose deadline has passed.
pub(crate) fn take_expired(pending: &mut Vec<Pending>, now: Instant) -> Vec<Pending> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < pending.len() {
        if pending[i].deadline <= now {
            out.push(pending.swap_remove(i));
        } else {
            i += 1;
        }
    }
    out
}

/// SIGHUP: rereads the rules file into `rules`; a file that does not load
/// leaves the old rules in force (logged).
pub(crate) fn reload_rules(path: Option<&std::path::Path>, rules: &mut Rules) {
    let Some(path) = path else {
        return;
    };
    match load_rules(path) {
        Ok(r) => {
            *rules = r;
            Event::new(PROG, "rules_reloaded")
                .num("rules", rules.rules().len())
                .emit();
        }
        Err((_, reason)) => Event::new(PROG, "warning")
            .field("reason", format!("{reason}; keeping the previous rules"))
            .emit(),
    }
}

/// What one `accept` on the non-blocking listener gave.
pub(crate) enum Accepted {
    /// A connection.
    Conn(TcpStream, SocketAddr),
    /// Nothing this time (interrupted, aborted by the client): try again.
    Retry,
    /// No more waiting, or an error (EMFILE...) after a short back-off.
    Done,
}

/// Accepts one connection.
pub(crate) fn accept_one(listener: &TcpListener) -> Accepted {
    match listener.accept() {
        Ok((stream, peer)) => Accepted::Conn(stream, peer),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Accepted::Done,
        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => Accepted::Retry,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionAborted => Accepted::Retry,
        Err(e) => {
            // EMFILE, ENFILE, ENOBUFS: back off instead of spinning.
            Event::new(PROG, "warning")
                .field("reason", format!("accept: {e}"))
                .emit();
            std::thread::sleep(Duration::from_millis(100));
            Accepted::Done
        }
    }
}
