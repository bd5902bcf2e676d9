//! Command lines of the injection programs, parsed by hand.
//!
//! * [`parse_inject`]: `tern-inject` (qmail-inject's options `-a -h -A -H
//!   -f -n -N`, getopt style).
//! * [`parse_sendmail`]: `sendmail` / `mailq` / `newaliases`, a forgiving
//!   parser for the historical sendmail option alphabet. clap cannot
//!   express it: values attached to single-dash letters whose meaning
//!   depends on the letter (`-oi`, `-oem`, `-FCron Daemon`, `-B8BITMIME`,
//!   `-q15m`, `-bm`), options accepted after operands (`sendmail -i a@b -f
//!   x@y`, as git send-email calls it), and dozens of letters accepted only
//!   to be ignored.
//!
//! Arguments are bytes (`OsStr` on Unix); nothing here touches the
//! process environment.

use thiserror::Error;

use crate::inject::RecipientMode;

/// A command-line error (exit 100 in both programs).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum UsageError {
    /// An option letter that is not known.
    #[error("unknown option -{0}")]
    UnknownOption(char),
    /// An option that needs a value came last.
    #[error("option -{0} needs a value")]
    MissingValue(char),
    /// A long option (`--name`) other than `--`, `--help`, `--version`.
    #[error("unknown long option")]
    UnknownLongOption,
    /// `-h` (header recipients only) with recipient arguments.
    #[error("-h takes recipients from the header only; remove the address arguments")]
    HeaderModeWithArguments,
    /// sendmail without `-t` and without recipient arguments.
    #[error("no recipients given (name them as arguments, or use -t)")]
    NoRecipients,
    /// sendmail `-b` with a mode other than `m`, `p`, `s`.
    #[error("unsupported mode -b{0} (only -bm, -bp and -bs exist)")]
    UnsupportedMode(char),
    /// Invoked as `newaliases`.
    #[error("there is no alias database to rebuild: aliases are ~alias/.qmail-* files")]
    Newaliases,
}

/// Replaces a byte that would not print cleanly by `?`, for messages.
fn shown(b: u8) -> char {
    if b.is_ascii_graphic() { b as char } else { '?' }
}

/// What `tern-inject` was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InjectCommand {
    /// Inject (or print) a message.
    Run(InjectOptions),
    /// `--help`.
    Help,
    /// `--version`.
    Version,
}

/// The options of `tern-inject`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InjectOptions {
    /// `-a`, `-h`, `-A`, `-H` (the last one given wins).
    pub mode: RecipientMode,
    /// `-f SENDER`: the envelope sender, as given (parse it with
    /// `address::parse_sender`).
    pub sender: Option<Vec<u8>>,
    /// `-n`: print the message instead of queueing it (`-N` undoes it).
    pub print: bool,
    /// The recipient arguments.
    pub recipients: Vec<Vec<u8>>,
}

/// Parses `tern-inject`'s arguments (without `argv[0]`). Options come first
/// (getopt style: clustered letters, `-fSENDER` or `-f SENDER`); the first
/// argument that is not an option, or `--`, ends them.
pub fn parse_inject(args: &[Vec<u8>]) -> Result<InjectCommand, UsageError> {
    let mut o = InjectOptions::default();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        if arg == b"--" {
            i += 1;
            break;
        }
        if arg == b"--help" {
            return Ok(InjectCommand::Help);
        }
        if arg == b"--version" {
            return Ok(InjectCommand::Version);
        }
        if arg.starts_with(b"--") {
            return Err(UsageError::UnknownLongOption);
        }
        if arg.len() < 2 || arg[0] != b'-' {
            break;
        }
        let mut j = 1;
        while j < arg.len() {
            match arg[j] {
                b'a' => o.mode = RecipientMode::Args,
                b'h' => o.mode = RecipientMode::Header,
                b'A' => o.mode = RecipientMode::ArgsElseHeader,
                b'H' => o.mode = RecipientMode::HeaderAndArgs,
                b'n' => o.print = true,
                b'N' => o.print = false,
                b'f' => {
                    if j + 1 < arg.len() {
                        o.sender = Some(arg[j + 1..].to_vec());
                    } else {
                        i += 1;
                        let v = args.get(i).ok_or(UsageError::MissingValue('f'))?;
                        o.sender = Some(v.clone());
                    }
                    j = arg.len();
                    continue;
                }
                other => return Err(UsageError::UnknownOption(shown(other))),
            }
            j += 1;
        }
        i += 1;
    }
    o.recipients = args[i.min(args.len())..].to_vec();
    if o.mode == RecipientMode::Header && !o.recipients.is_empty() {
        return Err(UsageError::HeaderModeWithArguments);
    }
    Ok(InjectCommand::Run(o))
}

