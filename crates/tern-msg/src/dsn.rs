//! Bounce messages as RFC 3464 delivery status notifications.
//!
//! [`compose`] builds a complete message (LF line ends, ready for
//! `tern-queue`) of type `multipart/report; report-type=delivery-status`
//! with three parts:
//!
//! 1. `text/plain`: names each failed recipient and the reason;
//! 2. `message/delivery-status`: `Reporting-MTA`, `Arrival-Date`, then one
//!    block per recipient (`Final-Recipient`, `Action: failed`, `Status`,
//!    `Diagnostic-Code: x-tern; ...`);
//! 3. the original: `message/rfc822` when its body is at most
//!    [`Bounce::max_body`] bytes (the whole message, 8-bit bytes kept),
//!    else `text/rfc822-headers` (its header only; part 1 says so).
//!
//! The status of each recipient is the first `(#5.x.y)` in its delivery
//! report text, else `5.0.0`. Everything taken from a report or an address
//! is sanitised before it is written: printable ASCII only (other bytes
//! become `?`, white space runs become one space), at most
//! [`MAX_DIAGNOSTIC`] bytes, folded into lines shorter than 80 columns. The
//! bounce says nothing but the reporting host (`me`), the addresses and the
//! reports it is given.
//!
//! Pure: no I/O except reading the original message from the given reader
//! (at most its header, bounded by [`MAX_KEPT_HEADER`], plus
//! `max_body + 1` bytes).

use std::io::{self, Read};

/// Default for [`Bounce::max_body`] (`bouncemaxbytes`).
pub const DEFAULT_MAX_BODY: u64 = 50_000;
/// Longest diagnostic text kept per recipient, after sanitising.
pub const MAX_DIAGNOSTIC: usize = 1000;
/// Longest original header kept; a longer one is cut at a line end and the
/// original is returned as `text/rfc822-headers`.
pub const MAX_KEPT_HEADER: usize = 256 * 1024;
/// Most failed recipients listed in one bounce: as many as a message can
/// have.
pub const MAX_RECIPIENTS: usize = crate::inject::MAX_RECIPIENTS;
/// Width at which header fields and text lines are folded.
const FOLD: usize = 76;

/// One recipient that could not be delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedRecipient {
    /// The envelope recipient address.
    pub address: Vec<u8>,
    /// The delivery report text (e.g. `Sorry, no mailbox here by that
    /// name. (#5.1.1)`).
    pub text: Vec<u8>,
}

/// What a bounce says.
#[derive(Debug, Clone)]
pub struct Bounce<'a> {
    /// The reporting host (`control/me`).
    pub me: &'a str,
    /// The `From:` address (`bouncefrom@bouncehost`, default
    /// `MAILER-DAEMON@me`).
    pub from: &'a str,
    /// Who receives the bounce (the original sender, or the double-bounce
    /// address).
    pub to: &'a [u8],
    /// The original envelope sender (empty for a bounce of a bounce).
    pub original_sender: &'a [u8],
    /// When the original arrived (seconds since the epoch).
    pub arrival: i64,
    /// Now (seconds since the epoch), for `Date:`.
    pub now: i64,
    /// A unique Message-ID, without angle brackets.
    pub message_id: &'a str,
    /// The failed recipients (at least one, at most [`MAX_RECIPIENTS`]).
    pub recipients: &'a [FailedRecipient],
    /// True for a double bounce (a bounce that could not be delivered).
    pub double: bool,
    /// Most bytes of the original's body returned (`bouncemaxbytes`).
    pub max_body: u64,
}

/// Why no bounce could be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DsnError {
    /// No recipients, or more than [`MAX_RECIPIENTS`].
    #[error("a bounce needs 1 to {MAX_RECIPIENTS} failed recipients")]
    Recipients,
    /// Reading the original message failed.
    #[error("cannot read the original message: {0}")]
    Read(#[from] io::Error),
}

impl DsnError {
    /// Every failure is temporary: the bounce is tried again later.
    pub fn is_temporary(&self) -> bool {
        true
    }
}

