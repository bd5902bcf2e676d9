//! Parsing one SMTP command line (without its CRLF).
//!
//! Verbs are case-insensitive. `MAIL FROM:` and `RCPT TO:` take a path in
//! angle brackets (`<>` is the null sender, MAIL only); an RFC 5321 source
//! route (`<@a,@b:user@host>`) is accepted and dropped. Quoted local parts
//! may hold `>` and spaces. Parameters follow the path, separated by
//! spaces, as `KEY` or `KEY=VALUE`. Bounds: the line itself is bounded by
//! [`crate::line::MAX_COMMAND`]; a path by [`MAX_PATH`].
//!
//! Every path but `<>` (MAIL) and `<Postmaster>` (RCPT) must be an RFC 5321
//! Mailbox, checked by the one validator, [`tern_addr::Mailbox`]: a
//! Dot-string or Quoted-string local part, `@`, a domain or an address
//! literal (UTF-8 is allowed here; the session refuses it without
//! SMTPUTF8). `<a@b@example>` and `<sp ace@example>` are refused: 501 5.1.7
//! at MAIL, 501 5.1.3 at RCPT.

/// Longest path (the address between the brackets): tern-addr's
/// [`tern_addr::MAX_MAILBOX`], so the parser and the validator agree.
pub const MAX_PATH: usize = tern_addr::MAX_MAILBOX;

/// Longest decimal `SIZE=` value (fits a u64).
const MAX_SIZE_DIGITS: usize = 19;

/// An address from `MAIL FROM:` or `RCPT TO:`, as the bytes between the
/// brackets with any source route removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Path(pub Vec<u8>);

impl Path {
    /// True for the null path `<>`.
    pub fn is_null(&self) -> bool {
        self.0.is_empty()
    }

    /// True when the path holds a byte outside ASCII.
    pub fn is_non_ascii(&self) -> bool {
        !self.0.is_ascii()
    }

    /// True for the bare `postmaster` (any case, no domain), the one
    /// recipient RFC 5321 4.5.1 requires a server to take without a
    /// domain.
    pub fn is_postmaster(&self) -> bool {
        self.0.eq_ignore_ascii_case(b"postmaster")
    }

    /// The domain: what follows the last `@`, if any.
    pub fn domain(&self) -> Option<&[u8]> {
        let at = memchr::memrchr(b'@', &self.0)?;
        Some(&self.0[at + 1..])
    }
}

/// The `BODY=` parameter of MAIL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// `BODY=7BIT`.
    SevenBit,
    /// `BODY=8BITMIME`.
    EightBitMime,
}

/// The parameters of MAIL that Tern understands.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MailParams {
    /// `SIZE=n`: the size the client announces.
    pub size: Option<u64>,
    /// `BODY=`.
    pub body: Option<Body>,
    /// `SMTPUTF8` was given.
    pub smtputf8: bool,
}

/// One parsed command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `HELO host`.
    Helo(Vec<u8>),
    /// `EHLO host`.
    Ehlo(Vec<u8>),
    /// `MAIL FROM:<path> [params]`.
    Mail(Path, MailParams),
    /// `RCPT TO:<path>`.
    Rcpt(Path),
    /// `DATA`.
    Data,
    /// `RSET`.
    Rset,
    /// `NOOP [text]`.
    Noop,
    /// `QUIT`.
    Quit,
    /// `VRFY text`.
    Vrfy,
    /// `EXPN text`.
    Expn,
    /// `HELP [text]`.
    Help,
    /// `BDAT size [LAST]` (RFC 3030): the next `size` octets are message
    /// text.
    Bdat {
        /// Octets in this chunk.
        size: u64,
        /// `LAST`: this chunk ends the message.
        last: bool,
    },
    /// `STARTTLS` (RFC 3207), without argument.
    Starttls,
    /// `AUTH mechanism [initial-response]` (RFC 4954). The mechanism is
    /// `None` when it is neither PLAIN nor LOGIN; the initial response is
    /// the raw (base64) text, decoded by the session.
    Auth {
        /// The mechanism, if Tern supports it.
        mechanism: Option<Mechanism>,
        /// The initial response, undecoded.
        initial: Option<Vec<u8>>,
    },
    /// A verb Tern does not implement (
    /// or anything else made of letters).
    Unknown,
    /// `PROXY ...`: a PROXY protocol header line, from a client not
    /// trusted to send one (tern-listen reads those of trusted balancers).
    Proxy,
}

