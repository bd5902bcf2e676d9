//! One worker's deliveries: routing (cached per domain), connecting with
//! fallback over the targets, TLS per policy, the transaction, and the
//! reports. The SMTP and LMTP protocols themselves are tern-client's.
//!
//! A domain that `control/lmtproutes` names goes to its LMTP server only
//! (over TCP, with STARTTLS as for SMTP; or over a Unix socket, without):
//! never by SMTP, never by MX; when the server cannot be used the
//! recipients are deferred.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{IpAddr, TcpStream};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rustls::pki_types::ServerName;
use tern_client::message::Prefixed;
use tern_client::tls::{load_ca_file, server_name};
use tern_client::{
    Client, Envelope, FileSource, Protocol, RcptResult, Status, TlsConfig, Transaction,
};
use tern_control::LmtpServer;
use tern_ipc::Outcome;
use tern_ipc::remote::{RcptReport, RemoteDeliver};
use tern_log::Event;
use tern_route::{HostMemory, Resolution, Router, Target, TlsPolicies, TlsPolicy};

use crate::PROG;

/// How long QUIT may wait for its reply at the end.
const QUIT_WAIT: Duration = Duration::from_secs(10);
/// How long a worker uses its domain's routing before looking it up again
/// (a worker kept busy by a steady stream of requests lives for hours; MX
/// changes must still be seen). A temporary routing failure is never kept.
const RESOLVED_FOR: Duration = Duration::from_secs(300);

/// Settings read once at start.
pub(crate) struct Settings {
    pub(crate) helo: String,
    pub(crate) timeout_remote: Duration,
    pub(crate) timeout_connect: Duration,
    pub(crate) policies: TlsPolicies,
    /// The CA bundle for `verify` destinations (first line of control/tlsca).
    pub(crate) tlsca: Option<PathBuf>,
}

/// The name of an LMTP server in report texts (which end up in bounces):
/// its address or socket path is the administrator's; the log lines name
/// it.
const LMTP_LABEL: &str = "the LMTP server";

/// A connection: TCP (SMTP, or LMTP over TCP) or a Unix socket (LMTP).
pub(crate) enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    fn set_timeouts(&self, t: Option<Duration>) {
        let _ = match self {
            Stream::Tcp(s) => s.set_read_timeout(t).and(s.set_write_timeout(t)),
            Stream::Unix(s) => s.set_read_timeout(t).and(s.set_write_timeout(t)),
        };
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Tcp(s) => s.flush(),
            Stream::Unix(s) => s.flush(),
        }
    }
}

/// Where a connection goes.
#[derive(Clone, Debug)]
enum Dest {
    /// An SMTP or LMTP server on TCP.
    Tcp(Target),
    /// An LMTP server on a Unix socket.
    Unix(PathBuf),
}

impl Dest {
    /// `event` with the fields naming this destination.
    fn log(&self, event: Event) -> Event {
        match self {
            Dest::Tcp(t) => event
                .field("host", &t.host)
                .field("ip", t.addr.ip().to_string()),
            Dest::Unix(p) => event.field("socket", p.display().to_string()),
        }
    }
}

/// An open SMTP or LMTP session and where it goes.
struct Conn {
    client: Client<Stream>,
    dest: Dest,
}

/// The worker's state between requests.
pub(crate) struct Worker {
    settings: Settings,
    router: Router,
    memory: HostMemory,
    /// The DKIM keys (control/dkim), read at start.
    dkim: tern_dkim::Keys,
    /// The domain whose resolution is cached, the resolution, and when it
    /// was made.
    resolved: Option<(String, Resolution, Instant)>,
    conn: Option<Conn>,
    /// TLS configurations, kept once made (a failed load is not kept: an
    /// administrator who fixes control/tlsca is heard at the next use).
    opportunistic: Option<TlsConfig>,
    verify: Option<TlsConfig>,
    /// The session the last request's transaction went through: where it
    /// went and whether it was under TLS (for the `rcpt` log lines).
    used: Option<(Dest, bool)>,
}

