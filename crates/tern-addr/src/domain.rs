//! [`Domain`]: a validated host name or address literal.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::net::{Ipv4Addr, Ipv6Addr};

use crate::error::{Error, ErrorKind};
use crate::{Charset, MAX_DOMAIN, MAX_LABEL};

/// What a [`Domain`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DomainKind {
    /// A host name made of labels.
    Name,
    /// An IPv4 address literal, `[192.0.2.1]`.
    Ipv4(Ipv4Addr),
    /// An IPv6 address literal, `[IPv6:2001:db8::1]`.
    Ipv6(Ipv6Addr),
}

/// A validated domain: a host name or an address literal.
///
/// Names are made of labels of ASCII letters, digits and `-` (not at either
/// end of a label), separated by single dots, without a trailing dot; each
/// label at most 63 bytes, the whole at most 255 bytes. With
/// [`Charset::Utf8`], labels may also hold non-ASCII UTF-8 characters (an
/// internationalised name in U-label form; IDNA mapping rules are not
/// checked, and label lengths are counted in UTF-8 bytes).
///
/// Equality and hashing are case-insensitive for ASCII letters; two address
/// literals are equal when they name the same IP address.
#[derive(Debug, Clone)]
pub struct Domain {
    text: String,
    kind: DomainKind,
}

impl Domain {
    /// Parses and validates a domain.
    ///
    /// # Errors
    /// An [`Error`] naming the first problem and its byte offset.
    pub fn parse(input: &[u8], charset: Charset) -> Result<Domain, Error> {
        if input.is_empty() {
            return Err(Error::new(ErrorKind::Empty, 0));
        }
        if input.len() > MAX_DOMAIN {
            return Err(Error::new(ErrorKind::DomainTooLong, MAX_DOMAIN));
        }
        if input[0] == b'[' {
            return parse_literal(input);
        }
        let text = match charset {
            Charset::Ascii => {
                if let Some(i) = input.iter().position(|b| !b.is_ascii()) {
                    return Err(Error::new(ErrorKind::NonAscii, i));
                }
                // All ASCII, so this cannot fail.
                std::str::from_utf8(input)
                    .map_err(|e| Error::new(ErrorKind::InvalidUtf8, e.valid_up_to()))?
            }
            Charset::Utf8 => std::str::from_utf8(input)
                .map_err(|e| Error::new(ErrorKind::InvalidUtf8, e.valid_up_to()))?,
        };
        let mut start = 0;
        for (i, &b) in input.iter().enumerate() {
            match b {
                b'.' => {
                    check_label(input, start, i)?;
                    start = i + 1;
                }
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' => {}
                0x80.. => {} // validated as UTF-8 above
                _ => return Err(Error::new(ErrorKind::BadDomainChar, i)),
            }
        }
        check_label(input, start, input.len())?;
        Ok(Domain {
            text: text.to_string(),
            kind: DomainKind::Name,
        })
    }

    /// The domain as given (original case).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Name or address literal.
    pub fn kind(&self) -> DomainKind {
        self.kind
    }

    /// True for `[...]` address literals.
    pub fn is_literal(&self) -> bool {
        self.kind != DomainKind::Name
    }

    /// True when the domain holds non-ASCII characters (needs SMTPUTF8).
    pub fn needs_smtputf8(&self) -> bool {
        !self.text.is_ascii()
    }

    /// The domain with ASCII letters lower-cased (the form used as a lookup key).
    pub fn to_lowercase_key(&self) -> String {
        self.text.to_ascii_lowercase()
    }

    /// Case-insensitive comparison with a domain given as text.
    pub fn eq_ignore_case(&self, other: &str) -> bool {
        self.text.eq_ignore_ascii_case(other)
    }

    /// True when `self` equals `parent` or is a subdomain of it
    /// (`a.example.com` is within `example.com`; `badexample.com` is not).
    /// Address literals are within nothing but themselves.
    pub fn is_within(&self, parent: &Domain) -> bool {
        if self.is_literal() || parent.is_literal() {
            return self == parent;
        }
        let (s, p) = (self.text.as_bytes(), parent.text.as_bytes());
        if s.len() == p.len() {
            return s.eq_ignore_ascii_case(p);
        }
        s.len() > p.len()
            && s[s.len() - p.len() - 1] == b'.'
            && s[s.len() - p.len()..].eq_ignore_ascii_case(p)
    }
}

