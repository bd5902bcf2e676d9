//! The worker pool: tern-listen's default for `tern-smtpd`.
//!
//! Instead of starting the program for each connection, the listener keeps
//! up to `-c` reused workers (`tern-smtpd --worker`, started as the
//! listener's own uid, which is ternd after `-u`/`-g`) and hands each
//! accepted connection to an idle one over a `SOCK_SEQPACKET` socket
//! (tern-ipc's `handoff`: the descriptor plus the connection's variables).
//! A worker serves one connection at a time, so a crash costs only that
//! connection; it exits when the listener closes its socket (after
//! [`MAX_USE`] connections, or [`MAX_IDLE`] without work).
//!
//! A client that goes quiet between commands is **parked**: its worker
//! hands the connection and the session state back, the listener watches
//! it in this loop (a descriptor and a few hundred bytes, no process), and
//! gives it to a free worker with the state when the client speaks again.
//! So idle and slow clients cost almost nothing and never lock others out:
//! up to `-P` connections may be parked besides the `-c` being served.
//! When workers run short the listener asks busy ones to park at once
//! ([`handoff::HURRY`]), and under many parked connections their deadline
//! shrinks to [`STRESS_TIMEOUT`], as Postfix shortens its timeouts under
//! stress.

use crate::args::{Args, Verbosity};
use crate::proxy::{self, Pending};
use crate::serve::{
    Accepted, accept_one, admit, connection_vars, take_expired, take_ready, uncount,
};
use crate::{Exit, PROG};
use nix::sys::signal::Signal;
use nix::sys::signalfd::SignalFd;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use rustix::event::{PollFd, PollFlags, Timespec};
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::os::fd::{AsFd, OwnedFd};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};
use tern_ipc::handoff::{self, Assign, HandoffError, Report};
use tern_log::Event;
use tern_rules::Rules;

/// Connections a worker serves before it is replaced (Postfix's
/// `max_use`): bounds what a slow leak could grow to.
pub const MAX_USE: u32 = 1000;
/// How long a worker may wait for work before it is let go.
pub const MAX_IDLE: Duration = Duration::from_secs(60);
/// Idle workers kept whatever their idle time.
const KEEP_IDLE: usize = 2;
/// The deadline of parked connections while more than half of `-P` are
/// parked.
pub const STRESS_TIMEOUT: Duration = Duration::from_secs(10);
/// What parked clients read when the listener stops.
const SHUTDOWN: &[u8] = b"421 4.3.2 Service shutting down, closing connection\r\n";

/// One client connection, wherever it is.
struct Client {
    ip: IpAddr,
    port: u16,
    vars: Vec<(String, String)>,
    started: Instant,
}

/// A connection that waits for its client in this loop.
struct Parked {
    fd: OwnedFd,
    client: Client,
    deadline: Instant,
    closing: Vec<u8>,
    state: Vec<u8>,
}

struct Worker {
    pid: i32,
    ctl: OwnedFd,
    /// The client it serves.
    busy: Option<Client>,
    /// Asked to hurry since it took its client.
    hurried: bool,
    served: u32,
    idle_since: Instant,
}

/// The pool listener's state.
pub struct Pool {
    args: Args,
    rules: Rules,
    local_port: u16,
    workers: Vec<Worker>,
    parked: Vec<Parked>,
    /// Parked connections whose client spoke, waiting for a worker.
    ready: VecDeque<Parked>,
    /// Balancers' connections waiting for their PROXY header.
    pending: Vec<Pending>,
    /// Connections per client address: served, parked and waiting, and
    /// pending headers (counted for the balancer's address).
    per_ip: HashMap<IpAddr, usize>,
    max_parked: usize,
}

impl Pool {
    /// A pool with no workers yet.
    pub fn new(args: Args, rules: Rules, local_port: u16) -> Pool {
        let max_parked = args.parked;
        Pool {
            args,
            rules,
            local_port,
            workers: Vec::new(),
            parked: Vec::new(),
            ready: VecDeque::new(),
            pending: Vec::new(),
            per_ip: HashMap::new(),
            max_parked,
        }
    }

    fn log(&self) -> bool {
        self.args.verbosity != Verbosity::Quiet
    }

    fn busy(&self) -> usize {
        self.workers.iter().filter(|w| w.busy.is_some()).count()
    }

