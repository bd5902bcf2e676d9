//! `tern-sched`: the queue manager's decisions, without I/O.
//!
//! * [`next_attempt`]: the retry schedule;
//! * [`Rewriter`]: which recipients are local and how they are rewritten
//!   (`envnoathost`, `percenthack`, `locals`, `virtualdomains`);
//! * [`scrub_text`]: what may appear of a delivery report in a bounce.
//!
//! Used by `tern-send`; every function is pure and unit-tested.
#![forbid(unsafe_code)]
#![deny(clippy::print_stdout, clippy::print_stderr)]

use tern_control::{DomainList, VirtualDomains};
use tern_spool::state::Channel;

/// Seconds added to the square root of a message's age, per channel:
/// local attempts at ages 0, 100 s, 400 s, 900 s ...; remote at 0, 400 s,
/// 1600 s, 1 h ... (qmail's schedule: a delay costs the same relative to
/// the message's age, and a late attempt does not cause a burst).
pub fn chanskip(channel: Channel) -> i64 {
    match channel {
        Channel::Local => 10,
        Channel::Remote => 20,
    }
}

/// When a recipient deferred at `last_attempt` is next due:
/// `birth + (floor(sqrt(last_attempt - birth)) + chanskip)²`. Never attempted:
/// due at once (`birth`).
pub fn next_attempt(birth: i64, last_attempt: Option<i64>, channel: Channel) -> i64 {
    match last_attempt {
        None => birth,
        Some(t) => {
            let age = (t - birth).max(0);
            let root = isqrt(age);
            let step = root + chanskip(channel);
            birth.saturating_add(step.saturating_mul(step))
        }
    }
}

fn isqrt(n: i64) -> i64 {
    if n <= 0 {
        return 0;
    }
    let mut x = (n as f64).sqrt() as i64;
    while x.checked_mul(x).is_none_or(|sq| sq > n) {
        x -= 1;
    }
    while (x + 1).checked_mul(x + 1).is_some_and(|sq| sq <= n) {
        x += 1;
    }
    x
}

/// The recipient-rewriting rules of the queue manager.
#[derive(Debug, Clone)]
pub struct Rewriter {
    /// `control/locals`.
    pub locals: DomainList,
    /// `control/virtualdomains`.
    pub virtualdomains: VirtualDomains,
    /// `control/percenthack`.
    pub percenthack: DomainList,
    /// `control/envnoathost`: the domain of an address without `@`.
    pub envnoathost: String,
}

impl Rewriter {
    /// Classifies one envelope recipient: the channel and the address to
    /// deliver to.
    ///
    /// 1. no `@`: `@envnoathost` is appended;
    /// 2. a domain in `percenthack`: the last `%` of the local part becomes
    ///    the `@` (repeatedly);
    /// 3. a domain in `locals`: local, unchanged;
    /// 4. `virtualdomains` (address, domain, `.suffix`, default): a
    ///    non-empty prepend P makes it local as `P-local@domain`; an empty
    ///    one is an exception (remote);
    /// 5. otherwise remote.
    pub fn classify(&self, address: &[u8]) -> (Channel, Vec<u8>) {
        let mut addr = address.to_vec();
        if !addr.contains(&b'@') {
            addr.push(b'@');
            addr.extend_from_slice(self.envnoathost.as_bytes());
        }
        loop {
            let at = addr.iter().rposition(|&b| b == b'@').expect("has @");
            let domain = String::from_utf8_lossy(&addr[at + 1..]).into_owned();
            if !self.percenthack.contains(&domain) {
                break;
            }
            let Some(pct) = addr[..at].iter().rposition(|&b| b == b'%') else {
                break;
            };
            addr.truncate(at);
            addr[pct] = b'@';
        }
        let at = addr.iter().rposition(|&b| b == b'@').expect("has @");
        let (local, domain) = (&addr[..at], &addr[at + 1..]);
        let domain_s = String::from_utf8_lossy(domain).into_owned();
        if self.locals.contains(&domain_s) {
            return (Channel::Local, addr);
        }
        let local_s = String::from_utf8_lossy(local).into_owned();
        match self.virtualdomains.lookup(&local_s, &domain_s) {
            Some(prepend) if !prepend.is_empty() => {
                let mut out = prepend.as_bytes().to_vec();
                out.push(b'-');
                out.extend_from_slice(&addr);
                (Channel::Local, out)
            }
            _ => (Channel::Remote, addr),
        }
    }
}

/// Makes a delivery report fit for a bounce or a log: printable ASCII only
/// (other bytes become `?`, line breaks become `/`), at most `max` bytes,
/// and IP address literals replaced by `[address hidden]` so that a bounce
/// never discloses an internal address.
pub fn scrub_text(text: &[u8], max: usize) -> String {
    // Surrounding line breaks and blanks go before they are mapped, so that
    // a report's own leading or trailing '/' (a path) is kept.
    let blank = |b: &u8| matches!(b, b'\n' | b'\r' | b' ' | b'\t');
    let start = text.iter().position(|b| !blank(b)).unwrap_or(text.len());
    let end = text
        .iter()
        .rposition(|b| !blank(b))
        .map_or(start, |i| i + 1);
    let s: String = text[start..end]
        .iter()
        .map(|&b| match b {
            b'\n' | b'\r' => '/',
            0x20..=0x7e => b as char,
            b'\t' => ' ',
            _ => '?',
        })
        .collect();
    let s = hide_ip_addresses(&s);
    if s.len() > max {
        let mut cut = s[..max].to_string();
        cut.push_str("...");
        cut
    } else {
        s
    }
}

fn hide_ip_addresses(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let start_ok = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'.');
        if start_ok && let Some(len) = ipv4_at(&bytes[i..]).or_else(|| ipv6_at(&bytes[i..])) {
            out.push_str("[address hidden]");
            i += len;
            continue;
        }
        out.push(bytes[i] as char);
        i += 1;
    }
    out
}

