//! Injection fix-ups (what `tern-inject` and `sendmail` do to a message
//! before it is queued), in the manner of qmail-inject:
//!
//! * `Bcc:` and `Resent-Bcc:` are removed (their addresses still receive
//!   the message when recipients come from the header), and so are
//!   incoming `Return-Path:` and `Content-Length:` fields;
//! * `Date:` (RFC 5322, UTC), `Message-ID:` and `From:` are added when
//!   absent; for a resent message (one with any `Resent-` field) the
//!   fields checked and added are `Resent-Date:`, `Resent-Message-ID:`
//!   and `Resent-From:` instead;
//! * a bare local part (no `@`) in `From`, `Sender`, `Reply-To`, `To`,
//!   `Cc` and their `Resent-` forms gets `@defaulthost` ([`crate::qualify`]);
//! * every other byte of the header is kept as it came; added fields go
//!   first, with the line end of the message's first header line;
//! * when the header did not end with an empty line (a message without a
//!   header, or one whose header ran into a line that is no field), an empty
//!   line is inserted so that the body stays the body.
//!
//! Recipients for the envelope come from the arguments, from the header
//! (`To`, `Cc`, `Bcc`; or `Resent-To`, `Resent-Cc`, `Resent-Bcc` for a
//! resent message) or both, per [`RecipientMode`]. Header fields are parsed
//! only when the mode asks for header recipients; duplicates are dropped.
//!
//! The library reads no files: the control values come in [`Controls`],
//! the time, process id and random part of the Message-ID in [`Stamp`].

use thiserror::Error;

use crate::address::{self, AddressError, Completion};
use crate::header::{FieldTooLong, Header, Limits};
use crate::qualify;

/// Most envelope recipients (the queue's limit, as
/// `tern_spool::MAX_RECIPIENTS`).
pub const MAX_RECIPIENTS: usize = 10_000;

/// The control values injection needs (from `control/`, read by the
/// caller). Every value is a host name; empty values are not completed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Controls {
    /// `control/me`: this host's name.
    pub me: Vec<u8>,
    /// `control/defaulthost`: host for addresses without `@` (default me).
    pub defaulthost: Vec<u8>,
    /// `control/defaultdomain`: appended to host names without a dot
    /// (default me).
    pub defaultdomain: Vec<u8>,
    /// `control/plusdomain`: replaces a trailing `+` (default me).
    pub plusdomain: Vec<u8>,
    /// `control/idhost`: host part of generated Message-IDs (default me).
    pub idhost: Vec<u8>,
}

impl Controls {
    /// Controls with every value defaulted to `me`, as when only
    /// `control/me` exists.
    pub fn from_me(me: &[u8]) -> Self {
        Controls {
            me: me.to_vec(),
            defaulthost: me.to_vec(),
            defaultdomain: me.to_vec(),
            plusdomain: me.to_vec(),
            idhost: me.to_vec(),
        }
    }

    /// The address completion rules these controls give.
    pub fn completion(&self) -> Completion {
        Completion {
            defaulthost: self.defaulthost.clone(),
            defaultdomain: self.defaultdomain.clone(),
            plusdomain: self.plusdomain.clone(),
        }
    }
}

/// Where envelope recipients come from (qmail-inject's `-a`, `-h`, `-A`,
/// `-H`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RecipientMode {
    /// `-a`: the arguments only; the header is not parsed for addresses.
    Args,
    /// `-h`: the header only.
    Header,
    /// `-A` (default): the arguments, or the header when there are none.
    #[default]
    ArgsElseHeader,
    /// `-H` (`sendmail -t`): the header and the arguments.
    HeaderAndArgs,
}

/// The author written into an added `From:` field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Author {
    /// Local part (the login name, usually).
    pub user: Vec<u8>,
    /// Host, completed like any host name; `None` means `defaulthost`.
    pub host: Option<Vec<u8>>,
    /// Full name, if any (`From: Name <user@host>`).
    pub name: Option<Vec<u8>>,
}

impl Author {
    /// The author's address in envelope form (`user@host`, completed).
    pub fn envelope(&self, controls: &Controls) -> Vec<u8> {
        let c = controls.completion();
        let host = match &self.host {
            Some(h) => c.complete_host(h),
            None => c.default_host(),
        };
        [self.user.as_slice(), b"@", &host].concat()
    }
}

/// What makes an added Date and Message-ID unique.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Seconds since the epoch.
    pub now: i64,
    /// The injecting process id.
    pub pid: u32,
    /// A random number.
    pub random: u64,
}

