//! `tern-smtpd --worker`: one of tern-listen's reused SMTP workers.
//!
//! fd 0 is a `SOCK_SEQPACKET` socket to the listener (tern-ipc's
//! `handoff` protocol). The worker waits for a connection, puts it on fd 0
//! and fd 1 (where the one-connection code expects it), serves it with the
//! variables that came with it, closes it, and reports; then waits for the
//! next one. Nothing of one connection survives into the next: the
//! configuration is read again and the session starts afresh (or from the
//! state saved with a parked connection), and the connection's variables
//! live only in [`Vars`].
//!
//! A client that stays quiet between commands longer than [`PARK_AFTER`]
//! (or at once when the listener is short of workers) is parked: the
//! worker hands the connection and its session state back to the listener
//! and is free for another client. TLS sessions are never parked.
//!
//! The worker exits when the listener closes the socket (it decides when a
//! worker has served enough connections or idled long enough), and on any
//! protocol error. A crash costs only the connection it was serving.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::process::ExitCode;
use std::time::Duration;

use tern_ipc::handoff::{self, HandoffError, Order, Park, Report};
use tern_log::Event;
use tern_smtp::{Reply, Session};

use crate::exit::Exit;
use crate::serve::{self, Outcome};
use crate::vars::Vars;
use crate::{PROG, setup};

/// How long a client may stay quiet between commands before its
/// connection is parked, when the listener has workers to spare.
const PARK_AFTER: Duration = Duration::from_secs(1);
/// The same when the listener is short of workers.
const PARK_HURRIED: Duration = Duration::from_millis(20);
/// The most a TLS client (which cannot be parked) may stay silent between
/// commands once the listener is short of workers (tern-listen's own
/// limit for parked clients under stress is the same).
pub(crate) const STRESS_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection's tie to the listener.
pub(crate) struct Link<'a> {
    /// The socket to the listener.
    pub(crate) ctl: BorrowedFd<'a>,
    /// The saved session of a parked connection (taken when resumed).
    pub(crate) resume: Option<Vec<u8>>,
    hurry: bool,
    /// The listener's socket failed: no more parking.
    broken: bool,
    /// Test aid (not when setuid): `TERN_PARK_MS`.
    park_after: Duration,
    /// Test aid (not when setuid): `TERN_STRESS_MS`.
    stress: Duration,
}

impl Link<'_> {
    /// How long to wait for a quiet client before parking it.
    pub(crate) fn delay(&self) -> Duration {
        if self.hurry {
            PARK_HURRIED.min(self.park_after)
        } else {
            self.park_after
        }
    }

    /// The most a client that cannot be parked may stay silent once the
    /// listener is short of workers.
    pub(crate) fn stress_timeout(&self) -> Duration {
        self.stress
    }

    /// The listener's socket still works (packets from it are read).
    pub(crate) fn listening(&self) -> bool {
        !self.broken
    }

    /// A packet came from the listener while the client was quiet: true
    /// when it asks to hurry (park now).
    pub(crate) fn order(&mut self) -> bool {
        match handoff::recv_order(self.ctl) {
            Ok(Order::Hurry) => {
                self.hurry = true;
                true
            }
            Ok(Order::Serve(..)) => {
                Event::new(PROG, "warning")
                    .field("reason", "listener sent a connection to a busy worker")
                    .emit();
                self.broken = true;
                false
            }
            Err(e) => {
                Event::new(PROG, "warning")
                    .field("reason", format!("listener socket: {e}"))
                    .emit();
                self.broken = true;
                false
            }
        }
    }

    /// The park report for `session`, when it can be parked.
    pub(crate) fn park(&self, session: &Session, me: &str, timeout: Duration) -> Option<Park> {
        if self.broken {
            return None;
        }
        let state = session.park()?;
        if state.len() > handoff::MAX_STATE {
            return None;
        }
        let closing =
            Reply::new(421, "4.4.2", format!("{me} timeout, closing connection")).to_bytes();
        if closing.len() > handoff::MAX_LINE {
            return None;
        }
        let left = timeout.saturating_sub(self.delay());
        Some(Park {
            timeout_secs: u32::try_from(left.as_secs()).unwrap_or(u32::MAX).max(1),
            closing,
            state,
        })
    }
}

