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

use crate::auth::{self, AuthError, Credentials};
use crate::command::{self, Command, MailParams, Mechanism};
use crate::data::DataLimits;
use crate::data::MAX_HOPS;
use crate::line::{LineError, LineEvent};
use crate::reply::Reply;

mod park;
pub use park::ResumeError;

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
    /// When SMTP AUTH is offered.
    pub auth: AuthOffer,
    /// Milliseconds to wait before answering a failed AUTH.
    pub auth_delay_ms: u64,
    /// Failed AUTH attempts at which the session is closed.
    pub auth_max_failures: u32,
    /// Submission mode (port 587): AUTH is required before MAIL.
    pub submission: bool,
    /// In submission mode, the envelope sender must belong to the
    /// authenticated user (see [`sender_belongs`]).
    pub submission_senders: bool,
}

/// When SMTP AUTH is offered and accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthOffer {
    /// Never (no password checker configured).
    Never,
    /// Only once TLS is up.
    TlsOnly,
    /// Also in plain text (a loopback client and `authplainloopback`).
    Always,
}

/// The answer of the password checker for [`Session::auth_result`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthVerdict {
    /// Login and password are good.
    Accepted,
    /// Wrong login or password.
    Rejected,
    /// The checker could not decide (it failed or timed out).
    TempFail,
}

/// True when `sender` belongs to the user `login`: the whole address
/// equals the login when the login holds an `@`, else the sender's local
/// part equals the login (ASCII case ignored in both).
pub fn sender_belongs(login: &[u8], sender: &[u8]) -> bool {
    if login.contains(&b'@') {
        return sender.eq_ignore_ascii_case(login);
    }
    if sender.is_empty() {
        return false;
    }
    let at = sender
        .iter()
        .rposition(|&b| b == b'@')
        .unwrap_or(sender.len());
    sender[..at].eq_ignore_ascii_case(login)
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
            auth: AuthOffer::Never,
            auth_delay_ms: 2000,
            auth_max_failures: 3,
            submission: false,
            submission_senders: true,
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
    /// AUTH credentials to check: run the password checker, then call
    /// [`Session::auth_result`] (no reply yet). Never log the password.
    Auth(Credentials),
}