/// The SASL mechanisms Tern offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    /// PLAIN (RFC 4616).
    Plain,
    /// LOGIN (the de facto username/password exchange).
    Login,
}

/// A command line that cannot be parsed. Each variant's message is the
/// reply text; [`CommandError::reply_code`] gives the codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// The line holds a NUL byte.
    #[error("NUL not allowed in commands")]
    Nul,
    /// Empty line or a verb that is not letters.
    #[error("syntax error, command unrecognized")]
    BadVerb,
    /// HELO/EHLO without a host name.
    #[error("HELO and EHLO need a host name")]
    MissingHost,
    /// `MAIL` without `FROM:` or `RCPT` without `TO:`.
    #[error("syntax: MAIL FROM:<address> or RCPT TO:<address>")]
    MissingKeyword,
    /// The path is not enclosed in `<` and `>`.
    #[error("the address must be in angle brackets")]
    NoBrackets,
    /// The path is longer than [`MAX_PATH`].
    #[error("address too long")]
    PathTooLong,
    /// A control character in the path, or an unterminated quote.
    #[error("bad character or syntax in address")]
    BadPath,
    /// Non-ASCII bytes that are not UTF-8.
    #[error("address is not valid UTF-8")]
    BadUtf8,
    /// A recipient that is not an RFC 5321 Mailbox.
    #[error("bad recipient address syntax")]
    BadRecipient,
    /// A sender that is not an RFC 5321 Mailbox.
    #[error("bad sender address syntax")]
    BadSender,
    /// `<>` as a recipient.
    #[error("empty recipient")]
    EmptyRecipient,
    /// A recipient without `@` and domain.
    #[error("address must include a domain")]
    NoDomain,
    /// A parameter Tern does not know, or a parameter given twice.
    #[error("unrecognized parameter")]
    UnknownParameter,
    /// `SIZE=` or `BODY=` with a bad value.
    #[error("bad parameter value")]
    BadParameter,
    /// `BDAT` without a valid size, or with something other than `LAST`
    /// after it. The chunk cannot be found: the connection must be closed.
    #[error("syntax: BDAT <octets> [LAST]")]
    BadChunk,
    /// A verb that takes no argument was given one (`DATA x`, `RSET x`,
    /// `QUIT x`).
    #[error("this command takes no argument")]
    UnexpectedArgument,
    /// `AUTH` without a mechanism, or with more than an initial response
    /// after it.
    #[error("syntax: AUTH mechanism [initial-response]")]
    BadAuth,
}

