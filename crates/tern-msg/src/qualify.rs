//! Qualifying the addresses of a locally injected header, as qmail-inject
//! and Postfix's local rewriting do: a bare local part (`To: test`, a
//! mailbox without `@`) in an address field gets `@defaulthost`, so that a
//! reply, or a reply to all, reaches this host and not the reader's.
//!
//! Only that changes. Every other byte of the field stays as it came:
//! display names, comments, quoted strings, groups, folding, addresses that
//! already have a domain (`bob@x` is not completed to `bob@x.defaultdomain`
//! here, though its envelope form is). `@host` is inserted right after the
//! local part. A line that insertions make longer than [`SOFT_LINE`] bytes
//! is folded after its next comma (an inserted line end followed by a
//! space: folding white space, where RFC 5322 allows it), so lines stay
//! bounded. A field that does not parse as an address list, or is longer
//! than the field limit, is left alone: its parse error, if it matters,
//! is reported where recipients are taken from it.
//!
//! Mail received over SMTP never comes here: only `sendmail` and
//! `tern-inject` call [`qualify_field`] (through `inject::fix`).

use crate::address::{Completion, list_shape};
use crate::header::{Field, Limits};

/// The fields whose addresses are qualified (`Bcc` and `Resent-Bcc` are
/// removed at injection anyway).
pub const FIELDS: [&str; 10] = [
    "From",
    "Sender",
    "Reply-To",
    "To",
    "Cc",
    "Resent-From",
    "Resent-Sender",
    "Resent-Reply-To",
    "Resent-To",
    "Resent-Cc",
];

/// Line length past which a line grown by insertions is folded at its next
/// comma (RFC 5322's recommended 78).
pub const SOFT_LINE: usize = 78;

/// True when `field` is one whose addresses are qualified.
pub fn is_address_field(field: &Field<'_>) -> bool {
    FIELDS.iter().any(|n| field.is(n))
}