/// What the `rcpt` log lines say about the session a transaction used.
fn used(conn: &Conn) -> (Dest, bool) {
    (conn.dest.clone(), conn.client.tls().is_some())
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// True for addresses that belong to a private or local network: they are
/// left out of report texts (a bounce must not show internal addresses,
/// e.g. of a smarthost on the local network).
fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || (o[0] == 100 && (o[1] & 0xc0) == 64)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_internal(IpAddr::V4(v4));
            }
            let s = v6.segments();
            v6.is_loopback()
                || v6.is_unspecified()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
        }
    }
}

/// The server's name in report texts (which end up in bounces):
/// `mx.example.org [192.0.2.1]`; for an internal address, the host name
/// alone, or `the relay` when the host is only known by that address. A
/// relay from `control/smtproutes` (`routed`) is always `the relay`: its
/// name is the administrator's (often an internal smarthost), not public
/// MX data. The log lines name it.
pub(crate) fn label(target: &Target, routed: bool) -> String {
    if routed {
        return "the relay".to_string();
    }
    let ip = target.addr.ip();
    let host_is_ip = target.host.parse::<IpAddr>().is_ok();
    match (is_internal(ip), host_is_ip) {
        (false, false) => format!("{} [{ip}]", target.host),
        (false, true) => format!("[{ip}]"),
        (true, false) => target.host.clone(),
        (true, true) => "the relay".to_string(),
    }
}

fn status_word(s: Status) -> &'static str {
    match s {
        Status::Accepted => "delivered",
        Status::Temporary => "deferred",
        Status::Permanent => "failed",
    }
}

fn outcome(s: Status) -> Outcome {
    match s {
        Status::Accepted => Outcome::Delivered,
        Status::Temporary => Outcome::Deferred,
        Status::Permanent => Outcome::Failed,
    }
}

fn all(n: usize, status: Status, text: &str) -> Vec<RcptResult> {
    vec![
        RcptResult {
            status,
            text: text.to_string(),
        };
        n
    ]
}

/// Why a target could not be used.
struct HostFailure {
    text: String,
    /// The enhanced status code for the report, when this is the last
    /// target's failure.
    code: &'static str,
}

impl HostFailure {
    fn new(text: String) -> HostFailure {
        HostFailure {
            text,
            code: "4.4.1",
        }
    }
}

impl Worker {
    /// [`label`] for a target of the domain being delivered to.
    fn label(&self, target: &Target) -> String {
        let routed = self
            .resolved
            .as_ref()
            .is_some_and(|(d, ..)| self.router.is_routed(d));
        label(target, routed)
    }

    pub(crate) fn new(
        settings: Settings,
        router: Router,
        memory: HostMemory,
        dkim: tern_dkim::Keys,
    ) -> Worker {
        Worker {
            settings,
            router,
            dkim,
            memory,
            resolved: None,
            conn: None,
            opportunistic: None,
            verify: None,
            used: None,
        }
    }

