//! VERP: qmail's variable envelope return paths. A sender of the form
//! `prefix-@host-@[]` asks for a different envelope sender for each
//! recipient: for `local@domain` it is `prefix-local=domain@host`, so a
//! bounce names the recipient it is about (ezmlm and other mailing-list
//! managers rely on it). qmail-send expands it per recipient; so does
//! tern-send, and each recipient then gets its own SMTP transaction.

/// The VERP form marker at the end of a sender.
const MARK: &[u8] = b"-@[]";

/// True when `sender` asks for VERP (`prefix-@host-@[]`).
pub fn is_verp(sender: &[u8]) -> bool {
    expand(sender, b"x@y").is_some()
}

/// The envelope sender for `recipient`: `sender` expanded when it is a
/// VERP sender and `recipient` has an `@`, else `sender` unchanged.
pub fn sender_for(sender: &[u8], recipient: &[u8]) -> Vec<u8> {
    expand(sender, recipient).unwrap_or_else(|| sender.to_vec())
}

fn expand(sender: &[u8], recipient: &[u8]) -> Option<Vec<u8>> {
    let body = sender.strip_suffix(MARK)?;
    // `prefix-@host`: the last '@' splits prefix (with its '-') and host.
    let at = body.iter().rposition(|&b| b == b'@')?;
    let (prefix, host) = (&body[..at], &body[at + 1..]);
    if host.is_empty() {
        return None;
    }
    let rat = recipient.iter().rposition(|&b| b == b'@')?;
    let (local, domain) = (&recipient[..rat], &recipient[rat + 1..]);
    let mut out = Vec::with_capacity(prefix.len() + recipient.len() + host.len() + 2);
    out.extend_from_slice(prefix);
    out.extend_from_slice(local);
    out.push(b'=');
    out.extend_from_slice(domain);
    out.push(b'@');
    out.extend_from_slice(host);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expansion_as_qmail_send() {
        let s = b"owner-list-@lists.example-@[]";
        assert!(is_verp(s));
        assert_eq!(
            sender_for(s, b"joe@x.example"),
            b"owner-list-joe=x.example@lists.example"
        );
        // A recipient without '@' keeps the sender as written.
        assert_eq!(sender_for(s, b"joe"), s);
        for plain in [
            &b"owner@lists.example"[..],
            b"",
            b"#@[]",
            b"-@[]",
            b"x@-@[]",
            b"@[]",
        ] {
            assert!(!is_verp(plain), "{:?}", String::from_utf8_lossy(plain));
            assert_eq!(sender_for(plain, b"a@b"), plain);
        }
    }
}
