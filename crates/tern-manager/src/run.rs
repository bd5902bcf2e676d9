//! The event loop: signals, the trigger, spawner reports, one journal
//! commit per round.

use crate::Manager;
use crate::common::*;
use crate::signals::{block_signals, signal_set};
use crate::spawner::*;
use nix::sys::signal::Signal;
use nix::sys::signalfd::{SfdFlags, SignalFd};
use rustix::event::{PollFd, PollFlags, Timespec};
use std::fs::File;
use std::io::Read;
use tern_log::Event;
use tern_sched::Rewriter;

impl Manager {
    pub(crate) fn next_wake(&self, now: i64, last_scan: i64) -> i64 {
        let mut t = last_scan + RESCAN_SECS;
        for ci in 0..2 {
            if self.spawners[ci].is_some()
                && let Some(&(due, _, _)) = self.ready[ci].first()
            {
                t = t.min(due);
            }
        }
        if !self.finished.is_empty() {
            t = t.min(self.finish_retry_at.max(now));
        }
        t.min(self.metrics.last_write + crate::metrics::METRICS_SECS)
    }

    pub(crate) fn idle(&self, now: i64) -> bool {
        self.inflight.is_empty()
            && self.not_taken.is_empty()
            && (self.finished.is_empty() || self.finish_retry_at > now)
            && (0..2).all(|ci| {
                self.spawners[ci].is_none()
                    || self.ready[ci].first().is_none_or(|&(due, _, _)| due > now)
            })
    }

    pub(crate) fn status_line(&self) {
        let busy = |ci: usize| {
            self.spawners[ci]
                .as_ref()
                .map(|s| (s.slots.len() - s.free.len(), s.slots.len()))
                .unwrap_or((0, 0))
        };
        let (l, lmax) = busy(0);
        let (r, rmax) = busy(1);
        Event::new(PROG, "status")
            .field("local", format!("{l}/{lmax}"))
            .field("remote", format!("{r}/{rmax}"))
            .num("messages", self.state.messages.len())
            .emit();
    }

    /// Writes the metrics file at `path` instead of
    /// `queue/state/metrics.prom` (`control/metricsfile`).
    pub fn metrics_file(mut self, path: std::path::PathBuf) -> Manager {
        self.metrics.path = path;
        self
    }

    /// Makes every pending recipient due when [`Manager::run`] starts
    /// (`tern-send --flush`), instead of at its scheduled retry.
    pub fn flush_at_start(mut self) -> Manager {
        self.flush_at_start = true;
        self
    }

