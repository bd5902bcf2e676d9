//! The SMTP client: one connection, any number of transactions.
//!
//! [`Client::connect`] reads the greeting from a connected stream,
//! [`Client::hello`] sends EHLO (HELO when EHLO is refused with 5xx),
//! or LHLO for a session made with [`Client::connect_with`] and
//! [`Protocol::Lmtp`] (RFC 2033: no HELO fallback, and after the message
//! one reply per accepted recipient, in order),
//! [`Client::starttls`] upgrades to TLS and says EHLO again,
//! [`Client::send`] runs one mail transaction and returns one
//! [`RcptResult`] per recipient, [`Client::quit`] ends the session.
//!
//! The stream is anything `Read + Write`; for a `TcpStream` the caller
//! sets read and write timeouts, and [`Client::connect`] takes a deadline
//! for each whole reply as well, so a server trickling bytes cannot hold a
//! reply open for longer than about twice that.
//!
//! Any network error, malformed reply or `421` makes the connection
//! unusable ([`Client::is_usable`]); the client never guesses where a
//! reply ends after an error.

use std::fmt;
use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::{ClientConnection, StreamOwned};

use crate::address::{format_path, needs_smtputf8};
use crate::ehlo::Capabilities;
use crate::message::{CHUNK, Encoder, Scan, Source};
use crate::reply::{Class, Reply, ReplyError, ReplyParser};
use crate::tls::{TlsConfig, TlsInfo};

/// Size of the read buffer.
const READ_BUF: usize = 8192;

/// The command a reply answered (for texts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The greeting.
    Greeting,
    /// EHLO.
    Ehlo,
    /// LHLO (LMTP).
    Lhlo,
    /// HELO (after EHLO was refused).
    Helo,
    /// STARTTLS.
    StartTls,
    /// RSET.
    Rset,
    /// MAIL FROM.
    Mail,
    /// RCPT TO.
    Rcpt,
    /// DATA.
    Data,
    /// The end of the message (the final dot).
    EndOfData,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stage::Greeting => "the greeting",
            Stage::Ehlo => "EHLO",
            Stage::Lhlo => "LHLO",
            Stage::Helo => "HELO",
            Stage::StartTls => "STARTTLS",
            Stage::Rset => "RSET",
            Stage::Mail => "MAIL FROM",
            Stage::Rcpt => "RCPT TO",
            Stage::Data => "DATA",
            Stage::EndOfData => "the end of data",
        })
    }
}

/// A failure of the connection or of one command. The texts read well
/// after the peer's name: `mx.example.org [192.0.2.1] timed out`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing failed.
    #[error("connection failed: {0}")]
    Io(io::Error),
    /// A read or write timed out, or a reply took longer than the reply
    /// deadline.
    #[error("timed out")]
    Timeout,
    /// The server closed the connection.
    #[error("closed the connection")]
    Closed,
    /// A malformed reply.
    #[error("sent a malformed reply ({0})")]
    Reply(ReplyError),
    /// The server refused a command of the session (greeting, EHLO/HELO,
    /// STARTTLS, RSET, or the first command of a transaction with `421`).
    #[error("said: {reply} (in reply to {stage})")]
    Rejected {
        /// What was refused.
        stage: Stage,
        /// The reply.
        reply: Reply,
    },
    /// The TLS handshake (or TLS later on) failed, certificate checks
    /// included.
    #[error("TLS failed: {}", explain_tls(.0))]
    Tls(rustls::Error),
    /// The server sent bytes after its `220` to STARTTLS, before the
    /// handshake (they would be taken as protected: a known injection).
    #[error("sent data after STARTTLS before the TLS handshake")]
    DataBeforeTls,
    /// The connection failed earlier and cannot be used.
    #[error("connection no longer usable")]
    Unusable,
}

/// rustls' error, with words for the one an administrator meets when
/// pinning a server's own self-signed certificate in `control/tlsca`.
fn explain_tls(e: &rustls::Error) -> String {
    use rustls::{CertificateError, Error as E};
    // webpki's CaUsedAsEndEntity reaches us wrapped in
    // CertificateError::Other, known only by its name.
    match e {
        E::InvalidCertificate(CertificateError::Other(o))
            if format!("{o:?}").contains("CaUsedAsEndEntity") =>
        {
            format!(
                "{e} (the server presents a CA certificate as its own, typically a self-signed \
             certificate placed in control/tlsca: tlsca must hold the CA that signed the \
             server's certificate, not the certificate itself; make a small CA for such a \
             server, or use tlsdestinations 'may' for it)"
            )
        }
        E::InvalidCertificate(CertificateError::UnknownIssuer) => {
            format!("{e} (no CA in control/tlsca signed the server's certificate)")
        }
        _ => e.to_string(),
    }
}

