//! `tern-authcheck`: the checks behind tern-verify(8). One message, its
//! client address, HELO name and envelope sender in; a
//! [`tern_ipc::verify::Response`] out: the verdict and one
//! `Authentication-Results:` field (RFC 8601).
//!
//! The checks are those of the `mail-auth` crate (no record parser or
//! cryptography of our own):
//!
//! 1. SPF (RFC 7208) for the HELO identity, and for the MAIL FROM identity
//!    (for `<>`, the HELO result stands for it, as RFC 7208 §2.4 says);
//! 2. DKIM (RFC 6376): every signature, at most [`MAX_DKIM_SIGNATURES`]
//!    (the first ones in the header; more would let one message ask for
//!    any number of key lookups);
//! 3. ARC (RFC 8617): the chain is validated and reported;
//! 4. DMARC (mail-auth follows DMARCbis, RFC 9989): alignment of the SPF
//!    MAIL FROM and DKIM results with the `From:` domain, and the policy
//!    (`p`, `sp`, `np`; `t=y` lowers it one step). DMARCbis dropped `pct`;
//!    mail-auth ignores it, so a record with `pct=0` is applied in full.
//!
//! Verdict: DMARC `fail` under `reject` is [`Verdict::Reject`], under
//! `quarantine` [`Verdict::Quarantine`]; a DMARC `temperror` (a DNS error
//! on an aligned check) under `reject` is [`Verdict::TempErrorWouldReject`];
//! anything else is [`Verdict::Accept`]. A DNS error where the policy is
//! unknown (the DMARC lookup itself failed) accepts: a temporary refusal
//! is given only when the answer could have been a reject.
//!
//! DNS goes through hickory-resolver on a tokio current-thread runtime made
//! for the call, configured by tern-route ([`tern_route::resolver_config`]:
//! `control/dnsservers` or `/etc/resolv.conf`, no search list, no
//! `/etc/hosts`). The whole check runs within the request's time budget;
//! what does not finish in time is reported as `temperror`.
//!
//! Trust level: the message, HELO name and sender come from an SMTP
//! client; DNS answers from anyone. Both are parsed by mail-auth only.
#![forbid(unsafe_code)]
#![deny(clippy::print_stdout, clippy::print_stderr)]

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use mail_auth::dmarc::Policy;
use mail_auth::hickory_resolver::TokioResolver;
use mail_auth::spf::verify::SpfParameters;
use mail_auth::{
    AuthenticatedMessage, AuthenticationResults, DkimResult, DmarcResult, MessageAuthenticator,
    SpfOutput, SpfResult,
};
pub use tern_ipc::verify::{Request, Response, Verdict};
use tern_route::Limits;

/// Most DKIM signatures verified per message.
pub const MAX_DKIM_SIGNATURES: usize = 8;
/// Longest wait for one DNS query.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(5);
/// Time kept back from the client's budget for the answer to travel.
pub const MARGIN: Duration = Duration::from_millis(500);
/// The shortest time any check is given.
pub const MIN_BUDGET: Duration = Duration::from_millis(200);

/// Why a check could not run at all.
#[derive(Debug)]
pub struct SetupError(pub String);

impl std::fmt::Display for SetupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SetupError {}

/// What the checks need to know to start: the DNS servers.
#[derive(Debug, Clone)]
pub struct Checker {
    servers: Vec<SocketAddr>,
    query_timeout: Duration,
}

impl Checker {
    /// A checker asking `servers` in order.
    pub fn new(servers: Vec<SocketAddr>) -> Checker {
        Checker {
            servers,
            query_timeout: QUERY_TIMEOUT,
        }
    }

    /// Uses `t` (at least 10 ms) as the limit of one DNS query.
    pub fn with_query_timeout(mut self, t: Duration) -> Checker {
        self.query_timeout = t.max(Duration::from_millis(10));
        self
    }

    /// Checks one message (LF or CRLF line ends) for `req`.
    ///
    /// # Errors
    /// The runtime or the resolver cannot be set up (the caller answers
    /// nothing; tern-smtpd then accepts the message unchecked).
    pub fn check(&self, req: &Request, message: &[u8]) -> Result<Response, SetupError> {
        let started = Instant::now();
        let budget = Duration::from_millis(u64::from(req.budget_ms))
            .saturating_sub(MARGIN)
            .max(MIN_BUDGET);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(|e| SetupError(format!("cannot start the DNS runtime: {e}")))?;
        // One try per query, each a fifth of the budget at most: a dead
        // server costs every lookup that goes to it, and the DMARC step
        // (whose policy decides between 451 and accept) comes last.
        let limits = Limits {
            timeout: self.query_timeout.min(budget / 5),
            retries: 0,
        };
        let (config, opts) = tern_route::resolver_config(&self.servers, limits);
        let auth = {
            let _guard = rt.enter();
            TokioResolver::builder_with_config(
                config,
                mail_auth::hickory_resolver::net::runtime::TokioRuntimeProvider::default(),
            )
            .with_options(opts)
            .build()
            .map(MessageAuthenticator)
            .map_err(|e| SetupError(format!("cannot set up the DNS resolver: {e}")))?
        };
        let crlf = to_crlf(message);
        let end = started + budget;
        Ok(rt.block_on(run(&auth, req, &crlf, end)))
    }
}

