//! The server's ESMTP extensions, from its reply to EHLO.
//!
//! The first line of the EHLO reply names the server; each further line is
//! one extension: a keyword, then parameters separated by spaces (RFC 5321
//! section 4.1.1.1). Keywords are compared without regard to case. Only
//! the extensions the client uses are kept; unknown ones are ignored, and
//! so is a malformed parameter (a `SIZE` whose value is not a number is
//! taken as "size announced, no limit given").

use crate::reply::Reply;

/// Longest `SIZE` value read, in digits (`u64::MAX` has 20).
const MAX_SIZE_DIGITS: usize = 20;

/// What the server offers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// `PIPELINING` (RFC 2920).
    pub pipelining: bool,
    /// `SIZE` (RFC 1870) was announced.
    pub size: bool,
    /// The largest message size the server announced with `SIZE n`;
    /// `None` when it gave no number or `0` (no fixed limit).
    pub size_limit: Option<u64>,
    /// `8BITMIME` (RFC 6152).
    pub eight_bit_mime: bool,
    /// `SMTPUTF8` (RFC 6531).
    pub smtputf8: bool,
    /// `STARTTLS` (RFC 3207).
    pub starttls: bool,
}

impl Capabilities {
    /// Reads the extension lines of an EHLO reply (every line but the
    /// first).
    pub fn parse(reply: &Reply) -> Capabilities {
        let mut caps = Capabilities::default();
        for line in reply.lines.iter().skip(1) {
            let mut words = line
                .split(|&b| b == b' ' || b == b'\t')
                .filter(|w| !w.is_empty());
            let Some(keyword) = words.next() else {
                continue;
            };
            let is = |name: &str| keyword.eq_ignore_ascii_case(name.as_bytes());
            if is("PIPELINING") {
                caps.pipelining = true;
            } else if is("SIZE") {
                caps.size = true;
                caps.size_limit = words.next().and_then(parse_size).filter(|&n| n > 0);
            } else if is("8BITMIME") {
                caps.eight_bit_mime = true;
            } else if is("SMTPUTF8") {
                caps.smtputf8 = true;
            } else if is("STARTTLS") {
                caps.starttls = true;
            }
        }
        caps
    }
}

fn parse_size(word: &[u8]) -> Option<u64> {
    if word.is_empty() || word.len() > MAX_SIZE_DIGITS || !word.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(word).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(lines: &[&str]) -> Capabilities {
        Capabilities::parse(&Reply {
            code: 250,
            lines: lines.iter().map(|l| l.as_bytes().to_vec()).collect(),
        })
    }

    #[test]
    fn extensions() {
        let c = caps(&[
            "mx.example greets you",
            "pipelining",
            "SIZE 10240000",
            "8BITMIME",
            "SmtpUtf8",
            "STARTTLS",
            "AUTH PLAIN LOGIN",
            "CHUNKING",
        ]);
        assert_eq!(
            c,
            Capabilities {
                pipelining: true,
                size: true,
                size_limit: Some(10_240_000),
                eight_bit_mime: true,
                smtputf8: true,
                starttls: true,
            }
        );
        assert_eq!(caps(&["mx"]), Capabilities::default());
    }

    #[test]
    fn odd_lines_are_ignored() {
        // The greeting line is never an extension, even if it looks like one.
        assert!(!caps(&["PIPELINING"]).pipelining);
        // Bad SIZE values: announced, no limit.
        for bad in [
            "SIZE",
            "SIZE 0",
            "SIZE -1",
            "SIZE 12k",
            "SIZE 99999999999999999999999",
            "SIZE  ",
        ] {
            let c = caps(&["mx", bad]);
            assert!(c.size, "{bad}");
            assert_eq!(c.size_limit, None, "{bad}");
        }
        assert_eq!(caps(&["mx", "SIZE\t 42 extra"]).size_limit, Some(42));
        assert_eq!(
            caps(&["mx", "SIZE 18446744073709551615"]).size_limit,
            Some(u64::MAX)
        );
        // Keywords must match whole words.
        let c = caps(&["mx", "PIPELININGX", "XSTARTTLS", "", "   ", "8BITMIME=yes"]);
        assert_eq!(c, Capabilities::default());
    }
}
