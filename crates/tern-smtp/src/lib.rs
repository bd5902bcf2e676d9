//! `tern-smtp`: the SMTP server protocol, without I/O.
//!
//! What it owns:
//!
//! * [`mod@line`]: splitting the input into command lines (strict CRLF: a bare
//!   CR or bare LF is an error; lines are bounded to [`line::MAX_COMMAND`]
//!   bytes including CRLF);
//! * [`command`]: parsing one command line into a [`command::Command`]
//!   (verbs, `MAIL FROM:<path>` / `RCPT TO:<path>`, ESMTP parameters);
//! * [`reply`]: formatting replies (multi-line, enhanced status codes);
//! * [`data`]: the DATA decoder, a byte-level state machine: only
//!   CRLF `.` CRLF ends the message; dot-stuffing is removed; CRLF becomes
//!   LF; a bare CR or bare LF anywhere refuses the message (SMTP smuggling
//!   protection); text lines of any length are kept as received (streamed,
//!   never held whole); size and hop count are checked;
//! * [`session`]: the server [`session::Session`]: HELO/EHLO state, the
//!   transaction (MAIL, RCPTs), the tarpit counters, driven by a plain-data
//!   [`session::Policy`] and a [`session::Checks`] implementation that the
//!   program supplies;
//! * [`received`]: the `Received:` line `tern-smtpd` puts on top;
//! * [`auth`]: SMTP AUTH (RFC 4954) PLAIN and LOGIN: strict base64 and
//!   the PLAIN message; the exchange itself is part of the session
//!   ([`session::Action::Auth`], [`session::Session::auth_result`]).
//!
//! Who calls it: `tern-smtpd`, which owns the file descriptors, the clock,
//! the control files and the queue. This crate reads no files, no
//! environment and no clock, and prints nothing.
//!
//! Trust level: every byte handed in comes from the network. Every buffer
//! is bounded; every bad input has its own typed error with a static hint.
//!
//! BDAT (RFC 3030, CHUNKING) is supported: [`command::Command::Bdat`],
//! [`session::Action::Chunk`] / [`session::Action::Discard`] and
//! [`data::DataDecoder::chunked`]. The chunk octets are read by exact count
//! (no dot handling, no end marker), but a bare CR or LF in them still
//! refuses the message, so the stored form is the same as with DATA.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod auth;
pub mod command;
pub mod data;
pub mod line;
pub mod received;
pub mod reply;
pub mod session;

pub use command::{Command, CommandError, MailParams, Path};
pub use data::{DataDecoder, DataError, DataLimits, DataStatus};
pub use line::{LineError, LineEvent, LineSplitter};
pub use reply::Reply;
pub use session::{Action, AuthOffer, AuthVerdict, Checks, Policy, RcptVerdict, Session};