/// The message with every bare LF made CRLF (DKIM canonicalises CRLF
/// lines).
pub fn to_crlf(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + message.len() / 32);
    let mut prev = 0u8;
    for &b in message {
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        prev = b;
    }
    out
}

/// Runs `f` until `end`; `None` when time ran out.
async fn until<T>(end: Instant, f: impl Future<Output = T>) -> Option<T> {
    let left = end.saturating_duration_since(Instant::now());
    tokio::time::timeout(left, f).await.ok()
}

/// A domain-like text for a result field: the HELO name as given, or
/// `unknown` when empty.
fn helo_or_unknown(helo: &str) -> &str {
    if helo.is_empty() { "unknown" } else { helo }
}

async fn run(auth: &MessageAuthenticator, req: &Request, crlf: &[u8], end: Instant) -> Response {
    let me = req.authserv_id.as_str();
    let ip: IpAddr = match req.ip.parse() {
        Ok(ip) => ip,
        Err(_) => {
            return Response {
                verdict: Verdict::Accept,
                header: format!("Authentication-Results: {me};\n\tnone (client address unknown)\n"),
                reason: "client address unknown: not checked".into(),
            };
        }
    };
    let helo = helo_or_unknown(&req.helo);
    let sender = req.mail_from.as_str();
    let timed_out = |what: &str| format!("{what} timed out");
    let mut notes: Vec<String> = Vec::new();

    // SPF, HELO identity.
    let spf_helo = until(
        end,
        auth.verify_spf(SpfParameters::verify_ehlo(ip, helo, me)),
    )
    .await
    .unwrap_or_else(|| {
        notes.push(timed_out("SPF (HELO)"));
        temperror_spf(helo)
    });
    // SPF, MAIL FROM identity (for <>, postmaster@HELO: the HELO result).
    let spf_from = if sender.is_empty() {
        spf_helo.clone()
    } else {
        until(
            end,
            auth.verify_spf(SpfParameters::verify_mail_from(ip, helo, me, sender)),
        )
        .await
        .unwrap_or_else(|| {
            notes.push(timed_out("SPF (MAIL FROM)"));
            temperror_spf(sender)
        })
    };
    let from_domain = sender.rsplit_once('@').map_or(helo, |(_, d)| d);

    let Some(mut msg) = AuthenticatedMessage::parse(crlf) else {
        let ar = AuthenticationResults::new(me)
            .with_spf_ehlo_result(&spf_helo, ip, helo)
            .with_spf_mailfrom_result(&spf_from, ip, sender, helo);
        return Response {
            verdict: Verdict::Accept,
            header: field(
                &ar.to_string(),
                "\n\tdkim=none (message not parsed); dmarc=none",
            ),
            reason: "message could not be parsed for DKIM and DMARC".into(),
        };
    };
    msg.dkim_headers.truncate(MAX_DKIM_SIGNATURES);

    let dkim = until(end, auth.verify_dkim(&msg)).await.unwrap_or_else(|| {
        notes.push(timed_out("DKIM"));
        Vec::new()
    });
    let dkim_timed_out = notes.iter().any(|n| n.starts_with("DKIM"));
    let arc = until(end, auth.verify_arc(&msg)).await;
    if arc.is_none() {
        notes.push(timed_out("ARC"));
    }
    let dmarc = until(
        end,
        auth.verify_dmarc(mail_auth::dmarc::verify::DmarcParameters::new(
            &msg,
            &dkim,
            from_domain,
            &spf_from,
        )),
    )
    .await;
    if dmarc.is_none() {
        notes.push(timed_out("DMARC"));
    }

    let header_from = msg.from();
    let mut ar = AuthenticationResults::new(me).with_dkim_results(&dkim, header_from);
    let mut extra = String::new();
    if dkim.is_empty() {
        extra.push_str(if dkim_timed_out {
            ";\n\tdkim=temperror (timed out)"
        } else {
            ";\n\tdkim=none"
        });
    }
    ar = ar
        .with_spf_ehlo_result(&spf_helo, ip, helo)
        .with_spf_mailfrom_result(&spf_from, ip, sender, helo);
    if let Some(arc) = &arc {
        ar = ar.with_arc_result(arc, ip);
    }
    let mut verdict = Verdict::Accept;
    let mut reason = String::from("checked");
    match &dmarc {
        Some(d) => {
            ar = ar.with_dmarc_result(d);
            let policy = d.policy();
            match (d.result(), policy) {
                (DmarcResult::Fail(_), Policy::Reject) => {
                    verdict = Verdict::Reject;
                    reason = format!("DMARC policy of {} rejects this message", d.domain());
                }
                (DmarcResult::Fail(_), Policy::Quarantine) => {
                    verdict = Verdict::Quarantine;
                    reason = format!("DMARC policy of {} quarantines this message", d.domain());
                }
                (DmarcResult::TempError(_), Policy::Reject) => {
                    verdict = Verdict::TempErrorWouldReject;
                    reason = format!(
                        "temporary DNS error checking DMARC for {}, whose policy is reject",
                        d.domain()
                    );
                }
                _ => {}
            }
        }
        None => extra.push_str(";\n\tdmarc=temperror (timed out)"),
    }
    let mut text = ar.to_string();
    // mail-auth's AuthenticationResults prints the id and results; an
    // empty result list is RFC 8601's "none".
    if text == me && extra.is_empty() {
        text.push_str("; none");
    }
    text.push_str(&extra);
    if !notes.is_empty() {
        reason = format!("{reason} ({})", notes.join(", "));
    }
    Response {
        verdict,
        header: field(&text, ""),
        reason: sanitize_reason(&reason),
    }
}

