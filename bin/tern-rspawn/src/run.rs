//! The one poll() loop: requests from tern-send on fd 0, every worker's
//! socket, signals (SIGTERM, SIGCHLD through a signalfd), the idle and
//! grace timers; reports to tern-send on fd 1.

use std::fs::File;
use std::os::fd::{AsFd as _, OwnedFd};
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::sys::signalfd::SignalFd;
use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::io::Errno;
use tern_ipc::remote::{Frame, Inbox, RcptReport, RemoteDeliver};
use tern_log::Event;

use crate::job::{self, Job, Progress};
use crate::pick::{self, Choice, Seen};
use crate::worker::{State, Why, Worker};
use crate::{PROG, RspawnExit};

/// A worker idle this long has its socket closed (it QUITs its SMTP
/// connection and exits), so remote servers do not keep our connections.
pub(crate) const IDLE_LIMIT: Duration = Duration::from_secs(5);
/// A worker whose socket we closed gets this long to QUIT and exit before
/// it is killed.
pub(crate) const QUIT_GRACE: Duration = Duration::from_secs(60);
/// A worker that closed its socket itself gets this long to exit (so its
/// exit status can be reported) before it is killed.
pub(crate) const LOST_GRACE: Duration = Duration::from_secs(5);
/// How often workers are checked for an exit when no SIGCHLD came.
const REAP_TICK: Duration = Duration::from_secs(1);
/// Most reads from one worker's socket per wake-up (fairness).
const READS_PER_WAKE: usize = 64;

/// What the loop needs to know of the instance.
pub(crate) struct Ctx {
    /// `TERN_HOME`, passed on to workers.
    pub(crate) home: PathBuf,
    /// `$TERN_HOME/bin/tern-remote`.
    pub(crate) program: PathBuf,
    /// `concurrencyremote`: most workers with an open socket.
    pub(crate) max: usize,
}

struct Loop<'a> {
    ctx: &'a Ctx,
    workers: Vec<Worker>,
    /// Frames from tern-send.
    input: Inbox,
    /// fd 0 is still read.
    input_open: bool,
    /// New requests are served (false once stopping).
    accepting: bool,
    /// fd 1; `None` once a write failed.
    out: Option<File>,
    /// Exit 111 at the end.
    trouble: bool,
    /// A SIGCHLD came (or the tick passed): look for exited workers.
    reap_due: bool,
}