/// The field with `@host` inserted after every bare local part, where
/// `host` is the completed `defaulthost` of `completion`; `None` when
/// nothing changes (no bare local part, not an address list, longer than
/// `limits.max_field`). `eol` is the line end used for added folds.
pub fn qualify_field(
    field: &Field<'_>,
    completion: &Completion,
    eol: &[u8],
    limits: &Limits,
) -> Option<Vec<u8>> {
    let value = field.value_bounded(limits).ok()?;
    let shape = list_shape(value, completion).ok()?;
    if shape.bare_ends.is_empty() {
        return None;
    }
    let host = completion.default_host();
    let raw = field.raw();
    // The value starts after the colon and is followed by the line end.
    let value_start = field.value_offset();
    let head = &raw[..value_start];
    let tail = &raw[value_start + value.len()..];
    let mut out = Vec::with_capacity(raw.len() + shape.bare_ends.len() * (host.len() + 1) + 16);
    out.extend_from_slice(head);
    // Bytes since the last line end of the output, and whether an insertion
    // lengthened the current line.
    let mut col = head.len();
    let mut grown = false;
    let mut bare = shape.bare_ends.iter().peekable();
    let mut commas = shape.commas.iter().peekable();
    for (i, &b) in value.iter().enumerate() {
        if bare.peek() == Some(&&i) {
            bare.next();
            out.push(b'@');
            out.extend_from_slice(&host);
            col += 1 + host.len();
            grown = true;
        }
        out.push(b);
        if b == b'\n' {
            col = 0;
            grown = false;
        } else {
            col += 1;
        }
        if commas.peek() == Some(&&i) {
            commas.next();
            let next = value.get(i + 1).copied();
            let breaks_anyway = matches!(next, None | Some(b'\r' | b'\n'));
            if grown && col > SOFT_LINE && !breaks_anyway {
                out.extend_from_slice(eol);
                if !matches!(next, Some(b' ' | b'\t')) {
                    out.push(b' ');
                }
                col = 0;
                grown = false;
            }
        }
    }
    if bare.peek() == Some(&&value.len()) {
        out.push(b'@');
        out.extend_from_slice(&host);
    }
    out.extend_from_slice(tail);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header::Header;

    fn completion() -> Completion {
        Completion {
            defaulthost: b"box".to_vec(),
            defaultdomain: b"example.org".to_vec(),
            plusdomain: b"plus.example".to_vec(),
        }
    }

    /// The header `input` with every address field qualified (unchanged
    /// fields as they came).
    fn q(input: &str) -> String {
        let h = Header::read(&mut input.as_bytes(), &Limits::default()).unwrap();
        let mut out = Vec::new();
        for f in h.fields() {
            let changed = is_address_field(&f)
                .then(|| qualify_field(&f, &completion(), b"\n", &Limits::default()))
                .flatten();
            out.extend_from_slice(changed.as_deref().unwrap_or(f.raw()));
        }
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn bare_local_parts_get_the_default_host_and_nothing_else_changes() {
        let cases = [
            ("To: test, bob@x\n", "To: test@box.example.org, bob@x\n"),
            (
                "Cc: Joe Q. Public <joe>, \"Smith, Ann\" <ann> (the boss)\n",
                "Cc: Joe Q. Public <joe@box.example.org>, \"Smith, Ann\" <ann@box.example.org> (the boss)\n",
            ),
            // a comment after a bare local part, a quoted local part
            (
                "From: joe (Joe Smith)\n",
                "From: joe@box.example.org (Joe Smith)\n",
            ),
            (
                "Reply-To: \"joe smith\"\n",
                "Reply-To: \"joe smith\"@box.example.org\n",
            ),
            // groups, empty and not
            (
                "To: undisclosed-recipients:;\n",
                "To: undisclosed-recipients:;\n",
            ),
            (
                "To: team: a, b@y ;, c\n",
                "To: team: a@box.example.org, b@y ;, c@box.example.org\n",
            ),
            // folded fields keep their folds; CRLF kept
            (
                "To: a,\n\tb (x,\n y)\r\n",
                "To: a@box.example.org,\n\tb@box.example.org (x,\n y)\r\n",
            ),
            // the end of the value, with and without white space
            ("Sender: a\n", "Sender: a@box.example.org\n"),
            ("Sender:a   \n", "Sender:a@box.example.org   \n"),
            // a source route is kept
            (
                "To: <@r.example:joe>\n",
                "To: <@r.example:joe@box.example.org>\n",
            ),
            // Resent- fields
            (
                "Resent-To: a\nResent-From: b\nResent-Cc: c\nResent-Sender: d\nResent-Reply-To: e\n",
                "Resent-To: a@box.example.org\nResent-From: b@box.example.org\nResent-Cc: c@box.example.org\nResent-Sender: d@box.example.org\nResent-Reply-To: e@box.example.org\n",
            ),
            // other fields are never touched
            (
                "Subject: joe\nIn-Reply-To: <x>\nX-To: a\nMessage-ID: <joe>\n",
                "Subject: joe\nIn-Reply-To: <x>\nX-To: a\nMessage-ID: <joe>\n",
            ),
            // addresses with a domain are not completed here
            (
                "To: bob@x, <c@[192.0.2.1]>\n",
                "To: bob@x, <c@[192.0.2.1]>\n",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(q(input), want, "{input:?}");
        }
    }

    #[test]
    fn fields_that_do_not_parse_are_left_alone() {
        for input in [
            "To: Joe Smith\n",
            "From: a@\n",
            "Cc: (unterminated\n",
            "To: a b\n",
            "To: <joe\n",
            "To: \"x\n",
            "Cc: x,\r\n y\rz\n",
        ] {
            assert_eq!(q(input), input, "{input:?}");
        }
        // Over the field limit: left alone, not refused.
        let big = format!("To: {}\n", "a, ".repeat(30_000));
        let h = Header::read(&mut big.as_bytes(), &Limits::default()).unwrap();
        let f = h.fields().next().unwrap();
        assert!(qualify_field(&f, &completion(), b"\n", &Limits::default()).is_none());
    }

    #[test]
    fn lines_grown_by_insertions_are_folded_at_commas() {
        let names: Vec<String> = (0..40).map(|i| format!("user{i}")).collect();
        let input = format!("To: {}\n", names.join(", "));
        let out = q(&input);
        for line in out.lines() {
            // one address and its host past the soft limit at most
            assert!(
                line.len() <= SOFT_LINE + 40,
                "{} bytes: {line:?}",
                line.len()
            );
        }
        // Unfolded, it is the list with every name qualified.
        let unfolded = out.replace("\n ", " ");
        let want: Vec<String> = names
            .iter()
            .map(|n| format!("{n}@box.example.org"))
            .collect();
        assert_eq!(unfolded, format!("To: {}\n", want.join(", ")));
        // Folds go before the existing blank after the comma.
        assert!(out.contains(",\n user"), "{out}");
        // Without a blank after the comma, the fold adds one.
        let out = q(&format!("To: {}\n", names.join(",")));
        assert!(out.contains(",\n user"), "{out}");
        assert_eq!(out.replace("\n ", ""), format!("To: {}\n", want.join(",")));
        // A long line the user wrote without bare local parts is kept.
        let long = format!("To: {}\n", vec!["a@x.example"; 40].join(", "));
        assert_eq!(q(&long), long);
    }

    #[test]
    fn folds_use_the_given_line_end() {
        let names: Vec<String> = (0..20).map(|i| format!("user{i}")).collect();
        let input = format!("To: {}\r\n", names.join(", "));
        let h = Header::read(&mut input.as_bytes(), &Limits::default()).unwrap();
        let f = h.fields().next().unwrap();
        let out = qualify_field(&f, &completion(), b"\r\n", &Limits::default()).unwrap();
        let out = String::from_utf8(out).unwrap();
        assert!(out.contains(",\r\n user"), "{out}");
        assert!(!out.replace("\r\n", "").contains('\n'), "{out}");
    }
}
