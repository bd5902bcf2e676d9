//! Which DNS servers to ask: `control/dnsservers`, else the `nameserver`
//! lines of `/etc/resolv.conf`.

use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;

use tern_control::{DNS_PORT, DnsServers};

use crate::error::Error;

/// The system resolver configuration read when `control/dnsservers` is empty.
pub const RESOLV_CONF: &str = "/etc/resolv.conf";
/// Largest resolv.conf read, in bytes.
pub const MAX_RESOLV_CONF: u64 = 64 * 1024;
/// Nameservers taken from resolv.conf (the C library's `MAXNS`).
pub const MAX_RESOLV_NAMESERVERS: usize = 3;

/// The DNS servers of an instance: `control/dnsservers`, else (empty)
/// the `nameserver` lines of [`RESOLV_CONF`].
///
/// # Errors
/// `control/dnsservers` is unreadable or malformed, or `/etc/resolv.conf`
/// exists but is unreadable.
pub fn dns_servers(control: &tern_control::Control) -> Result<Vec<SocketAddr>, Error> {
    let lines = control.dnsservers()?;
    if lines.is_empty() {
        read_resolv_conf(Path::new(RESOLV_CONF))
    } else {
        parse_dns_servers(&lines)
    }
}

/// Parses `control/dnsservers` lines (as `Control::dnsservers` returns
/// them): `IP` or `[IP]:port`, port 53 by default.
///
/// # Errors
/// [`Error::Entry`] naming the first bad line (counted from 1 among the
/// lines given), a server given twice, or too many servers.
pub fn parse_dns_servers(lines: &[String]) -> Result<Vec<SocketAddr>, Error> {
    let bad = |entry: usize, reason: String| Error::Entry {
        setting: "dnsservers",
        entry,
        reason,
    };
    if let Some(i) = lines.iter().position(|l| l.contains(['\n', '\r'])) {
        return Err(bad(i + 1, "line break inside the line".into()));
    }
    DnsServers::parse(&lines.join("\n"))
        .map(|d| d.servers().to_vec())
        .map_err(|e| bad(e.line().unwrap_or(0), e.kind().to_string()))
}

/// The `nameserver` addresses of a resolv.conf text, in order, at most
/// [`MAX_RESOLV_NAMESERVERS`], port 53. As the C library does, lines that
/// do not parse are skipped, and a file without a usable `nameserver`
/// line means `127.0.0.1`. Link-local IPv6 servers with a `%zone` are
/// skipped (the zone cannot be kept).
pub fn parse_resolv_conf(text: &str) -> Vec<SocketAddr> {
    let mut out: Vec<SocketAddr> = Vec::new();
    for line in text.lines() {
        let mut words = line.split([' ', '\t']).filter(|w| !w.is_empty());
        if words.next() != Some("nameserver") {
            continue;
        }
        let Some(Ok(ip)) = words.next().map(str::parse::<IpAddr>) else {
            continue;
        };
        if ip.is_unspecified() || ip.is_multicast() {
            continue;
        }
        let addr = SocketAddr::new(ip, DNS_PORT);
        if !out.contains(&addr) {
            out.push(addr);
        }
        if out.len() == MAX_RESOLV_NAMESERVERS {
            break;
        }
    }
    if out.is_empty() {
        out.push(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), DNS_PORT));
    }
    out
}

