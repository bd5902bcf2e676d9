//! `tern-log`: one event per line, as `key=value` pairs, on stderr.
//!
//! Every Tern program logs through [`Event`]: a program name, an `event`
//! key, then fields. Values that came from outside (addresses, remote text)
//! are escaped by [`escape`] so that they can never forge a field, a line or
//! a terminal control sequence. The field names are a documented, stable
//! interface (docs/logging.md).
//!
//! [`parse::parse_line`] reads a line back (for `ternctl report`).
//!
//! [`install_panic_hook`] turns a panic (always a bug) into one log line and
//! the program's documented "internal bug" exit code.
#![forbid(unsafe_code)]
#![deny(clippy::print_stdout)]

use std::fmt::Write as _;
use std::io::Write as _;

pub mod parse;

/// Escapes a value for a log line (logfmt style). Bytes outside printable
/// ASCII, `"` and `\\` become `\\xHH`; a value that is empty or holds a space
/// or `=` is wrapped in double quotes. The result never contains a newline,
/// a control character, or an unquoted space or `=`, so an untrusted value
/// cannot forge a field or a line.
pub fn escape(value: &[u8]) -> String {
    let quote = value.is_empty() || value.iter().any(|&b| b == b' ' || b == b'=');
    let mut out = String::with_capacity(value.len() + 2);
    if quote {
        out.push('"');
    }
    for &b in value {
        if (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\' {
            out.push(b as char);
        } else {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    if quote {
        out.push('"');
    }
    out
}

/// One log event under construction. Written with [`Event::emit`].
#[must_use = "an event is written only by emit()"]
pub struct Event {
    line: String,
}

impl Event {
    /// Starts an event line: `<program>: event=<name>`.
    pub fn new(program: &str, event: &str) -> Self {
        let mut line = String::with_capacity(128);
        line.push_str(program);
        line.push_str(": event=");
        line.push_str(event);
        Event { line }
    }

    /// Adds `key=value` with the value escaped.
    pub fn field(mut self, key: &str, value: impl AsRef<[u8]>) -> Self {
        self.line.push(' ');
        self.line.push_str(key);
        self.line.push('=');
        self.line.push_str(&escape(value.as_ref()));
        self
    }

    /// Adds `key=value` for a number.
    pub fn num(mut self, key: &str, value: impl std::fmt::Display) -> Self {
        let _ = write!(self.line, " {key}={value}");
        self
    }

    /// The line as it would be written (without the newline).
    pub fn as_str(&self) -> &str {
        &self.line
    }

    /// Writes the line to stderr in one `write` (errors are ignored: a
    /// program never fails because its log is gone).
    pub fn emit(mut self) {
        self.line.push('\n');
        let _ = std::io::stderr().lock().write_all(self.line.as_bytes());
    }
}

/// Installs a panic hook that logs `event=panic` with the location and then
/// exits at once with `exit_code` (the program's "internal bug" code), so a
/// bug is never mistaken for a delivery result and never leaves a half
/// promise behind.
pub fn install_panic_hook(program: &'static str, exit_code: i32) {
    std::panic::set_hook(Box::new(move |info| {
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let msg = if let Some(s) = info.payload().downcast_ref::<&str>() {
            (*s).to_string()
        } else if let Some(s) = info.payload().downcast_ref::<String>() {
            s.clone()
        } else {
            String::new()
        };
        Event::new(program, "panic")
            .field("location", location)
            .field("reason", msg)
            .emit();
        tern_sys::signals::exit_now(exit_code);
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_cannot_forge_fields_or_lines() {
        assert_eq!(escape(b""), "\"\"");
        assert_eq!(escape(b"a b"), "\"a b\"");
        assert_eq!(escape(b"x\nevent=fake"), "\"x\\x0aevent=fake\"");
        assert_eq!(escape(b"say \"hi\""), "\"say \\x22hi\\x22\"");
        assert_eq!(escape(b"back\\slash"), "back\\x5cslash");
        assert_eq!(escape(b"\x1b[31m"), "\\x1b[31m");
        assert_eq!(escape("é".as_bytes()), "\\xc3\\xa9");
        assert_eq!(escape(b"user@example.com"), "user@example.com");
    }

    #[test]
    fn event_line_shape() {
        let e = Event::new("tern-queue", "queued")
            .num("qid", 42)
            .field("sender", b"a b@c");
        assert_eq!(
            e.as_str(),
            "tern-queue: event=queued qid=42 sender=\"a b@c\""
        );
    }
}
