//! NAME
//!     tern-clean - move and remove queue files for the queue manager
//!
//! SYNOPSIS
//!     tern-clean  (requests on fd 0, replies on fd 1; started by tern-start)
//!
//! DESCRIPTION
//!     The queue manager (`tern-send`, uid `terns`) may read messages but not
//!     change them. It asks `tern-clean` (uid `ternq`, the queue owner) to
//!     move messages it has durably recorded from `queue/new/` to
//!     `queue/cur/`, and to remove messages whose every recipient is done.
//!     Requests are tern-ipc `CleanRequest` batches; each gets one
//!     `CleanReply` after every directory it changed has been synced. At
//!     start and every hour it also removes what crashed `tern-queue`
//!     writers left in `queue/tmp/`.
//!
//! SECURITY
//!     Runs as the queue owner. Trusts nothing from the manager but ids:
//!     every path is built from a number; it touches only `queue/new/`,
//!     `queue/cur/` and `queue/tmp/`.
//!
//! EXIT CODES
//!     0 the manager closed fd 0; 111 trouble (queue unreadable, a malformed
//!     request, a broken pipe).
//!
//! SEE ALSO
//!     docs/man/tern-clean.8.md, docs/queue.md, tern-send(8)
#![forbid(unsafe_code)]
#![deny(clippy::print_stdout)]

use std::process::ExitCode;
use std::time::{Duration, Instant};
use tern_ipc::{CleanOp, CleanReply, CleanRequest};
use tern_log::Event;
use tern_spool::clean::Op;

const PROG: &str = "tern-clean";
const REPAIR_EVERY: Duration = Duration::from_secs(3600);

fn fail(reason: impl std::fmt::Display) -> ExitCode {
    Event::new(PROG, "fatal")
        .field("reason", reason.to_string())
        .emit();
    ExitCode::from(111)
}

fn main() -> ExitCode {
    tern_sys::signals::reset();
    tern_log::install_panic_hook(PROG, 111);
    if let Some(a) = std::env::args().nth(1) {
        if a == "--help" || a == "-h" {
            use std::io::Write as _;
            let _ = std::io::stderr().write_all(
                b"usage: tern-clean  (tern-ipc clean requests on fd 0, replies on fd 1)\n\
                  Started by tern-start; see tern-clean(8).\n",
            );
            return ExitCode::SUCCESS;
        }
        return fail(format!("unexpected argument {a:?}"));
    }
    let home = match tern_control::Home::from_env() {
        Ok(h) => h,
        Err(e) => return fail(e),
    };
    let queue = match tern_spool::Queue::open(&home.queue_dir()) {
        Ok(q) => q,
        Err(e) => return fail(e),
    };
    let repair = |queue: &tern_spool::Queue| match queue.repair() {
        Ok(r) => {
            if r.removed_partial > 0 || r.renamed > 0 || !r.damaged.is_empty() {
                Event::new(PROG, "repair")
                    .num("removed_partial", r.removed_partial)
                    .num("renamed", r.renamed)
                    .num("damaged", r.damaged.len())
                    .emit();
            }
        }
        Err(e) => Event::new(PROG, "warning")
            .field("reason", e.to_string())
            .emit(),
    };
    repair(&queue);
    let mut last_repair = Instant::now();
    let mut input = std::io::stdin().lock();
    let mut output = std::io::stdout().lock();
    loop {
        let frame = match tern_ipc::read_frame(&mut input) {
            Ok(f) => f,
            Err(tern_ipc::Error::Closed) => return ExitCode::SUCCESS,
            Err(e) => return fail(e),
        };
        let req = match CleanRequest::decode(&frame) {
            Ok(r) => r,
            Err(e) => return fail(e),
        };
        let ops: Vec<Op> = req
            .ops
            .iter()
            .map(|op| match *op {
                CleanOp::Accept(id) => Op::TakeOver(id),
                CleanOp::Remove { id, birth, qpid } => Op::Remove { id, birth, qpid },
            })
            .collect();
        let ok = queue.clean(&ops);
        for (op, done) in ops.iter().zip(&ok) {
            if !done {
                Event::new(PROG, "warning")
                    .field("op", format!("{op:?}"))
                    .field("reason", "operation failed; the manager will retry")
                    .emit();
            }
        }
        if let Err(e) = tern_ipc::write_frame(&mut output, &CleanReply { ok }.encode()) {
            return fail(e);
        }
        if last_repair.elapsed() > REPAIR_EVERY {
            repair(&queue);
            last_repair = Instant::now();
        }
    }
}
