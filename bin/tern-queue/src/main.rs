//! NAME
//!     tern-queue - put a message into the Tern queue
//!
//! SYNOPSIS
//!     tern-queue  (message on fd 0, envelope on fd 1)
//!     tern-queue --gate  (a connected Unix socket on fd 0)
//!
//! DESCRIPTION
//!     Reads a message on fd 0 and an envelope on fd 1 (`F<sender>\0`,
//!     `T<recipient>\0`..., `\0`), prepends a `Received:` line naming its pid
//!     and the invoking uid, makes the message durable in
//!     `queue/new/<id % split>/<id>` and wakes the queue manager through
//!     `queue/lock/trigger`. Compatible with qmail-queue. Prints nothing on
//!     stdout; the exit code is the answer.
//!     With `--gate` (the queue gate: started per connection by
//!     `tern-queue.socket`, or by any inetd-style launcher, as the queue
//!     user, never setuid) fd 0 is a connected Unix stream socket. The
//!     client sends a 4-byte header with the read ends of its message and
//!     envelope pipes attached (`tern_spool::gate`); these stand for fd 0
//!     and fd 1 above. The invoking uid is the socket peer's
//!     (`SO_PEERCRED`). The exit code is also written back on the socket as
//!     one byte. A bad header or a number of descriptors other than two is
//!     exit code 54, nothing queued. This lets callers with `no_new_privs`
//!     (tern-smtpd under systemd) queue mail (`$TERN_QUEUE_SOCKET`).
//!
//! SECURITY
//!     Installed setuid to the queue owner (`ternq`). When the kernel reports
//!     AT_SECURE it first clears its environment (ignoring `TERN_HOME`,
//!     `TERN_QUEUE_TIMEOUT` and everything else), takes as home the
//!     directory above the `bin/` that holds it (`/proc/self/exe`; else the
//!     compiled-in home), and refuses a `queue/` that does not belong to its
//!     effective uid; it trusts nothing but fd 0 and fd 1. It sets its real
//!     and saved uid to `ternq` too (after noting the caller's uid for the
//!     Received line), so it can never return to its caller's uid. It lets
//!     go of its caller's terminal: it detaches from the controlling
//!     terminal (`TIOCNOTTY`, unless it leads its session) and replaces a
//!     terminal on fd 2 by `/dev/null`, so that code running as `ternq`
//!     cannot push input into the caller's shell. It sets its
//!     umask, resets signal mask and dispositions, and arms its own
//!     deadline. Writes only below `queue/`. Refuses `--gate` when setuid.
//!
//! EXIT CODES
//!     0 queued; 11 address too long; 12 too many recipients; 13 envelope
//!     too large; 51 out of memory; 52 timeout; 53 write error or disk full;
//!     54 cannot read message or envelope (including a truncated envelope);
//!     61 home; 62 queue directory or its format; 63 queue/tmp; 64
//!     queue/new; 65 syncing queue/new; 81 internal bug; 91 envelope format
//!     error. See docs/man/tern-queue.8.md.
//!
//! FILES
//!     $TERN_HOME/queue/{format,tmp/,new/,lock/trigger}
//!
//! SEE ALSO
//!     docs/queue.md, tern-inject(8), sendmail(8)
#![forbid(unsafe_code)]
#![deny(clippy::print_stdout, clippy::print_stderr)]

mod serve;

use std::io::{BufReader, Read};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tern_log::Event;
use tern_spool::QueueExit;
use tern_spool::commit::{self, Writer};
use tern_spool::envelope::Envelope;
use tern_spool::qfile::Origin;

const PROG: &str = "tern-queue";
/// The compiled-in home, used whenever the environment cannot be trusted.
const DEFAULT_HOME: &str = match option_env!("TERN_DEFAULT_HOME") {
    Some(h) => h,
    None => "/var/tern",
};
/// The self-destruct deadline (qmail's DEATH): a stuck injection ends.
const DEATH_SECS: u64 = 86_400;

fn refuse(exit: QueueExit, reason: &dyn std::fmt::Display) -> u8 {
    Event::new(PROG, "refused")
        .num("code", exit.code())
        .field("reason", reason.to_string())
        .emit();
    exit.code()
}

