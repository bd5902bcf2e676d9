//! Structured control files: domain lists, `virtualdomains`, `smtproutes`,
//! `lmtproutes`,
//! `badmailfrom`. Each parser takes the file's text (no I/O); errors carry
//! the 1-based line number and a static hint.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use tern_addr::{Charset, Domain, Mailbox};

use crate::error::{Error, ErrorKind};
use crate::read::list_lines;

fn bad_domain(line: usize, source: tern_addr::Error) -> Error {
    Error::at_line(
        line,
        ErrorKind::BadAddress {
            what: "domain",
            source,
        },
    )
}

/// Calls `f` with each dot-suffix of `domain`, longest first:
/// `a.b.c` gives `.b.c`, then `.c`.
fn for_each_suffix<'a, T>(domain: &'a str, mut f: impl FnMut(&'a str) -> Option<T>) -> Option<T> {
    for (i, b) in domain.bytes().enumerate() {
        if b == b'.'
            && let Some(t) = f(&domain[i..])
        {
            return Some(t);
        }
    }
    None
}

/// A list of domains (`locals`, `rcpthosts`, `morercpthosts`,
/// `percenthack`): one per line; where the setting allows it, `.suffix`
/// entries match every subdomain of `suffix`. Matching ignores ASCII case.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DomainList {
    exact: HashSet<String>,
    suffixes: HashSet<String>,
    entries: Vec<String>,
}

impl DomainList {
    /// Parses a list file's text. `allow_suffixes` admits `.suffix` lines.
    ///
    /// # Errors
    /// The first malformed line.
    pub fn parse(text: &str, allow_suffixes: bool) -> Result<DomainList, Error> {
        let mut list = DomainList::default();
        for (n, line) in list_lines(text) {
            if let Some(rest) = line.strip_prefix('.') {
                if !allow_suffixes {
                    return Err(Error::at_line(
                        n,
                        ErrorKind::Syntax("'.suffix' entries are not allowed in this file"),
                    ));
                }
                let d = Domain::parse(rest.as_bytes(), Charset::Utf8)
                    .map_err(|e| bad_domain(n, e.shifted(1)))?;
                list.suffixes.insert(format!(".{}", d.to_lowercase_key()));
            } else {
                let d =
                    Domain::parse(line.as_bytes(), Charset::Utf8).map_err(|e| bad_domain(n, e))?;
                list.exact.insert(d.to_lowercase_key());
            }
            list.entries.push(line.to_string());
        }
        Ok(list)
    }

    /// A list of exactly these domains.
    pub fn from_domains<'a>(domains: impl IntoIterator<Item = &'a Domain>) -> DomainList {
        let mut list = DomainList::default();
        for d in domains {
            list.exact.insert(d.to_lowercase_key());
            list.entries.push(d.to_string());
        }
        list
    }

    /// True when `domain` is listed, exactly or under a `.suffix` entry.
    pub fn contains(&self, domain: &str) -> bool {
        let d = domain.to_ascii_lowercase();
        self.exact.contains(&d)
            || for_each_suffix(&d, |s| self.suffixes.contains(s).then_some(())).is_some()
    }

    /// The entries as written, in file order.
    pub fn entries(&self) -> &[String] {
        &self.entries
    }

    /// True when the list has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Characters allowed in a `virtualdomains` prepend (local-part text).
fn check_prepend(n: usize, prepend: &str) -> Result<(), Error> {
    let ok = prepend.len() <= tern_addr::MAX_LOCAL_PART
        && prepend.bytes().all(|b| {
            b.is_ascii_alphanumeric() || b >= 0x80 || b"!#$%&'*+-/=?^_`{|}~.".contains(&b)
        });
    if ok {
        Ok(())
    } else {
        Err(Error::at_line(
            n,
            ErrorKind::Syntax("prepend part holds a character not allowed in a local part"),
        ))
    }
}

/// `control/virtualdomains`: lines `user@domain:prepend`, `domain:prepend`,
/// `.suffix:prepend` or `:prepend` (every domain not otherwise matched).
/// An empty prepend (`domain:`) is an exception: that domain is not virtual.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VirtualDomains {
    addresses: HashMap<String, String>,
    domains: HashMap<String, String>,
    suffixes: HashMap<String, String>,
    default: Option<String>,
    entries: Vec<String>,
}

