//! NAME
//!     tern-send - the Tern queue manager
//!
//! SYNOPSIS
//!     tern-send [--once]   (started by tern-start with fds 3-6, 7-8)
//!
//! DESCRIPTION
//!     Picks up committed messages from `queue/new/` (at once on a wake-up
//!     through `queue/lock/trigger`, and on a periodic rescan), records them
//!     in its journal, has `tern-clean` move them to `queue/cur/`, classifies
//!     each recipient as local or remote (`locals`, `virtualdomains`,
//!     `percenthack`, `envnoathost`), runs deliveries through the spawners
//!     within `concurrencylocal`/`concurrencyremote`, retries temporary
//!     failures on a growing schedule until `queuelifetime`, sends one RFC
//!     3464 bounce per message for its failed recipients, and has
//!     `tern-clean` remove finished messages. With `--once` it stops when
//!     nothing is due and no delivery is running (the cron queue runner).
//!     Descriptors: 3 requests to tern-lspawn, 4 its reports, 5 requests to
//!     tern-clean, 6 its replies; 7 and 8 the same for tern-rspawn when
//!     present. Signals: ALRM retries everything now, HUP rereads `locals`
//!     and `virtualdomains`, TERM/INT stop after running deliveries end.
//!     The postmaster's queue operations (ternctl delete, bounce, hold,
//!     release) arrive on the socket `queue/state/control` (root and
//!     terns only) and are journaled before they are answered. Metrics
//!     (OpenMetrics text) go to `queue/state/metrics.prom` or
//!     `control/metricsfile` every 5 seconds and on exit.
//!
//! SECURITY
//!     Runs as `terns`. Reads messages (group access) but never writes them;
//!     writes only `queue/state/`. Treats spawner reports as untrusted
//!     (bounded frames, scrubbed text).
//!
//! EXIT CODES
//!     0 stopped cleanly; 111 trouble (lost spawner or cleaner, journal not
//!     writable, another manager running, bad configuration).
//!
//! SEE ALSO
//!     docs/man/tern-send.8.md, tern-start(8), docs/queue.md
#![forbid(unsafe_code)]
#![deny(clippy::print_stdout)]

use std::fs::File;
use std::io::Write as _;
use std::process::ExitCode;
use tern_control::{Control, Home};
use tern_log::Event;
use tern_manager::{Cleaner, Config, Exit, Manager, PROG, Spawner, bounce};
use tern_sched::Rewriter;
use tern_spool::state::{Channel, Journal};

/// How long a starting daemon waits for a manager lock someone holds.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

fn fail(reason: impl std::fmt::Display) -> ExitCode {
    Event::new(PROG, "alert")
        .field("reason", reason.to_string())
        .emit();
    ExitCode::from(111)
}

fn rewriter(control: &Control) -> Result<Rewriter, tern_control::Error> {
    tern_manager::ops::rewriter(control)
}

fn config(control: &Control) -> Result<Config, tern_control::Error> {
    let me = control.me()?.to_string();
    Ok(Config {
        concurrency: [
            control.concurrencylocal()? as usize,
            control.concurrencyremote()? as usize,
        ],
        per_domain: control.concurrencydomain()? as usize,
        queuelifetime: control.queuelifetime()? as i64,
        rewriter: rewriter(control)?,
        bounce: bounce::BounceConfig {
            from: format!("{}@{}", control.bouncefrom()?, control.bouncehost()?),
            double_to: format!(
                "{}@{}",
                control.doublebounceto()?,
                control.doublebouncehost()?
            ),
            me,
            max_body: bounce::DEFAULT_MAX_BODY,
        },
    })
}

fn file(fd: i32) -> Option<File> {
    tern_sys::spawn::inherited_fd(fd).map(File::from)
}

