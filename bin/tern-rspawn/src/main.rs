//! NAME
//!     tern-rspawn - keep a pool of tern-remote workers for remote deliveries
//!
//! SYNOPSIS
//!     tern-rspawn  (one Unix socket to tern-send as fd 0 and fd 1, log on fd 2)
//!
//! DESCRIPTION
//!     Speaks the remote-delivery protocol (`tern_ipc::remote`) with
//!     tern-send: writes `Hello{max_concurrency: concurrencyremote}`, then
//!     hands each `RemoteDeliver` request (several recipients at one domain,
//!     the queue file as a descriptor) to a `$TERN_HOME/bin/tern-remote`
//!     worker over that worker's own socketpair, passing the descriptor on,
//!     and forwards the worker's per-recipient `RcptReport`s. A worker
//!     serves one domain and keeps its SMTP connection between requests: a
//!     request goes to an idle worker of its domain when there is one, else
//!     to a new worker while fewer than `concurrencyremote` run, else to a
//!     new worker in place of the longest-idle worker of another domain.
//!     Workers idle for 5 seconds are closed. Recipients a worker leaves
//!     unreported (it exits, is killed, breaks the protocol) are reported
//!     Deferred. One poll() loop; no threads.
//!
//! SECURITY
//!     Runs as `ternr` in a system instance; opens nothing in the queue
//!     (messages arrive as descriptors) and writes no files. It trusts
//!     neither tern-send's frames nor the workers' (bounded, checked); a
//!     worker that sends a report it was not asked for is killed.
//!
//! EXIT CODES
//!     0 tern-send closed the socket (or SIGTERM) and every worker has
//!     ended; 81 internal bug; 100 usage; 111 cannot start or continue
//!     (unusable home or control, malformed frame from tern-send). See
//!     docs/man/tern-rspawn.8.md.
//!
//! FILES
//!     $TERN_HOME/control/concurrencyremote, $TERN_HOME/bin/tern-remote
//!
//! SEE ALSO
//!     tern-send(8), tern-remote(8), tern-start(8), docs/man/tern-rspawn.8.md
#![forbid(unsafe_code)]
#![deny(clippy::print_stdout, clippy::print_stderr)]

mod job;
mod pick;
mod run;
mod worker;

use std::process::ExitCode;

use clap::Parser as _;
use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use tern_control::{Control, Home};
use tern_ipc::Hello;
use tern_log::Event;

const PROG: &str = "tern-rspawn";

/// Exit codes (docs/man/tern-rspawn.8.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum RspawnExit {
    /// tern-send closed the socket (or SIGTERM came) and every worker has
    /// ended.
    Finished = 0,
    /// Internal bug (panic or crash signal).
    Bug = 81,
    /// Called with an unknown argument.
    Usage = 100,
    /// Cannot start or continue: unusable home or control file, a
    /// malformed frame from tern-send, reports that cannot be written.
    Trouble = 111,
}

impl From<RspawnExit> for ExitCode {
    fn from(e: RspawnExit) -> ExitCode {
        ExitCode::from(e as u8)
    }
}

/// tern-rspawn takes no arguments: tern-start runs it with one Unix socket
/// to tern-send as fd 0 and fd 1.
#[derive(clap::Parser, Debug)]
#[command(
    name = "tern-rspawn",
    version,
    about = "Runs tern-remote workers for the remote deliveries tern-send asks for",
    long_about = "Runs tern-remote workers for the remote deliveries tern-send asks for.\n\n\
        Started by tern-start with one Unix socket to tern-send as fd 0 and fd 1 \
        (tern-ipc remote frames, message descriptors passed with SCM_RIGHTS); logs on fd 2. \
        Keeps at most control/concurrencyremote workers, one domain each, and closes a \
        worker idle for 5 seconds.\n\n\
        Exit 0 when tern-send closes the socket (or on SIGTERM) and every worker has ended; \
        81 internal bug; 100 usage; 111 trouble. See tern-rspawn(8)."
)]
struct Cli {}

fn trouble(event: &str, reason: &dyn std::fmt::Display) -> ExitCode {
    Event::new(PROG, event)
        .field("reason", reason.to_string())
        .emit();
    RspawnExit::Trouble.into()
}

fn main() -> ExitCode {
    tern_sys::signals::reset();
    tern_sys::signals::exit_on_crash(RspawnExit::Bug as i32, RspawnExit::Bug as i32);
    tern_log::install_panic_hook(PROG, RspawnExit::Bug as i32);

    if let Err(e) = Cli::try_parse() {
        let _ = e.print();
        return match e.kind() {
            clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                RspawnExit::Finished.into()
            }
            _ => RspawnExit::Usage.into(),
        };
    }

    // Descriptors travel only on a Unix socket: refuse anything else at
    // once, with a clear reason (run by hand from a terminal, say).
    match rustix::fs::fstat(rustix::stdio::stdin()) {
        Ok(st)
            if rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Socket => {}
        Ok(_) => {
            return trouble(
                "startup_failed",
                &"fd 0 is not a socket: tern-start runs tern-rspawn with a Unix socket to tern-send",
            );
        }
        Err(e) => return trouble("startup_failed", &format!("fd 0: {e}")),
    }
    let home = match Home::from_env() {
        Ok(h) => h,
        Err(e) => return trouble("startup_failed", &e),
    };
    let max = match Control::new(&home).concurrencyremote() {
        Ok(n) => n.max(1),
        Err(e) => return trouble("startup_failed", &e),
    };
    let max = u32::try_from(max).unwrap_or(u32::MAX);

    // SIGTERM (stop gracefully) and SIGCHLD (a worker ended) arrive through
    // a signalfd watched by the loop. Workers start with an empty mask (std
    // resets it in the child).
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGTERM);
    mask.add(Signal::SIGCHLD);
    if let Err(e) = sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), None) {
        return trouble("startup_failed", &format!("sigprocmask: {e}"));
    }
    let sigfd = match SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC) {
        Ok(s) => s,
        Err(e) => return trouble("startup_failed", &format!("signalfd: {e}")),
    };

    let hello = Hello {
        max_concurrency: max,
    };
    if let Err(e) = tern_ipc::remote::write_plain(rustix::stdio::stdout(), &hello.encode()) {
        return trouble("report_failed", &e);
    }
    Event::new(PROG, "started")
        .num("max_concurrency", max)
        .num("idle_secs", run::IDLE_LIMIT.as_secs())
        .emit();
    let ctx = run::Ctx {
        program: home.bin_dir().join("tern-remote"),
        home: home.root().to_path_buf(),
        max: max as usize,
    };
    run::run(&ctx, &sigfd).into()
}
