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
//!     From an address whose rule sets PROXY (a load balancer) it first
//!     reads a PROXY protocol header (v1 or v2, 5 s at most) and serves the
//!     connection as the client the header names (its rule, its -C count,
//!     its TCPREMOTEIP).
//!
//! SECURITY
//!     Runs as whoever starts it and parses no network input from clients:
//!     it reads only the peer's address from the kernel. The one exception
//!     is a rule-trusted balancer's PROXY header (bounded, non-blocking,
//!     parsed by tern-proxy / ppp, fuzzed). The rules file is parsed with
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
mod pool;
mod proxy;
mod serve;

use args::Parsed;
use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use serve::Listener;
use std::io::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::process::ExitCode;
use tern_log::Event;
use tern_rules::Rules;

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

/// `--check`: one line per rule (what it matches, what it does, whether
/// it can ever apply), then the decision for each address.
fn check_text(rules: &Rules, addresses: &[std::net::IpAddr]) -> String {
    use std::fmt::Write as _;
    use tern_rules::{Decision, Network};
    let mut out = String::new();
    let shadowed = rules.shadowed();
    for r in rules.rules() {
        let what = match r.network {
            Network::Any => "every address (the default)".to_string(),
            Network::V4(a, 32) => format!("exactly {a}"),
            Network::V6(a, 128) => format!("exactly {a}"),
            n => format!("{n} ({} bits)", n.specificity()),
        };
        let _ = write!(out, "line {}: {what}: {r}", r.line);
        match shadowed.iter().find(|(s, _)| std::ptr::eq(*s, r)) {
            Some((_, first)) => {
                let _ = writeln!(out, "  NEVER APPLIES: line {first} has the same network");
            }
            None => out.push('\n'),
        }
    }
    for a in addresses {
        let _ = match rules.decide(*a) {
            Decision::Allow { line: 0, .. } => writeln!(out, "{a}: allow (no rule)"),
            Decision::Allow { line, vars } => {
                let vars: String = vars.iter().map(|(k, v)| format!(" {k}=\"{v}\"")).collect();
                writeln!(out, "{a}: allow (line {line}){vars}")
            }
            Decision::Deny { line } => writeln!(out, "{a}: deny (line {line})"),
        };
    }
    out
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
        Ok(Parsed::Check { rules, addresses }) => {
            return match load_rules(&rules) {
                Ok(r) => {
                    let _ = std::io::stdout().write_all(check_text(&r, &addresses).as_bytes());
                    Exit::Stopped.into()
                }
                Err((exit, reason)) => fail(exit, reason),
            };
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
    // -u/-g: bound (port 25 needed root), now give root up for good before
    // the first connection, so no program it starts parses network input
    // as root. The same verified drop as tern-start's children.
    if let Some((uid, gid)) = args.drop_to {
        let dropped = tern_sys::privilege::Credentials::new(uid, gid)
            .and_then(|c| tern_sys::privilege::drop_to(&c));
        if let Err(e) = dropped {
            return fail(
                Exit::Trouble,
                format!("cannot become uid {uid} gid {gid}: {e}"),
            );
        }
    }
    Event::new(PROG, "listening")
        .field("local_ip", local.ip().to_string())
        .num("local_port", local.port())
        .num("concurrency", args.concurrency)
        .num("per_ip", args.per_ip)
        .emit();
    if uses_pool(&args) {
        pool::Pool::new(args, rules, local.port()).run(&listener, &sigfd)
    } else {
        Listener::new(args, rules, local.port()).run(&listener, &sigfd)
    }
}

/// The pool serves tern-smtpd (by its file name, without arguments of its
/// own) unless `-E` asks for a program per connection.
fn uses_pool(args: &args::Args) -> bool {
    !args.exec_each
        && args.program_args.is_empty()
        && std::path::Path::new(&args.program)
            .file_name()
            .is_some_and(|n| n == "tern-smtpd")
}