impl Error {
    /// True for failures of the connection itself (I/O, timeout, closed).
    pub fn is_network(&self) -> bool {
        matches!(self, Error::Io(_) | Error::Timeout | Error::Closed)
    }

    /// The reply, for [`Error::Rejected`].
    pub fn reply(&self) -> Option<&Reply> {
        match self {
            Error::Rejected { reply, .. } => Some(reply),
            _ => None,
        }
    }
}

fn io_error(e: io::Error) -> Error {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Error::Timeout,
        io::ErrorKind::UnexpectedEof => Error::Closed,
        _ => match e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            Some(tls) => Error::Tls(tls.clone()),
            None => Error::Io(e),
        },
    }
}

/// The stream under the client: plain, or TLS after STARTTLS.
enum Transport<S: Read + Write> {
    Plain(S),
    Tls(Box<StreamOwned<ClientConnection, S>>),
    /// Between taking the plain stream and a finished handshake, or after
    /// a failed one.
    Gone,
}

impl<S: Read + Write> Read for Transport<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.read(buf),
            Transport::Tls(s) => s.read(buf),
            Transport::Gone => Err(io::Error::from(io::ErrorKind::NotConnected)),
        }
    }
}

impl<S: Read + Write> Write for Transport<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.write(buf),
            Transport::Tls(s) => s.write(buf),
            Transport::Gone => Err(io::Error::from(io::ErrorKind::NotConnected)),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Transport::Plain(s) => s.flush(),
            Transport::Tls(s) => s.flush(),
            Transport::Gone => Err(io::Error::from(io::ErrorKind::NotConnected)),
        }
    }
}

/// The protocol a session speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// SMTP (RFC 5321): EHLO (HELO fallback), one reply after the message.
    #[default]
    Smtp,
    /// LMTP (RFC 2033): LHLO, and after the message one reply for each
    /// recipient whose RCPT was accepted, in the order of the RCPTs. A
    /// reply that does not come (connection lost, timeout, malformed, or
    /// `421`) leaves that recipient and every later one temporary, never
    /// delivered.
    Lmtp,
}

/// One mail transaction's envelope.
#[derive(Debug, Clone, Copy)]
pub struct Envelope<'a> {
    /// The sender (empty: the null path, a bounce).
    pub sender: &'a [u8],
    /// The recipients, in order; results come back in the same order.
    pub recipients: &'a [Vec<u8>],
}

/// What happened to one recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// The server took responsibility for the message.
    Accepted,
    /// Failed for now; try again later.
    Temporary,
    /// Failed for good; bounce.
    Permanent,
}

/// One recipient's result and its text: the server's reply (sanitised,
/// bounded) behind the peer's name, or the client's own reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RcptResult {
    /// The outcome.
    pub status: Status,
    /// The text for logs and bounces.
    pub text: String,
}

/// The outcome of [`Client::send`].
#[derive(Debug)]
pub enum Transaction {
    /// The transaction ran (possibly failing); one result per recipient.
    Done(Vec<RcptResult>),
    /// Nothing happened: the first command of the transaction got no
    /// reply (network error, closed connection) or `421`. On a connection
    /// kept open from an earlier transaction this usually means the server
    /// dropped it while idle; the caller may reconnect and send again.
    NotStarted(Error),
}

/// A client session on one connection.
pub struct Client<S: Read + Write> {
    stream: Transport<S>,
    rbuf: Box<[u8]>,
    rpos: usize,
    rlen: usize,
    parser: ReplyParser,
    peer: String,
    caps: Capabilities,
    esmtp: bool,
    broken: bool,
    /// A transaction was opened (MAIL accepted) and not ended by the final
    /// reply: RSET before the next one.
    dirty: bool,
    tls: Option<TlsInfo>,
    reply_timeout: Option<Duration>,
    /// While the message is written: when the whole write must be done
    /// (each single write is also bounded by the socket's timeout, but a
    /// server reading a byte now and then would otherwise hold the
    /// connection for ever).
    write_deadline: Option<Instant>,
    /// Recipients the last transaction refused for their number (`452`,
    /// or `552` from an old server, at RCPT), by index.
    overflow: Vec<usize>,
    min_data_rate: u64,
    protocol: Protocol,
}

