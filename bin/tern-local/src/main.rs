//! NAME
//!   tern-local — deliver one message to one local address
//!
//! SYNOPSIS
//!   tern-local -- user home local dash ext domain sender defaultdelivery
//!   tern-local --worker  (one of tern-lspawn's delivery workers)
//!
//! DESCRIPTION
//!   Reads the message on fd 0 (from its current offset to end of file)
//!   and follows the user's `.qmail<dash><ext>` file (or `-default`
//!   fall-back, or `defaultdelivery`): Maildir, mbox, program and forward
//!   lines, with qmail-local's semantics. Prints the result for the
//!   delivery report on stdout (`did F+W+P`, or the failure reason). All
//!   logic is in `tern_deliver::deliver`; the full contract is
//!   docs/man/tern-local.8.md.
//!   With `--worker`, fd 0 is a socket to tern-lspawn, which sends one
//!   delivery at a time (the arguments above and the message's
//!   descriptor, tern-ipc's `lworker`); the worker delivers it exactly as
//!   a one-delivery tern-local would, answers with that exit code and
//!   text, and waits for the next, until tern-lspawn closes the socket.
//!
//! SECURITY
//!   Runs as the recipient (started by tern-lspawn after the uid switch).
//!   Trusts nothing it reads: the message, the envelope sender and the
//!   `.qmail` files are bounded and parsed by tern-deliver. Writes only
//!   the recipient's mailboxes, and queues forwards through tern-queue.
//!
//! EXIT CODES
//!   0 delivered; 99 delivered, a program asked to skip the rest;
//!   100 permanent failure; 111 temporary failure.
//!
//! FILES
//!   `~/.qmail*`, the mailboxes they name, `$TERN_HOME/bin/tern-queue`.
//!
//! SEE ALSO
//!   tern-lspawn(8), docs/dot-qmail.md
#![forbid(unsafe_code)]

mod worker;

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::process::ExitCode;

use tern_deliver::{Error, ErrorKind, LocalExit, Message, Request, Settings};

const PROGRAM: &str = "tern-local";

fn main() -> ExitCode {
    tern_log::install_panic_hook(PROGRAM, LocalExit::Temporary as i32);
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    if args.len() == 1 && args[0] == "--worker" {
        return worker::run();
    }
    let result = std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| unreadable(&e))
        .and_then(|fd| run(&args, fd));
    let text = match &result {
        Ok(o) => o.report(),
        Err(e) => e.to_string(),
    };
    let _ = writeln!(std::io::stdout(), "{text}");
    tern_deliver::exit_code(&result).into()
}

/// One delivery: `args` as on the command line, the message on `input`
/// (from its current offset).
pub(crate) fn run(
    args: &[std::ffi::OsString],
    input: OwnedFd,
) -> Result<tern_deliver::Outcome, Error> {
    let req = Request::from_args(args)?;
    let home = tern_control::Home::from_env().map_err(|e| {
        Error::new(
            ErrorKind::Usage,
            format!("Unable to find the instance: {e}. (#4.3.5)"),
        )
    })?;
    let message = Message::from_current_offset(File::from(input)).map_err(|e| unreadable(&e))?;
    let mut settings = Settings::for_instance(home.root());
    settings.path = tern_control::Control::new(&home)
        .programpath()
        .map_err(|e| {
            Error::new(
                ErrorKind::Usage,
                format!("Unable to read control/programpath: {e}. (#4.3.0)"),
            )
        })?
        .into_bytes();
    settings.lock_wait =
        tern_deliver::lock_wait_from(std::env::var_os("TERN_LOCAL_LOCK_WAIT").as_deref());
    tern_deliver::deliver(&req, &message, &settings)
}

pub(crate) fn unreadable(e: &std::io::Error) -> Error {
    Error::new(
        ErrorKind::MessageUnreadable,
        format!("Unable to read message: {e}. (#4.3.0)"),
    )
}