    /// Delivers one request; one report per recipient, in order.
    pub(crate) fn deliver(&mut self, req: &RemoteDeliver, fd: OwnedFd) -> Vec<RcptReport> {
        self.used = None;
        let results = self.results(req, fd);
        let used = self.used.take();
        results
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                let mut ev = Event::new(PROG, "rcpt")
                    .num("qid", req.id)
                    .field("rcpt", &req.recipients[i])
                    .field("result", status_word(r.status));
                if let Some((dest, tls)) = &used {
                    ev = dest.log(ev).field("tls", if *tls { "yes" } else { "no" });
                }
                ev.field("reason", &r.text).emit();
                RcptReport {
                    slot: req.slot,
                    rcpt: i as u32,
                    outcome: outcome(r.status),
                    text: r.text.into_bytes(),
                }
            })
            .collect()
    }

    fn results(&mut self, req: &RemoteDeliver, fd: OwnedFd) -> Vec<RcptResult> {
        let n = req.recipients.len();
        let Ok(domain) = std::str::from_utf8(&req.domain).map(str::to_ascii_lowercase) else {
            return all(n, Status::Permanent, "domain is not valid UTF-8 (#5.1.2)");
        };
        let fresh = self.resolved.as_ref().is_some_and(|(d, r, at)| {
            *d == domain && !matches!(r, Resolution::Temporary(_)) && at.elapsed() < RESOLVED_FOR
        });
        if !fresh {
            if self.resolved.as_ref().is_some_and(|(d, ..)| *d != domain) {
                self.close();
            }
            let r = self.router.resolve(&domain);
            match &r {
                Resolution::Targets(t) => Event::new(PROG, "resolved")
                    .field("domain", &domain)
                    .num("targets", t.len())
                    .emit(),
                Resolution::Lmtp(server) => Event::new(PROG, "resolved")
                    .field("domain", &domain)
                    .field("lmtp", server.to_string())
                    .emit(),
                _ => {}
            }
            self.resolved = Some((domain.clone(), r, Instant::now()));
        }
        let (targets, protocol) = match &self.resolved {
            Some((_, Resolution::Lmtp(LmtpServer::Tcp(addr)), _)) => (
                vec![Target {
                    host: addr.ip().to_string(),
                    addr: *addr,
                }],
                Protocol::Lmtp,
            ),
            Some((_, Resolution::Lmtp(LmtpServer::Unix(_)), _)) => (Vec::new(), Protocol::Lmtp),
            Some((_, Resolution::Targets(t), _)) => (t.clone(), Protocol::Smtp),
            Some((_, Resolution::NullMx, _)) => {
                return all(
                    n,
                    Status::Permanent,
                    &format!("{domain} does not accept mail (null MX) (#5.1.10)"),
                );
            }
            Some((_, Resolution::NoDomain(why), _)) => {
                return all(n, Status::Permanent, &format!("{why} (#5.1.2)"));
            }
            Some((_, Resolution::Temporary(why), _)) => {
                return all(n, Status::Temporary, &format!("{why} (#4.4.3)"));
            }
            None => unreachable!("resolved just above"),
        };

        let stored = FileSource::new(File::from(fd), req.offset, req.size);
        let signature = self.dkim_signature(req, &stored);
        let source = Prefixed::new(&signature, &stored);
        let scan = match tern_client::message::Source::reader(&source).and_then(tern_client::scan) {
            Ok(s) => s,
            Err(e) => {
                return all(
                    n,
                    Status::Temporary,
                    &format!("cannot read the message: {e} (#4.3.0)"),
                );
            }
        };
        if scan.breaks > 0 {
            // The message goes out changed: say so, once per message.
            Event::new(PROG, "long_lines")
                .num("qid", req.id)
                .num("breaks", scan.breaks)
                .emit();
        }
        let env = Envelope {
            sender: &req.sender,
            recipients: &req.recipients,
        };

        // A connection kept from the last request first; if it died while
        // idle (no reply to its first command, or 421), once more on a new
        // connection.
        if let Some(mut conn) = self.conn.take() {
            match conn.client.send(&env, &source, &scan) {
                Transaction::Done(r) => {
                    self.used = Some(used(&conn));
                    self.keep(conn);
                    return r;
                }
                Transaction::NotStarted(e) => {
                    conn.dest
                        .log(Event::new(PROG, "reconnect"))
                        .field("reason", e.to_string())
                        .emit();
                }
            }
        }
        let opened = match &self.resolved {
            Some((_, Resolution::Lmtp(LmtpServer::Unix(path)), _)) => {
                let path = path.clone();
                self.open_unix(&path)
            }
            _ => self.open_any(&domain, &targets, protocol),
        };
        let mut conn = match opened {
            Ok(c) => c,
            Err(text) => return all(n, Status::Temporary, &text),
        };
        match conn.client.send(&env, &source, &scan) {
            Transaction::Done(r) => {
                self.used = Some(used(&conn));
                self.keep(conn);
                r
            }
            Transaction::NotStarted(e) => {
                let text = format!("{} {e} (#4.4.2)", conn.client.peer());
                all(n, Status::Temporary, &text)
            }
        }
    }

    /// The `DKIM-Signature:` fields for this message (stored form), empty
    /// when none of its `From:` domain's keys signs it. Computed over the
    /// message as the receiver will hold it (tern-client's
    /// `received_form`: the same bytes the encoder puts on the wire, so
    /// line-end conversion and long-line breaking are inside the
    /// signature, not after it). A failure sends the message unsigned
    /// (it is logged): a missing signature is what the receiver's DMARC
    /// policy is for; a refused delivery would be worse.
    fn dkim_signature(&self, req: &RemoteDeliver, stored: &FileSource) -> Vec<u8> {
        if self.dkim.is_empty() {
            return Vec::new();
        }
        let held = tern_client::message::Source::reader(stored)
            .and_then(|r| tern_client::message::received_form(r, tern_dkim::MAX_SIGNED));
        let outcome = match held {
            Ok(Some(m)) => self.dkim.sign(&m).map_err(|e| e.to_string()),
            Ok(None) => Err(format!(
                "larger than {} bytes: sent unsigned",
                tern_dkim::MAX_SIGNED
            )),
            Err(e) => Err(format!("cannot read the message: {e}")),
        };
        match outcome {
            Ok(Some(signed)) => {
                Event::new(PROG, "dkim_signed")
                    .num("qid", req.id)
                    .field("d", &signed.domain)
                    .field("s", signed.selectors.join(","))
                    .emit();
                signed.header
            }
            Ok(None) => Vec::new(),
            Err(why) => {
                Event::new(PROG, "dkim_unsigned")
                    .num("qid", req.id)
                    .field("reason", why)
                    .emit();
                Vec::new()
            }
        }
    }

    /// Keeps a connection for the next request if it is still usable.
    fn keep(&mut self, conn: Conn) {
        if conn.client.is_usable() {
            self.conn = Some(conn);
        }
    }

    /// Ends the open session, if any, with QUIT.
    pub(crate) fn close(&mut self) {
        if let Some(mut conn) = self.conn.take() {
            if let Some(s) = conn.client.stream_mut() {
                s.set_timeouts(Some(self.settings.timeout_remote.min(QUIT_WAIT)));
            }
            conn.dest.log(Event::new(PROG, "quit")).emit();
            conn.client.quit();
        }
    }

    /// Tries the targets in order until one gives a session ready for mail.
    /// Addresses that failed to connect recently are passed over; when that
    /// is all of them, the one whose back-off ends first is tried anyway,
    /// so that mail is not held back by memory alone.
    fn open_any(
        &mut self,
        domain: &str,
        targets: &[Target],
        protocol: Protocol,
    ) -> Result<Conn, String> {
        let t = now();
        let mut todo: Vec<&Target> = targets
            .iter()
            .filter(|x| !self.memory.connect_failed_recently(x.addr.ip(), t))
            .collect();
        if todo.is_empty()
            && let Some(first) = targets
                .iter()
                .min_by_key(|x| self.memory.connect_retry_at(x.addr.ip()).unwrap_or(0))
        {
            Event::new(PROG, "all_backed_off")
                .field("domain", domain)
                .field("trying", first.addr.ip().to_string())
                .emit();
            todo.push(first);
        }
        let mut last = HostFailure::new("no address to try".to_string());
        for target in todo {
            match self.open(target, protocol) {
                Ok(c) => return Ok(c),
                Err(f) => {
                    Event::new(PROG, "host_failed")
                        .field("host", &target.host)
                        .field("ip", target.addr.ip().to_string())
                        .num("port", target.addr.port())
                        .field("reason", &f.text)
                        .emit();
                    last = f;
                }
            }
        }
        if protocol == Protocol::Lmtp {
            return Err(format!(
                "the LMTP server for {domain} could not be used: {} (#{})",
                last.text, last.code
            ));
        }
        Err(format!(
            "no mail server for {domain} could be used; last: {} (#{})",
            last.text, last.code
        ))
    }

    /// An LMTP session on a Unix socket: greeting and LHLO, no TLS.
    fn open_unix(&mut self, path: &Path) -> Result<Conn, String> {
        let dest = Dest::Unix(path.to_path_buf());
        let failed = |text: String| {
            dest.log(Event::new(PROG, "host_failed"))
                .field("reason", &text)
                .emit();
            Err(format!(
                "the LMTP server could not be used: {text} (#4.4.1)"
            ))
        };
        let sock = match UnixStream::connect(path) {
            Ok(s) => s,
            Err(e) => return failed(format!("cannot connect to {LMTP_LABEL}: {e}")),
        };
        dest.log(Event::new(PROG, "connect")).emit();
        let t = Some(self.settings.timeout_remote);
        let stream = Stream::Unix(sock);
        stream.set_timeouts(t);
        let mut client = match Client::connect_with(stream, LMTP_LABEL, t, Protocol::Lmtp) {
            Ok(c) => c,
            Err(e) => return failed(format!("{LMTP_LABEL} {e}")),
        };
        if let Err(e) = client.hello(&self.settings.helo) {
            return failed(format!("{LMTP_LABEL} {e}"));
        }
        Ok(Conn { client, dest })
    }

    /// A TCP connection, greeting and EHLO (LHLO for LMTP).
    fn connect(&self, target: &Target, protocol: Protocol) -> Result<Client<Stream>, HostFailure> {
        let ip = target.addr.ip();
        let name = if protocol == Protocol::Lmtp {
            LMTP_LABEL.to_string()
        } else {
            self.label(target)
        };
        let tcp = match TcpStream::connect_timeout(&target.addr, self.settings.timeout_connect) {
            Ok(s) => s,
            Err(e) => {
                // A refusal is an immediate, cheap answer from a live host
                // (qmail's tcpto also ignores it): only connections that
                // time out or find no route make the address skipped.
                if e.kind() != std::io::ErrorKind::ConnectionRefused {
                    self.memory.record_connect_failure(ip, now());
                }
                let what = if matches!(
                    e.kind(),
                    std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
                ) {
                    "timed out".to_string()
                } else {
                    e.to_string()
                };
                return Err(HostFailure::new(format!(
                    "cannot connect to {name}: {what}"
                )));
            }
        };
        Event::new(PROG, "connect")
            .field("host", &target.host)
            .field("ip", ip.to_string())
            .num("port", target.addr.port())
            .emit();
        let t = Some(self.settings.timeout_remote);
        let _ = tcp.set_nodelay(true);
        let tcp = Stream::Tcp(tcp);
        tcp.set_timeouts(t);
        let fail = |e: tern_client::Error| HostFailure::new(format!("{name} {e}"));
        // A host that takes the connection but never greets (overloaded,
        // a tarpit, a dead service behind a live kernel) is as dead as one
        // that does not answer the SYN, and costs a whole timeoutremote per
        // try: it is remembered the same way. Any greeting, even a refusal,
        // shows the host is alive.
        let mut client = match Client::connect_with(tcp, name.clone(), t, protocol) {
            Ok(c) => c,
            Err(e) => {
                if matches!(e, tern_client::Error::Timeout) {
                    self.memory.record_connect_failure(ip, now());
                } else {
                    self.memory.record_connect_success(ip);
                }
                return Err(fail(e));
            }
        };
        self.memory.record_connect_success(ip);
        client.hello(&self.settings.helo).map_err(fail)?;
        Ok(client)
    }

    fn tls_config(&mut self, verify: bool) -> Result<TlsConfig, String> {
        let slot = if verify {
            &mut self.verify
        } else {
            &mut self.opportunistic
        };
        if let Some(c) = slot {
            return Ok(c.clone());
        }
        let made = if verify {
            match &self.settings.tlsca {
                None => Err("control/tlsca names no CA bundle".to_string()),
                Some(p) => load_ca_file(p)
                    .and_then(TlsConfig::verify)
                    .map_err(|e| format!("CA bundle: {e}")),
            }
        } else {
            TlsConfig::opportunistic().map_err(|e| e.to_string())
        }?;
        *slot = Some(made.clone());
        Ok(made)
    }

    /// A session with `target` ready for mail, TLS as the domain's policy
    /// says.
    fn open(&mut self, target: &Target, protocol: Protocol) -> Result<Conn, HostFailure> {
        let domain = self
            .resolved
            .as_ref()
            .map(|(d, ..)| d.clone())
            .unwrap_or_default();
        let policy = self.settings.policies.lookup(&domain);
        let ip = target.addr.ip();
        let mut client = self.connect(target, protocol)?;
        let name = client.peer().to_string();
        let log_tls = |info: &tern_client::TlsInfo| {
            Event::new(PROG, "tls")
                .field("host", &target.host)
                .field("ip", ip.to_string())
                .field("protocol", &info.protocol)
                .field("cipher", &info.cipher)
                .field("verified", if info.verified { "yes" } else { "no" })
                .emit();
        };
        let log_fallback = |reason: &str| {
            Event::new(PROG, "tls")
                .field("host", &target.host)
                .field("ip", ip.to_string())
                .field("fallback", "plaintext")
                .field("reason", reason)
                .emit();
        };
        match policy {
            TlsPolicy::None => {}
            TlsPolicy::May => {
                if !client.capabilities().starttls {
                    // nothing to try
                } else if self.memory.tls_failed_recently(ip, now()) {
                    log_fallback("STARTTLS failed recently");
                } else {
                    let config = match self.tls_config(false) {
                        Ok(c) => c,
                        Err(e) => {
                            return Err(HostFailure::new(format!("TLS setup: {e}")));
                        }
                    };
                    let sni = server_name(&target.host)
                        .unwrap_or_else(|_| ServerName::IpAddress(ip.into()));
                    match client.starttls(&config, sni, &self.settings.helo) {
                        Ok(info) => log_tls(&info),
                        Err(e) if client.is_usable() => {
                            // STARTTLS refused with a reply: go on in plain text.
                            log_fallback(&format!("{e}"));
                        }
                        Err(e) => {
                            self.memory.record_tls_failure(ip, now());
                            log_fallback(&format!("{e}"));
                            drop(client);
                            client = self.connect(target, protocol)?;
                        }
                    }
                }
            }
            TlsPolicy::Verify => {
                let refuse = |client: Client<Stream>, why: String| {
                    if client.is_usable() {
                        client.quit();
                    }
                    Err(HostFailure {
                        text: why,
                        code: "4.7.5",
                    })
                };
                if !client.capabilities().starttls {
                    return refuse(
                        client,
                        format!(
                            "{name} does not offer STARTTLS, which the TLS policy (verify) requires"
                        ),
                    );
                }
                let config = match self.tls_config(true) {
                    Ok(c) => c,
                    Err(e) => return refuse(client, format!("TLS policy verify: {e}")),
                };
                let sni = match server_name(&target.host) {
                    Ok(s) => s,
                    Err(e) => return refuse(client, format!("TLS policy verify: {e}")),
                };
                match client.starttls(&config, sni, &self.settings.helo) {
                    Ok(info) => log_tls(&info),
                    Err(e) => {
                        return refuse(
                            client,
                            format!("{name} {e}; TLS policy verify allows no plain text"),
                        );
                    }
                }
            }
        }
        Ok(Conn {
            client,
            dest: Dest::Tcp(target.clone()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(host: &str, addr: &str) -> Target {
        Target {
            host: host.to_string(),
            addr: addr.parse().unwrap(),
        }
    }

    fn label_of(t: &Target) -> String {
        label(t, false)
    }

    /// A relay from smtproutes is never named, internal or not.
    #[test]
    fn routed_relays_are_not_named() {
        for (host, addr) in [
            ("smarthost.internal", "10.0.0.5:25"),
            ("relay.example.net", "192.0.2.7:587"),
            ("192.0.2.7", "192.0.2.7:25"),
        ] {
            assert_eq!(label(&t(host, addr), true), "the relay", "{host}");
        }
    }

    #[test]
    fn labels_hide_internal_addresses() {
        assert_eq!(
            label_of(&t("mx.example.org", "192.0.2.1:25")),
            "mx.example.org [192.0.2.1]"
        );
        assert_eq!(label_of(&t("192.0.2.1", "192.0.2.1:25")), "[192.0.2.1]");
        assert_eq!(
            label_of(&t("mx.example.org", "[2001:db8::1]:25")),
            "mx.example.org [2001:db8::1]"
        );
        for internal in [
            "127.0.0.1:25",
            "10.1.2.3:25",
            "172.16.0.1:25",
            "192.168.1.1:25",
            "169.254.1.1:25",
            "100.64.0.1:25",
            "[::1]:25",
            "[fd00::1]:25",
            "[fe80::1]:25",
            "[::ffff:10.0.0.1]:25",
        ] {
            assert_eq!(
                label_of(&t("relay.lan", internal)),
                "relay.lan",
                "{internal}"
            );
            let ip = internal
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .ip()
                .to_string();
            assert_eq!(label_of(&t(&ip, internal)), "the relay", "{internal}");
        }
    }
}
