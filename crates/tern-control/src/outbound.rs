//! Line syntax of the outbound settings `dnsservers` and `tlsdestinations`.
//! tern-route builds the resolver and the policy table from these; the
//! settings table uses them so that `ternctl check` rejects a bad line with
//! its line number.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};

use tern_addr::{Charset, Domain};

use crate::error::{Error, ErrorKind};
use crate::read::list_lines;

/// The DNS port used when a `dnsservers` line gives none.
pub const DNS_PORT: u16 = 53;

/// Most entries in `dnsservers` (a resolver tries them in turn; more only
/// slow a failing lookup down).
pub const MAX_DNS_SERVERS: usize = 8;

/// Parses one `dnsservers` line: `IP` (IPv4 or IPv6, port 53) or
/// `[IP]:port` (`[IP]` alone also means port 53).
///
/// # Errors
/// A static hint: not an address, a port without brackets, port 0 or out
/// of range, an unspecified or multicast address.
pub fn parse_dns_server(line: &str) -> Result<SocketAddr, &'static str> {
    let (ip_text, port) = if let Some(rest) = line.strip_prefix('[') {
        let Some((inner, after)) = rest.split_once(']') else {
            return Err("'[' without ']'");
        };
        let port = if after.is_empty() {
            DNS_PORT
        } else if let Some(p) = after.strip_prefix(':') {
            if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err("port is not a number");
            }
            match p.parse::<u16>() {
                Ok(p) if p > 0 => p,
                _ => return Err("port out of range (1 to 65535)"),
            }
        } else {
            return Err("text after ']' (expected :port)");
        };
        (inner, port)
    } else {
        (line, DNS_PORT)
    };
    let ip: IpAddr = match ip_text.parse() {
        Ok(ip) => ip,
        Err(_) if !line.starts_with('[') && ip_text.matches(':').count() == 1 => {
            return Err("a port needs brackets: [IP]:port");
        }
        Err(_) => return Err("not an IPv4 or IPv6 address (expected IP or [IP]:port)"),
    };
    if ip.is_unspecified() {
        return Err("unspecified address (0.0.0.0 or ::)");
    }
    if ip.is_multicast() {
        return Err("multicast address");
    }
    Ok(SocketAddr::new(ip, port))
}

/// `control/dnsservers`: the DNS servers tern-remote asks, in order.
/// Empty means "the nameservers of /etc/resolv.conf".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DnsServers {
    servers: Vec<SocketAddr>,
    entries: Vec<String>,
}

impl DnsServers {
    /// Parses the file's text (blank lines and `#` comments skipped).
    ///
    /// # Errors
    /// The first malformed line, a server given twice, or more than
    /// [`MAX_DNS_SERVERS`] entries.
    pub fn parse(text: &str) -> Result<DnsServers, Error> {
        let mut d = DnsServers::default();
        for (n, line) in list_lines(text) {
            let addr =
                parse_dns_server(line).map_err(|h| Error::at_line(n, ErrorKind::Syntax(h)))?;
            if d.servers.contains(&addr) {
                return Err(Error::at_line(
                    n,
                    ErrorKind::Syntax("duplicate entry (an earlier line has the same server)"),
                ));
            }
            if d.servers.len() == MAX_DNS_SERVERS {
                return Err(Error::at_line(
                    n,
                    ErrorKind::Syntax("too many servers (at most 8)"),
                ));
            }
            d.servers.push(addr);
            d.entries.push(line.to_string());
        }
        Ok(d)
    }

    /// The servers, in file order.
    pub fn servers(&self) -> &[SocketAddr] {
        &self.servers
    }

    /// The entries as written, in file order.
    pub fn entries(&self) -> &[String] {
        &self.entries
    }
}

/// Outbound TLS policy for a destination domain (`control/tlsdestinations`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TlsPolicy {
    /// Never STARTTLS: plain text even when the server offers TLS.
    None,
    /// Opportunistic: STARTTLS when offered, certificate not checked; a
    /// failed handshake falls back to plain text. The default.
    May,
    /// STARTTLS required, certificate checked against `control/tlsca` and
    /// the MX or relay host name; anything less is a temporary failure,
    /// never plain text.
    Verify,
}

impl TlsPolicy {
    /// The keyword as written in the file: `none`, `may`, `verify`.
    pub fn as_str(self) -> &'static str {
        match self {
            TlsPolicy::None => "none",
            TlsPolicy::May => "may",
            TlsPolicy::Verify => "verify",
        }
    }

    /// Parses the keyword (ASCII case ignored).
    pub fn parse(word: &str) -> Option<TlsPolicy> {
        [TlsPolicy::None, TlsPolicy::May, TlsPolicy::Verify]
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(word))
    }
}

