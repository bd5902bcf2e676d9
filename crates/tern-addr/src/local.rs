//! [`LocalPart`]: the part of a mailbox before the `@`.

use std::fmt;

use crate::error::{Error, ErrorKind};
use crate::{Charset, MAX_LOCAL_PART, RFC_MAX_LOCAL_PART};

/// A validated local part: a dot-atom (`john.doe`, `a+b`) or a quoted
/// string (`"john doe"`), stored as written (quotes and backslashes kept).
///
/// Length: RFC 5321 allows 64 bytes; Tern accepts up to
/// [`MAX_LOCAL_PART`] (255) because real mail carries longer ones, and
/// reports the excess through [`LocalPart::exceeds_rfc_limit`].
///
/// Comparison (`==`) is exact, as RFC 5321 says local parts are case
/// sensitive; [`LocalPart::to_lowercase_key`] gives qmail's case-insensitive
/// lookup key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LocalPart {
    text: String,
    quoted: bool,
}

/// RFC 5322 `atext` (ASCII part).
fn is_atext(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&b)
}

/// RFC 5321 `qtextSMTP`.
fn is_qtext(b: u8) -> bool {
    matches!(b, 32..=33 | 35..=91 | 93..=126)
}

impl LocalPart {
    /// Parses and validates a local part.
    ///
    /// # Errors
    /// An [`Error`] naming the first problem and its byte offset.
    pub fn parse(input: &[u8], charset: Charset) -> Result<LocalPart, Error> {
        if input.is_empty() {
            return Err(Error::new(ErrorKind::Empty, 0));
        }
        if input.len() > MAX_LOCAL_PART {
            return Err(Error::new(ErrorKind::LocalPartTooLong, MAX_LOCAL_PART));
        }
        let text = match charset {
            Charset::Ascii => {
                if let Some(i) = input.iter().position(|b| !b.is_ascii()) {
                    return Err(Error::new(ErrorKind::NonAscii, i));
                }
                std::str::from_utf8(input)
                    .map_err(|e| Error::new(ErrorKind::InvalidUtf8, e.valid_up_to()))?
            }
            Charset::Utf8 => std::str::from_utf8(input)
                .map_err(|e| Error::new(ErrorKind::InvalidUtf8, e.valid_up_to()))?,
        };
        let quoted = input[0] == b'"';
        if quoted {
            check_quoted(input)?;
        } else {
            check_dot_atom(input)?;
        }
        Ok(LocalPart {
            text: text.to_string(),
            quoted,
        })
    }

    /// The local part as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// True for a quoted-string local part.
    pub fn is_quoted(&self) -> bool {
        self.quoted
    }

    /// True when the local part holds non-ASCII characters (needs SMTPUTF8).
    pub fn needs_smtputf8(&self) -> bool {
        !self.text.is_ascii()
    }

    /// True when longer than RFC 5321's 64 bytes (accepted by Tern anyway).
    pub fn exceeds_rfc_limit(&self) -> bool {
        self.text.len() > RFC_MAX_LOCAL_PART
    }

    /// The local part with ASCII letters lower-cased: qmail's lookup key for
    /// `users/assign`, `virtualdomains` and the like.
    pub fn to_lowercase_key(&self) -> String {
        self.text.to_ascii_lowercase()
    }
}

fn check_dot_atom(input: &[u8]) -> Result<(), Error> {
    let mut prev_dot = true; // a leading dot is an error
    for (i, &b) in input.iter().enumerate() {
        if b == b'.' {
            if prev_dot {
                return Err(Error::new(ErrorKind::BadDot, i));
            }
            prev_dot = true;
        } else if is_atext(b) || b >= 0x80 {
            // non-ASCII bytes were validated as UTF-8 (or refused) by the caller
            prev_dot = false;
        } else {
            return Err(Error::new(ErrorKind::BadLocalChar, i));
        }
    }
    if prev_dot {
        return Err(Error::new(ErrorKind::BadDot, input.len() - 1));
    }
    Ok(())
}

fn check_quoted(input: &[u8]) -> Result<(), Error> {
    let mut i = 1;
    while i < input.len() {
        match input[i] {
            b'"' => {
                if i + 1 != input.len() {
                    return Err(Error::new(ErrorKind::BadQuoting, i + 1));
                }
                return Ok(());
            }
            b'\\' => {
                match input.get(i + 1) {
                    Some(32..=126) => {}
                    Some(_) => return Err(Error::new(ErrorKind::BadQuotedChar, i + 1)),
                    None => return Err(Error::new(ErrorKind::BadQuoting, i + 1)),
                }
                i += 2;
            }
            b if is_qtext(b) || b >= 0x80 => i += 1,
            _ => return Err(Error::new(ErrorKind::BadQuotedChar, i)),
        }
    }
    Err(Error::new(ErrorKind::BadQuoting, input.len()))
}

