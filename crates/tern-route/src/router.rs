//! [`Router`]: where mail for a domain goes.

use std::net::{IpAddr, SocketAddr};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use hickory_resolver::TokioResolver;
use hickory_resolver::proto::rr::{Name, RecordType};
use tern_addr::{Charset, Domain, DomainKind};
use tern_control::{Control, LmtpRoutes, LmtpServer, Relay, RelayHost, SmtpRoutes};

use crate::dns::{self, Answer, Dns, Limits};
use crate::error::Error;
use crate::guard::Guard;
use crate::order::{MAX_ADDRESSES, Mx, Rng, order_mx, usable_address};

/// The SMTP port: MX hosts, implicit MX and address literals.
pub const SMTP_PORT: u16 = 25;
/// Default time one try of a DNS query may take.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(3);
/// Default retries of a DNS query after its first try timed out or failed
/// (so an unreachable server costs 2 × 3 s per query).
pub const QUERY_RETRIES: usize = 1;
/// Default time all the lookups for one domain may take together; what was
/// found by then is used.
pub const RESOLVE_DEADLINE: Duration = Duration::from_secs(30);

/// One address to connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The MX or relay host name (ASCII, lowercase, no trailing dot), the
    /// domain itself for an implicit MX, or the IP address as text (no
    /// brackets) for IP relays and address literals. This is the name a
    /// `verify` TLS policy checks the certificate against.
    pub host: String,
    /// Address and port.
    pub addr: SocketAddr,
}

/// The outcome of [`Router::resolve`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// Addresses in the order to try: MX preference ascending, equal
    /// preferences shuffled, every address of a host (AAAA, then A) before
    /// the next host. Never empty.
    Targets(Vec<Target>),
    /// The domain publishes a null MX (RFC 7505, `0 .`): it accepts no
    /// mail. A permanent failure, at once.
    NullMx,
    /// The domain does not exist (NXDOMAIN), has neither MX nor address
    /// records, or is not a valid domain: a permanent failure, with the
    /// reason.
    NoDomain(String),
    /// No answer now (SERVFAIL, timeouts, unreachable DNS server, MX hosts
    /// none of which resolves yet, an smtproutes relay without address):
    /// try again later, with the reason.
    Temporary(String),
    /// `control/lmtproutes` sends the domain to this LMTP server (RFC
    /// 2033): no SMTP, no MX, no DNS; when it cannot be used the mail
    /// waits.
    Lmtp(LmtpServer),
}

/// Decides where mail for a domain goes: `control/smtproutes` first, then
/// DNS. Built once per tern-remote process; the DNS runtime is started on
/// the first lookup that needs it (relays given by IP never start it).
#[derive(Debug)]
pub struct Router {
    routes: SmtpRoutes,
    lmtp: LmtpRoutes,
    servers: Vec<SocketAddr>,
    limits: Limits,
    deadline: Duration,
    port: u16,
    rng: Rng,
    dns: OnceLock<Result<Dns, String>>,
    /// Where addresses from DNS and address literals may lead (this host
    /// never, private networks when allowed); `None`: anywhere (tests of
    /// the lookups themselves).
    guard: Option<Guard>,
}

impl Router {
    /// Reads `control/smtproutes` and `control/dnsservers` (empty: the
    /// `nameserver` lines of `/etc/resolv.conf`).
    ///
    /// # Errors
    /// A control file is unreadable or malformed, or `/etc/resolv.conf` is
    /// unreadable (a missing one means `127.0.0.1`, as in the C library).
    pub fn from_control(control: &Control) -> Result<Router, Error> {
        let routes = control.smtproutes()?;
        let lmtp = control.lmtproutes()?;
        let servers = crate::servers::dns_servers(control)?;
        let guard = Guard::from_system(&control.moreipme()?, &control.remoteprivate()?)?;
        Ok(Router::new(routes, servers)
            .with_lmtp_routes(lmtp)
            .with_guard(guard))
    }

    /// Checks every address from DNS or an address literal with `guard`
    /// (smtproutes relays are used as written).
    pub fn with_guard(mut self, guard: Guard) -> Router {
        self.guard = Some(guard);
        self
    }

    /// Sends the domains `lmtp` names to their LMTP servers (consulted
    /// before the smtproutes).
    pub fn with_lmtp_routes(mut self, lmtp: LmtpRoutes) -> Router {
        self.lmtp = lmtp;
        self
    }