/// What `sendmail` was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendmailCommand {
    /// Send a message read from standard input (`-bm`, the default).
    Send(SendmailOptions),
    /// List the queue (`-bp`, or invoked as `mailq`).
    ListQueue,
    /// `--help`.
    Help,
    /// `--version`.
    Version,
    /// `-q`, `-q`*anything*: run the queue once (an interval such as
    /// `-q15m` is ignored: the cron entry sets the rhythm).
    RunQueue,
    /// `-bs`: speak SMTP on standard input and output (runs `tern-smtpd`).
    Smtp,
}

/// The options of `sendmail` that matter.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SendmailOptions {
    /// `-t`: recipients from the header (To, Cc, Bcc), plus the arguments.
    pub extract: bool,
    /// `-i`, `-oi`: a line with a single `.` is content, not the end.
    pub ignore_dots: bool,
    /// `-f SENDER`, `-r SENDER`: the envelope sender, as given.
    pub sender: Option<Vec<u8>>,
    /// `-F NAME`: the full name for an added `From:`.
    pub full_name: Option<Vec<u8>>,
    /// The recipient arguments.
    pub recipients: Vec<Vec<u8>>,
}

/// Flags accepted and ignored (they take no value).
const IGNORED_FLAGS: &[u8] = b"vmxnUEJGS";
/// Letters accepted and ignored that take a value (attached, or the next
/// argument).
const IGNORED_WITH_VALUE: &[u8] = b"eBpNRVXhLACOd";

