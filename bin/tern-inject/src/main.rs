//! NAME
//!   tern-inject — prepare a message and hand it to the queue
//!
//! SYNOPSIS
//!   tern-inject [ -a | -h | -A | -H ] [ -f sender ] [ -n | -N ] [ recipient ... ]
//!
//! DESCRIPTION
//!   Reads a message on standard input, fixes its header (adds Date,
//!   Message-ID, From when absent; removes Bcc, Resent-Bcc, Return-Path,
//!   Content-Length), works out the envelope (recipients from the arguments
//!   and/or the header) and queues it through `tern-queue` (or
//!   `$QMAILQUEUE`). With `-n` it prints the message instead. All logic is
//!   in `tern_msg::inject::prepare`; the full contract is
//!   docs/man/tern-inject.8.md.
//!
//! SECURITY
//!   Runs as the calling user, with no privileges. Trusts nothing it reads:
//!   the message, arguments and environment are bounded and parsed by
//!   tern-msg. Writes nothing but the pipes to the queue program (or
//!   stdout with -n).
//!
//! EXIT CODES
//!   0 queued (or printed); 100 permanent (usage, syntax, no recipients,
//!   permanent refusal by the queue); 111 temporary.
//!
//! FILES
//!   `$TERN_HOME/control/{me,defaulthost,defaultdomain,plusdomain,idhost}`,
//!   `$TERN_HOME/bin/tern-queue`.
//!
//! SEE ALSO
//!   sendmail(8), tern-queue(8)
#![forbid(unsafe_code)]

mod submit;

use std::io::{BufReader, Write};
use std::os::unix::ffi::OsStringExt;
use std::process::ExitCode;

use submit::{Exit, Fatal, inject};
use tern_msg::cmdline::{InjectCommand, parse_inject};
use tern_msg::inject::Request;

const PROGRAM: &str = "tern-inject";

const USAGE: &str =
    "usage: tern-inject [ -a | -h | -A | -H ] [ -f sender ] [ -n | -N ] [ recipient ... ]";

fn main() -> ExitCode {
    tern_log::install_panic_hook(PROGRAM, Exit::Temporary as i32);
    let args: Vec<Vec<u8>> = std::env::args_os()
        .skip(1)
        .map(OsStringExt::into_vec)
        .collect();
    match run(&args) {
        Ok(()) => Exit::Queued.into(),
        Err(f) => {
            let _ = writeln!(std::io::stderr(), "{PROGRAM}: fatal: {}", f.reason);
            f.exit.into()
        }
    }
}

fn run(args: &[Vec<u8>]) -> Result<(), Fatal> {
    let options = match parse_inject(args) {
        Ok(InjectCommand::Run(o)) => o,
        Ok(InjectCommand::Help) => {
            let _ = writeln!(std::io::stdout(), "{USAGE}");
            return Ok(());
        }
        Ok(InjectCommand::Version) => {
            let _ = writeln!(std::io::stdout(), "{PROGRAM} {}", env!("CARGO_PKG_VERSION"));
            return Ok(());
        }
        Err(e) => return Err(Fatal::new(false, format!("{e}; {USAGE}"))),
    };
    let request = Request {
        mode: options.mode,
        args: options.recipients,
        sender: options.sender,
        full_name: None,
        sender_is_author: false,
    };
    let home = tern_control::Home::from_env().map_err(|e| Fatal::new(e.is_temporary(), e))?;
    let stdin = std::io::stdin().lock();
    let mut input = BufReader::with_capacity(64 * 1024, stdin);
    inject(&home, &request, options.print, &mut input)
}
