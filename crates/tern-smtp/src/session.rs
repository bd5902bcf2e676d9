//! The server session: what a client may do next, and the replies.
//!
//! The program feeds each [`LineEvent`] to [`Session::handle`], which
//! returns a [`Step`]: the [`Action`] (reply and continue, reply and
//! close, or reply `354` and read the message) and how long to wait before
//! sending the reply (the tarpit). The policy is plain data
//! ([`Policy`]); everything that needs files (rcpthosts, badmailfrom,
//! whether a local user exists) is asked through [`Checks`].
//!
//! For the message itself the program runs a [`crate::DataDecoder`] with
//! [`Session::data_limits`], queues the message with the envelope from
//! [`Session::sender`] and [`Session::recipients`], then calls
//! [`Session::end_data`] with the reply, which ends the transaction.
//!
//! Tarpit: failures caused by the client (bad commands, bad sequences,
//! relay attempts, unknown recipients) are counted. Once more than
//! [`Policy::tarpit_after`] have happened, every reply is delayed by
//! [`Policy::tarpit_base_ms`], doubling with each further failure up to 8
//! times that; at [`Policy::tarpit_close`] the session answers
//! `421 4.7.0` and closes.

use crate::command::{self, Command, MailParams};
use crate::data::DataLimits;
use crate::data::MAX_HOPS;
use crate::data::MAX_TEXT_LINE;
use crate::line::{LineError, LineEvent};
use crate::reply::Reply;

/// Default largest number of recipients per message.
pub const DEFAULT_MAX_RECIPIENTS: usize = 100;

/// The settings of one session, filled in by the program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Text of the greeting and of the first EHLO line (`smtpgreeting`).
    pub greeting: String,
    /// This host's name (`me`), used in the 221 and 421 replies.
    pub me: String,
    /// Largest message in bytes, 0 = no limit.
    pub databytes: u64,
    /// `RELAYCLIENT`: when set, every recipient is accepted for relaying
    /// and this suffix is appended to it.
    pub relayclient: Option<String>,
    /// Most recipients per message.
    pub max_recipients: usize,
    /// Failures tolerated before replies are delayed.
    pub tarpit_after: u32,
    /// Failures at which the session is closed.
    pub tarpit_close: u32,
    /// First tarpit delay in milliseconds.
    pub tarpit_base_ms: u64,
    /// This server's own address literal (`[192.0.2.1]`) and the name
    /// that replaces it in recipient addresses (`localiphost`), so that
    /// `user@[192.0.2.1]` is treated as `user@localiphost`.
    pub local_literal: Option<(String, String)>,
    /// STARTTLS is offered (a certificate is configured and readable).
    pub starttls: bool,
}

impl Policy {
    /// A policy with Tern's defaults for `me` (greeting = me, no size
    /// limit, no relaying, 100 recipients, tarpit after 3 failures with 1 s
    /// base delay, closing at 10).
    pub fn new(me: &str) -> Policy {
        Policy {
            greeting: me.to_string(),
            me: me.to_string(),
            databytes: 0,
            relayclient: None,
            max_recipients: DEFAULT_MAX_RECIPIENTS,
            tarpit_after: 3,
            tarpit_close: 10,
            tarpit_base_ms: 1000,
            local_literal: None,
            starttls: false,
        }
    }
}

/// What [`Checks::recipient`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RcptVerdict {
    /// Deliverable (or cannot be checked: remote, unreadable home).
    Accept,
    /// No such local user or extension.
    Unknown,
    /// The check failed for a reason that may pass (a temporary error).
    TempFail,
}

/// The lookups a session needs; the program implements them over the
/// control files.
pub trait Checks {
    /// True when mail for `domain` (lower or mixed case) is accepted from a
    /// client that is not a relay client (`rcpthosts`, `morercpthosts`).
    fn relay_allowed(&self, domain: &[u8]) -> bool;
    /// True when `sender` is listed in `badmailfrom`.
    fn bad_sender(&self, sender: &[u8]) -> bool;
    /// Whether `address` (with any RELAYCLIENT suffix) can be delivered.
    fn recipient(&mut self, address: &[u8]) -> RcptVerdict;
}

