//! `tern-deliver`: local delivery of one message to one address, with
//! qmail-local's semantics (the engine behind `tern-local`).
//!
//! * [`dotqmail`]: the `.qmail` file format, parsed without I/O under fixed
//!   bounds (64 KiB, 1000 lines of at most 1000 bytes);
//! * [`search`]: which `.qmail` file handles an address (extensions,
//!   `-default` fall-back, the `-owner` files);
//! * [`message`]: the message window on the queue file (read with
//!   `pread`), the `Return-Path:`, `Delivered-To:` and mbox `From ` lines,
//!   and the `Delivered-To` loop check;
//! * [`maildir`], [`mbox`], [`program`]: the three local delivery kinds;
//!   forwards go through [`tern_spool::QueueClient`];
//! * [`deliver`]: the whole delivery for a [`Request`] (the argument vector
//!   of `tern-local`), returning an [`Outcome`] or an [`Error`] that says
//!   whether it is temporary; [`LocalExit`] maps either to `tern-local`'s
//!   exit code.
//!
//! Trust level: runs as the recipient (never root in a system instance).
//! The message, the envelope sender and the `.qmail` files are untrusted:
//! every length is bounded, every failure is a typed error, nothing
//! panics on input. Anything not proven permanent is temporary, so a
//! message is retried rather than lost.
#![forbid(unsafe_code)]
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod dotqmail;
pub mod maildir;
pub mod mbox;
pub mod message;
pub mod program;
pub mod search;

#[cfg(test)]
mod testutil;

use std::ffi::OsString;
use std::fmt;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use dotqmail::{Instruction, Line};
pub use message::Message;
use tern_spool::{Envelope, QueueClient};

/// The lock wait `tern-local` uses for mbox files.
pub const DEFAULT_LOCK_WAIT: Duration = Duration::from_secs(30);

/// Longest accepted `user`, `local`, `dash`, `ext`, `domain` or `sender`
/// argument, in bytes (the queue's address limit).
pub const MAX_ARG: usize = tern_spool::MAX_ADDRESS;

/// Longest accepted `home` argument, in bytes.
pub const MAX_HOME: usize = 4096;

/// What kind of failure an [`Error`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Bad argument vector (a caller bug): temporary.
    Usage,
    /// The home directory is not absolute or cannot be used: temporary.
    HomeUnusable,
    /// The home directory is writable by others: temporary.
    HomeWritable,
    /// The home directory is sticky (the user is editing): temporary.
    HomeSticky,
    /// The message cannot be read: temporary.
    MessageUnreadable,
    /// The message already has our `Delivered-To:` line: permanent.
    Loop,
    /// No `.qmail` file for an extension address: permanent.
    NoMailbox,
    /// A `.qmail` file cannot be opened or read: temporary.
    DotQmailUnreadable,
    /// A `.qmail` file is writable by others: temporary.
    DotQmailWritable,
    /// A `.qmail` file (or `defaultdelivery`) does not parse: temporary.
    DotQmailSyntax,
    /// A forward-only `.qmail` file asks for a local delivery: temporary.
    ForwardOnly,
    /// Maildir delivery failed: temporary.
    Maildir,
    /// mbox delivery failed: temporary.
    Mbox,
    /// The mbox stayed locked for the whole wait: temporary.
    MboxLocked,
    /// A program failed permanently.
    ProgramPermanent,
    /// A program failed temporarily (or could not run).
    ProgramTemporary,
    /// The queue refused the forwarded copy permanently.
    ForwardPermanent,
    /// Forwarding failed temporarily.
    ForwardTemporary,
}

impl ErrorKind {
    /// True unless retrying can never help.
    pub fn is_temporary(self) -> bool {
        !matches!(
            self,
            ErrorKind::Loop
                | ErrorKind::NoMailbox
                | ErrorKind::ProgramPermanent
                | ErrorKind::ForwardPermanent
        )
    }
}