/// Why a message cannot be injected (all permanent: the same input will
/// fail the same way).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum InjectError {
    /// A recipient argument is not an address list.
    #[error("bad recipient argument {index}: {error}")]
    Argument {
        /// 1-based position among the recipient arguments.
        index: usize,
        /// What is wrong with it.
        error: AddressError,
    },
    /// A recipient field of the header is not an address list.
    #[error("bad address in {field} field: {error}")]
    Field {
        /// The field name, as the program knows it.
        field: &'static str,
        /// What is wrong with it.
        error: AddressError,
    },
    /// A recipient field is too long to parse.
    #[error("{field} field: {error}")]
    FieldTooLong {
        /// The field name, as the program knows it.
        field: &'static str,
        /// The limit.
        error: FieldTooLong,
    },
    /// More than [`MAX_RECIPIENTS`] recipients.
    #[error("too many recipients (over {MAX_RECIPIENTS})")]
    TooManyRecipients,
}

impl InjectError {
    /// Always false: injection errors are in the input.
    pub fn is_temporary(&self) -> bool {
        false
    }
}

/// The result of [`fix`]: the new header and the envelope recipients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Injection {
    /// The header to write before the rest of the body: added fields, kept
    /// fields, the empty line, and the first body line if the header scan
    /// read one.
    pub header: Vec<u8>,
    /// Envelope recipients, completed, without duplicates, in order.
    pub recipients: Vec<Vec<u8>>,
}

const REMOVED: [&str; 4] = ["Bcc", "Resent-Bcc", "Return-Path", "Content-Length"];
const RECIPIENT_FIELDS: [&str; 3] = ["To", "Cc", "Bcc"];
const RESENT_RECIPIENT_FIELDS: [&str; 3] = ["Resent-To", "Resent-Cc", "Resent-Bcc"];

/// True when the header has a `Resent-` field (the message is being
/// resent).
pub fn is_resent(header: &Header) -> bool {
    header.fields().any(|f| {
        let n = f.name();
        n.len() > 7 && n[..7].eq_ignore_ascii_case(b"Resent-")
    })
}

/// Recipients from the header's recipient fields (To/Cc/Bcc, or the
/// Resent- set for a resent message), completed, in field order.
pub fn header_recipients(
    header: &Header,
    controls: &Controls,
    limits: &Limits,
) -> Result<Vec<Vec<u8>>, InjectError> {
    let names = if is_resent(header) {
        RESENT_RECIPIENT_FIELDS
    } else {
        RECIPIENT_FIELDS
    };
    let completion = controls.completion();
    let mut out = Vec::new();
    for field in header.fields() {
        let Some(&name) = names.iter().find(|n| field.is(n)) else {
            continue;
        };
        let value = field
            .value_bounded(limits)
            .map_err(|error| InjectError::FieldTooLong { field: name, error })?;
        let list = address::parse_list(value, &completion)
            .map_err(|error| InjectError::Field { field: name, error })?;
        out.extend(list.iter().map(|m| m.envelope()));
        if out.len() > MAX_RECIPIENTS {
            return Err(InjectError::TooManyRecipients);
        }
    }
    Ok(out)
}

/// Recipients from command-line arguments: each argument is an address
/// list (usually one address), completed.
pub fn argument_recipients(
    args: &[Vec<u8>],
    controls: &Controls,
) -> Result<Vec<Vec<u8>>, InjectError> {
    let completion = controls.completion();
    let mut out = Vec::new();
    for (i, arg) in args.iter().enumerate() {
        let list =
            address::parse_list(arg, &completion).map_err(|error| InjectError::Argument {
                index: i + 1,
                error,
            })?;
        out.extend(list.iter().map(|m| m.envelope()));
        if out.len() > MAX_RECIPIENTS {
            return Err(InjectError::TooManyRecipients);
        }
    }
    Ok(out)
}

/// The `From:` value for `author`: `Name <user@host>` or `user@host`.
fn from_value(author: &Author, controls: &Controls) -> Vec<u8> {
    let c = controls.completion();
    let host = match &author.host {
        Some(h) => c.complete_host(h),
        None => c.default_host(),
    };
    let mailbox = address::format_mailbox(&author.user, &host);
    match &author.name {
        Some(name) if !name.trim_ascii().is_empty() => {
            let mut v = address::format_phrase(name);
            v.extend_from_slice(b" <");
            v.extend_from_slice(&mailbox);
            v.push(b'>');
            v
        }
        _ => mailbox,
    }
}

