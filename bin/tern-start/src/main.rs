//! NAME
//!     tern-start - start the Tern queue manager and its helpers
//!
//! SYNOPSIS
//!     tern-start [--once [--flush]] [--logger PROGRAM [ARG...]]
//!
//! DESCRIPTION
//!     Creates the pipes and starts `tern-lspawn`, `tern-clean`, `tern-rspawn`
//!     (when installed) and `tern-send`, wiring them as tern-send(8)
//!     describes, then supervises them: SIGTERM, SIGINT, SIGHUP and SIGALRM
//!     are passed on to `tern-send`; when `tern-send` ends, the helpers see
//!     end-of-file and end too, and `tern-start` exits with `tern-send`'s
//!     status. If a helper dies, `tern-send` notices and stops, so a
//!     supervisor (systemd, runit, daemontools) restarts the whole group.
//!     `--once` is the cron-driven queue runner: everything that is due is
//!     delivered, `tern-start` waits for those deliveries, and exits; nothing
//!     keeps running. If a long-running manager already runs, it is asked to
//!     retry now instead. `--flush` (with `--once`; `sendmail -q`) makes
//!     everything queued due now, whatever its retry schedule.
//!     `--logger PROGRAM ARG...` starts PROGRAM first with
//!     a pipe as its stdin and sends every program's log lines (stderr) into
//!     it; it is the last to stop.
//!     In a single-user instance (`$TERN_HOME/single-user` exists) every
//!     program runs as the invoking user. A system instance must be started
//!     by root: tern-send runs as `terns`, tern-clean as `ternq`, tern-rspawn
//!     as `ternr`, the logger as `ternl`, and tern-lspawn stays root to
//!     become each recipient.
//!
//! SECURITY
//!     Every descriptor it inherited above 2 is marked close-on-exec first,
//!     so nothing its caller left open reaches a child.
//!     Every child starts in a new session (no controlling terminal) and
//!     gets none of tern-start's fds 0, 1, 2: their stderr is the logger's
//!     pipe or a pipe tern-start copies to its own stderr (the logger's
//!     stdout and stderr too), so no process of another uid holds the
//!     terminal root started it from.
//!     Each child drops root before exec through `tern_sys::privilege`
//!     (no supplementary groups, gid, uid, then a check that root cannot be
//!     regained); a failed check fails the start. tern-start stays root to
//!     supervise and parses nothing but the manager's pid file (`--once`),
//!     whose pid it signals only when that process is tern-send running as
//!     `terns`.
//!
//! EXIT CODES
//!     0 tern-send stopped cleanly; 111 trouble (could not start a program,
//!     a program died, tern-send reported trouble).
//!
//! SEE ALSO
//!     docs/man/tern-start.8.md, tern-send(8), tern-lspawn(8), tern-clean(8)
#![forbid(unsafe_code)]
#![deny(clippy::print_stdout)]

mod relay;

use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill, sigprocmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::unistd::Pid;
use rustix::event::{PollFd, PollFlags, Timespec};
use std::io::Write as _;
use std::os::fd::{AsFd as _, OwnedFd};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};
use tern_control::Home;
use tern_log::Event;
use tern_sys::privilege::Credentials;

const PROG: &str = "tern-start";

fn fail(reason: impl std::fmt::Display) -> ExitCode {
    Event::new(PROG, "alert")
        .field("reason", reason.to_string())
        .emit();
    ExitCode::from(111)
}

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let (r, w) = std::io::pipe()?;
    Ok((OwnedFd::from(r), OwnedFd::from(w)))
}

struct Started {
    name: &'static str,
    child: Child,
}

/// The credentials each program runs as; `None` = as the caller (a
/// single-user instance).
#[derive(Default)]
struct Ids {
    send: Option<Credentials>,
    clean: Option<Credentials>,
    remote: Option<Credentials>,
    logger: Option<Credentials>,
    verify: Option<Credentials>,
}

