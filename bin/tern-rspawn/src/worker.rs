//! One `tern-remote` worker: the process, our end of its socket, and what
//! it is doing.

use std::os::fd::{AsFd as _, OwnedFd};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::fs::OFlags;
use tern_ipc::remote::{Inbox, RemoteDeliver};

use crate::job::Job;

/// The environment's `PATH` for tern-remote.
const CHILD_PATH: &str = "/usr/local/bin:/usr/bin:/bin";
/// How long handing a request over may wait for room in a worker's socket
/// (an idle worker reads at once; this only bounds a wedged one).
const HAND_OVER_WAIT: Duration = Duration::from_secs(10);

/// Why a worker's socket was closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Why {
    /// Idle for longer than the idle limit.
    Idle,
    /// Closed to make room for a worker of another domain.
    Evicted,
    /// tern-rspawn is stopping.
    Stopping,
    /// The worker closed its socket (or the socket failed).
    Closed,
    /// The worker broke the protocol and was killed.
    Broken,
}

impl Why {
    /// The word in the log.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Why::Idle => "idle",
            Why::Evicted => "evicted",
            Why::Stopping => "stopping",
            Why::Closed => "closed",
            Why::Broken => "broken",
        }
    }
}

/// What a worker is doing.
#[derive(Debug)]
pub(crate) enum State {
    /// Serving a request.
    Busy(Job),
    /// Waiting for the next request to its domain.
    Idle {
        /// Since when.
        since: Instant,
    },
    /// Its socket is closed; waiting for the process to exit (it QUITs
    /// its SMTP connection first).
    Ending {
        /// Since when.
        since: Instant,
        /// Why the socket was closed.
        why: Why,
        /// The request it was serving when its socket closed under it:
        /// its unreported recipients are deferred when the exit status is
        /// known.
        job: Option<Job>,
        /// We sent it SIGKILL after its grace time.
        killed: bool,
    },
}

/// A running `tern-remote`.
#[derive(Debug)]
pub(crate) struct Worker {
    pub(crate) child: Child,
    pub(crate) pid: u32,
    /// The domain it serves (set at start, never changes).
    pub(crate) domain: Vec<u8>,
    /// Our end of its socket (non-blocking); `None` once closed.
    pub(crate) sock: Option<OwnedFd>,
    /// Frames from it.
    pub(crate) inbox: Inbox,
    pub(crate) state: State,
    /// Requests handed to it.
    pub(crate) served: u32,
}

impl Worker {
    /// Starts `program` with a fresh socketpair: its end is the child's fd 0
    /// and fd 1, stderr is inherited, the environment is `TERN_HOME` and
    /// `PATH` only, and there are no arguments.
    pub(crate) fn start(
        program: &Path,
        home: &Path,
        domain: &[u8],
        now: Instant,
    ) -> std::io::Result<Worker> {
        let (ours, theirs) = tern_ipc::remote::socket_pair()?;
        let theirs_out = theirs.try_clone()?;
        rustix::fs::fcntl_getfl(&ours)
            .and_then(|f| rustix::fs::fcntl_setfl(&ours, f | OFlags::NONBLOCK))?;
        let mut cmd = Command::new(program);
        cmd.env_clear()
            .env("TERN_HOME", home)
            .env("PATH", CHILD_PATH)
            .stdin(Stdio::from(theirs))
            .stdout(Stdio::from(theirs_out))
            .stderr(Stdio::inherit());
        let spawned = cmd.spawn();
        // The Command holds the child's end of the socket: close our copies,
        // or the socket never reaches end of file when the child exits.
        drop(cmd);
        let child = spawned?;
        Ok(Worker {
            pid: child.id(),
            child,
            domain: domain.to_vec(),
            sock: Some(ours),
            inbox: Inbox::default(),
            state: State::Idle { since: now },
            served: 0,
        })
    }

    /// When it became idle, if it is idle (and its socket open).
    pub(crate) fn idle_since(&self) -> Option<Instant> {
        match self.state {
            State::Idle { since } if self.sock.is_some() => Some(since),
            _ => None,
        }
    }

    /// True while its socket is open (busy or idle).
    pub(crate) fn is_live(&self) -> bool {
        self.sock.is_some() && !matches!(self.state, State::Ending { .. })
    }

    /// The request it is serving.
    pub(crate) fn job(&self) -> Option<&Job> {
        match &self.state {
            State::Busy(j) => Some(j),
            State::Ending { job, .. } => job.as_ref(),
            State::Idle { .. } => None,
        }
    }

    /// Sends `req` with the message descriptor `fd` on its socket. Waits up
    /// to [`HAND_OVER_WAIT`] for room (the socket is non-blocking).
    pub(crate) fn hand_over(
        &self,
        req: &RemoteDeliver,
        fd: &OwnedFd,
    ) -> Result<(), tern_ipc::Error> {
        let Some(sock) = &self.sock else {
            return Err(tern_ipc::Error::Closed);
        };
        match tern_ipc::remote::write_deliver(sock.as_fd(), req, fd.as_fd()) {
            Err(tern_ipc::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {
                // Nothing went out (write_deliver waits for the rest once a
                // byte is out): wait for room once, then try again.
                let ts = Timespec {
                    tv_sec: HAND_OVER_WAIT.as_secs() as i64,
                    tv_nsec: 0,
                };
                let mut pfd = [PollFd::new(sock, PollFlags::OUT)];
                let _ = rustix::event::poll(&mut pfd, Some(&ts));
                tern_ipc::remote::write_deliver(sock.as_fd(), req, fd.as_fd())
            }
            other => other,
        }
    }

    /// Closes its socket: it sees end of file, QUITs and exits. `job` is
    /// the request left unfinished, if any.
    pub(crate) fn close(&mut self, why: Why, job: Option<Job>, now: Instant) {
        self.sock = None;
        self.state = State::Ending {
            since: now,
            why,
            job,
            killed: false,
        };
    }
}