impl fmt::Display for LocalPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Appends `local` to `out` as an RFC 5321 Quoted-string: in double
/// quotes, with a backslash before every `"` and `\`. For a local part
/// that is not a dot-string, wherever an address is written (SMTP paths,
/// `Return-Path:`). The bytes are not checked: the caller has.
pub fn push_quoted(local: &[u8], out: &mut Vec<u8>) {
    out.reserve(local.len() + 2);
    out.push(b'"');
    for &b in local {
        if b == b'"' || b == b'\\' {
            out.push(b'\\');
        }
        out.push(b);
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    #[test]
    fn quoting_escapes_quotes_and_backslashes() {
        let mut out = b"x".to_vec();
        super::push_quoted(br#"a b"c\d"#, &mut out);
        assert_eq!(out, br#"x"a b\"c\\d""#);
        let mut empty = Vec::new();
        super::push_quoted(b"", &mut empty);
        assert_eq!(empty, b"\"\"");
    }

    use super::*;

    #[test]
    fn bad_local_parts_are_rejected_with_kind_and_offset() {
        use ErrorKind::*;
        let too_long = "a".repeat(256);
        let cases: &[(&[u8], Charset, ErrorKind, usize)] = &[
            (b"", Charset::Ascii, Empty, 0),
            (too_long.as_bytes(), Charset::Ascii, LocalPartTooLong, 255),
            (b".a", Charset::Ascii, BadDot, 0),
            (b"a.", Charset::Ascii, BadDot, 1),
            (b"a..b", Charset::Ascii, BadDot, 2),
            (b".", Charset::Ascii, BadDot, 0),
            (b"a b", Charset::Ascii, BadLocalChar, 1),
            (b"a@b", Charset::Ascii, BadLocalChar, 1),
            (b"a(b)", Charset::Ascii, BadLocalChar, 1),
            (b"a\nb", Charset::Ascii, BadLocalChar, 1),
            (b"a\0", Charset::Ascii, BadLocalChar, 1),
            (b"a\"b", Charset::Ascii, BadLocalChar, 1),
            ("j\u{f6}rg".as_bytes(), Charset::Ascii, NonAscii, 1),
            (b"j\xf6rg", Charset::Utf8, InvalidUtf8, 1),
            (b"\"", Charset::Ascii, BadQuoting, 1),
            (b"\"abc", Charset::Ascii, BadQuoting, 4),
            (b"\"a\"b", Charset::Ascii, BadQuoting, 3),
            (b"\"a\\", Charset::Ascii, BadQuoting, 3),
            (b"\"a\\\n\"", Charset::Ascii, BadQuotedChar, 3),
            (b"\"a\rb\"", Charset::Ascii, BadQuotedChar, 2),
            (b"\"a\tb\"", Charset::Ascii, BadQuotedChar, 2),
        ];
        for (input, cs, kind, offset) in cases {
            let e = LocalPart::parse(input, *cs).expect_err("should be rejected");
            assert_eq!(
                (e.kind(), e.offset()),
                (*kind, *offset),
                "input {:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn good_local_parts() {
        let max = "a".repeat(255);
        let cases: &[(&[u8], bool)] = &[
            (b"a", false),
            (b"John.Doe", false),
            (b"a+tag-x_y", false),
            (b"!#$%&'*+-/=?^_`{|}~", false),
            (b"\"\"", true),
            (b"\"john doe\"", true),
            (b"\"a@b\"", true),
            (b"\"a\\\"b\"", true),
            (b"\"a..b.\"", true),
            (max.as_bytes(), false),
        ];
        for (input, quoted) in cases {
            let l = LocalPart::parse(input, Charset::Ascii).expect("valid local part");
            assert_eq!(l.is_quoted(), *quoted);
            assert_eq!(l.as_str().as_bytes(), *input);
            assert!(!l.needs_smtputf8());
        }
        assert!(
            LocalPart::parse(max.as_bytes(), Charset::Ascii)
                .unwrap()
                .exceeds_rfc_limit()
        );
        let limit = "a".repeat(64);
        assert!(
            !LocalPart::parse(limit.as_bytes(), Charset::Ascii)
                .unwrap()
                .exceeds_rfc_limit()
        );
        let utf = LocalPart::parse("j\u{f6}rg".as_bytes(), Charset::Utf8).unwrap();
        assert!(utf.needs_smtputf8());
        let q = LocalPart::parse("\"j\u{f6} rg\"".as_bytes(), Charset::Utf8).unwrap();
        assert!(q.needs_smtputf8());
        assert_eq!(
            LocalPart::parse(b"Ab.C", Charset::Ascii)
                .unwrap()
                .to_lowercase_key(),
            "ab.c"
        );
    }
}