/// Rewrites `header` for injection and computes the envelope recipients
/// from it and from `args` per `mode`.
pub fn fix(
    header: &Header,
    args: &[Vec<u8>],
    mode: RecipientMode,
    controls: &Controls,
    author: &Author,
    stamp: &Stamp,
    limits: &Limits,
) -> Result<Injection, InjectError> {
    let use_header = match mode {
        RecipientMode::Args => false,
        RecipientMode::Header | RecipientMode::HeaderAndArgs => true,
        RecipientMode::ArgsElseHeader => args.is_empty(),
    };
    let use_args = !matches!(mode, RecipientMode::Header);
    let mut all = Vec::new();
    if use_header {
        all.extend(header_recipients(header, controls, limits)?);
    }
    if use_args {
        all.extend(argument_recipients(args, controls)?);
    }
    let mut recipients: Vec<Vec<u8>> = Vec::with_capacity(all.len());
    let mut seen = std::collections::HashSet::with_capacity(all.len());
    for r in all {
        if seen.insert(r.clone()) {
            recipients.push(r);
        }
    }
    if recipients.len() > MAX_RECIPIENTS {
        return Err(InjectError::TooManyRecipients);
    }

    let eol = header.line_end().as_bytes();
    let prefix: &[u8] = if is_resent(header) { b"Resent-" } else { b"" };
    let has = |name: &str| {
        let full = [prefix, name.as_bytes()].concat();
        header
            .fields()
            .any(|f| f.name().eq_ignore_ascii_case(&full))
    };
    let mut out = Vec::with_capacity(header.raw().len() + 256);
    let mut add = |name: &str, value: &[u8]| {
        out.extend_from_slice(prefix);
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(eol);
    };
    if !has("Date") {
        add("Date", tern_date::rfc5322(stamp.now).as_bytes());
    }
    if !has("Message-ID") {
        let id = format!(
            "<{}.{}.{:016x}@",
            tern_date::compact(stamp.now),
            stamp.pid,
            stamp.random
        );
        let value = [id.as_bytes(), &controls.idhost, b">"].concat();
        add("Message-ID", &value);
    }
    if !has("From") {
        add("From", &from_value(author, controls));
    }
    let completion = controls.completion();
    // Bytes added by qualification, bounded by the header limit.
    let mut grown = 0usize;
    for field in header.fields() {
        if REMOVED.iter().any(|n| field.is(n)) {
            continue;
        }
        let qualified = (grown < limits.max_header && qualify::is_address_field(&field))
            .then(|| qualify::qualify_field(&field, &completion, eol, limits))
            .flatten();
        match qualified {
            Some(q) => {
                grown += q.len().saturating_sub(field.raw().len());
                out.extend_from_slice(&q);
            }
            None => out.extend_from_slice(field.raw()),
        }
    }
    if header.separator().is_empty() {
        if !header.body_start().is_empty() {
            out.extend_from_slice(eol);
            out.extend_from_slice(header.body_start());
        }
    } else {
        out.extend_from_slice(header.separator());
    }
    Ok(Injection {
        header: out,
        recipients,
    })
}

/// Longest value taken from the environment (user, host, name), in bytes.
pub const MAX_ENV_VALUE: usize = 1000;

/// The identity settings a caller found in its environment (qmail-inject's
/// variables). The library never reads the environment itself: the caller
/// hands a lookup function to [`Environment::from_vars`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Environment {
    /// `QMAILUSER`, `MAILUSER`, `USER`, `LOGNAME` (first set), else the
    /// login name of the real uid.
    pub user: Option<Vec<u8>>,
    /// `QMAILHOST`, `MAILHOST`: host of the `From:` address.
    pub host: Option<Vec<u8>>,
    /// `QMAILNAME`, `MAILNAME`, `NAME`: full name for `From:`.
    pub name: Option<Vec<u8>>,
    /// `QMAILSUSER`: local part of the default envelope sender.
    pub sender_user: Option<Vec<u8>>,
    /// `QMAILSHOST`: host of the default envelope sender.
    pub sender_host: Option<Vec<u8>>,
    /// `QMAILDEFAULTHOST`: overrides `control/defaulthost`.
    pub defaulthost: Option<Vec<u8>>,
    /// `QMAILDEFAULTDOMAIN`: overrides `control/defaultdomain`.
    pub defaultdomain: Option<Vec<u8>>,
    /// `QMAILPLUSDOMAIN`: overrides `control/plusdomain`.
    pub plusdomain: Option<Vec<u8>>,
    /// `QMAILIDHOST`: overrides `control/idhost`.
    pub idhost: Option<Vec<u8>>,
}