fn ipv4_at(b: &[u8]) -> Option<usize> {
    let mut i = 0;
    for part in 0..4 {
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() && i - start < 3 {
            i += 1;
        }
        if i == start {
            return None;
        }
        if part < 3 {
            if i >= b.len() || b[i] != b'.' {
                return None;
            }
            i += 1;
        }
    }
    if i < b.len()
        && (b[i].is_ascii_alphanumeric()
            || (b[i] == b'.' && b.get(i + 1).is_some_and(u8::is_ascii_digit)))
    {
        return None;
    }
    Some(i)
}

fn ipv6_at(b: &[u8]) -> Option<usize> {
    // A run of hex digits and colons with at least two colons that parses
    // as an IPv6 address (optionally prefixed by "IPv6:").
    let skip = if b.len() >= 5 && b[..5].eq_ignore_ascii_case(b"IPv6:") {
        5
    } else {
        0
    };
    let mut i = skip;
    while i < b.len() && (b[i].is_ascii_hexdigit() || b[i] == b':' || b[i] == b'.') {
        i += 1;
    }
    let cand = std::str::from_utf8(&b[skip..i]).ok()?;
    if cand.matches(':').count() >= 2 && cand.parse::<std::net::Ipv6Addr>().is_ok() {
        Some(i)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_schedule_matches_the_formula() {
        let b = 1_000_000;
        assert_eq!(next_attempt(b, None, Channel::Local), b);
        assert_eq!(next_attempt(b, Some(b), Channel::Local), b + 100);
        assert_eq!(next_attempt(b, Some(b + 100), Channel::Local), b + 400);
        assert_eq!(next_attempt(b, Some(b + 399), Channel::Local), b + 29 * 29);
        assert_eq!(next_attempt(b, Some(b), Channel::Remote), b + 400);
        assert_eq!(next_attempt(b, Some(b + 400), Channel::Remote), b + 1600);
        // A clock that went backwards does not make it due in the past.
        assert_eq!(next_attempt(b, Some(b - 50), Channel::Local), b + 100);
        assert_eq!(isqrt(0), 0);
        assert_eq!(isqrt(99), 9);
        assert_eq!(isqrt(100), 10);
        assert_eq!(isqrt(i64::MAX), 3_037_000_499);
    }

    fn rewriter() -> Rewriter {
        Rewriter {
            locals: DomainList::parse("localhost\nexample.com\n", false).unwrap(),
            virtualdomains: VirtualDomains::parse(
                "virt.example:alias-virt\njoe@virt.example:joe\n.sub.example:sub\nexcept.virt.example:\n",
            )
            .unwrap(),
            percenthack: DomainList::parse("example.com\n", false).unwrap(),
            envnoathost: "example.com".into(),
        }
    }

    #[test]
    fn classification() {
        let r = rewriter();
        let cases: &[(&[u8], Channel, &[u8])] = &[
            (b"test@localhost", Channel::Local, b"test@localhost"),
            (b"Test@LOCALHOST", Channel::Local, b"Test@LOCALHOST"),
            (b"bare", Channel::Local, b"bare@example.com"),
            (
                b"u%remote.org@example.com",
                Channel::Remote,
                b"u@remote.org",
            ),
            (b"a%b%c.org@example.com", Channel::Remote, b"a%b@c.org"),
            (
                b"x@virt.example",
                Channel::Local,
                b"alias-virt-x@virt.example",
            ),
            (b"joe@virt.example", Channel::Local, b"joe-joe@virt.example"),
            (b"y@a.sub.example", Channel::Local, b"sub-y@a.sub.example"),
            (
                b"z@except.virt.example",
                Channel::Remote,
                b"z@except.virt.example",
            ),
            (b"w@elsewhere.org", Channel::Remote, b"w@elsewhere.org"),
            (b"", Channel::Local, b"@example.com"),
        ];
        for (input, ch, out) in cases {
            assert_eq!(
                r.classify(input),
                (*ch, out.to_vec()),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn scrubbing() {
        assert_eq!(scrub_text(b"line1\nline2\r\n", 100), "line1/line2");
        assert_eq!(
            scrub_text(b"bad \x1b[31m \xff byte", 100),
            "bad ?[31m ? byte"
        );
        assert_eq!(
            scrub_text(b"connect to 10.1.2.3:25 failed", 100),
            "connect to [address hidden]:25 failed"
        );
        assert_eq!(
            scrub_text(b"host [IPv6:2001:db8::1] said no", 100),
            "host [[address hidden]] said no"
        );
        assert_eq!(
            scrub_text(b"fe80::1%eth0 down", 100),
            "[address hidden]%eth0 down"
        );
        assert_eq!(
            scrub_text(b"version 1.2.3 and 5.1.1", 100),
            "version 1.2.3 and 5.1.1"
        );
        assert_eq!(scrub_text(b"(#5.1.1) 1.2.3.4.5", 100), "(#5.1.1) 1.2.3.4.5");
        assert_eq!(scrub_text(b"12:34:56 ok", 100), "12:34:56 ok");
        assert_eq!(scrub_text(&[b'a'; 50], 10), "aaaaaaaaaa...");
        // A report that starts or ends with a path keeps its slashes; only
        // the surrounding line breaks and blanks go.
        assert_eq!(
            scrub_text(b"\n /bin/sh: 1: /x/y: not found\n", 100),
            "/bin/sh: 1: /x/y: not found"
        );
        assert_eq!(
            scrub_text(b"cannot write /var/mail/\r\n", 100),
            "cannot write /var/mail/"
        );
        assert_eq!(scrub_text(b"\n\n", 100), "");
    }
}
