//! The `Received:` line `tern-smtpd` adds on top of each message.
//!
//! ```text
//! Received: from <helo> (<remote host> [<remote ip>])
//!   by <me> with <SMTP|ESMTP> id <id>; <date>
//!   by <me> with ESMTPS (TLS1.3 TLS_AES_256_GCM_SHA384) id <id>; <date>
//! ```
//!
//! Every value that came from the client or the environment is
//! sanitised: only ASCII letters, digits and `.-:[]` are kept, every other
//! byte becomes `?`, and each is cut to [`MAX_FIELD`] bytes, so the line
//! can neither break a header nor grow without bound.

/// Longest value placed in the line.
pub const MAX_FIELD: usize = 128;

/// `value` with every byte outside `[A-Za-z0-9.-:[]]` replaced by `?`, at
/// most [`MAX_FIELD`] bytes; `unknown` when empty.
pub fn sanitize(value: &[u8]) -> String {
    if value.is_empty() {
        return "unknown".to_string();
    }
    value
        .iter()
        .take(MAX_FIELD)
        .map(|&b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']') {
                char::from(b)
            } else {
                '?'
            }
        })
        .collect()
}

/// What the line says.
#[derive(Debug, Clone, Copy)]
pub struct ReceivedFields<'a> {
    /// The HELO/EHLO argument (empty when none was given).
    pub helo: &'a [u8],
    /// The client's host name (`TCPREMOTEHOST`), empty when unknown.
    pub remote_host: &'a [u8],
    /// The client's address, empty when unknown.
    pub remote_ip: &'a [u8],
    /// This host (`control/me`).
    pub me: &'a str,
    /// `SMTP` or `ESMTP` (`SMTPS`, `ESMTPS` over TLS).
    pub protocol: &'a str,
    /// Over TLS: the version and cipher suite (`TLS1.3
    /// TLS_AES_256_GCM_SHA384`), written in parentheses after the
    /// protocol; empty otherwise. Letters, digits, `.`, `_`, `-` and
    /// spaces are kept, other bytes become `?`.
    pub tls: &'a str,
    /// The transaction id (the `qp` of the reply).
    pub id: &'a str,
    /// The date, RFC 5322 form.
    pub date: &'a str,
}

/// The header line, two physical lines, LF-terminated.
pub fn received(f: &ReceivedFields<'_>) -> Vec<u8> {
    let tls = if f.tls.is_empty() {
        String::new()
    } else {
        let t: String = f
            .tls
            .bytes()
            .take(MAX_FIELD)
            .map(|b| {
                if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b' ') {
                    char::from(b)
                } else {
                    '?'
                }
            })
            .collect();
        format!(" ({t})")
    };
    format!(
        "Received: from {} ({} [{}])\n  by {} with {}{} id {}; {}\n",
        sanitize(f.helo),
        sanitize(f.remote_host),
        sanitize(f.remote_ip),
        sanitize(f.me.as_bytes()),
        sanitize(f.protocol.as_bytes()),
        tls,
        sanitize(f.id.as_bytes()),
        f.date
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_values_are_neutralised() {
        assert_eq!(sanitize(b"a b\r\nX-Evil: 1"), "a?b??X-Evil:?1");
        assert_eq!(sanitize(b""), "unknown");
        assert_eq!(sanitize(&[b'a'; 500]).len(), MAX_FIELD);
        assert_eq!(sanitize("exämple".as_bytes()), "ex??mple");
        assert_eq!(sanitize(b"[127.0.0.1]"), "[127.0.0.1]");
        assert_eq!(sanitize(b"[IPv6:::1]"), "[IPv6:::1]");
    }

    #[test]
    fn layout() {
        let line = received(&ReceivedFields {
            helo: b"client.example",
            remote_host: b"",
            remote_ip: b"127.0.0.1",
            me: "mx.example",
            protocol: "ESMTP",
            tls: "",
            id: "1234",
            date: "Fri, 27 Nov 2026 09:16:24 +0000",
        });
        assert_eq!(
            line,
            b"Received: from client.example (unknown [127.0.0.1])\n  by mx.example with ESMTP id 1234; Fri, 27 Nov 2026 09:16:24 +0000\n"
        );
        let line = received(&ReceivedFields {
            helo: b"client.example",
            remote_host: b"",
            remote_ip: b"127.0.0.1",
            me: "mx.example",
            protocol: "ESMTPS",
            tls: "TLS1.3 TLS_AES_256_GCM_SHA384\n)(",
            id: "1234",
            date: "Fri, 27 Nov 2026 09:16:24 +0000",
        });
        assert_eq!(
            String::from_utf8(line).unwrap(),
            "Received: from client.example (unknown [127.0.0.1])\n  by mx.example with ESMTPS (TLS1.3 TLS_AES_256_GCM_SHA384???) id 1234; Fri, 27 Nov 2026 09:16:24 +0000\n"
        );
    }
}
