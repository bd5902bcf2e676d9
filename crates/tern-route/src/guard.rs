//! Where remote delivery may connect when the address came from DNS (or an
//! address literal): never back to this host, and not into private
//! networks unless the site allows it (issue: an MX at 127.0.0.9 looped a
//! message through the shipped rules; `user@[10.1.2.3]` reached internal
//! servers). `smtproutes` relays are used as written: they are the
//! administrator's own choice.
//!
//! *This host* is qmail's `ipme`: every address of a local interface, plus
//! `control/moreipme` (addresses this host is reached by through NAT or a
//! balancer). *Private* is loopback, unspecified, link-local, RFC 1918,
//! CGNAT (100.64/10), ULA (fc00::/7) and the IPv4-mapped forms of these;
//! `control/remoteprivate` lists networks (`10.0.0.0/8`, `fd00::/8`, a
//! bare address) where they are allowed.

use std::net::IpAddr;

/// Most lines read from `moreipme` or `remoteprivate`.
pub const MAX_LINES: usize = 1000;

/// The addresses of this host and the private networks remote delivery
/// may use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Guard {
    me: Vec<IpAddr>,
    allowed: Vec<(IpAddr, u8)>,
}

/// A line of `moreipme` or `remoteprivate` that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: line {line}: {text:?} is not an IP address or network (address/length)")]
pub struct GuardError {
    /// The control file.
    pub file: &'static str,
    /// Its line, from 1.
    pub line: usize,
    /// The line.
    pub text: String,
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn bits(ip: IpAddr) -> (u128, u8) {
    match canonical(ip) {
        IpAddr::V4(v4) => (u128::from(u32::from(v4)), 32),
        IpAddr::V6(v6) => (u128::from(v6), 128),
    }
}

/// True when `ip` is in `net/len` (same family).
fn within(ip: IpAddr, net: IpAddr, len: u8) -> bool {
    let ((a, wa), (b, wb)) = (bits(ip), bits(net));
    if wa != wb || len > wa {
        return false;
    }
    if len == 0 {
        return true;
    }
    let shift = u32::from(wa - len);
    (a >> shift) == (b >> shift)
}

/// Parses `address` or `address/length`.
pub fn parse_net(text: &str) -> Option<(IpAddr, u8)> {
    let (addr, len) = match text.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (text, None),
    };
    let ip: IpAddr = addr
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()?;
    let ip = canonical(ip);
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len = match len {
        None => max,
        Some(l) if !l.is_empty() && l.len() <= 3 && l.bytes().all(|b| b.is_ascii_digit()) => {
            l.parse::<u8>().ok().filter(|&n| n <= max)?
        }
        Some(_) => return None,
    };
    Some((ip, len))
}

/// True for addresses remote delivery refuses unless allowed: loopback,
/// unspecified, link-local, RFC 1918, CGNAT, ULA (and IPv4-mapped forms).
pub fn is_private(ip: IpAddr) -> bool {
    const NETS: [(&str, u8); 10] = [
        ("0.0.0.0", 8),
        ("127.0.0.0", 8),
        ("10.0.0.0", 8),
        ("172.16.0.0", 12),
        ("192.168.0.0", 16),
        ("169.254.0.0", 16),
        ("100.64.0.0", 10),
        ("::", 127),
        ("fe80::", 10),
        ("fc00::", 7),
    ];
    NETS.iter()
        .any(|(net, len)| within(ip, net.parse().expect("a constant address"), *len))
}

impl Guard {
    /// This host's addresses `me` (interfaces and `moreipme`) and the
    /// private networks `allowed`.
    pub fn new(me: Vec<IpAddr>, allowed: Vec<(IpAddr, u8)>) -> Guard {
        Guard {
            me: me.into_iter().map(canonical).collect(),
            allowed,
        }
    }