impl VirtualDomains {
    /// Parses the file's text.
    ///
    /// # Errors
    /// The first malformed line, or a key given twice (qmail would silently
    /// use one of them).
    pub fn parse(text: &str) -> Result<VirtualDomains, Error> {
        let mut vd = VirtualDomains::default();
        for (n, line) in list_lines(text) {
            let Some((key, prepend)) = line.split_once(':') else {
                return Err(Error::at_line(
                    n,
                    ErrorKind::Syntax("no ':' (expected domain:prepend)"),
                ));
            };
            check_prepend(n, prepend)?;
            let prepend = prepend.to_string();
            let fresh = if key.is_empty() {
                vd.default.replace(prepend).is_none()
            } else if key.contains('@') {
                let m = Mailbox::parse(key.as_bytes(), Charset::Utf8).map_err(|source| {
                    Error::at_line(
                        n,
                        ErrorKind::BadAddress {
                            what: "address",
                            source,
                        },
                    )
                })?;
                let k = format!(
                    "{}@{}",
                    m.local.to_lowercase_key(),
                    m.domain.to_lowercase_key()
                );
                vd.addresses.insert(k, prepend).is_none()
            } else if let Some(rest) = key.strip_prefix('.') {
                let d = Domain::parse(rest.as_bytes(), Charset::Utf8)
                    .map_err(|e| bad_domain(n, e.shifted(1)))?;
                vd.suffixes
                    .insert(format!(".{}", d.to_lowercase_key()), prepend)
                    .is_none()
            } else {
                let d =
                    Domain::parse(key.as_bytes(), Charset::Utf8).map_err(|e| bad_domain(n, e))?;
                vd.domains.insert(d.to_lowercase_key(), prepend).is_none()
            };
            if !fresh {
                return Err(Error::at_line(
                    n,
                    ErrorKind::Syntax("duplicate entry (an earlier line has the same key)"),
                ));
            }
            vd.entries.push(line.to_string());
        }
        Ok(vd)
    }

    /// The prepend for `local@domain`, trying (as qmail does) the whole
    /// address, then the domain, then each `.suffix` from the longest, then
    /// the `:prepend` default. `None`: not a virtual domain. `Some("")`: an
    /// explicit exception (also not virtual). Case-insensitive.
    pub fn lookup(&self, local: &str, domain: &str) -> Option<&str> {
        let d = domain.to_ascii_lowercase();
        let addr = format!("{}@{}", local.to_ascii_lowercase(), d);
        self.addresses
            .get(&addr)
            .or_else(|| self.domains.get(&d))
            .or_else(|| for_each_suffix(&d, |s| self.suffixes.get(s)))
            .or(self.default.as_ref())
            .map(String::as_str)
    }

    /// The entries as written, in file order.
    pub fn entries(&self) -> &[String] {
        &self.entries
    }
}

/// Where a routed relay is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayHost {
    /// A host name (resolved by address records, not MX).
    Name(Domain),
    /// An IP address (`1.2.3.4`, `[1.2.3.4]` or `[2001:db8::1]`).
    Ip(IpAddr),
}

/// An `smtproutes` relay: host and port (25 unless given).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relay {
    /// The relay host.
    pub host: RelayHost,
    /// The TCP port.
    pub port: u16,
}

impl fmt::Display for Relay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            RelayHost::Name(d) => write!(f, "{d}")?,
            RelayHost::Ip(IpAddr::V4(ip)) => write!(f, "{ip}")?,
            RelayHost::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]")?,
        }
        if self.port != 25 {
            write!(f, ":{}", self.port)?;
        }
        Ok(())
    }
}

fn parse_port(n: usize, s: &str) -> Result<u16, Error> {
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Error::at_line(n, ErrorKind::Syntax("port is not a number")));
    }
    match s.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(Error::at_line(
            n,
            ErrorKind::OutOfRange {
                min: 1,
                max: u16::MAX as u64,
            },
        )),
    }
}

