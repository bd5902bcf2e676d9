//! NAME
//!   sendmail, mailq — the sendmail-compatible command line of Tern
//!
//! SYNOPSIS
//!   sendmail [ -t ] [ -i | -oi ] [ -f sender ] [ -F name ] [ ignored options ] [ -- ] [ recipient ... ]
//!   sendmail -bp | mailq
//!   sendmail -bs
//!
//! DESCRIPTION
//!   Reads a message on standard input and queues it, like tern-inject:
//!   without -t the recipients are the arguments; with -t they are the To,
//!   Cc and Bcc addresses of the header plus the arguments. Without -i (or
//!   -oi) a line consisting of a single `.` ends the input. `-bp` and
//!   `mailq` run `ternctl queue`; `-bs` runs `tern-smtpd` (SMTP on
//!   standard input and output, as a relay client). The argument parser
//!   (`tern_msg::cmdline::parse_sendmail`) is written by hand because clap
//!   cannot express sendmail's option alphabet; docs/man/sendmail.8.md is
//!   the contract.
//!
//! SECURITY
//!   Runs as the calling user, with no privileges; trusts nothing it reads
//!   (message, arguments, environment are bounded and parsed by tern-msg).
//!
//! EXIT CODES
//!   0 queued; 100 permanent (usage, unsupported mode, syntax, no
//!   recipients, permanent refusal); 111 temporary.
//!
//! FILES
//!   `$TERN_HOME/control/{me,defaulthost,defaultdomain,plusdomain,idhost}`,
//!   `$TERN_HOME/bin/tern-queue`, `$TERN_HOME/bin/ternctl`,
//!   `$TERN_HOME/bin/tern-smtpd`.
//!
//! SEE ALSO
//!   tern-inject(8), ternctl(8)
#![forbid(unsafe_code)]

#[path = "../../tern-inject/src/submit.rs"]
mod submit;