impl Loop<'_> {
    /// Stops taking requests (end of input, SIGTERM, protocol error,
    /// tern-send gone): idle workers are closed, busy ones finish.
    fn stop(&mut self, reason: &str) {
        if self.accepting {
            self.accepting = false;
            Event::new(PROG, "stopping")
                .field("reason", reason)
                .num("workers", self.workers.len())
                .emit();
        }
    }

    fn protocol_error(&mut self, hint: &str) {
        Event::new(PROG, "protocol_error")
            .field("reason", hint)
            .num("workers", self.workers.len())
            .emit();
        self.trouble = true;
        self.input_open = false;
        self.stop("protocol error from tern-send");
    }

    /// Writes one report to tern-send (dropped once tern-send is gone).
    fn send(&mut self, r: &RcptReport) {
        let Some(out) = &mut self.out else {
            return;
        };
        if let Err(e) = tern_ipc::write_frame(out, &r.encode()) {
            let gone = matches!(&e, tern_ipc::Error::Io(io)
                if matches!(io.kind(), std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset));
            Event::new(PROG, "report_failed")
                .field("reason", e.to_string())
                .emit();
            self.out = None;
            if !gone {
                self.trouble = true;
            }
            self.input_open = false;
            self.stop("cannot write reports to tern-send");
        }
    }

    fn send_all(&mut self, reports: Vec<RcptReport>) {
        for r in &reports {
            self.send(r);
        }
    }

    /// Reads once from fd 0 and serves every whole request.
    fn read_input(&mut self) {
        let fd0 = rustix::stdio::stdin();
        match self.input.fill(fd0) {
            Ok(true) => {}
            Ok(false) => {
                self.input_open = false;
                self.stop("end of input");
                return;
            }
            Err(e) => return self.protocol_error(&e.to_string()),
        }
        while self.input_open {
            match self.input.next_frame() {
                Ok(Some(Frame::Deliver(req, fd))) => self.request(req, fd),
                Ok(Some(_)) => {
                    return self.protocol_error("a frame from tern-send that is not a request");
                }
                Ok(None) => break,
                Err(e) => return self.protocol_error(&e.to_string()),
            }
        }
    }

    /// Serves one request: an idle worker of its domain, a new worker, or
    /// an evicted idle worker's place; else every recipient is deferred.
    fn request(&mut self, req: RemoteDeliver, fd: OwnedFd) {
        let n = req.recipients.len();
        if !self.accepting {
            let all = job::defer_all(req.slot, n, "tern-rspawn is stopping (#4.3.0)");
            return self.send_all(all);
        }
        if self
            .workers
            .iter()
            .any(|w| w.job().is_some_and(|j| j.slot == req.slot))
        {
            return self.protocol_error("a request for a slot that is in use");
        }
        // Each turn that does not return closes one live worker, so this
        // ends; the bound is for safety only.
        for _ in 0..self.workers.len() + 2 {
            let now = Instant::now();
            let live: Vec<usize> = (0..self.workers.len())
                .filter(|&i| self.workers[i].is_live())
                .collect();
            let seen: Vec<Seen<'_>> = live
                .iter()
                .map(|&i| Seen {
                    domain: &self.workers[i].domain,
                    idle_since: self.workers[i].idle_since(),
                })
                .collect();
            match pick::choose(&seen, &req.domain, self.ctx.max) {
                Choice::Reuse(k) => {
                    let i = live[k];
                    match self.workers[i].hand_over(&req, &fd) {
                        Ok(()) => return self.handed(i, &req, true),
                        Err(e) => {
                            // It went away while idle: nothing of ours is
                            // lost; try the next choice.
                            let w = &mut self.workers[i];
                            Event::new(PROG, "worker_lost")
                                .num("pid", w.pid)
                                .field("domain", &w.domain)
                                .field("reason", format!("cannot hand over a request: {e}"))
                                .emit();
                            let _ = w.child.kill();
                            w.close(Why::Closed, None, now);
                        }
                    }
                }
                Choice::Start => {
                    let w = match Worker::start(&self.ctx.program, &self.ctx.home, &req.domain, now)
                    {
                        Ok(w) => w,
                        Err(e) => {
                            Event::new(PROG, "worker_start_failed")
                                .field("domain", &req.domain)
                                .num("qid", req.id)
                                .num("slot", req.slot)
                                .field("reason", format!("{}: {e}", self.ctx.program.display()))
                                .emit();
                            let all = job::defer_all(
                                req.slot,
                                n,
                                &format!("cannot start tern-remote: {e} (#4.3.0)"),
                            );
                            return self.send_all(all);
                        }
                    };
                    Event::new(PROG, "worker_start")
                        .num("pid", w.pid)
                        .field("domain", &w.domain)
                        .num("workers", live.len() + 1)
                        .emit();
                    self.workers.push(w);
                    let i = self.workers.len() - 1;
                    match self.workers[i].hand_over(&req, &fd) {
                        Ok(()) => return self.handed(i, &req, false),
                        Err(e) => {
                            let w = &mut self.workers[i];
                            Event::new(PROG, "worker_lost")
                                .num("pid", w.pid)
                                .field("domain", &w.domain)
                                .field("reason", format!("cannot hand over a request: {e}"))
                                .emit();
                            let _ = w.child.kill();
                            w.close(Why::Broken, None, now);
                            let all = job::defer_all(
                                req.slot,
                                n,
                                &format!("cannot hand the request to tern-remote: {e} (#4.3.0)"),
                            );
                            return self.send_all(all);
                        }
                    }
                }
                Choice::Evict(k) => {
                    let w = &mut self.workers[live[k]];
                    Event::new(PROG, "worker_close")
                        .num("pid", w.pid)
                        .field("domain", &w.domain)
                        .field("reason", Why::Evicted.name())
                        .field("for_domain", &req.domain)
                        .emit();
                    w.close(Why::Evicted, None, now);
                }
                Choice::AllBusy => break,
            }
        }
        Event::new(PROG, "all_busy")
            .num("qid", req.id)
            .num("slot", req.slot)
            .field("domain", &req.domain)
            .num("rcpts", n)
            .num("workers", self.ctx.max)
            .emit();
        let text = format!(
            "all {} tern-remote workers are busy (concurrencyremote); try again later (#4.3.0)",
            self.ctx.max
        );
        let all = job::defer_all(req.slot, n, &text);
        self.send_all(all);
    }

    /// Worker `i` took `req`.
    fn handed(&mut self, i: usize, req: &RemoteDeliver, reused: bool) {
        let w = &mut self.workers[i];
        w.state = State::Busy(Job::new(
            req.slot,
            req.id,
            req.recipients.len(),
            Instant::now(),
        ));
        w.served += 1;
        Event::new(PROG, "request")
            .num("qid", req.id)
            .num("slot", req.slot)
            .field("domain", &req.domain)
            .num("rcpts", req.recipients.len())
            .num("pid", w.pid)
            .field("reused", if reused { "yes" } else { "no" })
            .emit();
    }

    /// Worker `i` broke the protocol: it is killed and what it left
    /// unreported is deferred now.
    fn broken(&mut self, i: usize, hint: &str) {
        let now = Instant::now();
        let w = &mut self.workers[i];
        let _ = w.child.kill();
        let job = match std::mem::replace(&mut w.state, State::Idle { since: now }) {
            State::Busy(j) => Some(j),
            State::Ending { job, .. } => job,
            State::Idle { .. } => None,
        };
        let mut ev = Event::new(PROG, "worker_lost")
            .num("pid", w.pid)
            .field("domain", &w.domain)
            .field("reason", format!("protocol error: {hint}"));
        let mut reports = Vec::new();
        if let Some(mut j) = job {
            ev = ev
                .num("qid", j.id)
                .num("slot", j.slot)
                .num("unreported", j.left());
            reports = j.defer_rest(&format!(
                "tern-remote broke the protocol ({hint}) before reporting this recipient (#4.3.0)"
            ));
        }
        ev.emit();
        w.close(Why::Broken, None, now);
        if let State::Ending { killed, .. } = &mut w.state {
            *killed = true;
        }
        self.send_all(reports);
    }

    /// Handles one report from worker `i`.
    fn on_report(&mut self, i: usize, r: RcptReport) {
        let w = &mut self.workers[i];
        let progress = match &mut w.state {
            State::Busy(j) => j.record(&r),
            _ => Err("a report while serving no request"),
        };
        match progress {
            Err(hint) => self.broken(i, hint),
            Ok(p) => {
                self.send(&r);
                if p == Progress::Complete {
                    let w = &mut self.workers[i];
                    let now = Instant::now();
                    if let State::Busy(j) =
                        std::mem::replace(&mut w.state, State::Idle { since: now })
                    {
                        Event::new(PROG, "request_done")
                            .num("qid", j.id)
                            .num("slot", j.slot)
                            .num("pid", w.pid)
                            .num("delivered", j.counts[0])
                            .num("deferred", j.counts[1])
                            .num("failed", j.counts[2])
                            .num("ms", j.started.elapsed().as_millis())
                            .emit();
                    }
                }
            }
        }
    }

    /// Handles every whole frame worker `i` has sent. False when the
    /// worker was found broken (its socket is closed).
    fn worker_frames(&mut self, i: usize) -> bool {
        loop {
            match self.workers[i].inbox.next_frame() {
                Ok(Some(Frame::Report(r))) => self.on_report(i, r),
                // A worker may announce itself; nothing to do with it.
                Ok(Some(Frame::Hello(_))) => {}
                Ok(Some(Frame::Deliver(..))) => {
                    self.broken(i, "a request from a worker");
                }
                Ok(None) => return true,
                Err(e) => self.broken(i, &e.to_string()),
            }
            if self.workers[i].sock.is_none() {
                return false;
            }
        }
    }

    /// Reads what worker `i`'s socket has (at most [`READS_PER_WAKE`]
    /// reads; poll() brings us back for the rest) and handles every whole
    /// frame.
    fn read_worker(&mut self, i: usize) {
        for _ in 0..READS_PER_WAKE {
            let w = &mut self.workers[i];
            let Some(sock) = &w.sock else {
                return;
            };
            match w.inbox.fill(sock.as_fd()) {
                Ok(true) => {
                    if !self.worker_frames(i) {
                        return;
                    }
                }
                Ok(false) => {
                    // End of file: it is exiting. A request it was serving
                    // is finished when its exit status is known.
                    let now = Instant::now();
                    let job = match std::mem::replace(&mut w.state, State::Idle { since: now }) {
                        State::Busy(j) => Some(j),
                        State::Ending { job, .. } => job,
                        State::Idle { .. } => None,
                    };
                    w.close(Why::Closed, job, now);
                    return;
                }
                Err(tern_ipc::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    return;
                }
                Err(e) => return self.broken(i, &e.to_string()),
            }
        }
    }

    /// Worker `i` has exited with `status`: reads what it wrote last,
    /// defers what it left unreported, and forgets it.
    fn finish(&mut self, i: usize, status: ExitStatus) {
        if self.workers[i].sock.is_some() {
            self.read_worker(i);
        }
        let w = self.workers.swap_remove(i);
        let (why, job, killed) = match w.state {
            State::Busy(j) => (Why::Closed, Some(j), false),
            State::Idle { .. } => (Why::Closed, None, false),
            State::Ending {
                why, job, killed, ..
            } => (why, job, killed),
        };
        if let Some(mut j) = job.filter(|j| j.left() > 0) {
            let text = if killed {
                "tern-remote closed its socket before reporting this recipient and did not exit; killed (#4.3.0)"
                    .to_string()
            } else {
                job::lost_text(status)
            };
            Event::new(PROG, "worker_lost")
                .num("pid", w.pid)
                .field("domain", &w.domain)
                .num("qid", j.id)
                .num("slot", j.slot)
                .num("unreported", j.left())
                .field("reason", &text)
                .emit();
            let reports = j.defer_rest(&text);
            self.send_all(reports);
        }
        Event::new(PROG, "worker_stop")
            .num("pid", w.pid)
            .field("domain", &w.domain)
            .field("reason", why.name())
            .field("status", job::ending(status))
            .num("requests", w.served)
            .emit();
    }

    /// Reaps every worker that has exited.
    fn reap(&mut self) {
        let mut i = 0;
        while i < self.workers.len() {
            match self.workers[i].child.try_wait() {
                Ok(Some(status)) => {
                    self.finish(i, status);
                    continue;
                }
                Ok(None) => {}
                Err(e) => {
                    // Only ECHILD is possible, and only after a bug.
                    Event::new(PROG, "wait_failed")
                        .num("pid", self.workers[i].pid)
                        .field("reason", e.to_string())
                        .emit();
                }
            }
            i += 1;
        }
    }

    /// Closes idle workers past the idle limit (all of them when
    /// stopping) and kills ending workers past their grace time. Returns
    /// how long until the next such deadline.
    fn housekeeping(&mut self, now: Instant) -> Duration {
        let mut next = REAP_TICK;
        for w in &mut self.workers {
            match &mut w.state {
                State::Idle { since } if w.sock.is_some() => {
                    let since = *since;
                    let why = if !self.accepting {
                        Why::Stopping
                    } else if now.saturating_duration_since(since) >= IDLE_LIMIT {
                        Why::Idle
                    } else {
                        next = next.min(IDLE_LIMIT - now.saturating_duration_since(since));
                        continue;
                    };
                    Event::new(PROG, "worker_close")
                        .num("pid", w.pid)
                        .field("domain", &w.domain)
                        .field("reason", why.name())
                        .emit();
                    w.close(why, None, now);
                }
                State::Ending {
                    since, why, killed, ..
                } if !*killed => {
                    let grace = if *why == Why::Closed {
                        LOST_GRACE
                    } else {
                        QUIT_GRACE
                    };
                    let waited = now.saturating_duration_since(*since);
                    if waited >= grace {
                        *killed = true;
                        let _ = w.child.kill();
                        Event::new(PROG, "worker_kill")
                            .num("pid", w.pid)
                            .field("domain", &w.domain)
                            .field(
                                "reason",
                                format!(
                                    "{} and still running after {} s",
                                    why.name(),
                                    grace.as_secs()
                                ),
                            )
                            .emit();
                    } else {
                        next = next.min(grace - waited);
                    }
                }
                _ => {}
            }
        }
        next
    }
}