fn parse_relay(n: usize, spec: &str) -> Result<Option<Relay>, Error> {
    if spec.is_empty() {
        return Ok(None);
    }
    let (host, port) = if let Some(rest) = spec.strip_prefix('[') {
        let Some((inner, after)) = rest.split_once(']') else {
            return Err(Error::at_line(
                n,
                ErrorKind::Syntax("'[' without ']' in relay"),
            ));
        };
        let inner6 = inner
            .get(..5)
            .filter(|t| t.eq_ignore_ascii_case("IPv6:"))
            .map_or(inner, |_| &inner[5..]);
        let ip = if let Ok(v4) = inner.parse::<Ipv4Addr>() {
            IpAddr::V4(v4)
        } else if let Ok(v6) = inner6.parse::<Ipv6Addr>() {
            IpAddr::V6(v6)
        } else {
            return Err(Error::at_line(
                n,
                ErrorKind::Syntax("relay in brackets is not an IPv4 or IPv6 address"),
            ));
        };
        let port = match after {
            "" => 25,
            p => match p.strip_prefix(':') {
                Some(p) => parse_port(n, p)?,
                None => {
                    return Err(Error::at_line(
                        n,
                        ErrorKind::Syntax("text after ']' in relay"),
                    ));
                }
            },
        };
        (RelayHost::Ip(ip), port)
    } else {
        if spec.matches(':').count() > 1 {
            return Err(Error::at_line(
                n,
                ErrorKind::Syntax("too many ':' in relay (IPv6 relays need [brackets])"),
            ));
        }
        let (h, port) = match spec.split_once(':') {
            None => (spec, 25),
            Some((h, p)) => (h, parse_port(n, p)?),
        };
        let host = if let Ok(v4) = h.parse::<Ipv4Addr>() {
            RelayHost::Ip(IpAddr::V4(v4))
        } else {
            let d = Domain::parse(h.as_bytes(), Charset::Ascii).map_err(|source| {
                Error::at_line(
                    n,
                    ErrorKind::BadAddress {
                        what: "relay host",
                        source,
                    },
                )
            })?;
            RelayHost::Name(d)
        };
        (host, port)
    };
    Ok(Some(Relay { host, port }))
}

/// `control/smtproutes`: lines `domain:relay[:port]`, `.suffix:relay`,
/// `:relay` (default for every domain); an empty relay (`domain:`) means
/// "use MX as usual". IPv6 relays are written in brackets, `[2001:db8::1]:2525`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SmtpRoutes(DomainTable<Relay>);

impl SmtpRoutes {
    /// Parses the file's text.
    ///
    /// # Errors
    /// The first malformed line, or a domain given twice.
    pub fn parse(text: &str) -> Result<SmtpRoutes, Error> {
        DomainTable::parse(text, "no ':' (expected domain:relay[:port])", parse_relay)
            .map(SmtpRoutes)
    }

    /// The relay for mail to `domain`: the exact entry, else the longest
    /// matching `.suffix`, else the default. `None`: deliver by MX as usual
    /// (no entry, or an entry with an empty relay). Case-insensitive.
    pub fn lookup(&self, domain: &str) -> Option<&Relay> {
        self.0.lookup(domain)
    }

    /// The entries as written, in file order.
    pub fn entries(&self) -> &[String] {
        &self.0.entries
    }
}

/// A table of `domain:value`, `.suffix:value` and `:value` (default) lines,
/// where an empty value means "no entry here" (smtproutes, lmtproutes).
#[derive(Debug, Clone, PartialEq, Eq)]
struct DomainTable<T> {
    exact: HashMap<String, Option<T>>,
    suffixes: HashMap<String, Option<T>>,
    default: Option<Option<T>>,
    entries: Vec<String>,
}

impl<T> Default for DomainTable<T> {
    fn default() -> Self {
        DomainTable {
            exact: HashMap::new(),
            suffixes: HashMap::new(),
            default: None,
            entries: Vec::new(),
        }
    }
}

impl<T> DomainTable<T> {
    /// Parses the lines; `value` parses what follows the first `:` (line
    /// number, text); `no_colon` is the error for a line without one.
    fn parse(
        text: &str,
        no_colon: &'static str,
        value: impl Fn(usize, &str) -> Result<Option<T>, Error>,
    ) -> Result<DomainTable<T>, Error> {
        let mut r = DomainTable::default();
        for (n, line) in list_lines(text) {
            let Some((key, spec)) = line.split_once(':') else {
                return Err(Error::at_line(n, ErrorKind::Syntax(no_colon)));
            };
            let v = value(n, spec)?;
            let fresh = if key.is_empty() {
                r.default.replace(v).is_none()
            } else if let Some(rest) = key.strip_prefix('.') {
                let d = Domain::parse(rest.as_bytes(), Charset::Utf8)
                    .map_err(|e| bad_domain(n, e.shifted(1)))?;
                r.suffixes
                    .insert(format!(".{}", d.to_lowercase_key()), v)
                    .is_none()
            } else {
                let d =
                    Domain::parse(key.as_bytes(), Charset::Utf8).map_err(|e| bad_domain(n, e))?;
                r.exact.insert(d.to_lowercase_key(), v).is_none()
            };
            if !fresh {
                return Err(Error::at_line(
                    n,
                    ErrorKind::Syntax("duplicate entry (an earlier line has the same domain)"),
                ));
            }
            r.entries.push(line.to_string());
        }
        Ok(r)
    }