/// Writes the gate's answer on fd 0 (the client's socket). A client that
/// went away misses it; nothing else depends on it.
fn answer(code: u8) {
    let sock = std::io::stdin();
    if let Err(e) = tern_spool::gate::send_status(sock.as_fd(), code) {
        Event::new(PROG, "warning")
            .num("code", code)
            .field("reason", format!("cannot answer the client: {e}"))
            .emit();
    }
}
/// The home of a setuid `tern-queue`: the directory above the `bin/` that
/// holds this program (`/proc/self/exe`, which the caller cannot change:
/// it names the file the kernel executed), so one binary serves any
/// install location. A program not in a directory named `bin` (or no
/// `/proc`) uses the compiled-in home. Either way, the queue found there
/// must belong to the queue user (checked after opening it).
fn secure_home() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| {
            let bin = exe.parent()?;
            if bin.file_name()? != "bin" {
                return None;
            }
            Some(bin.parent()?.to_path_buf())
        })
        .unwrap_or_else(|| DEFAULT_HOME.into())
}

fn main() -> ExitCode {
    // Setuid: nothing from the caller's environment reaches anything that
    // runs later (the standard library reads RUST_* variables). Done first,
    // while this is the only thread.
    let secure = tern_sys::secure::at_secure();
    let env_cleared = if secure {
        tern_sys::secure::clear_env().err()
    } else {
        None
    };
    // Setuid: the real and saved uid become ternq too, so nothing in this
    // process can return to the caller's uid (root's, when root sends
    // mail). The caller's uid is kept for the Received line and the queue
    // file's `u` record.
    let caller = if secure {
        tern_sys::privilege::shed_caller_uid()
    } else {
        Ok(tern_sys::real_uid())
    };
    // Setuid: the caller's terminal (root's, when root sends mail from a
    // shell) must be out of reach of code running as ternq: no controlling
    // terminal (no /dev/tty, no TIOCSTI), and no terminal on fd 2. Done
    // before anything is read.
    let terminal = if secure {
        tern_sys::terminal::let_go()
    } else {
        Ok(tern_sys::terminal::LetGo::default())
    };
    tern_sys::signals::reset();
    tern_sys::signals::exit_on_crash(
        QueueExit::Bug.code().into(),
        QueueExit::OutOfMemory.code().into(),
    );
    tern_log::install_panic_hook(PROG, QueueExit::Bug.code().into());
    tern_sys::set_umask(0o027);

    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).take(3).collect();
    if args.len() == 1 && args[0] == "--serve" && !secure {
        // The queue writer: a service of the queue user, never setuid (its
        // caller would choose the home).
        let home = std::env::var_os("TERN_HOME")
            .filter(|h| !h.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| DEFAULT_HOME.into());
        return ExitCode::from(serve::run(&home));
    }
    let gate = match args.first() {
        None => false,
        // The gate is a service of the queue user; the setuid program
        // never serves one (its caller would choose the socket).
        Some(a) if a == "--gate" && args.len() == 1 && !secure => true,
        Some(a) => {
            let out = if a == "--version" {
                format!("tern-queue {}\n", env!("CARGO_PKG_VERSION"))
            } else {
                "usage: tern-queue  (message on fd 0, envelope on fd 1; no arguments)\n\
                 \x20      tern-queue --gate  (a connected Unix socket on fd 0; not setuid)\n\
                 \x20      tern-queue --serve  (the queue writer on writer/socket; not setuid)\n\
                 Exit 0 means queued; see tern-queue(8) for the other codes.\n"
                    .to_string()
            };
            // fd 1 is the envelope pipe, never an output: help goes to stderr.
            use std::io::Write as _;
            let _ = std::io::stderr().write_all(out.as_bytes());
            return if args.len() == 1 && (a == "--help" || a == "-h" || a == "--version") {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(QueueExit::Bug.code())
            };
        }
    };
    let code = match terminal {
        Ok(_) => run(secure, caller, env_cleared, gate),
        Err(e) => refuse(
            QueueExit::Bug,
            &format!("cannot let go of the caller's terminal: {e}"),
        ),
    };
    if gate {
        answer(code);
    }
    ExitCode::from(code)
}