    /// A worker can take a connection now (an idle one, or room for one
    /// more), besides one for each pending PROXY header: so a header that
    /// completes always finds a worker.
    fn can_serve(&self) -> bool {
        self.busy() + self.pending.len() < self.args.concurrency
    }

    /// Short of workers: few left, or clients already waiting for one.
    fn stressed(&self) -> bool {
        let c = self.args.concurrency;
        !self.ready.is_empty() || self.busy() + self.pending.len() + (c / 8).max(1) > c
    }

    /// Serves until SIGTERM or SIGINT.
    pub fn run(&mut self, listener: &TcpListener, sigfd: &SignalFd) -> ExitCode {
        let mut was_full = false;
        loop {
            self.dispatch_ready();
            let full = !self.can_serve();
            if full && !was_full && self.log() {
                Event::new(PROG, "limit")
                    .field("reason", "concurrency")
                    .num("active", self.busy())
                    .num("parked", self.parked.len())
                    .num("pending", self.pending.len())
                    .emit();
            }
            was_full = full;
            if self.stressed() {
                self.hurry_all();
            }
            let now = Instant::now();
            let mut wake = now + Duration::from_secs(5);
            for p in &self.parked {
                wake = wake.min(p.deadline);
            }
            for p in &self.pending {
                wake = wake.min(p.deadline);
            }
            let timeout = wake.saturating_duration_since(now);
            // Order: signals, workers, parked connections, pending
            // headers, the listener.
            let accept = !full && self.ready.is_empty();
            let (worker_ready, parked_ready, pending_ready, accept_ready) = {
                let mut fds = Vec::with_capacity(
                    2 + self.workers.len() + self.parked.len() + self.pending.len(),
                );
                fds.push(PollFd::new(sigfd, PollFlags::IN));
                for w in &self.workers {
                    fds.push(PollFd::new(&w.ctl, PollFlags::IN));
                }
                for p in &self.parked {
                    fds.push(PollFd::new(&p.fd, PollFlags::IN));
                }
                for p in &self.pending {
                    fds.push(PollFd::new(&p.stream, PollFlags::IN));
                }
                if accept {
                    fds.push(PollFd::new(listener, PollFlags::IN));
                }
                let ts = Timespec {
                    tv_sec: timeout.as_secs() as i64,
                    tv_nsec: i64::from(timeout.subsec_nanos()),
                };
                let _ = rustix::event::poll(&mut fds, Some(&ts));
                let n = self.workers.len();
                let worker_ready: Vec<bool> = fds[1..1 + n]
                    .iter()
                    .map(|f| !f.revents().is_empty())
                    .collect();
                let m = n + self.parked.len();
                let parked_ready: Vec<bool> = fds[1 + n..1 + m]
                    .iter()
                    .map(|f| !f.revents().is_empty())
                    .collect();
                let pending_ready: Vec<bool> = fds[1 + m..1 + m + self.pending.len()]
                    .iter()
                    .map(|f| !f.revents().is_empty())
                    .collect();
                let accept_ready = accept && fds.last().is_some_and(|f| !f.revents().is_empty());
                (worker_ready, parked_ready, pending_ready, accept_ready)
            };
            while let Ok(Some(info)) = sigfd.read_signal() {
                match Signal::try_from(info.ssi_signo as i32) {
                    Ok(Signal::SIGTERM) | Ok(Signal::SIGINT) => return self.stop(),
                    Ok(Signal::SIGHUP) => self.reload(),
                    _ => {}
                }
            }
            self.reports(&worker_ready);
            self.reap();
            self.wake_parked(&parked_ready);
            self.read_pending(&pending_ready);
            self.expire();
            self.retire_idle();
            if accept_ready {
                self.accept_some(listener);
            }
        }
    }

    fn stop(&mut self) -> ExitCode {
        for p in self.parked.drain(..).chain(self.ready.drain(..)) {
            say(&p.fd, SHUTDOWN);
        }
        // Workers see their socket close and end after their client.
        let busy = self.busy();
        self.workers.clear();
        Event::new(PROG, "stop").num("active", busy).emit();
        Exit::Stopped.into()
    }

    fn reload(&mut self) {
        crate::serve::reload_rules(self.args.rules.as_deref(), &mut self.rules);
    }

    /// Accepts while connections are waiting and a worker can be had.
    fn accept_some(&mut self, listener: &TcpListener) {
        while self.can_serve() {
            match accept_one(listener) {
                Accepted::Conn(stream, peer) => self.handle(stream, peer),
                Accepted::Retry => {}
                Accepted::Done => return,
            }
        }
    }