    /// Reads the addresses of every local interface, and adds the lines
    /// of `moreipme`; `remoteprivate` lines are the allowed networks.
    ///
    /// # Errors
    /// A line that is not an address (or network).
    pub fn from_system(moreipme: &[String], remoteprivate: &[String]) -> Result<Guard, GuardError> {
        let mut me: Vec<IpAddr> = Vec::new();
        if let Ok(addrs) = nix::ifaddrs::getifaddrs() {
            for a in addrs {
                let Some(sa) = a.address else { continue };
                if let Some(v4) = sa.as_sockaddr_in() {
                    me.push(IpAddr::V4(v4.ip()));
                } else if let Some(v6) = sa.as_sockaddr_in6() {
                    me.push(IpAddr::V6(v6.ip()));
                }
            }
        }
        let lines = |file: &'static str, v: &[String]| -> Result<Vec<(IpAddr, u8)>, GuardError> {
            v.iter()
                .take(MAX_LINES)
                .enumerate()
                .map(|(i, l)| {
                    parse_net(l.trim()).ok_or_else(|| GuardError {
                        file,
                        line: i + 1,
                        text: l.clone(),
                    })
                })
                .collect()
        };
        for (ip, _) in lines("moreipme", moreipme)? {
            me.push(ip);
        }
        Ok(Guard::new(me, lines("remoteprivate", remoteprivate)?))
    }

    /// True when `ip` is this host (or unspecified, which reaches it). A
    /// single address listed in `remoteprivate` (no shorter prefix) is not:
    /// the administrator says a separate server answers there (a peer on
    /// `::1` of a test set-up, a local relay on another port).
    pub fn is_me(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        let full = if ip.is_ipv4() { 32 } else { 128 };
        if self.allowed.iter().any(|&(n, l)| l == full && n == ip) {
            return false;
        }
        ip.is_unspecified() || self.me.contains(&ip)
    }

    /// True when remote delivery may connect to `ip`: public, or in an
    /// allowed private network.
    pub fn allows(&self, ip: IpAddr) -> bool {
        !is_private(ip) || self.allowed.iter().any(|&(n, l)| within(ip, n, l))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn private_ranges() {
        for p in [
            "127.0.0.1",
            "127.0.0.9",
            "::1",
            "0.0.0.0",
            "::",
            "169.254.1.1",
            "fe80::1",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "100.64.0.1",
            "100.127.255.255",
            "fc00::1",
            "fd12::1",
            "::ffff:10.0.0.1",
            "::ffff:127.0.0.1",
        ] {
            assert!(is_private(ip(p)), "{p}");
        }
        for p in [
            "192.0.2.1",
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "2001:db8::1",
            "::ffff:8.8.8.8",
            "11.0.0.1",
        ] {
            assert!(!is_private(ip(p)), "{p}");
        }
    }

    #[test]
    fn networks_parse_and_match() {
        assert_eq!(parse_net("10.0.0.0/8"), Some((ip("10.0.0.0"), 8)));
        assert_eq!(parse_net("[::1]"), Some((ip("::1"), 128)));
        assert_eq!(parse_net("::ffff:10.0.0.0/8"), Some((ip("10.0.0.0"), 8)));
        for bad in [
            "",
            "10.0.0.0/33",
            "10/8",
            "x",
            "10.0.0.0/",
            "10.0.0.0/8/1",
            "::/129",
            "1.2.3.4/-1",
        ] {
            assert_eq!(parse_net(bad), None, "{bad:?}");
        }
        let g = Guard::new(
            vec![ip("192.0.2.7")],
            vec![(ip("127.0.0.0"), 8), (ip("fd00::"), 8)],
        );
        assert!(g.allows(ip("127.0.0.9")) && g.allows(ip("fd00::5")) && g.allows(ip("8.8.8.8")));
        assert!(!g.allows(ip("10.0.0.1")) && !g.allows(ip("fc00::1")));
        assert!(
            g.is_me(ip("192.0.2.7")) && g.is_me(ip("::ffff:192.0.2.7")) && g.is_me(ip("0.0.0.0"))
        );
        assert!(!g.is_me(ip("192.0.2.8")));
        let g = Guard::new(vec![ip("127.0.0.1")], vec![(ip("127.0.0.0"), 8)]);
        assert!(
            g.is_me(ip("127.0.0.1")),
            "a network does not make an address foreign"
        );
        let g = Guard::new(vec![ip("127.0.0.1")], vec![(ip("127.0.0.1"), 32)]);
        assert!(!g.is_me(ip("127.0.0.1")), "a single allowed address does");
    }

    #[test]
    fn the_system_has_its_loopback() {
        let g = Guard::from_system(&["198.51.100.9".into()], &[]).unwrap();
        assert!(g.is_me(ip("127.0.0.1")), "lo's address is this host");
        assert!(g.is_me(ip("198.51.100.9")), "moreipme");
        let e = Guard::from_system(&[], &["not-a-net".into()]).unwrap_err();
        assert_eq!((e.file, e.line), ("remoteprivate", 1));
    }
}
