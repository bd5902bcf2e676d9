//! Envelope addresses as they go into `MAIL FROM:<…>` and `RCPT TO:<…>`.
//!
//! Queued addresses are `local@domain` with the local part either as the
//! SMTP client wrote it (a dot-string or a quoted string) or unquoted (as
//! `tern-inject` stores it, like qmail). [`format_path`] sends a local part
//! that already is a valid dot-string or quoted string unchanged, and
//! quotes any other (RFC 5321 4.1.2), so `john doe@example.org` goes out as
//! `<"john doe"@example.org>`.
//!
//! An address that could break the command line (a control character such
//! as CR or LF, invalid UTF-8, a domain with characters no domain has) is
//! refused with an [`AddressError`]; such an address can never be
//! delivered, so the caller fails it permanently.

/// Longest address sent, in bytes (the queue's limit).
pub const MAX_ADDRESS: usize = 1000;

/// Why an address cannot be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// Empty recipient.
    #[error("empty address")]
    Empty,
    /// Longer than [`MAX_ADDRESS`].
    #[error("address longer than 1000 bytes")]
    TooLong,
    /// A byte below 32 or DEL.
    #[error("address contains a control character")]
    ControlCharacter,
    /// Bytes of 128 and above that are not UTF-8.
    #[error("address is not valid UTF-8")]
    BadUtf8,
    /// Nothing before the `@`.
    #[error("address has an empty local part")]
    EmptyLocalPart,
    /// Nothing after the `@`, or characters no domain can have.
    #[error("address has an invalid domain")]
    BadDomain,
}

fn is_atext(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&b) || b >= 0x80
}

fn is_dot_string(s: &[u8]) -> bool {
    !s.is_empty()
        && s.split(|&b| b == b'.')
            .all(|atom| !atom.is_empty() && atom.iter().all(|&b| is_atext(b)))
}

fn is_quoted_string(s: &[u8]) -> bool {
    let Some(inner) = s.strip_prefix(b"\"").and_then(|r| r.strip_suffix(b"\"")) else {
        return false;
    };
    if s.len() < 2 {
        return false;
    }
    let mut i = 0;
    while i < inner.len() {
        match inner[i] {
            b'\\' => {
                if !matches!(inner.get(i + 1), Some(32..=126)) {
                    return false;
                }
                i += 2;
            }
            b'"' => return false,
            b => {
                if !(b >= 32 && b != 127) {
                    return false;
                }
                i += 1;
            }
        }
    }
    true
}

fn valid_domain(d: &[u8]) -> bool {
    if d.is_empty() {
        return false;
    }
    if let Some(inner) = d.strip_prefix(b"[").and_then(|r| r.strip_suffix(b"]")) {
        return !inner.is_empty()
            && inner
                .iter()
                .all(|&b| (33..=126).contains(&b) && !b"[]\\".contains(&b));
    }
    d.iter()
        .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_' || b >= 0x80)
}

/// Checks the bytes every address must pass.
fn check(addr: &[u8]) -> Result<(), AddressError> {
    if addr.len() > MAX_ADDRESS {
        return Err(AddressError::TooLong);
    }
    if addr.iter().any(|&b| b < 32 || b == 127) {
        return Err(AddressError::ControlCharacter);
    }
    if std::str::from_utf8(addr).is_err() {
        return Err(AddressError::BadUtf8);
    }
    Ok(())
}

/// The address in angle brackets, ready for `MAIL FROM:` or `RCPT TO:`.
/// The empty address is the null path `<>` (a bounce's sender); the caller
/// refuses an empty recipient before.
///
/// # Errors
/// An address that cannot be sent; see [`AddressError`].
pub fn format_path(addr: &[u8]) -> Result<Vec<u8>, AddressError> {
    check(addr)?;
    let mut out = Vec::with_capacity(addr.len() + 4);
    out.push(b'<');
    if !addr.is_empty() {
        let (local, domain) = match addr.iter().rposition(|&b| b == b'@') {
            Some(at) => (&addr[..at], Some(&addr[at + 1..])),
            None => (addr, None),
        };
        if local.is_empty() {
            return Err(AddressError::EmptyLocalPart);
        }
        if is_dot_string(local) || is_quoted_string(local) {
            out.extend_from_slice(local);
        } else {
            tern_addr::push_quoted(local, &mut out);
        }
        if let Some(d) = domain {
            if !valid_domain(d) {
                return Err(AddressError::BadDomain);
            }
            out.push(b'@');
            out.extend_from_slice(d);
        }
    }
    out.push(b'>');
    Ok(out)
}

/// True when sending `addr` needs the SMTPUTF8 extension (a byte of 128 or
/// above).
pub fn needs_smtputf8(addr: &[u8]) -> bool {
    !addr.is_ascii()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_addresses() {
        let long = [vec![b'a'; 990], b"@example.org".to_vec()].concat();
        let cases: &[(&[u8], AddressError)] = &[
            (&long, AddressError::TooLong),
            (b"a\r\nRSET@x", AddressError::ControlCharacter),
            (b"a@x\r\nDATA", AddressError::ControlCharacter),
            (b"a\0b@x", AddressError::ControlCharacter),
            (b"a\x7f@x", AddressError::ControlCharacter),
            (b"a\tb@x", AddressError::ControlCharacter),
            (b"\xff@x", AddressError::BadUtf8),
            (b"a@\xc3", AddressError::BadUtf8),
            (b"@x", AddressError::EmptyLocalPart),
            (b"a@", AddressError::BadDomain),
            (b"a@x>y", AddressError::BadDomain),
            (b"a@x y", AddressError::BadDomain),
            (b"a@[]", AddressError::BadDomain),
            (b"a@[1.2.3.4]>", AddressError::BadDomain),
            (b"a@[1 2]", AddressError::BadDomain),
            (b"a@<x", AddressError::BadDomain),
        ];
        for (addr, want) in cases {
            assert_eq!(
                format_path(addr),
                Err(*want),
                "{:?}",
                addr.escape_ascii().to_string()
            );
        }
    }

    #[test]
    fn paths() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"", b"<>"),
            (b"a@example.org", b"<a@example.org>"),
            (
                b"first.last+tag@example.org",
                b"<first.last+tag@example.org>",
            ),
            (b"postmaster", b"<postmaster>"),
            (b"john doe@example.org", b"<\"john doe\"@example.org>"),
            (b"\"john doe\"@example.org", b"<\"john doe\"@example.org>"),
            (b"\"a\\\"b\"@x", b"<\"a\\\"b\"@x>"),
            (b"a\"b@x", b"<\"a\\\"b\"@x>"),
            (b"a\\b@x", b"<\"a\\\\b\"@x>"),
            (b".a@x", b"<\".a\"@x>"),
            (b"a..b@x", b"<\"a..b\"@x>"),
            (b"a@b@x", b"<\"a@b\"@x>"),
            (b"\"@x", b"<\"\\\"\"@x>"),
            (b"a@[192.0.2.1]", b"<a@[192.0.2.1]>"),
            (b"a@[IPv6:2001:db8::1]", b"<a@[IPv6:2001:db8::1]>"),
            (
                "j\u{f6}rg@b\u{fc}cher.example".as_bytes(),
                "<j\u{f6}rg@b\u{fc}cher.example>".as_bytes(),
            ),
        ];
        for (addr, want) in cases {
            assert_eq!(
                format_path(addr).as_deref(),
                Ok(*want),
                "{:?}",
                addr.escape_ascii().to_string()
            );
        }
        assert!(needs_smtputf8("j\u{f6}rg@x".as_bytes()));
        assert!(!needs_smtputf8(b"a@x"));
    }
}