use std::io::{BufReader, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::process::CommandExt;
use std::process::ExitCode;

use submit::{Exit, Fatal, inject};
use tern_msg::cmdline::{SendmailCommand, UsageError, parse_sendmail};
use tern_msg::dot::DotTerminated;
use tern_msg::inject::{RecipientMode, Request};

const PROGRAM: &str = "sendmail";

fn main() -> ExitCode {
    tern_log::install_panic_hook(PROGRAM, Exit::Temporary as i32);
    let mut argv = std::env::args_os();
    let argv0 = argv.next().unwrap_or_default();
    let name = std::path::Path::new(&argv0)
        .file_name()
        .map(|n| n.as_bytes().to_vec())
        .unwrap_or_default();
    let args: Vec<Vec<u8>> = argv.map(OsStringExt::into_vec).collect();
    match run(&name, &args) {
        Ok(()) => Exit::Queued.into(),
        Err(f) => {
            let _ = writeln!(std::io::stderr(), "{PROGRAM}: fatal: {}", f.reason);
            f.exit.into()
        }
    }
}

const USAGE: &str = "\
usage: sendmail [-t] [-i | -oi] [-f sender] [-F name] [-bm | -bp] [--] [recipient ...]
       mailq

Reads a message on standard input and queues it for the recipients.
  -t          also take recipients from To:, Cc:, Bcc: (Bcc: is removed)
  -i, -oi     a line holding a single '.' is content, not the end of input
  -f SENDER   envelope sender (also -r); -f '' or -f '<>' for a bounce
  -F NAME     full name for an added From: field
  -bp         list the queue (same as mailq)
  -q          run the queue once: try everything queued now, then exit (tern-start --once --flush)
Other sendmail options (-v, -oX, -B, -N, -R, -h ...) are accepted and ignored.
Exit: 0 queued, 100 permanent failure, 111 temporary failure.
See docs/man/sendmail.8.md.
";

fn run(name: &[u8], args: &[Vec<u8>]) -> Result<(), Fatal> {
    let options = match parse_sendmail(name, args) {
        Ok(SendmailCommand::Send(o)) => o,
        Ok(SendmailCommand::ListQueue) => return list_queue(),
        Ok(SendmailCommand::Help) => {
            let _ = std::io::stdout().write_all(USAGE.as_bytes());
            return Ok(());
        }
        Ok(SendmailCommand::Version) => {
            let _ = writeln!(
                std::io::stdout(),
                "sendmail (Tern) {}",
                env!("CARGO_PKG_VERSION")
            );
            return Ok(());
        }
        Ok(SendmailCommand::RunQueue) => return run_queue(),
        Ok(SendmailCommand::Smtp) => return smtp(),
        Err(e @ UsageError::Newaliases) => {
            return Err(Fatal::new(false, e));
        }
        Err(e) => {
            return Err(Fatal::new(
                false,
                format!(
                    "{e}; usage: sendmail [-t] [-i] [-f sender] [-F name] [--] [recipient ...]"
                ),
            ));
        }
    };
    let request = Request {
        mode: if options.extract {
            RecipientMode::HeaderAndArgs
        } else {
            RecipientMode::Args
        },
        args: options.recipients,
        sender: options.sender,
        full_name: options.full_name,
        sender_is_author: true,
    };
    let home = tern_control::Home::from_env().map_err(|e| Fatal::new(e.is_temporary(), e))?;
    let stdin = BufReader::with_capacity(64 * 1024, std::io::stdin().lock());
    if options.ignore_dots {
        let mut input = stdin;
        inject(&home, &request, false, &mut input)
    } else {
        let mut input = BufReader::with_capacity(64 * 1024, DotTerminated::new(stdin));
        inject(&home, &request, false, &mut input)
    }
}

/// `-q`: replaces this process with `<home>/bin/tern-start --once --flush`
/// (try everything queued now, whatever its retry schedule, as sendmail's
/// and Postfix's `-q` do; then exit). A running manager is asked to retry
/// everything now instead.
fn run_queue() -> Result<(), Fatal> {
    let home = tern_control::Home::from_env().map_err(|e| Fatal::new(e.is_temporary(), e))?;
    let start = home.bin_dir().join("tern-start");
    let err = std::process::Command::new(&start)
        .args(["--once", "--flush"])
        .exec();
    Err(Fatal::new(
        true,
        format!("cannot run {}: {err}", start.display()),
    ))
}

/// `-bs`: replaces this process with `<home>/bin/tern-smtpd` on the same
/// standard input and output. The local user may relay (`RELAYCLIENT` is
/// set, empty); unless `PROTO` is already set (a launcher such as tcpserver
/// described a real connection), the environment describes a loopback
/// connection: `PROTO=TCP`, `TCPREMOTEIP` and `TCPLOCALIP` `127.0.0.1`,
/// `TCPREMOTEINFO` the caller's login name.
fn smtp() -> Result<(), Fatal> {
    let home = tern_control::Home::from_env().map_err(|e| Fatal::new(e.is_temporary(), e))?;
    let smtpd = home.bin_dir().join("tern-smtpd");
    let mut cmd = std::process::Command::new(&smtpd);
    cmd.env("RELAYCLIENT", "");
    if std::env::var_os("PROTO").is_none() {
        let uid = tern_sys::real_uid();
        let login = tern_sys::user_name(uid).unwrap_or_else(|| uid.to_string());
        cmd.env("PROTO", "TCP")
            .env("TCPREMOTEIP", "127.0.0.1")
            .env("TCPLOCALIP", "127.0.0.1")
            .env("TCPREMOTEINFO", login);
    }
    let err = cmd.exec();
    Err(Fatal::new(
        true,
        format!("cannot run {}: {err}", smtpd.display()),
    ))
}

/// `-bp` / `mailq`: replaces this process with `<home>/bin/ternctl queue`.
fn list_queue() -> Result<(), Fatal> {
    let home = tern_control::Home::from_env().map_err(|e| Fatal::new(e.is_temporary(), e))?;
    let ternctl = home.bin_dir().join("ternctl");
    let err = std::process::Command::new(&ternctl).arg("queue").exec();
    Err(Fatal::new(
        true,
        format!("cannot run {}: {err}", ternctl.display()),
    ))
}