impl fmt::Display for TlsPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `control/tlsdestinations`: lines `domain:policy`, `.suffix:policy` (every
/// subdomain of `suffix`) and `:policy` (every other domain), where policy
/// is `none`, `may` or `verify`. Without a matching entry: `may`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsDestinations {
    exact: HashMap<String, TlsPolicy>,
    suffixes: HashMap<String, TlsPolicy>,
    default: Option<TlsPolicy>,
    entries: Vec<String>,
}

impl TlsDestinations {
    /// Parses the file's text (blank lines and `#` comments skipped).
    ///
    /// # Errors
    /// The first malformed line, or a key given twice.
    pub fn parse(text: &str) -> Result<TlsDestinations, Error> {
        let mut t = TlsDestinations::default();
        for (n, line) in list_lines(text) {
            let Some((key, word)) = line.rsplit_once(':') else {
                return Err(Error::at_line(
                    n,
                    ErrorKind::Syntax("no ':' (expected domain:none|may|verify)"),
                ));
            };
            let Some(policy) = TlsPolicy::parse(word) else {
                return Err(Error::at_line(
                    n,
                    ErrorKind::Syntax("policy is not none, may or verify"),
                ));
            };
            let bad = |source: tern_addr::Error| {
                Error::at_line(
                    n,
                    ErrorKind::BadAddress {
                        what: "domain",
                        source,
                    },
                )
            };
            let fresh = if key.is_empty() {
                t.default.replace(policy).is_none()
            } else if let Some(rest) = key.strip_prefix('.') {
                let d =
                    Domain::parse(rest.as_bytes(), Charset::Utf8).map_err(|e| bad(e.shifted(1)))?;
                t.suffixes
                    .insert(format!(".{}", d.to_lowercase_key()), policy)
                    .is_none()
            } else {
                let d = Domain::parse(key.as_bytes(), Charset::Utf8).map_err(bad)?;
                t.exact.insert(d.to_lowercase_key(), policy).is_none()
            };
            if !fresh {
                return Err(Error::at_line(
                    n,
                    ErrorKind::Syntax("duplicate entry (an earlier line has the same domain)"),
                ));
            }
            t.entries.push(line.to_string());
        }
        Ok(t)
    }

    /// The policy for mail to `domain`: the exact entry, else the longest
    /// matching `.suffix`, else the `:policy` default, else
    /// [`TlsPolicy::May`]. ASCII case is ignored; a trailing dot too.
    pub fn lookup(&self, domain: &str) -> TlsPolicy {
        let d = domain
            .strip_suffix('.')
            .unwrap_or(domain)
            .to_ascii_lowercase();
        if let Some(p) = self.exact.get(&d) {
            return *p;
        }
        for (i, b) in d.bytes().enumerate() {
            if b == b'.'
                && let Some(p) = self.suffixes.get(&d[i..])
            {
                return *p;
            }
        }
        self.default.unwrap_or(TlsPolicy::May)
    }

