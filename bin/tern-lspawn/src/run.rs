//! The one poll() loop: requests on fd 0, every child's output pipe,
//! deadlines, and reports on fd 1.

use std::io::{ErrorKind, Read as _};
use std::os::unix::process::ExitStatusExt as _;
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::fs::OFlags;
use rustix::io::Errno;
use tern_ipc::local::{self, Ending, Output};
use tern_ipc::{Deliver, FrameBuffer, Hello, Outcome, Report};
use tern_log::Event;

use crate::start::{self, Ctx, Running, Via};
use crate::workers::Pool;
use crate::{LspawnExit, MAX_CONCURRENCY, PROG};

/// How often children are checked for an exit when nothing else happens
/// (a child can exit while a grandchild still holds its output pipe).
const REAP_TICK: Duration = Duration::from_secs(1);
/// How soon to look again at a child whose output reached end of file but
/// which has not been reaped yet (it is exiting).
const EXIT_TICK: Duration = Duration::from_millis(5);
/// Largest number of bytes read from one pipe in one go.
const READ_CHUNK: usize = 16 * 1024;
/// Most bytes read from a finished child's pipe after its exit (a
/// grandchild may keep writing).
const FINAL_DRAIN: usize = 1 << 20;

fn status_name(o: Outcome) -> &'static str {
    match o {
        Outcome::Delivered => "delivered",
        Outcome::Deferred => "deferred",
        Outcome::Failed => "failed",
    }
}

/// Which delivery a report is about.
struct Who<'a> {
    slot: u32,
    id: u64,
    rcpt: &'a [u8],
    uid: Option<u32>,
}

struct Loop<'a> {
    ctx: &'a Ctx,
    running: Vec<Running>,
    pool: Pool,
    frames: FrameBuffer,
    input_open: bool,
    protocol_error: bool,
    report_failed: bool,
}

