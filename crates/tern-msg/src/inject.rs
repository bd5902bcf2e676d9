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
    for field in header.fields() {
        if !REMOVED.iter().any(|n| field.is(n)) {
            out.extend_from_slice(field.raw());
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
}