/// An SPF output standing for a check that ran out of time.
fn temperror_spf(domain: &str) -> SpfOutput {
    SpfOutput::new(domain.to_string()).with_result(SpfResult::TempError)
}

/// The whole field from mail-auth's text (`id;\r\n\tspf=...`): LF line
/// ends, every line after the first indented, printable ASCII only, cut at
/// [`tern_ipc::verify::MAX_HEADER`] on a line boundary.
fn field(text: &str, extra: &str) -> String {
    let mut out = String::from("Authentication-Results: ");
    let budget = tern_ipc::verify::MAX_HEADER - 64;
    let all = format!("{text}{extra}");
    for (i, line) in all.split('\n').enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        let clean: String = line
            .chars()
            .map(|c| {
                if c == '\t' || c == ' ' || c.is_ascii_graphic() {
                    c
                } else {
                    '?'
                }
            })
            .collect();
        if i > 0 {
            if clean.trim().is_empty() {
                continue;
            }
            if out.len() + clean.len() + 2 > budget {
                out.push_str("\n\t(more results left out)");
                break;
            }
            out.push('\n');
            if !clean.starts_with([' ', '\t']) {
                out.push('\t');
            }
        } else if clean.len() > budget {
            out.push_str(&clean[..budget.min(clean.len())]);
            continue;
        }
        out.push_str(&clean);
    }
    out.push('\n');
    out
}

fn sanitize_reason(r: &str) -> String {
    r.chars()
        .map(|c| {
            if c == ' ' || c.is_ascii_graphic() {
                c
            } else {
                '?'
            }
        })
        .take(tern_ipc::verify::MAX_REASON)
        .collect()
}

/// True when some DKIM result passed (for logs).
pub fn any_pass(results: &[mail_auth::DkimOutput<'_>]) -> bool {
    results.iter().any(|r| r.result() == &DkimResult::Pass)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crlf() {
        assert_eq!(to_crlf(b"a\nb\r\nc"), b"a\r\nb\r\nc");
        assert_eq!(to_crlf(b"\n\n"), b"\r\n\r\n");
        assert_eq!(to_crlf(b""), b"");
    }

    #[test]
    fn fields_are_one_valid_header() {
        let f = field("mx.example;\r\n\tspf=pass (x\u{7}y)\r\n\tdkim=none", "");
        assert_eq!(
            f,
            "Authentication-Results: mx.example;\n\tspf=pass (x?y)\n\tdkim=none\n"
        );
        let long = format!("mx;{}", "\r\n\tdkim=fail header.d=x".repeat(2000));
        let f = field(&long, "");
        assert!(f.len() <= tern_ipc::verify::MAX_HEADER, "{}", f.len());
        assert!(f.ends_with("(more results left out)\n"));
        let r = Response {
            verdict: Verdict::Accept,
            header: f,
            reason: sanitize_reason("a\r\nb"),
        };
        assert_eq!(r.reason, "a??b");
        assert!(r.encode().is_ok());
    }

    /// With no DNS server every lookup fails at once: SPF temperror,
    /// DMARC unknown, the message accepted and tagged.
    #[test]
    fn no_dns_server_accepts_with_temperror() {
        let c = Checker::new(Vec::new()).with_query_timeout(Duration::from_millis(100));
        let req = Request {
            ip: "192.0.2.1".into(),
            helo: "mx.example.org".into(),
            mail_from: "a@example.org".into(),
            authserv_id: "mx.example.net".into(),
            budget_ms: 2000,
        };
        let r = c
            .check(&req, b"From: a@example.org\nSubject: s\n\nbody\n")
            .unwrap();
        assert_eq!(r.verdict, Verdict::Accept, "{r:?}");
        assert!(
            r.header
                .starts_with("Authentication-Results: mx.example.net;\n"),
            "{r:?}"
        );
        assert!(r.header.contains("spf=temperror"), "{r:?}");
        assert!(r.encode().is_ok());
        let mut bad = req.clone();
        bad.ip = "not an address".into();
        let r = c.check(&bad, b"\n").unwrap();
        assert_eq!(r.verdict, Verdict::Accept);
        assert!(r.encode().is_ok(), "{r:?}");
    }
}