impl Ids {
    /// The system instance's users: `terns` (tern-send), `ternq`
    /// (tern-clean), `ternr` (tern-rspawn), and `ternl` (the logger, needed
    /// only when there is one). tern-lspawn stays root: it must become each
    /// recipient. Every program but tern-send also gets `no_new_privs`:
    /// only tern-send runs the setuid tern-queue (for bounces).
    fn system(with_logger: bool, with_verify: bool) -> Result<Ids, String> {
        let user = |name: &str| -> Result<Credentials, String> {
            Credentials::for_user(name).map_err(|e| match e {
                tern_sys::privilege::UserError::Missing => format!(
                    "user {name} does not exist: a system instance needs the Tern users (scripts/install, docs/install.md)"
                ),
                e => format!("user {name}: {e}; refusing"),
            })
        };
        Ok(Ids {
            send: Some(user("terns")?),
            clean: Some(user("ternq")?.with_no_new_privs()),
            remote: Some(user("ternr")?.with_no_new_privs()),
            logger: if with_logger {
                Some(user("ternl")?.with_no_new_privs())
            } else {
                None
            },
            verify: if with_verify {
                Some(user("ternv")?.with_no_new_privs())
            } else {
                None
            },
        })
    }
}

/// Runs `c` as `ids`: in the child, before exec, a new session (no
/// controlling terminal), no supplementary groups, then the gid, then the
/// uid, then a check that root cannot be regained (tern_sys::privilege). A
/// failed check fails the spawn. Without `ids` (a single-user instance, or
/// tern-lspawn) only the new session.
fn run_as(c: &mut Command, ids: Option<Credentials>) {
    match ids {
        Some(creds) => tern_sys::privilege::run_as(c, creds),
        None => tern_sys::spawn::new_session(c),
    }
}

/// Where children's stderr goes: `None` = tern-start's own stderr, which is
/// then the logger's pipe; `Some` = a relay pipe tern-start copies to its
/// own stderr.
fn child_stderr(relayed: &Option<OwnedFd>) -> Result<Stdio, String> {
    match relayed {
        Some(w) => w
            .try_clone()
            .map(Stdio::from)
            .map_err(|e| format!("dup: {e}")),
        None => Ok(Stdio::inherit()),
    }
}

/// True when `pid` is a process named `tern-send` whose real uid is `uid`
/// (any uid when `None`), from `/proc/PID/comm` and `/proc/PID/status`.
fn is_manager(pid: i32, uid: Option<u32>) -> bool {
    if pid <= 0 {
        return false;
    }
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    if comm.trim_end() != "tern-send" {
        return false;
    }
    let Some(want) = uid else {
        return true;
    };
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().next())
                .and_then(|u| u.parse::<u32>().ok())
        })
        == Some(want)
}

/// Opens a file of `queue/state/` (written by tern-send, `terns` in a
/// system instance) for reading as root: no component below `queue/`
/// through a symbolic link (`ternq` owns `queue/` and could put a link in
/// place of `state/`), without blocking on a FIFO or taking a terminal,
/// only a regular file of the directory's owner
/// (`tern_spool::layout::open_below`). A link planted there must not make
/// root open a device (a watchdog, a tape), lock a file elsewhere or hang
/// on a FIFO.
fn open_state_file(queue_dir: &std::path::Path, name: &str) -> Option<std::fs::File> {
    let rel = std::path::Path::new(tern_spool::layout::STATE_DIR).join(name);
    match tern_spool::layout::open_below(queue_dir, &rel, tern_spool::layout::Last::File) {
        Ok(fd) => Some(fd.into()),
        Err(e) => {
            if tern_spool::layout::refusal(&e).is_some() {
                Event::new(PROG, "state_file_refused")
                    .field("reason", e.to_string())
                    .emit();
            }
            None
        }
    }
}

/// The reason for a failed spawn, with the privilege check's own words.
fn spawn_error(e: &std::io::Error) -> String {
    tern_sys::privilege::spawn_error_text(e)
}