/// Reads a resolv.conf file: its nameservers, or `127.0.0.1` when the file
/// is missing (as the C library does).
///
/// # Errors
/// [`Error::ResolvConf`]: the file exists but cannot be read, or is larger
/// than [`MAX_RESOLV_CONF`].
pub fn read_resolv_conf(path: &Path) -> Result<Vec<SocketAddr>, Error> {
    let fail = |source| Error::ResolvConf {
        path: path.to_path_buf(),
        source,
    };
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(parse_resolv_conf("")),
        Err(e) => return Err(fail(e)),
    };
    let mut bytes = Vec::new();
    file.take(MAX_RESOLV_CONF + 1)
        .read_to_end(&mut bytes)
        .map_err(fail)?;
    if bytes.len() as u64 > MAX_RESOLV_CONF {
        return Err(fail(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "file larger than 64 KiB",
        )));
    }
    Ok(parse_resolv_conf(&String::from_utf8_lossy(&bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn dnsservers_lines() {
        let got = parse_dns_servers(&strings(&["127.0.0.1", "[::1]:5353", "# c", "[192.0.2.1]"]))
            .unwrap();
        let got: Vec<String> = got.iter().map(|a| a.to_string()).collect();
        assert_eq!(got, ["127.0.0.1:53", "[::1]:5353", "192.0.2.1:53"]);
        assert!(parse_dns_servers(&[]).unwrap().is_empty());
        let cases: &[(&[&str], usize, &str)] = &[
            (&["dns.example"], 1, "not an IPv4 or IPv6 address"),
            (&["127.0.0.1", "127.0.0.1:5353"], 2, "a port needs brackets"),
            (&["[127.0.0.1]:0"], 1, "port out of range"),
            (&["[127.0.0.1]:99999"], 1, "port out of range"),
            (&["[::1]:5353", "[::1]:5353"], 2, "duplicate entry"),
            (&["0.0.0.0"], 1, "unspecified"),
            (&["127.0.0.1", "127.0.0.2\n127.0.0.3"], 2, "line break"),
        ];
        for (lines, entry, reason) in cases {
            match parse_dns_servers(&strings(lines)) {
                Err(Error::Entry {
                    setting: "dnsservers",
                    entry: e,
                    reason: r,
                }) => {
                    assert_eq!(e, *entry, "{lines:?}");
                    assert!(r.starts_with(reason), "{lines:?}: {r}");
                }
                other => panic!("{lines:?}: {other:?}"),
            }
        }
        let many: Vec<String> = (1..=9).map(|i| format!("127.0.0.{i}")).collect();
        assert!(parse_dns_servers(&many).is_err());
    }

    #[test]
    fn resolv_conf_nameservers() {
        let text = "# generated\nsearch example.com\nnameserver 192.0.2.53\n\
                    nameserver\tfe80::1%eth0\nnameserver bogus\nnameserver 0.0.0.0\n\
                    options timeout:30 attempts:9\n  nameserver   2001:db8::53  # c\n\
                    nameserver 192.0.2.53\nnameserver 192.0.2.54\nnameserver 192.0.2.55\n";
        let got: Vec<String> = parse_resolv_conf(text)
            .iter()
            .map(|a| a.to_string())
            .collect();
        assert_eq!(got, ["192.0.2.53:53", "[2001:db8::53]:53", "192.0.2.54:53"]);
        for empty in [
            "",
            "# nothing\n",
            "nameserver\n",
            "domain x\nnameserver nope\n",
        ] {
            let got = parse_resolv_conf(empty);
            assert_eq!(got, [SocketAddr::from(([127, 0, 0, 1], 53))], "{empty:?}");
        }
    }

    #[test]
    fn resolv_conf_files() {
        let dir = std::env::temp_dir().join(format!("tern-route-resolv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = read_resolv_conf(&dir.join("missing")).unwrap();
        assert_eq!(missing, [SocketAddr::from(([127, 0, 0, 1], 53))]);
        let f = dir.join("resolv.conf");
        std::fs::write(&f, "nameserver 192.0.2.9\n").unwrap();
        assert_eq!(
            read_resolv_conf(&f).unwrap(),
            [SocketAddr::from(([192, 0, 2, 9], 53))]
        );
        std::fs::write(&f, vec![b'#'; MAX_RESOLV_CONF as usize + 1]).unwrap();
        assert!(matches!(
            read_resolv_conf(&f),
            Err(Error::ResolvConf { .. })
        ));
        // a directory where the file should be: unreadable, an error
        assert!(matches!(
            read_resolv_conf(&dir),
            Err(Error::ResolvConf { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