    /// A router with these routes, asking these DNS servers (in order).
    /// An empty server list makes every DNS lookup temporary.
    pub fn new(routes: SmtpRoutes, servers: Vec<SocketAddr>) -> Router {
        Router {
            routes,
            lmtp: LmtpRoutes::default(),
            servers,
            limits: Limits {
                timeout: QUERY_TIMEOUT,
                retries: QUERY_RETRIES,
            },
            deadline: RESOLVE_DEADLINE,
            port: SMTP_PORT,
            rng: Rng::from_entropy(),
            dns: OnceLock::new(),
            guard: None,
        }
    }

    /// Uses `port` instead of 25 for MX hosts, implicit MX and address
    /// literals (test set-ups whose SMTP peer cannot listen on 25;
    /// smtproutes relays keep their own port).
    pub fn with_smtp_port(mut self, port: u16) -> Router {
        self.port = port;
        self
    }

    /// Sets the DNS timeouts: one try of a query, retries after a failed
    /// first try, and the total for one [`Router::resolve`] (what was found
    /// by then is used). Durations under 10 ms are raised to 10 ms.
    pub fn with_timeouts(mut self, query: Duration, retries: usize, total: Duration) -> Router {
        self.limits = Limits {
            timeout: query.max(Duration::from_millis(10)),
            retries,
        };
        self.deadline = total.max(Duration::from_millis(10));
        self.dns = OnceLock::new();
        self
    }

    /// Shuffles equal MX preferences with a fixed seed (reproducible tests).
    pub fn with_seed(mut self, seed: u64) -> Router {
        self.rng = Rng::seeded(seed);
        self
    }

    /// The DNS servers asked, in order.
    pub fn servers(&self) -> &[SocketAddr] {
        &self.servers
    }

    /// True when `control/lmtproutes` or `control/smtproutes` sends mail
    /// for `domain` to a server of the administrator's (not by MX). The relay's name is the administrator's, not public
    /// DNS data: report texts, which end up in bounces, call it "the
    /// relay".
    pub fn is_routed(&self, domain: &str) -> bool {
        let d = match domain.strip_suffix('.') {
            Some(d) if !d.ends_with(']') => d,
            _ => domain,
        };
        self.lmtp.lookup(d).is_some() || self.routes.lookup(d).is_some()
    }

    /// Where mail for `domain` goes.
    ///
    /// First `control/lmtproutes`, looked up as smtproutes below:
    /// [`Resolution::Lmtp`]. Then:
    ///
    /// 1. `control/smtproutes`: the exact domain, else the longest `.suffix`
    ///    entry, else the `:relay` default. An entry with an empty relay
    ///    means "MX as usual". A relay given by IP is used as is; a relay
    ///    given by name is looked up as AAAA and A (never MX). The port is
    ///    the route's (25 unless given).
    /// 2. An address literal (`[192.0.2.1]`, `[IPv6:2001:db8::1]`) is that
    ///    address, port 25.
    /// 3. MX lookup: a null MX (`0 .`) is [`Resolution::NullMx`]; otherwise
    ///    the hosts by preference (equal ones shuffled), at most
    ///    [`crate::MAX_MX_HOSTS`] hosts and [`crate::MAX_ADDRESSES`]
    ///    addresses, each host's AAAA then A addresses. No MX records: the
    ///    domain's own addresses (implicit MX). NXDOMAIN, or no MX and no
    ///    address: [`Resolution::NoDomain`].
    ///
    /// Addresses that could not be an SMTP server (unspecified, multicast,
    /// broadcast) are dropped from DNS answers. A trailing dot on `domain`
    /// is ignored.
    pub fn resolve(&self, domain: &str) -> Resolution {
        let d = match domain.strip_suffix('.') {
            Some(d) if !d.ends_with(']') => d,
            _ => domain,
        };
        let parsed = match Domain::parse(d.as_bytes(), Charset::Utf8) {
            Ok(p) => p,
            Err(e) => return Resolution::NoDomain(format!("bad domain name: {}", e.hint())),
        };
        if let Some(server) = self.lmtp.lookup(d) {
            return Resolution::Lmtp(server.clone());
        }
        if let Some(relay) = self.routes.lookup(d) {
            return self.relay(relay);
        }
        let literal = |ip: IpAddr| {
            if let Some(g) = &self.guard {
                if g.is_me(ip) {
                    return Resolution::NoDomain(
                        "the address literal is this host (#5.4.6)".to_string(),
                    );
                }
                if !g.allows(ip) {
                    return Resolution::NoDomain(
                        "the address literal is a private address: refused (#5.4.4)".to_string(),
                    );
                }
            }
            if usable_address(ip) {
                Resolution::Targets(vec![Target {
                    host: ip.to_string(),
                    addr: SocketAddr::new(ip, self.port),
                }])
            } else {
                Resolution::NoDomain(format!("address literal {ip} is not a usable address"))
            }
        };
        match parsed.kind() {
            DomainKind::Ipv4(ip) => literal(IpAddr::V4(ip)),
            DomainKind::Ipv6(ip) => literal(IpAddr::V6(ip)),
            DomainKind::Name => match fqdn(d) {
                Ok(name) => self.by_mx(&name),
                Err(reason) => Resolution::NoDomain(reason),
            },
        }
    }