/// A failed delivery: its kind and the report text (qmail style, ending in
/// an enhanced status code where one applies).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    text: String,
}

impl Error {
    /// An error of `kind` with report text `text`.
    pub fn new(kind: ErrorKind, text: impl Into<String>) -> Error {
        Error {
            kind,
            text: text.into(),
        }
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// True unless retrying can never help.
    pub fn is_temporary(&self) -> bool {
        self.kind.is_temporary()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::error::Error for Error {}

/// `tern-local`'s exit codes: the contract with tern-lspawn, defined once in
/// `tern-ipc`.
pub use tern_ipc::local::LocalExit;

/// The exit code for a delivery result.
pub fn exit_code(result: &Result<Outcome, Error>) -> LocalExit {
    match result {
        Ok(o) if o.stopped => LocalExit::DeliveredStop,
        Ok(_) => LocalExit::Delivered,
        Err(e) if e.is_temporary() => LocalExit::Temporary,
        Err(_) => LocalExit::Permanent,
    }
}

/// One delivery, as `tern-lspawn` asks for it:
/// `tern-local -- user home local dash ext domain sender defaultdelivery`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The user name (for `USER`).
    pub user: Vec<u8>,
    /// The home directory (absolute).
    pub home: PathBuf,
    /// The whole local part of the recipient.
    pub local: Vec<u8>,
    /// `-` or empty: empty means the user's own address.
    pub dash: Vec<u8>,
    /// The extension (unfolded).
    pub ext: Vec<u8>,
    /// The recipient's domain.
    pub domain: Vec<u8>,
    /// The envelope sender (may be empty).
    pub sender: Vec<u8>,
    /// `.qmail` text used when there is no file (or an empty one).
    pub default_delivery: Vec<u8>,
}

fn usage(what: &str) -> Error {
    Error::new(
        ErrorKind::Usage,
        format!(
            "usage: tern-local -- user home local dash ext domain sender defaultdelivery ({what}) (#4.3.5)"
        ),
    )
}

impl Request {
    /// Parses the arguments after the program name: an optional `--`, then
    /// exactly eight arguments.
    ///
    /// # Errors
    /// [`ErrorKind::Usage`] for a wrong count or an argument over its
    /// limit ([`MAX_ARG`], [`MAX_HOME`], [`dotqmail::MAX_FILE`]).
    pub fn from_args(args: &[OsString]) -> Result<Request, Error> {
        let args = match args.first() {
            Some(a) if a == "--" => &args[1..],
            _ => args,
        };
        let [user, home, local, dash, ext, domain, sender, dd] = args else {
            return Err(usage("wrong number of arguments"));
        };
        let b = |a: &OsString| a.as_bytes().to_vec();
        let names = ["user", "local", "dash", "ext", "domain", "sender"];
        for (name, a) in names.iter().zip([user, local, dash, ext, domain, sender]) {
            if a.len() > MAX_ARG {
                return Err(usage(&format!("{name} is too long")));
            }
        }
        if home.len() > MAX_HOME {
            return Err(usage("home is too long"));
        }
        if dd.len() > dotqmail::MAX_FILE {
            return Err(usage("defaultdelivery is too long"));
        }
        Ok(Request {
            user: b(user),
            home: PathBuf::from(home),
            local: b(local),
            dash: b(dash),
            ext: b(ext),
            domain: b(domain),
            sender: b(sender),
            default_delivery: dd.clone().into_vec(),
        })
    }

    /// `local@domain`.
    pub fn recipient(&self) -> Vec<u8> {
        message::recipient(&self.local, &self.domain)
    }
}

/// How deliveries are carried out (what is not in the [`Request`]).
#[derive(Debug, Clone)]
pub struct Settings {
    /// How long to wait for an mbox lock ([`DEFAULT_LOCK_WAIT`]).
    pub lock_wait: Duration,
    /// The queue program for forwards.
    pub queue: QueueClient,
    /// The host name in Maildir file names.
    pub host: String,
    /// `PATH` given to programs.
    pub path: Vec<u8>,
    /// `TERN_HOME` given to programs, when known.
    pub tern_home: Option<PathBuf>,
}

impl Settings {
    /// The settings `tern-local` uses for the instance at `tern_home`: a
    /// 30 s lock wait, the instance's queue program, the node name, and
    /// `PATH=/usr/local/bin:/usr/bin:/bin`.
    pub fn for_instance(tern_home: &Path) -> Settings {
        Settings {
            lock_wait: DEFAULT_LOCK_WAIT,
            queue: QueueClient::for_home(tern_home),
            host: tern_sys::node_name(),
            path: b"/usr/local/bin:/usr/bin:/bin".to_vec(),
            tern_home: Some(tern_home.to_path_buf()),
        }
    }
}

/// The mbox lock wait from the value of `TERN_LOCAL_LOCK_WAIT` (whole
/// seconds, 0 to [`MAX_LOCK_WAIT`]); absent or invalid: [`DEFAULT_LOCK_WAIT`].
/// Tests use it to shorten the wait; `tern-lspawn` never sets it.
pub fn lock_wait_from(value: Option<&std::ffi::OsStr>) -> Duration {
    value
        .and_then(|v| v.to_str())
        .and_then(|v| v.parse::<u64>().ok())
        .map(Duration::from_secs)
        .filter(|d| *d <= MAX_LOCK_WAIT)
        .unwrap_or(DEFAULT_LOCK_WAIT)
}

/// The longest lock wait [`lock_wait_from`] accepts.
pub const MAX_LOCK_WAIT: Duration = Duration::from_secs(3600);

/// A successful delivery.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Maildir and mbox deliveries.
    pub files: usize,
    /// Forward addresses.
    pub forwards: usize,
    /// Programs run.
    pub programs: usize,
    /// A program exited 99: later lines were skipped.
    pub stopped: bool,
    /// What the programs printed (at most [`program::MAX_OUTPUT`] bytes).
    pub output: Vec<u8>,
}

impl Outcome {
    /// The report text: program output (if any), then `did F+W+P`.
    pub fn report(&self) -> String {
        let mut s = String::from_utf8_lossy(self.output.trim_ascii()).into_owned();
        if !s.is_empty() {
            s.push('\n');
        }
        s.push_str(&format!(
            "did {}+{}+{}",
            self.files, self.forwards, self.programs
        ));
        s
    }
}

/// Checks the home directory: absolute, a directory, not writable by
/// others, not sticky.
fn check_home(home: &Path) -> Result<(), Error> {
    if !home.is_absolute() {
        return Err(Error::new(
            ErrorKind::HomeUnusable,
            "Uh-oh: home directory is not an absolute path. (#4.3.0)",
        ));
    }
    let meta = std::fs::metadata(home).map_err(|e| {
        Error::new(
            ErrorKind::HomeUnusable,
            format!("Unable to switch to {}: {e}. (#4.3.0)", home.display()),
        )
    })?;
    if !meta.is_dir() {
        return Err(Error::new(
            ErrorKind::HomeUnusable,
            format!(
                "Unable to switch to {}: not a directory. (#4.3.0)",
                home.display()
            ),
        ));
    }
    let mode = meta.permissions().mode();
    if mode & 0o002 != 0 {
        return Err(Error::new(
            ErrorKind::HomeWritable,
            "Uh-oh: home directory is writable. (#4.7.0)",
        ));
    }
    if mode & 0o1000 != 0 {
        return Err(Error::new(
            ErrorKind::HomeSticky,
            "Home directory is sticky: user is editing his .qmail file. (#4.2.1)",
        ));
    }
    Ok(())
}

/// The instructions to follow, and where they came from.
struct Plan {
    lines: Vec<Line>,
    /// The lines are `control/defaultdelivery` (no `.qmail` file): a
    /// missing `./Maildir/` of the user's own home is created.
    from_default: bool,
    /// Range of the extension matched by `-default`.
    default: Option<std::ops::Range<usize>>,
}

fn plan(req: &Request) -> Result<Plan, Error> {
    let found = search::find(&req.home, &req.dash, &req.ext)?;
    let (text, forward_only, default, what) = match &found {
        Some(f) if !f.contents.is_empty() => (
            f.contents.as_slice(),
            f.forward_only,
            f.default.clone(),
            f.path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        ),
        Some(f) => (
            req.default_delivery.as_slice(),
            false,
            f.default.clone(),
            "defaultdelivery".to_string(),
        ),
        None if req.dash.is_empty() => (
            req.default_delivery.as_slice(),
            false,
            None,
            "defaultdelivery".to_string(),
        ),
        None => {
            return Err(Error::new(
                ErrorKind::NoMailbox,
                "Sorry, no mailbox here by that name. (#5.1.1)",
            ));
        }
    };
    let lines = dotqmail::parse(text).map_err(|e| {
        Error::new(
            ErrorKind::DotQmailSyntax,
            format!("Uh-oh: {what}: {e}. (#4.2.1)"),
        )
    })?;
    // `+list` makes the rest of the file forward-only, as qmail-local does;
    // checked here, before anything is delivered, like the execute bit.
    if let Some(flag) = lines
        .iter()
        .position(|l| l.instruction == Instruction::ListFlag)
        && let Some(l) = lines[flag..].iter().find(|l| l.instruction.is_local())
    {
        return Err(Error::new(
            ErrorKind::ForwardOnly,
            format!(
                "Uh-oh: {what} has +list (forwards only) before line {}, a program, mbox or maildir delivery. (#4.7.0)",
                l.number
            ),
        ));
    }
    if forward_only && let Some(l) = lines.iter().find(|l| l.instruction.is_local()) {
        return Err(Error::new(
            ErrorKind::ForwardOnly,
            format!(
                "Uh-oh: {what} has the owner-execute bit set (forwards only) but line {} is a program, mbox or maildir delivery. (#4.7.0)",
                l.number
            ),
        ));
    }
    let from_default = what == "defaultdelivery";
    Ok(Plan {
        lines,
        default,
        from_default,
    })
}

/// For the default delivery: true when `path` (a `.qmail` Maildir line) is
/// a plain directory of the home (`./Maildir/`, no `..`, no deeper path)
/// and the home belongs to the user we run as, so creating it there is
/// what the user would do.
fn may_create_maildir(home: &Path, path: &[u8]) -> bool {
    let Some(name) = path.strip_prefix(b"./").and_then(|p| p.strip_suffix(b"/")) else {
        return false;
    };
    let plain = !name.is_empty() && !name.contains(&b'/') && name != b"." && name != b"..";
    plain
        && std::fs::metadata(home).is_ok_and(|m| {
            use std::os::unix::fs::MetadataExt;
            m.is_dir() && m.uid() == tern_sys::effective_uid()
        })
}

/// The sender for forwarded copies (qmail's `NEWSENDER`): the original
/// sender, unless it is not a bounce (`""`, `#@[]`) and
/// `.qmail<dash><ext>-owner` exists: then `local-owner@domain`, or, when
/// `.qmail<dash><ext>-owner-default` exists too, the VERP form
/// `local-owner-@domain-@[]`.
///
/// # Errors
/// A `-owner` file cannot be checked (temporary).
pub fn new_sender(req: &Request) -> Result<Vec<u8>, Error> {
    if req.sender.is_empty() || req.sender == b"#@[]" {
        return Ok(req.sender.clone());
    }
    let base = [b".qmail", &req.dash[..], &search::fold_ext(&req.ext)].concat();
    if !search::exists(&req.home, &[&base[..], b"-owner"].concat())? {
        return Ok(req.sender.clone());
    }
    if search::exists(&req.home, &[&base[..], b"-owner-default"].concat())? {
        Ok([&req.local[..], b"-owner-@", &req.domain, b"-@[]"].concat())
    } else {
        Ok([&req.local[..], b"-owner@", &req.domain].concat())
    }
}

/// `host` with `n` trailing dot-components removed (qmail's `HOST2`..;
/// a host with too few dots stays as it is).
fn host_n(host: &[u8], n: usize) -> Vec<u8> {
    let mut h = host;
    for _ in 0..n {
        if let Some(dot) = memchr::memrchr(b'.', h) {
            h = &h[..dot];
        }
    }
    h.to_vec()
}

/// `ext` after its `n`th dash (qmail's `EXT2`..; empty when it has fewer).
fn ext_n(ext: &[u8], n: usize) -> Vec<u8> {
    let mut e = ext;
    for _ in 0..n {
        match memchr::memchr(b'-', e) {
            Some(d) => e = &e[d + 1..],
            None => return Vec::new(),
        }
    }
    e.to_vec()
}

/// The environment of a `|program` line.
fn program_env(
    req: &Request,
    settings: &Settings,
    new_sender: &[u8],
    default: Option<&[u8]>,
    lines: (&[u8], &[u8], &[u8]),
) -> Vec<(&'static str, Vec<u8>)> {
    let (dt, rp, uf) = lines;
    let mut env = vec![
        ("SENDER", req.sender.clone()),
        ("NEWSENDER", new_sender.to_vec()),
        ("RECIPIENT", req.recipient()),
        ("USER", req.user.clone()),
        ("HOME", req.home.as_os_str().as_bytes().to_vec()),
        ("HOST", req.domain.clone()),
        ("HOST2", host_n(&req.domain, 1)),
        ("HOST3", host_n(&req.domain, 2)),
        ("HOST4", host_n(&req.domain, 3)),
        ("LOCAL", req.local.clone()),
        ("EXT", req.ext.clone()),
        ("EXT2", ext_n(&req.ext, 1)),
        ("EXT3", ext_n(&req.ext, 2)),
        ("EXT4", ext_n(&req.ext, 3)),
        ("DTLINE", dt.to_vec()),
        ("RPLINE", rp.to_vec()),
        ("UFLINE", uf.to_vec()),
        ("PATH", settings.path.clone()),
    ];
    if let Some(d) = default {
        env.push(("DEFAULT", d.to_vec()));
    }
    if let Some(h) = &settings.tern_home {
        env.push(("TERN_HOME", h.as_os_str().as_bytes().to_vec()));
        // qmail's own tools (condredirect, forward, qreceipt, ezmlm) queue
        // through `qmail-queue` unless QMAILQUEUE names another program:
        // into Tern's queue, never into an old qmail queue.
        env.push((
            "QMAILQUEUE",
            h.join("bin/tern-queue").as_os_str().as_bytes().to_vec(),
        ));
    }
    env
}

fn mailbox_path(home: &Path, path: &[u8]) -> PathBuf {
    home.join(std::ffi::OsStr::from_bytes(path))
}

/// Delivers `message` for `req`: the home checks, the loop check, the
/// `.qmail` search, every line in order (forwards collected and sent last,
/// in one queue submission, with `Delivered-To:` prepended).
///
/// # Errors
/// The first failure; later lines are not tried, forwards not sent.
pub fn deliver(req: &Request, message: &Message, settings: &Settings) -> Result<Outcome, Error> {
    check_home(&req.home)?;
    let recipient = req.recipient();
    let looping = message::has_delivered_to(message, &recipient).map_err(|e| {
        Error::new(
            ErrorKind::MessageUnreadable,
            format!("Unable to read message: {e}. (#4.3.0)"),
        )
    })?;
    if looping {
        return Err(Error::new(
            ErrorKind::Loop,
            "This message is looping: it already has my Delivered-To line. (#5.4.6)",
        ));
    }
    let plan = plan(req)?;
    let dtline = message::delivered_to_line(&req.local, &req.domain);
    let rpline = message::return_path_line(&req.sender);
    let ufline = message::from_line(&req.sender, tern_date::now());
    let prefix = [&rpline[..], &dtline[..]].concat();
    let default = plan.default.as_ref().and_then(|r| req.ext.get(r.clone()));
    let mut newsender: Option<Vec<u8>> = None;
    let mut out = Outcome::default();
    let mut forwards = Vec::new();
    let mut program_input = None;
    for line in &plan.lines {
        match &line.instruction {
            Instruction::Forward(addr) => forwards.push(addr.clone()),
            Instruction::ListFlag => {}
            Instruction::Maildir(p) => {
                if plan.from_default && may_create_maildir(&req.home, p) {
                    maildir::create_missing(&mailbox_path(&req.home, p))?;
                }
                maildir::deliver(
                    &mailbox_path(&req.home, p),
                    &settings.host,
                    &prefix,
                    message,
                )?;
                out.files += 1;
            }
            Instruction::Mbox(p) => {
                mbox::deliver(
                    &mailbox_path(&req.home, p),
                    &ufline,
                    &prefix,
                    message,
                    settings.lock_wait,
                )?;
                out.files += 1;
            }
            Instruction::Program(cmd) => {
                if newsender.is_none() {
                    newsender = Some(new_sender(req)?);
                }
                let ns = newsender.as_deref().unwrap_or_default();
                let env = program_env(req, settings, ns, default, (&dtline, &rpline, &ufline));
                let input = program_stdin(&mut program_input, message)?;
                let run = program::run(cmd, &req.home, &env, input)?;
                out.programs += 1;
                let room = program::MAX_OUTPUT.saturating_sub(out.output.len());
                out.output
                    .extend_from_slice(&run.output[..run.output.len().min(room)]);
                if run.stop {
                    out.stopped = true;
                    break;
                }
            }
        }
    }
    if !forwards.is_empty() {
        let sender = match newsender {
            Some(s) => s,
            None => new_sender(req)?,
        };
        forward(settings, sender, &forwards, &dtline, message)?;
        out.forwards = forwards.len();
    }
    Ok(out)
}

/// A fresh descriptor on the sealed copy of the message, rewound.
fn program_stdin(
    copy: &mut Option<std::fs::File>,
    message: &Message,
) -> Result<std::fs::File, Error> {
    use std::io::{Seek, SeekFrom};
    let err = |e: std::io::Error| {
        Error::new(
            ErrorKind::ProgramTemporary,
            format!("Unable to copy message for program: {e}. (#4.3.0)"),
        )
    };
    if copy.is_none() {
        *copy = Some(message.sealed_copy().map_err(err)?);
    }
    let file = copy.as_ref().expect("filled above");
    let mut dup = file.try_clone().map_err(err)?;
    dup.seek(SeekFrom::Start(0)).map_err(err)?;
    Ok(dup)
}

/// Queues one copy of the message, with `dtline` prepended, for all
/// forward addresses.
fn forward(
    settings: &Settings,
    sender: Vec<u8>,
    recipients: &[Vec<u8>],
    dtline: &[u8],
    message: &Message,
) -> Result<(), Error> {
    let envelope = Envelope {
        sender,
        recipients: recipients.to_vec(),
    };
    settings
        .queue
        .submit(&envelope, |w| {
            w.write_all(dtline)?;
            message.copy_to(w).map(|_| ())
        })
        .map_err(|e| {
            let kind = if e.is_temporary() {
                ErrorKind::ForwardTemporary
            } else {
                ErrorKind::ForwardPermanent
            };
            Error::new(kind, format!("Unable to forward message: {e}"))
        })
}

#[cfg(test)]
mod tests;
