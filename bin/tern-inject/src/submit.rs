//! The part of injection that touches the system, shared by `tern-inject`
//! and `sendmail` (sendmail includes this file with `#[path]`): read the
//! controls and the environment, call `tern_msg::inject::prepare`, then
//! print the message or queue it through `tern_spool::QueueClient`, and
//! classify every failure as temporary or permanent.

use std::io::{BufRead, Write};
use std::os::unix::ffi::OsStrExt;
use std::process::ExitCode;

use tern_msg::header::Limits;
use tern_msg::inject::{Controls, Environment, Prepared, Request, Stamp, prepare};

/// The exit codes of tern-inject and sendmail (qmail-inject's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Queued (or printed with -n).
    Queued = 0,
    /// Permanent failure: usage, syntax, no recipients, permanent refusal.
    Permanent = 100,
    /// Temporary failure: reading, configuration, the queue program.
    Temporary = 111,
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(e as u8)
    }
}

/// A failure: its class and the one line shown to the user.
pub struct Fatal {
    /// The exit code.
    pub exit: Exit,
    /// The one line for the user.
    pub reason: String,
}

impl Fatal {
    /// A failure, temporary or permanent.
    pub fn new(temporary: bool, reason: impl std::fmt::Display) -> Fatal {
        Fatal {
            exit: if temporary {
                Exit::Temporary
            } else {
                Exit::Permanent
            },
            reason: reason.to_string(),
        }
    }
}

/// Reads the controls, prepares the message from `input` and queues (or
/// prints) it. Used by tern-inject and sendmail alike.
pub fn inject(
    home: &tern_control::Home,
    request: &Request,
    print: bool,
    input: &mut dyn BufRead,
) -> Result<(), Fatal> {
    check_stdin()?;
    // CRLF line ends become LF (PHP's mail() writes CRLF headers), as
    // Postfix's sendmail does; a lone CR stays.
    let mut converted =
        std::io::BufReader::with_capacity(64 * 1024, tern_msg::crlf::CrlfToLf::new(input));
    let input: &mut dyn BufRead = &mut converted;
    let controls = read_controls(home)?;
    let env = Environment::from_vars(
        |k| std::env::var_os(k).map(|v| v.as_bytes().to_vec()),
        || tern_sys::user_name(tern_sys::real_uid()),
    );
    let prepared = prepare(
        input,
        request,
        &env,
        &controls,
        &Stamp::generate(),
        &Limits::default(),
    )
    .map_err(|e| Fatal::new(e.is_temporary(), e))?;
    if print {
        return print_message(&prepared, input);
    }
    if prepared.recipients.is_empty() {
        return Err(Fatal::new(false, "no recipients"));
    }
    queue(home, prepared, input)
}

/// Standard input must be open for reading: the standard library reads
/// a closed fd 0 (EBADF) as an empty message, which would be queued and
/// reported as sent. A temporary failure instead (sendmail(8)).
fn check_stdin() -> Result<(), Fatal> {
    use rustix::fs::OFlags;
    match rustix::fs::fcntl_getfl(rustix::stdio::stdin()) {
        Ok(f) if (f & OFlags::RWMODE) == OFlags::WRONLY => Err(Fatal::new(
            true,
            "standard input is open for writing only: cannot read the message",
        )),
        Ok(_) => Ok(()),
        Err(e) => Err(Fatal::new(
            true,
            format!("standard input cannot be read ({e}): no message"),
        )),
    }
}

fn read_controls(home: &tern_control::Home) -> Result<Controls, Fatal> {
    let c = tern_control::Control::new(home);
    let f = |e: tern_control::Error| Fatal::new(true, e);
    fn host(d: impl std::fmt::Display) -> Vec<u8> {
        d.to_string().into_bytes()
    }
    Ok(Controls {
        me: host(c.me().map_err(f)?),
        defaulthost: host(c.defaulthost().map_err(f)?),
        defaultdomain: host(c.defaultdomain().map_err(f)?),
        plusdomain: host(c.plusdomain().map_err(f)?),
        idhost: host(c.idhost().map_err(f)?),
    })
}

fn print_message(prepared: &Prepared, input: &mut dyn BufRead) -> Result<(), Fatal> {
    let mut out = std::io::stdout().lock();
    let mut read_error = None;
    let result =
        write_message(&mut out, prepared, input, &mut read_error).and_then(|_| out.flush());
    match (read_error, result) {
        (Some(e), _) => Err(Fatal::new(true, format!("cannot read the message: {e}"))),
        (None, Err(e)) => Err(Fatal::new(true, format!("cannot write the message: {e}"))),
        (None, Ok(())) => Ok(()),
    }
}

fn queue(
    home: &tern_control::Home,
    prepared: Prepared,
    input: &mut dyn BufRead,
) -> Result<(), Fatal> {
    let client = tern_spool::QueueClient::for_home(home.root());
    let envelope = tern_spool::Envelope {
        sender: prepared.sender.clone(),
        recipients: prepared.recipients.clone(),
    };
    let mut read_error = None;
    let result = client.submit(&envelope, |w| {
        write_message(w, &prepared, input, &mut read_error)
    });
    match (read_error, result) {
        // The input failed: nothing was queued (the envelope was not sent).
        (Some(e), _) => Err(Fatal::new(true, format!("cannot read the message: {e}"))),
        (None, Err(e)) => Err(Fatal::new(e.is_temporary(), e)),
        (None, Ok(())) => Ok(()),
    }
}

/// Writes the prepared header, then copies the rest of `input` untouched.
/// A read failure is recorded in `read_error` (and fails the write).
fn write_message(
    w: &mut dyn Write,
    prepared: &Prepared,
    input: &mut dyn BufRead,
    read_error: &mut Option<std::io::Error>,
) -> std::io::Result<()> {
    w.write_all(&prepared.header)?;
    loop {
        let chunk = match input.fill_buf() {
            Ok([]) => return Ok(()),
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let kind = e.kind();
                *read_error = Some(e);
                return Err(std::io::Error::new(kind, "input failed"));
            }
        };
        let n = chunk.len();
        w.write_all(chunk)?;
        input.consume(n);
    }
}