    fn relay(&self, relay: &Relay) -> Resolution {
        let name = match &relay.host {
            RelayHost::Ip(ip) => {
                return Resolution::Targets(vec![Target {
                    host: ip.to_string(),
                    addr: SocketAddr::new(*ip, relay.port),
                }]);
            }
            RelayHost::Name(d) => d,
        };
        let fq = match fqdn(name.as_str()) {
            Ok(n) => n,
            // The relay's name stays out of the text (it ends up in a
            // bounce); tern-send logs the domain.
            Err(_) => return Resolution::Temporary("the relay's name is not usable".to_string()),
        };
        let host = dns::host_text(&fq);
        let port = relay.port;
        self.with_dns(|resolver, end| async move {
            match host_addresses(&resolver, &fq, end).await {
                Answer::Found(ips) => Resolution::Targets(
                    ips.into_iter()
                        .take(MAX_ADDRESSES)
                        .map(|ip| Target {
                            host: host.clone(),
                            addr: SocketAddr::new(ip, port),
                        })
                        .collect(),
                ),
                Answer::NoRecords | Answer::NxDomain => {
                    Resolution::Temporary("the relay has no address".to_string())
                }
                Answer::Temporary(r) => {
                    Resolution::Temporary(format!("the relay's address lookup failed: {r}"))
                }
            }
        })
    }