impl Loop<'_> {
    fn report(&mut self, who: Who<'_>, outcome: Outcome, text: &[u8], ms: u128) {
        let Who {
            slot,
            id,
            rcpt,
            uid,
        } = who;
        let mut ev = Event::new(PROG, "delivery_end")
            .num("qid", id)
            .num("slot", slot)
            .field("rcpt", rcpt);
        if let Some(u) = uid {
            ev = ev.num("uid", u);
        }
        ev.field("status", status_name(outcome))
            .num("ms", ms)
            .field("reason", text)
            .emit();
        let r = Report {
            slot,
            outcome,
            text: text.to_vec(),
        };
        if self.report_failed {
            return;
        }
        if let Err(e) = tern_ipc::write_frame(&mut std::io::stdout().lock(), &r.encode()) {
            Event::new(PROG, "report_failed")
                .field("reason", e.to_string())
                .emit();
            self.report_failed = true;
        }
    }

    fn fail_protocol(&mut self, hint: &str) {
        Event::new(PROG, "protocol_error")
            .field("reason", hint)
            .num("running", self.running.len())
            .emit();
        self.protocol_error = true;
        self.input_open = false;
    }

    fn deliver(&mut self, d: Deliver) {
        if self.running.iter().any(|r| r.slot == d.slot) {
            return self.fail_protocol("request for a slot that is in use");
        }
        if self.running.len() >= MAX_CONCURRENCY as usize {
            return self.fail_protocol("more requests than the announced concurrency");
        }
        let started =
            start::prepare(self.ctx, &d).and_then(|p| match self.pool.take(self.ctx, p) {
                Ok(r) => Ok(r),
                Err(p) => start::spawn(self.ctx, *p),
            });
        match started {
            Ok(r) => {
                let (pid, how) = match &r.via {
                    Via::Process { child, .. } => (child.id(), "process"),
                    Via::Worker(pid) => (*pid, "worker"),
                };
                Event::new(PROG, "delivery_start")
                    .num("qid", r.id)
                    .num("slot", r.slot)
                    .field("rcpt", &r.rcpt)
                    .num("uid", r.uid)
                    .num("pid", pid)
                    .field("via", how)
                    .emit();
                self.running.push(r);
            }
            Err(refusal) => {
                let who = Who {
                    slot: d.slot,
                    id: d.id,
                    rcpt: &d.recipient,
                    uid: refusal.uid,
                };
                if let Some(detail) = &refusal.detail {
                    Event::new(PROG, "delivery_refused")
                        .num("qid", d.id)
                        .num("slot", d.slot)
                        .field("rcpt", &d.recipient)
                        .field("reason", detail)
                        .emit();
                }
                self.report(who, refusal.outcome, refusal.text.as_bytes(), 0);
            }
        }
    }

    /// Reads what fd 0 has; handles every whole frame.
    fn read_input(&mut self) {
        let fd0 = rustix::stdio::stdin();
        let mut buf = [0u8; READ_CHUNK];
        loop {
            match rustix::io::read(fd0, &mut buf) {
                Ok(0) => {
                    self.input_open = false;
                    break;
                }
                Ok(n) => self.frames.extend(&buf[..n]),
                Err(Errno::INTR) => continue,
                Err(Errno::AGAIN) => break,
                Err(e) => {
                    self.fail_protocol(&format!("cannot read requests: {e}"));
                    break;
                }
            }
        }
        while !self.protocol_error {
            match self.frames.next_frame() {
                Ok(Some(frame)) => match Deliver::decode(&frame) {
                    Ok(d) => self.deliver(d),
                    Err(e) => self.fail_protocol(&e.to_string()),
                },
                Ok(None) => break,
                Err(e) => self.fail_protocol(&e.to_string()),
            }
        }
        // Every whole frame is handled; what is left at end of input is a
        // torn frame.
        if !self.input_open && !self.protocol_error && self.frames.is_partial() {
            self.fail_protocol("input ended inside a frame");
        }
    }

    /// Finishes delivery `i`, whose child has ended.
    fn finish(&mut self, i: usize, status: std::process::ExitStatus) {
        let ending = if let Some(sig) = status.signal() {
            Ending::Signaled(sig)
        } else {
            Ending::Exited(status.code().unwrap_or(-1))
        };
        self.finish_with(i, ending, None);
    }

    /// Finishes delivery `i`: its tern-local ended so (a worker's text
    /// comes with its result).
    fn finish_with(&mut self, i: usize, ending: Ending, text: Option<&[u8]>) {
        let mut r = self.running.swap_remove(i);
        if let Via::Process { out, .. } = &mut r.via
            && let Some(out) = out.take()
        {
            drain(&out, &mut r.output, FINAL_DRAIN);
        }
        if let Some(t) = text {
            r.output.push(t);
        }
        let ending = if r.timed_out {
            Ending::TimedOut(r.timeout_secs)
        } else {
            ending
        };
        let (outcome, text) = local::report(ending, &r.output.text());
        let ms = r.started.elapsed().as_millis();
        let who = Who {
            slot: r.slot,
            id: r.id,
            rcpt: &r.rcpt,
            uid: Some(r.uid),
        };
        self.report(who, outcome, &text, ms);
    }

    /// Reaps exited children and kills those past their deadline.
    fn check_children(&mut self) {
        let now = Instant::now();
        let mut i = 0;
        while i < self.running.len() {
            let r = &mut self.running[i];
            let pid = match &mut r.via {
                Via::Process { child, .. } => {
                    match child.try_wait() {
                        Ok(Some(status)) => {
                            self.finish(i, status);
                            continue;
                        }
                        Ok(None) => {}
                        Err(e) => {
                            // Only ECHILD is possible, and only after a bug.
                            Event::new(PROG, "wait_failed")
                                .num("pid", child.id())
                                .field("reason", e.to_string())
                                .emit();
                        }
                    }
                    child.id()
                }
                Via::Worker(pid) => *pid,
            };
            if !r.timed_out && now >= r.deadline {
                r.timed_out = true;
                match r.via {
                    Via::Process { .. } => {
                        let pgid = rustix::process::Pid::from_raw(pid as i32)
                            .expect("a child's pid is positive");
                        let _ = rustix::process::kill_process_group(
                            pgid,
                            rustix::process::Signal::KILL,
                        );
                    }
                    Via::Worker(pid) => self.pool.kill(pid),
                }
                let r = &self.running[i];
                Event::new(PROG, "delivery_timeout")
                    .num("qid", r.id)
                    .num("slot", r.slot)
                    .num("pid", pid)
                    .num("secs", r.timeout_secs)
                    .emit();
            }
            i += 1;
        }
        self.pool.tick();
    }

    fn poll_timeout(&self) -> Duration {
        let now = Instant::now();
        let mut t = REAP_TICK;
        for r in &self.running {
            let ended = matches!(r.via, Via::Process { out: None, .. });
            if ended || r.timed_out {
                t = t.min(EXIT_TICK);
            } else {
                t = t.min(r.deadline.saturating_duration_since(now));
            }
        }
        if self.pool.has_leaving() {
            t = t.min(EXIT_TICK * 20);
        }
        t
    }
}