fn main() -> ExitCode {
    tern_sys::signals::reset();
    tern_log::install_panic_hook(PROG, 111);
    // Started by root (a shell, cron, a supervisor): nothing it left open
    // may reach the programs started under lower uids.
    if let Err(e) = tern_sys::spawn::cloexec_inherited() {
        return fail(format!(
            "cannot mark inherited descriptors close-on-exec: {e}"
        ));
    }
    let mut once = false;
    let mut flush = false;
    let mut logger: Vec<String> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--once" => once = true,
            "--flush" => flush = true,
            "--logger" => {
                logger = args.by_ref().collect();
                if logger.is_empty() {
                    return fail("--logger needs a program");
                }
            }
            "--help" | "-h" => {
                let _ = std::io::stdout().write_all(
                    b"usage: tern-start [--once [--flush]] [--logger PROGRAM [ARG...]]\n\
                      Starts tern-send with tern-lspawn, tern-clean (and tern-rspawn when\n\
                      installed) for the instance in TERN_HOME, and supervises them.\n\
                      --once: deliver everything that is due, wait for it, and exit (cron).\n\
                      --flush: with --once, everything queued is due now (sendmail -q).\n\
                      --logger: run PROGRAM with every program's log lines on its stdin.\n\
                      See tern-start(8).\n",
                );
                return ExitCode::SUCCESS;
            }
            other => return fail(format!("unknown argument {other:?}; see tern-start --help")),
        }
    }
    if flush && !once {
        return fail(
            "--flush goes with --once (a long-running manager is flushed with ternctl flush)",
        );
    }
    let home = match Home::from_env() {
        Ok(h) => h,
        Err(e) => return fail(e),
    };
    // The authentication checker runs when checking is configured (and
    // never for --once: only tern-smtpd asks it).
    let verify_on = !once && home.control_dir().join("authcheck").exists();
    // Who runs what. A single-user instance runs everything as the caller;
    // a system instance (no marker) must be started by root and runs each
    // program under its own uid (docs/architecture.md).
    let ids = if home.is_single_user() {
        Ids::default()
    } else {
        if tern_sys::effective_uid() != 0 {
            return fail(format!(
                "{} is a system instance (no {} marker): tern-start must be started by root",
                home.root().display(),
                tern_control::SINGLE_USER_MARKER
            ));
        }
        match Ids::system(!logger.is_empty(), verify_on) {
            Ok(ids) => ids,
            Err(e) => return fail(e),
        }
    };

    // --once while a long-running manager holds the queue: ask it to retry
    // now, and start nothing (the helpers would only see a manager that
    // leaves at once).
    if once {
        let qdir = home.queue_dir();
        if let Some(lock) = open_state_file(&qdir, "lock")
            && rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockShared).is_err()
        {
            let pid = open_state_file(&qdir, "pid")
                .and_then(|f| {
                    let mut text = String::new();
                    std::io::Read::read_to_string(&mut std::io::Read::take(f, 32), &mut text)
                        .ok()?;
                    Some(text)
                })
                .and_then(|p| p.trim().parse::<i32>().ok());
            // The pid file is written by tern-send (terns in a system
            // instance): root signals only a process that is tern-send
            // running as that user, never whatever pid the file names.
            if let Some(pid) = pid
                && is_manager(pid, ids.send.map(|c| c.uid()))
            {
                let _ = kill(Pid::from_raw(pid), Signal::SIGALRM);
            }
            Event::new(PROG, "flush_running")
                .field(
                    "reason",
                    "a queue manager is running; asked it to retry now",
                )
                .emit();
            return ExitCode::SUCCESS;
        }
    }

    // Signals are handled through a signalfd; children start with a clean
    // mask (std resets it in the child).
    let mut mask = SigSet::empty();
    for s in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGALRM,
        Signal::SIGCHLD,
    ] {
        mask.add(s);
    }
    if let Err(e) = sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), None) {
        return fail(format!("sigprocmask: {e}"));
    }
    let sigfd = match SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC) {
        Ok(s) => s,
        Err(e) => return fail(format!("signalfd: {e}")),
    };

    // No child gets our descriptors 0, 1 and 2 (a terminal, when root
    // starts tern-start from a shell): what they write to stderr (and the
    // logger to stdout) goes through pipes that we copy to our own stderr
    // and stdout (docs/man/tern-start.8.md).
    let mut relay = relay::Relay::default();
    let mut relay_pipe = |dest: std::os::fd::BorrowedFd<'_>| {
        relay
            .pipe_to(dest)
            .map_err(|e| format!("cannot make the log pipe: {e}"))
    };

    // The logger, first: every program's stderr (ours included) becomes
    // the pipe to it. Without a logger, children's stderr is a relay pipe.
    let mut logger_child = None;
    let children_err = if logger.is_empty() {
        match relay_pipe(std::io::stderr().as_fd()) {
            Ok(w) => Some(w),
            Err(e) => return fail(e),
        }
    } else {
        let (r, w) = match pipe() {
            Ok(p) => p,
            Err(e) => return fail(format!("pipe: {e}")),
        };
        let (out, err) = match relay_pipe(std::io::stdout().as_fd())
            .and_then(|o| Ok((o, relay_pipe(std::io::stderr().as_fd())?)))
        {
            Ok(p) => p,
            Err(e) => return fail(e),
        };
        let mut c = Command::new(&logger[0]);
        c.args(&logger[1..])
            .stdin(Stdio::from(r))
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err));
        run_as(&mut c, ids.logger);
        match c.spawn() {
            Ok(child) => logger_child = Some(child),
            Err(e) => {
                return fail(format!(
                    "cannot start the logger {}: {}",
                    logger[0],
                    spawn_error(&e)
                ));
            }
        }
        drop(c);
        if let Err(e) = rustix::stdio::dup2_stderr(&w) {
            return fail(format!("cannot send the log to the logger: {e}"));
        }
        None
    };

    if home.is_single_user() && tern_sys::real_uid() == 0 {
        Event::new(PROG, "warning")
            .field(
                "reason",
                "a single-user instance started by root: every delivery, \
                 |program lines included, runs as root",
            )
            .emit();
    }

    let bin = home.bin_dir();
    // TERN_LOCAL_WORKERS=0 (tern-lspawn: a tern-local per delivery) is
    // the one setting passed on.
    let local_workers = std::env::var_os("TERN_LOCAL_WORKERS");
    let env = |c: &mut Command| {
        c.env_clear()
            .env("TERN_HOME", home.root())
            .env("PATH", "/usr/local/bin:/usr/bin:/bin");
        if let Some(v) = &local_workers {
            c.env("TERN_LOCAL_WORKERS", v);
        }
    };
    let mut started: Vec<Started> = Vec::new();
    let stop_all = |started: &mut Vec<Started>| {
        for s in started.iter_mut() {
            let _ = s.child.kill();
            let _ = s.child.wait();
        }
    };
    let spawn_helper = |name: &'static str,
                        as_ids: Option<Credentials>,
                        started: &mut Vec<Started>|
     -> Result<(OwnedFd, OwnedFd), String> {
        let (req_r, req_w) = pipe().map_err(|e| format!("pipe: {e}"))?;
        let (rep_r, rep_w) = pipe().map_err(|e| format!("pipe: {e}"))?;
        let mut c = Command::new(bin.join(name));
        env(&mut c);
        run_as(&mut c, as_ids);
        c.stdin(Stdio::from(req_r))
            .stdout(Stdio::from(rep_w))
            .stderr(child_stderr(&children_err)?);
        let child = c
            .spawn()
            .map_err(|e| format!("cannot start {name}: {}", spawn_error(&e)))?;
        started.push(Started { name, child });
        Ok((req_w, rep_r))
    };
    let (l_to, l_from) = match spawn_helper("tern-lspawn", None, &mut started) {
        Ok(p) => p,
        Err(e) => {
            stop_all(&mut started);
            return fail(e);
        }
    };
    let (c_to, c_from) = match spawn_helper("tern-clean", ids.clean, &mut started) {
        Ok(p) => p,
        Err(e) => {
            stop_all(&mut started);
            return fail(e);
        }
    };
    // tern-rspawn talks to tern-send over one Unix socket (not two pipes):
    // message descriptors travel on it with SCM_RIGHTS, so neither
    // tern-rspawn nor tern-remote ever opens the queue. Both ends see the
    // socket twice (requests in, reports out), as with the pipes.
    let remote = if bin.join("tern-rspawn").is_file() {
        let spawned = (|| -> Result<(OwnedFd, OwnedFd), String> {
            let (ours, theirs) =
                tern_ipc::remote::socket_pair().map_err(|e| format!("socketpair: {e}"))?;
            let theirs_out = theirs.try_clone().map_err(|e| format!("dup: {e}"))?;
            let mut c = Command::new(bin.join("tern-rspawn"));
            env(&mut c);
            run_as(&mut c, ids.remote);
            c.stdin(Stdio::from(theirs))
                .stdout(Stdio::from(theirs_out))
                .stderr(child_stderr(&children_err)?);
            let child = c
                .spawn()
                .map_err(|e| format!("cannot start tern-rspawn: {}", spawn_error(&e)))?;
            started.push(Started {
                name: "tern-rspawn",
                child,
            });
            let ours_in = ours.try_clone().map_err(|e| format!("dup: {e}"))?;
            Ok((ours, ours_in))
        })();
        match spawned {
            Ok(p) => Some(p),
            Err(e) => {
                stop_all(&mut started);
                return fail(e);
            }
        }
    } else {
        None
    };
    // The queue writer (tern-queue --serve, as ternq): tern-smtpd's fast
    // way into the queue. Not for --once; restarted if it dies (its
    // clients run tern-queue meanwhile); it ends when its fd 0, a pipe
    // from here, closes.
    let start_writer = |err: &Option<OwnedFd>| -> Result<(Child, OwnedFd), String> {
        let (r, w) = pipe().map_err(|e| format!("pipe: {e}"))?;
        let mut c = Command::new(bin.join("tern-queue"));
        c.arg("--serve");
        env(&mut c);
        run_as(&mut c, ids.clean);
        c.stdin(Stdio::from(r))
            .stdout(Stdio::null())
            .stderr(child_stderr(err)?);
        let child = c
            .spawn()
            .map_err(|e| format!("cannot start tern-queue --serve: {}", spawn_error(&e)))?;
        Ok((child, w))
    };
    let writer_failed = |e: String| {
        Event::new(PROG, "alert")
            .field("program", "tern-queue")
            .field("reason", e)
            .emit();
    };
    // A copy of the children's stderr for restarts, dropped at the stop
    // (the relay ends when every copy is closed).
    let mut writer_err = match &children_err {
        Some(fd) if !once => match fd.try_clone() {
            Ok(c) => Some(c),
            Err(e) => {
                stop_all(&mut started);
                return fail(format!("dup: {e}"));
            }
        },
        _ => None,
    };
    let mut writer = None;
    let mut writer_started = Instant::now();
    if !once {
        match start_writer(&writer_err) {
            Ok(w) => writer = Some(w),
            Err(e) => writer_failed(e),
        }
    }
    // The authentication checker (tern-verify, as ternv), like the writer:
    // restarted if it dies (tern-smtpd accepts unchecked meanwhile), ends
    // when its fd 0 closes.
    let start_verify = |err: &Option<OwnedFd>| -> Result<(Child, OwnedFd), String> {
        let (r, w) = pipe().map_err(|e| format!("pipe: {e}"))?;
        let mut c = Command::new(bin.join("tern-verify"));
        env(&mut c);
        run_as(&mut c, ids.verify);
        c.stdin(Stdio::from(r))
            .stdout(Stdio::null())
            .stderr(child_stderr(err)?);
        let child = c
            .spawn()
            .map_err(|e| format!("cannot start tern-verify: {}", spawn_error(&e)))?;
        Ok((child, w))
    };
    let verify_failed = |e: String| {
        Event::new(PROG, "alert")
            .field("program", "tern-verify")
            .field("reason", e)
            .emit();
    };
    let mut verify_err = match &writer_err {
        Some(fd) if verify_on => fd.try_clone().ok(),
        _ => None,
    };
    let mut verifier = None;
    let mut verify_started = Instant::now();
    if verify_on {
        match start_verify(&verify_err) {
            Ok(v) => verifier = Some(v),
            Err(e) => verify_failed(e),
        }
    }
    let mut send = Command::new(bin.join("tern-send"));
    env(&mut send);
    run_as(&mut send, ids.send);
    if once {
        send.arg("--once");
        if flush {
            send.arg("--flush");
        }
    }
    send.stdin(Stdio::null()).stdout(Stdio::null());
    match child_stderr(&children_err) {
        Ok(e) => {
            send.stderr(e);
        }
        Err(e) => {
            stop_all(&mut started);
            return fail(e);
        }
    }
    let mut placed: Vec<(&OwnedFd, i32)> = vec![(&l_to, 3), (&l_from, 4), (&c_to, 5), (&c_from, 6)];
    if let Some((r_to, r_from)) = &remote {
        placed.push((r_to, 7));
        placed.push((r_from, 8));
    }
    tern_sys::spawn::place_fds(&mut send, &placed);
    let send_child = match send.spawn() {
        Ok(c) => c,
        Err(e) => {
            stop_all(&mut started);
            return fail(format!("cannot start tern-send: {}", spawn_error(&e)));
        }
    };
    drop(send);
    drop((l_to, l_from, c_to, c_from, remote, children_err));
    let send_pid = Pid::from_raw(send_child.id() as i32);
    started.push(Started {
        name: "tern-send",
        child: send_child,
    });
    Event::new(PROG, "started")
        .field("mode", if once { "once" } else { "daemon" })
        .num("send_pid", send_pid.as_raw())
        .emit();

    // Supervise.
    let mut send_status = None;
    let mut deadline: Option<Instant> = None;
    loop {
        let mut done = Vec::new();
        for (i, s) in started.iter_mut().enumerate() {
            if let Ok(Some(st)) = s.child.try_wait() {
                done.push((i, st));
            }
        }
        for (i, st) in done.into_iter().rev() {
            let s = started.remove(i);
            if s.name == "tern-send" {
                send_status = Some(st);
                deadline = Some(Instant::now() + Duration::from_secs(60));
            } else if !st.success() {
                // A helper that ends with status 0 saw tern-send close its
                // pipe (a normal stop); anything else is trouble, and
                // tern-send stops when it notices.
                Event::new(PROG, "alert")
                    .field("program", s.name)
                    .field("status", st.to_string())
                    .field("reason", "a helper died; tern-send will stop")
                    .emit();
            }
        }
        if let Some((child, _)) = writer.as_mut()
            && let Ok(Some(st)) = child.try_wait()
        {
            writer_failed(format!("the queue writer ended ({st}); restarting it"));
            writer = None;
        }
        if let Some((child, _)) = verifier.as_mut()
            && let Ok(Some(st)) = child.try_wait()
        {
            verify_failed(format!("tern-verify ended ({st}); restarting it"));
            verifier = None;
        }
        if send_status.is_some() {
            if let Some((child, pipe)) = verifier.take() {
                drop(pipe);
                started.push(Started {
                    name: "tern-verify",
                    child,
                });
            }
            verify_err = None;
        } else if verify_on
            && verifier.is_none()
            && verify_started.elapsed() >= Duration::from_secs(1)
        {
            verify_started = Instant::now();
            match start_verify(&verify_err) {
                Ok(v) => verifier = Some(v),
                Err(e) => verify_failed(e),
            }
        }
        if send_status.is_some() {
            // Stopping: the writer ends when its pipe closes.
            if let Some((child, pipe)) = writer.take() {
                drop(pipe);
                started.push(Started {
                    name: "tern-queue",
                    child,
                });
            }
            writer_err = None;
        } else if writer.is_none() && !once && writer_started.elapsed() >= Duration::from_secs(1) {
            writer_started = Instant::now();
            match start_writer(&writer_err) {
                Ok(w) => writer = Some(w),
                Err(e) => writer_failed(e),
            }
        }
        if started.is_empty() {
            break;
        }
        if let Some(d) = deadline
            && Instant::now() > d
        {
            Event::new(PROG, "warning")
                .field(
                    "reason",
                    "helpers did not stop after tern-send; killing them",
                )
                .emit();
            stop_all(&mut started);
            break;
        }
        wait_a_while(&sigfd, &mut relay);
        while let Ok(Some(info)) = sigfd.read_signal() {
            let Ok(sig) = Signal::try_from(info.ssi_signo as i32) else {
                continue;
            };
            if sig != Signal::SIGCHLD && send_status.is_none() {
                let _ = kill(send_pid, sig);
            }
        }
    }
    let code = match send_status {
        Some(st) if st.success() => ExitCode::SUCCESS,
        Some(st) => fail(format!("tern-send ended: {st}")),
        None => fail("tern-send never started"),
    };
    if let Some(mut child) = logger_child {
        // Our stderr is the last writer: point it back at nothing so the
        // logger sees end of file, then let it finish, copying what it
        // writes meanwhile.
        if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
            let _ = rustix::stdio::dup2_stderr(&null);
        }
        while let Ok(None) = child.try_wait() {
            wait_a_while(&sigfd, &mut relay);
            // Signals that arrive now have nobody to go to.
            while let Ok(Some(_)) = sigfd.read_signal() {}
        }
    }
    // Every child has ended: what they wrote is in the pipes. (Processes
    // they left behind may still hold a write end; they are not waited
    // for.)
    relay.pump();
    code
}

/// Waits up to a second for a signal (on `sigfd`) or output of a child (on
/// the relay's pipes), then copies that output.
fn wait_a_while(sigfd: &SignalFd, relay: &mut relay::Relay) {
    let ts = Timespec {
        tv_sec: 1,
        tv_nsec: 0,
    };
    let mut fds = relay.poll_fds();
    fds.push(PollFd::new(sigfd, PollFlags::IN));
    let _ = rustix::event::poll(&mut fds, Some(&ts));
    drop(fds);
    relay.pump();
}
