//! `Authentication-Results:` fields (RFC 8601): which host a field claims
//! to come from (its authserv-id), so that a receiving MTA can remove the
//! fields that claim to be its own before it adds its results (RFC 8601
//! §5: forged results under our name must not reach the reader).
//!
//! Only the authserv-id is parsed: optional CFWS (blanks, folding,
//! comments, nested at most [`MAX_COMMENT_DEPTH`] deep), then a `value`
//! (RFC 2045 token or quoted-string). A field whose start cannot be parsed
//! that way, or whose value is over [`MAX_VALUE`] bytes, is treated as
//! claiming our id: removing a doubtful field is safe, keeping a forged one
//! is not.

use crate::header::{Field, Header};

/// The field name.
pub const FIELD: &str = "Authentication-Results";
/// Longest value looked at; longer fields are removed.
pub const MAX_VALUE: usize = 64 * 1024;
/// Deepest comment nesting parsed.
pub const MAX_COMMENT_DEPTH: usize = 8;

/// Skips blanks, line breaks and comments; `None` on an unclosed or too
/// deep comment.
fn skip_cfws(v: &[u8], mut i: usize) -> Option<usize> {
    loop {
        match v.get(i) {
            Some(b' ' | b'\t' | b'\r' | b'\n') => i += 1,
            Some(b'(') => {
                let mut depth = 0usize;
                loop {
                    match v.get(i)? {
                        b'(' => {
                            depth += 1;
                            if depth > MAX_COMMENT_DEPTH {
                                return None;
                            }
                        }
                        b')' => {
                            depth -= 1;
                            if depth == 0 {
                                i += 1;
                                break;
                            }
                        }
                        b'\\' => i += 1,
                        _ => {}
                    }
                    i += 1;
                }
            }
            _ => return Some(i),
        }
    }
}

/// RFC 2045 `tspecials` and what else ends a token.
fn token_byte(b: u8) -> bool {
    (b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?=".contains(&b)) || b >= 0x80
}

/// The authserv-id of an `Authentication-Results:` value (what follows the
/// colon), unquoted; `None` when it cannot be parsed.
pub fn authserv_id(value: &[u8]) -> Option<Vec<u8>> {
    let i = skip_cfws(value, 0)?;
    match value.get(i)? {
        b'"' => {
            let mut out = Vec::new();
            let mut j = i + 1;
            loop {
                match *value.get(j)? {
                    b'"' => return (!out.is_empty()).then_some(out),
                    b'\\' => {
                        out.push(*value.get(j + 1)?);
                        j += 2;
                    }
                    b'\r' | b'\n' => j += 1,
                    b => {
                        out.push(b);
                        j += 1;
                    }
                }
            }
        }
        _ => {
            let n = value[i..].iter().take_while(|&&b| token_byte(b)).count();
            (n > 0).then(|| value[i..i + n].to_vec())
        }
    }
}

/// True when `field` is an `Authentication-Results:` field that claims the
/// authserv-id `id` (ASCII case-insensitive), or one too long or too
/// malformed to tell.
pub fn claims(field: &Field<'_>, id: &str) -> bool {
    if !field.is(FIELD) {
        return false;
    }
    let value = field.value();
    if value.len() > MAX_VALUE {
        return true;
    }
    match authserv_id(value) {
        Some(found) => found.eq_ignore_ascii_case(id.as_bytes()),
        None => true,
    }
}

/// The header's bytes without the fields that [`claims`] `id`, and how
/// many were removed. The separator and body start are not included.
pub fn without_ours(header: &Header, id: &str) -> (Vec<u8>, usize) {
    let mut out = Vec::with_capacity(header.raw().len());
    let mut removed = 0;
    for f in header.fields() {
        if claims(&f, id) {
            removed += 1;
        } else {
            out.extend_from_slice(f.raw());
        }
    }
    (out, removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header::Limits;

    #[test]
    fn ids() {
        let cases: &[(&str, Option<&str>)] = &[
            (" mx.example.net; spf=pass", Some("mx.example.net")),
            ("mx.example.net 1; none", Some("mx.example.net")),
            (
                " (comment (nested)) mx.example.net;",
                Some("mx.example.net"),
            ),
            ("\n\tmx.example.net\n\t; none", Some("mx.example.net")),
            (" \"mx.example.net\"; none", Some("mx.example.net")),
            (" \"mx\\.ex\"; none", Some("mx.ex")),
            (" MX.Example.NET;", Some("MX.Example.NET")),
            // bad inputs
            ("", None),
            (" ", None),
            (" ;spf=pass", None),
            (" (unclosed mx.example.net;", None),
            (" (((((((((deep))))))))) mx;", None),
            (" \"unterminated", None),
            (" \"\";", None),
            (" \"trailing\\", None),
        ];
        for (v, want) in cases {
            assert_eq!(
                authserv_id(v.as_bytes()).as_deref(),
                want.map(str::as_bytes),
                "{v:?}"
            );
        }
    }

    fn strip(msg: &str, id: &str) -> (String, usize) {
        let h = Header::read(&mut msg.as_bytes(), &Limits::default()).unwrap();
        let (kept, n) = without_ours(&h, id);
        (String::from_utf8(kept).unwrap(), n)
    }

    #[test]
    fn removes_only_ours() {
        let msg = "Authentication-Results: mx.example.net; spf=pass\n\
                   Subject: s\n\
                   authentication-results: (x) MX.EXAMPLE.NET;\n dkim=pass\n\
                   Authentication-Results: other.example; spf=fail\n\
                   Authentication-Results: mx.example.net.evil; none\n\
                   Authentication-Results : \"mx.example.net\"; none\n\
                   Authentication-Results: (broken\n\
                   X-Authentication-Results: mx.example.net; none\n\
                   \n\
                   Authentication-Results: mx.example.net; body\n";
        let (kept, n) = strip(msg, "mx.example.net");
        assert_eq!(n, 4);
        assert_eq!(
            kept,
            "Subject: s\n\
             Authentication-Results: other.example; spf=fail\n\
             Authentication-Results: mx.example.net.evil; none\n\
             X-Authentication-Results: mx.example.net; none\n"
        );
    }

    #[test]
    fn long_fields_are_removed() {
        let mut msg = String::from("Authentication-Results: other.example;");
        msg.push_str(&" x".repeat(MAX_VALUE));
        msg.push_str("\nSubject: s\n\n");
        let (kept, n) = strip(&msg, "mx.example.net");
        assert_eq!((kept.as_str(), n), ("Subject: s\n", 1));
    }
}