impl CommandError {
    /// The reply code and enhanced status code for this error.
    pub fn reply_code(self) -> (u16, &'static str) {
        match self {
            CommandError::Nul | CommandError::BadVerb => (500, "5.5.2"),
            CommandError::UnknownParameter => (555, "5.5.4"),
            CommandError::PathTooLong
            | CommandError::BadPath
            | CommandError::BadUtf8
            | CommandError::EmptyRecipient
            | CommandError::BadRecipient
            | CommandError::NoDomain => (501, "5.1.3"),
            CommandError::BadSender => (501, "5.1.7"),
            _ => (501, "5.5.4"),
        }
    }
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// Parses one command line (CRLF already removed).
///
/// # Errors
/// A [`CommandError`] naming what is wrong.
pub fn parse(line: &[u8]) -> Result<Command, CommandError> {
    if line.contains(&0) {
        return Err(CommandError::Nul);
    }
    let verb_len = line.iter().position(|&b| b == b' ').unwrap_or(line.len());
    let verb = &line[..verb_len];
    if verb.is_empty() || !verb.iter().all(u8::is_ascii_alphabetic) {
        return Err(CommandError::BadVerb);
    }
    let arg = trim(line.get(verb_len + 1..).unwrap_or(b""));
    let upper = verb.to_ascii_uppercase();
    let no_arg = |c: Command| {
        if arg.is_empty() {
            Ok(c)
        } else {
            Err(CommandError::UnexpectedArgument)
        }
    };
    match &upper[..] {
        b"HELO" | b"EHLO" => {
            if arg.is_empty() {
                return Err(CommandError::MissingHost);
            }
            let host = arg.to_vec();
            Ok(if &upper[..] == b"HELO" {
                Command::Helo(host)
            } else {
                Command::Ehlo(host)
            })
        }
        b"MAIL" => {
            let rest = keyword(arg, b"FROM:")?;
            let (path, params) = path(rest)?;
            if !path.is_null() && !is_mailbox(&path.0) {
                return Err(CommandError::BadSender);
            }
            Ok(Command::Mail(path, mail_params(params)?))
        }
        b"RCPT" => {
            let rest = keyword(arg, b"TO:")?;
            let (path, params) = path(rest)?;
            if !trim(params).is_empty() {
                return Err(CommandError::UnknownParameter);
            }
            if path.is_null() {
                return Err(CommandError::EmptyRecipient);
            }
            match memchr::memrchr(b'@', &path.0) {
                Some(at) if at > 0 && at + 1 < path.0.len() => {
                    if is_mailbox(&path.0) {
                        Ok(Command::Rcpt(path))
                    } else {
                        Err(CommandError::BadRecipient)
                    }
                }
                // RFC 5321 4.5.1: `<Postmaster>` without a domain MUST be
                // accepted (the domain is added later: envnoathost).
                None if path.is_postmaster() => Ok(Command::Rcpt(path)),
                _ => Err(CommandError::NoDomain),
            }
        }
        b"DATA" => no_arg(Command::Data),
        b"RSET" => no_arg(Command::Rset),
        b"QUIT" => no_arg(Command::Quit),
        b"NOOP" => Ok(Command::Noop),
        b"VRFY" => Ok(Command::Vrfy),
        b"EXPN" => Ok(Command::Expn),
        b"HELP" => Ok(Command::Help),
        b"BDAT" => bdat(arg),
        b"STARTTLS" => no_arg(Command::Starttls),
        b"AUTH" => auth(arg),
        // A PROXY protocol (version 1) header: what a load balancer sends
        // first. tern-listen reads it from trusted balancers; here it
        // came from a client not trusted to send one.
        b"PROXY" => Ok(Command::Proxy),
        _ => Ok(Command::Unknown),
    }
}

fn auth(arg: &[u8]) -> Result<Command, CommandError> {
    let mut words = arg.split(|&b| b == b' ').filter(|w| !w.is_empty());
    let mech = words.next().ok_or(CommandError::BadAuth)?;
    let initial = words.next().map(<[u8]>::to_vec);
    if words.next().is_some() {
        return Err(CommandError::BadAuth);
    }
    let mechanism = if mech.eq_ignore_ascii_case(b"PLAIN") {
        Some(Mechanism::Plain)
    } else if mech.eq_ignore_ascii_case(b"LOGIN") {
        Some(Mechanism::Login)
    } else {
        None
    };
    Ok(Command::Auth { mechanism, initial })
}

fn bdat(arg: &[u8]) -> Result<Command, CommandError> {
    let mut words = arg.split(|&b| b == b' ').filter(|w| !w.is_empty());
    let size = words.next().ok_or(CommandError::BadChunk)?;
    if size.len() > MAX_SIZE_DIGITS || !size.iter().all(u8::is_ascii_digit) {
        return Err(CommandError::BadChunk);
    }
    let size = std::str::from_utf8(size)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(CommandError::BadChunk)?;
    let last = match words.next() {
        None => false,
        Some(w) if w.eq_ignore_ascii_case(b"LAST") => true,
        Some(_) => return Err(CommandError::BadChunk),
    };
    if words.next().is_some() {
        return Err(CommandError::BadChunk);
    }
    Ok(Command::Bdat { size, last })
}

fn keyword<'a>(arg: &'a [u8], kw: &[u8]) -> Result<&'a [u8], CommandError> {
    if arg.len() >= kw.len() && arg[..kw.len()].eq_ignore_ascii_case(kw) {
        Ok(trim(&arg[kw.len()..]))
    } else {
        Err(CommandError::MissingKeyword)
    }
}