    fn handle(&mut self, stream: std::net::TcpStream, peer: SocketAddr) {
        let local = match stream.local_addr() {
            Ok(a) => a,
            Err(e) => {
                Event::new(PROG, "warning")
                    .field("reason", format!("getsockname: {e}"))
                    .emit();
                return;
            }
        };
        self.admit_and_assign(stream, peer, local, self.local_port, true);
    }

    /// Reads the pending headers whose socket is readable; hands each
    /// connection whose header is whole to a worker.
    fn read_pending(&mut self, ready: &[bool]) {
        for (stream, remote, local) in take_ready(&mut self.pending, &mut self.per_ip, ready) {
            self.admit_and_assign(stream, remote, local, local.port(), false);
        }
    }

    /// The rules and the per-address limit for a connection from `peer`
    /// (the proxied client's, after a header); then a worker, or (a
    /// balancer's connection, `first`) a wait for its PROXY header.
    fn admit_and_assign(
        &mut self,
        stream: std::net::TcpStream,
        peer: SocketAddr,
        local: SocketAddr,
        local_port: u16,
        first: bool,
    ) {
        let ip = peer.ip().to_canonical();
        let mut count = self.per_ip.get(&ip).copied().unwrap_or(0);
        if count >= self.args.per_ip {
            // A client that reconnects at once may be faster than its last
            // worker's report: read what is waiting before refusing.
            self.collect_reports();
            count = self.per_ip.get(&ip).copied().unwrap_or(0);
        }
        let Some(rule_vars) = admit(
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
        if first && proxy::wanted(&rule_vars) {
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
        let vars = connection_vars(
            peer,
            local,
            local_port,
            self.args.local_name.as_deref(),
            &rule_vars,
        );
        let client = Client {
            ip,
            port: peer.port(),
            vars,
            started: Instant::now(),
        };
        *self.per_ip.entry(ip).or_insert(0) += 1;
        let fd = OwnedFd::from(stream);
        if let Err((client, reason)) = self.assign(client, fd, None) {
            Event::new(PROG, "alert")
                .field("remote_ip", ip.to_string())
                .field("reason", reason)
                .emit();
            self.forget(&client);
        }
    }

    /// Gives a connection to an idle worker (started if needed). The fd is
    /// closed here once sent: the worker holds the only copy.
    fn assign(
        &mut self,
        client: Client,
        fd: OwnedFd,
        state: Option<Vec<u8>>,
    ) -> Result<(), (Client, String)> {
        let resumed = state.is_some();
        let packet = Assign {
            vars: client.vars.clone(),
            state,
            hurry: self.stressed(),
        }
        .encode();
        let packet = match packet {
            Ok(p) => p,
            Err(e) => return Err((client, format!("cannot hand over: {e}"))),
        };
        if !self.workers.iter().any(|w| w.busy.is_none()) {
            // A worker may have finished a moment ago: its report costs
            // less than starting another one.
            self.collect_reports();
        }
        let i = match self.workers.iter().position(|w| w.busy.is_none()) {
            Some(i) => i,
            None => match self.start_worker() {
                Ok(w) => {
                    self.workers.push(w);
                    self.workers.len() - 1
                }
                Err(e) => return Err((client, format!("cannot start a worker: {e}"))),
            },
        };
        if let Err(e) = handoff::send(self.workers[i].ctl.as_fd(), &packet, Some(fd.as_fd())) {
            // That worker is gone or broken: let it go.
            self.workers.remove(i);
            return Err((client, format!("cannot hand over to a worker: {e}")));
        }
        drop(fd);
        let w = &mut self.workers[i];
        if self.args.verbosity != Verbosity::Quiet && !resumed {
            Event::new(PROG, "start")
                .field("remote_ip", client.ip.to_string())
                .num("remote_port", client.port)
                .num("pid", w.pid)
                .emit();
        } else if self.args.verbosity == Verbosity::Verbose && resumed {
            Event::new(PROG, "resume")
                .field("remote_ip", client.ip.to_string())
                .num("remote_port", client.port)
                .num("pid", w.pid)
                .emit();
        }
        w.busy = Some(client);
        w.hurried = false;
        w.served += 1;
        Ok(())
    }

    fn start_worker(&self) -> std::io::Result<Worker> {
        let (ours, theirs) = rustix::net::socketpair(
            rustix::net::AddressFamily::UNIX,
            rustix::net::SocketType::SEQPACKET,
            rustix::net::SocketFlags::CLOEXEC,
            None,
        )?;
        let mut cmd = Command::new(&self.args.program);
        cmd.arg("--worker")
            .stdin(Stdio::from(theirs))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        // Per-connection names reach a worker only with each connection.
        for v in tern_rules::RESERVED {
            cmd.env_remove(v);
        }
        cmd.env_remove("RELAYCLIENT");
        let child = cmd.spawn()?;
        let pid = i32::try_from(child.id()).expect("pids fit in i32");
        drop(child);
        Ok(Worker {
            pid,
            ctl: ours,
            busy: None,
            hurried: false,
            served: 0,
            idle_since: Instant::now(),
        })
    }

    /// Asks every busy worker, once per client, to park when it can.
    fn hurry_all(&mut self) {
        for w in self.workers.iter_mut() {
            if w.busy.is_some() && !w.hurried {
                w.hurried = true;
                let _ = handoff::send(w.ctl.as_fd(), handoff::HURRY, None);
            }
        }
    }

    /// Reads the reports already waiting (a poll that does not wait).
    fn collect_reports(&mut self) {
        let ready: Vec<bool> = {
            let mut fds: Vec<PollFd<'_>> = self
                .workers
                .iter()
                .map(|w| PollFd::new(&w.ctl, PollFlags::IN))
                .collect();
            let zero = Timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            if rustix::event::poll(&mut fds, Some(&zero)).unwrap_or(0) == 0 {
                return;
            }
            fds.iter().map(|f| !f.revents().is_empty()).collect()
        };
        self.reports(&ready);
    }

    /// Reads the reports of the workers whose socket is readable.
    fn reports(&mut self, ready: &[bool]) {
        let mut gone = Vec::new();
        for (i, _) in ready.iter().enumerate().filter(|(_, r)| **r) {
            let Some(w) = self.workers.get_mut(i) else {
                continue;
            };
            let report = match handoff::recv_report(w.ctl.as_fd()) {
                Ok(r) => r,
                Err(HandoffError::Closed) => {
                    // Its end closes only when it exits: collect it now, to
                    // log how its client's connection ended.
                    let why = match waitpid(Pid::from_raw(w.pid), None) {
                        Ok(WaitStatus::Signaled(_, sig, _)) => {
                            format!("worker killed by {}", sig.as_str())
                        }
                        _ => "worker exited".to_string(),
                    };
                    let pid = w.pid;
                    if let Some(client) = w.busy.take() {
                        self.ended(&client, pid, None, Some(&why));
                    }
                    gone.push(i);
                    continue;
                }
                Err(e) => {
                    Event::new(PROG, "alert")
                        .num("pid", w.pid)
                        .field("reason", format!("bad report from a worker: {e}"))
                        .emit();
                    let _ = nix::sys::signal::kill(Pid::from_raw(w.pid), Signal::SIGKILL);
                    gone.push(i);
                    continue;
                }
            };
            let Some(client) = w.busy.take() else {
                // A report without a client: broken.
                let _ = nix::sys::signal::kill(Pid::from_raw(w.pid), Signal::SIGKILL);
                gone.push(i);
                continue;
            };
            w.idle_since = Instant::now();
            let retire = w.served >= MAX_USE;
            let pid = w.pid;
            match report {
                (Report::Done(code), _) => self.ended(&client, pid, Some(code), None),
                (Report::Park(p), Some(fd)) => self.park(client, fd, p),
                (Report::Park(_), None) => self.ended(&client, pid, None, None),
            }
            if retire {
                gone.push(i);
            }
        }
        gone.sort_unstable();
        gone.dedup();
        for i in gone.into_iter().rev() {
            let w = self.workers.remove(i);
            if let Some(client) = &w.busy {
                self.ended(client, w.pid, None, Some("worker gone"));
            }
        }
    }

    fn park(&mut self, client: Client, fd: OwnedFd, p: handoff::Park) {
        if self.parked.len() + self.ready.len() >= self.max_parked {
            if self.log() {
                Event::new(PROG, "limit")
                    .field("reason", "parked")
                    .field("remote_ip", client.ip.to_string())
                    .num("parked", self.parked.len())
                    .emit();
            }
            say(&fd, &p.closing);
            self.ended(&client, 0, None, Some("too many parked"));
            return;
        }
        let mut timeout = Duration::from_secs(u64::from(p.timeout_secs));
        if self.parked.len() * 2 > self.max_parked {
            timeout = timeout.min(STRESS_TIMEOUT);
        }
        if self.args.verbosity == Verbosity::Verbose {
            Event::new(PROG, "park")
                .field("remote_ip", client.ip.to_string())
                .num("remote_port", client.port)
                .num("timeout", timeout.as_secs())
                .num("parked", self.parked.len() + 1)
                .emit();
        }
        self.parked.push(Parked {
            fd,
            client,
            deadline: Instant::now() + timeout,
            closing: p.closing,
            state: p.state,
        });
    }

    /// Moves the parked connections whose client spoke to the ready queue.
    fn wake_parked(&mut self, ready: &[bool]) {
        let mut i = ready.len();
        while i > 0 {
            i -= 1;
            if ready[i] && i < self.parked.len() {
                let p = self.parked.swap_remove(i);
                self.ready.push_back(p);
            }
        }
    }

    /// Hands ready connections to free workers, oldest first.
    fn dispatch_ready(&mut self) {
        while !self.ready.is_empty() && self.can_serve() {
            let p = self.ready.pop_front().expect("not empty");
            if let Err((client, reason)) = self.assign(p.client, p.fd, Some(p.state)) {
                Event::new(PROG, "alert")
                    .field("remote_ip", client.ip.to_string())
                    .field("reason", reason)
                    .emit();
                self.forget(&client);
            }
        }
    }

    /// Closes parked connections whose client stayed silent too long, and
    /// pending ones whose header is late.
    fn expire(&mut self) {
        let now = Instant::now();
        for p in take_expired(&mut self.pending, now) {
            p.expire();
            uncount(&mut self.per_ip, p.balancer.ip().to_canonical());
        }
        let mut i = 0;
        while i < self.parked.len() {
            if self.parked[i].deadline <= now {
                let p = self.parked.swap_remove(i);
                say(&p.fd, &p.closing);
                self.ended(&p.client, 0, None, Some("timeout"));
            } else {
                i += 1;
            }
        }
    }

    /// Lets idle workers go after [`MAX_IDLE`] (a few stay).
    fn retire_idle(&mut self) {
        let idle = self.workers.iter().filter(|w| w.busy.is_none()).count();
        if idle <= KEEP_IDLE {
            return;
        }
        let mut extra = idle - KEEP_IDLE;
        let now = Instant::now();
        self.workers.retain(|w| {
            let go = extra > 0
                && w.busy.is_none()
                && now.saturating_duration_since(w.idle_since) > MAX_IDLE;
            if go {
                extra -= 1;
            }
            !go
        });
    }

    /// Collects ended workers; a busy one's client is lost with it.
    fn reap(&mut self) {
        loop {
            let (pid, signal) = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, _)) => (pid, None),
                Ok(WaitStatus::Signaled(pid, sig, _)) => (pid, Some(sig)),
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(_) => continue,
            };
            let Some(i) = self.workers.iter().position(|w| w.pid == pid.as_raw()) else {
                continue;
            };
            let w = self.workers.remove(i);
            if let Some(client) = &w.busy {
                let why = match signal {
                    Some(sig) => format!("worker killed by {}", sig.as_str()),
                    None => "worker exited".to_string(),
                };
                self.ended(client, w.pid, None, Some(&why));
            }
        }
    }

    fn forget(&mut self, client: &Client) {
        uncount(&mut self.per_ip, client.ip);
    }

    /// A connection is over: the per-address count and the log line.
    fn ended(&mut self, client: &Client, pid: i32, code: Option<u8>, why: Option<&str>) {
        self.forget(client);
        if self.log() {
            let mut ev = Event::new(PROG, "end")
                .field("remote_ip", client.ip.to_string())
                .num("pid", pid);
            ev = match (code, why) {
                (Some(c), _) => ev.num("status", c),
                (None, Some(w)) => ev.field("status", w),
                (None, None) => ev.field("status", "unknown"),
            };
            ev.num("ms", client.started.elapsed().as_millis())
                .num("active", self.busy())
                .num("parked", self.parked.len())
                .emit();
        }
    }
}

/// Writes `line` to a connection, once, never waiting; then the caller
/// drops (closes) it.
fn say(fd: &OwnedFd, line: &[u8]) {
    let _ = rustix::io::ioctl_fionbio(fd, true);
    let _ = rustix::net::send(fd, line, rustix::net::SendFlags::NOSIGNAL);
}
