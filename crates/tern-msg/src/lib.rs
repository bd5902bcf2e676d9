//! `tern-msg`: RFC 5322 message work for injection, without I/O beyond the
//! `Read`/`Write` streams it is handed.
//!
//! What it owns:
//!
//! * [`header`]: splitting a message on a reader into a bounded, byte-exact
//!   [`header::Header`] and a body that stays on the reader to be streamed
//!   through untouched (8-bit, NUL, long lines, no final newline);
//! * [`address`]: RFC 5322 address-list parsing with qmail-inject's
//!   completion rules — the only RFC 5322 address parser in Tern;
//! * [`inject`]: the injection fix-ups (added `Date:`, `Message-ID:`,
//!   `From:`; removed `Bcc:`, `Resent-Bcc:`, `Return-Path:`,
//!   `Content-Length:`) and envelope recipient extraction;
//! * [`dsn`]: RFC 3464 bounce messages (delivery status notifications);
//! * [`dot`]: sendmail's "a lone `.` line ends the input" reader;
//! * [`cmdline`]: the hand-written argument parsers of `tern-inject` and
//!   `sendmail`.
//!
//! Who calls it: the `tern-inject` and `sendmail` programs, which read the
//! control files (through tern-control) and hand the values in as
//! [`inject::Controls`]; this crate reads no files and prints nothing.
//!
//! Trust level: everything here parses bytes supplied by the (unprivileged)
//! calling user. Every parser is bounded and returns typed errors with
//! static hints.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod address;
pub mod authres;
pub mod cmdline;
pub mod crlf;
pub mod dot;
pub mod dsn;
pub mod header;
pub mod inject;
pub mod qualify;
pub mod verp;