/// Splits `<path> params` into the path (route removed, checked) and the
/// parameter text.
fn path(s: &[u8]) -> Result<(Path, &[u8]), CommandError> {
    if s.first() != Some(&b'<') {
        return Err(CommandError::NoBrackets);
    }
    let mut in_quote = false;
    let mut escaped = false;
    let mut end = None;
    for (i, &b) in s.iter().enumerate().skip(1) {
        if escaped {
            escaped = false;
            continue;
        }
        match b {
            b'\\' if in_quote => escaped = true,
            b'"' => in_quote = !in_quote,
            b'>' if !in_quote => {
                end = Some(i);
                break;
            }
            _ => {}
        }
    }
    let Some(end) = end else {
        return Err(if in_quote {
            CommandError::BadPath
        } else {
            CommandError::NoBrackets
        });
    };
    let mut addr = &s[1..end];
    let rest = &s[end + 1..];
    if !rest.is_empty() && rest[0] != b' ' {
        return Err(CommandError::BadPath);
    }
    // Source route: @a,@b:user@host -> user@host.
    if addr.first() == Some(&b'@') {
        match memchr::memchr(b':', addr) {
            Some(colon) => addr = &addr[colon + 1..],
            None => return Err(CommandError::BadPath),
        }
    }
    if addr.len() > MAX_PATH {
        return Err(CommandError::PathTooLong);
    }
    if addr.iter().any(|&b| b < 0x20 || b == 0x7f) {
        return Err(CommandError::BadPath);
    }
    if !addr.is_ascii() && std::str::from_utf8(addr).is_err() {
        return Err(CommandError::BadUtf8);
    }
    Ok((Path(addr.to_vec()), rest))
}

/// True when `addr` is an RFC 5321 Mailbox (UTF-8 allowed: SMTPUTF8 is
/// the session's check).
fn is_mailbox(addr: &[u8]) -> bool {
    tern_addr::Mailbox::parse(addr, tern_addr::Charset::Utf8).is_ok()
}