    /// The exact entry, else the longest matching `.suffix`, else the
    /// default; `None` also for an entry with an empty value.
    fn lookup(&self, domain: &str) -> Option<&T> {
        let d = domain.to_ascii_lowercase();
        self.exact
            .get(&d)
            .or_else(|| for_each_suffix(&d, |s| self.suffixes.get(s)))
            .or(self.default.as_ref())
            .and_then(Option::as_ref)
    }
}

/// Longest Unix socket path an `lmtproutes` line may name, in bytes: the
/// size of `sun_path` on Linux (108) less its terminating NUL.
pub const MAX_SOCKET_PATH: usize = 107;

/// Where an `lmtproutes` entry sends mail: an LMTP server on TCP (an IP
/// address and a port, no DNS) or on a Unix socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LmtpServer {
    /// An IP address and port.
    Tcp(std::net::SocketAddr),
    /// An absolute path to a Unix stream socket.
    Unix(std::path::PathBuf),
}

impl fmt::Display for LmtpServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LmtpServer::Tcp(a) => write!(f, "{a}"),
            LmtpServer::Unix(p) => write!(f, "{}", p.display()),
        }
    }
}

fn parse_lmtp_server(n: usize, spec: &str) -> Result<Option<LmtpServer>, Error> {
    if spec.is_empty() {
        return Ok(None);
    }
    if spec.starts_with('/') {
        if spec.len() > MAX_SOCKET_PATH {
            return Err(Error::at_line(
                n,
                ErrorKind::Syntax("socket path longer than 107 bytes"),
            ));
        }
        if spec.chars().any(char::is_control) {
            return Err(Error::at_line(
                n,
                ErrorKind::Syntax("control character in socket path"),
            ));
        }
        if spec.ends_with('/') || spec.split('/').any(|c| c == "." || c == "..") {
            return Err(Error::at_line(
                n,
                ErrorKind::Syntax("socket path ends in '/' or holds '.' or '..'"),
            ));
        }
        return Ok(Some(LmtpServer::Unix(std::path::PathBuf::from(spec))));
    }
    let Some(relay) = parse_relay(n, spec)? else {
        return Ok(None);
    };
    let RelayHost::Ip(ip) = relay.host else {
        return Err(Error::at_line(
            n,
            ErrorKind::Syntax("LMTP server is not an IP address or /socket path (no DNS)"),
        ));
    };
    // parse_relay fills in 25; LMTP must not use port 25 (RFC 2033
    // section 5) and has no port of its own: the port is required
    let has_port = if spec.starts_with('[') {
        spec.rsplit_once(']')
            .is_some_and(|(_, p)| p.starts_with(':'))
    } else {
        spec.contains(':')
    };
    if !has_port {
        return Err(Error::at_line(
            n,
            ErrorKind::Syntax("LMTP over TCP needs a port (host:port)"),
        ));
    }
    if relay.port == 25 {
        return Err(Error::at_line(
            n,
            ErrorKind::Syntax("LMTP must not use port 25 (RFC 2033)"),
        ));
    }
    Ok(Some(LmtpServer::Tcp(std::net::SocketAddr::new(
        ip, relay.port,
    ))))
}

/// `control/lmtproutes`: which domains go to an LMTP server (RFC 2033),
/// in smtproutes' syntax: `domain:server`, `.suffix:server`, `:server`
/// (default). The server is `IP:port` (`[IPv6]:port`) or an absolute Unix
/// socket path (`/run/dovecot/lmtp`); an empty server (`domain:`) means
/// "not by LMTP" (smtproutes and MX as usual). Host names are refused: no
/// DNS is asked for LMTP routes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LmtpRoutes(DomainTable<LmtpServer>);