/// Most transactions [`Client::send`] runs for one message: the first and
/// the ones for recipients refused for their number.
pub const MAX_ROUNDS: usize = 20;

/// The slowest transfer accepted for a message, in bytes per second: the
/// whole DATA write may take `reply_timeout` plus the message size at this
/// rate (a 10 MB message: 1200 s + 2.8 h).
pub const MIN_DATA_RATE: u64 = 1024;

impl<S: Read + Write> fmt::Debug for Client<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("peer", &self.peer)
            .field("caps", &self.caps)
            .field("esmtp", &self.esmtp)
            .field("broken", &self.broken)
            .field("dirty", &self.dirty)
            .field("tls", &self.tls)
            .field("protocol", &self.protocol)
            .finish()
    }
}

fn status_of(class: Class) -> Status {
    match class {
        Class::Positive => Status::Accepted,
        Class::Permanent => Status::Permanent,
        Class::Transient | Class::Intermediate => Status::Temporary,
    }
}

/// The failed status for a reply that is not the positive one expected:
/// 5xx permanent, anything else temporary.
fn failed_status(reply: &Reply) -> Status {
    if reply.class() == Class::Permanent {
        Status::Permanent
    } else {
        Status::Temporary
    }
}

/// The status of a refused RCPT: as [`failed_status`], except that `552`
/// is temporary. RFC 821 listed 552 for "too many recipients"; RFC 5321
/// section 4.5.3.1.10 corrects that to 452 and says clients SHOULD treat a
/// 552 to RCPT as temporary, so that the recipients a server's limit left
/// out are retried in a later transaction instead of bounced.
fn rcpt_failed_status(reply: &Reply) -> Status {
    if reply.code == 552 {
        Status::Temporary
    } else {
        failed_status(reply)
    }
}

impl<S: Read + Write> Client<S> {
    /// Reads the greeting on `stream`. `peer` names the server in result
    /// texts (`mx.example.org [192.0.2.1]`); `reply_timeout` bounds the time
    /// for each whole reply.
    ///
    /// # Errors
    /// No `220` greeting: [`Error::Rejected`] with the greeting, or the
    /// connection failed.
    pub fn connect(
        stream: S,
        peer: impl Into<String>,
        reply_timeout: Option<Duration>,
    ) -> Result<Client<S>, Error> {
        Client::connect_with(stream, peer, reply_timeout, Protocol::Smtp)
    }

    /// As [`Client::connect`], for a session speaking `protocol`.
    ///
    /// # Errors
    /// As [`Client::connect`].
    pub fn connect_with(
        stream: S,
        peer: impl Into<String>,
        reply_timeout: Option<Duration>,
        protocol: Protocol,
    ) -> Result<Client<S>, Error> {
        let mut c = Client {
            stream: Transport::Plain(stream),
            rbuf: vec![0u8; READ_BUF].into_boxed_slice(),
            rpos: 0,
            rlen: 0,
            parser: ReplyParser::new(),
            peer: peer.into(),
            caps: Capabilities::default(),
            esmtp: false,
            broken: false,
            dirty: false,
            tls: None,
            reply_timeout,
            write_deadline: None,
            overflow: Vec::new(),
            min_data_rate: MIN_DATA_RATE,
            protocol,
        };
        let greeting = c.read_reply()?;
        if greeting.code != 220 {
            c.broken = true;
            return Err(Error::Rejected {
                stage: Stage::Greeting,
                reply: greeting,
            });
        }
        Ok(c)
    }

    /// The protocol of the session.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// The server's name in texts.
    pub fn peer(&self) -> &str {
        &self.peer
    }

    /// What the server offered in its last EHLO reply (nothing after HELO).
    pub fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    /// True after a successful EHLO, false after the HELO fallback.
    pub fn is_esmtp(&self) -> bool {
        self.esmtp
    }

    /// The TLS session, after [`Client::starttls`].
    pub fn tls(&self) -> Option<&TlsInfo> {
        self.tls.as_ref()
    }

    /// True while the connection can carry commands.
    pub fn is_usable(&self) -> bool {
        !self.broken
    }

    /// The stream under the client (under TLS, the raw one), e.g. to
    /// change its timeouts.
    pub fn stream_mut(&mut self) -> Option<&mut S> {
        match &mut self.stream {
            Transport::Plain(s) => Some(s),
            Transport::Tls(t) => Some(&mut t.sock),
            Transport::Gone => None,
        }
    }