fn main() -> ExitCode {
    // Claim the inherited descriptors before anything else can be opened
    // under their numbers.
    let inherited: Vec<Option<File>> = (3..=8).map(file).collect();
    tern_sys::signals::reset();
    if let Err(e) = tern_manager::block_signals() {
        return fail(e);
    }
    tern_log::install_panic_hook(PROG, 111);
    let mut once = false;
    let mut flush = false;
    for a in std::env::args().skip(1) {
        match a.as_str() {
            "--once" => once = true,
            "--flush" => flush = true,
            "--help" | "-h" => {
                let _ = std::io::stdout().write_all(
                    b"usage: tern-send [--once] [--flush]\n\
                      The queue manager; started by tern-start (fds 3-6: tern-lspawn and\n\
                      tern-clean pipes; 7-8: tern-rspawn). --once: stop when nothing is due.\n\
                      --flush: everything queued is due now, whatever its retry schedule.\n\
                      See tern-send(8).\n",
                );
                return ExitCode::SUCCESS;
            }
            other => return fail(format!("unknown argument {other:?}; see tern-send --help")),
        }
    }
    let home = match Home::from_env() {
        Ok(h) => h,
        Err(e) => return fail(e),
    };
    let control = Control::new(&home);
    let cfg = match config(&control) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let metrics_file = match control.metricsfile() {
        Ok(lines) => match lines.first() {
            None => None,
            Some(p) if std::path::Path::new(p).is_absolute() => Some(std::path::PathBuf::from(p)),
            Some(p) => {
                return fail(format!(
                    "control/metricsfile: {p:?} is not an absolute path"
                ));
            }
        },
        Err(e) => return fail(e),
    };
    let queue = match tern_spool::Queue::open(&home.queue_dir()) {
        Ok(q) => q,
        Err(e) => return fail(e),
    };
    let state_dir = home.queue_dir().join(tern_spool::layout::STATE_DIR);
    if let Err(e) = std::fs::create_dir_all(&state_dir) {
        return fail(format!("cannot create {}: {e}", state_dir.display()));
    }

    // One manager per queue.
    let lock = match std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(state_dir.join("lock"))
    {
        Ok(f) => f,
        Err(e) => return fail(format!("cannot open the manager lock: {e}")),
    };
    // `ternctl delete/hold/...` holds the lock for the seconds an offline
    // operation takes: a daemon starting then waits for it (up to
    // LOCK_WAIT) instead of exiting and taking tern-start with it; another
    // tern-send holds it for good.
    let locked = |l: &File| {
        rustix::fs::flock(l, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_ok()
    };
    let mut have_lock = locked(&lock);
    if !have_lock && !once {
        Event::new(PROG, "waiting_for_lock")
            .field(
                "reason",
                "the manager lock is held (ternctl at work, or another tern-send)",
            )
            .emit();
        let until = std::time::Instant::now() + LOCK_WAIT;
        while !have_lock && std::time::Instant::now() < until {
            std::thread::sleep(std::time::Duration::from_millis(100));
            have_lock = locked(&lock);
        }
    }
    if !have_lock {
        if once {
            // A daemon is running: ask it to retry everything now instead.
            let pid = std::fs::read_to_string(state_dir.join("pid")).ok();
            let pid = pid.and_then(|p| p.trim().parse::<i32>().ok());
            if let Some(pid) = pid {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGALRM,
                );
            }
            Event::new(PROG, "flush_running").emit();
            return ExitCode::SUCCESS;
        }
        return fail("another tern-send is running on this queue");
    }
    let _ = std::fs::write(state_dir.join("pid"), format!("{}\n", std::process::id()));

    let (journal, state, discarded) = match Journal::open(&home.queue_dir()) {
        Ok(j) => j,
        Err(e) => return fail(e),
    };
    if discarded > 0 {
        Event::new(PROG, "journal_tail_discarded")
            .num("bytes", discarded)
            .emit();
    }
    let mut inherited = inherited.into_iter();
    let mut next = || inherited.next().flatten();
    let (Some(l_to), Some(l_from), Some(c_to), Some(c_from)) = (next(), next(), next(), next())
    else {
        return fail(
            "descriptors 3-6 (tern-lspawn and tern-clean pipes) are not open; start tern-send through tern-start",
        );
    };
    let local = match Spawner::connect(Channel::Local, l_to, l_from, cfg.concurrency[0]) {
        Ok(s) => Some(s),
        Err(e) => return fail(e),
    };
    let remote = match (next(), next()) {
        (Some(to), Some(from)) => {
            match Spawner::connect(Channel::Remote, to, from, cfg.concurrency[1]) {
                Ok(s) => Some(s),
                Err(e) => return fail(e),
            }
        }
        _ => None,
    };
    let cleaner = Cleaner {
        to: c_to,
        from: c_from,
    };
    let trigger = tern_manager::open_trigger(&queue);
    let manager = match Manager::new(
        home.clone(),
        queue,
        journal,
        state,
        cfg,
        local,
        remote,
        cleaner,
        once,
    ) {
        Ok(m) => {
            let m = match metrics_file {
                Some(p) => m.metrics_file(p),
                None => m,
            };
            if flush { m.flush_at_start() } else { m }
        }
        Err(Exit::Trouble(e)) => return fail(e),
        Err(Exit::Done) => return ExitCode::SUCCESS,
    };
    let reload_home = home.clone();
    let result = manager.run(trigger, move || rewriter(&Control::new(&reload_home)).ok());
    let _ = std::fs::remove_file(state_dir.join("pid"));
    match result {
        Exit::Done => ExitCode::SUCCESS,
        Exit::Trouble(e) => fail(e),
    }
}
