//! SMTP replies: a three-digit code, an optional enhanced status code
//! (RFC 3463) and one or more lines of text.
//!
//! Formatting never lets a line break or other control character through
//! (each becomes `?`), so a value placed in a reply cannot forge a second
//! reply.

/// One reply, possibly multi-line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The reply code (e.g. 250).
    pub code: u16,
    /// The enhanced status code (e.g. `2.1.0`), repeated on every line.
    pub enhanced: Option<&'static str>,
    /// The lines of text (at least one; may be empty strings).
    pub lines: Vec<String>,
}

impl Reply {
    /// A one-line reply with an enhanced status code.
    pub fn new(code: u16, enhanced: &'static str, text: impl Into<String>) -> Reply {
        Reply {
            code,
            enhanced: Some(enhanced),
            lines: vec![text.into()],
        }
    }

    /// A reply without an enhanced code (greeting, EHLO, 354).
    pub fn plain(code: u16, lines: Vec<String>) -> Reply {
        Reply {
            code,
            enhanced: None,
            lines,
        }
    }

    /// True for 4xx and 5xx replies.
    pub fn is_failure(&self) -> bool {
        self.code >= 400
    }

    /// The wire form: every line ends with CRLF; all but the last have a
    /// `-` after the code.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let lines: &[String] = if self.lines.is_empty() {
            &[String::new()][..]
        } else {
            &self.lines
        };
        for (i, line) in lines.iter().enumerate() {
            let sep = if i + 1 == lines.len() { ' ' } else { '-' };
            out.extend_from_slice(format!("{:03}{sep}", self.code).as_bytes());
            if let Some(e) = self.enhanced {
                out.extend_from_slice(e.as_bytes());
                if !line.is_empty() {
                    out.push(b' ');
                }
            }
            out.extend(
                line.bytes()
                    .map(|b| if b < 0x20 || b == 0x7f { b'?' } else { b }),
            );
            out.extend_from_slice(b"\r\n");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_cannot_forge_lines() {
        let r = Reply::new(550, "5.1.1", "no\r\n250 ok\0");
        assert_eq!(r.to_bytes(), b"550 5.1.1 no??250 ok?\r\n");
    }

    #[test]
    fn multi_line_and_plain() {
        let r = Reply::plain(250, vec!["me".into(), "PIPELINING".into(), "SIZE".into()]);
        assert_eq!(r.to_bytes(), b"250-me\r\n250-PIPELINING\r\n250 SIZE\r\n");
        let r = Reply {
            code: 214,
            enhanced: Some("2.0.0"),
            lines: vec!["a".into(), "b".into()],
        };
        assert_eq!(r.to_bytes(), b"214-2.0.0 a\r\n214 2.0.0 b\r\n");
        assert_eq!(Reply::plain(354, vec![]).to_bytes(), b"354 \r\n");
        assert!(Reply::new(421, "4.4.2", "x").is_failure());
        assert!(!Reply::new(250, "2.0.0", "x").is_failure());
    }
}