    fn write_bytes(&mut self, bytes: &[u8]) -> Result<(), Error> {
        if self.broken {
            return Err(Error::Unusable);
        }
        let mut done = 0;
        while done < bytes.len() {
            if self.write_deadline.is_some_and(|d| Instant::now() > d) {
                self.broken = true;
                return Err(Error::Timeout);
            }
            match self.stream.write(&bytes[done..]) {
                Ok(0) => {
                    self.broken = true;
                    return Err(io_error(io::Error::from(io::ErrorKind::WriteZero)));
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.broken = true;
                    return Err(io_error(e));
                }
            }
        }
        self.stream.flush().map_err(|e| {
            self.broken = true;
            io_error(e)
        })
    }

    /// Reads one reply. Any failure, and a `421`, makes the connection
    /// unusable.
    fn read_reply(&mut self) -> Result<Reply, Error> {
        if self.broken {
            return Err(Error::Unusable);
        }
        let start = Instant::now();
        loop {
            if self.rpos < self.rlen {
                let (used, event) = self.parser.feed(&self.rbuf[self.rpos..self.rlen]);
                self.rpos += used;
                match event {
                    Some(Ok(reply)) => {
                        if reply.code == 421 {
                            self.broken = true;
                        }
                        return Ok(reply);
                    }
                    Some(Err(e)) => {
                        self.broken = true;
                        return Err(Error::Reply(e));
                    }
                    None => {}
                }
            }
            if self.reply_timeout.is_some_and(|t| start.elapsed() > t) {
                self.broken = true;
                return Err(Error::Timeout);
            }
            match self.stream.read(&mut self.rbuf) {
                Ok(0) => {
                    self.broken = true;
                    return Err(Error::Closed);
                }
                Ok(n) => {
                    self.rpos = 0;
                    self.rlen = n;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.broken = true;
                    return Err(io_error(e));
                }
            }
        }
    }

    fn command(&mut self, line: &[u8]) -> Result<Reply, Error> {
        self.write_bytes(line)?;
        self.read_reply()
    }

    /// Says EHLO `name`; when the server refuses it with 5xx (an old
    /// server), HELO `name`. Reads the server's extensions. In an LMTP
    /// session: LHLO `name`, and no fallback.
    ///
    /// # Errors
    /// Both refused, EHLO refused with 4xx, LHLO refused, or the
    /// connection failed.
    pub fn hello(&mut self, name: &str) -> Result<(), Error> {
        self.caps = Capabilities::default();
        self.esmtp = false;
        if self.protocol == Protocol::Lmtp {
            let reply = self.command(format!("LHLO {name}\r\n").as_bytes())?;
            if !reply.is_positive() {
                return Err(Error::Rejected {
                    stage: Stage::Lhlo,
                    reply,
                });
            }
            self.caps = Capabilities::parse(&reply);
            self.esmtp = true;
            return Ok(());
        }
        let reply = self.command(format!("EHLO {name}\r\n").as_bytes())?;
        if reply.is_positive() {
            self.caps = Capabilities::parse(&reply);
            self.esmtp = true;
            return Ok(());
        }
        if reply.class() != Class::Permanent {
            return Err(Error::Rejected {
                stage: Stage::Ehlo,
                reply,
            });
        }
        let reply = self.command(format!("HELO {name}\r\n").as_bytes())?;
        if reply.is_positive() {
            return Ok(());
        }
        Err(Error::Rejected {
            stage: Stage::Helo,
            reply,
        })
    }

    /// STARTTLS, the handshake with `config` for `name`, then EHLO `helo`
    /// again. Returns what the session uses.
    ///
    /// # Errors
    /// Sets the slowest transfer accepted while a message is written, in
    /// bytes per second (default [`MIN_DATA_RATE`]; at least 1).
    pub fn set_min_data_rate(&mut self, bytes_per_second: u64) {
        self.min_data_rate = bytes_per_second.max(1);
    }

