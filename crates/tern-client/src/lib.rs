//! `tern-client`: the SMTP (and LMTP) client protocol, blocking, over any
//! `Read + Write` stream.
//!
//! What it owns:
//!
//! * [`reply`]: reading replies (sans-I/O [`reply::ReplyParser`]):
//!   multi-line replies, bounded line length and line count, consistent
//!   codes; every bad input a typed [`reply::ReplyError`]; reply texts made
//!   printable and bounded for logs and bounces ([`reply::sanitise`]);
//! * [`ehlo`]: the extensions the server offers
//!   ([`ehlo::Capabilities`]: PIPELINING, SIZE, 8BITMIME, SMTPUTF8,
//!   STARTTLS);
//! * [`message`]: the message on the wire: CRLF line ends for every stored
//!   line end (LF, CRLF, bare CR), dot-stuffing, lines over 998 octets
//!   broken with CRLF SPACE (deterministically), `.` CRLF at the end, and
//!   a counting pass for the exact `SIZE=` ([`message::scan`]); a stored
//!   byte sequence can never end DATA early at the next hop;
//! * [`address`]: envelope addresses in `<…>`, quoted when needed, and
//!   refused when they could break a command line;
//! * [`tls`]: rustls client configurations (opportunistic: any
//!   certificate, handshake signatures still checked; verify: a CA bundle
//!   and the host name) and what a session used ([`tls::TlsInfo`]);
//! * [`client`]: the session ([`Client`]): greeting, EHLO with HELO
//!   fallback (or LMTP's LHLO, [`Protocol::Lmtp`], with one reply per
//!   accepted recipient after the message), STARTTLS, transactions with or without PIPELINING
//!   ([`Client::send`], one [`RcptResult`] per recipient), RSET only when a
//!   transaction was left open, QUIT.
//!
//! Who calls it: `tern-remote`, which resolves where to connect, opens the
//! TCP connection with its timeouts, chooses the TLS policy, and reports the
//! results. This crate opens no connection, reads no files except a CA
//! bundle it is pointed at, reads no environment and prints nothing.
//!
//! Trust level: every byte read comes from a remote server; every buffer
//! is bounded, and texts handed back are sanitised.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod address;
pub mod client;
pub mod ehlo;
pub mod message;
pub mod reply;
pub mod tls;

pub use client::{Client, Envelope, Error, Protocol, RcptResult, Stage, Status, Transaction};
pub use ehlo::Capabilities;
pub use message::{FileSource, Scan, Source, scan};
pub use reply::{Reply, ReplyError};
pub use tls::{TlsConfig, TlsInfo};
