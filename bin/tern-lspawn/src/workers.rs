//! Delivery workers: per recipient uid, `tern-local --worker` processes
//! that serve that uid's deliveries one after another, so that a delivery
//! costs no process start (tern-ipc's `lworker` protocol).
//!
//! A worker is started exactly as a one-delivery tern-local is (the same
//! uid checks have passed for the delivery that needs it; the same
//! environment, session and verified drop: `start::local_command`) and is
//! keyed by its uid and gid: it never serves another account. It takes one
//! delivery at a time (the message's descriptor and tern-local's
//! arguments); more deliveries for one uid at once get more workers. A
//! worker is let go after [`MAX_IDLE`] without work or [`MAX_USE`]
//! deliveries; a delivery past its deadline kills the worker's process
//! group, as it kills a one-delivery tern-local's. When no worker can be
//! had (too many, or the job does not fit a packet), the delivery gets a
//! tern-local of its own.

use std::os::fd::{AsFd, OwnedFd};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use tern_ipc::handoff::{self, HandoffError};
use tern_ipc::local::Ending;
use tern_ipc::lworker::{Finished, Job};
use tern_log::Event;

use crate::PROG;
use crate::start::{self, Ctx, Prepared, Running, Via};

/// Deliveries a worker serves before it is replaced.
pub(crate) const MAX_USE: u32 = 1000;
/// How long a worker may wait for work.
pub(crate) const MAX_IDLE: Duration = Duration::from_secs(10);
/// Most workers at once (all uids).
pub(crate) const MAX_WORKERS: usize = 64;

struct Worker {
    uid: u32,
    gid: u32,
    child: Child,
    ctl: OwnedFd,
    busy: bool,
    served: u32,
    idle_since: Instant,
}

/// The workers, and those let go but not yet reaped.
#[derive(Default)]
pub(crate) struct Pool {
    workers: Vec<Worker>,
    leaving: Vec<Child>,
}

/// How a worker's delivery ended.
pub(crate) struct Result {
    pub(crate) ending: Ending,
    pub(crate) text: Vec<u8>,
}

impl Pool {
    /// Gives `p` to an idle worker of its uid and gid, started if needed;
    /// gives `p` back when no worker can take it.
    pub(crate) fn take(
        &mut self,
        ctx: &Ctx,
        p: Prepared,
    ) -> std::result::Result<Running, Box<Prepared>> {
        if !ctx.workers {
            return Err(Box::new(p));
        }
        let Ok(packet) = (Job {
            args: p.args.clone(),
        })
        .encode() else {
            return Err(Box::new(p));
        };
        let i = match self
            .workers
            .iter()
            .position(|w| !w.busy && w.uid == p.uid && w.gid == p.gid)
        {
            Some(i) => i,
            None => {
                if self.workers.len() >= MAX_WORKERS {
                    // Make room: let the longest idle worker go.
                    match self
                        .workers
                        .iter()
                        .enumerate()
                        .filter(|(_, w)| !w.busy)
                        .min_by_key(|(_, w)| w.idle_since)
                        .map(|(i, _)| i)
                    {
                        Some(old) => self.retire(old),
                        None => return Err(Box::new(p)),
                    }
                }
                match start(ctx, p.uid, p.gid) {
                    Ok(w) => {
                        self.workers.push(w);
                        self.workers.len() - 1
                    }
                    Err(reason) => {
                        Event::new(PROG, "warning")
                            .num("uid", p.uid)
                            .field(
                                "reason",
                                format!("cannot start a delivery worker: {reason}"),
                            )
                            .emit();
                        return Err(Box::new(p));
                    }
                }
            }
        };
        let w = &mut self.workers[i];
        if handoff::send(w.ctl.as_fd(), &packet, Some(p.message.as_fd())).is_err() {
            // It died while idle: let it go; this delivery runs on its own.
            self.retire(i);
            return Err(Box::new(p));
        }
        w.busy = true;
        w.served += 1;
        let pid = w.child.id();
        Ok(Running::begin(&p, Via::Worker(pid)))
    }

    /// The sockets of busy workers, with their pids.
    pub(crate) fn busy(&self) -> impl Iterator<Item = (u32, &OwnedFd)> {
        self.workers
            .iter()
            .filter(|w| w.busy)
            .map(|w| (w.child.id(), &w.ctl))
    }