    /// The server refuses STARTTLS ([`Error::Rejected`]: the connection is
    /// still usable in plain text unless the reply was `421`), sends data
    /// before the handshake, the handshake fails (certificate refused
    /// included), or EHLO (and HELO) fails afterwards. Every failure but
    /// the refusal of STARTTLS itself leaves the connection unusable.
    pub fn starttls(
        &mut self,
        config: &TlsConfig,
        name: ServerName<'static>,
        helo: &str,
    ) -> Result<TlsInfo, Error> {
        if !matches!(self.stream, Transport::Plain(_)) {
            return Err(Error::Unusable);
        }
        let reply = self.command(b"STARTTLS\r\n")?;
        if reply.code != 220 {
            return Err(Error::Rejected {
                stage: Stage::StartTls,
                reply,
            });
        }
        if self.rpos < self.rlen {
            self.broken = true;
            return Err(Error::DataBeforeTls);
        }
        self.broken = true;
        let Transport::Plain(sock) = std::mem::replace(&mut self.stream, Transport::Gone) else {
            return Err(Error::Unusable);
        };
        let conn = ClientConnection::new(config.client_config(), name).map_err(Error::Tls)?;
        let mut tls = StreamOwned::new(conn, sock);
        // The whole handshake, not only each read, within the reply time.
        let start = Instant::now();
        while tls.conn.is_handshaking() {
            if self.reply_timeout.is_some_and(|t| start.elapsed() > t) {
                return Err(Error::Timeout);
            }
            tls.conn.complete_io(&mut tls.sock).map_err(io_error)?;
        }
        let info = TlsInfo::of(&tls.conn, config.verifies());
        self.stream = Transport::Tls(Box::new(tls));
        self.broken = false;
        self.dirty = false;
        // The TLS session starts without any greeting state (RFC 3207
        // section 4.2): without a successful EHLO/HELO on it, no mail
        // command may follow, so a refused one ends the session as well.
        if let Err(e) = self.hello(helo) {
            self.broken = true;
            return Err(e);
        }
        self.tls = Some(info.clone());
        Ok(info)
    }

    /// Runs one mail transaction: MAIL FROM, RCPT TO for each recipient,
    /// DATA and the message, with PIPELINING when the server offers it,
    /// one command at a time otherwise. `scan` is [`crate::message::scan`]
    /// of `source` (the size to announce and whether the message has 8-bit
    /// bytes).
    ///
    /// Before anything is sent, a recipient whose address cannot be sent,
    /// or needs SMTPUTF8 that the server lacks, fails permanently (all of
    /// them when the sender is such an address), and so does every
    /// recipient when the message is larger than the server's `SIZE`.
    /// `MAIL FROM` carries `SIZE=` when the server offers SIZE,
    /// `BODY=8BITMIME` when the message has 8-bit bytes and the server
    /// offers 8BITMIME (without it the message goes as it is, as qmail
    /// sends it), and `SMTPUTF8` when an address sent needs it.
    ///
    /// Recipients refused at RCPT because of their number (`452`, or `552`
    /// from an old server: RFC 5321 section 4.5.3.1.10) go in another
    /// transaction on the same connection at once, as long as each round
    /// delivers to some recipient (at most [`MAX_ROUNDS`] transactions);
    /// what is still refused then stays a temporary failure.
    pub fn send(&mut self, env: &Envelope<'_>, source: &dyn Source, scan: &Scan) -> Transaction {
        let first = self.send_once(env, source, scan);
        let Transaction::Done(mut results) = first else {
            return first;
        };
        let mut progress = results.iter().any(|r| r.status == Status::Accepted);
        for _ in 1..MAX_ROUNDS {
            let over = std::mem::take(&mut self.overflow);
            if over.is_empty() || !progress || !self.is_usable() {
                break;
            }
            let rcpts: Vec<Vec<u8>> = over.iter().map(|&i| env.recipients[i].clone()).collect();
            let sub = Envelope {
                sender: env.sender,
                recipients: &rcpts,
            };
            let Transaction::Done(round) = self.send_once(&sub, source, scan) else {
                // Not even started: the earlier refusals stand.
                break;
            };
            progress = round.iter().any(|r| r.status == Status::Accepted);
            for (k, r) in round.into_iter().enumerate() {
                results[over[k]] = r;
            }
            self.overflow = self.overflow.iter().map(|&k| over[k]).collect();
        }
        self.overflow.clear();
        Transaction::Done(results)
    }