impl LmtpRoutes {
    /// Parses the file's text.
    ///
    /// # Errors
    /// The first malformed line, or a domain given twice.
    pub fn parse(text: &str) -> Result<LmtpRoutes, Error> {
        DomainTable::parse(
            text,
            "no ':' (expected domain:ip:port or domain:/socket)",
            parse_lmtp_server,
        )
        .map(LmtpRoutes)
    }

    /// The LMTP server for mail to `domain`: the exact entry, else the
    /// longest matching `.suffix`, else the default. `None`: not by LMTP
    /// (no entry, or an entry with an empty server). Case-insensitive.
    pub fn lookup(&self, domain: &str) -> Option<&LmtpServer> {
        self.0.lookup(domain)
    }

    /// The entries as written, in file order.
    pub fn entries(&self) -> &[String] {
        &self.0.entries
    }
}

/// `control/badmailfrom`: envelope senders refused, as exact addresses or
/// `@domain` (every sender at that domain). Case-insensitive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BadMailFrom {
    addresses: HashSet<String>,
    domains: HashSet<String>,
    entries: Vec<String>,
}

impl BadMailFrom {
    /// Parses the file's text.
    ///
    /// # Errors
    /// The first line that is neither a mailbox nor `@domain`.
    pub fn parse(text: &str) -> Result<BadMailFrom, Error> {
        let mut b = BadMailFrom::default();
        for (n, line) in list_lines(text) {
            if let Some(rest) = line.strip_prefix('@') {
                let d = Domain::parse(rest.as_bytes(), Charset::Utf8)
                    .map_err(|e| bad_domain(n, e.shifted(1)))?;
                b.domains.insert(d.to_lowercase_key());
            } else {
                Mailbox::parse(line.as_bytes(), Charset::Utf8).map_err(|source| {
                    Error::at_line(
                        n,
                        ErrorKind::BadAddress {
                            what: "address (expected user@domain or @domain)",
                            source,
                        },
                    )
                })?;
                b.addresses.insert(line.to_ascii_lowercase());
            }
            b.entries.push(line.to_string());
        }
        Ok(b)
    }

    /// True when `sender` is listed, exactly or by its domain. The empty
    /// (bounce) sender never matches.
    pub fn matches(&self, sender: &[u8]) -> bool {
        if sender.is_empty() {
            return false;
        }
        let s = String::from_utf8_lossy(sender).to_ascii_lowercase();
        if self.addresses.contains(&s) {
            return true;
        }
        match s.rfind('@') {
            Some(at) => self.domains.contains(&s[at + 1..]),
            None => false,
        }
    }