/// MAIL parameters. A parameter repeated with the same value is taken
/// once (Python's `send_message` repeats `BODY=8BITMIME` when its caller
/// passes it too); a repeat with another value is refused (555 5.5.4).
fn mail_params(text: &[u8]) -> Result<MailParams, CommandError> {
    let mut p = MailParams::default();
    let mut seen: Vec<(Vec<u8>, Option<&[u8]>)> = Vec::new();
    for param in text.split(|&b| b == b' ').filter(|s| !s.is_empty()) {
        let (key, value) = match memchr::memchr(b'=', param) {
            Some(eq) => (&param[..eq], Some(&param[eq + 1..])),
            None => (param, None),
        };
        let key = key.to_ascii_uppercase();
        if let Some((_, before)) = seen.iter().find(|(k, _)| *k == key) {
            let same = match (before, value) {
                (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
                (None, None) => true,
                _ => false,
            };
            if same {
                continue;
            }
            return Err(CommandError::UnknownParameter);
        }
        seen.push((key.clone(), value));
        match (&key[..], value) {
            (b"SIZE", Some(v)) if p.size.is_none() => {
                if v.is_empty() || v.len() > MAX_SIZE_DIGITS || !v.iter().all(u8::is_ascii_digit) {
                    return Err(CommandError::BadParameter);
                }
                let n = std::str::from_utf8(v)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or(CommandError::BadParameter)?;
                p.size = Some(n);
            }
            (b"BODY", Some(v)) if p.body.is_none() => {
                p.body = Some(if v.eq_ignore_ascii_case(b"7BIT") {
                    Body::SevenBit
                } else if v.eq_ignore_ascii_case(b"8BITMIME") {
                    Body::EightBitMime
                } else {
                    return Err(CommandError::BadParameter);
                });
            }
            (b"SMTPUTF8", None) if !p.smtputf8 => p.smtputf8 = true,
            _ => return Err(CommandError::UnknownParameter),
        }
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use CommandError as E;

    fn p(s: &[u8]) -> Result<Command, CommandError> {
        parse(s)
    }

    #[test]
    fn a_proxy_header_line_is_its_own_command() {
        for line in [
            &b"PROXY TCP4 192.0.2.1 192.0.2.2 40000 25"[..],
            b"proxy UNKNOWN",
            b"PROXY",
        ] {
            assert_eq!(parse(line), Ok(Command::Proxy), "{}", line.escape_ascii());
        }
    }

    #[test]
    fn bad_commands() {
        let long_path = [&b"RCPT TO:<"[..], &vec![b'a'; 600], b"@x>"].concat();
        let cases: &[(&[u8], CommandError)] = &[
            (b"", E::BadVerb),
            (b" NOOP", E::BadVerb),
            (b"NO0P", E::BadVerb),
            (b"MAIL\0 FROM:<>", E::Nul),
            (b"NOOP \0", E::Nul),
            (b"HELO", E::MissingHost),
            (b"EHLO   ", E::MissingHost),
            (b"MAIL", E::MissingKeyword),
            (b"MAIL TO:<a@b>", E::MissingKeyword),
            (b"RCPT FROM:<a@b>", E::MissingKeyword),
            (b"MAIL FROM:a@b", E::NoBrackets),
            (b"MAIL FROM:<a@b", E::NoBrackets),
            (b"MAIL FROM:<\"a>@b", E::BadPath),
            (b"MAIL FROM:<a@b>x", E::BadPath),
            (b"MAIL FROM:<a\x01@b>", E::BadPath),
            (b"MAIL FROM:<a\x7f@b>", E::BadPath),
            (b"MAIL FROM:<@route>", E::BadPath),
            (b"MAIL FROM:<\xff@b>", E::BadUtf8),
            (&long_path, E::PathTooLong),
            (b"RCPT TO:<>", E::EmptyRecipient),
            (b"RCPT TO:<postmasterx>", E::NoDomain),
            (b"RCPT TO:<postmaster@>", E::NoDomain),
            (b"RCPT TO:<a@>", E::NoDomain),
            (b"RCPT TO:<@b>", E::BadPath),
            (b"RCPT TO:<a@b> NOTIFY=NEVER", E::UnknownParameter),
            (b"MAIL FROM:<a@b> FOO", E::UnknownParameter),
            (b"MAIL FROM:<a@b> SMTPUTF8=1", E::UnknownParameter),
            (b"MAIL FROM:<a@b> SIZE=1 SIZE=2", E::UnknownParameter),
            (
                b"MAIL FROM:<a@b> BODY=7BIT BODY=8BITMIME",
                E::UnknownParameter,
            ),
            (b"MAIL FROM:<a@b> SMTPUTF8 SMTPUTF8=x", E::UnknownParameter),
            (b"MAIL FROM:<a@b> SIZE=", E::BadParameter),
            (b"MAIL FROM:<a@b> SIZE=-1", E::BadParameter),
            (
                b"MAIL FROM:<a@b> SIZE=99999999999999999999",
                E::BadParameter,
            ),
            (b"MAIL FROM:<a@b> BODY=BINARYMIME", E::BadParameter),
            (b"DATA x", E::UnexpectedArgument),
            (b"RSET x", E::UnexpectedArgument),
            (b"QUIT now", E::UnexpectedArgument),
            (b"STARTTLS now", E::UnexpectedArgument),
            (b"BDAT", E::BadChunk),
            (b"BDAT x", E::BadChunk),
            (b"BDAT -1", E::BadChunk),
            (b"BDAT 10 FIRST", E::BadChunk),
            (b"BDAT 10 LAST x", E::BadChunk),
            (b"BDAT 99999999999999999999", E::BadChunk),
            (b"AUTH", E::BadAuth),
            (b"AUTH   ", E::BadAuth),
            (b"AUTH PLAIN abc def", E::BadAuth),
        ];
        for (line, want) in cases {
            assert_eq!(p(line), Err(*want), "{:?}", String::from_utf8_lossy(line));
        }
    }

    /// Paths that are not RFC 5321 Mailboxes are refused at MAIL (501
    /// 5.1.7) as at RCPT (501 5.1.3); valid ones pass, at both.
    #[test]
    fn mailbox_syntax_table() {
        let long_local = format!("{}@example.org", "a".repeat(256));
        let bad: &[&str] = &[
            "a@b@example",
            "sp ace@example",
            "a b@c..d",
            "a@c..d",
            ".a@example.org",
            "a.@example.org",
            "a..b@example.org",
            "a@-example.org",
            "a@example-.org",
            "a@exa_mple.org",
            "a@[300.1.1.1]",
            "a@[192.0.2.1",
            "a(comment)@example.org",
            "a,b@example.org",
            "a\\b@example.org",
            "a\"b\"@example.org",
            "a@.example.org",
            &long_local,
        ];
        for addr in bad {
            let mail = format!("MAIL FROM:<{addr}>");
            let rcpt = format!("RCPT TO:<{addr}>");
            assert_eq!(p(mail.as_bytes()), Err(E::BadSender), "{mail}");
            assert_eq!(p(rcpt.as_bytes()), Err(E::BadRecipient), "{rcpt}");
        }
        assert_eq!(E::BadSender.reply_code(), (501, "5.1.7"));
        assert_eq!(E::BadRecipient.reply_code(), (501, "5.1.3"));
        let good: &[&str] = &[
            "a@example.org",
            "first.last+tag@sub.example.org",
            "!#$%&'*+-/=?^_`{|}~@example.org",
            "\"sp ace\"@example.org",
            "\"a@b\"@example.org",
            "a@[192.0.2.1]",
            "a@[IPv6:2001:db8::1]",
            "a@localhost",
            "jöe@exämple.org",
        ];
        for addr in good {
            let mail = format!("MAIL FROM:<{addr}>");
            let rcpt = format!("RCPT TO:<{addr}>");
            assert!(p(mail.as_bytes()).is_ok(), "{mail}");
            assert!(p(rcpt.as_bytes()).is_ok(), "{rcpt}");
        }
    }

    #[test]
    fn auth_commands() {
        assert_eq!(
            p(b"auth plain AGpvZQBz"),
            Ok(Command::Auth {
                mechanism: Some(Mechanism::Plain),
                initial: Some(b"AGpvZQBz".to_vec())
            })
        );
        assert_eq!(
            p(b"AUTH LOGIN"),
            Ok(Command::Auth {
                mechanism: Some(Mechanism::Login),
                initial: None
            })
        );
        assert_eq!(
            p(b"AUTH CRAM-MD5"),
            Ok(Command::Auth {
                mechanism: None,
                initial: None
            })
        );
    }

    #[test]
    fn good_commands() {
        let path = |s: &str| Path(s.as_bytes().to_vec());
        let cases: &[(&[u8], Command)] = &[
            (b"helo x.example", Command::Helo(b"x.example".to_vec())),
            (b"EHLO [127.0.0.1]", Command::Ehlo(b"[127.0.0.1]".to_vec())),
            (
                b"MAIL FROM:<>",
                Command::Mail(path(""), MailParams::default()),
            ),
            (
                b"mail from: <a@b>",
                Command::Mail(path("a@b"), MailParams::default()),
            ),
            (
                b"MAIL FROM:<a@b> SIZE=100 BODY=8bitmime smtputf8",
                Command::Mail(
                    path("a@b"),
                    MailParams {
                        size: Some(100),
                        body: Some(Body::EightBitMime),
                        smtputf8: true,
                    },
                ),
            ),
            (
                b"MAIL FROM:<a@b> BODY=8BITMIME body=8bitmime SIZE=5 SIZE=5",
                Command::Mail(
                    path("a@b"),
                    MailParams {
                        size: Some(5),
                        body: Some(Body::EightBitMime),
                        smtputf8: false,
                    },
                ),
            ),
            (b"RCPT TO:<@r1,@r2:u@h>", Command::Rcpt(path("u@h"))),
            (b"RCPT TO:<postmaster>", Command::Rcpt(path("postmaster"))),
            (b"rcpt to:<PostMaster>", Command::Rcpt(path("PostMaster"))),
            (b"RCPT TO:<\"a >b\"@h>", Command::Rcpt(path("\"a >b\"@h"))),
            (
                b"RCPT TO:<\"a\\\"b\"@h>",
                Command::Rcpt(path("\"a\\\"b\"@h")),
            ),
            (
                "RCPT TO:<jöe@exämple>".as_bytes(),
                Command::Rcpt(path("jöe@exämple")),
            ),
            (b"DATA", Command::Data),
            (b"data", Command::Data),
            (b"RSET", Command::Rset),
            (b"NOOP anything", Command::Noop),
            (b"QUIT", Command::Quit),
            (b"VRFY a", Command::Vrfy),
            (b"EXPN list", Command::Expn),
            (b"HELP", Command::Help),
            (
                b"BDAT 10 LAST",
                Command::Bdat {
                    size: 10,
                    last: true,
                },
            ),
            (
                b"bdat 0 last",
                Command::Bdat {
                    size: 0,
                    last: true,
                },
            ),
            (
                b"BDAT  7",
                Command::Bdat {
                    size: 7,
                    last: false,
                },
            ),
            (b"STARTTLS", Command::Starttls),
            (b"starttls", Command::Starttls),
            (b"ETRN example.com", Command::Unknown),
        ];
        for (line, want) in cases {
            assert_eq!(
                p(line).as_ref(),
                Ok(want),
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn path_helpers() {
        let p = Path("a@b@c.d".into());
        assert_eq!(p.domain(), Some(&b"c.d"[..]));
        assert!(!p.is_null() && !p.is_non_ascii());
        assert!(Path("ä@b".as_bytes().to_vec()).is_non_ascii());
    }
}