    /// Runs until SIGTERM (or, with `--once`, until nothing is due).
    pub fn run(mut self, trigger: Option<File>, reload: impl Fn() -> Option<Rewriter>) -> Exit {
        let mask = signal_set();
        if let Err(e) = block_signals() {
            return fatal(e);
        }
        let sigfd =
            match SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC) {
                Ok(s) => s,
                Err(e) => return fatal(format!("signalfd: {e}")),
            };
        let mut last_scan = tern_date::now();
        if let Err(e) = self.scan_new() {
            return e;
        }
        self.listen_control();
        if self.flush_at_start {
            Event::new(PROG, "flush").emit();
            self.flush_all(tern_date::now());
        }
        self.status_line();
        loop {
            let now = tern_date::now();
            match self.finish(now) {
                Ok(true) if !self.stopping => {
                    // A bounce was queued: pick it up now (its wake-up may
                    // come after we decide to sleep).
                    if let Err(e) = self.scan_new() {
                        return e;
                    }
                }
                Ok(true) => {}
                Ok(false) => {}
                Err(e) => return e,
            }
            self.start_deliveries(now);
            for ci in 0..2 {
                if let Some(Err(e)) = self.spawners[ci].as_mut().map(Spawner::flush) {
                    self.lose_spawner(ci, e);
                }
            }
            if self.stopping && self.inflight.is_empty() {
                break;
            }
            // A fresh clock: a message picked up in this round (a bounce
            // queued a moment ago) is due at its birth, which can be a
            // second later than `now`; with the round's `now` it looked
            // not yet due and `--once` left it behind (seen under load).
            if self.once && self.idle(tern_date::now()) {
                break;
            }
            let wake = self.next_wake(now, last_scan);
            let secs = (wake - now).clamp(0, 3600);
            let ts = Timespec {
                tv_sec: secs,
                tv_nsec: if secs == 0 { 50_000_000 } else { 0 },
            };
            let mut fds: Vec<PollFd<'_>> = Vec::with_capacity(6);
            fds.push(PollFd::new(&sigfd, PollFlags::IN));
            let trig_at = trigger.as_ref().map(|t| {
                fds.push(PollFd::new(t, PollFlags::IN));
                fds.len() - 1
            });
            let ctl_at = self.control.as_ref().map(|l| {
                fds.push(PollFd::new(l, PollFlags::IN));
                fds.len() - 1
            });
            let mut sp_at = [None, None];
            for (ci, sp) in self.spawners.iter().enumerate() {
                if let Some(sp) = sp {
                    let mut flags = PollFlags::IN;
                    fds.push(PollFd::new(&sp.from, flags));
                    sp_at[ci] = Some(fds.len() - 1);
                    if !sp.out.is_empty() {
                        flags = PollFlags::OUT;
                        fds.push(PollFd::new(&sp.to, flags));
                    }
                }
            }
            match rustix::event::poll(&mut fds, Some(&ts)) {
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return fatal(format!("poll: {e}")),
            }
            let sig_ready = !fds[0].revents().is_empty();
            let trig_ready = trig_at.is_some_and(|i| !fds[i].revents().is_empty());
            let ctl_ready = ctl_at.is_some_and(|i| !fds[i].revents().is_empty());
            let sp_ready: Vec<bool> = sp_at
                .iter()
                .map(|a| a.is_some_and(|i| !fds[i].revents().is_empty()))
                .collect();
            drop(fds);

            if sig_ready {
                while let Ok(Some(info)) = sigfd.read_signal() {
                    match Signal::try_from(info.ssi_signo as i32) {
                        Ok(Signal::SIGTERM) | Ok(Signal::SIGINT) => {
                            if !self.stopping {
                                Event::new(PROG, "stopping")
                                    .num("running", self.inflight.len())
                                    .emit();
                            }
                            self.stopping = true;
                        }
                        Ok(Signal::SIGALRM) => {
                            Event::new(PROG, "flush").emit();
                            self.flush_all(tern_date::now());
                            last_scan = 0;
                        }
                        Ok(Signal::SIGHUP) => match reload() {
                            Some(r) => {
                                self.cfg.rewriter = r;
                                Event::new(PROG, "reload").emit();
                            }
                            None => Event::new(PROG, "warning")
                                .field(
                                    "reason",
                                    "reload failed; keeping the old locals/virtualdomains",
                                )
                                .emit(),
                        },
                        _ => {}
                    }
                }
            }
            if let (true, Some(t)) = (trig_ready, trigger.as_ref()) {
                let mut buf = [0u8; 512];
                let mut t = t;
                while matches!(t.read(&mut buf), Ok(n) if n > 0) {}
                last_scan = 0;
            }
            let now = tern_date::now();
            if ctl_ready && let Err(e) = self.serve_control() {
                self.close_control();
                return e;
            }
            for (ci, ready) in sp_ready.iter().enumerate() {
                if !ready {
                    continue;
                }
                let Some((reports, freed, lost)) =
                    self.spawners[ci].as_mut().map(Spawner::read_reports)
                else {
                    continue;
                };
                for res in reports {
                    self.apply_result(res, now);
                }
                for d in freed {
                    if let Some(n) = self.domain_busy.get_mut(&d) {
                        *n -= 1;
                        if *n == 0 {
                            self.domain_busy.remove(&d);
                        }
                    }
                }
                if let Some(e) = lost {
                    self.lose_spawner(ci, e);
                }
            }
            // One flush for every result that arrived in this round.
            if let Err(e) = self.journal.commit() {
                return fatal(e);
            }
            if self.journal.written_since_compaction > COMPACT_AFTER
                && let Err(e) = self.journal.compact(&self.state)
            {
                Event::new(PROG, "warning")
                    .field("reason", format!("journal compaction failed: {e}"))
                    .emit();
            }
            self.write_metrics(now, false);
            if now >= last_scan + RESCAN_SECS && !self.stopping {
                last_scan = now;
                if let Err(e) = self.scan_new() {
                    return e;
                }
            }
        }
        self.close_control();
        if let Err(e) = self.journal.commit() {
            return fatal(e);
        }
        self.write_metrics(tern_date::now(), true);
        self.status_line();
        if let Some(reason) = self.trouble.take() {
            return Exit::Trouble(reason);
        }
        Event::new(PROG, "exiting").emit();
        Exit::Done
    }
}