/// Printable ASCII only, white space collapsed, trimmed, at most `max`
/// bytes.
pub fn sanitize(text: &[u8], max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max));
    let mut space = false;
    for &b in text {
        if out.len() >= max {
            break;
        }
        if b.is_ascii_whitespace() {
            space = !out.is_empty();
            continue;
        }
        if space {
            out.push(' ');
            space = false;
            if out.len() >= max {
                break;
            }
        }
        out.push(if (0x21..0x7f).contains(&b) {
            b as char
        } else {
            '?'
        });
    }
    out.truncate(out.trim_end().len());
    out
}

/// An address for a header field: visible ASCII only (anything else,
/// white space included, becomes `?`), at most `max` bytes.
fn sanitize_address(addr: &[u8], max: usize) -> String {
    addr.iter()
        .take(max)
        .map(|&b| {
            if (0x21..0x7f).contains(&b) {
                b as char
            } else {
                '?'
            }
        })
        .collect()
}

/// The first `(#5.x.y)` status in `text` (x, y of 1 to 3 digits); else
/// the enhanced code of the first quoted SMTP reply in it (`550 5.1.1 ...`,
/// as tern-remote reports a remote server's answer); else `5.0.0`.
pub fn status_of(text: &[u8]) -> String {
    let digits = |s: &[u8]| -> Option<usize> {
        let n = s.iter().take_while(|b| b.is_ascii_digit()).count();
        (1..=3).contains(&n).then_some(n)
    };
    if let Some(s) = qmail_status(text, digits) {
        return s;
    }
    // "5DD 5.X.Y" at a word start, followed by a space or the end.
    for (i, w) in text.windows(6).enumerate() {
        if w[0] == b'5'
            && w[1].is_ascii_digit()
            && w[2].is_ascii_digit()
            && w[3] == b' '
            && w[4] == b'5'
            && w[5] == b'.'
            && (i == 0 || !text[i - 1].is_ascii_alphanumeric())
        {
            let rest = &text[i + 6..];
            if let Some(a) = digits(rest)
                && rest.get(a) == Some(&b'.')
                && let Some(b) = digits(&rest[a + 1..])
                && rest.get(a + 1 + b).is_none_or(|&c| c == b' ')
            {
                return String::from_utf8_lossy(&text[i + 4..i + 6 + a + 1 + b]).into_owned();
            }
        }
    }
    "5.0.0".to_string()
}

fn qmail_status(text: &[u8], digits: impl Fn(&[u8]) -> Option<usize>) -> Option<String> {
    let mut i = 0;
    while let Some(p) = memchr::memmem::find(&text[i..], b"(#5.") {
        let start = i + p + 2; // at '5'
        let rest = &text[start + 2..];
        if let Some(a) = digits(rest)
            && rest.get(a) == Some(&b'.')
            && let Some(b) = digits(&rest[a + 1..])
            && rest.get(a + 1 + b) == Some(&b')')
        {
            return Some(String::from_utf8_lossy(&text[start..start + 2 + a + 1 + b]).into_owned());
        }
        i = start;
    }
    None
}

/// A remote server's reply quoted in a report text, as tern-remote writes
/// it: `<server> said: <code> <text>[ (in reply to <stage>)]`. Returns the
/// server's host name (when `<server>` starts with one; "the relay" names
/// none) and the reply from its code on, without the stage note.
fn smtp_diagnostic(diag: &str) -> Option<(Option<&str>, &str)> {
    let at = diag.find(" said: ")?;
    let reply = &diag[at + 7..];
    let code = reply.as_bytes().get(..3)?;
    if !(matches!(code[0], b'4' | b'5') && code[1].is_ascii_digit() && code[2].is_ascii_digit())
        || reply
            .as_bytes()
            .get(3)
            .is_some_and(|&c| c != b' ' && c != b'-')
    {
        return None;
    }
    let reply = match reply.rfind(" (in reply to ") {
        Some(end) => &reply[..end],
        None => reply,
    };
    let first = diag[..at].split(' ').next().unwrap_or("");
    let is_host = first.contains('.')
        && first.len() <= 255
        && first
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        && !first.starts_with(['.', '-']);
    Some((is_host.then_some(first), reply))
}