    fn by_mx(&self, name: &Name) -> Resolution {
        let domain = dns::host_text(name);
        let port = self.port;
        self.with_dns(|resolver, end| async move {
            let records = match until(end, dns::mx(&resolver, name)).await {
                None => {
                    return Resolution::Temporary(format!(
                        "DNS lookups for {domain} took too long"
                    ));
                }
                Some(Answer::Found(r)) if !r.is_empty() => r,
                Some(Answer::Found(_) | Answer::NoRecords) => {
                    // implicit MX: the domain's own addresses
                    return match host_addresses(&resolver, name, end).await {
                        Answer::Found(ips) => {
                            if let Some(g) = &self.guard {
                                if ips.iter().any(|&ip| g.is_me(ip)) {
                                    return Resolution::NoDomain(format!(
                                        "{domain} (no MX) points back to this host (#5.4.6)"
                                    ));
                                }
                                if !ips.iter().any(|&ip| g.allows(ip)) {
                                    return Resolution::NoDomain(format!(
                                        "{domain} (no MX) has only private addresses: refused (#5.4.4)"
                                    ));
                                }
                            }
                            Resolution::Targets(
                                ips.into_iter()
                                    .filter(|&ip| self.guard.as_ref().is_none_or(|g| g.allows(ip)))
                                    .take(MAX_ADDRESSES)
                                    .map(|ip| Target {
                                        host: domain.clone(),
                                        addr: SocketAddr::new(ip, port),
                                    })
                                    .collect(),
                            )
                        }
                        Answer::NoRecords | Answer::NxDomain => Resolution::NoDomain(format!(
                            "{domain} has no MX and no address record"
                        )),
                        Answer::Temporary(r) => Resolution::Temporary(format!("{domain}: {r}")),
                    };
                }
                Some(Answer::NxDomain) => {
                    return Resolution::NoDomain(format!("domain {domain} does not exist"));
                }
                Some(Answer::Temporary(r)) => {
                    return Resolution::Temporary(format!("MX lookup for {domain}: {r}"));
                }
            };
            if records.iter().all(|m| m.host == ".") {
                return Resolution::NullMx;
            }
            // a null MX beside real ones breaks RFC 7505; use the real ones
            let hosts: Vec<Mx> = records.into_iter().filter(|m| m.host != ".").collect();
            let hosts = order_mx(hosts, &self.rng);
            // (preference, target), in the order to try.
            let mut targets: Vec<(u16, Target)> = Vec::new();
            let mut trouble: Option<String> = None;
            // RFC 5321 5.1 and qmail's ipme: an MX that is this host is
            // dropped with every less (or equally) preferred one.
            let mut me_at: Option<u16> = None;
            let mut private = false;
            for mx in &hosts {
                if targets.len() >= MAX_ADDRESSES {
                    break;
                }
                let Ok(host_name) = fqdn(&mx.host) else {
                    continue;
                };
                match host_addresses(&resolver, &host_name, end).await {
                    Answer::Found(ips) => {
                        if let Some(g) = &self.guard {
                            if ips.iter().any(|&ip| g.is_me(ip)) {
                                me_at = Some(mx.pref);
                                break;
                            }
                            private |= ips.iter().any(|&ip| !g.allows(ip));
                        }
                        let room = MAX_ADDRESSES - targets.len();
                        targets.extend(
                            ips.into_iter()
                                .filter(|&ip| self.guard.as_ref().is_none_or(|g| g.allows(ip)))
                                .take(room)
                                .map(|ip| {
                                    (
                                        mx.pref,
                                        Target {
                                            host: mx.host.clone(),
                                            addr: SocketAddr::new(ip, port),
                                        },
                                    )
                                }),
                        );
                    }
                    Answer::NoRecords | Answer::NxDomain => {}
                    Answer::Temporary(r) => {
                        trouble.get_or_insert(r);
                    }
                }
            }
            if let Some(pref) = me_at {
                targets.retain(|(p, _)| *p < pref);
                if targets.is_empty() {
                    return Resolution::NoDomain(format!(
                        "the MX of {domain} points back to this host (#5.4.6)"
                    ));
                }
            }
            let targets: Vec<Target> = targets.into_iter().map(|(_, t)| t).collect();
            if targets.is_empty() && private && trouble.is_none() {
                return Resolution::NoDomain(format!(
                    "the MX hosts of {domain} have only private addresses: refused (#5.4.4)"
                ));
            }
            if targets.is_empty() {
                let why = trouble.unwrap_or_else(|| "no address records".to_string());
                return Resolution::Temporary(format!(
                    "none of the {} MX hosts of {domain} has an address yet ({why})",
                    hosts.len()
                ));
            }
            Resolution::Targets(targets)
        })
    }

    /// Runs a lookup on the DNS runtime (started on first use), within the
    /// deadline of one resolve.
    fn with_dns<'a, F>(&'a self, f: impl FnOnce(TokioResolver, Instant) -> F) -> Resolution
    where
        F: Future<Output = Resolution> + 'a,
    {
        if self.servers.is_empty() {
            return Resolution::Temporary("no DNS server configured".into());
        }
        let dns = match self
            .dns
            .get_or_init(|| Dns::new(&self.servers, self.limits))
        {
            Ok(d) => d,
            Err(e) => return Resolution::Temporary(e.clone()),
        };
        let end = Instant::now() + self.deadline;
        // the inner steps stop at `end` and keep what they found; this
        // outer bound only catches what they miss
        dns.run(self.deadline + Duration::from_secs(1), |r| f(r, end))
            .unwrap_or_else(|| Resolution::Temporary("DNS lookups took too long".into()))
    }
}

/// `text` as a fully qualified DNS name (IDNA A-labels for UTF-8 names).
fn fqdn(text: &str) -> Result<Name, String> {
    let mut name =
        Name::from_utf8(text).map_err(|_| format!("{text} cannot be looked up in the DNS"))?;
    name.set_fqdn(true);
    if name.len() > 255 {
        return Err("domain name longer than 255 bytes".into());
    }
    Ok(name)
}