fn check_label(input: &[u8], start: usize, end: usize) -> Result<(), Error> {
    if start == end {
        return Err(Error::new(ErrorKind::EmptyLabel, start));
    }
    if end - start > MAX_LABEL {
        return Err(Error::new(ErrorKind::LabelTooLong, start + MAX_LABEL));
    }
    if input[start] == b'-' {
        return Err(Error::new(ErrorKind::HyphenAtLabelEdge, start));
    }
    if input[end - 1] == b'-' {
        return Err(Error::new(ErrorKind::HyphenAtLabelEdge, end - 1));
    }
    Ok(())
}

fn parse_literal(input: &[u8]) -> Result<Domain, Error> {
    let bad = |at| Err(Error::new(ErrorKind::BadAddressLiteral, at));
    if input.len() < 2 || input[input.len() - 1] != b']' {
        return bad(input.len().saturating_sub(1));
    }
    let inner = &input[1..input.len() - 1];
    let Ok(inner) = std::str::from_utf8(inner) else {
        return bad(1);
    };
    // Compare bytes: byte 5 may fall inside a multi-byte character, where a
    // str slice would panic (found by the address fuzz target).
    let kind = if let Some(rest) = inner
        .as_bytes()
        .get(..5)
        .filter(|p| p.eq_ignore_ascii_case(b"IPv6:"))
        .map(|_| &inner.as_bytes()[5..])
    {
        match std::str::from_utf8(rest)
            .ok()
            .and_then(|r| r.parse::<Ipv6Addr>().ok())
        {
            Some(ip) => DomainKind::Ipv6(ip),
            None => return bad(6),
        }
    } else {
        match inner.parse::<Ipv4Addr>() {
            Ok(ip) => DomainKind::Ipv4(ip),
            Err(_) => return bad(1),
        }
    };
    Ok(Domain {
        text: format!("[{inner}]"),
        kind,
    })
}

impl PartialEq for Domain {
    fn eq(&self, other: &Domain) -> bool {
        match (self.kind, other.kind) {
            (DomainKind::Name, DomainKind::Name) => self.text.eq_ignore_ascii_case(&other.text),
            (a, b) => a == b,
        }
    }
}

impl Eq for Domain {}

