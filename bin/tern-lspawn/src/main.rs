//! NAME
//!     tern-lspawn - run tern-local for each local delivery
//!
//! SYNOPSIS
//!     tern-lspawn  (requests on fd 0, reports on fd 1, log on fd 2)
//!
//! DESCRIPTION
//!     Speaks the tern-ipc spawner protocol with tern-send: writes
//!     `Hello{max_concurrency: 256}`, then for each `Deliver` request looks
//!     the recipient's local part up (users/assign, passwd in a system
//!     instance, the alias user), opens the message in `queue/cur/` and runs
//!     `$TERN_HOME/bin/tern-local -- user home local dash ext domain sender
//!     defaultdelivery` with the message on fd 0 and one output pipe on fd 1
//!     and 2, in a new session (its own process group, no controlling
//!     terminal), with a fresh environment. One
//!     poll() loop watches fd 0 and every child's output; each finished
//!     delivery is answered with a `Report`, in completion order. A delivery
//!     running longer than `control/timeoutlocal` has its process group
//!     killed. At end of input, running deliveries are finished and
//!     reported, then it exits 0.
//!
//! SECURITY
//!     In a system instance it runs as root (and refuses to start
//!     otherwise) and switches each child to the recipient's uid/gid
//!     through `tern_sys::privilege` (no supplementary groups, gid, uid,
//!     then a check that root cannot be regained). It never delivers as
//!     uid 0 or gid 0, with the queue's group (that of queue/cur), as Tern's own users, or (except the alias user) as
//!     a uid outside `control/localuidmin`..`localuidmax`: each is a
//!     permanent failure, logged. In a single-user instance (`$TERN_HOME/single-user`) it switches
//!     nothing and delivers only as its own uid. It trusts tern-send's
//!     requests for nothing: every frame is bounded and checked, and a queue
//!     file must be a regular file owned by the owner of `queue/cur`. It
//!     writes no files, and marks every descriptor it inherited above 2
//!     close-on-exec, so none reaches a recipient's tern-local.
//!
//! EXIT CODES
//!     0 end of input, every delivery reported; 81 internal bug; 100 usage;
//!     111 cannot start or continue (malformed request, not root in a system
//!     instance, unusable home or queue, tern-send gone). See
//!     docs/man/tern-lspawn.8.md.
//!
//! FILES
//!     $TERN_HOME/{single-user,users/assign,control/,queue/cur/,bin/tern-local}
//!
//! SEE ALSO
//!     tern-send(8), tern-local(8), docs/man/tern-lspawn.8.md
#![forbid(unsafe_code)]
#![deny(clippy::print_stdout, clippy::print_stderr)]

mod run;
mod start;
mod workers;

use std::io::Write as _;
use std::os::unix::fs::MetadataExt as _;
use std::process::ExitCode;

use tern_control::Home;
use tern_control::owner::Instance;
use tern_log::Event;

const PROG: &str = "tern-lspawn";
/// Most deliveries run at once (announced in `Hello`).
const MAX_CONCURRENCY: u32 = 256;

/// Exit codes (docs/man/tern-lspawn.8.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum LspawnExit {
    /// End of input; every delivery was reported.
    Finished = 0,
    /// Internal bug (panic or crash signal).
    Bug = 81,
    /// Called with an unknown argument.
    Usage = 100,
    /// Cannot start or continue: malformed request, not root in a system
    /// instance, unusable home or queue, reports cannot be written.
    Trouble = 111,
}

impl From<LspawnExit> for ExitCode {
    fn from(e: LspawnExit) -> ExitCode {
        ExitCode::from(e as u8)
    }
}

const USAGE: &str = "usage: tern-lspawn  (tern-ipc requests on fd 0, reports on fd 1)\n\
Started by tern-start; runs tern-local for each local delivery.\n\
Exit 0 at end of input; 111 on a malformed request or trouble; see tern-lspawn(8).\n";

fn trouble(event: &str, reason: &dyn std::fmt::Display) -> ExitCode {
    Event::new(PROG, event)
        .field("reason", reason.to_string())
        .emit();
    LspawnExit::Trouble.into()
}

fn main() -> ExitCode {
    tern_sys::signals::reset();
    tern_sys::signals::exit_on_crash(LspawnExit::Bug as i32, LspawnExit::Bug as i32);
    tern_log::install_panic_hook(PROG, LspawnExit::Bug as i32);
    // Root: nothing its parent left open may reach a recipient's tern-local.
    if let Err(e) = tern_sys::spawn::cloexec_inherited() {
        return trouble(
            "startup_failed",
            &format!("cannot mark inherited descriptors close-on-exec: {e}"),
        );
    }

    if let Some(a) = std::env::args_os().nth(1) {
        let (text, code) = match a.to_str() {
            Some("--help" | "-h") => (USAGE.to_string(), LspawnExit::Finished),
            Some("--version") => (
                format!("tern-lspawn {}\n", env!("CARGO_PKG_VERSION")),
                LspawnExit::Finished,
            ),
            _ => (USAGE.to_string(), LspawnExit::Usage),
        };
        let _ = std::io::stderr().write_all(text.as_bytes());
        return code.into();
    }

    let home = match Home::from_env() {
        Ok(h) => h,
        Err(e) => return trouble("startup_failed", &e),
    };
    let single = home.is_single_user();
    let euid = rustix::process::geteuid().as_raw();
    if !single && euid != 0 {
        return trouble(
            "refused",
            &"a system instance (no single-user marker) needs tern-lspawn to run as root",
        );
    }
    let queue_dir = home.queue_dir();
    let layout = match tern_spool::layout::Layout::read(&queue_dir) {
        Ok(l) => l,
        Err(e) => return trouble("startup_failed", &e),
    };
    let cur = queue_dir.join(tern_spool::layout::CUR_DIR);
    // Not followed if the queue's uid made it a link: its owner and group
    // are what every message file is checked against.
    let cur_meta = tern_spool::layout::open_below(
        &queue_dir,
        std::path::Path::new(tern_spool::layout::CUR_DIR),
        tern_spool::layout::Last::Dir,
    )
    .and_then(|fd| std::fs::File::from(fd).metadata());
    let (cur_owner, queue_gid) = match cur_meta {
        Ok(m) => (m.uid(), m.gid()),
        Err(e) => return trouble("startup_failed", &format!("{}: {e}", cur.display())),
    };
    let instance = if single {
        let egid = rustix::process::getegid().as_raw();
        Instance::SingleUser {
            user: tern_sys::user_name(euid).unwrap_or_else(|| euid.to_string()),
            uid: euid,
            gid: egid,
            alias_home: home.alias_dir(),
        }
    } else {
        Instance::System
    };
    let users = if single {
        start::Users::default()
    } else {
        start::lookup_users(queue_gid)
    };
    // TERN_LOCAL_WORKERS=0: a tern-local per delivery, never a worker
    // (for tests of that interface, and a way back should workers ever
    // misbehave).
    let workers = std::env::var_os("TERN_LOCAL_WORKERS").is_none_or(|v| v != "0");
    let ctx = start::Ctx {
        home,
        layout,
        cur_owner,
        instance,
        euid,
        users,
        workers,
    };
    Event::new(PROG, "started")
        .field("instance", if single { "single-user" } else { "system" })
        .num("max_concurrency", MAX_CONCURRENCY)
        .field("workers", if workers { "yes" } else { "no" })
        .emit();
    run::run(&ctx).into()
}