/// What the program must do with a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send the reply, read the next command.
    Reply(Reply),
    /// Send the reply and close the connection.
    Close(Reply),
    /// Send the reply (354), then read the message with a
    /// [`crate::DataDecoder`].
    StartData(Reply),
    /// BDAT accepted: read exactly `size` octets into the message (a
    /// [`crate::DataDecoder::chunked`] decoder), then reply with
    /// [`Session::chunk_received`] or, after `last`, end the message with
    /// [`Session::end_data`].
    Chunk {
        /// Octets to read.
        size: u64,
        /// The message ends with this chunk.
        last: bool,
    },
    /// BDAT refused: read and discard exactly `size` octets, then send the
    /// reply.
    Discard {
        /// Octets to discard.
        size: u64,
        /// The reply to send after them.
        reply: Reply,
    },
    /// STARTTLS accepted: send the reply (220), discard every byte the
    /// client sent after the command (CVE-2011-0411), run the TLS
    /// handshake, then call [`Session::tls_started`].
    StartTls(Reply),
}

impl Action {
    /// The reply to send (none yet for an accepted chunk).
    pub fn reply(&self) -> Option<&Reply> {
        match self {
            Action::Reply(r) | Action::Close(r) | Action::StartData(r) | Action::StartTls(r) => {
                Some(r)
            }
            Action::Discard { reply, .. } => Some(reply),
            Action::Chunk { .. } => None,
        }
    }
}

/// One step of the session: the action and the tarpit delay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// What to do.
    pub action: Action,
    /// Milliseconds to wait before sending the reply.
    pub delay_ms: u64,
}

/// The state of one SMTP connection.
#[derive(Debug, Clone)]
pub struct Session {
    policy: Policy,
    helo: Option<Vec<u8>>,
    esmtp: bool,
    mail: Option<(Vec<u8>, MailParams)>,
    bad_sender: bool,
    recipients: Vec<Vec<u8>>,
    failures: u32,
    in_data: bool,
    chunking: bool,
    tls: bool,
}

fn ok(code: u16, enhanced: &'static str, text: &str) -> (Reply, bool) {
    (Reply::new(code, enhanced, text), false)
}

fn bad(code: u16, enhanced: &'static str, text: &str) -> (Reply, bool) {
    (Reply::new(code, enhanced, text), true)
}

impl Session {
    /// A new session.
    pub fn new(policy: Policy) -> Session {
        Session {
            policy,
            helo: None,
            esmtp: false,
            mail: None,
            bad_sender: false,
            recipients: Vec::new(),
            failures: 0,
            in_data: false,
            chunking: false,
            tls: false,
        }
    }

    /// The policy in force.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The `220` greeting.
    pub fn greeting(&self) -> Reply {
        Reply::plain(220, vec![format!("{} ESMTP", self.policy.greeting)])
    }

    /// The argument of the last HELO/EHLO (empty when none).
    pub fn helo(&self) -> &[u8] {
        self.helo.as_deref().unwrap_or(b"")
    }