fn fail(reason: impl std::fmt::Display) -> ExitCode {
    Event::new(PROG, "worker_failed")
        .field("reason", reason.to_string())
        .emit();
    ExitCode::from(Exit::Trouble.code())
}

/// The worker's loop.
pub(crate) fn run() -> ExitCode {
    let stdin = std::io::stdin();
    let ctl = match rustix::io::fcntl_dupfd_cloexec(stdin.as_fd(), 3) {
        Ok(fd) => fd,
        Err(e) => return fail(format!("fd 0: {e}")),
    };
    let null = match rustix::fs::open(
        "/dev/null",
        rustix::fs::OFlags::RDWR | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(e) => return fail(format!("/dev/null: {e}")),
    };
    if let Err(e) = put_on_0_and_1(&null) {
        return fail(format!("dup2: {e}"));
    }
    let aid = |name: &str, default: Duration| match std::env::var(name) {
        Ok(ms) if !tern_sys::secure::at_secure() => ms
            .parse::<u64>()
            .map(Duration::from_millis)
            .unwrap_or(default),
        _ => default,
    };
    let park_after = aid("TERN_PARK_MS", PARK_AFTER);
    let mut writer: Option<tern_spool::QueueClient> = None;
    let stress = aid("TERN_STRESS_MS", STRESS_TIMEOUT);
    loop {
        let (assign, conn) = match handoff::recv_order(ctl.as_fd()) {
            Ok(Order::Serve(a, fd)) => (a, fd),
            // Sent while this worker was finishing: nothing to hurry.
            Ok(Order::Hurry) => continue,
            Err(HandoffError::Closed) => return ExitCode::SUCCESS,
            Err(e) => return fail(format!("listener socket: {e}")),
        };
        if let Err(e) = put_on_0_and_1(&conn) {
            return fail(format!("dup2: {e}"));
        }
        drop(conn);
        let link = Link {
            ctl: ctl.as_fd(),
            resume: assign.state,
            hurry: assign.hurry,
            broken: false,
            park_after,
            stress,
        };
        let outcome = match setup(Vars::connection(assign.vars)) {
            Ok(s) => {
                // The writer's connection is kept from one client to the
                // next; a client whose variables name another queue
                // (QMAILQUEUE, the gate) gets a client of its own.
                let client = serve::queue_client(&s);
                let client = if client.uses_writer() {
                    writer.get_or_insert(client).clone()
                } else {
                    client
                };
                serve::run(s, &client, Some(link))
            }
            Err(e) => Outcome::Closed(e),
        };
        let sent = match outcome {
            Outcome::Closed(exit) => {
                // Reported before the connection is closed, so that the
                // listener counts this worker idle before the client,
                // seeing the close, can connect again (else it would
                // start another worker for it).
                let sent = Report::Done(exit.code())
                    .encode()
                    .map_err(|e| e.to_string())
                    .and_then(|p| handoff::send(ctl.as_fd(), &p, None).map_err(|e| e.to_string()));
                // Closes the client's connection (the listener holds no
                // copy of it).
                if let Err(e) = put_on_0_and_1(&null) {
                    return fail(format!("dup2: {e}"));
                }
                sent
            }
            Outcome::Parked(park) => {
                let conn = match stdin.as_fd().try_clone_to_owned() {
                    Ok(fd) => fd,
                    Err(e) => return fail(format!("dup: {e}")),
                };
                if let Err(e) = put_on_0_and_1(&null) {
                    return fail(format!("dup2: {e}"));
                }
                Report::Park(park)
                    .encode()
                    .map_err(|e| e.to_string())
                    .and_then(|p| {
                        handoff::send(ctl.as_fd(), &p, Some(conn.as_fd()))
                            .map_err(|e| e.to_string())
                    })
            }
        };
        if let Err(e) = sent {
            return fail(format!("cannot report to the listener: {e}"));
        }
    }
}

fn put_on_0_and_1(fd: &OwnedFd) -> rustix::io::Result<()> {
    rustix::stdio::dup2_stdin(fd)?;
    rustix::stdio::dup2_stdout(fd)
}