    /// One transaction (see [`Client::send`]).
    fn send_once(&mut self, env: &Envelope<'_>, source: &dyn Source, scan: &Scan) -> Transaction {
        self.overflow.clear();
        let n = env.recipients.len();
        let mut results: Vec<Option<RcptResult>> = vec![None; n];
        if self.broken {
            return Transaction::NotStarted(Error::Unusable);
        }
        let all = |status, text: String| Transaction::Done(vec![RcptResult { status, text }; n]);
        let sender = match format_path(env.sender) {
            Ok(p) => p,
            Err(e) => {
                return all(
                    Status::Permanent,
                    format!("sender address refused: {e} (#5.1.7)"),
                );
            }
        };
        let sender_utf8 = needs_smtputf8(env.sender);
        if sender_utf8 && !self.caps.smtputf8 {
            return all(
                Status::Permanent,
                format!(
                    "{} does not support SMTPUTF8, which the UTF-8 sender address needs (#5.6.7)",
                    self.peer
                ),
            );
        }
        let mut sent: Vec<(usize, Vec<u8>)> = Vec::with_capacity(n);
        let mut utf8 = sender_utf8;
        for (i, r) in env.recipients.iter().enumerate() {
            let fail = |text: String| {
                Some(RcptResult {
                    status: Status::Permanent,
                    text,
                })
            };
            if r.is_empty() {
                results[i] = fail("empty recipient address (#5.1.3)".to_string());
                continue;
            }
            match format_path(r) {
                Err(e) => results[i] = fail(format!("recipient address refused: {e} (#5.1.3)")),
                Ok(_) if needs_smtputf8(r) && !self.caps.smtputf8 => {
                    results[i] = fail(format!(
                        "{} does not support SMTPUTF8, which this UTF-8 address needs (#5.6.7)",
                        self.peer
                    ));
                }
                Ok(path) => {
                    utf8 |= needs_smtputf8(r);
                    sent.push((i, path));
                }
            }
        }
        if sent.is_empty() {
            return Transaction::Done(finish(results));
        }
        if let Some(limit) = self.caps.size_limit
            && scan.size > limit
        {
            let text = format!(
                "message is {} bytes, more than the {} bytes {} accepts (#5.3.4)",
                scan.size, limit, self.peer
            );
            for (i, _) in &sent {
                results[*i] = Some(RcptResult {
                    status: Status::Permanent,
                    text: text.clone(),
                });
            }
            return Transaction::Done(finish(results));
        }
        // Open the message before the first command: a message that cannot
        // be read must not leave a transaction half done.
        let reader = match source.reader() {
            Ok(r) => r,
            Err(e) => {
                let text = format!("cannot read the message: {e} (#4.3.0)");
                for (i, _) in &sent {
                    results[*i] = Some(RcptResult {
                        status: Status::Temporary,
                        text: text.clone(),
                    });
                }
                return Transaction::Done(finish(results));
            }
        };

        let mut mail = b"MAIL FROM:".to_vec();
        mail.extend_from_slice(&sender);
        if self.caps.size {
            mail.extend_from_slice(format!(" SIZE={}", scan.size).as_bytes());
        }
        if scan.eight_bit && self.caps.eight_bit_mime {
            mail.extend_from_slice(b" BODY=8BITMIME");
        }
        if utf8 && self.caps.smtputf8 {
            mail.extend_from_slice(b" SMTPUTF8");
        }
        mail.extend_from_slice(b"\r\n");
        let rcpts: Vec<Vec<u8>> = sent
            .iter()
            .map(|(_, p)| [b"RCPT TO:".as_slice(), p, b"\r\n"].concat())
            .collect();
        let pipelining = self.caps.pipelining;
        let rset = self.dirty;

        if pipelining {
            let mut batch = Vec::new();
            if rset {
                batch.extend_from_slice(b"RSET\r\n");
            }
            batch.extend_from_slice(&mail);
            for r in &rcpts {
                batch.extend_from_slice(r);
            }
            batch.extend_from_slice(b"DATA\r\n");
            if let Err(e) = self.write_bytes(&batch) {
                return Transaction::NotStarted(e);
            }
        }

        // RSET, the first command when present.
        if rset {
            let reply = if pipelining {
                self.read_reply()
            } else {
                self.command(b"RSET\r\n")
            };
            match reply {
                Err(e) => return Transaction::NotStarted(e),
                Ok(r) if r.is_positive() => self.dirty = false,
                Ok(r) => {
                    // A server that cannot reset is of no further use.
                    self.broken = true;
                    return Transaction::NotStarted(Error::Rejected {
                        stage: Stage::Rset,
                        reply: r,
                    });
                }
            }
        }

        // MAIL FROM.
        let reply = if pipelining {
            self.read_reply()
        } else {
            self.command(&mail)
        };
        let reply = match reply {
            Err(e) if !rset => return Transaction::NotStarted(e),
            Ok(r) if r.code == 421 && !rset => {
                return Transaction::NotStarted(Error::Rejected {
                    stage: Stage::Mail,
                    reply: r,
                });
            }
            Err(e) => {
                let text = format!("{} {e}", self.peer);
                self.fill(&mut results, &sent, Status::Temporary, &text);
                return Transaction::Done(finish(results));
            }
            Ok(r) => r,
        };
        if !reply.is_positive() {
            let text = format!(
                "{} said: {} (in reply to MAIL FROM)",
                self.peer,
                reply.text()
            );
            self.fill(&mut results, &sent, failed_status(&reply), &text);
            if pipelining {
                // Keep in step: the RCPT and DATA replies are still coming.
                for _ in 0..rcpts.len() {
                    if self.read_reply().is_err() {
                        break;
                    }
                }
                self.end_unwanted_data();
            }
            return Transaction::Done(finish(results));
        }
        self.dirty = true;

        // RCPT TO, one per recipient.
        let mut accepted: Vec<usize> = Vec::with_capacity(sent.len());
        for (k, (i, _)) in sent.iter().enumerate() {
            let reply = if pipelining {
                self.read_reply()
            } else {
                self.command(&rcpts[k])
            };
            match reply {
                Err(e) => {
                    let text = format!("{} {e}", self.peer);
                    self.fill(&mut results, &sent[k..], Status::Temporary, &text);
                    // The DATA sent in the pipeline will not be answered.
                    for j in &accepted {
                        results[*j] = Some(RcptResult {
                            status: Status::Temporary,
                            text: text.clone(),
                        });
                    }
                    return Transaction::Done(finish(results));
                }
                Ok(r) if r.is_positive() => accepted.push(*i),
                Ok(r) => {
                    results[*i] = Some(RcptResult {
                        status: rcpt_failed_status(&r),
                        text: format!("{} said: {}", self.peer, r.text()),
                    });
                    if matches!(r.code, 452 | 552) {
                        self.overflow.push(*i);
                    }
                    if r.code == 421 {
                        let text =
                            format!("{} said: {} (in reply to RCPT TO)", self.peer, r.text());
                        self.fill(&mut results, &sent[k + 1..], Status::Temporary, &text);
                        for j in &accepted {
                            results[*j] = Some(RcptResult {
                                status: Status::Temporary,
                                text: text.clone(),
                            });
                        }
                        return Transaction::Done(finish(results));
                    }
                }
            }
        }

        // DATA.
        if accepted.is_empty() {
            if pipelining {
                self.end_unwanted_data();
            }
            return Transaction::Done(finish(results));
        }
        let reply = if pipelining {
            self.read_reply()
        } else {
            self.command(b"DATA\r\n")
        };
        let set = |results: &mut Vec<Option<RcptResult>>, status, text: &str| {
            for j in &accepted {
                results[*j] = Some(RcptResult {
                    status,
                    text: text.to_string(),
                });
            }
        };
        match reply {
            Err(e) => {
                set(
                    &mut results,
                    Status::Temporary,
                    &format!("{} {e}", self.peer),
                );
                return Transaction::Done(finish(results));
            }
            Ok(r) if r.code != 354 => {
                let text = format!("{} said: {} (in reply to DATA)", self.peer, r.text());
                set(&mut results, failed_status(&r), &text);
                return Transaction::Done(finish(results));
            }
            Ok(_) => {}
        }

        // The message, within a deadline that follows from its size.
        self.write_deadline = self
            .reply_timeout
            .map(|t| Instant::now() + t + Duration::from_secs(scan.wire / self.min_data_rate));
        let written = self.write_message(reader);
        self.write_deadline = None;
        if let Err(text) = written {
            set(&mut results, Status::Temporary, &text);
            return Transaction::Done(finish(results));
        }
        if self.protocol == Protocol::Lmtp {
            self.lmtp_replies(&accepted, &mut results);
            return Transaction::Done(finish(results));
        }
        match self.read_reply() {
            Err(e) => {
                let text = format!(
                    "{} {e} after the message was sent: possible duplicate (#4.4.2)",
                    self.peer
                );
                set(&mut results, Status::Temporary, &text);
            }
            Ok(r) => {
                self.dirty = false;
                let status = status_of(r.class());
                let text = if status == Status::Accepted {
                    format!("{} said: {}", self.peer, r.text())
                } else {
                    format!(
                        "{} said: {} (in reply to the end of data)",
                        self.peer,
                        r.text()
                    )
                };
                set(&mut results, status, &text);
            }
        }
        Transaction::Done(finish(results))
    }