impl Hash for Domain {
    fn hash<H: Hasher>(&self, state: &mut H) {
        match self.kind {
            DomainKind::Name => {
                0u8.hash(state);
                for b in self.text.bytes() {
                    b.to_ascii_lowercase().hash(state);
                }
            }
            other => other.hash(state),
        }
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(input: &[u8], charset: Charset) -> (ErrorKind, usize) {
        let e = Domain::parse(input, charset).expect_err("input should be rejected");
        (e.kind(), e.offset())
    }

    #[test]
    fn bad_domains_are_rejected_with_kind_and_offset() {
        use ErrorKind::*;
        let long_label = format!("{}.com", "a".repeat(64));
        let long_domain = format!("{}.com", vec!["a".repeat(60); 5].join("."));
        let cases: &[(&[u8], ErrorKind, usize)] = &[
            (b"", Empty, 0),
            (b".", EmptyLabel, 0),
            (b".example.com", EmptyLabel, 0),
            (b"example.com.", EmptyLabel, 12),
            (b"example..com", EmptyLabel, 8),
            (b"-example.com", HyphenAtLabelEdge, 0),
            (b"example-.com", HyphenAtLabelEdge, 7),
            (b"exa mple.com", BadDomainChar, 3),
            (b"exa_mple.com", BadDomainChar, 3),
            (b"example.com\n", BadDomainChar, 11),
            (b"ex@mple.com", BadDomainChar, 2),
            (b"ex\0mple.com", BadDomainChar, 2),
            // A multi-byte character across byte 5 of a literal (fuzz find).
            (b"[I200\xcf\x9b]", BadAddressLiteral, 1),
            (b"[IPv6\xcf\x9b]", BadAddressLiteral, 1),
            (long_label.as_bytes(), LabelTooLong, 63),
            (long_domain.as_bytes(), DomainTooLong, 255),
            ("b\u{fc}cher.de".as_bytes(), NonAscii, 1),
            (b"[1.2.3.4", BadAddressLiteral, 7),
            (b"[]", BadAddressLiteral, 1),
            (b"[1.2.3]", BadAddressLiteral, 1),
            (b"[1.2.3.256]", BadAddressLiteral, 1),
            (b"[01.2.3.4]", BadAddressLiteral, 1),
            (b"[IPv6:1.2.3.4]", BadAddressLiteral, 6),
            (b"[IPv6:::g]", BadAddressLiteral, 6),
            (b"[::1]", BadAddressLiteral, 1),
            (b"[tag:x]", BadAddressLiteral, 1),
            (b"[1.2.3.4]x", BadAddressLiteral, 9),
        ];
        for (input, kind, offset) in cases {
            assert_eq!(
                err(input, Charset::Ascii),
                (*kind, *offset),
                "input {:?}",
                String::from_utf8_lossy(input)
            );
        }
        assert_eq!(err(b"b\xfccher.de", Charset::Utf8), (InvalidUtf8, 1));
        assert_eq!(
            err("a.b\u{fc}c_d".as_bytes(), Charset::Utf8),
            (BadDomainChar, 6)
        );
    }

    #[test]
    fn errors_never_echo_the_input() {
        let e = Domain::parse(b"secret value!", Charset::Ascii).unwrap_err();
        assert!(!e.to_string().contains("secret"));
        assert_eq!(
            e.to_string(),
            "character not allowed in a domain (at byte 6)"
        );
    }

    #[test]
    fn good_domains() {
        let max_label = format!("{}.com", "a".repeat(63));
        let max_domain = vec!["a".repeat(63); 4].join(".");
        assert_eq!(max_domain.len(), 255);
        let cases: &[(&[u8], DomainKind)] = &[
            (b"localhost", DomainKind::Name),
            (b"Example.COM", DomainKind::Name),
            (b"a-b.c-d.e", DomainKind::Name),
            (b"1.2.3.4", DomainKind::Name),
            (b"xn--bcher-kva.de", DomainKind::Name),
            (max_label.as_bytes(), DomainKind::Name),
            (max_domain.as_bytes(), DomainKind::Name),
            (
                b"[192.0.2.1]",
                DomainKind::Ipv4(Ipv4Addr::new(192, 0, 2, 1)),
            ),
            (
                b"[ipv6:2001:db8::1]",
                DomainKind::Ipv6("2001:db8::1".parse().unwrap()),
            ),
        ];
        for (input, kind) in cases {
            let d = Domain::parse(input, Charset::Ascii).expect("valid domain");
            assert_eq!(d.kind(), *kind);
            assert!(!d.needs_smtputf8());
        }
        let idn = Domain::parse("b\u{fc}cher.de".as_bytes(), Charset::Utf8).unwrap();
        assert!(idn.needs_smtputf8());
        assert_eq!(idn.as_str(), "b\u{fc}cher.de");
    }

    #[test]
    fn comparison_is_case_insensitive() {
        let a = Domain::parse(b"Mail.Example.COM", Charset::Ascii).unwrap();
        let b = Domain::parse(b"mail.example.com", Charset::Ascii).unwrap();
        let c = Domain::parse(b"mail.example.org", Charset::Ascii).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(a.eq_ignore_case("MAIL.example.com"));
        assert_eq!(a.to_lowercase_key(), "mail.example.com");
        let mut set = std::collections::HashSet::new();
        set.insert(a.clone());
        assert!(set.contains(&b));
        assert!(!set.contains(&c));
        assert_eq!(a.to_string(), "Mail.Example.COM");
        let v6a = Domain::parse(b"[IPv6:2001:db8:0::1]", Charset::Ascii).unwrap();
        let v6b = Domain::parse(b"[IPv6:2001:DB8::1]", Charset::Ascii).unwrap();
        assert_eq!(v6a, v6b);
    }

    #[test]
    fn subdomain_test() {
        let p = |s: &str| Domain::parse(s.as_bytes(), Charset::Ascii).unwrap();
        assert!(p("a.Example.com").is_within(&p("example.COM")));
        assert!(p("example.com").is_within(&p("example.com")));
        assert!(!p("badexample.com").is_within(&p("example.com")));
        assert!(!p("example.com").is_within(&p("a.example.com")));
        assert!(!p("[1.2.3.4]").is_within(&p("4")));
    }
}