    /// `ESMTP` after EHLO, `SMTP` otherwise; with an `S` appended once
    /// TLS is up (`ESMTPS`, RFC 3848).
    pub fn protocol(&self) -> &'static str {
        match (self.esmtp, self.tls) {
            (true, false) => "ESMTP",
            (false, false) => "SMTP",
            (true, true) => "ESMTPS",
            (false, true) => "SMTPS",
        }
    }

    /// True once the TLS handshake is done ([`Session::tls_started`]).
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// The TLS handshake is done (after STARTTLS, or before the greeting
    /// for implicit TLS): the session forgets everything the client said
    /// before (HELO/EHLO and any transaction, RFC 3207 4.2), stops
    /// offering STARTTLS, and wants EHLO or HELO before MAIL.
    pub fn tls_started(&mut self) {
        self.tls = true;
        self.helo = None;
        self.esmtp = false;
        self.clear_transaction();
    }

    /// The envelope sender of the current transaction (empty for `<>` or
    /// when there is no transaction).
    pub fn sender(&self) -> &[u8] {
        self.mail.as_ref().map_or(&b""[..], |(s, _)| s)
    }

    /// The accepted recipients (RELAYCLIENT suffix included).
    pub fn recipients(&self) -> &[Vec<u8>] {
        &self.recipients
    }

    /// Client failures so far (the tarpit counter).
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Bounds for the message of the current transaction.
    pub fn data_limits(&self) -> DataLimits {
        DataLimits {
            max_bytes: (self.policy.databytes > 0).then_some(self.policy.databytes),
            max_line: MAX_TEXT_LINE,
            max_hops: MAX_HOPS,
        }
    }

    /// The reply for a queued message.
    pub fn queued_reply(time: u64, qp: u32) -> Reply {
        Reply::new(250, "2.0.0", format!("ok {time} qp {qp}"))
    }

    /// Ends the message of the current transaction with `reply` (the
    /// queue's answer, or the decoder's refusal); `close` when the
    /// connection must be closed (bare CR/LF). The transaction is cleared
    /// either way.
    pub fn end_data(&mut self, reply: Reply, close: bool) -> Step {
        self.in_data = false;
        self.clear_transaction();
        let failure = close;
        self.step(reply, failure, close)
    }

    /// True while a message is being received with BDAT (accepted chunks,
    /// no `LAST` yet). When this turns false without [`Session::end_data`]
    /// (RSET, HELO, EHLO), the program must abandon the message.
    pub fn chunking(&self) -> bool {
        self.chunking
    }

    /// The reply after an accepted chunk that is not the last.
    pub fn chunk_received(&mut self, size: u64) -> Step {
        self.step(
            Reply::new(250, "2.0.0", format!("{size} octets received")),
            false,
            false,
        )
    }

    fn clear_transaction(&mut self) {
        self.chunking = false;
        self.mail = None;
        self.bad_sender = false;
        self.recipients.clear();
    }

    fn delay(&self) -> u64 {
        if self.failures <= self.policy.tarpit_after {
            return 0;
        }
        let doublings = (self.failures - self.policy.tarpit_after - 1).min(3);
        self.policy.tarpit_base_ms.saturating_mul(1 << doublings)
    }

    fn step(&mut self, reply: Reply, failure: bool, close: bool) -> Step {
        if failure {
            self.failures += 1;
        }
        let delay_ms = self.delay();
        if failure && !close && self.failures >= self.policy.tarpit_close {
            return Step {
                action: Action::Close(Reply::new(
                    421,
                    "4.7.0",
                    format!("{} too many errors, closing connection", self.policy.me),
                )),
                delay_ms,
            };
        }
        let action = if close {
            Action::Close(reply)
        } else {
            Action::Reply(reply)
        };
        Step { action, delay_ms }
    }

    /// Handles one command line (or line error).
    pub fn handle(&mut self, event: LineEvent, checks: &mut impl Checks) -> Step {
        assert!(!self.in_data, "a command while the message is being read");
        let line = match event {
            LineEvent::Error(LineError::BareCrLf) => {
                let r = Reply::new(500, "5.5.2", LineError::BareCrLf.to_string());
                return self.step(r, true, true);
            }
            LineEvent::Error(LineError::TooLong) => {
                let r = Reply::new(500, "5.5.2", LineError::TooLong.to_string());
                return self.step(r, true, false);
            }
            LineEvent::Line(l) => l,
        };
        let cmd = match command::parse(&line) {
            Ok(c) => c,
            Err(e) => {
                let (code, enh) = e.reply_code();
                // A BDAT whose size cannot be read leaves no way to find
                // the next command: close.
                let close = e == command::CommandError::BadChunk;
                return self.step(Reply::new(code, enh, e.to_string()), true, close);
            }
        };
        let (reply, failure) = match cmd {
            Command::Helo(host) => {
                self.helo = Some(host);
                self.esmtp = false;
                self.clear_transaction();
                (Reply::plain(250, vec![self.policy.greeting.clone()]), false)
            }
            Command::Ehlo(host) => {
                self.helo = Some(host);
                self.esmtp = true;
                self.clear_transaction();
                (self.ehlo_reply(), false)
            }
            Command::Mail(path, params) => self.mail(path.0, params, checks),
            Command::Rcpt(path) => self.rcpt(path.0, checks),
            Command::Bdat { size, last } => {
                let refusal = if self.mail.is_none() {
                    Some("MAIL first")
                } else if self.recipients.is_empty() {
                    Some("RCPT first")
                } else {
                    None
                };
                if let Some(text) = refusal {
                    let step = self.step(Reply::new(503, "5.5.1", text), true, false);
                    return match step.action {
                        Action::Reply(reply) => Step {
                            action: Action::Discard { size, reply },
                            delay_ms: step.delay_ms,
                        },
                        _ => step,
                    };
                }
                self.chunking = true;
                return Step {
                    action: Action::Chunk { size, last },
                    delay_ms: self.delay(),
                };
            }
            Command::Data if self.chunking => {
                bad(503, "5.5.1", "BDAT in progress; DATA not allowed")
            }
            Command::Data => {
                if self.mail.is_none() {
                    bad(503, "5.5.1", "MAIL first")
                } else if self.recipients.is_empty() {
                    bad(503, "5.5.1", "RCPT first")
                } else {
                    self.in_data = true;
                    let r = Reply::plain(354, vec!["go ahead, end with <CRLF>.<CRLF>".into()]);
                    return Step {
                        action: Action::StartData(r),
                        delay_ms: self.delay(),
                    };
                }
            }
            Command::Starttls if self.tls => bad(503, "5.5.1", "TLS already active"),
            Command::Starttls if !self.policy.starttls => {
                bad(502, "5.5.1", "STARTTLS not available")
            }
            Command::Starttls => {
                self.clear_transaction();
                return Step {
                    action: Action::StartTls(Reply::new(220, "2.0.0", "ready to start TLS")),
                    delay_ms: self.delay(),
                };
            }
            Command::Rset => {
                self.clear_transaction();
                ok(250, "2.0.0", "ok")
            }
            Command::Noop => ok(250, "2.0.0", "ok"),
            Command::Quit => {
                let r = Reply::new(
                    221,
                    "2.0.0",
                    format!("{} closing connection", self.policy.me),
                );
                return self.step(r, false, true);
            }
            Command::Vrfy => ok(
                252,
                "2.1.5",
                "cannot VRFY; send some mail and I will try to deliver it",
            ),
            Command::Expn => ok(502, "5.5.1", "EXPN not available"),
            Command::Help => ok(
                214,
                "2.0.0",
                "commands: HELO EHLO MAIL RCPT DATA BDAT RSET NOOP VRFY HELP QUIT",
            ),
            Command::Unknown => bad(502, "5.5.1", "command not recognized"),
        };
        self.step(reply, failure, false)
    }

    fn ehlo_reply(&self) -> Reply {
        let size = if self.policy.databytes > 0 {
            format!("SIZE {}", self.policy.databytes)
        } else {
            "SIZE".to_string()
        };
        Reply::plain(
            250,
            vec![
                self.policy.greeting.clone(),
                "PIPELINING".into(),
                "8BITMIME".into(),
                size,
                "ENHANCEDSTATUSCODES".into(),
                "SMTPUTF8".into(),
                "CHUNKING".into(),
            ]
            .into_iter()
            .chain((self.policy.starttls && !self.tls).then(|| "STARTTLS".to_string()))
            .chain(["HELP".to_string()])
            .collect(),
        )
    }

    fn mail(&mut self, sender: Vec<u8>, params: MailParams, checks: &impl Checks) -> (Reply, bool) {
        if self.mail.is_some() {
            return bad(503, "5.5.1", "nested MAIL command");
        }
        if self.tls && self.helo.is_none() {
            return bad(503, "5.5.1", "EHLO first: the session was reset by TLS");
        }
        if !sender.is_ascii() && !params.smtputf8 {
            return bad(
                553,
                "5.6.7",
                "non-ASCII address needs the SMTPUTF8 parameter",
            );
        }
        if let Some(size) = params.size
            && self.policy.databytes > 0
            && size > self.policy.databytes
        {
            return ok(552, "5.3.4", "message too big");
        }
        self.bad_sender = checks.bad_sender(&sender);
        self.mail = Some((sender, params));
        self.recipients.clear();
        ok(250, "2.1.0", "ok")
    }

    fn rcpt(&mut self, mut address: Vec<u8>, checks: &mut impl Checks) -> (Reply, bool) {
        let Some((_, params)) = &self.mail else {
            return bad(503, "5.5.1", "MAIL first");
        };
        if !address.is_ascii() && !params.smtputf8 {
            return bad(
                553,
                "5.6.7",
                "non-ASCII address needs the SMTPUTF8 parameter",
            );
        }
        if self.bad_sender {
            return bad(
                553,
                "5.7.1",
                "sorry, your envelope sender is in my badmailfrom list",
            );
        }
        if self.recipients.len() >= self.policy.max_recipients {
            return ok(452, "4.5.3", "too many recipients");
        }
        if let Some((literal, name)) = &self.policy.local_literal {
            let at = address.iter().rposition(|&b| b == b'@').unwrap_or(0);
            if address[at + 1..].eq_ignore_ascii_case(literal.as_bytes()) {
                address.truncate(at + 1);
                address.extend_from_slice(name.as_bytes());
            }
        }
        match &self.policy.relayclient {
            Some(suffix) => address.extend_from_slice(suffix.as_bytes()),
            // `<postmaster>` without a domain (the parser lets no other
            // address without `@` through) is always this host's.
            None if !address.contains(&b'@') => {}
            None => {
                let at = address.iter().rposition(|&b| b == b'@').unwrap_or(0);
                if !checks.relay_allowed(&address[at + 1..]) {
                    return bad(
                        553,
                        "5.7.1",
                        "sorry, that domain isn't in my list of allowed rcpthosts",
                    );
                }
            }
        }
        match checks.recipient(&address) {
            RcptVerdict::Accept => {
                self.recipients.push(address);
                ok(250, "2.1.5", "ok")
            }
            RcptVerdict::Unknown => bad(550, "5.1.1", "no mailbox here by that name"),
            RcptVerdict::TempFail => ok(451, "4.3.0", "temporary failure checking the recipient"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fake {
        rcpthosts: Vec<&'static str>,
        users: Vec<&'static str>,
    }

    impl Checks for Fake {
        fn relay_allowed(&self, domain: &[u8]) -> bool {
            let d = String::from_utf8_lossy(domain).to_ascii_lowercase();
            self.rcpthosts.iter().any(|h| *h == d)
        }
        fn bad_sender(&self, sender: &[u8]) -> bool {
            sender == b"spam@bad.example"
        }
        fn recipient(&mut self, address: &[u8]) -> RcptVerdict {
            let a = String::from_utf8_lossy(address);
            if a == "temp@example.com" {
                RcptVerdict::TempFail
            } else if !a.ends_with("@example.com")
                || self.users.iter().any(|u| a.starts_with(&format!("{u}@")))
            {
                RcptVerdict::Accept
            } else {
                RcptVerdict::Unknown
            }
        }
    }

    fn fake() -> Fake {
        Fake {
            rcpthosts: vec!["example.com"],
            users: vec!["joe", "ann"],
        }
    }

    /// Runs command lines and returns "code" strings of the replies (the
    /// first line of each, without CRLF) and the last step.
    fn dialogue(s: &mut Session, lines: &[&[u8]]) -> Vec<String> {
        let mut c = fake();
        let mut out = Vec::new();
        for l in lines {
            let step = s.handle(LineEvent::Line(l.to_vec()), &mut c);
            let bytes = step.action.reply().expect("not a chunk").to_bytes();
            let text = String::from_utf8(bytes).unwrap();
            let last = text.trim_end().rsplit("\r\n").next().unwrap().to_string();
            out.push(last);
            if matches!(step.action, Action::Close(_)) {
                out.push("<closed>".into());
                break;
            }
        }
        out
    }

    fn codes(replies: &[String]) -> Vec<&str> {
        replies.iter().map(|r| &r[..r.len().min(9)]).collect()
    }

    #[test]
    fn starttls() {
        // Not offered without a certificate.
        let mut s = Session::new(Policy::new("mx.example.com"));
        let r = dialogue(&mut s, &[b"EHLO c", b"STARTTLS"]);
        assert!(!r[0].contains("STARTTLS"));
        assert_eq!(codes(&r)[1], "502 5.5.1");

        let mut p = Policy::new("mx.example.com");
        p.starttls = true;
        let mut s = Session::new(p);
        let mut c = fake();
        let ehlo = s.handle(LineEvent::Line(b"EHLO c".to_vec()), &mut c);
        let text = String::from_utf8(ehlo.action.reply().unwrap().to_bytes()).unwrap();
        assert!(text.contains("250-STARTTLS\r\n250 HELP\r\n"), "{text}");
        dialogue(
            &mut s,
            &[b"MAIL FROM:<a@b.c>", b"RCPT TO:<joe@example.com>"],
        );
        let step = s.handle(LineEvent::Line(b"STARTTLS".to_vec()), &mut c);
        match step.action {
            Action::StartTls(r) => assert_eq!(r.code, 220),
            other => panic!("{other:?}"),
        }
        // STARTTLS itself ends the transaction; the handshake resets the rest.
        assert!(s.recipients().is_empty() && s.sender().is_empty());
        s.tls_started();
        assert!(s.is_tls() && s.helo().is_empty());
        let r = dialogue(
            &mut s,
            &[
                b"MAIL FROM:<a@b.c>",
                b"RCPT TO:<joe@example.com>",
                b"STARTTLS",
            ],
        );
        assert_eq!(codes(&r), ["503 5.5.1", "503 5.5.1", "503 5.5.1"]);
        let ehlo = s.handle(LineEvent::Line(b"EHLO again".to_vec()), &mut c);
        let text = String::from_utf8(ehlo.action.reply().unwrap().to_bytes()).unwrap();
        assert!(
            !text.contains("STARTTLS") && text.ends_with("250 HELP\r\n"),
            "{text}"
        );
        assert_eq!(s.protocol(), "ESMTPS");
        let r = dialogue(
            &mut s,
            &[b"MAIL FROM:<a@b.c>", b"HELO h", b"MAIL FROM:<a@b.c>"],
        );
        assert_eq!(codes(&r), ["250 2.1.0", "250 mx.ex", "250 2.1.0"]);
        assert_eq!(s.protocol(), "SMTPS");
    }

    #[test]
    fn bad_sequences_are_503() {
        let mut s = Session::new(Policy::new("mx.example.com"));
        let r = dialogue(
            &mut s,
            &[
                b"RCPT TO:<joe@example.com>",
                b"DATA",
                b"MAIL FROM:<a@b.c>",
                b"MAIL FROM:<a@b.c>",
                b"DATA",
            ],
        );
        assert_eq!(
            codes(&r),
            [
                "503 5.5.1",
                "503 5.5.1",
                "250 2.1.0",
                "503 5.5.1",
                "503 5.5.1"
            ]
        );
    }

    #[test]
    fn bad_commands_and_line_errors() {
        let mut s = Session::new(Policy::new("mx"));
        let mut c = fake();
        let st = s.handle(LineEvent::Error(LineError::TooLong), &mut c);
        assert_eq!(
            st.action,
            Action::Reply(Reply::new(
                500,
                "5.5.2",
                "line too long (at most 512 bytes including CRLF)"
            ))
        );
        let r = dialogue(
            &mut s,
            &[
                b"FOO",
                b"MAIL FROM:<a\0@b>",
                b"MAIL FROM:a@b",
                b"EXPN x",
                b"VRFY x",
            ],
        );
        assert_eq!(
            codes(&r),
            [
                "502 5.5.1",
                "500 5.5.2",
                "501 5.5.4",
                "502 5.5.1",
                "252 2.1.5"
            ]
        );
        let st = s.handle(LineEvent::Error(LineError::BareCrLf), &mut c);
        assert!(matches!(st.action, Action::Close(ref r) if r.code == 500));
    }

    #[test]
    fn relay_and_recipients() {
        let mut s = Session::new(Policy::new("mx"));
        let r = dialogue(
            &mut s,
            &[
                b"MAIL FROM:<a@b.c>",
                b"RCPT TO:<x@elsewhere.org>",
                b"RCPT TO:<nobody@example.com>",
                b"RCPT TO:<temp@example.com>",
                b"RCPT TO:<joe@EXAMPLE.COM>",
                b"RCPT TO:<x@[127.0.0.1]>",
            ],
        );
        assert_eq!(
            codes(&r),
            [
                "250 2.1.0",
                "553 5.7.1",
                "550 5.1.1",
                "451 4.3.0",
                "250 2.1.5",
                "553 5.7.1"
            ]
        );
        assert_eq!(s.recipients(), [b"joe@EXAMPLE.COM".to_vec()]);

        let mut p = Policy::new("mx");
        p.relayclient = Some(".relay".into());
        let mut s = Session::new(p);
        let r = dialogue(
            &mut s,
            &[b"MAIL FROM:<a@b.c>", b"RCPT TO:<x@elsewhere.org>"],
        );
        assert_eq!(codes(&r), ["250 2.1.0", "250 2.1.5"]);
        assert_eq!(s.recipients(), [b"x@elsewhere.org.relay".to_vec()]);
    }

    #[test]
    fn bare_postmaster_is_accepted_without_relay_check() {
        let mut s = Session::new(Policy::new("mx"));
        let r = dialogue(
            &mut s,
            &[
                b"MAIL FROM:<a@b.c>",
                b"RCPT TO:<Postmaster>",
                b"RCPT TO:<postmaster@elsewhere.org>",
            ],
        );
        assert_eq!(codes(&r), ["250 2.1.0", "250 2.1.5", "553 5.7.1"]);
        assert_eq!(s.recipients(), [b"Postmaster".to_vec()]);
    }

    #[test]
    fn own_address_literal_becomes_localiphost() {
        let mut p = Policy::new("mx");
        p.local_literal = Some(("[192.0.2.1]".into(), "example.com".into()));
        let mut s = Session::new(p);
        let r = dialogue(
            &mut s,
            &[
                b"MAIL FROM:<a@b.c>",
                b"RCPT TO:<joe@[192.0.2.1]>",
                b"RCPT TO:<joe@[192.0.2.2]>",
            ],
        );
        assert_eq!(codes(&r), ["250 2.1.0", "250 2.1.5", "553 5.7.1"]);
        assert_eq!(s.recipients(), [b"joe@example.com".to_vec()]);
    }

    #[test]
    fn badmailfrom_refuses_every_rcpt() {
        let mut s = Session::new(Policy::new("mx"));
        let r = dialogue(
            &mut s,
            &[
                b"MAIL FROM:<spam@bad.example>",
                b"RCPT TO:<joe@example.com>",
            ],
        );
        assert_eq!(codes(&r), ["250 2.1.0", "553 5.7.1"]);
    }

    #[test]
    fn smtputf8_rules() {
        let mut s = Session::new(Policy::new("mx"));
        let r = dialogue(
            &mut s,
            &[
                "MAIL FROM:<jöe@b.c>".as_bytes(),
                b"MAIL FROM:<a@b.c>",
                "RCPT TO:<jöe@example.com>".as_bytes(),
                b"RSET",
                "MAIL FROM:<jöe@b.c> SMTPUTF8".as_bytes(),
                "RCPT TO:<ann@example.com>".as_bytes(),
            ],
        );
        assert_eq!(
            codes(&r),
            [
                "553 5.6.7",
                "250 2.1.0",
                "553 5.6.7",
                "250 2.0.0",
                "250 2.1.0",
                "250 2.1.5"
            ]
        );
    }

    #[test]
    fn size_and_recipient_limits() {
        let mut p = Policy::new("mx");
        p.databytes = 1000;
        p.max_recipients = 2;
        let mut s = Session::new(p);
        let r = dialogue(
            &mut s,
            &[
                b"EHLO c",
                b"MAIL FROM:<a@b.c> SIZE=1001",
                b"MAIL FROM:<a@b.c> SIZE=1000",
                b"RCPT TO:<joe@example.com>",
                b"RCPT TO:<ann@example.com>",
                b"RCPT TO:<joe@example.com>",
            ],
        );
        assert_eq!(
            codes(&r),
            [
                "250 HELP",
                "552 5.3.4",
                "250 2.1.0",
                "250 2.1.5",
                "250 2.1.5",
                "452 4.5.3"
            ]
        );
        assert_eq!(s.data_limits().max_bytes, Some(1000));
    }

    #[test]
    fn ehlo_lists_extensions() {
        let s = Session::new(Policy::new("mx"));
        assert_eq!(
            s.ehlo_reply().to_bytes(),
            b"250-mx\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-SIZE\r\n250-ENHANCEDSTATUSCODES\r\n250-SMTPUTF8\r\n250-CHUNKING\r\n250 HELP\r\n"
        );
        assert_eq!(s.greeting().to_bytes(), b"220 mx ESMTP\r\n");
    }

    #[test]
    fn full_transaction_then_rset_keeps_helo() {
        let mut s = Session::new(Policy::new("mx"));
        let mut c = fake();
        for l in [
            &b"HELO c.example"[..],
            b"MAIL FROM:<>",
            b"RCPT TO:<joe@example.com>",
        ] {
            assert!(
                !s.handle(LineEvent::Line(l.to_vec()), &mut c)
                    .action
                    .reply()
                    .unwrap()
                    .is_failure()
            );
        }
        let st = s.handle(LineEvent::Line(b"DATA".to_vec()), &mut c);
        assert!(matches!(st.action, Action::StartData(ref r) if r.code == 354));
        assert_eq!(s.sender(), b"");
        assert_eq!(s.protocol(), "SMTP");
        let st = s.end_data(Session::queued_reply(1, 2), false);
        assert_eq!(
            st.action,
            Action::Reply(Reply::new(250, "2.0.0", "ok 1 qp 2"))
        );
        assert!(s.recipients().is_empty());
        let r = dialogue(
            &mut s,
            &[
                b"RCPT TO:<joe@example.com>",
                b"MAIL FROM:<a@b>",
                b"RSET",
                b"RCPT TO:<joe@example.com>",
                b"QUIT",
            ],
        );
        assert_eq!(
            codes(&r),
            [
                "503 5.5.1",
                "250 2.1.0",
                "250 2.0.0",
                "503 5.5.1",
                "221 2.0.0",
                "<closed>"
            ]
        );
        assert_eq!(s.helo(), b"c.example");
    }

    #[test]
    fn bdat_sequences() {
        let mut s = Session::new(Policy::new("mx"));
        let mut c = fake();
        let mut h =
            |s: &mut Session, l: &[u8]| s.handle(LineEvent::Line(l.to_vec()), &mut c).action;
        assert!(matches!(
            h(&mut s, b"BDAT 5"),
            Action::Discard { size: 5, ref reply } if reply.code == 503
        ));
        assert!(matches!(h(&mut s, b"BDAT x"), Action::Close(ref r) if r.code == 501));
        let mut s = Session::new(Policy::new("mx"));
        h(&mut s, b"MAIL FROM:<a@b.c>");
        assert!(matches!(
            h(&mut s, b"BDAT 3"),
            Action::Discard { size: 3, .. }
        ));
        h(&mut s, b"RCPT TO:<joe@example.com>");
        assert_eq!(
            h(&mut s, b"BDAT 3"),
            Action::Chunk {
                size: 3,
                last: false
            }
        );
        assert!(s.chunking());
        assert_eq!(
            s.chunk_received(3).action,
            Action::Reply(Reply::new(250, "2.0.0", "3 octets received"))
        );
        assert!(matches!(h(&mut s, b"DATA"), Action::Reply(ref r) if r.code == 503));
        assert!(matches!(h(&mut s, b"MAIL FROM:<x@y.z>"), Action::Reply(ref r) if r.code == 503));
        assert_eq!(
            h(&mut s, b"BDAT 0 LAST"),
            Action::Chunk {
                size: 0,
                last: true
            }
        );
        s.end_data(Session::queued_reply(1, 1), false);
        assert!(!s.chunking());
        h(&mut s, b"MAIL FROM:<a@b.c>");
        h(&mut s, b"RCPT TO:<joe@example.com>");
        h(&mut s, b"BDAT 1");
        assert!(s.chunking());
        h(&mut s, b"RSET");
        assert!(!s.chunking(), "RSET abandons the message");
    }

    #[test]
    fn tarpit_delays_then_closes() {
        let mut p = Policy::new("mx");
        p.tarpit_base_ms = 10;
        let mut s = Session::new(p);
        let mut c = fake();
        let mut delays = Vec::new();
        let mut closed_at = None;
        for i in 1..=12 {
            let st = s.handle(LineEvent::Line(b"BOGUS".to_vec()), &mut c);
            delays.push(st.delay_ms);
            if let Action::Close(r) = st.action {
                assert_eq!(r.code, 421);
                assert_eq!(r.enhanced, Some("4.7.0"));
                closed_at = Some(i);
                break;
            }
        }
        assert_eq!(closed_at, Some(10));
        assert_eq!(delays, [0, 0, 0, 10, 20, 40, 80, 80, 80, 80]);
        // A good command after failures is delayed too.
        let mut s2 = Session::new(Policy {
            tarpit_base_ms: 10,
            ..Policy::new("mx")
        });
        for _ in 0..4 {
            s2.handle(LineEvent::Line(b"BOGUS".to_vec()), &mut c);
        }
        assert_eq!(
            s2.handle(LineEvent::Line(b"NOOP".to_vec()), &mut c)
                .delay_ms,
            10
        );
    }
}