    /// LMTP after the message: exactly one reply per accepted recipient
    /// (`accepted`, in RCPT order), each that recipient's result. When a
    /// reply does not come (error, timeout, close, malformed) or is `421`,
    /// that recipient and the ones after it are temporary failures (the
    /// server may have delivered to them: a possible duplicate, never a
    /// loss); the connection is then unusable. Bytes already buffered
    /// beyond the last expected reply mean the server answered more than
    /// it was asked: the connection is not used again (they would be
    /// taken as the answers to the next commands).
    fn lmtp_replies(&mut self, accepted: &[usize], results: &mut [Option<RcptResult>]) {
        for (k, &i) in accepted.iter().enumerate() {
            let reply = match self.read_reply() {
                Ok(r) if r.code != 421 => r,
                failed => {
                    let why = match failed {
                        Ok(r) => format!("said: {}", r.text()),
                        Err(e) => e.to_string(),
                    };
                    self.broken = true;
                    let text = format!(
                        "{} {why} after the message was sent, before its reply for this \
                         recipient: possible duplicate (#4.4.2)",
                        self.peer
                    );
                    for &j in &accepted[k..] {
                        results[j] = Some(RcptResult {
                            status: Status::Temporary,
                            text: text.clone(),
                        });
                    }
                    return;
                }
            };
            let status = status_of(reply.class());
            let text = if status == Status::Accepted {
                format!("{} said: {}", self.peer, reply.text())
            } else {
                format!(
                    "{} said: {} (in reply to the end of data)",
                    self.peer,
                    reply.text()
                )
            };
            results[i] = Some(RcptResult { status, text });
        }
        self.dirty = false;
        if self.rpos < self.rlen {
            self.broken = true;
        }
    }