/// Queues one message; returns the exit code.
fn run(
    secure: bool,
    caller: Result<u32, tern_sys::privilege::DropError>,
    env_cleared: Option<tern_sys::secure::ClearEnvError>,
    gate: bool,
) -> u8 {
    let caller = match caller {
        Ok(uid) => uid,
        Err(e) => {
            return refuse(
                QueueExit::Bug,
                &format!("cannot give up the caller's uid: {e}"),
            );
        }
    };
    if let Some(e) = env_cleared {
        // Not fatal: a setuid tern-queue reads no variable anyway.
        Event::new(PROG, "warning")
            .field("reason", format!("environment not cleared: {e}"))
            .emit();
    }
    let env = |name: &str| if secure { None } else { std::env::var_os(name) };
    let timeout = env("TERN_QUEUE_TIMEOUT")
        .and_then(|v| v.to_str().and_then(|s| s.parse::<u64>().ok()))
        .filter(|&s| s > 0)
        .unwrap_or(DEATH_SECS);
    let watchdog = std::thread::Builder::new()
        .stack_size(64 * 1024)
        .spawn(move || {
            std::thread::sleep(Duration::from_secs(timeout));
            Event::new(PROG, "refused")
                .num("code", QueueExit::Timeout.code())
                .field("reason", "timeout")
                .emit();
            if gate {
                answer(QueueExit::Timeout.code());
            }
            tern_sys::signals::exit_now(QueueExit::Timeout.code().into());
        });
    if let Err(e) = watchdog {
        return refuse(
            QueueExit::OutOfMemory,
            &format!("cannot start the deadline thread: {e}"),
        );
    }

    // The two inputs, and who is asking: fd 0, fd 1 and the real uid; or,
    // for the gate, the descriptors the client sent and the peer's uid as
    // the kernel recorded it at connect (the client cannot choose it).
    let (mut message, envelope_fd, caller): (Box<dyn Read>, _, u32) = if gate {
        let sock = std::io::stdin();
        let peer = match tern_spool::gate::peer_uid(sock.as_fd()) {
            Ok(uid) => uid,
            Err(e) => {
                return refuse(
                    QueueExit::ReadFailed,
                    &format!("fd 0 is not a connected Unix socket: {e}"),
                );
            }
        };
        match tern_spool::gate::recv_request(sock.as_fd()) {
            Ok(req) => (
                Box::new(std::fs::File::from(req.message)),
                req.envelope,
                peer,
            ),
            Err(e) => {
                return refuse(
                    QueueExit::ReadFailed,
                    &format!("gate request from uid {peer}: {e}"),
                );
            }
        }
    } else {
        let fd1 = match std::io::stdout().as_fd().try_clone_to_owned() {
            Ok(fd) => fd,
            Err(e) => return refuse(QueueExit::ReadFailed, &format!("fd 1: {e}")),
        };
        (Box::new(std::io::stdin().lock()), fd1, caller)
    };

    let home = if secure {
        secure_home()
    } else {
        env("TERN_HOME")
            .filter(|h| !h.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| DEFAULT_HOME.into())
    };

    let home_fd = match rustix::fs::open(
        &home,
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(e) => {
            return refuse(
                QueueExit::HomeTrouble,
                &format!("open {}: {e}", home.display()),
            );
        }
    };
    let queue = match commit::open_queue_dir(&home_fd) {
        Ok(q) => q,
        Err(e) => return refuse(QueueExit::QueueDirTrouble, &format!("open queue: {e}")),
    };
    // Setuid: the queue must be the queue user's own. A copy of this
    // program hard-linked into a tree the caller made finds a queue/ the
    // caller owns there, and refuses it.
    if secure {
        let euid = tern_sys::effective_uid();
        match rustix::fs::fstat(&queue) {
            Ok(st) if st.st_uid == euid => {}
            Ok(st) => {
                return refuse(
                    QueueExit::QueueDirTrouble,
                    &format!(
                        "{}/queue belongs to uid {}, not to the queue user (uid {euid})",
                        home.display(),
                        st.st_uid
                    ),
                );
            }
            Err(e) => return refuse(QueueExit::QueueDirTrouble, &format!("fstat queue: {e}")),
        }
    }
    let layout = match commit::read_layout(&queue) {
        Ok(l) => l,
        Err(e) => return refuse(QueueExit::QueueDirTrouble, &e),
    };
    // Test aid, honoured only without privileges: force the named-file
    // fallback that file systems without O_TMPFILE use.
    let named = env("TERN_QUEUE_NAMED_TMP").is_some_and(|v| v == "1");
    let mut writer = match Writer::create_with(&queue, layout, named) {
        Ok(w) => w,
        Err(e) => return refuse(e.exit, &e),
    };

    let origin = Origin {
        uid: caller,
        pid: std::process::id(),
        time: tern_date::now(),
    };
    let received = commit::received_line(origin.pid, origin.uid, origin.time);
    if let Err(e) = writer.write_message(&received, &mut message) {
        return refuse(e.exit, &e);
    }
    drop(message);

    let envelope = {
        let mut input = BufReader::with_capacity(16 * 1024, std::fs::File::from(envelope_fd));
        match Envelope::read_from(&mut input) {
            Ok(env) => env,
            Err(e) => {
                let exit = QueueExit::for_envelope(&e);
                return refuse(exit, &e);
            }
        }
    };

    if let Err(e) = writer.commit(&origin, &envelope) {
        return refuse(e.exit, &e);
    }
    // Committed and durable. The wake-up is best effort.
    tern_sys::trigger::pull(&queue, std::path::Path::new(tern_spool::layout::TRIGGER));
    QueueExit::Queued.code()
}
