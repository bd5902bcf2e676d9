//! [`Mailbox`]: `local@domain`.

use std::fmt;

use crate::error::{Error, ErrorKind};
use crate::{Charset, Domain, LocalPart, MAX_MAILBOX};

/// A validated mailbox, `local@domain`.
///
/// Parsing splits at the **last** `@`, so a quoted local part may itself
/// contain `@` (`"a@b"@example.com`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Mailbox {
    /// The part before the last `@`.
    pub local: LocalPart,
    /// The part after the last `@`.
    pub domain: Domain,
}

impl Mailbox {
    /// Parses and validates `local@domain`.
    ///
    /// # Errors
    /// An [`Error`] naming the first problem and its byte offset in `input`.
    pub fn parse(input: &[u8], charset: Charset) -> Result<Mailbox, Error> {
        if input.is_empty() {
            return Err(Error::new(ErrorKind::Empty, 0));
        }
        if input.len() > MAX_MAILBOX {
            return Err(Error::new(ErrorKind::MailboxTooLong, MAX_MAILBOX));
        }
        let Some(at) = input.iter().rposition(|&b| b == b'@') else {
            return Err(Error::new(ErrorKind::NoAt, input.len()));
        };
        let local = LocalPart::parse(&input[..at], charset)?;
        let domain = Domain::parse(&input[at + 1..], charset).map_err(|e| e.shifted(at + 1))?;
        Ok(Mailbox { local, domain })
    }

    /// True when the local part or the domain needs SMTPUTF8.
    pub fn needs_smtputf8(&self) -> bool {
        self.local.needs_smtputf8() || self.domain.needs_smtputf8()
    }
}

impl fmt::Display for Mailbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.local, self.domain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_mailboxes() {
        use ErrorKind::*;
        let too_long = format!("{}@{}", "a".repeat(255), vec!["b".repeat(63); 5].join("."));
        let cases: &[(&[u8], ErrorKind, usize)] = &[
            (b"", Empty, 0),
            (b"user", NoAt, 4),
            (b"@example.com", Empty, 0),
            (b"user@", Empty, 5),
            (b"user@exa mple.com", BadDomainChar, 8),
            (b"us er@example.com", BadLocalChar, 2),
            (b"a@b@example.com", BadLocalChar, 1),
            (b"user@[1.2.3.4", BadAddressLiteral, 12),
            (too_long.as_bytes(), MailboxTooLong, 511),
        ];
        for (input, kind, offset) in cases {
            let e = Mailbox::parse(input, Charset::Ascii).expect_err("should be rejected");
            assert_eq!(
                (e.kind(), e.offset()),
                (*kind, *offset),
                "input {:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn good_mailboxes() {
        let m = Mailbox::parse(b"John.Doe@Example.com", Charset::Ascii).unwrap();
        assert_eq!(m.local.as_str(), "John.Doe");
        assert_eq!(m.domain.as_str(), "Example.com");
        assert_eq!(m.to_string(), "John.Doe@Example.com");
        assert!(!m.needs_smtputf8());

        let q = Mailbox::parse(b"\"a@b\"@example.com", Charset::Ascii).unwrap();
        assert_eq!(q.local.as_str(), "\"a@b\"");
        assert!(q.local.is_quoted());

        let lit = Mailbox::parse(b"postmaster@[IPv6:::1]", Charset::Ascii).unwrap();
        assert!(lit.domain.is_literal());

        let u = Mailbox::parse("j\u{f6}rg@b\u{fc}cher.de".as_bytes(), Charset::Utf8).unwrap();
        assert!(u.needs_smtputf8());
        assert_eq!(
            Mailbox::parse("j\u{f6}rg@example.com".as_bytes(), Charset::Ascii)
                .unwrap_err()
                .kind(),
            ErrorKind::NonAscii
        );

        // domains compare case-insensitively, local parts exactly
        let a = Mailbox::parse(b"x@EXAMPLE.com", Charset::Ascii).unwrap();
        let b = Mailbox::parse(b"x@example.com", Charset::Ascii).unwrap();
        let c = Mailbox::parse(b"X@example.com", Charset::Ascii).unwrap();
        assert_eq!(a, b);
        assert_ne!(b, c);
    }
}