    /// The entries as written, in file order.
    pub fn entries(&self) -> &[String] {
        &self.entries
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err_line(r: Result<impl fmt::Debug, Error>) -> (usize, String) {
        let e = r.expect_err("should be rejected");
        (e.line().expect("line number"), e.kind().to_string())
    }

    #[test]
    fn domain_list_bad_lines() {
        let cases: &[(&str, bool, usize, &str)] = &[
            (
                "ok.example\nbad_domain\n",
                false,
                2,
                "bad domain: character not allowed",
            ),
            (
                "# c\n\n.example.com\n",
                false,
                3,
                "'.suffix' entries are not allowed",
            ),
            ("..example.com\n", true, 1, "bad domain: empty domain label"),
            ("exa mple.com", true, 1, "bad domain: character not allowed"),
            (" example.com", true, 1, "bad domain: character not allowed"),
        ];
        for (text, suffixes, line, msg) in cases {
            let (l, m) = err_line(DomainList::parse(text, *suffixes));
            assert_eq!(l, *line, "{text:?}");
            assert!(m.starts_with(msg), "{text:?}: {m}");
        }
    }

    #[test]
    fn domain_list_matching() {
        let l = DomainList::parse("Example.COM\n# comment\n.sub.example.org\n", true).unwrap();
        assert!(l.contains("example.com"));
        assert!(l.contains("EXAMPLE.com"));
        assert!(!l.contains("a.example.com"));
        assert!(l.contains("a.sub.example.org"));
        assert!(l.contains("x.y.sub.example.org"));
        assert!(!l.contains("sub.example.org"));
        assert!(!l.contains("badsub.example.org"));
        assert_eq!(l.entries(), &["Example.COM", ".sub.example.org"]);
        assert!(DomainList::parse("", true).unwrap().is_empty());
    }

    #[test]
    fn virtualdomains_bad_lines() {
        let cases: &[(&str, usize, &str)] = &[
            ("example.com\n", 1, "no ':'"),
            ("a.example:x\nexample.com:a b\n", 2, "prepend part holds"),
            ("bad_dom:x\n", 1, "bad domain"),
            ("us er@example.com:x\n", 1, "bad address"),
            (".:x\n", 1, "bad domain: empty"),
            ("example.com:a\nEXAMPLE.com:b\n", 2, "duplicate entry"),
            (":a\n:b\n", 2, "duplicate entry"),
        ];
        for (text, line, msg) in cases {
            let (l, m) = err_line(VirtualDomains::parse(text));
            assert_eq!(l, *line, "{text:?}");
            assert!(m.starts_with(msg), "{text:?}: {m}");
        }
    }

    #[test]
    fn virtualdomains_lookup_order() {
        let vd = VirtualDomains::parse(
            "example.com:ex\njoe@example.com:joe-special\n.example.org:org\n.b.example.org:borg\nlocal.example.org:\n:catchall\n",
        )
        .unwrap();
        assert_eq!(vd.lookup("Joe", "Example.com"), Some("joe-special"));
        assert_eq!(vd.lookup("ann", "example.com"), Some("ex"));
        assert_eq!(vd.lookup("x", "a.b.example.org"), Some("borg"));
        assert_eq!(vd.lookup("x", "a.example.org"), Some("org"));
        assert_eq!(vd.lookup("x", "local.example.org"), Some(""));
        assert_eq!(vd.lookup("x", "other.net"), Some("catchall"));
        let none = VirtualDomains::parse("example.com:ex\n").unwrap();
        assert_eq!(none.lookup("x", "other.net"), None);
    }

    #[test]
    fn smtproutes_bad_lines() {
        let cases: &[(&str, usize, &str)] = &[
            ("example.com\n", 1, "no ':'"),
            ("example.com:relay:x\n", 1, "port is not a number"),
            ("example.com:relay:0\n", 1, "number out of range"),
            ("example.com:relay:65536\n", 1, "number out of range"),
            ("example.com:relay:25:26\n", 1, "too many ':'"),
            ("example.com:[::1\n", 1, "'[' without ']'"),
            (
                "example.com:[relay.example]\n",
                1,
                "relay in brackets is not",
            ),
            ("example.com:[::1]x\n", 1, "text after ']'"),
            ("example.com:::1\n", 1, "too many ':'"),
            ("example.com::25\n", 1, "bad relay host"),
            ("example.com:bad_host\n", 1, "bad relay host"),
            ("bad_dom:relay\n", 1, "bad domain"),
            ("a.example:r\nA.example:s\n", 2, "duplicate entry"),
        ];
        for (text, line, msg) in cases {
            let (l, m) = err_line(SmtpRoutes::parse(text));
            assert_eq!(l, *line, "{text:?}");
            assert!(m.starts_with(msg), "{text:?}: {m}");
        }
    }

    #[test]
    fn smtproutes_lookup() {
        let r = SmtpRoutes::parse(
            "example.com:relay.example.net\n\
             .example.org:[2001:db8::1]:2525\n\
             direct.example.org:\n\
             v4.example:192.0.2.1:587\n\
             v4b.example:[IPv6:::1]\n\
             :smarthost.example.net:26\n",
        )
        .unwrap();
        let show = |d: &str| r.lookup(d).map(|x| x.to_string());
        assert_eq!(show("EXAMPLE.com").as_deref(), Some("relay.example.net"));
        assert_eq!(show("a.example.org").as_deref(), Some("[2001:db8::1]:2525"));
        assert_eq!(show("direct.example.org"), None);
        assert_eq!(show("v4.example").as_deref(), Some("192.0.2.1:587"));
        assert_eq!(show("v4b.example").as_deref(), Some("[::1]"));
        assert_eq!(
            show("else.where").as_deref(),
            Some("smarthost.example.net:26")
        );
        let plain = SmtpRoutes::parse("example.com:relay\n").unwrap();
        assert_eq!(plain.lookup("other.example"), None);
        assert_eq!(plain.lookup("example.com").map(|r| r.port), Some(25));
    }

    #[test]
    fn lmtproutes_bad_lines() {
        let long = format!("example.com:/{}\n", "s".repeat(MAX_SOCKET_PATH));
        let cases: &[(&str, usize, &str)] = &[
            ("example.com\n", 1, "no ':'"),
            ("example.com:127.0.0.1\n", 1, "LMTP over TCP needs a port"),
            ("example.com:[::1]\n", 1, "LMTP over TCP needs a port"),
            ("example.com:127.0.0.1:25\n", 1, "LMTP must not use port 25"),
            ("example.com:[::1]:25\n", 1, "LMTP must not use port 25"),
            (
                "example.com:lmtp.example:24\n",
                1,
                "LMTP server is not an IP",
            ),
            ("example.com:localhost:24\n", 1, "LMTP server is not an IP"),
            ("example.com:127.0.0.1:x\n", 1, "port is not a number"),
            ("example.com:127.0.0.1:0\n", 1, "number out of range"),
            ("example.com:127.0.0.1:70000\n", 1, "number out of range"),
            ("example.com:::1:24\n", 1, "too many ':'"),
            ("example.com:[::1:24\n", 1, "'[' without ']'"),
            ("example.com:relative/sock\n", 1, "bad relay host"),
            (&long, 1, "socket path longer"),
            ("example.com:/run/a\tb\n", 1, "control character"),
            ("example.com:/run/../etc/sock\n", 1, "socket path ends in"),
            ("example.com:/run/lmtp/\n", 1, "socket path ends in"),
            ("bad_dom:/run/lmtp\n", 1, "bad domain"),
            (".:/run/lmtp\n", 1, "bad domain"),
            ("a.example:/x\nA.example:/y\n", 2, "duplicate entry"),
            (":/x\n:127.0.0.1:24\n", 2, "duplicate entry"),
        ];
        for (text, line, msg) in cases {
            let (l, m) = err_line(LmtpRoutes::parse(text));
            assert_eq!(l, *line, "{text:?}");
            assert!(m.starts_with(msg), "{text:?}: {m}");
        }
    }

    #[test]
    fn lmtproutes_lookup() {
        let max = format!("/{}", "s".repeat(MAX_SOCKET_PATH - 1));
        let r = LmtpRoutes::parse(&format!(
            "Example.com:127.0.0.1:2424\n\
             .example.org:[::1]:24\n\
             smtp.example.org:\n\
             sock.example:/run/dovecot/lmtp\n\
             odd.example:/run/a:b\n\
             max.example:{max}\n\
             :[IPv6:::1]:2003\n"
        ))
        .unwrap();
        let show = |d: &str| r.lookup(d).map(|x| x.to_string());
        assert_eq!(show("EXAMPLE.COM").as_deref(), Some("127.0.0.1:2424"));
        assert_eq!(show("a.b.example.org").as_deref(), Some("[::1]:24"));
        assert_eq!(show("smtp.example.org"), None);
        assert_eq!(show("sock.example").as_deref(), Some("/run/dovecot/lmtp"));
        assert_eq!(show("odd.example").as_deref(), Some("/run/a:b"));
        assert_eq!(show("max.example"), Some(max));
        assert_eq!(show("else.where").as_deref(), Some("[::1]:2003"));
        let plain = LmtpRoutes::parse("example.com:/s\n").unwrap();
        assert_eq!(plain.lookup("other.example"), None);
        assert_eq!(plain.lookup("a.example.com"), None);
        assert!(LmtpRoutes::parse("# none\n").unwrap().entries().is_empty());
    }

    #[test]
    fn badmailfrom_bad_lines() {
        let cases: &[(&str, usize, &str)] = &[
            ("spammer\n", 1, "bad address"),
            ("@\n", 1, "bad domain: empty"),
            ("ok@example.com\n@bad_dom\n", 2, "bad domain"),
        ];
        for (text, line, msg) in cases {
            let (l, m) = err_line(BadMailFrom::parse(text));
            assert_eq!(l, *line, "{text:?}");
            assert!(m.starts_with(msg), "{text:?}: {m}");
        }
    }

    #[test]
    fn badmailfrom_matching() {
        let b = BadMailFrom::parse("Spammer@Example.com\n@junk.example\n").unwrap();
        assert!(b.matches(b"spammer@example.COM"));
        assert!(!b.matches(b"other@example.com"));
        assert!(b.matches(b"anyone@JUNK.example"));
        assert!(!b.matches(b"anyone@sub.junk.example"));
        assert!(!b.matches(b""));
        assert!(!b.matches(b"junk.example"));
    }
}