impl Environment {
    /// Collects the variables through `get` (empty values count as unset);
    /// `login` is asked for the passwd name only when no user variable is
    /// set.
    pub fn from_vars(
        get: impl Fn(&str) -> Option<Vec<u8>>,
        login: impl FnOnce() -> Option<String>,
    ) -> Environment {
        let first = |names: &[&str]| names.iter().find_map(|n| get(n).filter(|v| !v.is_empty()));
        let user = first(&["QMAILUSER", "MAILUSER", "USER", "LOGNAME"])
            .or_else(|| login().map(String::into_bytes));
        Environment {
            user,
            host: first(&["QMAILHOST", "MAILHOST"]),
            name: first(&["QMAILNAME", "MAILNAME", "NAME"]),
            sender_user: first(&["QMAILSUSER"]),
            sender_host: first(&["QMAILSHOST"]),
            defaulthost: first(&["QMAILDEFAULTHOST"]),
            defaultdomain: first(&["QMAILDEFAULTDOMAIN"]),
            plusdomain: first(&["QMAILPLUSDOMAIN"]),
            idhost: first(&["QMAILIDHOST"]),
        }
    }

    /// The controls with this environment's overrides applied.
    pub fn apply(&self, controls: &Controls) -> Controls {
        let pick = |v: &Option<Vec<u8>>, c: &Vec<u8>| v.clone().unwrap_or_else(|| c.clone());
        Controls {
            me: controls.me.clone(),
            defaulthost: pick(&self.defaulthost, &controls.defaulthost),
            defaultdomain: pick(&self.defaultdomain, &controls.defaultdomain),
            plusdomain: pick(&self.plusdomain, &controls.plusdomain),
            idhost: pick(&self.idhost, &controls.idhost),
        }
    }

    /// Checks every value for control characters and length, and host
    /// names for address syntax.
    fn check(&self) -> Result<(), PrepareError> {
        // (what, value, is a host name)
        let vars: [(&'static str, &Option<Vec<u8>>, bool); 9] = [
            (
                "the user name (QMAILUSER, MAILUSER, USER, LOGNAME)",
                &self.user,
                false,
            ),
            ("QMAILHOST or MAILHOST", &self.host, true),
            ("QMAILNAME, MAILNAME or NAME", &self.name, false),
            ("QMAILSUSER", &self.sender_user, false),
            ("QMAILSHOST", &self.sender_host, true),
            ("QMAILDEFAULTHOST", &self.defaulthost, true),
            ("QMAILDEFAULTDOMAIN", &self.defaultdomain, true),
            ("QMAILPLUSDOMAIN", &self.plusdomain, true),
            ("QMAILIDHOST", &self.idhost, true),
        ];
        for (what, value, is_host) in vars {
            let Some(v) = value else { continue };
            let control = v.iter().any(|&b| b < 0x20 || b == 0x7f);
            let syntax = is_host
                && v.iter()
                    .any(|&b| matches!(b, b'@' | b' ' | b'<' | b'>' | b',' | b'(' | b')' | b'"'));
            if v.len() > MAX_ENV_VALUE || control || syntax {
                return Err(PrepareError::BadEnvironment(what));
            }
        }
        Ok(())
    }
}

impl Stamp {
    /// The current time, this process's id and a random number (from the
    /// standard library's randomly keyed hasher).
    pub fn generate() -> Stamp {
        use std::hash::BuildHasher;
        let now = tern_date::now();
        let pid = std::process::id();
        let random = std::collections::hash_map::RandomState::new().hash_one((now, pid));
        Stamp { now, pid, random }
    }
}

/// What the user asked for (from the command line).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Request {
    /// Where recipients come from.
    pub mode: RecipientMode,
    /// The recipient arguments.
    pub args: Vec<Vec<u8>>,
    /// `-f`: the envelope sender as given.
    pub sender: Option<Vec<u8>>,
    /// `-F`: the full name for an added `From:`.
    pub full_name: Option<Vec<u8>>,
    /// sendmail's rule: a (non-null) `-f` address is also the author of an
    /// added `From:`, and the environment's full name is not used.
    pub sender_is_author: bool,
}

/// A message ready to be queued: the new header (to be followed by the rest
/// of the input, untouched) and the envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    /// The header, as [`Injection::header`].
    pub header: Vec<u8>,
    /// The envelope sender (empty for the null sender).
    pub sender: Vec<u8>,
    /// The envelope recipients.
    pub recipients: Vec<Vec<u8>>,
}