/// Reads what `out` has (up to `limit` bytes) into `output`. Returns true
/// at end of file or on an error (the pipe is done).
fn drain(out: &std::io::PipeReader, output: &mut Output, limit: usize) -> bool {
    let mut buf = [0u8; READ_CHUNK];
    let mut read = 0;
    let mut reader = out;
    while read < limit {
        match reader.read(&mut buf) {
            Ok(0) => return true,
            Ok(n) => {
                output.push(&buf[..n]);
                read += n;
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
            Err(_) => return true,
        }
    }
    false
}

/// Runs until end of input and every delivery is reported.
pub(crate) fn run(ctx: &Ctx) -> LspawnExit {
    let fd0 = rustix::stdio::stdin();
    if let Err(e) = rustix::fs::fcntl_getfl(fd0)
        .and_then(|f| rustix::fs::fcntl_setfl(fd0, f | OFlags::NONBLOCK))
    {
        Event::new(PROG, "startup_failed")
            .field("reason", format!("fd 0: {e}"))
            .emit();
        return LspawnExit::Trouble;
    }
    let hello = Hello {
        max_concurrency: MAX_CONCURRENCY,
    };
    if let Err(e) = tern_ipc::write_frame(&mut std::io::stdout().lock(), &hello.encode()) {
        Event::new(PROG, "report_failed")
            .field("reason", e.to_string())
            .emit();
        return LspawnExit::Trouble;
    }
    let mut l = Loop {
        ctx,
        running: Vec::new(),
        pool: Pool::default(),
        frames: FrameBuffer::default(),
        input_open: true,
        protocol_error: false,
        report_failed: false,
    };
    while l.input_open || !l.running.is_empty() {
        let timeout = l.poll_timeout();
        let ts = Timespec {
            tv_sec: timeout.as_secs() as i64,
            tv_nsec: i64::from(timeout.subsec_nanos()),
        };
        let (input_ready, ready, results): (bool, Vec<usize>, Vec<u32>) = {
            let mut fds = Vec::with_capacity(l.running.len() + 1);
            if l.input_open {
                fds.push(PollFd::new(&fd0, PollFlags::IN));
            }
            let mut which = Vec::with_capacity(l.running.len());
            for (i, r) in l.running.iter().enumerate() {
                if let Via::Process { out: Some(out), .. } = &r.via {
                    fds.push(PollFd::new(out, PollFlags::IN));
                    which.push(i);
                }
            }
            let workers: Vec<u32> = l.pool.busy().map(|(pid, _)| pid).collect();
            for (_, ctl) in l.pool.busy() {
                fds.push(PollFd::new(ctl, PollFlags::IN));
            }
            match rustix::event::poll(&mut fds, Some(&ts)) {
                Ok(_) | Err(Errno::INTR) => {}
                Err(e) => {
                    Event::new(PROG, "poll_failed")
                        .field("reason", e.to_string())
                        .emit();
                    std::thread::sleep(EXIT_TICK);
                }
            }
            let mut fds = fds.iter();
            let input_ready = l.input_open && fds.next().is_some_and(|f| !f.revents().is_empty());
            let ready = which
                .into_iter()
                .zip(fds.by_ref())
                .filter(|(_, f)| !f.revents().is_empty())
                .map(|(i, _)| i)
                .collect();
            let results = workers
                .into_iter()
                .zip(fds)
                .filter(|(_, f)| !f.revents().is_empty())
                .map(|(pid, _)| pid)
                .collect();
            (input_ready, ready, results)
        };
        for i in ready {
            let r = &mut l.running[i];
            if let Via::Process { out, .. } = &mut r.via
                && let Some(pipe) = out
                && drain(pipe, &mut r.output, READ_CHUNK * 4)
            {
                *out = None;
            }
        }
        for pid in results {
            let Some(result) = l.pool.result(pid) else {
                continue;
            };
            if let Some(i) = l
                .running
                .iter()
                .position(|r| matches!(r.via, Via::Worker(p) if p == pid))
            {
                l.finish_with(i, result.ending, Some(&result.text));
            }
        }
        if input_ready {
            l.read_input();
        }
        l.check_children();
    }
    l.pool.close();
    if l.protocol_error || l.report_failed {
        LspawnExit::Trouble
    } else {
        Event::new(PROG, "finished").emit();
        LspawnExit::Finished
    }
}