/// Runs `fut` until `end`; `None` when time ran out.
async fn until<T>(end: Instant, fut: impl Future<Output = T>) -> Option<T> {
    let left = end.saturating_duration_since(Instant::now());
    tokio::time::timeout(left, fut).await.ok()
}

/// A host's usable addresses, AAAA then A (both asked at once). Found when
/// either family has an address; else temporary when either lookup was;
/// else NXDOMAIN when both said so; else no records.
async fn host_addresses(resolver: &TokioResolver, name: &Name, end: Instant) -> Answer<IpAddr> {
    let v4 = tokio::spawn(until(
        end,
        dns::addresses(resolver.clone(), name.clone(), RecordType::A),
    ));
    let late = || Answer::Temporary("DNS lookups took too long".into());
    let v6 = until(
        end,
        dns::addresses(resolver.clone(), name.clone(), RecordType::AAAA),
    )
    .await
    .unwrap_or_else(late);
    let v4 = match v4.await {
        Ok(Some(a)) => a,
        Ok(None) => late(),
        Err(_) => Answer::Temporary("DNS lookup task failed".into()),
    };
    let mut found: Vec<IpAddr> = Vec::new();
    for a in [&v6, &v4] {
        if let Answer::Found(ips) = a {
            for ip in ips {
                if usable_address(*ip) && !found.contains(ip) {
                    found.push(*ip);
                }
            }
        }
    }
    if !found.is_empty() {
        return Answer::Found(found);
    }
    match (v6, v4) {
        (Answer::Temporary(r), _) | (_, Answer::Temporary(r)) => Answer::Temporary(r),
        (Answer::NxDomain, Answer::NxDomain) => Answer::NxDomain,
        _ => Answer::NoRecords,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router(routes: &str) -> Router {
        // no DNS server: any lookup that reaches DNS is Temporary at once
        Router::new(SmtpRoutes::parse(routes).unwrap(), Vec::new())
    }

    fn targets(r: Resolution) -> Vec<(String, String)> {
        match r {
            Resolution::Targets(t) => t
                .into_iter()
                .map(|t| (t.host, t.addr.to_string()))
                .collect(),
            other => panic!("not targets: {other:?}"),
        }
    }

    fn pair(h: &str, a: &str) -> (String, String) {
        (h.to_string(), a.to_string())
    }

    #[test]
    fn routes_by_ip_and_literals_need_no_dns() {
        let r = router(
            "relay.example:192.0.2.1\n\
             .v6.example:[2001:db8::25]:2525\n\
             mx.example:\n\
             [192.0.2.99]:192.0.2.7:26\n",
        );
        assert_eq!(
            targets(r.resolve("Relay.Example")),
            [pair("192.0.2.1", "192.0.2.1:25")]
        );
        assert_eq!(
            targets(r.resolve("relay.example.")),
            [pair("192.0.2.1", "192.0.2.1:25")]
        );
        assert_eq!(
            targets(r.resolve("a.b.v6.example")),
            [pair("2001:db8::25", "[2001:db8::25]:2525")]
        );
        assert_eq!(
            targets(r.resolve("[192.0.2.5]")),
            [pair("192.0.2.5", "192.0.2.5:25")]
        );
        assert_eq!(
            targets(r.resolve("[192.0.2.99]")),
            [pair("192.0.2.7", "192.0.2.7:26")]
        );
        assert_eq!(
            targets(r.resolve("[IPv6:2001:DB8::1]")),
            [pair("2001:db8::1", "[2001:db8::1]:25")]
        );
        assert_eq!(
            targets(r.with_smtp_port(2525).resolve("[ipv6:::1]")),
            [pair("::1", "[::1]:2525")]
        );
    }

    #[test]
    fn smarthost_takes_everything_but_exceptions() {
        let r = router(":[192.0.2.1]:587\nlocal.example:\n.internal.example:192.0.2.2\n");
        for d in ["example.com", "x.y.z", "[192.0.2.200]", "EXAMPLE.org."] {
            assert_eq!(
                targets(r.resolve(d)),
                [pair("192.0.2.1", "192.0.2.1:587")],
                "{d}"
            );
        }
        assert_eq!(
            targets(r.resolve("a.internal.example")),
            [pair("192.0.2.2", "192.0.2.2:25")]
        );
        // the exception goes to DNS, which this router has none of
        assert!(matches!(
            r.resolve("local.example"),
            Resolution::Temporary(_)
        ));
    }

    #[test]
    fn lmtproutes_come_before_smtproutes() {
        let r = router(":192.0.2.1:2525\nsmtp.example:192.0.2.2\n").with_lmtp_routes(
            LmtpRoutes::parse(
                "lmtp.example:/run/lmtp\n.tcp.example:127.0.0.1:2424\nsmtp.example:\n",
            )
            .unwrap(),
        );
        let lmtp = |d: &str| match r.resolve(d) {
            Resolution::Lmtp(s) => s.to_string(),
            other => panic!("{d}: {other:?}"),
        };
        assert_eq!(lmtp("LMTP.example."), "/run/lmtp");
        assert_eq!(lmtp("a.tcp.example"), "127.0.0.1:2424");
        assert!(r.is_routed("lmtp.example") && r.is_routed("a.tcp.example"));
        // an empty LMTP entry: smtproutes as usual
        assert_eq!(
            targets(r.resolve("smtp.example")),
            [pair("192.0.2.2", "192.0.2.2:25")]
        );
        assert_eq!(
            targets(r.resolve("tcp.example")),
            [pair("192.0.2.1", "192.0.2.1:2525")]
        );
        // a bad domain is refused before any route
        assert!(matches!(
            r.resolve("a..lmtp.example"),
            Resolution::NoDomain(_)
        ));
    }

    #[test]
    fn bad_domains_are_permanent() {
        let r = router("");
        let long = format!("{}.example", "a.".repeat(130));
        let label = format!("{}.example", "a".repeat(64));
        let cases: &[&str] = &[
            "",
            ".",
            "..",
            "a..example",
            "-a.example",
            "a b.example",
            "a_b.example",
            "exa\0mple",
            &long,
            &label,
            "[192.0.2.1",
            "[300.0.2.1]",
            "[IPv6:2001:db8::zz]",
            "[2001:db8::1]",
            "[tag:whatever]",
            "[0.0.0.0]",
            "[IPv6:::]",
            "[224.0.0.1]",
            "[255.255.255.255]",
        ];
        for d in cases {
            match r.resolve(d) {
                Resolution::NoDomain(why) => assert!(!why.is_empty()),
                other => panic!("{d:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn names_without_dns_servers_are_temporary() {
        let r = router("");
        match r.resolve("example.com") {
            Resolution::Temporary(why) => assert_eq!(why, "no DNS server configured"),
            other => panic!("{other:?}"),
        }
        let r = router(".example:relay.example.net\n");
        assert!(matches!(r.resolve("a.example"), Resolution::Temporary(_)));
    }

    #[test]
    fn from_control_reads_routes_and_servers() {
        let dir = std::env::temp_dir().join(format!("tern-route-control-{}", std::process::id()));
        let control = dir.join("control");
        std::fs::create_dir_all(&control).unwrap();
        std::fs::write(control.join("smtproutes"), ":192.0.2.1:2525\n").unwrap();
        std::fs::write(control.join("lmtproutes"), "lmtp.example:/run/lmtp\n").unwrap();
        std::fs::write(
            control.join("dnsservers"),
            "# local\n[127.0.0.1]:5353\n::1\n",
        )
        .unwrap();
        let r = Router::from_control(&Control::in_dir(&control)).unwrap();
        assert_eq!(
            r.servers(),
            [
                SocketAddr::from(([127, 0, 0, 1], 5353)),
                "[::1]:53".parse().unwrap()
            ]
        );
        assert_eq!(
            targets(r.resolve("any.example")),
            [pair("192.0.2.1", "192.0.2.1:2525")]
        );
        assert_eq!(
            r.resolve("lmtp.example"),
            Resolution::Lmtp(LmtpServer::Unix("/run/lmtp".into()))
        );
        std::fs::write(control.join("dnsservers"), "127.0.0.1\nlocalhost\n").unwrap();
        let e = Router::from_control(&Control::in_dir(&control)).unwrap_err();
        assert!(e.to_string().contains("control/dnsservers: line 2"), "{e}");
        std::fs::write(control.join("dnsservers"), "").unwrap();
        std::fs::write(control.join("smtproutes"), "x.example\n").unwrap();
        let e = Router::from_control(&Control::in_dir(&control)).unwrap_err();
        assert!(e.to_string().contains("control/smtproutes: line 1"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