/// Parses `sendmail`'s arguments (without `argv[0]`); `name` is the basename
/// of `argv[0]` (`mailq` lists the queue, `newaliases` is refused).
///
/// Options may appear anywhere before `--` (as GNU getopt permutes), may
/// be clustered (`-ti`), and take values attached (`-fuser`) or as the
/// next argument (`-f user`). Letters that a sendmail-compatible program
/// must accept but that mean nothing here are ignored, with their values.
pub fn parse_sendmail(name: &[u8], args: &[Vec<u8>]) -> Result<SendmailCommand, UsageError> {
    if name == b"newaliases" {
        return Err(UsageError::Newaliases);
    }
    let mut list_queue = name == b"mailq";
    let mut o = SendmailOptions::default();
    let mut i = 0;
    let mut options_done = false;
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        if options_done || arg.len() < 2 || arg[0] != b'-' {
            o.recipients.push(arg.clone());
            continue;
        }
        if arg == b"--" {
            options_done = true;
            continue;
        }
        if arg == b"--help" {
            return Ok(SendmailCommand::Help);
        }
        if arg == b"--version" {
            return Ok(SendmailCommand::Version);
        }
        if arg.starts_with(b"--") {
            return Err(UsageError::UnknownLongOption);
        }
        let mut j = 1;
        while j < arg.len() {
            let letter = arg[j];
            let attached = &arg[j + 1..];
            // The value of a letter that takes one: attached, else the next
            // argument.
            let value = |i: &mut usize| -> Result<Vec<u8>, UsageError> {
                if !attached.is_empty() {
                    Ok(attached.to_vec())
                } else {
                    let v = args
                        .get(*i)
                        .ok_or(UsageError::MissingValue(shown(letter)))?;
                    *i += 1;
                    Ok(v.clone())
                }
            };
            match letter {
                b't' => o.extract = true,
                b'i' => o.ignore_dots = true,
                b'f' | b'r' => {
                    o.sender = Some(value(&mut i)?);
                    break;
                }
                b'F' => {
                    o.full_name = Some(value(&mut i)?);
                    break;
                }
                b'o' => {
                    let v = value(&mut i)?;
                    if v == b"i" {
                        o.ignore_dots = true;
                    }
                    break;
                }
                b'b' => {
                    let v = value(&mut i)?;
                    match v.as_slice() {
                        b"m" => list_queue = false,
                        b"p" => list_queue = true,
                        b"s" => return Ok(SendmailCommand::Smtp),
                        other => {
                            return Err(UsageError::UnsupportedMode(
                                other.first().map_or('?', |&b| shown(b)),
                            ));
                        }
                    }
                    break;
                }
                b'q' => return Ok(SendmailCommand::RunQueue),
                l if IGNORED_FLAGS.contains(&l) => {}
                l if IGNORED_WITH_VALUE.contains(&l) => {
                    if l == b'd' {
                        // -dX.Y (debug): the value is attached only.
                        break;
                    }
                    value(&mut i)?;
                    break;
                }
                other => return Err(UsageError::UnknownOption(shown(other))),
            }
            j += 1;
        }
    }
    if list_queue {
        return Ok(SendmailCommand::ListQueue);
    }
    if !o.extract && o.recipients.is_empty() {
        return Err(UsageError::NoRecipients);
    }
    Ok(SendmailCommand::Send(o))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &[&str]) -> Vec<Vec<u8>> {
        s.iter().map(|a| a.as_bytes().to_vec()).collect()
    }

    fn sm(s: &[&str]) -> Result<SendmailCommand, UsageError> {
        parse_sendmail(b"sendmail", &argv(s))
    }

    fn send(
        extract: bool,
        dots: bool,
        f: Option<&str>,
        name: Option<&str>,
        r: &[&str],
    ) -> SendmailCommand {
        SendmailCommand::Send(SendmailOptions {
            extract,
            ignore_dots: dots,
            sender: f.map(|s| s.as_bytes().to_vec()),
            full_name: name.map(|s| s.as_bytes().to_vec()),
            recipients: argv(r),
        })
    }

    #[test]
    fn sendmail_bad_invocations() {
        use UsageError::*;
        let table: &[(&[&str], UsageError)] = &[
            (&[], NoRecipients),
            (&["-i"], NoRecipients),
            (&["-oi", "-f", "x@y"], NoRecipients),
            (&["-k", "a@b"], UnknownOption('k')),
            (&["-ti\x01"], UnknownOption('?')),
            (&["-f"], MissingValue('f')),
            (&["a@b", "-F"], MissingValue('F')),
            (&["-o"], MissingValue('o')),
            (&["-B"], MissingValue('B')),
            (&["--verbose", "a@b"], UnknownLongOption),
            (&["-bd"], UnsupportedMode('d')),
            (&["-bi"], UnsupportedMode('i')),
            (&["-bv", "a@b"], UnsupportedMode('v')),
            (&["-bt"], UnsupportedMode('t')),
        ];
        for (args, want) in table {
            assert_eq!(sm(args).as_ref(), Err(want), "{args:?}");
        }
        assert_eq!(
            parse_sendmail(b"newaliases", &[]),
            Err(UsageError::Newaliases)
        );
    }

    #[test]
    fn sendmail_real_world_invocations() {
        let table: &[(&[&str], SendmailCommand)] = &[
            // cron (cronie)
            (
                &["-FCronDaemon", "-i", "-B8BITMIME", "-oem", "user"],
                send(false, true, None, Some("CronDaemon"), &["user"]),
            ),
            // mutt
            (
                &["-oem", "-oi", "--", "a@b"],
                send(false, true, None, None, &["a@b"]),
            ),
            // PHP mail()
            (&["-t", "-i"], send(true, true, None, None, &[])),
            // PHP with sendmail_from / -f in additional parameters
            (
                &["-t", "-i", "-fweb@x.y"],
                send(true, true, Some("web@x.y"), None, &[]),
            ),
            // git send-email: options after operands
            (
                &["-i", "a@b", "-f", "x@y"],
                send(false, true, Some("x@y"), None, &["a@b"]),
            ),
            // mailx / bsd-mailx
            (
                &["-i", "--", "a@b", "c@d"],
                send(false, true, None, None, &["a@b", "c@d"]),
            ),
            // logwatch, smartd and friends
            (&["-t"], send(true, false, None, None, &[])),
            // Python/perl scripts
            (&["-oi", "-t"], send(true, true, None, None, &[])),
            (&["-ti"], send(true, true, None, None, &[])),
            (
                &["-it", "extra@x.y"],
                send(true, true, None, None, &["extra@x.y"]),
            ),
            // mdadm, exim-style calls
            (&["-odb", "-oi", "-t"], send(true, true, None, None, &[])),
            // fetchmail, procmail
            (
                &["-oem", "-f", "", "a@b"],
                send(false, false, Some(""), None, &["a@b"]),
            ),
            (
                &["-f<>", "a@b"],
                send(false, false, Some("<>"), None, &["a@b"]),
            ),
            (
                &["-r", "x@y", "a@b"],
                send(false, false, Some("x@y"), None, &["a@b"]),
            ),
            (
                &["-F", "Cron Daemon", "a@b"],
                send(false, false, None, Some("Cron Daemon"), &["a@b"]),
            ),
            // getopt-style -o with a separate value
            (&["-o", "i", "a@b"], send(false, true, None, None, &["a@b"])),
            // ignored letters with and without values
            (
                &[
                    "-v",
                    "-m",
                    "-x",
                    "-n",
                    "-U",
                    "-E",
                    "-J",
                    "-h",
                    "17",
                    "-N",
                    "never",
                    "-R",
                    "hdrs",
                    "-V",
                    "envid",
                    "-X",
                    "/tmp/log",
                    "-pESMTP:host",
                    "-e",
                    "m",
                    "-L",
                    "tag",
                    "-d0.1",
                    "-Am",
                    "-C/etc/cf",
                    "-O",
                    "Timeout=1",
                    "a@b",
                ],
                send(false, false, None, None, &["a@b"]),
            ),
            (&["-bm", "a@b"], send(false, false, None, None, &["a@b"])),
            (
                &["-vi", "-oee", "a@b"],
                send(false, true, None, None, &["a@b"]),
            ),
            // a lone dash and anything after -- are recipients
            (&["-", "a@b"], send(false, false, None, None, &["-", "a@b"])),
            (
                &["--", "-t", "a@b"],
                send(false, false, None, None, &["-t", "a@b"]),
            ),
            // -bp lists the queue
            (&["-bp"], SendmailCommand::ListQueue),
            (&["-v", "-bp"], SendmailCommand::ListQueue),
            (&["--help"], SendmailCommand::Help),
            (&["-bs"], SendmailCommand::Smtp),
            (&["-oi", "-bs"], SendmailCommand::Smtp),
            (&["-q"], SendmailCommand::RunQueue),
            (&["-q15m"], SendmailCommand::RunQueue),
            (&["-v", "-qf"], SendmailCommand::RunQueue),
            (&["-t", "--version"], SendmailCommand::Version),
        ];
        for (args, want) in table {
            assert_eq!(sm(args).as_ref(), Ok(want), "{args:?}");
        }
        assert_eq!(
            parse_sendmail(b"mailq", &[]),
            Ok(SendmailCommand::ListQueue)
        );
        assert_eq!(
            parse_sendmail(b"mailq", &argv(&["-v"])),
            Ok(SendmailCommand::ListQueue)
        );
        assert_eq!(
            parse_sendmail(b"mailq", &argv(&["-bm", "a@b"])),
            Ok(send(false, false, None, None, &["a@b"]))
        );
    }

    #[test]
    fn inject_bad_invocations() {
        use UsageError::*;
        let table: &[(&[&str], UsageError)] = &[
            (&["-x"], UnknownOption('x')),
            (&["-f"], MissingValue('f')),
            (&["-af"], MissingValue('f')),
            (&["--frobnicate"], UnknownLongOption),
            (&["-h", "a@b"], HeaderModeWithArguments),
            (&["-a", "-h", "--", "a@b"], HeaderModeWithArguments),
        ];
        for (args, want) in table {
            assert_eq!(parse_inject(&argv(args)).as_ref(), Err(want), "{args:?}");
        }
    }

    #[test]
    fn inject_invocations() {
        let run = |mode, sender: Option<&str>, print, r: &[&str]| {
            InjectCommand::Run(InjectOptions {
                mode,
                sender: sender.map(|s| s.as_bytes().to_vec()),
                print,
                recipients: argv(r),
            })
        };
        use RecipientMode::*;
        let table: &[(&[&str], InjectCommand)] = &[
            (&[], run(ArgsElseHeader, None, false, &[])),
            (&["a@b"], run(ArgsElseHeader, None, false, &["a@b"])),
            (&["-a", "a@b"], run(Args, None, false, &["a@b"])),
            (&["-h"], run(Header, None, false, &[])),
            (&["-H", "a@b"], run(HeaderAndArgs, None, false, &["a@b"])),
            (&["-hA"], run(ArgsElseHeader, None, false, &[])),
            (
                &["-n", "-fx@y"],
                run(ArgsElseHeader, Some("x@y"), true, &[]),
            ),
            (
                &["-nN", "-f", "", "a"],
                run(ArgsElseHeader, Some(""), false, &["a"]),
            ),
            (&["-af", "x@y", "a"], run(Args, Some("x@y"), false, &["a"])),
            (&["--", "-a"], run(ArgsElseHeader, None, false, &["-a"])),
            // The first operand ends the options (getopt without permutation).
            (
                &["a@b", "-n"],
                run(ArgsElseHeader, None, false, &["a@b", "-n"]),
            ),
            (&["-", "-n"], run(ArgsElseHeader, None, false, &["-", "-n"])),
            (&["--help"], InjectCommand::Help),
            (&["--version"], InjectCommand::Version),
        ];
        for (args, want) in table {
            assert_eq!(parse_inject(&argv(args)).as_ref(), Ok(want), "{args:?}");
        }
    }
}