/// Why [`prepare`] failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum PrepareError {
    /// Reading the header failed, or it is too large.
    #[error(transparent)]
    Header(#[from] crate::header::HeaderError),
    /// Bad recipient addresses.
    #[error(transparent)]
    Inject(#[from] InjectError),
    /// The `-f` sender is not one address.
    #[error("bad sender address: {0}")]
    Sender(AddressError),
    /// The resulting envelope sender is too long.
    #[error("sender address too long (over {} bytes)", address::MAX_ADDRESS)]
    SenderTooLong,
    /// No user name: no variable set and no passwd entry.
    #[error("cannot tell the user name: set USER or LOGNAME")]
    NoUser,
    /// An environment variable holds control characters, address syntax
    /// where a host is expected, or is too long.
    #[error("unusable value in {0}")]
    BadEnvironment(&'static str),
}

impl PrepareError {
    /// True when trying again later may succeed (read errors only).
    pub fn is_temporary(&self) -> bool {
        match self {
            PrepareError::Header(h) => h.is_temporary(),
            _ => false,
        }
    }
}

/// Reads the header from `input` and prepares the message: fixed header,
/// envelope sender and recipients. The body stays on `input`, to be copied
/// after [`Prepared::header`].
///
/// Envelope sender: `-f` (`request.sender`, parsed as one address; empty or
/// `<>` is the null sender); else `QMAILSUSER`@`QMAILSHOST`, each defaulting
/// to the `From:` author's user and host (the login and `defaulthost`).
pub fn prepare<R: std::io::BufRead + ?Sized>(
    input: &mut R,
    request: &Request,
    env: &Environment,
    controls: &Controls,
    stamp: &Stamp,
    limits: &Limits,
) -> Result<Prepared, PrepareError> {
    env.check()?;
    let controls = env.apply(controls);
    let completion = controls.completion();
    let given_sender = match &request.sender {
        Some(s) => Some(address::parse_sender(s, &completion).map_err(PrepareError::Sender)?),
        None => None,
    };
    let author = match &given_sender {
        Some(s) if request.sender_is_author && !s.is_empty() => {
            let at = s.iter().rposition(|&b| b == b'@').unwrap_or(s.len());
            Author {
                user: s[..at].to_vec(),
                host: s.get(at + 1..).map(<[u8]>::to_vec),
                name: request.full_name.clone(),
            }
        }
        _ => Author {
            user: env.user.clone().ok_or(PrepareError::NoUser)?,
            host: env.host.clone(),
            name: if request.sender_is_author && request.sender.is_some() {
                request.full_name.clone()
            } else {
                request.full_name.clone().or_else(|| env.name.clone())
            },
        },
    };
    let sender = match given_sender {
        Some(s) => s,
        None => {
            let user = env.sender_user.as_ref().unwrap_or(&author.user);
            let host = match (&env.sender_host, &author.host) {
                (Some(h), _) | (None, Some(h)) => completion.complete_host(h),
                (None, None) => completion.default_host(),
            };
            [user.as_slice(), b"@", &host].concat()
        }
    };
    if sender.len() > address::MAX_ADDRESS {
        return Err(PrepareError::SenderTooLong);
    }
    let header = Header::read(input, limits)?;
    let injection = fix(
        &header,
        &request.args,
        request.mode,
        &controls,
        &author,
        stamp,
        limits,
    )?;
    Ok(Prepared {
        header: injection.header,
        sender,
        recipients: injection.recipients,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::AddressErrorKind;

    fn controls() -> Controls {
        Controls {
            me: b"me.example".to_vec(),
            defaulthost: b"host.example".to_vec(),
            defaultdomain: b"example.org".to_vec(),
            plusdomain: b"plus.example".to_vec(),
            idhost: b"id.example".to_vec(),
        }
    }

    fn author() -> Author {
        Author {
            user: b"joe".to_vec(),
            host: None,
            name: None,
        }
    }

    const STAMP: Stamp = Stamp {
        now: 1_795_770_984, // 2026-11-27 09:16:24 UTC
        pid: 4242,
        random: 0xabc,
    };

    fn header(input: &[u8]) -> Header {
        Header::read(&mut &input[..], &Limits::default()).unwrap()
    }

    fn run(input: &[u8], args: &[&str], mode: RecipientMode) -> Result<Injection, InjectError> {
        let args: Vec<Vec<u8>> = args.iter().map(|a| a.as_bytes().to_vec()).collect();
        fix(
            &header(input),
            &args,
            mode,
            &controls(),
            &author(),
            &STAMP,
            &Limits::default(),
        )
    }

    fn rcpts(i: &Injection) -> Vec<&str> {
        i.recipients
            .iter()
            .map(|r| std::str::from_utf8(r).unwrap())
            .collect()
    }

    const ADDED: &str = "Date: Fri, 27 Nov 2026 09:16:24 +0000\n\
                         Message-ID: <20261127091624.4242.0000000000000abc@id.example>\n\
                         From: joe@host.example\n";

    #[test]
    fn bad_inputs() {
        use RecipientMode::*;
        let e = run(b"To: a@x.example, b c\n\n", &[], Header).unwrap_err();
        assert!(matches!(
            e,
            InjectError::Field {
                field: "To",
                error: AddressError {
                    kind: AddressErrorKind::MissingComma,
                    ..
                }
            }
        ));
        assert_eq!(
            e.to_string(),
            "bad address in To field: addresses not separated by a comma (at byte 16)"
        );
        assert!(!e.is_temporary());
        let e = run(b"Subject: x\n\n", &["ok@x.example", "bad <"], Args).unwrap_err();
        assert!(matches!(e, InjectError::Argument { index: 2, .. }));
        let e = run(b"Resent-Cc: (\n\n", &[], HeaderAndArgs).unwrap_err();
        assert!(matches!(
            e,
            InjectError::Field {
                field: "Resent-Cc",
                ..
            }
        ));
        // A recipient field over the field limit, when it must be parsed.
        let big = [b"Cc: ".as_slice(), &b"a@x.example,".repeat(6000), b"\n\n"].concat();
        let e = run(&big, &[], Header).unwrap_err();
        assert!(matches!(e, InjectError::FieldTooLong { field: "Cc", .. }));
        // ... but not when the header is not parsed.
        assert!(run(&big, &["x@y.example"], Args).is_ok());
        assert!(run(&big, &["x@y.example"], ArgsElseHeader).is_ok());
        // Too many recipients across fields.
        let many: Vec<u8> = (0..6)
            .flat_map(|_| {
                let mut f = b"To: ".to_vec();
                for i in 0..2000 {
                    f.extend_from_slice(format!("u{i}@x.example,").as_bytes());
                }
                f.push(b'\n');
                f
            })
            .collect();
        assert_eq!(
            run(&many, &[], Header).unwrap_err(),
            InjectError::TooManyRecipients
        );
    }

    #[test]
    fn adds_missing_fields_first_with_message_line_ends() {
        let i = run(
            b"Subject: hi\n\nbody\n",
            &["a@x.example"],
            RecipientMode::Args,
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(i.header.clone()).unwrap(),
            format!("{ADDED}Subject: hi\n\n")
        );
        let i = run(b"Subject: hi\r\n\r\n", &["a"], RecipientMode::Args).unwrap();
        assert_eq!(
            String::from_utf8(i.header.clone()).unwrap(),
            format!("{}Subject: hi\r\n\r\n", ADDED.replace('\n', "\r\n"))
        );
        assert_eq!(rcpts(&i), ["a@host.example"]);
    }

    #[test]
    fn keeps_present_fields_byte_for_byte() {
        let input: &[u8] = b"From:  Someone <s@x.example>\r\n\
              DATE: whatever\n\
              message-id: <x@y>\n\
              Subject: =?utf-8?q?h=C3=A9?=\n \tfolded\xff\n\n";
        let i = run(input, &["a@x.example"], RecipientMode::Args).unwrap();
        assert_eq!(i.header, input);
    }

    #[test]
    fn removes_bcc_return_path_content_length() {
        let input = b"To: a@x.example\nBcc: hidden@x.example,\n  other@y.example\n\
                      Return-Path: <bounce@x.example>\nCONTENT-LENGTH: 12\n\
                      Resent-Bcc: r@x.example\nSubject: s\nDate: d\nMessage-ID: <m@x>\nFrom: f@x.example\n\nbody";
        let i = run(input, &[], RecipientMode::HeaderAndArgs).unwrap();
        assert_eq!(
            String::from_utf8(i.header.clone()).unwrap(),
            "Resent-Date: Fri, 27 Nov 2026 09:16:24 +0000\n\
             Resent-Message-ID: <20261127091624.4242.0000000000000abc@id.example>\n\
             Resent-From: joe@host.example\n\
             To: a@x.example\nSubject: s\nDate: d\nMessage-ID: <m@x>\nFrom: f@x.example\n\n"
        );
        // The message is resent (Resent-Bcc), so recipients come from the
        // Resent- fields only, and Resent- fields are added.
        assert_eq!(rcpts(&i), ["r@x.example"]);
    }

    #[test]
    fn recipient_modes() {
        use RecipientMode::*;
        let input =
            b"To: a@x.example, b\nCc: Team: c@x.example;\nBcc: d@x.example, a@x.example\n\n";
        let table: &[(RecipientMode, &[&str], &[&str])] = &[
            (Args, &["z@y.example"], &["z@y.example"]),
            (Args, &[], &[]),
            (
                Header,
                &[],
                &[
                    "a@x.example",
                    "b@host.example",
                    "c@x.example",
                    "d@x.example",
                ],
            ),
            (ArgsElseHeader, &["z"], &["z@host.example"]),
            (
                ArgsElseHeader,
                &[],
                &[
                    "a@x.example",
                    "b@host.example",
                    "c@x.example",
                    "d@x.example",
                ],
            ),
            (
                HeaderAndArgs,
                &["z@y.example, a@x.example", "q@mail"],
                &[
                    "a@x.example",
                    "b@host.example",
                    "c@x.example",
                    "d@x.example",
                    "z@y.example",
                    "q@mail.example.org",
                ],
            ),
        ];
        for (mode, args, want) in table {
            let i = run(input, args, *mode).unwrap();
            assert_eq!(rcpts(&i), *want, "{mode:?} {args:?}");
        }
    }

    #[test]
    fn resent_messages_get_resent_fields() {
        let input = b"From: a@x.example\nDate: d\nMessage-ID: <m@x>\nTo: old@x.example\n\
                      Resent-To: new@y.example\n\n";
        let i = run(input, &[], RecipientMode::Header).unwrap();
        assert_eq!(rcpts(&i), ["new@y.example"]);
        let text = String::from_utf8(i.header.clone()).unwrap();
        assert!(text.starts_with(
            "Resent-Date: Fri, 27 Nov 2026 09:16:24 +0000\n\
             Resent-Message-ID: <20261127091624.4242.0000000000000abc@id.example>\n\
             Resent-From: joe@host.example\nFrom: a@x.example\n"
        ));
    }

    #[test]
    fn message_without_header_gets_an_empty_line() {
        let i = run(
            b"hello there\nsecond\n",
            &["a@x.example"],
            RecipientMode::Args,
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(i.header.clone()).unwrap(),
            format!("{ADDED}\nhello there\n")
        );
        let i = run(b"", &["a@x.example"], RecipientMode::Args).unwrap();
        assert_eq!(String::from_utf8(i.header.clone()).unwrap(), ADDED);
        let i = run(b"\r\nbody", &["a@x.example"], RecipientMode::Args).unwrap();
        assert_eq!(
            String::from_utf8(i.header.clone()).unwrap(),
            format!("{}\r\n", ADDED.replace('\n', "\r\n"))
        );
    }

    #[test]
    fn from_with_full_name_and_host() {
        let a = Author {
            user: b"joe".to_vec(),
            host: Some(b"box".to_vec()),
            name: Some(b"Joe Q. Public".to_vec()),
        };
        assert_eq!(
            from_value(&a, &controls()),
            b"\"Joe Q. Public\" <joe@box.example.org>"
        );
        assert_eq!(a.envelope(&controls()), b"joe@box.example.org");
        let evil = Author {
            user: b"joe\nBcc: x".to_vec(),
            host: None,
            name: Some(b"X\r\nBcc: y@z".to_vec()),
        };
        let v = from_value(&evil, &controls());
        assert!(!v.contains(&b'\n') && !v.contains(&b'\r'), "{v:?}");
        let blank = Author {
            name: Some(b"  ".to_vec()),
            ..author()
        };
        assert_eq!(from_value(&blank, &controls()), b"joe@host.example");
    }

    fn env_of(vars: &[(&str, &str)]) -> Environment {
        let owned: Vec<(String, Vec<u8>)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect();
        Environment::from_vars(
            |k| owned.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()),
            || Some("pwname".to_string()),
        )
    }

    fn prep(
        input: &[u8],
        request: &Request,
        env: &Environment,
    ) -> Result<(Prepared, Vec<u8>), PrepareError> {
        let mut r = input;
        let p = prepare(
            &mut r,
            request,
            env,
            &controls(),
            &STAMP,
            &Limits::default(),
        )?;
        Ok((p, r.to_vec()))
    }

    #[test]
    fn environment_lookup() {
        let e = env_of(&[("USER", "u"), ("LOGNAME", "l"), ("QMAILUSER", "")]);
        assert_eq!(e.user.as_deref(), Some(&b"u"[..]));
        let e = env_of(&[("LOGNAME", "l"), ("MAILUSER", "m")]);
        assert_eq!(e.user.as_deref(), Some(&b"m"[..]));
        let e = env_of(&[]);
        assert_eq!(e.user.as_deref(), Some(&b"pwname"[..]));
        let e = Environment::from_vars(|_| None, || None);
        assert_eq!(e.user, None);
        let e = env_of(&[
            ("NAME", "n"),
            ("MAILNAME", "m"),
            ("QMAILIDHOST", "id2.example"),
        ]);
        assert_eq!(e.name.as_deref(), Some(&b"m"[..]));
        let c = e.apply(&controls());
        assert_eq!(c.idhost, b"id2.example");
        assert_eq!(c.defaulthost, b"host.example");
    }

    #[test]
    fn prepare_bad_inputs() {
        let req = Request::default();
        let bad_envs: &[&[(&str, &str)]] = &[
            &[("USER", "joe\nBcc: x")],
            &[("QMAILNAME", "a\rb")],
            &[("QMAILHOST", "evil@host")],
            &[("QMAILSHOST", "a b")],
            &[("QMAILIDHOST", "x>y")],
        ];
        for vars in bad_envs {
            let e = prep(b"\n", &req, &env_of(vars)).unwrap_err();
            assert!(
                matches!(e, PrepareError::BadEnvironment(_)),
                "{vars:?}: {e:?}"
            );
            assert!(!e.is_temporary());
        }
        let long = "u".repeat(MAX_ENV_VALUE + 1);
        let e = prep(b"\n", &req, &env_of(&[("USER", &long)])).unwrap_err();
        assert!(matches!(e, PrepareError::BadEnvironment(_)));
        let e = prep(b"\n", &req, &Environment::default()).unwrap_err();
        assert!(matches!(e, PrepareError::NoUser));
        let bad_sender = Request {
            sender: Some(b"a@b.c, d@e.f".to_vec()),
            ..Request::default()
        };
        let e = prep(b"\n", &bad_sender, &env_of(&[])).unwrap_err();
        assert!(matches!(e, PrepareError::Sender(_)));
        assert_eq!(
            e.to_string(),
            "bad sender address: exactly one address expected (at byte 0)"
        );
        let too_long = env_of(&[("QMAILSUSER", &"s".repeat(990))]);
        let e = prep(b"\n", &req, &too_long).unwrap_err();
        assert!(matches!(e, PrepareError::SenderTooLong));
        let big = [b"X: ".as_slice(), &vec![b'x'; MAX_HEADER_FOR_TEST], b"\n\n"].concat();
        let e = prep(&big, &req, &env_of(&[])).unwrap_err();
        assert!(matches!(e, PrepareError::Header(_)));
    }

    const MAX_HEADER_FOR_TEST: usize = crate::header::MAX_HEADER + 1;

    #[test]
    fn prepare_envelope_and_author() {
        let body = b"body \0 \xff\nno final newline";
        let input = [b"To: Ann <ann@x.example>\nBcc: bob\n\n".as_slice(), body].concat();
        let t = Request {
            mode: RecipientMode::HeaderAndArgs,
            ..Request::default()
        };
        // Defaults: login@defaulthost, From added with it.
        let (p, rest) = prep(&input, &t, &env_of(&[("USER", "joe")])).unwrap();
        assert_eq!(p.sender, b"joe@host.example");
        assert_eq!(
            p.recipients,
            [b"ann@x.example".to_vec(), b"bob@host.example".to_vec()]
        );
        assert!(
            p.header
                .ends_with(b"From: joe@host.example\nTo: Ann <ann@x.example>\n\n")
        );
        assert_eq!(rest, body);
        // QMAILSUSER / QMAILSHOST change the envelope only; QMAILHOST the From.
        let e = env_of(&[
            ("USER", "joe"),
            ("QMAILSUSER", "bounces"),
            ("QMAILHOST", "web"),
            ("NAME", "Joe Smith"),
        ]);
        let (p, _) = prep(&input, &t, &e).unwrap();
        assert_eq!(p.sender, b"bounces@web.example.org");
        assert!(
            p.header
                .windows(37)
                .any(|w| w == b"From: Joe Smith <joe@web.example.org>"),
            "{}",
            String::from_utf8_lossy(&p.header)
        );
        let e2 = env_of(&[("USER", "joe"), ("QMAILSHOST", "relay.example")]);
        assert_eq!(
            prep(&input, &t, &e2).unwrap().0.sender,
            b"joe@relay.example"
        );
        // -f: the envelope sender; for tern-inject not the author.
        let f = Request {
            sender: Some(b"list-owner@lists.example".to_vec()),
            full_name: Some(b"F Name".to_vec()),
            ..t.clone()
        };
        let (p, _) = prep(&input, &f, &e).unwrap();
        assert_eq!(p.sender, b"list-owner@lists.example");
        assert!(
            String::from_utf8_lossy(&p.header).contains("From: F Name <joe@web.example.org>\n")
        );
        // sendmail: -f is the author too; the environment's name is not used.
        let sm = Request {
            sender_is_author: true,
            full_name: None,
            ..f.clone()
        };
        let (p, _) = prep(&input, &sm, &e).unwrap();
        assert!(String::from_utf8_lossy(&p.header).contains("From: list-owner@lists.example\n"));
        // Null sender.
        for null in [&b""[..], b"<>"] {
            let n = Request {
                sender: Some(null.to_vec()),
                sender_is_author: true,
                ..t.clone()
            };
            let (p, _) = prep(&input, &n, &e).unwrap();
            assert_eq!(p.sender, b"");
            assert!(String::from_utf8_lossy(&p.header).contains("From: joe@web.example.org\n"));
        }
    }

    #[test]
    fn stamps_differ() {
        let a = Stamp::generate();
        let b = Stamp::generate();
        assert_eq!(a.pid, std::process::id());
        assert_ne!(a.random, b.random);
    }
}