    /// The entries as written, in file order.
    pub fn entries(&self) -> &[String] {
        &self.entries
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_server_lines() {
        let good: &[(&str, &str)] = &[
            ("192.0.2.53", "192.0.2.53:53"),
            ("[192.0.2.53]", "192.0.2.53:53"),
            ("[127.0.0.1]:5353", "127.0.0.1:5353"),
            ("::1", "[::1]:53"),
            ("[::1]:65535", "[::1]:65535"),
            ("[2001:db8::1]", "[2001:db8::1]:53"),
        ];
        for (line, want) in good {
            assert_eq!(parse_dns_server(line).unwrap().to_string(), *want, "{line}");
        }
        let bad: &[(&str, &str)] = &[
            ("", "not an IPv4"),
            ("dns.example", "not an IPv4"),
            ("127.0.0.1:53", "a port needs brackets"),
            ("[127.0.0.1", "'[' without ']'"),
            ("[127.0.0.1]53", "text after ']'"),
            ("[127.0.0.1]:", "port is not a number"),
            ("[127.0.0.1]:x", "port is not a number"),
            ("[127.0.0.1]:0", "port out of range"),
            ("[127.0.0.1]:65536", "port out of range"),
            ("[127.0.0.1]:123456", "port is not a number"),
            ("[dns.example]:53", "not an IPv4"),
            ("0.0.0.0", "unspecified"),
            ("[::]:53", "unspecified"),
            ("224.0.0.251", "multicast"),
            ("fe80::1%eth0", "not an IPv4"),
            (" 127.0.0.1", "not an IPv4"),
            ("127.0.0.1 # c", "not an IPv4"),
        ];
        for (line, want) in bad {
            let e = parse_dns_server(line).unwrap_err();
            assert!(e.starts_with(want), "{line:?}: {e}");
        }
    }

    #[test]
    fn dns_servers_file() {
        let d = DnsServers::parse("# c\n127.0.0.1\n\n[::1]:5353 \n").unwrap();
        assert_eq!(d.servers().len(), 2);
        assert_eq!(d.entries(), &["127.0.0.1", "[::1]:5353"]);
        let e = DnsServers::parse("127.0.0.1\n[127.0.0.1]:53\n").unwrap_err();
        assert_eq!(e.line(), Some(2));
        assert!(e.to_string().contains("duplicate"), "{e}");
        let e = DnsServers::parse("# c\nnope\n").unwrap_err();
        assert_eq!(e.line(), Some(2));
        let many: String = (1..=9).map(|i| format!("127.0.0.{i}\n")).collect();
        let e = DnsServers::parse(&many).unwrap_err();
        assert_eq!(e.line(), Some(9));
        assert!(e.to_string().contains("too many"), "{e}");
    }

    #[test]
    fn tls_destinations_bad_lines() {
        let cases: &[(&str, usize, &str)] = &[
            ("example.com\n", 1, "no ':'"),
            ("example.com:\n", 1, "policy is not"),
            ("example.com:must\n", 1, "policy is not"),
            ("example.com:verify \tx\n", 1, "policy is not"),
            ("bad_dom:may\n", 1, "bad domain"),
            (".:may\n", 1, "bad domain: empty"),
            ("..example.com:may\n", 1, "bad domain"),
            ("a:b:may\n", 1, "bad domain"),
            ("ok.example:none\nOK.example:may\n", 2, "duplicate entry"),
            (".ex:none\n.EX:may\n", 2, "duplicate entry"),
            (":may\n# c\n:verify\n", 3, "duplicate entry"),
        ];
        for (text, line, msg) in cases {
            let e = TlsDestinations::parse(text).expect_err(text);
            assert_eq!(e.line(), Some(*line), "{text:?}");
            assert!(e.kind().to_string().starts_with(msg), "{text:?}: {e}");
        }
    }

    #[test]
    fn tls_destinations_lookup() {
        let t = TlsDestinations::parse(
            "bank.example:verify\n.example.org:none\n.b.example.org:VERIFY\nb.example.org:may\n",
        )
        .unwrap();
        assert_eq!(t.lookup("BANK.example"), TlsPolicy::Verify);
        assert_eq!(t.lookup("bank.example."), TlsPolicy::Verify);
        assert_eq!(t.lookup("x.bank.example"), TlsPolicy::May);
        assert_eq!(t.lookup("a.example.org"), TlsPolicy::None);
        assert_eq!(t.lookup("example.org"), TlsPolicy::May);
        assert_eq!(t.lookup("a.b.example.org"), TlsPolicy::Verify);
        assert_eq!(t.lookup("b.example.org"), TlsPolicy::May);
        assert_eq!(t.lookup("other.net"), TlsPolicy::May);
        let d = TlsDestinations::parse(":none\nmx.example:may\n").unwrap();
        assert_eq!(d.lookup("other.net"), TlsPolicy::None);
        assert_eq!(d.lookup("mx.example"), TlsPolicy::May);
        assert_eq!(d.entries(), &[":none", "mx.example:may"]);
        assert_eq!(TlsDestinations::default().lookup("x.y"), TlsPolicy::May);
    }

    #[test]
    fn settings_check_the_lines() {
        use crate::settings::{Kind, Value, parse_value};
        let e = parse_value(Kind::DnsServers, "127.0.0.1\n# c\n127.0.0.1:53\n").unwrap_err();
        assert_eq!(e.line(), Some(3));
        let e = parse_value(Kind::TlsDestinations, "\nexample.com:tls\n").unwrap_err();
        assert_eq!(e.line(), Some(2));
        assert_eq!(
            parse_value(Kind::TlsDestinations, "# c\n:verify\n").unwrap(),
            Some(Value::Lines(vec![":verify".into()]))
        );
        assert_eq!(parse_value(Kind::DnsServers, "# none\n").unwrap(), None);
    }
}