/// Runs until tern-send is gone (or SIGTERM) and no worker is left.
pub(crate) fn run(ctx: &Ctx, sigfd: &SignalFd) -> RspawnExit {
    let out = match rustix::stdio::stdout().try_clone_to_owned() {
        Ok(fd) => File::from(fd),
        Err(e) => {
            Event::new(PROG, "startup_failed")
                .field("reason", format!("fd 1: {e}"))
                .emit();
            return RspawnExit::Trouble;
        }
    };
    let mut l = Loop {
        ctx,
        workers: Vec::new(),
        input: Inbox::default(),
        input_open: true,
        accepting: true,
        out: Some(out),
        trouble: false,
        reap_due: false,
    };
    let mut last_reap = Instant::now();
    loop {
        let now = Instant::now();
        if l.reap_due || now.saturating_duration_since(last_reap) >= REAP_TICK {
            l.reap_due = false;
            last_reap = now;
            l.reap();
        }
        let timeout = l.housekeeping(now);
        if !l.accepting && l.workers.is_empty() {
            break;
        }
        let ts = Timespec {
            tv_sec: timeout.as_secs() as i64,
            tv_nsec: i64::from(timeout.subsec_nanos()),
        };
        let fd0 = rustix::stdio::stdin();
        let (sig_ready, input_ready, ready) = {
            let mut fds = Vec::with_capacity(l.workers.len() + 2);
            fds.push(PollFd::new(sigfd, PollFlags::IN));
            if l.input_open {
                fds.push(PollFd::new(&fd0, PollFlags::IN));
            }
            let mut which = Vec::with_capacity(l.workers.len());
            for (i, w) in l.workers.iter().enumerate() {
                if let Some(s) = &w.sock {
                    fds.push(PollFd::new(s, PollFlags::IN));
                    which.push(i);
                }
            }
            match rustix::event::poll(&mut fds, Some(&ts)) {
                Ok(_) | Err(Errno::INTR) => {}
                Err(e) => {
                    Event::new(PROG, "poll_failed")
                        .field("reason", e.to_string())
                        .emit();
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            let mut fds = fds.iter();
            let sig_ready = fds.next().is_some_and(|f| !f.revents().is_empty());
            let input_ready = l.input_open && fds.next().is_some_and(|f| !f.revents().is_empty());
            let ready: Vec<usize> = which
                .into_iter()
                .zip(fds)
                .filter(|(_, f)| !f.revents().is_empty())
                .map(|(i, _)| i)
                .collect();
            (sig_ready, input_ready, ready)
        };
        if sig_ready {
            while let Ok(Some(info)) = sigfd.read_signal() {
                match Signal::try_from(info.ssi_signo as i32) {
                    Ok(Signal::SIGTERM) => l.stop("SIGTERM"),
                    Ok(Signal::SIGCHLD) => l.reap_due = true,
                    _ => {}
                }
            }
        }
        // Worker indices stay valid until the next reap.
        for i in ready {
            if l.workers[i].sock.is_some() {
                l.read_worker(i);
            }
        }
        if input_ready {
            l.read_input();
        }
    }
    if l.trouble {
        RspawnExit::Trouble
    } else {
        Event::new(PROG, "finished").emit();
        RspawnExit::Finished
    }
}