    fn fill(
        &self,
        results: &mut [Option<RcptResult>],
        which: &[(usize, Vec<u8>)],
        status: Status,
        text: &str,
    ) {
        for (i, _) in which {
            results[*i] = Some(RcptResult {
                status,
                text: text.to_string(),
            });
        }
    }

    /// In a pipeline whose transaction failed before DATA, DATA was sent
    /// anyway; read its reply, and should a server still say 354, send an
    /// empty message (RFC 2920 section 3.1) so that the two sides stay in
    /// step. The transaction stays open (RSET next time).
    fn end_unwanted_data(&mut self) {
        if let Ok(r) = self.read_reply()
            && r.code == 354
        {
            if self.write_bytes(b".\r\n").is_ok() {
                let _ = self.read_reply();
            }
            self.dirty = true;
        }
    }

    /// Streams the encoded message. On failure returns the text for the
    /// recipients; the connection is then unusable (the data was not
    /// ended, so the server discards it).
    fn write_message(&mut self, mut reader: Box<dyn Read + '_>) -> Result<(), String> {
        let mut enc = Encoder::new();
        let mut buf = vec![0u8; CHUNK];
        let mut out = Vec::with_capacity(CHUNK * 2 + 8);
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.broken = true;
                    return Err(format!("cannot read the message: {e} (#4.3.0)"));
                }
            };
            out.clear();
            enc.encode(&buf[..n], &mut out);
            self.write_bytes(&out)
                .map_err(|e| format!("{} {e} while the message was sent (#4.4.2)", self.peer))?;
        }
        out.clear();
        enc.finish(&mut out);
        self.write_bytes(&out)
            .map_err(|e| format!("{} {e} while the message was sent (#4.4.2)", self.peer))
    }

    /// Ends the session: QUIT (its reply is read, within the timeouts, so
    /// that the server sees an orderly close), then TLS close_notify.
    /// Errors are ignored: the session is over either way.
    pub fn quit(mut self) {
        if self.broken {
            return;
        }
        if self.write_bytes(b"QUIT\r\n").is_ok() {
            let _ = self.read_reply();
        }
        if let Transport::Tls(t) = &mut self.stream {
            t.conn.send_close_notify();
            let _ = t.flush();
        }
    }
}

fn finish(results: Vec<Option<RcptResult>>) -> Vec<RcptResult> {
    results
        .into_iter()
        .map(|r| {
            r.unwrap_or_else(|| RcptResult {
                status: Status::Temporary,
                text: "no result (internal error) (#4.3.0)".to_string(),
            })
        })
        .collect()
}
