//! `tern-addr`: validated mail address types for the whole Tern suite.
//!
//! Every address that crosses a trust boundary (an SMTP envelope, a control
//! file, a command line) is turned into one of these newtypes before it is
//! used:
//!
//! * [`Domain`]: a host name of ASCII letter-digit-hyphen labels (or UTF-8
//!   labels when [`Charset::Utf8`] allows internationalised names), or an
//!   address literal `[192.0.2.1]` / `[IPv6:2001:db8::1]`. Comparison is
//!   case-insensitive.
//! * [`LocalPart`]: a dot-atom or a quoted string, with the RFC 5321 limit of
//!   64 bytes relaxed to [`MAX_LOCAL_PART`] (255) for compatibility; it records
//!   whether it needs SMTPUTF8.
//! * [`Mailbox`]: `local@domain`, split at the last `@`.
//!
//! Parsers do no I/O and have fixed bounds. A rejected input yields an
//! [`Error`] carrying an [`ErrorKind`] (with a static hint) and the byte
//! offset of the problem; the rejected bytes are never echoed.
//!
//! Callers: tern-control (domain lists), tern-smtpd (envelope addresses),
//! tern-inject, tern-send. Trust level: parses untrusted network input.
#![forbid(unsafe_code)]
#![deny(clippy::print_stdout, clippy::print_stderr)]

mod domain;
mod error;
mod local;
mod mailbox;

pub use domain::{Domain, DomainKind};
pub use error::{Error, ErrorKind};
pub use local::{LocalPart, push_quoted};
pub use mailbox::Mailbox;

/// Longest domain accepted, in bytes (RFC 5321 4.5.3.1.2).
pub const MAX_DOMAIN: usize = 255;
/// Longest label of a domain name, in bytes (RFC 1035).
pub const MAX_LABEL: usize = 63;
/// The RFC 5321 limit for a local part, in bytes. Longer local parts up to
/// [`MAX_LOCAL_PART`] are accepted (see [`LocalPart::exceeds_rfc_limit`]).
pub const RFC_MAX_LOCAL_PART: usize = 64;
/// Longest local part accepted, in bytes: the lenient limit that Tern uses
/// for compatibility with real-world mail (RFC 5321 says 64).
pub const MAX_LOCAL_PART: usize = 255;
/// Longest mailbox accepted, in bytes: local part, `@`, domain.
pub const MAX_MAILBOX: usize = MAX_LOCAL_PART + 1 + MAX_DOMAIN;

/// Which characters a parser accepts beyond ASCII.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charset {
    /// ASCII only (a peer that did not negotiate SMTPUTF8).
    Ascii,
    /// UTF-8 allowed in local parts and domain labels (RFC 6531 / IDN).
    Utf8,
}
