//! NAME
//!     tern-remote - deliver messages to one destination domain by SMTP
//!
//! SYNOPSIS
//!     tern-remote  (one Unix socket from tern-rspawn as fd 0 and fd 1, log
//!     on fd 2; no arguments)
//!
//! DESCRIPTION
//!     A worker of tern-rspawn. Reads `RemoteDeliver` requests (several
//!     recipients of one message at one domain, the queue file as a passed
//!     descriptor) from fd 0 until end of file and answers each recipient
//!     with one `RcptReport` on fd 1. Routes through tern-route (lmtproutes
//!     for LMTP stores over TCP or a Unix socket, then smtproutes, then MX;
//!     kept for 5 minutes, a temporary failure not at all), connects to the
//!     targets in order, uses STARTTLS as control/tlsdestinations says, and
//!     speaks SMTP (or LMTP) through tern-client. The SMTP connection stays open between
//!     requests and is reused; QUIT is sent at end of file.
//!
//! SECURITY
//!     Runs as `ternr` in a system instance. Opens nothing in the queue: the
//!     message comes as a descriptor. Reads control/ and the CA bundle;
//!     writes only the host memory in queue/remote/. Every byte from the
//!     network is bounded and checked by tern-client; texts handed back are
//!     sanitised and never name internal addresses.
//!
//! EXIT CODES
//!     0 end of input; 81 internal bug; 100 usage; 111 cannot start or
//!     continue (unusable home or control file, malformed request, reports
//!     cannot be written). See docs/man/tern-remote.8.md.
//!
//! FILES
//!     $TERN_HOME/control/{helohost,me,timeoutremote,timeoutconnect,
//!     tlsdestinations,tlsca,lmtproutes,smtproutes,dnsservers},
//!     $TERN_HOME/queue/remote/, the Unix sockets lmtproutes names
//!
//! SEE ALSO
//!     tern-rspawn(8), tern-send(8), docs/man/tern-remote.8.md
#![forbid(unsafe_code)]
#![deny(clippy::print_stdout, clippy::print_stderr)]

mod deliver;

use std::os::fd::AsFd as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser as _;
use tern_control::{Control, Home};
use tern_ipc::remote::{Frame, Inbox};
use tern_log::Event;
use tern_route::{HostMemory, Router, TlsPolicies};

pub(crate) const PROG: &str = "tern-remote";

/// Exit codes (docs/man/tern-remote.8.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum RemoteExit {
    /// End of input: every request was answered; QUIT was sent.
    Finished = 0,
    /// Internal bug (panic or crash signal).
    Bug = 81,
    /// Called with an argument.
    Usage = 100,
    /// Cannot start or continue: unusable home or control file, a
    /// malformed request, reports that cannot be written.
    Trouble = 111,
}

impl From<RemoteExit> for ExitCode {
    fn from(e: RemoteExit) -> ExitCode {
        ExitCode::from(e as u8)
    }
}

/// tern-remote takes no arguments: tern-rspawn runs it with one Unix socket
/// as fd 0 and fd 1.
#[derive(clap::Parser, Debug)]
#[command(
    name = "tern-remote",
    version,
    about = "Delivers messages to one destination domain by SMTP (a worker of tern-rspawn)",
    long_about = "Delivers messages to one destination domain by SMTP (a worker of tern-rspawn).\n\n\
        Reads RemoteDeliver requests (with the message as a passed descriptor) from the Unix \
        socket on fd 0 and writes one RcptReport per recipient on fd 1, keeping its SMTP \
        connection open between requests; sends QUIT and exits at end of input.",
    after_help = "Exit codes: 0 end of input; 81 internal bug; 100 usage; 111 cannot start or \
        continue (unusable home or control file, malformed request, reports cannot be written).\n\
        See tern-remote(8)."
)]
struct Args {}

fn trouble(event: &str, reason: &dyn std::fmt::Display) -> ExitCode {
    Event::new(PROG, event)
        .field("reason", reason.to_string())
        .emit();
    RemoteExit::Trouble.into()
}

fn settings(control: &Control) -> Result<deliver::Settings, String> {
    let helo = control.helohost().map_err(|e| e.to_string())?;
    let remote = control.timeoutremote().map_err(|e| e.to_string())?;
    let connect = control.timeoutconnect().map_err(|e| e.to_string())?;
    let lines = control.tlsdestinations().map_err(|e| e.to_string())?;
    let policies = TlsPolicies::parse(&lines).map_err(|e| e.to_string())?;
    let tlsca = control
        .tlsca()
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|l| l.trim().to_string())
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .map(PathBuf::from);
    Ok(deliver::Settings {
        helo: helo.as_str().to_string(),
        timeout_remote: Duration::from_secs(remote),
        timeout_connect: Duration::from_secs(connect),
        policies,
        tlsca,
    })
}

fn main() -> ExitCode {
    tern_sys::signals::reset();
    tern_sys::signals::exit_on_crash(RemoteExit::Bug as i32, RemoteExit::Bug as i32);
    tern_log::install_panic_hook(PROG, RemoteExit::Bug as i32);

    if let Err(e) = Args::try_parse() {
        let _ = e.print();
        return if e.use_stderr() {
            RemoteExit::Usage
        } else {
            RemoteExit::Finished
        }
        .into();
    }

    let home = match Home::from_env() {
        Ok(h) => h,
        Err(e) => return trouble("startup_failed", &e),
    };
    let control = Control::new(&home);
    let settings = match settings(&control) {
        Ok(s) => s,
        Err(e) => return trouble("startup_failed", &e),
    };
    let router = match Router::from_control(&control) {
        Ok(r) => r,
        Err(e) => return trouble("startup_failed", &e),
    };
    let memory = HostMemory::open(&home.queue_dir().join(tern_spool::layout::REMOTE_DIR));
    // DKIM keys: a key that cannot be used is named in the log (and by
    // `ternctl check`); mail for its domain goes out unsigned.
    let (dkim, problems) = tern_dkim::Keys::load(&home.control_dir());
    for p in problems {
        Event::new(PROG, "dkim_key_unusable")
            .field("reason", p.to_string())
            .emit();
    }
    let mut worker = deliver::Worker::new(settings, router, memory, dkim);

    let stdin = std::io::stdin();
    let sock = stdin.as_fd();
    let mut inbox = Inbox::default();
    loop {
        loop {
            match inbox.next_frame() {
                Ok(None) => break,
                Ok(Some(Frame::Deliver(req, fd))) => {
                    for report in worker.deliver(&req, fd) {
                        if let Err(e) =
                            tern_ipc::remote::write_plain(std::io::stdout(), &report.encode())
                        {
                            worker.close();
                            return trouble("report_failed", &e);
                        }
                    }
                }
                Ok(Some(Frame::Hello(_))) => {}
                Ok(Some(Frame::Report(_))) => {
                    worker.close();
                    return trouble("protocol_error", &"a report frame on the request socket");
                }
                Err(e) => {
                    worker.close();
                    return trouble("protocol_error", &e);
                }
            }
        }
        match inbox.fill(sock) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                worker.close();
                return trouble("protocol_error", &e);
            }
        }
    }
    worker.close();
    RemoteExit::Finished.into()
}
