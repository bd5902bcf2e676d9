//! NAME
//!     tern-listen - accept TCP connections and run a program for each
//!
//! SYNOPSIS
//!     tern-listen [-vqHR] [-c N] [-C N] [-x rules] [-l name] host port program [arg...]
//!
//! DESCRIPTION
//!     A small tcpserver-compatible listener, so that `tern-smtpd` can run
//!     without ucspi-tcp, inetd or systemd. Binds `host` (an address
//!     literal, `0` or `::`; names are never resolved) and `port`, and for
//!     each connection starts `program` with the socket as fd 0 and fd 1,
//!     stderr inherited, and tcpserver's environment (PROTO, TCPREMOTEIP,
//!     TCPREMOTEPORT, TCPLOCALIP, TCPLOCALPORT, TCPLOCALHOST with -l, plus
//!     what the matching rule of the -x file sets). A denied client is
//!     closed at once. At the -c limit no further connection is accepted
//!     until a program ends (clients wait in the kernel's backlog); over the
//!     -C per-address limit a connection is closed at once. Children are
//!     reaped as they end. SIGHUP rereads the rules file; SIGTERM or SIGINT
//!     stops accepting and exits (running programs finish on their own).
//!
//! SECURITY
//!     Runs as whoever starts it and parses no network input: it reads only
//!     the peer's address from the kernel. The rules file is parsed with
//!     bounds by tern-rules. Programs inherit its uid.
//!
//! EXIT CODES
//!     0 stopped by SIGTERM or SIGINT; 100 usage error or bad rules file;
//!     111 temporary trouble (cannot bind, cannot read the rules file).
//!
//! SEE ALSO
//!     docs/man/tern-listen.8.md, tern-smtpd(8), tcpserver(1)
#![forbid(unsafe_code)]
#![deny(clippy::print_stdout)]

mod args;

use args::{Args, Parsed, Verbosity};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use rustix::event::{PollFd, PollFlags, Timespec};
use std::collections::HashMap;
use std::io::Write as _;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};
use tern_log::Event;
use tern_rules::{Decision, Rules};

const PROG: &str = "tern-listen";

/// The exit codes (tern-listen(8)).
#[derive(Debug, Clone, Copy)]
enum Exit {
    /// Stopped by SIGTERM or SIGINT.
    Stopped = 0,
    /// Bad command line or rules file: permanent until someone fixes it.
    Usage = 100,
    /// Could not bind, read the rules file, or set up signals: temporary.
    Trouble = 111,
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(e as u8)
    }
}

fn fail(exit: Exit, reason: impl std::fmt::Display) -> ExitCode {
    Event::new(PROG, "alert")
        .field("reason", reason.to_string())
        .emit();
    exit.into()
}

/// Reads and parses the rules file: unreadable is temporary, invalid is
/// permanent.
fn load_rules(path: &std::path::Path) -> Result<Rules, (Exit, String)> {
    use std::io::Read as _;
    let f = std::fs::File::open(path)
        .map_err(|e| (Exit::Trouble, format!("{}: {e}", path.display())))?;
    let mut data = Vec::new();
    f.take(tern_rules::MAX_FILE as u64 + 1)
        .read_to_end(&mut data)
        .map_err(|e| (Exit::Trouble, format!("{}: {e}", path.display())))?;
    Rules::parse(&data).map_err(|e| (Exit::Usage, format!("{}: {e}", path.display())))
}

/// One running program.
struct Conn {
    ip: IpAddr,
    started: Instant,
}

struct Listener {
    args: Args,
    rules: Rules,
    conns: HashMap<i32, Conn>,
    per_ip: HashMap<IpAddr, usize>,
    local_port: u16,
}

fn main() -> ExitCode {
    tern_sys::signals::reset();
    tern_log::install_panic_hook(PROG, Exit::Trouble as i32);
    let args = match args::parse(std::env::args_os().skip(1)) {
        Ok(Parsed::Run(a)) => *a,
        Ok(Parsed::Help) => {
            let _ = std::io::stdout().write_all(args::USAGE.as_bytes());
            return Exit::Stopped.into();
        }
        Err(e) => {
            let _ = std::io::stderr()
                .write_all(format!("tern-listen: {e}\n{}", args::USAGE).as_bytes());
            return Exit::Usage.into();
        }
    };
    let rules = match &args.rules {
        Some(p) => match load_rules(p) {
            Ok(r) => r,
            Err((exit, reason)) => return fail(exit, reason),
        },
        None => Rules::default(),
    };
    let mut mask = SigSet::empty();
    for s in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGCHLD,
    ] {
        mask.add(s);
    }
    if let Err(e) = sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), None) {
        return fail(Exit::Trouble, format!("sigprocmask: {e}"));
    }
    let sigfd = match SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC) {
        Ok(s) => s,
        Err(e) => return fail(Exit::Trouble, format!("signalfd: {e}")),
    };
    let addr = SocketAddr::new(args.host, args.port);
    let listener = match TcpListener::bind(addr) {
        Ok(l) => l,
        Err(e) => return fail(Exit::Trouble, format!("bind {addr}: {e}")),
    };
    let local = match listener.local_addr() {
        Ok(a) => a,
        Err(e) => return fail(Exit::Trouble, format!("getsockname: {e}")),
    };
    if let Err(e) = listener.set_nonblocking(true) {
        return fail(Exit::Trouble, format!("set_nonblocking: {e}"));
    }
    Event::new(PROG, "listening")
        .field("local_ip", local.ip().to_string())
        .num("local_port", local.port())
        .num("concurrency", args.concurrency)
        .num("per_ip", args.per_ip)
        .emit();
    let mut l = Listener {
        args,
        rules,
        conns: HashMap::new(),
        per_ip: HashMap::new(),
        local_port: local.port(),
    };
    l.run(&listener, &sigfd)
}