    /// Reads the result of worker `pid`'s delivery (its socket is
    /// readable). A worker that died or broke the protocol is let go.
    pub(crate) fn result(&mut self, pid: u32) -> Option<Result> {
        let i = self.workers.iter().position(|w| w.child.id() == pid)?;
        let got = handoff::recv(self.workers[i].ctl.as_fd());
        let w = &mut self.workers[i];
        match got {
            Ok((packet, fds)) if fds.is_empty() => match Finished::decode(&packet) {
                Ok(f) => {
                    w.busy = false;
                    w.idle_since = Instant::now();
                    if w.served >= MAX_USE {
                        self.retire(i);
                    }
                    Some(Result {
                        ending: Ending::Exited(i32::from(f.code)),
                        text: f.text,
                    })
                }
                Err(e) => Some(self.broken(i, &e.to_string())),
            },
            Ok(_) => Some(self.broken(i, "descriptors attached to a result")),
            Err(HandoffError::Closed) => {
                // It exited or was killed: how?
                let mut w = self.workers.swap_remove(i);
                let ending = match w.child.wait() {
                    Ok(st) => {
                        use std::os::unix::process::ExitStatusExt as _;
                        match st.signal() {
                            Some(sig) => Ending::Signaled(sig),
                            None => Ending::Exited(st.code().unwrap_or(-1)),
                        }
                    }
                    Err(_) => Ending::Exited(-1),
                };
                Some(Result {
                    ending,
                    text: Vec::new(),
                })
            }
            Err(e) => Some(self.broken(i, &e.to_string())),
        }
    }

    fn broken(&mut self, i: usize, why: &str) -> Result {
        let w = &mut self.workers[i];
        Event::new(PROG, "warning")
            .num("uid", w.uid)
            .num("pid", w.child.id())
            .field(
                "reason",
                format!("delivery worker broke the protocol: {why}"),
            )
            .emit();
        kill_group(w.child.id());
        self.retire(i);
        Result {
            ending: Ending::Exited(-1),
            text: b"delivery worker failed (#4.3.0)".to_vec(),
        }
    }

    /// Kills worker `pid` and everything it runs (its process group): its
    /// delivery is past the deadline. Its socket then reads as closed.
    pub(crate) fn kill(&mut self, pid: u32) {
        if self.workers.iter().any(|w| w.child.id() == pid) {
            kill_group(pid);
        }
    }

    /// Lets idle workers go after [`MAX_IDLE`]; reaps those that left.
    pub(crate) fn tick(&mut self) {
        let now = Instant::now();
        let mut i = 0;
        while i < self.workers.len() {
            let w = &self.workers[i];
            if !w.busy && now.saturating_duration_since(w.idle_since) > MAX_IDLE {
                self.retire(i);
            } else {
                i += 1;
            }
        }
        self.leaving
            .retain_mut(|c| !matches!(c.try_wait(), Ok(Some(_)) | Err(_)));
    }

    /// True when a worker still has to be reaped.
    pub(crate) fn has_leaving(&self) -> bool {
        !self.leaving.is_empty()
    }

    /// Closes worker `i`'s socket (it exits at end of input).
    fn retire(&mut self, i: usize) {
        let w = self.workers.swap_remove(i);
        drop(w.ctl);
        self.leaving.push(w.child);
    }

    /// Lets every worker go (tern-lspawn is finishing) and waits until
    /// they have: a worker leaves at end of input (none is busy by now),
    /// so that nothing of tern-lspawn outlives it (`tern-start --once`
    /// promises that). One that has not left after [`LEAVE_GRACE`] is
    /// killed with its process group.
    pub(crate) fn close(&mut self) {
        while !self.workers.is_empty() {
            self.retire(0);
        }
        let deadline = Instant::now() + LEAVE_GRACE;
        loop {
            self.leaving
                .retain_mut(|c| !matches!(c.try_wait(), Ok(Some(_)) | Err(_)));
            if self.leaving.is_empty() || Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        for mut c in self.leaving.drain(..) {
            kill_group(c.id());
            let _ = c.wait();
        }
    }
}

/// How long finishing waits for workers to leave.
const LEAVE_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

fn kill_group(pid: u32) {
    if let Some(pgid) = rustix::process::Pid::from_raw(pid as i32) {
        let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
    }
}

fn start(ctx: &Ctx, uid: u32, gid: u32) -> std::result::Result<Worker, String> {
    let (ours, theirs) = rustix::net::socketpair(
        rustix::net::AddressFamily::UNIX,
        rustix::net::SocketType::SEQPACKET,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    )
    .map_err(|e| format!("socketpair: {e}"))?;
    let mut cmd = start::local_command(ctx, uid, gid).map_err(|r| r.text)?;
    // fd 0 the socket; 1 and 2 /dev/null: what the recipient's code
    // prints never reaches tern-lspawn's log (a one-delivery tern-local's
    // output goes into its report instead).
    cmd.arg("--worker")
        .stdin(Stdio::from(theirs))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let child = cmd
        .spawn()
        .map_err(|e| tern_sys::privilege::spawn_error_text(&e))?;
    Event::new(PROG, "worker_start")
        .num("uid", uid)
        .num("pid", child.id())
        .emit();
    Ok(Worker {
        uid,
        gid,
        child,
        ctl: ours,
        busy: false,
        served: 0,
        idle_since: Instant::now(),
    })
}