/// Folds `text` (already sanitised: single spaces, no control characters)
/// into lines of at most [`FOLD`] columns, the first starting after
/// `first_used` columns; continuation lines start with `indent`. A word
/// longer than a line is split.
fn fold(text: &str, first_used: usize, indent: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    let mut col = first_used;
    let mut line_empty = true;
    for word in text.split(' ').filter(|w| !w.is_empty()) {
        let mut word = word;
        if !line_empty && col + 1 + word.len() > FOLD {
            out.push('\n');
            out.push_str(indent);
            col = indent.len();
            line_empty = true;
        }
        if !line_empty {
            out.push(' ');
            col += 1;
        }
        // A word too long for the rest of the line is split (the text is
        // ASCII, so any byte index is a character boundary).
        while col + word.len() > FOLD {
            let take = FOLD.saturating_sub(col).max(1).min(word.len());
            out.push_str(&word[..take]);
            col += take;
            word = &word[take..];
            if word.is_empty() {
                break;
            }
            out.push('\n');
            out.push_str(indent);
            col = indent.len();
        }
        out.push_str(word);
        col += word.len();
        line_empty = false;
    }
    out
}

/// The original, read from its reader: header, and the body when it fits.
struct Original {
    header: Vec<u8>,
    body: Option<Vec<u8>>,
}

fn read_original(r: &mut dyn Read, max_body: u64) -> io::Result<Original> {
    // Read the header byte-wise through a buffer until the empty line.
    let mut header = Vec::new();
    let mut rest = Vec::new();
    let mut buf = [0u8; 8192];
    let mut ended = false;
    while header.len() <= MAX_KEPT_HEADER {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let from = header.len().saturating_sub(3);
        header.extend_from_slice(&buf[..n]);
        if let Some(end) = header_end(&header, from) {
            rest = header.split_off(end);
            ended = true;
            break;
        }
    }
    if !ended && header.len() > MAX_KEPT_HEADER {
        // Cut at the last line end within the bound; never the body.
        let cut =
            memchr::memrchr(b'\n', &header[..MAX_KEPT_HEADER]).map_or(MAX_KEPT_HEADER, |p| p + 1);
        header.truncate(cut);
        return Ok(Original { header, body: None });
    }
    let mut body = rest;
    let limit = max_body.saturating_add(1);
    if (body.len() as u64) < limit {
        let want = limit - body.len() as u64;
        r.take(want).read_to_end(&mut body)?;
    }
    if body.len() as u64 > max_body {
        return Ok(Original { header, body: None });
    }
    Ok(Original {
        header,
        body: Some(body),
    })
}

/// Where the header ends (just after its empty line), searching from `from`.
fn header_end(h: &[u8], from: usize) -> Option<usize> {
    if h.first() == Some(&b'\n') {
        return Some(1);
    }
    if h.starts_with(b"\r\n") {
        return Some(2);
    }
    let mut i = from;
    while let Some(p) = memchr::memchr(b'\n', &h[i..]) {
        let nl = i + p;
        match &h[nl + 1..] {
            [b'\n', ..] => return Some(nl + 2),
            [b'\r', b'\n', ..] => return Some(nl + 3),
            _ => {}
        }
        i = nl + 1;
    }
    None
}

fn has_8bit(b: &[u8]) -> bool {
    b.iter().any(|&c| c >= 0x80)
}