impl Listener {
    fn log(&self) -> bool {
        self.args.verbosity != Verbosity::Quiet
    }

    fn run(&mut self, listener: &TcpListener, sigfd: &SignalFd) -> ExitCode {
        let mut was_full = false;
        loop {
            let full = self.conns.len() >= self.args.concurrency;
            if full && !was_full && self.log() {
                Event::new(PROG, "limit")
                    .field("reason", "concurrency")
                    .num("active", self.conns.len())
                    .emit();
            }
            was_full = full;
            let mut fds = vec![PollFd::new(sigfd, PollFlags::IN)];
            if !full {
                fds.push(PollFd::new(listener, PollFlags::IN));
            }
            // A timeout only as a safety net: signals and connections wake
            // the poll.
            let ts = Timespec {
                tv_sec: 5,
                tv_nsec: 0,
            };
            let _ = rustix::event::poll(&mut fds, Some(&ts));
            let accept_ready = fds.get(1).is_some_and(|f| !f.revents().is_empty());
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
            if accept_ready {
                self.accept_some(listener);
            }
        }
    }

    fn reload(&mut self) {
        let Some(path) = self.args.rules.clone() else {
            return;
        };
        match load_rules(&path) {
            Ok(r) => {
                self.rules = r;
                Event::new(PROG, "rules_reloaded")
                    .num("rules", self.rules.rules().len())
                    .emit();
            }
            Err((_, reason)) => Event::new(PROG, "warning")
                .field("reason", format!("{reason}; keeping the previous rules"))
                .emit(),
        }
    }

    /// Accepts while connections are waiting and the limit allows.
    fn accept_some(&mut self, listener: &TcpListener) {
        while self.conns.len() < self.args.concurrency {
            match listener.accept() {
                Ok((stream, peer)) => self.handle(stream, peer),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionAborted => {}
                Err(e) => {
                    // EMFILE, ENFILE, ENOBUFS: back off instead of spinning.
                    Event::new(PROG, "warning")
                        .field("reason", format!("accept: {e}"))
                        .emit();
                    std::thread::sleep(Duration::from_millis(100));
                    return;
                }
            }
        }
    }

    fn handle(&mut self, stream: TcpStream, peer: SocketAddr) {
        let ip = peer.ip().to_canonical();
        let vars = match self.rules.decide(ip) {
            Decision::Deny { line } => {
                if self.log() {
                    Event::new(PROG, "deny")
                        .field("remote_ip", ip.to_string())
                        .num("remote_port", peer.port())
                        .num("rule", line)
                        .emit();
                }
                return;
            }
            Decision::Allow { line, vars } => {
                if self.args.verbosity == Verbosity::Verbose {
                    Event::new(PROG, "allow")
                        .field("remote_ip", ip.to_string())
                        .num("rule", line)
                        .emit();
                }
                vars.to_vec()
            }
        };
        let count = self.per_ip.get(&ip).copied().unwrap_or(0);
        if count >= self.args.per_ip {
            if self.log() {
                Event::new(PROG, "limit")
                    .field("reason", "per_ip")
                    .field("remote_ip", ip.to_string())
                    .num("active", count)
                    .emit();
            }
            return;
        }
        match self.spawn(stream, peer, &vars) {
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
        vars: &[(String, String)],
    ) -> std::io::Result<i32> {
        // std leaves an accepted socket blocking; make sure, the program
        // expects ordinary blocking fds.
        stream.set_nonblocking(false)?;
        let local = stream.local_addr()?;
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
        cmd.env("PROTO", "TCP")
            .env("TCPREMOTEIP", peer.ip().to_canonical().to_string())
            .env("TCPREMOTEPORT", peer.port().to_string())
            .env("TCPLOCALIP", local.ip().to_canonical().to_string())
            .env("TCPLOCALPORT", self.local_port.to_string());
        if let Some(name) = &self.args.local_name {
            cmd.env("TCPLOCALHOST", name);
        }
        for (k, v) in vars {
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
            if let Some(n) = self.per_ip.get_mut(&conn.ip) {
                *n -= 1;
                if *n == 0 {
                    self.per_ip.remove(&conn.ip);
                }
            }
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