impl Action {
    /// The reply to send (none yet for an accepted chunk).
    pub fn reply(&self) -> Option<&Reply> {
        match self {
            Action::Reply(r) | Action::Close(r) | Action::StartData(r) | Action::StartTls(r) => {
                Some(r)
            }
            Action::Discard { reply, .. } => Some(reply),
            Action::Chunk { .. } | Action::Auth(_) => None,
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
    auth_user: Option<Vec<u8>>,
    auth_pending: Option<Pending>,
    auth_failures: u32,
}

/// An AUTH exchange waiting for the client's next line.
#[derive(Clone)]
enum Pending {
    /// PLAIN without an initial response: the credentials come next.
    Plain,
    /// LOGIN: the user name comes next.
    LoginUser,
    /// LOGIN: the password for this user comes next.
    LoginPassword(Vec<u8>),
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Pending::Plain => "Plain",
            Pending::LoginUser => "LoginUser",
            Pending::LoginPassword(_) => "LoginPassword",
        })
    }
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
            auth_user: None,
            auth_pending: None,
            auth_failures: 0,
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
    /// After AUTH: `ESMTPA`, or `ESMTPSA` over TLS (RFC 3848).
    pub fn protocol(&self) -> &'static str {
        match (self.esmtp, self.tls, self.auth_user.is_some()) {
            (_, false, true) => "ESMTPA",
            (_, true, true) => "ESMTPSA",
            (true, false, false) => "ESMTP",
            (false, false, false) => "SMTP",
            (true, true, false) => "ESMTPS",
            (false, true, false) => "SMTPS",
        }
    }

    /// The authenticated login, once AUTH succeeded.
    pub fn auth_user(&self) -> Option<&[u8]> {
        self.auth_user.as_deref()
    }

    /// True while an AUTH exchange waits for the client's next line (that
    /// line is a credential: never log it).
    pub fn auth_pending(&self) -> bool {
        self.auth_pending.is_some()
    }

    /// True when AUTH is offered now.
    fn auth_available(&self) -> bool {
        match self.policy.auth {
            AuthOffer::Never => false,
            AuthOffer::TlsOnly => self.tls,
            AuthOffer::Always => true,
        }
    }

    /// The password checker's answer for [`Action::Auth`] credentials
    /// with this `login`: `235` (the session may now relay), `454`
    /// (temporary), or `535` after [`Policy::auth_delay_ms`]; at
    /// [`Policy::auth_max_failures`] failures `421 4.7.0` and close.
    pub fn auth_result(&mut self, login: &[u8], verdict: AuthVerdict) -> Step {
        match verdict {
            AuthVerdict::Accepted => {
                self.auth_user = Some(login.to_vec());
                let r = Reply::new(235, "2.7.0", "authentication successful");
                self.step(r, false, false)
            }
            AuthVerdict::TempFail => {
                let r = Reply::new(454, "4.7.0", "temporary authentication failure");
                self.step(r, false, false)
            }
            AuthVerdict::Rejected => {
                self.auth_failures += 1;
                let delay_ms = self.policy.auth_delay_ms.max(self.delay());
                let action = if self.auth_failures >= self.policy.auth_max_failures {
                    Action::Close(Reply::new(
                        421,
                        "4.7.0",
                        format!(
                            "{} too many authentication failures, closing connection",
                            self.policy.me
                        ),
                    ))
                } else {
                    Action::Reply(Reply::new(
                        535,
                        "5.7.8",
                        "authentication credentials invalid",
                    ))
                };
                Step { action, delay_ms }
            }
        }
    }

    fn auth_error(&mut self, e: AuthError) -> Step {
        let (code, enh) = e.reply_code();
        self.step(Reply::new(code, enh, e.to_string()), true, false)
    }

    fn auth_ask(&mut self, pending: Pending, prompt: &[u8]) -> Step {
        self.auth_pending = Some(pending);
        let r = Reply::plain(334, vec![auth::encode_base64(prompt)]);
        self.step(r, false, false)
    }

    fn auth_check(&mut self, c: Result<Credentials, AuthError>) -> Step {
        match c {
            Ok(c) => Step {
                action: Action::Auth(c),
                delay_ms: self.delay(),
            },
            Err(e) => self.auth_error(e),
        }
    }

    /// One client line while an AUTH exchange is pending.
    fn auth_response(&mut self, pending: Pending, event: LineEvent) -> Step {
        let line = match event {
            LineEvent::Line(l) => l,
            LineEvent::Error(LineError::TooLong) => {
                let r = Reply::new(500, "5.5.2", "AUTH line too long, authentication aborted");
                return self.step(r, true, false);
            }
            LineEvent::Error(LineError::BareCrLf) => {
                let r = Reply::new(500, "5.5.2", LineError::BareCrLf.to_string());
                return self.step(r, true, true);
            }
        };
        let decoded = match auth::response(&line) {
            Ok(d) => d,
            Err(e) => return self.auth_error(e),
        };
        match pending {
            Pending::Plain => self.auth_check(auth::parse_plain(&decoded)),
            Pending::LoginUser => {
                if decoded.is_empty() || decoded.len() > auth::MAX_LOGIN || decoded.contains(&0) {
                    return self.auth_error(AuthError::BadLength);
                }
                self.auth_ask(Pending::LoginPassword(decoded), b"Password:")
            }
            Pending::LoginPassword(user) => self.auth_check(Credentials::new(user, decoded)),
        }
    }

    fn auth_command(&mut self, mechanism: Option<Mechanism>, initial: Option<Vec<u8>>) -> Step {
        let refuse = |s: &mut Session, code, enh, text: &str| {
            s.step(Reply::new(code, enh, text), true, false)
        };
        if self.policy.auth == AuthOffer::Never {
            return refuse(self, 502, "5.5.1", "command not recognized");
        }
        if !self.auth_available() {
            return refuse(
                self,
                538,
                "5.7.11",
                "encryption required for requested authentication mechanism",
            );
        }
        if !self.esmtp {
            return refuse(self, 503, "5.5.1", "EHLO first");
        }
        if self.auth_user.is_some() {
            return refuse(self, 503, "5.5.1", "already authenticated");
        }
        if self.mail.is_some() {
            return refuse(
                self,
                503,
                "5.5.1",
                "AUTH not allowed during a mail transaction",
            );
        }
        let Some(mechanism) = mechanism else {
            return self.auth_error(AuthError::Mechanism);
        };
        let initial = match initial.as_deref().map(auth::response).transpose() {
            Ok(i) => i,
            Err(e) => return self.auth_error(e),
        };
        match (mechanism, initial) {
            (Mechanism::Plain, Some(msg)) => self.auth_check(auth::parse_plain(&msg)),
            (Mechanism::Plain, None) => {
                self.auth_pending = Some(Pending::Plain);
                self.step(Reply::plain(334, vec![String::new()]), false, false)
            }
            (Mechanism::Login, None) => self.auth_ask(Pending::LoginUser, b"Username:"),
            (Mechanism::Login, Some(user)) => {
                if user.is_empty() || user.len() > auth::MAX_LOGIN || user.contains(&0) {
                    return self.auth_error(AuthError::BadLength);
                }
                self.auth_ask(Pending::LoginPassword(user), b"Password:")
            }
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
        self.auth_user = None;
        self.auth_pending = None;
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
            max_hops: MAX_HOPS,
        }
    }

    /// The reply for a queued message.
    pub fn queued_reply(time: u64, qp: &str) -> Reply {
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
        if let Some(p) = self.auth_pending.take() {
            return self.auth_response(p, event);
        }
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
            Command::Auth { mechanism, initial } => {
                return self.auth_command(mechanism, initial);
            }
            Command::Unknown => bad(502, "5.5.1", "command not recognized"),
            // Someone claims to be a balancer without being one (or a
            // balancer missing from the rules): never believed, and the
            // connection goes, logged with this reason.
            Command::Proxy => {
                let r = Reply::new(
                    554,
                    "5.7.0",
                    "PROXY protocol header from an address not trusted to send one",
                );
                return self.step(r, true, true);
            }
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
            .chain(
                self.auth_available()
                    .then(|| "AUTH PLAIN LOGIN".to_string()),
            )
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
        if self.policy.submission {
            let Some(user) = &self.auth_user else {
                return bad(530, "5.7.0", "authentication required");
            };
            if self.policy.submission_senders && !sender_belongs(user, &sender) {
                return bad(
                    553,
                    "5.7.1",
                    "sender address does not belong to the authenticated user",
                );
            }
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
            // An authenticated client may relay (nothing appended).
            None if self.auth_user.is_some() => {}
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

    fn auth_session(offer: AuthOffer) -> Session {
        let mut p = Policy::new("mx");
        p.auth = offer;
        p.auth_delay_ms = 7;
        p.tarpit_after = 100;
        p.tarpit_close = 100;
        Session::new(p)
    }

    fn creds(step: Step) -> Credentials {
        match step.action {
            Action::Auth(c) => c,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn auth_refusals() {
        // Not configured: not offered, not recognized.
        let mut s = auth_session(AuthOffer::Never);
        let r = dialogue(&mut s, &[b"EHLO c", b"AUTH PLAIN AGpvZQBwdw=="]);
        assert!(!r[0].contains("AUTH"));
        assert_eq!(codes(&r)[1], "502 5.5.1");
        // Configured but no TLS: not offered, 538.
        let mut s = auth_session(AuthOffer::TlsOnly);
        let mut c = fake();
        let e = s.handle(LineEvent::Line(b"EHLO c".to_vec()), &mut c);
        let text = String::from_utf8(e.action.reply().unwrap().to_bytes()).unwrap();
        assert!(!text.contains("AUTH"), "{text}");
        let r = dialogue(&mut s, &[b"AUTH PLAIN AGpvZQBwdw=="]);
        assert_eq!(codes(&r), ["538 5.7.1"]);
        // Over TLS: bad inputs.
        let mut s = auth_session(AuthOffer::TlsOnly);
        s.tls_started();
        let r = dialogue(
            &mut s,
            &[
                b"AUTH PLAIN AGpvZQBwdw==",
                b"EHLO c",
                b"AUTH CRAM-MD5",
                b"AUTH PLAIN AGpvZQBwdw=",
                b"AUTH PLAIN !!!!",
                b"AUTH PLAIN am9l",
                b"AUTH PLAIN YW5uAGpvZQBwdw==",
                b"AUTH PLAIN",
                b"*",
                b"AUTH LOGIN",
                b"not base64",
                b"AUTH LOGIN",
                b"am9l",
                b"*",
                b"AUTH LOGIN =",
                b"MAIL FROM:<a@b.c>",
                b"AUTH LOGIN",
            ],
        );
        assert_eq!(
            codes(&r),
            [
                "503 5.5.1", // before EHLO
                "250 HELP",
                "504 5.5.4",
                "501 5.5.2",
                "501 5.5.2",
                "501 5.5.2", // no NULs
                "501 5.5.2", // authzid of another user
                "334",
                "501 5.0.0",
                "334 VXNlc",
                "501 5.5.2",
                "334 VXNlc",
                "334 UGFzc",
                "501 5.0.0",
                "501 5.5.2", // empty user
                "250 2.1.0",
                "503 5.5.1", // in a transaction
            ]
        );
        assert_eq!(s.auth_user(), None);
    }

    #[test]
    fn auth_plain_and_login_then_relay() {
        let mut s = auth_session(AuthOffer::TlsOnly);
        let mut c = fake();
        s.tls_started();
        let e = s.handle(LineEvent::Line(b"EHLO c".to_vec()), &mut c);
        let text = String::from_utf8(e.action.reply().unwrap().to_bytes()).unwrap();
        assert!(text.contains("250-AUTH PLAIN LOGIN\r\n"), "{text}");
        // Relay refused before AUTH.
        let r = dialogue(
            &mut s,
            &[b"MAIL FROM:<a@b.c>", b"RCPT TO:<x@elsewhere.org>", b"RSET"],
        );
        assert_eq!(codes(&r)[1], "553 5.7.1");
        let st = s.handle(LineEvent::Line(b"AUTH PLAIN".to_vec()), &mut c);
        assert!(s.auth_pending());
        assert_eq!(st.action.reply().unwrap().to_bytes(), b"334 \r\n");
        let cr = creds(s.handle(LineEvent::Line(b"AGpvZQBzZWNyZXQ=".to_vec()), &mut c));
        assert_eq!(
            (&cr.login[..], &cr.password[..]),
            (&b"joe"[..], &b"secret"[..])
        );
        let st = s.auth_result(b"joe", AuthVerdict::Rejected);
        assert_eq!(st.delay_ms, 7);
        assert!(
            matches!(st.action, Action::Reply(ref r) if r.code == 535 && r.enhanced == Some("5.7.8"))
        );
        let st = s.handle(LineEvent::Line(b"AUTH LOGIN am9l".to_vec()), &mut c);
        assert_eq!(
            st.action.reply().unwrap().to_bytes(),
            b"334 UGFzc3dvcmQ6\r\n"
        );
        let cr = creds(s.handle(LineEvent::Line(b"c2VjcmV0".to_vec()), &mut c));
        assert_eq!(cr.login, b"joe");
        let st = s.auth_result(b"joe", AuthVerdict::TempFail);
        assert!(matches!(st.action, Action::Reply(ref r) if r.code == 454));
        s.handle(LineEvent::Line(b"AUTH LOGIN".to_vec()), &mut c);
        s.handle(LineEvent::Line(b"am9l".to_vec()), &mut c);
        creds(s.handle(LineEvent::Line(b"c2VjcmV0".to_vec()), &mut c));
        let st = s.auth_result(b"joe", AuthVerdict::Accepted);
        assert!(
            matches!(st.action, Action::Reply(ref r) if r.code == 235 && r.enhanced == Some("2.7.0"))
        );
        assert_eq!(s.auth_user(), Some(&b"joe"[..]));
        assert_eq!(s.protocol(), "ESMTPSA");
        let r = dialogue(
            &mut s,
            &[
                b"AUTH PLAIN AGpvZQBzZWNyZXQ=",
                b"MAIL FROM:<a@b.c>",
                b"RCPT TO:<x@elsewhere.org>",
            ],
        );
        assert_eq!(codes(&r), ["503 5.5.1", "250 2.1.0", "250 2.1.5"]);
        // Nothing appended without RELAYCLIENT.
        assert_eq!(s.recipients(), [b"x@elsewhere.org".to_vec()]);
    }

    #[test]
    fn auth_failures_close() {
        let mut s = auth_session(AuthOffer::Always);
        let mut c = fake();
        dialogue(&mut s, &[b"EHLO c"]);
        for i in 1..=3 {
            creds(s.handle(LineEvent::Line(b"AUTH PLAIN AGpvZQB4".to_vec()), &mut c));
            let st = s.auth_result(b"joe", AuthVerdict::Rejected);
            assert_eq!(st.delay_ms, 7);
            match (i, st.action) {
                (1 | 2, Action::Reply(r)) => assert_eq!(r.code, 535),
                (3, Action::Close(r)) => assert_eq!((r.code, r.enhanced), (421, Some("4.7.0"))),
                (_, other) => panic!("{i}: {other:?}"),
            }
        }
        assert_eq!(s.protocol(), "ESMTP");
    }

    #[test]
    fn submission_requires_auth_and_own_sender() {
        let mut p = Policy::new("mx");
        p.auth = AuthOffer::Always;
        p.submission = true;
        let mut s = Session::new(p);
        let mut c = fake();
        let r = dialogue(&mut s, &[b"EHLO c", b"MAIL FROM:<joe@b.c>"]);
        assert_eq!(codes(&r)[1], "530 5.7.0");
        creds(s.handle(LineEvent::Line(b"AUTH PLAIN AGpvZQB4".to_vec()), &mut c));
        s.auth_result(b"joe", AuthVerdict::Accepted);
        assert_eq!(s.protocol(), "ESMTPA");
        let r = dialogue(
            &mut s,
            &[
                b"MAIL FROM:<ann@b.c>",
                b"MAIL FROM:<>",
                b"MAIL FROM:<Joe@other.example>",
                b"RCPT TO:<x@elsewhere.org>",
            ],
        );
        assert_eq!(
            codes(&r),
            ["553 5.7.1", "553 5.7.1", "250 2.1.0", "250 2.1.5"]
        );
        // The check can be turned off.
        let mut p = Policy::new("mx");
        p.auth = AuthOffer::Always;
        p.submission = true;
        p.submission_senders = false;
        let mut s = Session::new(p);
        dialogue(&mut s, &[b"EHLO c"]);
        creds(s.handle(LineEvent::Line(b"AUTH PLAIN AGpvZQB4".to_vec()), &mut c));
        s.auth_result(b"joe", AuthVerdict::Accepted);
        let r = dialogue(&mut s, &[b"MAIL FROM:<ann@b.c>"]);
        assert_eq!(codes(&r), ["250 2.1.0"]);
    }

    #[test]
    fn senders_belong() {
        for (login, sender, want) in [
            (&b"joe"[..], &b"joe@example.com"[..], true),
            (b"joe", b"JOE@example.com", true),
            (b"joe", b"joe", true),
            (b"joe", b"", false),
            (b"joe", b"joe2@example.com", false),
            (b"joe", b"ann@joe", false),
            (b"joe@example.com", b"joe@example.com", true),
            (b"joe@example.com", b"joe@Example.COM", true),
            (b"joe@example.com", b"joe@example.org", false),
            (b"joe@example.com", b"joe", false),
        ] {
            assert_eq!(sender_belongs(login, sender), want, "{login:?} {sender:?}");
        }
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
        let st = s.end_data(Session::queued_reply(1, "2"), false);
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
        s.end_data(Session::queued_reply(1, "1"), false);
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