/// Composes the bounce; the original message is read from `original`.
///
/// # Errors
/// No recipients (or too many), or reading the original failed.
pub fn compose(b: &Bounce<'_>, original: &mut dyn Read) -> Result<Vec<u8>, DsnError> {
    if b.recipients.is_empty() || b.recipients.len() > MAX_RECIPIENTS {
        return Err(DsnError::Recipients);
    }
    let orig = read_original(original, b.max_body)?;
    let me = sanitize_address(b.me.as_bytes(), 255);

    // Part 1: for people.
    let mut text = String::new();
    text.push_str(&format!("This is the mail system at {me}.\n\n"));
    if b.double {
        text.push_str(
            "A delivery failure notice could not be delivered to the address it was\n\
             sent to. The failure is permanent; the system has given up.\n\n",
        );
    } else {
        text.push_str(
            "Your message could not be delivered to the recipients below. The failure\n\
             is permanent; the system has given up.\n\n",
        );
    }
    let sender = if b.original_sender.is_empty() {
        "<> (a bounce)".to_string()
    } else {
        format!("<{}>", sanitize_address(b.original_sender, 1000))
    };
    text.push_str(&fold(
        &format!(
            "The message from {sender} arrived on {}.",
            tern_date::rfc5322(b.arrival)
        ),
        0,
        "",
    ));
    text.push_str("\n\n");
    let mut status_part = String::new();
    status_part.push_str(&format!("Reporting-MTA: dns; {me}\n"));
    status_part.push_str(&format!(
        "Arrival-Date: {}\n",
        tern_date::rfc5322(b.arrival)
    ));
    for r in b.recipients {
        let addr = sanitize_address(&r.address, 1000);
        let diag = sanitize(&r.text, MAX_DIAGNOSTIC);
        text.push_str(&format!("<{addr}>:\n    {}\n\n", fold(&diag, 4, "    ")));
        status_part.push('\n');
        let fr = format!("Final-Recipient: rfc822; {addr}");
        status_part.push_str(&fold(&fr, 0, " "));
        status_part.push('\n');
        status_part.push_str("Action: failed\n");
        status_part.push_str(&format!("Status: {}\n", status_of(&r.text)));
        match smtp_diagnostic(&diag) {
            // A remote server's answer: RFC 3464's smtp diagnostic type,
            // and the server's name when the text gives one.
            Some((host, reply)) => {
                if let Some(host) = host {
                    status_part.push_str(&format!("Remote-MTA: dns; {host}\n"));
                }
                status_part.push_str(&fold(&format!("Diagnostic-Code: smtp; {reply}"), 0, " "));
                status_part.push('\n');
            }
            None if !diag.is_empty() => {
                status_part.push_str(&fold(&format!("Diagnostic-Code: x-tern; {diag}"), 0, " "));
                status_part.push('\n');
            }
            None => {}
        }
    }
    if orig.body.is_none() {
        text.push_str(&format!(
            "The original message is larger than {} bytes after its header, so only\n\
             its header is attached.\n",
            b.max_body
        ));
    } else {
        text.push_str("The original message is attached.\n");
    }

    // Part 3: the original.
    let mut original_part = orig.header;
    let orig_type = match orig.body {
        Some(body) => {
            original_part.extend_from_slice(&body);
            "message/rfc822"
        }
        None => "text/rfc822-headers",
    };
    let eight = has_8bit(&original_part);

    // A boundary that occurs nowhere in the parts.
    let mut n = 0u32;
    let boundary = loop {
        let cand = format!("=_tern_{}_{n}", b.now);
        let dashed = format!("--{cand}");
        if memchr::memmem::find(&original_part, dashed.as_bytes()).is_none()
            && !text.contains(&dashed)
            && !status_part.contains(&dashed)
        {
            break cand;
        }
        n += 1;
    };

    let subject = if b.double {
        "failure notice"
    } else {
        "Undelivered Mail Returned to Sender"
    };
    let to = sanitize_address(b.to, 1000);
    let mut out = Vec::with_capacity(original_part.len() + text.len() + status_part.len() + 1024);
    let mut w = |s: &str| out.extend_from_slice(s.as_bytes());
    w(&format!("Date: {}\n", tern_date::rfc5322(b.now)));
    w(&format!(
        "From: Mail Delivery System <{}>\n",
        sanitize_address(b.from.as_bytes(), 1000)
    ));
    w(&format!("To: <{to}>\n"));
    w(&format!("Subject: {subject}\n"));
    w(&format!(
        "Message-ID: <{}>\n",
        sanitize_address(b.message_id.as_bytes(), 250)
    ));
    w("MIME-Version: 1.0\n");
    w(&format!(
        "Content-Type: multipart/report; report-type=delivery-status;\n boundary=\"{boundary}\"\n"
    ));
    if eight {
        w("Content-Transfer-Encoding: 8bit\n");
    }
    w("Auto-Submitted: auto-replied\n");
    w("\n");
    w("This is a MIME-formatted delivery status notification.\n\n");
    w(&format!("--{boundary}\n"));
    w("Content-Type: text/plain; charset=us-ascii\n");
    w("Content-Description: Notification\n\n");
    w(&text);
    w(&format!("\n--{boundary}\n"));
    w("Content-Type: message/delivery-status\n");
    w("Content-Description: Delivery report\n\n");
    w(&status_part);
    w(&format!("\n--{boundary}\n"));
    w(&format!("Content-Type: {orig_type}\n"));
    w("Content-Description: Undelivered message\n");
    if eight {
        w("Content-Transfer-Encoding: 8bit\n");
    }
    w("\n");
    out.extend_from_slice(&original_part);
    if !original_part.ends_with(b"\n") {
        out.push(b'\n');
    }
    out.extend_from_slice(format!("\n--{boundary}--\n").as_bytes());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORIGINAL: &[u8] =
        b"Received: (tern-queue 1 invoked by uid 1000); Fri, 27 Nov 2026 09:16:24 +0000\n\
From: Sender <sender@example.com>\n\
To: a@example.com, b@example.com\n\
Subject: caf\xc3\xa9\n\
\n\
Body line \xe9 8-bit\n\
Second line\n";

    fn rcpts() -> Vec<FailedRecipient> {
        vec![
            FailedRecipient {
                address: b"nobody@example.com".to_vec(),
                text: b"Sorry, no mailbox here by that name. (#5.1.1)".to_vec(),
            },
            FailedRecipient {
                address: b"loop@example.com".to_vec(),
                text: b"This message is looping: it already has my Delivered-To line. (#5.4.6)"
                    .to_vec(),
            },
            FailedRecipient {
                address: b"x@example.com".to_vec(),
                text: b"tern-local reported a permanent failure without a reason".to_vec(),
            },
        ]
    }

    fn bounce<'a>(r: &'a [FailedRecipient], max_body: u64) -> Bounce<'a> {
        Bounce {
            me: "mail.example.com",
            from: "MAILER-DAEMON@mail.example.com",
            to: b"sender@example.com",
            original_sender: b"sender@example.com",
            arrival: 1_795_770_984,
            now: 1_795_771_000,
            message_id: "1795771000.42.bounce@mail.example.com",
            recipients: r,
            double: false,
            max_body,
        }
    }

    /// Splits a message into header and body, and a multipart body into
    /// its parts (each split again into header and body).
    fn split(msg: &[u8]) -> (String, &[u8]) {
        let end = header_end(msg, 0).expect("a header and a body");
        (String::from_utf8(msg[..end].to_vec()).unwrap(), &msg[end..])
    }

    fn parts<'a>(body: &'a [u8], boundary: &str) -> Vec<(String, &'a [u8])> {
        let delim = format!("\n--{boundary}");
        let mut pieces = Vec::new();
        let mut rest = body;
        while let Some(p) = memchr::memmem::find(rest, delim.as_bytes()) {
            pieces.push(&rest[..p]);
            rest = &rest[p + delim.len()..];
        }
        assert_eq!(rest, b"--\n", "close delimiter ends the message");
        // pieces[0] is the preamble; each other piece starts with "\n".
        pieces[1..]
            .iter()
            .map(|p| {
                let p = p.strip_prefix(b"\n").expect("newline after the delimiter");
                split(p)
            })
            .collect()
    }

    fn boundary_of(header: &str) -> String {
        let i = header.find("boundary=\"").unwrap() + 10;
        header[i..].split('"').next().unwrap().to_string()
    }

    #[test]
    fn bad_inputs() {
        let none: Vec<FailedRecipient> = Vec::new();
        assert!(matches!(
            compose(&bounce(&none, 100), &mut &ORIGINAL[..]),
            Err(DsnError::Recipients)
        ));
        let many = vec![rcpts()[0].clone(); MAX_RECIPIENTS + 1];
        assert!(matches!(
            compose(&bounce(&many, 100), &mut &ORIGINAL[..]),
            Err(DsnError::Recipients)
        ));
        struct Broken;
        impl Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("EIO"))
            }
        }
        let r = rcpts();
        let e = compose(&bounce(&r, 100), &mut Broken).unwrap_err();
        assert!(matches!(e, DsnError::Read(_)) && e.is_temporary());
    }

    #[test]
    fn status_codes() {
        let cases: &[(&[u8], &str)] = &[
            (b"no code", "5.0.0"),
            (b"", "5.0.0"),
            (b"(#4.3.0)", "5.0.0"),
            (b"(#5.1)", "5.0.0"),
            (b"(#5.1.1", "5.0.0"),
            (b"(#5..1)", "5.0.0"),
            (b"(#5.1234.1)", "5.0.0"),
            (b"(#5.x.1)", "5.0.0"),
            (b"(#5.1.1)", "5.1.1"),
            (b"Sorry, no mailbox here by that name. (#5.1.1)", "5.1.1"),
            (b"(#5.bad) then (#5.7.1)", "5.7.1"),
            (b"(#5.4.6) and (#5.1.1)", "5.4.6"),
            (b"x (#5.100.999) y", "5.100.999"),
            // a remote server's reply, as tern-remote quotes it
            (
                b"mx.example [192.0.2.1] said: 550 5.1.1 no such user",
                "5.1.1",
            ),
            (
                b"the relay said: 552 5.3.4 too big / 552 5.3.4 really",
                "5.3.4",
            ),
            (b"said: 550 5.7.1", "5.7.1"),
            (b"said: 550 no enhanced code", "5.0.0"),
            (b"said: 550 5.1.1x", "5.0.0"),
            (b"said: 1550 5.1.1 y", "5.0.0"),
            (b"said: 550 4.1.1 y", "5.0.0"),
            (b"said: 550 5.1234.1 y", "5.0.0"),
            (b"said: 550 5.1.1 (#5.7.1)", "5.7.1"),
        ];
        for (text, want) in cases {
            assert_eq!(
                status_of(text),
                *want,
                "{:?}",
                String::from_utf8_lossy(text)
            );
        }
    }

    #[test]
    fn remote_replies_become_smtp_diagnostics() {
        type Found<'a> = Option<(Option<&'a str>, &'a str)>;
        let cases: &[(&str, Found<'_>)] = &[
            (
                "mx.example.org [192.0.2.1] said: 550 5.1.1 no such user",
                Some((Some("mx.example.org"), "550 5.1.1 no such user")),
            ),
            (
                "the relay said: 552 5.3.4 too big (in reply to end of DATA)",
                Some((None, "552 5.3.4 too big")),
            ),
            (
                "mx.example.org said: 554 no (in reply to MAIL FROM)",
                Some((Some("mx.example.org"), "554 no")),
            ),
            ("mx.example.org said: 250 ok", None),
            ("mx.example.org said: 55x what", None),
            ("mx.example.org said: 5501 what", None),
            ("Sorry, no mailbox here by that name. (#5.1.1)", None),
            ("said: 550 no server named", None),
            ("relay said: 550", Some((None, "550"))),
            ("-bad-.host said: 550 x", Some((None, "550 x"))),
        ];
        for (text, want) in cases {
            assert_eq!(smtp_diagnostic(text), *want, "{text}");
        }
    }

    #[test]
    fn a_remote_reply_gets_remote_mta_and_an_smtp_diagnostic() {
        let r = vec![FailedRecipient {
            address: b"gone@far.example".to_vec(),
            text: b"mx.far.example [192.0.2.7] said: 550 5.1.1 <gone@far.example>: no such user"
                .to_vec(),
        }];
        let msg = compose(&bounce(&r, DEFAULT_MAX_BODY), &mut &ORIGINAL[..]).unwrap();
        let text = String::from_utf8_lossy(&msg);
        let want = "Final-Recipient: rfc822; gone@far.example\nAction: failed\nStatus: 5.1.1\n\
             Remote-MTA: dns; mx.far.example\n\
             Diagnostic-Code: smtp; 550 5.1.1 <gone@far.example>: no such user\n";
        assert!(text.contains(want), "{text}");
        assert!(!text.contains("x-tern"), "{text}");
    }

    #[test]
    fn sanitizing() {
        assert_eq!(sanitize(b"a\r\nb\tc  d", 100), "a b c d");
        assert_eq!(sanitize(b"\x1b[31mred\x00\x7f\xff", 100), "?[31mred???");
        assert_eq!(sanitize(b"  lead and trail  ", 100), "lead and trail");
        assert_eq!(
            sanitize(&[b'x'; 5000], MAX_DIAGNOSTIC).len(),
            MAX_DIAGNOSTIC
        );
        assert_eq!(sanitize(b"ab cd", 3), "ab");
    }

    #[test]
    fn folding_keeps_lines_short() {
        let long_word = "w".repeat(300);
        let text = format!("short words {long_word} and more words after the very long one");
        let folded = fold(&text, 17, " ");
        for line in folded.lines() {
            assert!(line.len() <= FOLD, "{line:?}");
        }
        assert!(folded.lines().skip(1).all(|l| l.starts_with(' ')));
        // unfolding gives the words back (a split word gains no space)
        let unfolded: String = folded.replace("\n ", "");
        assert!(unfolded.contains(&long_word));
        assert_eq!(fold("fits", 0, " "), "fits");
    }

    #[test]
    fn structure_recipients_and_8bit() {
        let r = rcpts();
        let msg = compose(&bounce(&r, DEFAULT_MAX_BODY), &mut &ORIGINAL[..]).unwrap();
        assert!(!msg.contains(&b'\r'));
        let (header, body) = split(&msg);
        for want in [
            "Date: ",
            "From: Mail Delivery System <MAILER-DAEMON@mail.example.com>\n",
            "To: <sender@example.com>\n",
            "Subject: Undelivered Mail Returned to Sender\n",
            "Message-ID: <1795771000.42.bounce@mail.example.com>\n",
            "MIME-Version: 1.0\n",
            "Content-Type: multipart/report; report-type=delivery-status;\n boundary=",
            "Content-Transfer-Encoding: 8bit\n",
            "Auto-Submitted: auto-replied\n",
        ] {
            assert!(header.contains(want), "{want:?} in\n{header}");
        }
        let parts = parts(body, &boundary_of(&header));
        assert_eq!(parts.len(), 3);
        assert!(parts[0].0.starts_with("Content-Type: text/plain"));
        assert!(
            parts[1]
                .0
                .starts_with("Content-Type: message/delivery-status")
        );
        assert!(parts[2].0.starts_with("Content-Type: message/rfc822"));
        let human = std::str::from_utf8(parts[0].1).unwrap();
        let report = std::str::from_utf8(parts[1].1).unwrap();
        assert!(report.starts_with("Reporting-MTA: dns; mail.example.com\nArrival-Date: "));
        for (rc, status) in r.iter().zip(["5.1.1", "5.4.6", "5.0.0"]) {
            let addr = std::str::from_utf8(&rc.address).unwrap();
            assert!(human.contains(&format!("<{addr}>:")), "{addr}");
            let block = format!(
                "\nFinal-Recipient: rfc822; {addr}\nAction: failed\nStatus: {status}\nDiagnostic-Code: x-tern; "
            );
            assert!(report.contains(&block), "{block}\n{report}");
        }
        assert!(human.contains("Sorry, no mailbox here by that name. (#5.1.1)"));
        assert!(human.contains("The message from <sender@example.com> arrived on "));
        // every line of the generated parts is short and printable ASCII
        for line in human.lines().chain(report.lines()) {
            assert!(line.len() <= FOLD + 4, "{line:?}");
            assert!(line.bytes().all(|b| (0x20..0x7f).contains(&b)), "{line:?}");
        }
        // the original, byte for byte, 8-bit included
        assert_eq!(parts[2].1, ORIGINAL);
        // no internal detail beyond what was given
        assert!(!String::from_utf8_lossy(&msg).contains("127.0.0.1"));
    }

    #[test]
    fn limit_gives_rfc822_headers() {
        let r = rcpts();
        let big_body = vec![b'z'; 10_000];
        let original = [&ORIGINAL[..ORIGINAL.len() - 31], b"\n", &big_body[..]].concat();
        // just fits
        let hdr_len = header_end(&original, 0).unwrap();
        let body_len = (original.len() - hdr_len) as u64;
        let msg = compose(&bounce(&r, body_len), &mut &original[..]).unwrap();
        let (h, b) = split(&msg);
        let p = parts(b, &boundary_of(&h));
        assert!(p[2].0.starts_with("Content-Type: message/rfc822"));
        // one byte too long: header only
        let mut reader = &original[..];
        let msg = compose(&bounce(&r, body_len - 1), &mut reader).unwrap();
        let (h, b) = split(&msg);
        let p = parts(b, &boundary_of(&h));
        assert!(p[2].0.starts_with("Content-Type: text/rfc822-headers"));
        assert_eq!(p[2].1, &original[..hdr_len]);
        assert!(
            std::str::from_utf8(p[0].1)
                .unwrap()
                .contains("only\nits header is attached")
        );
        assert!(msg.len() < original.len());
        // the reader was not read much beyond the limit
        assert!(reader.len() as u64 + body_len + 8192 >= original.len() as u64 - hdr_len as u64);
        // limit 0 with an empty body still returns the whole message
        let msg = compose(&bounce(&r, 0), &mut &b"Subject: x\n\n"[..]).unwrap();
        assert!(String::from_utf8_lossy(&msg).contains("Content-Type: message/rfc822"));
    }

    #[test]
    fn hostile_reports_and_originals() {
        let r = vec![FailedRecipient {
            address: b"evil\n@example.com".to_vec(),
            text: [
                &b"line one\nInjected-Header: x\r\n\x1b[2J"[..],
                &[b'A'; 3000][..],
                b" (#5.1.1)",
            ]
            .concat(),
        }];
        // an original holding the first candidate boundary
        let original = b"Subject: x\n\n--=_tern_1795771000_0\nbody\n";
        let mut b = bounce(&r, 1000);
        b.double = true;
        let msg = compose(&b, &mut &original[..]).unwrap();
        let (h, body) = split(&msg);
        assert!(h.contains("Subject: failure notice\n"));
        let boundary = boundary_of(&h);
        assert_ne!(boundary, "=_tern_1795771000_0");
        let p = parts(body, &boundary);
        assert_eq!(p.len(), 3);
        assert!(!h.contains("Content-Transfer-Encoding"), "7-bit original");
        let report = std::str::from_utf8(p[1].1).unwrap();
        assert!(
            report.contains("Final-Recipient: rfc822; evil?@example.com\n"),
            "{report}"
        );
        assert!(!report.contains("\nInjected-Header"));
        assert!(!report.contains('\x1b'));
        // the diagnostic was cut at MAX_DIAGNOSTIC, so its code is not in
        // the kept text, but the status still comes from the whole text
        assert!(report.contains("Status: 5.1.1\n"));
        let diag: String = report
            .split("Diagnostic-Code: x-tern; ")
            .nth(1)
            .unwrap()
            .replace("\n ", "");
        assert!(diag.trim_end().len() <= MAX_DIAGNOSTIC + 40);
        for line in report.lines() {
            assert!(line.len() <= FOLD, "{line:?}");
        }
        // a header with no end and longer than the bound
        let endless = vec![b'h'; MAX_KEPT_HEADER + 10];
        let msg = compose(&bounce(&r, 1000), &mut &endless[..]).unwrap();
        assert!(String::from_utf8_lossy(&msg).contains("text/rfc822-headers"));
        assert!(msg.len() < MAX_KEPT_HEADER + 20_000);
    }
}
